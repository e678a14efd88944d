package natcheck

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"
)

// fakeProber is a NAT in a table: Binding returns mapped[server], probes
// return the fixed outcomes, and every call is logged in order.
type fakeProber struct {
	mapped               map[netip.AddrPort]netip.AddrPort
	nodeArrived, portArr bool
	nodeErr              error         // the other-node probe's request fails (no stranger left)
	held                 [2]bool       // the other-node and other-port probes wait isolated
	during               chan struct{} // when set, probes wait (up to patience) for it to close
	patience             time.Duration
	refuse               map[netip.AddrPort]int // Bindings to refuse with ErrHeld first

	mu    sync.Mutex
	calls []string
}

var _ Prober = (*fakeProber)(nil)

func (f *fakeProber) log(s string) {
	f.mu.Lock()
	f.calls = append(f.calls, s)
	f.mu.Unlock()
}

func (f *fakeProber) Binding(_ context.Context, server netip.AddrPort) (netip.AddrPort, time.Duration, error) {
	f.log("binding")
	f.mu.Lock()
	refused := f.refuse[server] > 0
	if refused {
		f.refuse[server]--
	}
	f.mu.Unlock()
	if refused {
		return netip.AddrPort{}, 0, ErrHeld
	}
	m, ok := f.mapped[server]
	if !ok {
		return netip.AddrPort{}, 0, errors.New("timeout")
	}
	return m, time.Millisecond, nil
}

func (f *fakeProber) Probe(_ context.Context, server netip.AddrPort, kind ProbeKind, wait func(time.Duration, bool) time.Duration) (bool, bool, error) {
	if _, ok := f.mapped[server]; !ok {
		return false, false, errors.New("timeout")
	}
	wait(time.Millisecond, f.held[kind-ProbeOtherNode])
	if f.during != nil {
		select {
		case <-f.during:
		case <-time.After(f.patience):
		}
	}
	if kind == ProbeOtherNode {
		f.log("other-node")
		return f.nodeArrived, f.nodeArrived, f.nodeErr
	}
	f.log("other-port")
	return f.portArr, false, nil
}

