package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"text/tabwriter"
	"time"

	"github.com/pion/transport/v2"
	"github.com/pion/transport/v2/stdnet"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/holepunch"
	"github.com/swarmdb/swarmdb/holepunch/dhtprobe"
)

// netcheckTimeout bounds a whole netcheck: the filtering probes wait about
// a second each per bootstrap node tried, the rest is a few round trips.
const netcheckTimeout = 30 * time.Second

// errNoBootstrap is returned when netcheck was given nothing to ask.
var errNoBootstrap = errors.New("--bootstrap is required (host:port,...)")

const netcheckAbout = `Starts a throwaway DHT node and measures the NAT in front of its UDP socket against the
--bootstrap nodes (every DHT node answers STUN): the public address, the mapping and
filtering behaviour (RFC 4787), the classic NAT name and hairpinning; for IPv4 and, when
the host reaches IPv6 DHT nodes, for IPv6 separately.
Exit codes: 0 measured, 1 error (no node answered), 2 usage, 130 interrupted.`

func netcheckMain(ctx context.Context, args []string, std stdio) int {
	f := newFlags("netcheck", "", netcheckAbout)
	var bootstrap []netip.AddrPort
	f.list(&bootstrap, "bootstrap", "comma-separated host:port of DHT nodes to measure against (required)")
	listen := f.String("listen", "0.0.0.0:0", "UDP address of the ephemeral node's socket")
	listen6 := listen6Flag(f)
	asJSON := f.Bool("json", false, "print the report as one JSON object on stdout")
	timeout := f.Duration("timeout", netcheckTimeout, "give up after this long")
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
	rep, err := netcheck(tctx, netcheckConfig{Listen: *listen, Listen6: *listen6, Bootstrap: bootstrap,
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
	// holepunch.DefaultProbeWait.
	ProbeWait time.Duration
	// Logger zero means discard.
	Logger *slog.Logger
}

// netcheck starts an ephemeral DHT node with the prober on its OnPacket
// hook, measures its NAT against the bootstrap nodes and the nodes a
// lookup finds, and closes the node.
func netcheck(ctx context.Context, cfg netcheckConfig) (holepunch.NATReport, error) {
	if len(cfg.Bootstrap) == 0 {
		return holepunch.NATReport{}, errNoBootstrap
	}
	if cfg.Net == nil {
		n, err := stdnet.NewNet()
		if err != nil {
			return holepunch.NATReport{}, err
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
		return holepunch.NATReport{}, err
	}
	defer node.Close()
	rep, err := dhtprobe.Measure(ctx, node, p, dhtprobe.MeasureConfig{Net: cfg.Net, ProbeWait: cfg.ProbeWait, Hairpin: true, Logger: cfg.Logger})
	if errors.Is(err, holepunch.ErrNoAnswer) {
		return rep, fmt.Errorf("no bootstrap node answered (tried %v): %w", cfg.Bootstrap, err)
	}
	return rep, err
}

// printReport writes the human report: IPv4, then IPv6 when measured.
func printReport(w io.Writer, r holepunch.NATReport) {
	if r.IPv6 == nil {
		printFamily(w, r)
		return
	}
	fmt.Fprintln(w, "IPv4")
	if r.Answered == 0 {
		fmt.Fprintln(w, "no IPv4 DHT node answered")
	} else {
		printFamily(w, r)
	}
	fmt.Fprintln(w, "\nIPv6")
	printFamily(w, *r.IPv6)
}

// printFamily writes one family's report.
func printFamily(w io.Writer, r holepunch.NATReport) {
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
