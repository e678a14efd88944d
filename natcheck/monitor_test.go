package natcheck

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/pion/transport/v2"

	"github.com/swarmdb/swarmdb/internal/testutil"
)

var (
	monLAN1  = []netip.Addr{netip.MustParseAddr("10.1.0.10")}
	monLAN2  = []netip.Addr{netip.MustParseAddr("10.2.0.10")}
	monPub1  = netip.MustParseAddrPort("203.0.113.10:40000")
	monPub2  = netip.MustParseAddrPort("203.0.113.11:40000")
	monPeer1 = netip.MustParseAddr("198.51.100.1")
	monPeer2 = netip.MustParseAddr("198.51.100.2")
	monPeer3 = netip.MustParseAddr("198.51.100.3")
)

func eimReport(pub netip.AddrPort) Report {
	return Report{PublicAddr: pub, PublicAddrs: []netip.AddrPort{pub}, Mapping: MappingEndpointIndependent,
		Filtering: FilteringAddressAndPortDependent, Class: ClassPortRestricted}
}

func reports(pairs ...any) []ReflexiveReport {
	var out []ReflexiveReport
	for i := 0; i < len(pairs); i += 2 {
		out = append(out, ReflexiveReport{By: pairs[i].(netip.Addr), Addr: pairs[i+1].(netip.AddrPort)})
	}
	return out
}

// newWatch returns a watch that has measured report at t0 with monLAN1 and
// the given reports as baseline.
func newWatch(t0 time.Time, rep Report, base []ReflexiveReport) *changeWatch {
	w := &changeWatch{confirm: 2, minGap: 10 * time.Second, retry: 30 * time.Second}
	w.measured(t0, monLAN1, base, rep, nil)
	return w
}

func TestChangeWatchStart(t *testing.T) {
	w := &changeWatch{confirm: 2, minGap: 10 * time.Second, retry: 30 * time.Second}
	if got := w.observe(time.Unix(0, 0), monLAN1, nil); got != TriggerStart {
		t.Fatalf("first poll: %v, want start", got)
	}
}

func TestChangeWatchLocal(t *testing.T) {
	t0 := time.Unix(1000, 0)
	rep := eimReport(monPub1)
	tests := []struct {
		name  string
		polls [][]netip.Addr // one per second after t0+minGap
		want  []Trigger
	}{
		{"unchanged", [][]netip.Addr{monLAN1, monLAN1, monLAN1}, []Trigger{TriggerNone, TriggerNone, TriggerNone}},
		{"moved", [][]netip.Addr{monLAN2, monLAN2}, []Trigger{TriggerNone, TriggerLocal}},
		{"flap back", [][]netip.Addr{monLAN2, monLAN1, monLAN2}, []Trigger{TriggerNone, TriggerNone, TriggerNone}},
		{"down then new", [][]netip.Addr{nil, monLAN2, monLAN2}, []Trigger{TriggerNone, TriggerNone, TriggerLocal}},
		{"down stays down", [][]netip.Addr{nil, nil}, []Trigger{TriggerNone, TriggerLocal}},
		{"address added", [][]netip.Addr{append(slices.Clone(monLAN1), monLAN2...), append(slices.Clone(monLAN1), monLAN2...)}, []Trigger{TriggerNone, TriggerLocal}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newWatch(t0, rep, nil)
			for i, local := range tc.polls {
				now := t0.Add(w.minGap + time.Duration(i)*time.Second)
				if got := w.observe(now, local, nil); got != tc.want[i] {
					t.Fatalf("poll %d (%v): %v, want %v", i, local, got, tc.want[i])
				}
			}
		})
	}
}

func TestChangeWatchMinGap(t *testing.T) {
	t0 := time.Unix(1000, 0)
	w := newWatch(t0, eimReport(monPub1), nil)
	// A confirmed change inside the gap waits for the gap to pass.
	if got := w.observe(t0.Add(time.Second), monLAN2, nil); got != TriggerNone {
		t.Fatalf("poll 1: %v", got)
	}
	if got := w.observe(t0.Add(2*time.Second), monLAN2, nil); got != TriggerNone {
		t.Fatalf("poll 2 inside the gap: %v", got)
	}
	if got := w.observe(t0.Add(10*time.Second), monLAN2, nil); got != TriggerLocal {
		t.Fatalf("poll after the gap: %v, want local", got)
	}
	w.measured(t0.Add(10*time.Second), monLAN2, nil, eimReport(monPub2), nil)
	if got := w.observe(t0.Add(30*time.Second), monLAN2, nil); got != TriggerNone {
		t.Fatalf("after measuring the new LAN: %v", got)
	}
}

