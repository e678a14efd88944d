package swarm

import (
	"bytes"
	"crypto/ed25519"
)

// connSide describes one connection to a remote key for the duplicate rule.
type connSide struct {
	// initiator: this side dialled.
	initiator bool
	// established: the connection carried data both ways since the swarm
	// took it (handshake traffic does not count).
	established bool
}

// keepNew decides, when a connection to remote arrives while another one
// to the same key is open, whether the new one replaces the old one. Both
// sides evaluate it with their own view and reach the same answer for a
// simultaneous dial, so exactly one connection survives (Hyperswarm
// index.js _handleServerConnection, reference/hyperswarm.md §1.6):
//
//   - an old connection that already carried data both ways loses to the
//     new one: the remote dialled again, so it must have lost the old one;
//   - two connections in the same direction: the newer wins for the same
//     reason (the dialler gave the old one up);
//   - otherwise (a simultaneous dial, one connection each way) the outgoing
//     connection of the peer with the larger public key wins.
func keepNew(local, remote ed25519.PublicKey, old connSide, newInitiator bool) bool {
	if old.established || old.initiator == newInitiator {
		return true
	}
	localLarger := bytes.Compare(local, remote) > 0
	// The winner is the connection the larger key dialled: ours if we are
	// larger (initiator on our side), theirs otherwise.
	return newInitiator == localLarger
}
