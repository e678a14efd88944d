package swarm

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/natcheck"
)

// natTransport is a failingTransport that keeps the swarm's hooks, so a
// test can play the endpoint's NAT measurements.
type natTransport struct {
	failingTransport
	hooks transportHooks
}

func (f *natTransport) start(_ context.Context, _ *dht.Node, h transportHooks) (connector, error) {
	f.hooks = h
	return f, nil
}

// TestOnNATChange: every successful measurement passes through the swarm,
// and OnNATChange gets the first report and then each one that differs
// from the last it got (natcheck.Changed), in order; a report that differs
// only in detail (one more server answered) is no change, and nothing is
// reported after Close.
func TestOnNATChange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var got []natcheck.Report
		tr := &natTransport{}
		s, err := New(Config{
			DisableLAN: true,
			transport:  tr,
			discovery:  func(dht.Config) (discovery, *dht.Node, error) { return &memDiscovery{}, nil, nil },
			OnNATChange: func(r natcheck.Report) {
				mu.Lock()
				got = append(got, r)
				mu.Unlock()
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		home := natcheck.Report{PublicAddr: netip.MustParseAddrPort("203.0.113.7:4000"), Answered: 2,
			Mapping: natcheck.MappingEndpointIndependent, Filtering: natcheck.FilteringEndpointIndependent, Class: natcheck.ClassFullCone}
		detail := home
		detail.Answered = 3
		moved := home
		moved.PublicAddr = netip.MustParseAddrPort("198.51.100.9:4000")
		for _, r := range []natcheck.Report{home, detail, moved} {
			tr.hooks.measured(r)
		}
		synctest.Wait()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		tr.hooks.measured(home) // after Close: not reported
		synctest.Wait()

		mu.Lock()
		defer mu.Unlock()
		if len(got) != 2 || got[0].PublicAddr != home.PublicAddr || got[0].Answered != 2 || got[1].PublicAddr != moved.PublicAddr {
			t.Fatalf("OnNATChange got %+v, want the home report (2 answers) then the moved one", got)
		}
	})
}

// measuringTransport has a start measurement (initial) and counts re-measurements.
type measuringTransport struct {
	failingTransport
	initial    natcheck.Report
	remeasured int
}

func (f *measuringTransport) WaitNAT(context.Context) natcheck.Report { return f.initial }

func (f *measuringTransport) RemeasureNAT(context.Context) (natcheck.Report, error) {
	f.remeasured++
	return f.initial, nil
}

// TestMonitorTakesTheStartMeasurement: the NAT monitor's first measurement is the one the
// transport made at start, not a second one beside it; later ones measure again, and so
// does the first when the start measurement failed.
func TestMonitorTakesTheStartMeasurement(t *testing.T) {
	fullcone := natcheck.Report{Class: natcheck.ClassFullCone, Answered: 3}
	for _, tc := range []struct {
		name    string
		initial natcheck.Report
		want    []int // re-measurements counted after each call
	}{
		{"measured", fullcone, []int{0, 1, 2}},
		{"start-failed", natcheck.Report{}, []int{1, 2, 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := &measuringTransport{initial: tc.initial}
			check := (&Swarm{tr: tr}).monitorCheck()
			for i, want := range tc.want {
				if _, err := check(context.Background()); err != nil {
					t.Fatal(err)
				}
				if tr.remeasured != want {
					t.Fatalf("call %d: %d re-measurements, want %d", i+1, tr.remeasured, want)
				}
			}
		})
	}
}
