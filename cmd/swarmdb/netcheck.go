package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pion/transport/v2"
	"github.com/pion/transport/v2/stdnet"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/natcheck"
	"github.com/swarmdb/swarmdb/natcheck/dhtprobe"
	"github.com/swarmdb/swarmdb/portmap"
)

// netcheckTimeout bounds a whole netcheck: the filtering probes wait about
// a second each per bootstrap node tried, the rest is a few round trips.
const netcheckTimeout = 30 * time.Second

// errNoBootstrap is returned when netcheck was given nothing to ask.
var errNoBootstrap = errors.New("--bootstrap is required (host:port,...)")

const netcheckAbout = `Starts a throwaway DHT node and measures the NAT in front of its UDP socket against the
--bootstrap nodes (every DHT node answers STUN): the public address, the mapping and
filtering behaviour (RFC 4787), the classic NAT name and hairpinning; for IPv4 and, when
the host reaches IPv6 DHT nodes, for IPv6 separately. First it asks the router to map the
IPv4 socket's port (PCP, NAT-PMP or UPnP-IGD; not with --no-portmap) and reports the
mapping: a router that forwards the port makes the NAT measure open to anyone
(endpoint-independent filtering). The mapping is deleted when netcheck ends.
Exit codes: 0 measured, 1 error (no node answered), 2 usage, 130 interrupted.`

func netcheckMain(ctx context.Context, args []string, std stdio) int {
	f := newFlags("netcheck", "", netcheckAbout)
	var bootstrap []netip.AddrPort
	f.list(&bootstrap, "bootstrap", "comma-separated host:port of DHT nodes to measure against (required)")
	listen := f.String("listen", "0.0.0.0:0", "UDP address of the ephemeral node's socket")
	listen6 := listen6Flag(f)
	asJSON := f.Bool("json", false, "print the report as one JSON object on stdout")
	timeout := f.Duration("timeout", netcheckTimeout, "give up after this long")
	noPortMap := f.Bool("no-portmap", false, "do not ask the router for a port mapping first")
	verbose := f.Bool("v", false, "debug logging on stderr")
	if _, code, ok := f.parse(args, 0, std); !ok {
		return code
	}
	if err := checkHostPort("listen", *listen); err != nil {
		return f.usageError(std, "%v", err)
	}
	if err := checkListen6(*listen6); err != nil {
		return f.usageError(std, "%v", err)
	}
	if err := f.hosts.resolve(ctx); err != nil {
		return failed(std, "netcheck", fmt.Errorf("--bootstrap: %w", err))
	}
	if len(bootstrap) == 0 {
		return f.usageError(std, "%v", errNoBootstrap)
	}
	tctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	rep, err := netcheck(tctx, netcheckConfig{Listen: *listen, Listen6: *listen6, Bootstrap: bootstrap, PortMap: !*noPortMap,
		Logger: newLogger(std.err, *asJSON, logLevel(*verbose, slog.LevelWarn))})
	if err != nil {
		if ctx.Err() != nil {
			return exitInterrupted
		}
		return failed(std, "netcheck", err)
	}
	if *asJSON {
		_ = json.NewEncoder(std.out).Encode(rep)
		return exitOK
	}
	printReport(std.out, rep)
	return exitOK
}

// netcheckConfig configures netcheck. Bootstrap is required.
type netcheckConfig struct {
	// Net opens the socket. Zero means the real network; tests pass a vnet
	// or a natlab host's namespace.
	Net transport.Net
	// Listen is the local address. Zero means "0.0.0.0:0".
	Listen string
	// Listen6 is the IPv6 socket's (dht.Config.ListenAddr6).
	Listen6   string
	Bootstrap []netip.AddrPort
	// ProbeWait is the wait for a filtering probe. Zero means
	// natcheck.DefaultProbeWait.
	ProbeWait time.Duration
	// PortMap asks the router for a mapping of the socket's port before
	// measuring (not when the socket or every bootstrap node is on
	// loopback: no router in between). Gateway is the router to ask; nil
	// means the default route's, which only the system network has.
	PortMap bool
	Gateway func() (netip.Addr, error)
	// Logger zero means discard.
	Logger *slog.Logger
}

// netcheckReport is netcheck's result: the NAT measurement and the port
// mapping the router granted (nil when none was asked for).
type netcheckReport struct {
	natcheck.Report
	PortMap *portmap.Status `json:"portmap,omitempty"`
}

// portMapWait bounds netcheck's wait for the router's answer (see
// node.portMapStartWait: a gateway without port mapping says so at once).
const portMapWait = 2 * time.Second

