package holepunch

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"net/netip"
	"testing"
	"time"
)

var (
	admitIPA = netip.MustParseAddr("192.0.2.1")
	admitIPB = netip.MustParseAddr("192.0.2.2")
	admitT0  = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
)

// TestAdmissionLimits plays reserve and release against the limits per
// source IP and in total.
func TestAdmissionLimits(t *testing.T) {
	type op struct {
		release bool // release instead of reserve
		ip      netip.Addr
		want    bool // reserve's answer
	}
	cases := []struct {
		name           string
		total, perIP   int
		ops            []op
		wantBusy       uint64
		wantInProgress int
	}{
		{"per-ip", 10, 2, []op{{false, admitIPA, true}, {false, admitIPA, true}, {false, admitIPA, false}, {false, admitIPB, true}}, 1, 3},
		{"total", 2, 2, []op{{false, admitIPA, true}, {false, admitIPB, true}, {false, admitIPB, false}, {false, admitIPA, false}}, 2, 2},
		{"release-frees-a-slot", 10, 1, []op{{false, admitIPA, true}, {false, admitIPA, false}, {true, admitIPA, false}, {false, admitIPA, true}}, 1, 1},
		{"release-frees-the-total", 1, 1, []op{{false, admitIPA, true}, {false, admitIPB, false}, {true, admitIPA, false}, {false, admitIPB, true}}, 1, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := newAdmission(c.total, c.perIP)
			for i, o := range c.ops {
				if o.release {
					a.release(o.ip)
					continue
				}
				if got := a.reserve(o.ip); got != o.want {
					t.Fatalf("op %d: reserve(%v) = %v, want %v", i, o.ip, got, o.want)
				}
			}
			if st := a.stats(); st.busy != c.wantBusy || st.inProgress != c.wantInProgress {
				t.Fatalf("stats %+v, want busy %d in progress %d", st, c.wantBusy, c.wantInProgress)
			}
		})
	}
	a := newAdmission(4, 4)
	a.reserve(admitIPA)
	a.release(admitIPA)
	if len(a.perIP) != 0 {
		t.Fatalf("released IPs still tracked: %v", a.perIP)
	}
}

// TestAdmissionReplay: message 1 timestamps strictly increase per key and
// stay within replayHorizon of now.
func TestAdmissionReplay(t *testing.T) {
	k1, _, _ := ed25519.GenerateKey(nil)
	k2, _, _ := ed25519.GenerateKey(nil)
	type msg struct {
		key     ed25519.PublicKey
		ts, now time.Duration // after admitT0
		want    bool
	}
	cases := []struct {
		name string
		msgs []msg
	}{
		{"first", []msg{{k1, 0, time.Second, true}}},
		{"same-again", []msg{{k1, 0, time.Second, true}, {k1, 0, 2 * time.Second, false}}},
		{"older", []msg{{k1, time.Second, time.Second, true}, {k1, 0, 2 * time.Second, false}}},
		{"newer", []msg{{k1, 0, time.Second, true}, {k1, time.Millisecond, 2 * time.Second, true}}},
		{"keys-apart", []msg{{k1, time.Second, time.Second, true}, {k2, 0, 2 * time.Second, true}}},
		{"too-old", []msg{{k1, 0, replayHorizon + time.Nanosecond, false}}},
		{"at-the-horizon", []msg{{k1, 0, replayHorizon, true}}},
		{"refused-is-not-remembered", []msg{{k1, 0, replayHorizon + time.Second, false}, {k1, time.Nanosecond, time.Second, true}}},
		{"from-the-future", []msg{{k1, time.Hour, 0, true}, {k1, time.Minute, time.Second, false}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := newAdmission(1, 1)
			var replays uint64
			for i, m := range c.msgs {
				if got := a.fresh(m.key, admitT0.Add(m.ts), admitT0.Add(m.now)); got != m.want {
					t.Fatalf("message %d: fresh = %v, want %v", i, got, m.want)
				}
				if !m.want {
					replays++
				}
			}
			if st := a.stats(); st.replays != replays {
				t.Fatalf("replays counted %d, want %d", st.replays, replays)
			}
		})
	}
}

// TestAdmissionStampSweep: past maxStamps keys, the keys not seen within
// replayHorizon are forgotten; the others stay.
func TestAdmissionStampSweep(t *testing.T) {
	a := newAdmission(1, 1)
	recent, _, _ := ed25519.GenerateKey(nil)
	for i := range maxStamps {
		k := make(ed25519.PublicKey, ed25519.PublicKeySize)
		k[0], k[1] = byte(i), byte(i>>8)
		a.fresh(k, admitT0, admitT0)
	}
	a.fresh(recent, admitT0.Add(replayHorizon), admitT0.Add(replayHorizon))
	later := admitT0.Add(replayHorizon + time.Second)
	newcomer, _, _ := ed25519.GenerateKey(nil)
	a.fresh(newcomer, later, later)
	if len(a.stamps) != 2 {
		t.Fatalf("%d keys remembered after the sweep, want 2", len(a.stamps))
	}
	if a.fresh(recent, admitT0.Add(replayHorizon), later) {
		t.Fatal("a key seen within the horizon was forgotten")
	}
}

