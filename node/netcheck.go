package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/pion/transport/v2"
	"github.com/pion/transport/v2/stdnet"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/internal/demux"
	"github.com/swarmdb/swarmdb/natcheck"
	"github.com/swarmdb/swarmdb/natcheck/dhtprobe"
	"github.com/swarmdb/swarmdb/portmap"
)

// The NAT measurement and port-mapping types callers of node read, named
// here so that they need no other package of ours (`swarmdb netcheck`,
// Node.NAT, Node.PortMap).
type (
	// NATReport is one NAT measurement (natcheck.Report).
	NATReport = natcheck.Report
	// NATProbeResult is one round of a NAT measurement's filtering probes
	// (natcheck.ProbeResult).
	NATProbeResult = natcheck.ProbeResult
	// PortMapStatus is the router port mapping's state (portmap.Status).
	PortMapStatus = portmap.Status
)

// PortMapMapped is the PortMapStatus state of a granted mapping.
const PortMapMapped = portmap.StateMapped

// NetcheckConfig configures Netcheck. Bootstrap is required.
type NetcheckConfig struct {
	// Net opens the socket. Zero means the real network; tests pass a vnet
	// or a natlab host's namespace.
	Net transport.Net
	// ListenAddr is the local address. Zero means "0.0.0.0:0".
	ListenAddr string
	// ListenAddr6 is the IPv6 socket's (dht.Config.ListenAddr6).
	ListenAddr6 string
	// Bootstrap lists the DHT nodes to measure against. Required.
	Bootstrap []netip.AddrPort
	// ProbeWait is the wait for a filtering probe. Zero means
	// natcheck.DefaultProbeWait.
	ProbeWait time.Duration
	// PortMap asks the router for a mapping of the socket's port before
	// measuring (not when the socket or every bootstrap node is on
	// loopback: no router in between). Zero means no mapping is asked for.
	PortMap bool
	// Gateway is the router to ask. Zero means the default route's, which
	// only the system network has.
	Gateway func() (netip.Addr, error)
	// Logger zero means discard.
	Logger *slog.Logger
}

// NetcheckReport is Netcheck's result: the NAT measurement (IPv4, with
// IPv6 beside it when measured) and the port mapping the router granted
// (nil when none was asked for).
type NetcheckReport struct {
	NATReport
	PortMap *PortMapStatus `json:"portmap,omitempty"`
}

// netcheckPortMapWait bounds Netcheck's wait for the router's answer (see
// portMapStartWait: a gateway without port mapping says so at once).
const netcheckPortMapWait = 2 * time.Second

// Netcheck starts a throwaway ephemeral DHT node, asks the router to map
// its port (with PortMap), measures its NAT against the bootstrap nodes
// and the nodes a lookup finds (for IPv4 and, when IPv6 nodes answer, for
// IPv6), and closes the node and the mapping. ctx bounds the whole
// measurement.
func Netcheck(ctx context.Context, cfg NetcheckConfig) (NetcheckReport, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return NetcheckReport{}, err
	}
	p := dhtprobe.New()
	dn := dht.New(dht.Config{
		Net: cfg.Net, ListenAddr: cfg.ListenAddr, ListenAddr6: cfg.ListenAddr6, Bootstrap: cfg.Bootstrap, Mode: dht.ModeEphemeral,
		Logger: cfg.Logger,
	})
	dn.Handle(demux.STUN, p.HandlePacket) // nothing else here takes STUN
	p.Attach(dn)
	if err := dn.Start(); err != nil {
		return NetcheckReport{}, err
	}
	defer dn.Close()
	var out NetcheckReport
	if pm := startNetcheckPortMap(ctx, cfg, dn.LocalAddr()); pm != nil {
		defer func() {
			_ = pm.Close()
		}()
		st := pm.Status()
		out.PortMap = &st
	}
	rep, err := dhtprobe.Measure(ctx, dn, p, dhtprobe.MeasureConfig{Net: cfg.Net, ProbeWait: cfg.ProbeWait, Hairpin: true, Logger: cfg.Logger})
	out.NATReport = rep
	if errors.Is(err, natcheck.ErrNoAnswer) {
		return out, fmt.Errorf("no bootstrap node answered (tried %v): %w", cfg.Bootstrap, err)
	}
	return out, err
}

func (c NetcheckConfig) withDefaults() (NetcheckConfig, error) {
	if len(c.Bootstrap) == 0 {
		return c, fmt.Errorf("%w: netcheck needs Bootstrap nodes", ErrConfig)
	}
	if c.Net == nil {
		n, err := stdnet.NewNet()
		if err != nil {
			return c, err
		}
		c.Net = n
	}
	if c.ListenAddr == "" {
		c.ListenAddr = "0.0.0.0:0"
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// startNetcheckPortMap maps the socket's port when cfg asks for it and
// there can be a router in between, and waits for the router's answer; nil
// means no mapping was asked for.
func startNetcheckPortMap(ctx context.Context, cfg NetcheckConfig, local netip.AddrPort) *portmap.Client {
	if !cfg.PortMap || local.Addr().IsLoopback() || allLoopback(cfg.Bootstrap) {
		return nil
	}
	pcfg := portmap.Config{Net: cfg.Net, Gateway: cfg.Gateway, UDPPort: local.Port(), Logger: cfg.Logger}
	if !local.Addr().IsUnspecified() {
		pcfg.LocalIP = local.Addr()
	}
	pm, err := portmap.New(pcfg)
	if err != nil {
		cfg.Logger.Debug("no port mapping", "err", err)
		return nil
	}
	if err := pm.Start(); err != nil {
		return nil
	}
	t := time.NewTimer(netcheckPortMapWait)
	defer t.Stop()
	select {
	case <-pm.Ready():
	case <-t.C:
	case <-ctx.Done():
	}
	return pm
}

// allLoopback reports whether every address is a loopback one.
func allLoopback(addrs []netip.AddrPort) bool {
	for _, a := range addrs {
		if !a.Addr().IsLoopback() {
			return false
		}
	}
	return true
}
