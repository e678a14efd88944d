package swarm

import (
	"bytes"
	"crypto/ed25519"
	"testing"
)

// TestKeepNewBothSidesAgree plays every simultaneous-dial order on both
// sides and checks that exactly one of the two connections survives on
// both, and that it is the larger key's outgoing connection.
func TestKeepNewBothSidesAgree(t *testing.T) {
	for i := 0; i < 50; i++ {
		a, _, _ := ed25519.GenerateKey(nil)
		b, _, _ := ed25519.GenerateKey(nil)
		larger := a
		if bytes.Compare(b, a) > 0 {
			larger = b
		}
		// Connection X: dialled by a. Connection Y: dialled by b.
		// Side a sees X as outgoing, Y as incoming; side b the reverse.
		for _, xFirstAtA := range []bool{true, false} {
			for _, xFirstAtB := range []bool{true, false} {
				survivor := func(local, remote ed25519.PublicKey, xFirst, xOutgoing bool) string {
					first, second := "X", "Y"
					firstInit := xOutgoing
					if !xFirst {
						first, second = "Y", "X"
						firstInit = !xOutgoing
					}
					if keepNew(local, remote, connSide{initiator: firstInit}, !firstInit) {
						return second
					}
					return first
				}
				atA := survivor(a, b, xFirstAtA, true)
				atB := survivor(b, a, xFirstAtB, false)
				if atA != atB {
					t.Fatalf("sides disagree: a keeps %s, b keeps %s", atA, atB)
				}
				want := "X"
				if bytes.Equal(larger, b) {
					want = "Y"
				}
				if atA != want {
					t.Fatalf("kept %s, want the larger key's outgoing %s", atA, want)
				}
			}
		}
	}
}

func TestKeepNewEstablishedLoses(t *testing.T) {
	a, _, _ := ed25519.GenerateKey(nil)
	b, _, _ := ed25519.GenerateKey(nil)
	for _, oldInit := range []bool{true, false} {
		for _, newInit := range []bool{true, false} {
			if !keepNew(a, b, connSide{initiator: oldInit, established: true}, newInit) {
				t.Errorf("established old (initiator=%v) kept over new (initiator=%v)", oldInit, newInit)
			}
		}
	}
	// Same direction twice: the remote gave the old one up.
	if !keepNew(a, b, connSide{initiator: false}, false) || !keepNew(a, b, connSide{initiator: true}, true) {
		t.Error("a second connection in the same direction must replace the first")
	}
}