// TestAdmissionRetransmission: a message 1 answered within answerTTL gets
// the same message 2; later it does not, and expired answers are dropped.
func TestAdmissionRetransmission(t *testing.T) {
	a := newAdmission(1, 1)
	sum := [32]byte{1}
	if _, ok, wait := a.claim(sum, admitT0); ok || wait != nil {
		t.Fatal("answered or busy before any answer")
	}
	a.settle(sum, []byte("msg2"), admitT0)
	for _, c := range []struct {
		after time.Duration
		want  bool
	}{{0, true}, {answerTTL - time.Nanosecond, true}} {
		got, ok, _ := a.claim(sum, admitT0.Add(c.after))
		if ok != c.want || ok && string(got) != "msg2" {
			t.Fatalf("after %v: answered %q %v, want %v", c.after, got, ok, c.want)
		}
	}
	if _, ok, wait := a.claim(sum, admitT0.Add(answerTTL)); ok || wait != nil {
		t.Fatal("answered after answerTTL")
	}
	if st := a.stats(); st.retransmitted != 2 {
		t.Fatalf("retransmissions counted %d, want 2", st.retransmitted)
	}
	a.settle(sum, nil, admitT0.Add(answerTTL))
	a.settle([32]byte{2}, []byte("other"), admitT0.Add(answerTTL+time.Second))
	if _, ok := a.answers[sum]; ok || len(a.answers) != 1 {
		t.Fatalf("expired answer kept: %d answers", len(a.answers))
	}
}

// TestAdmissionCopiesAtOnce: a copy of a message 1 that comes while
// another is being answered waits for that answer and gets it; when the
// first copy got no answer the next claims it afresh.
func TestAdmissionCopiesAtOnce(t *testing.T) {
	a := newAdmission(1, 1)
	sum := [32]byte{1}
	a.claim(sum, admitT0)
	_, ok, wait := a.claim(sum, admitT0)
	if ok || wait == nil {
		t.Fatal("a second copy did not wait for the first's answer")
	}
	select {
	case <-wait:
		t.Fatal("wait ended before the answer")
	default:
	}
	a.settle(sum, []byte("msg2"), admitT0)
	<-wait
	if got, ok, _ := a.claim(sum, admitT0); !ok || string(got) != "msg2" {
		t.Fatalf("after the wait: %q %v, want the first copy's message 2", got, ok)
	}

	other := [32]byte{2}
	a.claim(other, admitT0)
	_, _, wait = a.claim(other, admitT0)
	a.settle(other, nil, admitT0) // no answer (refused before reading)
	<-wait
	if _, ok, wait := a.claim(other, admitT0); ok || wait != nil {
		t.Fatal("a copy of an unanswered message 1 neither claimed nor answered it")
	}
	if len(a.answering) != 1 {
		t.Fatalf("%d claims outstanding, want 1", len(a.answering))
	}
}

// TestVerdict: the firewall refuses before glare is looked at; glare keeps
// the larger key's dial.
func TestVerdict(t *testing.T) {
	small := make(ed25519.PublicKey, ed25519.PublicKeySize)
	large := bytes.Repeat([]byte{0xff}, ed25519.PublicKeySize)
	no := errors.New("no")
	cases := []struct {
		name          string
		local, remote ed25519.PublicKey
		firewall      error
		dialing       bool
		code          Code
		cancelDial    bool
	}{
		{"accept", small, large, nil, false, CodeOK, false},
		{"firewall", small, large, no, false, CodeRefused, false},
		{"firewall-before-glare", small, large, no, true, CodeRefused, false},
		{"glare-ours-wins", large, small, nil, true, CodeSimultaneous, false},
		{"glare-theirs-wins", small, large, nil, true, CodeOK, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, cancelDial := verdict(c.local, c.remote, c.firewall, c.dialing)
			if code != c.code || cancelDial != c.cancelDial {
				t.Fatalf("verdict = %s, cancel %v; want %s, cancel %v", code, cancelDial, c.code, c.cancelDial)
			}
		})
	}
}

// TestGlareBothSidesAgree: when two keys dial each other at once, each
// side judges the other's message 1 with its own view, and exactly one
// dial goes on, the larger key's, whichever order things happen in.
func TestGlareBothSidesAgree(t *testing.T) {
	for range 50 {
		a, _, _ := ed25519.GenerateKey(nil)
		b, _, _ := ed25519.GenerateKey(nil)
		// At a, b's message 1 meets a's dial, and the reverse at b.
		codeAtA, aGivesUp := verdict(a, b, nil, true)
		codeAtB, bGivesUp := verdict(b, a, nil, true)
		aGoesOn := codeAtB == CodeOK && !aGivesUp
		bGoesOn := codeAtA == CodeOK && !bGivesUp
		if aGoesOn == bGoesOn {
			t.Fatalf("a's dial goes on: %v, b's: %v; want exactly one", aGoesOn, bGoesOn)
		}
		if aGoesOn != (bytes.Compare(a, b) > 0) {
			t.Fatal("the smaller key's dial went on")
		}
		// The loser hears CodeSimultaneous or gives up its dial itself.
		if aGoesOn && (codeAtA != CodeSimultaneous || !bGivesUp) || bGoesOn && (codeAtB != CodeSimultaneous || !aGivesUp) {
			t.Fatalf("loser not told: codes %s/%s, give up %v/%v", codeAtA, codeAtB, aGivesUp, bGivesUp)
		}
	}
}
