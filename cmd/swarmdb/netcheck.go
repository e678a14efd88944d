package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/swarmdb/swarmdb/node"
)

// netcheckTimeout bounds a whole netcheck: the filtering probes wait about
// a second each per bootstrap node tried, the rest is a few round trips.
const netcheckTimeout = 30 * time.Second

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
	rep, err := node.Netcheck(tctx, node.NetcheckConfig{ListenAddr: *listen, ListenAddr6: *listen6, Bootstrap: bootstrap, PortMap: !*noPortMap,
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

// printReport writes the human report: IPv4, then IPv6 when measured.
func printReport(w io.Writer, nr node.NetcheckReport) {
	r := nr.NATReport
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
func printFamily(w io.Writer, r node.NATReport, pm *node.PortMapStatus) {
	fmt.Fprintf(w, "public address: %s\n", r.PublicAddr)
	if len(r.PublicAddrs) > 1 {
		fmt.Fprintf(w, "all public addresses: %v\n", r.PublicAddrs)
	}
	fmt.Fprintf(w, "NAT type:       %s\n", r.Class)
	fmt.Fprintf(w, "  mapping:      %s (RFC 4787)\n", r.Mapping)
	fmt.Fprintf(w, "  filtering:    %s (RFC 4787)\n", r.Filtering)
	for _, p := range r.Probes {
		fmt.Fprintf(w, "    probed via %s: %s\n", p.Server, probeLine(p))
	}
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

// probeLine describes one round of filtering probes in one line, for people.
func probeLine(p node.NATProbeResult) string {
	return fmt.Sprintf("other node %s, other port %s (waited %.0f ms)", p.OtherNode, p.OtherPort, p.WaitMilli)
}

// portMapLine describes a port mapping status in one line, for people.
func portMapLine(st node.PortMapStatus) string {
	if st.State != node.PortMapMapped || st.UDP == nil {
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