// netcheck starts an ephemeral DHT node with the prober on its OnPacket
// hook, asks the router to map its port (with cfg.PortMap), measures its
// NAT against the bootstrap nodes and the nodes a lookup finds, and closes
// the node and the mapping.
func netcheck(ctx context.Context, cfg netcheckConfig) (netcheckReport, error) {
	if len(cfg.Bootstrap) == 0 {
		return netcheckReport{}, errNoBootstrap
	}
	if cfg.Net == nil {
		n, err := stdnet.NewNet()
		if err != nil {
			return netcheckReport{}, err
		}
		cfg.Net = n
	}
	if cfg.Listen == "" {
		cfg.Listen = "0.0.0.0:0"
	}
	p := dhtprobe.New()
	node := dht.New(dht.Config{
		Net: cfg.Net, ListenAddr: cfg.Listen, ListenAddr6: cfg.Listen6, Bootstrap: cfg.Bootstrap, Mode: dht.ModeEphemeral,
		OnPacket: p.HandlePacket, Logger: cfg.Logger,
	})
	p.Attach(node)
	if err := node.Start(); err != nil {
		return netcheckReport{}, err
	}
	defer node.Close()
	var out netcheckReport
	if pm := startNetcheckPortMap(ctx, cfg, node.LocalAddr()); pm != nil {
		defer func() {
			_ = pm.Close()
		}()
		st := pm.Status()
		out.PortMap = &st
	}
	rep, err := dhtprobe.Measure(ctx, node, p, dhtprobe.MeasureConfig{Net: cfg.Net, ProbeWait: cfg.ProbeWait, Hairpin: true, Logger: cfg.Logger})
	out.Report = rep
	if errors.Is(err, natcheck.ErrNoAnswer) {
		return out, fmt.Errorf("no bootstrap node answered (tried %v): %w", cfg.Bootstrap, err)
	}
	return out, err
}

// startNetcheckPortMap maps the socket's port when cfg asks for it and
// there can be a router in between, and waits for the router's answer; nil
// means no mapping was asked for.
func startNetcheckPortMap(ctx context.Context, cfg netcheckConfig, local netip.AddrPort) *portmap.Client {
	if !cfg.PortMap || local.Addr().IsLoopback() || allLoopback(cfg.Bootstrap) {
		return nil
	}
	pcfg := portmap.Config{Net: cfg.Net, Gateway: cfg.Gateway, UDPPort: local.Port(), Logger: cfg.Logger}
	if !local.Addr().IsUnspecified() {
		pcfg.LocalIP = local.Addr()
	}
	pm, err := portmap.New(pcfg)
	if err != nil {
		if cfg.Logger != nil {
			cfg.Logger.Debug("no port mapping", "err", err)
		}
		return nil
	}
	if err := pm.Start(); err != nil {
		return nil
	}
	t := time.NewTimer(portMapWait)
	defer t.Stop()
	select {
	case <-pm.Ready():
	case <-t.C:
	case <-ctx.Done():
	}
	return pm
}

func allLoopback(addrs []netip.AddrPort) bool {
	for _, a := range addrs {
		if !a.Addr().IsLoopback() {
			return false
		}
	}
	return true
}

// printReport writes the human report: IPv4, then IPv6 when measured.
func printReport(w io.Writer, nr netcheckReport) {
	r := nr.Report
	if r.IPv6 == nil {
		printFamily(w, r, nr.PortMap)
		return
	}
	fmt.Fprintln(w, "IPv4")
	if r.Answered == 0 {
		fmt.Fprintln(w, "no IPv4 DHT node answered")
	} else {
		printFamily(w, r, nr.PortMap)
	}
	fmt.Fprintln(w, "\nIPv6")
	printFamily(w, *r.IPv6, nil)
}

// printFamily writes one family's report; pm is the port mapping (IPv4
// only: IPv6 has no translation to map).
func printFamily(w io.Writer, r natcheck.Report, pm *portmap.Status) {
	fmt.Fprintf(w, "public address: %s\n", r.PublicAddr)
	if len(r.PublicAddrs) > 1 {
		fmt.Fprintf(w, "all public addresses: %v\n", r.PublicAddrs)
	}
	fmt.Fprintf(w, "NAT type:       %s\n", r.Class)
	fmt.Fprintf(w, "  mapping:      %s (RFC 4787)\n", r.Mapping)
	fmt.Fprintf(w, "  filtering:    %s (RFC 4787)\n", r.Filtering)
	hp := "not measured"
	if r.Hairpin != nil {
		hp = fmt.Sprint(*r.Hairpin)
	}
	fmt.Fprintf(w, "  hairpinning:  %s\n", hp)
	fmt.Fprintf(w, "confidence:     %s (%d of %d nodes answered, %d agree)\n", r.Confidence, r.Answered, r.Queried, r.Agreeing)
	if pm != nil {
		fmt.Fprintf(w, "port mapping:   %s\n", portMapLine(*pm))
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "node\tmapped\trtt")
	for _, s := range r.Servers {
		if s.Answered {
			fmt.Fprintf(tw, "%s\t%s\t%.1f ms\n", s.Server, s.Mapped, s.RTTMilli)
		} else {
			fmt.Fprintf(tw, "%s\t-\t%s\n", s.Server, s.Error)
		}
	}
	_ = tw.Flush()
}

// portMapLine describes a port mapping status in one line, for people.
func portMapLine(st portmap.Status) string {
	if st.State != portmap.StateMapped || st.UDP == nil {
		line := string(st.State)
		if st.Err != nil {
			line += ": " + strings.SplitN(st.Err.Error(), "\n", 2)[0]
		}
		return line
	}
	line := fmt.Sprintf("%s %s -> %s", st.Protocol, st.UDP.External, st.UDP.Internal)
	if st.TCP != nil {
		line += fmt.Sprintf(", websocket %s", st.TCP.External)
	}
	if st.UDP.Lifetime > 0 {
		return line + fmt.Sprintf(" (lifetime %v, renewed at half)", st.UDP.Lifetime)
	}
	return line + " (permanent)"
}