func TestChangeWatchReflexive(t *testing.T) {
	t0 := time.Unix(1000, 0)
	later := t0.Add(time.Minute)
	symmetric := Report{PublicAddr: monPub1, PublicAddrs: []netip.AddrPort{monPub1, netip.AddrPortFrom(monPub1.Addr(), 40001)},
		Mapping: MappingEndpointDependent, Class: ClassSymmetric}
	tests := []struct {
		name string
		rep  Report
		base []ReflexiveReport
		now  []ReflexiveReport
		want Trigger
	}{
		{"agree", eimReport(monPub1), reports(monPeer1, monPub1), reports(monPeer1, monPub1, monPeer2, monPub1), TriggerNone},
		{"one odd peer", eimReport(monPub1), reports(monPeer1, monPub1), reports(monPeer1, monPub1, monPeer2, monPub2), TriggerNone},
		{"two peers see new address", eimReport(monPub1), reports(monPeer1, monPub1, monPeer2, monPub1),
			reports(monPeer1, monPub1, monPeer2, monPub1, monPeer1, monPub2, monPeer2, monPub2), TriggerReflexive},
		{"same peer twice is one peer", eimReport(monPub1), nil, reports(monPeer1, monPub2, monPeer1, monPub2), TriggerNone},
		{"port change under EIM", eimReport(monPub1), nil,
			reports(monPeer1, netip.AddrPortFrom(monPub1.Addr(), 1), monPeer2, netip.AddrPortFrom(monPub1.Addr(), 1)), TriggerReflexive},
		{"stale peers silent since", eimReport(monPub2), reports(monPeer1, monPub1, monPeer2, monPub1, monPeer3, monPub2),
			reports(monPeer1, monPub1, monPeer2, monPub1, monPeer3, monPub2), TriggerNone},
		{"symmetric ports vary", symmetric, nil,
			reports(monPeer1, netip.AddrPortFrom(monPub1.Addr(), 5), monPeer2, netip.AddrPortFrom(monPub1.Addr(), 6), monPeer3, netip.AddrPortFrom(monPub1.Addr(), 7)), TriggerNone},
		{"symmetric new IP", symmetric, nil,
			reports(monPeer1, netip.AddrPortFrom(monPub2.Addr(), 5), monPeer2, netip.AddrPortFrom(monPub2.Addr(), 6)), TriggerReflexive},
		{"moved back", eimReport(monPub2), reports(monPeer1, monPub2, monPeer2, monPub2),
			reports(monPeer1, monPub2, monPeer2, monPub2, monPeer1, monPub1, monPeer2, monPub1), TriggerReflexive},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newWatch(t0, tc.rep, tc.base)
			if got := w.observe(later, monLAN1, tc.now); got != tc.want {
				t.Fatalf("%v, want %v", got, tc.want)
			}
		})
	}
}

func TestChangeWatchRetryAndManual(t *testing.T) {
	t0 := time.Unix(1000, 0)
	w := &changeWatch{confirm: 2, minGap: 10 * time.Second, retry: 30 * time.Second}
	w.measured(t0, monLAN1, nil, Report{}, errors.New("offline"))
	if got := w.observe(t0.Add(20*time.Second), monLAN1, nil); got != TriggerNone {
		t.Fatalf("before retry interval: %v", got)
	}
	if got := w.observe(t0.Add(30*time.Second), monLAN1, nil); got != TriggerRetry {
		t.Fatalf("after retry interval: %v, want retry", got)
	}
	w.measured(t0.Add(30*time.Second), monLAN1, nil, eimReport(monPub1), nil)
	w.requestManual()
	if got := w.observe(t0.Add(31*time.Second), monLAN1, nil); got != TriggerNone {
		t.Fatalf("manual inside the gap: %v", got)
	}
	if got := w.observe(t0.Add(40*time.Second), monLAN1, nil); got != TriggerManual {
		t.Fatalf("manual after the gap: %v, want manual", got)
	}
	w.measured(t0.Add(40*time.Second), monLAN1, nil, eimReport(monPub1), nil)
	if got := w.observe(t0.Add(60*time.Second), monLAN1, nil); got != TriggerNone {
		t.Fatalf("manual is one-shot: %v", got)
	}
}