func TestCheckOrderAndClass(t *testing.T) {
	f := &fakeProber{mapped: map[netip.AddrPort]netip.AddrPort{
		servers[0]: pubB, servers[1]: pubB, servers[2]: pubB, pubB: pubB, // pubB: hairpin works
	}, portArr: true}
	rep, err := Check(context.Background(), CheckConfig{
		Prober:  f,
		Servers: servers[:1],
		Local:   local,
		Hairpin: true,
		Discover: func(context.Context) ([]netip.AddrPort, error) {
			f.log("discover")
			return servers, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Class != ClassRestricted || rep.Answered != 3 || rep.Hairpin == nil || !*rep.Hairpin {
		t.Fatalf("report %+v", rep)
	}
	// The filtering probes (at once, timed by their own requests' round
	// trips) must run before discovery contacts other nodes.
	want := []string{"other-node", "other-port", "discover", "binding", "binding", "binding", "binding"}
	got := slices.Clone(f.calls)
	if len(got) > 1 && got[0] == "other-port" {
		got[0], got[1] = got[1], got[0] // the two probes run concurrently
	}
	if !slices.Equal(got, want) {
		t.Fatalf("calls %v, want %v", f.calls, want)
	}
}

// TestCheckDiscoversDuringIsolatedWait: discovery (the join) runs while the
// probes wait for their packets only when both probes' senders are held; with
// one not held it waits until both probes are done.
func TestCheckDiscoversDuringIsolatedWait(t *testing.T) {
	for _, tc := range []struct {
		name  string
		held  [2]bool
		early bool
	}{
		{"both-held", [2]bool{true, true}, true},
		{"other-node-not-held", [2]bool{false, true}, false},
		{"other-port-not-held", [2]bool{true, false}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeProber{mapped: map[netip.AddrPort]netip.AddrPort{servers[0]: pubB, servers[1]: pubB},
				held: tc.held, during: make(chan struct{}), patience: 100 * time.Millisecond,
				refuse: map[netip.AddrPort]int{servers[1]: 1}} // the probe's helper, held during the wait
			if tc.early {
				f.patience = 10 * time.Second // a loaded machine must not make it look late
			}
			var once sync.Once
			rep, err := Check(context.Background(), CheckConfig{
				Prober: f, Servers: servers[:1], Local: local,
				Discover: func(context.Context) ([]netip.AddrPort, error) {
					f.log("discover")
					once.Do(func() { close(f.during) }) // the probes' packets "arrive" now
					return servers[1:2], nil
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Answered != 2 || rep.Filtering != FilteringAddressAndPortDependent {
				t.Fatalf("report %+v (a Binding refused while held must be asked again)", rep)
			}
			first := slices.Index(f.calls, "discover") == 0
			if first != tc.early {
				t.Fatalf("calls %v: discovery first %v, want %v", f.calls, first, tc.early)
			}
		})
	}
}

func TestCheckSkipsDeadBootstrap(t *testing.T) {
	dead := netip.MustParseAddrPort("203.0.113.99:49737")
	f := &fakeProber{mapped: map[netip.AddrPort]netip.AddrPort{servers[0]: pubB, servers[1]: pubB, servers[2]: pubB}, nodeArrived: true, portArr: true}
	rep, err := Check(context.Background(), CheckConfig{Prober: f, Servers: append([]netip.AddrPort{dead}, servers...), Local: local})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Class != ClassFullCone || rep.Queried != 4 || rep.Answered != 3 || rep.Hairpin != nil {
		t.Fatalf("report %+v", rep)
	}
	// The report says which server the probes went to and why the first was skipped.
	want := []ProbeResult{
		{Server: dead, OtherNode: "failed: timeout", OtherPort: "failed: timeout"},
		{Server: servers[0], WaitMilli: 150, OtherNode: "stranger", OtherPort: "arrived"},
	}
	if !slices.Equal(rep.Probes, want) {
		t.Fatalf("probes %+v, want %+v", rep.Probes, want)
	}
}

// TestCheckPortProbeDecidesAlone: when the other-node probe cannot run (the server knows no
// node we have not sent to, as after a join), a filtered other-port packet still shows
// address-and-port-dependent filtering; one with no decision moves on to the next server.
func TestCheckPortProbeDecidesAlone(t *testing.T) {
	noStranger := errors.New("unknown peer")
	for _, tc := range []struct {
		name      string
		portArr   bool
		filtering Filtering
		rounds    int
	}{
		{"filtered", false, FilteringAddressAndPortDependent, 1},
		{"arrived", true, FilteringUnknown, 3}, // address-dependent or independent: every server tried
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeProber{mapped: map[netip.AddrPort]netip.AddrPort{servers[0]: pubB, servers[1]: pubB, servers[2]: pubB},
				portArr: tc.portArr, nodeErr: noStranger}
			rep, err := Check(context.Background(), CheckConfig{Prober: f, Servers: servers, Local: local})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Filtering != tc.filtering || len(rep.Probes) != tc.rounds || rep.Probes[0].OtherNode != "failed: unknown peer" {
				t.Fatalf("filtering %s after %d rounds, want %s after %d: %+v", rep.Filtering, len(rep.Probes), tc.filtering, tc.rounds, rep.Probes)
			}
		})
	}
}

func TestCheckErrors(t *testing.T) {
	ctx := context.Background()
	if _, err := Check(ctx, CheckConfig{Servers: servers}); !errors.Is(err, ErrNoProber) {
		t.Fatalf("no prober: %v", err)
	}
	if _, err := Check(ctx, CheckConfig{Prober: &fakeProber{}}); !errors.Is(err, ErrNoServers) {
		t.Fatalf("no servers: %v", err)
	}
	if _, err := Check(ctx, CheckConfig{Prober: &fakeProber{}, Servers: servers}); !errors.Is(err, ErrNoAnswer) {
		t.Fatalf("no answer: %v", err)
	}
}

// TestCheckReportsMappingEarly: while isolated probes wait for their packets,
// OnMapping gets the mapping from the Bindings (filtering still unknown);
// Check's own report follows with the filtering. Without isolation the
// Bindings come after the probes and OnMapping is not called.
func TestCheckReportsMappingEarly(t *testing.T) {
	for _, tc := range []struct {
		name  string
		held  [2]bool
		early bool
	}{
		{"isolated", [2]bool{true, true}, true},
		{"not-isolated", [2]bool{false, true}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeProber{mapped: map[netip.AddrPort]netip.AddrPort{servers[0]: pubB, servers[1]: pubB},
				held: tc.held, during: make(chan struct{}), patience: 100 * time.Millisecond}
			if tc.early {
				f.patience = 10 * time.Second // the probes' packets "arrive" only with OnMapping
			}
			var early []Report
			start := time.Now()
			rep, err := Check(context.Background(), CheckConfig{
				Prober: f, Servers: servers[:1], Local: local,
				Discover: func(context.Context) ([]netip.AddrPort, error) { return servers[1:2], nil },
				OnMapping: func(r Report) {
					early = append(early, r)
					close(f.during)
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Mapping != MappingEndpointIndependent || rep.Filtering != FilteringAddressAndPortDependent {
				t.Fatalf("report %+v", rep)
			}
			if !tc.early {
				if len(early) != 0 {
					t.Fatalf("OnMapping called after the probes: %+v", early)
				}
				return
			}
			if len(early) != 1 {
				t.Fatalf("OnMapping called %d times, want once", len(early))
			}
			if e := early[0]; e.Mapping != MappingEndpointIndependent || e.Filtering != FilteringUnknown || e.PublicAddr != pubB || e.Answered != 2 {
				t.Fatalf("early report %+v", e)
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Fatalf("Check took %v: the probes waited out their patience, so OnMapping did not come during their wait", took)
			}
		})
	}
}
