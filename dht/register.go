package dht

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/netip"
)

// ErrNotRegistered: no record of the key was found, so it has no relays
// (the peer is not listening, or its registration expired).
var ErrNotRegistered = errors.New("dht: key not registered")

// Register makes priv's key reachable by key alone, without a topic: it
// picks the key's relays (see ensureRelays), registers there, and keeps
// them (pinged every RelayKeepalive, replaced when they stop answering).
// A peer finds the relays with FindRelays. It returns the relays.
func (n *Node) Register(ctx context.Context, priv ed25519.PrivateKey) ([]netip.AddrPort, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("dht: register: bad private key length %d", len(priv))
	}
	return n.ensureRelays(ctx, priv)
}

// FindRelays looks up the relays of the peer with key pub: the record it
// registered at the nodes closest to KeyTarget(pub). Relays of families the
// node speaks come first; the others are left out, unless the node speaks
// no family yet.
func (n *Node) FindRelays(ctx context.Context, pub ed25519.PublicKey) ([]netip.AddrPort, error) {
	res, err := n.Lookup(ctx, KeyTarget(pub))
	if err != nil {
		return nil, err
	}
	var relays []netip.AddrPort
	for _, r := range res.Peers {
		if !r.PublicKey.Equal(pub) {
			continue
		}
		for _, a := range r.AllRelays() {
			if !containsAddr(relays, a) {
				relays = append(relays, a)
			}
		}
	}
	relays = n.Usable(relays)
	if len(relays) == 0 {
		return nil, fmt.Errorf("dht: find relays of %x: %w", []byte(pub[:4]), ErrNotRegistered)
	}
	return relays, nil
}

// Usable returns the addresses of addrs in families whose overlay the node
// has joined (see Speaks), in their order; when it has joined none, all of
// them.
func (n *Node) Usable(addrs []netip.AddrPort) []netip.AddrPort {
	var speaks [numFamilies]bool
	any := false
	for _, f := range Families {
		speaks[f] = n.Speaks(f)
		any = any || speaks[f]
	}
	if !any {
		return addrs
	}
	out := addrs[:0:0]
	for _, a := range addrs {
		if speaks[FamilyOf(a)] {
			out = append(out, a)
		}
	}
	return out
}

func containsAddr(list []netip.AddrPort, a netip.AddrPort) bool {
	for _, x := range list {
		if x == a {
			return true
		}
	}
	return false
}
