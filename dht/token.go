package dht

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"net/netip"
	"time"
)

// tokens hands out write tokens bound to the requester's IP, as in Kademlia
// implementations since BitTorrent's BEP 5: a requester must have received
// a reply at its claimed IP before it may store or relay, so it cannot
// spoof its source. Two secrets rotate: a token is valid for one to two
// rotation intervals. Not safe for concurrent use; the node guards it.
type tokens struct {
	interval time.Duration
	rotated  time.Time
	cur, old [32]byte
}

func newTokens(interval time.Duration, now time.Time) *tokens {
	t := &tokens{interval: interval, rotated: now}
	rand.Read(t.cur[:])
	rand.Read(t.old[:])
	return t
}

func (t *tokens) rotate(now time.Time) {
	for now.Sub(t.rotated) >= t.interval {
		t.old = t.cur
		rand.Read(t.cur[:])
		t.rotated = t.rotated.Add(t.interval)
		if now.Sub(t.rotated) >= 2*t.interval {
			// Asleep for long: both secrets are stale, start afresh.
			rand.Read(t.old[:])
			t.rotated = now
		}
	}
}

func tokenFor(secret [32]byte, ip netip.Addr) ID {
	m := hmac.New(sha256.New, secret[:])
	m.Write(ip.Unmap().AsSlice())
	var id ID
	m.Sum(id[:0])
	return id
}

// issue returns the current token for ip.
func (t *tokens) issue(ip netip.Addr, now time.Time) ID {
	t.rotate(now)
	return tokenFor(t.cur, ip)
}

// valid reports whether tok was issued to ip by this node recently.
func (t *tokens) valid(tok *ID, ip netip.Addr, now time.Time) bool {
	if tok == nil {
		return false
	}
	t.rotate(now)
	a, b := tokenFor(t.cur, ip), tokenFor(t.old, ip)
	return hmac.Equal(tok[:], a[:]) || hmac.Equal(tok[:], b[:])
}
