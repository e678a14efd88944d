package swarm

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/swarmdb/swarmdb/natcheck"
)

// The swarm's NAT loop. The transport measures the NAT at start and on
// RemeasureNAT; with Config.MonitorNAT a natcheck.Monitor also measures
// whenever the host's addresses or the reflexive addresses DHT peers report
// change, and a changed result makes the swarm re-announce and check its
// connections (NetworkChanged). Every successful measurement passes
// through natMeasured, which reports the ones that changed to
// Config.OnNATChange.

// RemeasureNAT measures the NAT in front of the swarm's socket again and
// makes the hole-punching endpoint use the new report in its next
// handshakes, for callers that know the network changed in a way the
// monitor cannot see (a router port mapping appeared, the DHT was joined
// through nodes found elsewhere). It blocks until done.
func (s *Swarm) RemeasureNAT(ctx context.Context) (natcheck.Report, error) {
	if s.tr == nil {
		return natcheck.Report{}, fmt.Errorf("swarm: remeasure nat: %w", ErrNotStarted)
	}
	return s.tr.RemeasureNAT(ctx)
}

// WakeNATMonitor asks the NAT monitor (Config.MonitorNAT) to measure again
// as soon as its minimum gap between measurements allows, so that it
// compares what peers report next with a fresh report. It does not block,
// and does nothing without a monitor.
func (s *Swarm) WakeNATMonitor() {
	if s.monitor != nil {
		s.monitor.Remeasure()
	}
}

// NAT returns the endpoint's last NAT report (zero before the first
// measurement finished, or without a hole-punching endpoint).
func (s *Swarm) NAT() natcheck.Report {
	if s.tr == nil {
		return natcheck.Report{}
	}
	return s.tr.NAT()
}

// ErrNoEndpoint: the swarm runs without a hole-punching endpoint (tests
// with a fake transport).
var ErrNoEndpoint = errors.New("swarm: no hole-punching endpoint")

// natMeasured is the transport's hook for every successful measurement: a
// report that differs from the last one reported (natcheck.Changed), or
// the first, goes to OnNATChange through the event queue, in order with
// the connection events and without the lock.
func (s *Swarm) natMeasured(r natcheck.Report) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.natReported && !natcheck.Changed(s.natLast, r) {
		return
	}
	s.natLast, s.natReported = r, true
	if s.cfg.OnNATChange != nil {
		s.queueEventLocked(event{nat: &r})
	}
}

// startNATMonitor starts the monitor when Config.MonitorNAT asks for it
// and there is a DHT to measure against. Start calls it once the
// transport runs; the monitor measures through the transport.
func (s *Swarm) startNATMonitor() error {
	if !s.cfg.MonitorNAT || s.node == nil {
		return nil
	}
	dn := s.node
	s.monitor = natcheck.NewMonitor(natcheck.MonitorConfig{
		Net:      s.cfg.Net,
		Interval: s.cfg.NATInterval,
		Reflexive: func() []natcheck.ReflexiveReport {
			var out []natcheck.ReflexiveReport
			for _, o := range dn.Observed() {
				out = append(out, natcheck.ReflexiveReport{By: o.By, Addr: o.Addr})
			}
			return out
		},
		Check:    s.monitorCheck(),
		OnChange: s.natChanged,
		Logger:   s.log.With("component", "monitor"),
	})
	return s.monitor.Start()
}

// monitorCheck is the monitor's Check. Its first measurement is the one the transport runs
// at start: it takes that one instead of measuring again beside it (two measurements at
// once sent two sets of filtering probes, each spoiling the other's strangers, and whichever
// ended last became the endpoint's report). Later ones measure again.
func (s *Swarm) monitorCheck() func(context.Context) (natcheck.Report, error) {
	var started atomic.Bool
	return func(ctx context.Context) (natcheck.Report, error) {
		if started.CompareAndSwap(false, true) {
			if r := s.tr.WaitNAT(ctx); r.Class != "" {
				return r, nil
			}
		}
		return s.tr.RemeasureNAT(ctx)
	}
}

// natChanged is the monitor's OnChange: a report that differs from the
// monitor's previous one means the network changed under the swarm's
// connections. The first report changes nothing.
func (s *Swarm) natChanged(old, cur natcheck.Report) {
	if old.Class == "" {
		return
	}
	s.log.Info("swarm: network changed", "nat", cur.Class, "public", cur.PublicAddr, "was", old.PublicAddr)
	s.NetworkChanged()
}
