package holepunch

import (
	"bytes"
	"crypto/ed25519"
	"net/netip"
	"sync"
	"time"
)

// This file is admission: which incoming message 1 the endpoint spends
// work on. It is a pure core (no I/O, no goroutines, the time passed in; the
// one channel it hands out is closed when a claim settles);
// handleSignal (accept.go) asks it, in this order, cheapest first:
//
//  1. claim: a retransmitted message 1 (the DHT retries requests) gets the
//     message 2 it got before, and nothing else happens; a copy that comes
//     while another is being answered waits for that answer. Two copies can
//     arrive at once: a relay retrying its forward of the first meets the
//     client's own retransmission. Without the wait, the second was read
//     as a replay and answered with nothing.
//  2. reserve: a handshake slot, within the limits per source IP and in
//     total, before any cryptography (reading message 1 costs two X25519
//     operations). release gives it back when the handshake ends.
//  3. fresh: message 1 timestamps strictly increase per key, so a captured
//     message 1 cannot be replayed (WireGuard's rule, whitepaper §5.1,
//     with a bounded memory: replayHorizon).
//  4. verdict: the application's firewall answer, then glare (a dial of
//     ours to the same key).

// admission holds the state of steps 1 to 3 and counts what it refused.
// mu guards every field below it; it is a leaf lock (nothing else is
// locked while it is held, and no callback runs under it).
type admission struct {
	maxTotal, maxPerIP int // immutable

	mu            sync.Mutex
	total         int                        // handshakes holding a slot
	perIP         map[netip.Addr]int         // slots by source IP
	answers       map[[32]byte]answer        // message 1 hash -> message 2
	answering     map[[32]byte]chan struct{} // claimed hashes; closed by settle
	stamps        map[string]stamp           // newest message 1 timestamp by key
	busy          uint64                     // refused at the limits
	replays       uint64                     // refused as stale or replayed
	retransmitted uint64                     // answered from answers
}

type answer struct {
	msg2    []byte
	expires time.Time
}

type stamp struct {
	ts   time.Time // the newest message 1 timestamp from the key
	seen time.Time // when it arrived
}

// maxStamps is the number of remembered keys above which entries older
// than replayHorizon are swept on the next fresh message 1.
const maxStamps = 4096

func newAdmission(maxTotal, maxPerIP int) *admission {
	return &admission{
		maxTotal:  maxTotal,
		maxPerIP:  maxPerIP,
		perIP:     map[netip.Addr]int{},
		answers:   map[[32]byte]answer{},
		answering: map[[32]byte]chan struct{}{},
		stamps:    map[string]stamp{},
	}
}

// claim looks for the message 2 of an earlier copy of the message 1 with
// hash sum. It returns that message 2 (ok) when one was sent within
// answerTTL before now, or a channel closed once the copy being answered
// right now settles (then claim again). Otherwise the caller holds the
// claim — msg2 nil, ok false, wait nil — and must call settle.
func (a *admission) claim(sum [32]byte, now time.Time) (msg2 []byte, ok bool, wait <-chan struct{}) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if ans, found := a.answers[sum]; found && now.Before(ans.expires) {
		a.retransmitted++
		return ans.msg2, true, nil
	}
	if ch, busy := a.answering[sum]; busy {
		return nil, false, ch
	}
	a.answering[sum] = make(chan struct{})
	return nil, false, nil
}

// settle ends the claim on sum. A non-nil msg2 answers later copies for
// answerTTL from now; expired answers are forgotten.
func (a *admission) settle(sum [32]byte, msg2 []byte, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if ch, ok := a.answering[sum]; ok {
		close(ch)
		delete(a.answering, sum)
	}
	if msg2 == nil {
		return
	}
	for k, ans := range a.answers {
		if now.After(ans.expires) {
			delete(a.answers, k)
		}
	}
	a.answers[sum] = answer{msg2: msg2, expires: now.Add(answerTTL)}
}

// reserve takes a handshake slot for a message 1 from ip, or reports
// false when the limits are reached.
func (a *admission) reserve(ip netip.Addr) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.total >= a.maxTotal || a.perIP[ip] >= a.maxPerIP {
		a.busy++
		return false
	}
	a.total++
	a.perIP[ip]++
	return true
}

// release gives back a slot reserve took for ip.
func (a *admission) release(ip netip.Addr) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.total--
	if a.perIP[ip]--; a.perIP[ip] <= 0 {
		delete(a.perIP, ip)
	}
}

// fresh reports whether a message 1 from remote stamped ts may start a
// handshake at now: ts is within replayHorizon of now and later than every
// timestamp seen from remote before. A fresh one becomes the newest.
func (a *admission) fresh(remote ed25519.PublicKey, ts, now time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	key := string(remote)
	if last, ok := a.stamps[key]; now.Sub(ts) > replayHorizon || ok && !ts.After(last.ts) {
		a.replays++
		return false
	}
	if len(a.stamps) > maxStamps {
		for k, s := range a.stamps {
			if now.Sub(s.seen) > replayHorizon {
				delete(a.stamps, k)
			}
		}
	}
	a.stamps[key] = stamp{ts: ts, seen: now}
	return true
}

// admissionStats is what admission counted.
type admissionStats struct {
	inProgress                   int
	busy, replays, retransmitted uint64
}

func (a *admission) stats() admissionStats {
	a.mu.Lock()
	defer a.mu.Unlock()
	return admissionStats{inProgress: a.total, busy: a.busy, replays: a.replays, retransmitted: a.retransmitted}
}

// verdict is admission's last step for an authenticated, fresh message 1
// from remote: firewallErr is the application's answer (nil accepts), and
// dialing says a dial of ours to remote is in progress. It returns the
// code message 2 carries and whether our dial must give way.
//
// Glare: when both sides dial at once, the dial of the larger key goes on
// (Hyperswarm's tie-break), so both sides agree without another message.
// If ours wins, the peer hears CodeSimultaneous; if its wins, our dial is
// cancelled and its handshake goes on.
func verdict(local, remote ed25519.PublicKey, firewallErr error, dialing bool) (code Code, cancelDial bool) {
	switch {
	case firewallErr != nil:
		return CodeRefused, false
	case !dialing:
		return CodeOK, false
	case dialWins(local, remote):
		return CodeSimultaneous, false
	}
	return CodeOK, true
}

// dialWins reports whether local's dial to remote goes on when it meets
// remote's dial to local (glare): the larger key's does.
func dialWins(local, remote ed25519.PublicKey) bool {
	return bytes.Compare(local, remote) > 0
}
