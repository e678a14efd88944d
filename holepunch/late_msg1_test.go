package holepunch_test

import (
	"crypto/ed25519"
	"net/netip"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/holepunch"
	"github.com/swarmdb/swarmdb/secure"
)

// TestLateMessage1KeepsDialledConnection: a's dial to b opened a
// connection. A message 1 from b that b wrote before that (its own dial,
// which gave way to a's in glare and which a relay's second forward
// delivered late) is refused as simultaneous and leaves the connection
// alone; one b wrote after it replaces the connection, as a b that lost it
// (a restart, a new NAT mapping) needs. Seen in TestMeshOneConnectionPerPair
// (swarm): a restarted swarm dropped its fresh connection for such a
// message, and the pair was broken until the peer found it silent.
func TestLateMessage1KeepsDialledConnection(t *testing.T) {
	n := startNet(t, 6)
	a, b := addPeer(t, n, nil), addPeer(t, n, nil)
	relays, err := a.ep.Listen(dialTimeout(t))
	if err != nil {
		t.Fatal(err)
	}
	b.listen(t)
	written := time.Now() // b's dial, given way
	conn, accepted, err := dial(t, a, b, 15*time.Second)
	if err != nil {
		t.Fatal(err)
	}

	if code := signalCode(t, b, relays, a.pub, written); code != holepunch.CodeSimultaneous {
		t.Fatalf("message 1 written before the connection: answered %v, want %v", code, holepunch.CodeSimultaneous)
	}
	echo(t, conn, accepted, []byte("still one connection"))

	if code := signalCode(t, b, relays, a.pub, time.Now()); code != holepunch.CodeOK {
		t.Fatalf("message 1 written after the connection: answered %v, want %v", code, holepunch.CodeOK)
	}
	select {
	case <-conn.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("a kept its connection to b after b dialled again")
	}
}

// signalCode sends a message 1 from p to the key remote through remote's
// relays, stamped written, and returns the code of the answer. Its
// signaling payload offers one candidate that never answers.
func signalCode(t *testing.T, p *peer, relays []netip.AddrPort, remote ed25519.PublicKey, written time.Time) holepunch.Code {
	t.Helper()
	init, err := secure.NewInitiator(p.priv, remote, []byte("swarmdb/holepunch/1"))
	if err != nil {
		t.Fatal(err)
	}
	msg1, err := init.WriteMsg1(written, floodPayload())
	if err != nil {
		t.Fatal(err)
	}
	ans, err := p.link.Signal(dialTimeout(t), relays[0], remote, msg1)
	if err != nil {
		t.Fatal(err)
	}
	payload, _, err := init.ReadMsg2(ans)
	if err != nil {
		t.Fatal(err)
	}
	if len(payload) < 2 {
		t.Fatalf("answer's payload of %d bytes", len(payload))
	}
	return holepunch.Code(payload[1]) // signal.go: version, then code
}