func TestReportChanged(t *testing.T) {
	sym := func(port uint16) Report {
		a := netip.AddrPortFrom(monPub1.Addr(), port)
		return Report{PublicAddr: a, Mapping: MappingEndpointDependent, Class: ClassSymmetric}
	}
	fullcone := eimReport(monPub1)
	fullcone.Filtering, fullcone.Class = FilteringEndpointIndependent, ClassFullCone
	for _, tc := range []struct {
		name     string
		old, new Report
		want     bool
	}{
		{"same", eimReport(monPub1), eimReport(monPub1), false},
		{"new address", eimReport(monPub1), eimReport(monPub2), true},
		{"new class", eimReport(monPub1), fullcone, true},
		{"symmetric new port", sym(1), sym(2), false},
		{"symmetric to cone", sym(1), eimReport(monPub1), true},
	} {
		if got := Changed(tc.old, tc.new); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// fakeNet is a transport.Net whose only working method is Interfaces, with
// addresses the test sets.
type fakeNet struct {
	transport.Net // nil: any other method panics
	mu            sync.Mutex
	addrs         []netip.Addr
}

func (f *fakeNet) set(addrs []netip.Addr) {
	f.mu.Lock()
	f.addrs = addrs
	f.mu.Unlock()
}

func (f *fakeNet) Interfaces() ([]*transport.Interface, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	lo := transport.NewInterface(net.Interface{Index: 1, Name: "lo", Flags: net.FlagUp | net.FlagLoopback})
	lo.AddAddress(&net.IPNet{IP: net.IPv4(127, 0, 0, 1), Mask: net.CIDRMask(8, 32)})
	eth := transport.NewInterface(net.Interface{Index: 2, Name: "eth0", Flags: net.FlagUp})
	for _, a := range f.addrs {
		eth.AddAddress(&net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(24, 32)})
	}
	eth.AddAddress(&net.IPNet{IP: net.ParseIP("fe80::1"), Mask: net.CIDRMask(64, 128)})
	return []*transport.Interface{lo, eth}, nil
}

// fakeNAT answers Check with the public address of the LAN the fake net
// is on, and records the LocalIPs it was given.
type fakeNAT struct {
	net    *fakeNet
	mu     sync.Mutex
	locals [][]netip.Addr
}

func (f *fakeNAT) check(_ context.Context) (Report, error) {
	f.net.mu.Lock()
	addrs := slices.Clone(f.net.addrs)
	f.net.mu.Unlock()
	f.mu.Lock()
	f.locals = append(f.locals, addrs)
	f.mu.Unlock()
	switch {
	case slices.Equal(addrs, monLAN1):
		return eimReport(monPub1), nil
	case slices.Equal(addrs, monLAN2):
		return eimReport(monPub2), nil
	}
	return Report{}, ErrNoAnswer
}

func TestMonitorLocalMove(t *testing.T) {
	testutil.CheckLeaks(t)
	synctest.Test(t, func(t *testing.T) {
		fn := &fakeNet{addrs: monLAN1}
		nat := &fakeNAT{net: fn}
		type change struct{ old, new Report }
		changes := make(chan change, 10)
		m := NewMonitor(MonitorConfig{
			Net: fn, Interval: time.Second, Check: nat.check, MinRecheck: 5 * time.Second,
			OnChange: func(o, n Report) { changes <- change{o, n} },
		})
		if err := m.Start(); err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		synctest.Wait()
		c := <-changes
		if c.old.PublicAddr.IsValid() || c.new.PublicAddr != monPub1 {
			t.Fatalf("first change %v -> %v", c.old.PublicAddr, c.new.PublicAddr)
		}
		// Nothing changes for a minute: no measurement, no callback.
		time.Sleep(time.Minute)
		synctest.Wait()
		if s := m.Stats(); s.Checks != 1 || len(changes) != 0 {
			t.Fatalf("idle: %+v, %d changes", s, len(changes))
		}
		// Move: the address vanishes for a poll, then the new LAN's appears.
		fn.set(nil)
		time.Sleep(1500 * time.Millisecond)
		fn.set(monLAN2)
		time.Sleep(3 * time.Second)
		synctest.Wait()
		select {
		case c = <-changes:
		default:
			t.Fatalf("no change after the move: %+v", m.Stats())
		}
		if c.old.PublicAddr != monPub1 || c.new.PublicAddr != monPub2 {
			t.Fatalf("change %v -> %v, want %v -> %v", c.old.PublicAddr, c.new.PublicAddr, monPub1, monPub2)
		}
		if rep, ok := m.Report(); !ok || rep.PublicAddr != monPub2 {
			t.Fatalf("report %v %v", rep.PublicAddr, ok)
		}
		s := m.Stats()
		if s.Checks != 2 || s.ByReason["local-address"] != 1 || s.Failures != 0 {
			t.Fatalf("stats %+v", s)
		}
	})
}

func TestMonitorReflexive(t *testing.T) {
	testutil.CheckLeaks(t)
	synctest.Test(t, func(t *testing.T) {
		fn := &fakeNet{addrs: monLAN1}
		var mu sync.Mutex
		public := monPub1
		var refl []ReflexiveReport
		hear := func(by netip.Addr) {
			mu.Lock()
			refl = append(refl, ReflexiveReport{By: by, Addr: public})
			mu.Unlock()
		}
		changes := make(chan Report, 10)
		m := NewMonitor(MonitorConfig{
			Net: fn, Interval: time.Second, MinRecheck: 5 * time.Second,
			Reflexive: func() []ReflexiveReport {
				mu.Lock()
				defer mu.Unlock()
				return slices.Clone(refl)
			},
			Check: func(context.Context) (Report, error) {
				mu.Lock()
				defer mu.Unlock()
				return eimReport(public), nil
			},
			OnChange: func(_, n Report) { changes <- n },
		})
		if err := m.Start(); err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		synctest.Wait()
		<-changes
		hear(monPeer1)
		hear(monPeer2)
		time.Sleep(10 * time.Second)
		synctest.Wait()
		// The ISP hands the router a new address; one peer says so first.
		mu.Lock()
		public = monPub2
		mu.Unlock()
		hear(monPeer1)
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if len(changes) != 0 || m.Stats().Checks != 1 {
			t.Fatalf("one peer's report triggered: %+v", m.Stats())
		}
		hear(monPeer2)
		time.Sleep(2 * time.Second)
		synctest.Wait()
		select {
		case n := <-changes:
			if n.PublicAddr != monPub2 {
				t.Fatalf("new report %v", n.PublicAddr)
			}
		default:
			t.Fatalf("two peers' reports did not trigger: %+v", m.Stats())
		}
		// Settled: the same reports trigger nothing more.
		time.Sleep(time.Minute)
		synctest.Wait()
		if s := m.Stats(); s.Checks != 2 || s.ByReason["reflexive-address"] != 1 {
			t.Fatalf("stats %+v", s)
		}
	})
}

func TestMonitorRetryAndRemeasure(t *testing.T) {
	testutil.CheckLeaks(t)
	synctest.Test(t, func(t *testing.T) {
		fn := &fakeNet{} // offline: no address, Check fails
		nat := &fakeNAT{net: fn}
		m := NewMonitor(MonitorConfig{Net: fn, Interval: time.Second, Check: nat.check,
			MinRecheck: 5 * time.Second, RetryInterval: 20 * time.Second})
		if err := m.Start(); err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		time.Sleep(25 * time.Second)
		synctest.Wait()
		if s := m.Stats(); s.Checks != 2 || s.Failures != 2 || s.ByReason["retry"] != 1 {
			t.Fatalf("offline: %+v", s)
		}
		if _, ok := m.Report(); ok {
			t.Fatal("report without a successful check")
		}
		fn.set(monLAN1) // back online: the local change measures again
		time.Sleep(3 * time.Second)
		synctest.Wait()
		if rep, ok := m.Report(); !ok || rep.PublicAddr != monPub1 {
			t.Fatalf("online: %v %v %+v", rep.PublicAddr, ok, m.Stats())
		}
		time.Sleep(10 * time.Second)
		m.Remeasure()
		time.Sleep(2 * time.Second)
		synctest.Wait()
		st := m.Stats()
		if st.ByReason["manual"] != 1 || st.Changes != 1 {
			t.Fatalf("remeasure: %+v", st)
		}
		nat.mu.Lock()
		defer nat.mu.Unlock()
		if len(nat.locals) != st.Checks {
			t.Fatalf("checks %d, fake saw %d", st.Checks, len(nat.locals))
		}
	})
}

func TestMonitorLifecycle(t *testing.T) {
	testutil.CheckLeaks(t)
	m := NewMonitor(MonitorConfig{Net: &fakeNet{}, Check: func(ctx context.Context) (Report, error) {
		<-ctx.Done() // a measurement in progress when Close comes
		return Report{}, ctx.Err()
	}})
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(); !errors.Is(err, ErrMonitorClosed) {
		t.Fatalf("start after close: %v", err)
	}
	m = NewMonitor(MonitorConfig{Net: &fakeNet{}, Check: func(ctx context.Context) (Report, error) {
		<-ctx.Done()
		return Report{}, ctx.Err()
	}})
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(); !errors.Is(err, ErrMonitorClosed) {
		t.Fatalf("second start: %v", err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
}
