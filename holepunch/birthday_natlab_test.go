package holepunch

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/internal/natlab"
	"github.com/swarmdb/swarmdb/internal/testutil"
)

// birthdayTrials is how many independent punches the lab test runs: each
// with fresh sockets on both sides, so fresh random mappings.
const birthdayTrials = 5

// plainPunchRounds and plainPunchEvery bound the one-socket punch: 40
// rounds 50 ms apart (2 s) is far beyond the lab's sub-millisecond RTT, so
// a pair that can be punched this way is punched in the first rounds.
const (
	plainPunchRounds = 40
	plainPunchEvery  = 50 * time.Millisecond
)

// reflexiveQuery asks the reflector for a socket's mapping with more
// patience than natlab's default (3 x 200 ms): on a loaded 2-core machine
// the first packet through a fresh lab has been seen to miss that.
var reflexiveQuery = natlab.ProbeConfig{Timeout: 500 * time.Millisecond, Attempts: 6}

// TestBirthdayNATLab punches between a host behind a real symmetric NAT
// (nftables "fully-random": a new random port per destination) and a host
// behind a port-restricted one. It first shows, with a port-restricted
// control pair, that plain one-socket punching (what ICE does with
// reflexive candidates) works in this lab, then that it fails for the
// symmetric pair, and then that the birthday punch succeeds for that pair
// in every trial, carrying data both ways afterwards. Root only: without
// root it skips, unless CI=true.
func TestBirthdayNATLab(t *testing.T) {
	testutil.CheckLeaks(t) // runs after the lab's teardown
	lab := natlab.New(t)
	refl := lab.AddReflector("refl")
	sym := lab.AddRouter(natlab.RouterConfig{Name: "sym", Type: natlab.Symmetric})
	prc := lab.AddRouter(natlab.RouterConfig{Name: "prc", Type: natlab.PortRestricted})
	ctl := lab.AddRouter(natlab.RouterConfig{Name: "ctl", Type: natlab.PortRestricted})
	hard, easy, control := sym.AddHost("hard"), prc.AddHost("easy"), ctl.AddHost("control")

	t.Run("plain/portrestricted-portrestricted=direct", func(t *testing.T) {
		a, b := plainPunch(t, easy, control, refl.Addr())
		if !a || !b {
			t.Fatalf("one-socket punch between two port-restricted NATs failed (heard: %t, %t): the lab or the harness is broken", a, b)
		}
	})
	t.Run("plain/symmetric-portrestricted=fails", func(t *testing.T) {
		a, b := plainPunch(t, hard, easy, refl.Addr())
		if a || b {
			t.Fatalf("one-socket punch through the symmetric NAT worked (heard: %t, %t): the lab is not symmetric", a, b)
		}
	})

	var probes []int64
	var took []time.Duration
	for i := range birthdayTrials {
		t.Run("birthday/symmetric-portrestricted=direct/trial"+strconv.Itoa(i+1), func(t *testing.T) {
			n, d := birthdayTrial(t, hard, easy, sym.PublicIP(), refl.Addr())
			probes, took = append(probes, n), append(took, d)
		})
	}
	if len(probes) == birthdayTrials {
		slices.Sort(probes)
		slices.Sort(took)
		t.Logf("birthday: %d/%d trials punched; probes sorted %v (median %d); time sorted %v (median %v)",
			len(probes), birthdayTrials, probes, probes[len(probes)/2], took, took[len(took)/2])
	}
}

// birthdayTrial runs one birthday punch with default settings (256 hard
// sockets, 200 probes/s, 2000-probe budget) and checks the path. It
// returns the probes the easy side sent and the time the punch took.
func birthdayTrial(t *testing.T, hard, easy *natlab.Host, hardIP netip.Addr, refl netip.AddrPort) (int64, time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := easy.Net().ListenPacket("udp4", netip.AddrPortFrom(easy.IP(), 0).String())
	if err != nil {
		t.Fatal(err)
	}
	// The easy side's reflexive address, as signaling would carry it.
	m, err := natlab.Query(ctx, conn, refl, 0, reflexiveQuery)
	if err != nil {
		conn.Close()
		t.Fatal(err)
	}
	e := newEasySocket(t, conn, false) // the real NAT filters
	secret := NewBirthdaySecret()
	r := runPunch(ctx, e,
		EasyConfig{HardIP: hardIP, Secret: secret},
		HardConfig{Net: hard.Net(), LocalIP: hard.IP(), Easy: m.Observed, Secret: secret})
	if r.easyErr != nil || r.hardErr != nil {
		t.Fatalf("birthday punch failed after %d probes in %v: easy: %v; hard: %v", e.sends.Load(), r.took, r.easyErr, r.hardErr)
	}
	defer r.hardConn.Close()
	if r.easyGot.Addr() != hardIP {
		t.Fatalf("easy side found %v, not on the symmetric NAT's address %v", r.easyGot, hardIP)
	}
	if r.hardGot != m.Observed {
		t.Fatalf("hard side confirmed %v, easy side's mapping is %v", r.hardGot, m.Observed)
	}
	checkPath(t, e, r)
	t.Logf("punched %v <-> %v after %d probes in %v", r.hardGot, r.easyGot, e.sends.Load(), r.took)
	return e.sends.Load(), r.took
}

// plainPunch is the one-socket punch ICE attempts with server-reflexive
// candidates: each host learns its mapping from the reflector, then both
// send to the other's mapping every plainPunchEvery for plainPunchRounds
// rounds. It reports whether each side heard the other.
func plainPunch(t *testing.T, a, b *natlab.Host, refl netip.AddrPort) (aHeard, bHeard bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hosts := []*natlab.Host{a, b}
	conns := make([]net.PacketConn, 2)
	mapped := make([]netip.AddrPort, 2)
	for i, h := range hosts {
		c, err := h.Net().ListenPacket("udp4", netip.AddrPortFrom(h.IP(), 0).String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		m, err := natlab.Query(ctx, c, refl, 0, reflexiveQuery)
		if err != nil {
			t.Fatal(err)
		}
		conns[i], mapped[i] = c, m.Observed
	}
	msg := []byte("plain punch")
	var heard [2]atomic.Bool
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Go(func() {
			buf := make([]byte, 64)
			for {
				n, _, err := c.ReadFrom(buf)
				if err != nil {
					return // closed below
				}
				if string(buf[:n]) == string(msg) {
					heard[i].Store(true)
				}
			}
		})
	}
	tick := time.NewTicker(plainPunchEvery)
	for round := 0; round < plainPunchRounds && !(heard[0].Load() && heard[1].Load()); round++ {
		for i, c := range conns {
			if _, err := c.WriteTo(msg, net.UDPAddrFromAddrPort(mapped[1-i])); err != nil {
				t.Errorf("%s: send: %v", hosts[i].Name(), err)
			}
		}
		<-tick.C
	}
	tick.Stop()
	for _, c := range conns {
		c.Close()
	}
	wg.Wait()
	t.Logf("%s (mapped %v) heard %s: %t; %s (mapped %v) heard %s: %t",
		a.Name(), mapped[0], b.Name(), heard[0].Load(), b.Name(), mapped[1], a.Name(), heard[1].Load())
	return heard[0].Load(), heard[1].Load()
}
