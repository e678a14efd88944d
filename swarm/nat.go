package swarm

import (
	"context"
	"errors"
	"fmt"

	"github.com/swarmdb/swarmdb/natcheck"
)

// RemeasureNAT measures the NAT in front of the swarm's socket again and
// makes the hole-punching endpoint use the new report in its next
// handshakes. The node calls it when the network changed (see
// natcheck.Monitor).
func (s *Swarm) RemeasureNAT(ctx context.Context) (natcheck.Report, error) {
	et, ok := s.tr.(*endpointTransport)
	if !ok {
		return natcheck.Report{}, fmt.Errorf("swarm: remeasure nat: %w", ErrNoEndpoint)
	}
	return et.ep.Remeasure(ctx)
}

// NAT returns the endpoint's last NAT report (zero before the first
// measurement finished, or without a hole-punching endpoint).
func (s *Swarm) NAT() natcheck.Report {
	if et, ok := s.tr.(*endpointTransport); ok {
		return et.ep.NAT()
	}
	return natcheck.Report{}
}

// ErrNoEndpoint: the swarm runs without a hole-punching endpoint (tests
// with a fake transport).
var ErrNoEndpoint = errors.New("swarm: no hole-punching endpoint")
