package natlab

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// A router can run miniupnpd (Debian's miniupnpd-nftables), which serves
// UPnP-IGD, NAT-PMP and PCP on its LAN and adds a DNAT rule per mapping.
// Three things make it work in the lab:
//
//   - Its rules live in a table of their own ("inet miniupnpd", the chains
//     miniupnpd's nft_init.sh would make), so reloading the NAT table
//     (SetHairpin, SetUDPTimeout) leaves the mappings alone. Its DNAT chain
//     runs just before the NAT table's, and the NAT table's forward chain
//     already accepts DNATed packets.
//   - miniupnpd refuses to forward ports when its WAN address is a reserved
//     one, and the lab's are all RFC 5737 documentation addresses. With
//     ext_perform_stun it instead asks a STUN server for its external
//     address and forwards ports when all four of its RFC 3489 tests come
//     back (nothing upstream filters). The lab's reflector answers them,
//     and the router accepts that reflector's unsolicited answers on its
//     WAN (natRules.AllowWANFrom); nothing else changes.
//   - Its configuration, lease file and pid file live in the test's
//     temporary directory; it runs only inside the router's namespace and
//     is stopped by its PID.

// upnpTable holds miniupnpd's chains (names as in its nft_init.sh, set in
// its config so that they are ours).
const upnpTable = "miniupnpd"

// miniupnpdReadyTimeout bounds the wait for a started miniupnpd to serve:
// its STUN test waits up to 3 s per round for answers.
const miniupnpdReadyTimeout = 15 * time.Second

// MiniUPnPdConfig configures a router's miniupnpd. The zero value serves
// UPnP-IGD, NAT-PMP and PCP.
type MiniUPnPdConfig struct {
	// DisableUPnP turns UPnP-IGD off; DisableNATPMP turns NAT-PMP and PCP
	// off (miniupnpd serves both on port 5351 or neither).
	DisableUPnP, DisableNATPMP bool
}

// MiniUPnPd is miniupnpd running on a lab router.
type MiniUPnPd struct {
	// Immutable after StartMiniUPnPd.
	router *Router
	cfg    MiniUPnPdConfig
	dir    string // config, lease and pid files
	conf   string

	// Guarded by mu.
	mu   sync.Mutex
	proc *Process
}

// RequireMiniUPnPd skips t when miniupnpd is not installed, or fails it
// when CI=true (CI installs Debian's miniupnpd-nftables). Call it before
// building a lab that needs the daemon.
func RequireMiniUPnPd(t testing.TB) {
	t.Helper()
	problem := ""
	if _, err := exec.LookPath("miniupnpd"); err != nil {
		problem = "miniupnpd not found (Debian package miniupnpd-nftables)"
	}
	switch decide(problem, os.Getenv(ciEnv)) {
	case verdictFail:
		t.Fatalf("natlab: %s; CI=true, so the port-mapping lab must run", problem)
	case verdictSkip:
		t.Skipf("natlab: %s; skipping (with CI=true this fails instead)", problem)
	}
}

// StartMiniUPnPd starts miniupnpd on the router (UPnP-IGD, NAT-PMP and PCP
// for its LAN) and waits until it serves. The lab stops it when the test
// ends. Call it from the test's goroutine, like the topology methods; a
// setup failure fails the test.
func (r *Router) StartMiniUPnPd(cfg MiniUPnPdConfig) *MiniUPnPd {
	l := r.lab
	l.t.Helper()
	RequireMiniUPnPd(l.t)
	if r.typ == Open || r.parent != nil {
		l.t.Fatalf("natlab: miniupnpd needs a NAT router on the internet segment, not %s", r.name)
	}
	stun := l.upnpSTUN()
	r.mu.Lock()
	r.allowWAN = []netip.Addr{stun.Addr().Addr(), stun.OtherAddr().Addr()}
	err := r.applyLocked()
	r.mu.Unlock()
	l.must(err)
	l.must(l.nft(r.ns, upnpRuleset()))

	d := &MiniUPnPd{router: r, cfg: cfg, dir: l.t.TempDir()}
	d.conf = filepath.Join(d.dir, "miniupnpd.conf")
	l.must(os.WriteFile(d.conf, []byte(d.config(stun.Addr())), 0o600))
	l.must(d.start())
	return d
}

// upnpSTUN returns the lab's STUN server for miniupnpd, adding it on first
// use.
func (l *Lab) upnpSTUN() *Reflector {
	l.t.Helper()
	l.mu.Lock()
	s := l.stun
	l.mu.Unlock()
	if s != nil {
		return s
	}
	s = l.AddReflector("upnpstun")
	l.mu.Lock()
	l.stun = s
	l.mu.Unlock()
	return s
}

// upnpRuleset makes miniupnpd's table: a DNAT chain run just before the
// NAT table's, a forward chain (policy accept: the NAT table's decides)
// and a postrouting chain, each jumping to the chain miniupnpd fills.
func upnpRuleset() string {
	return fmt.Sprintf(`add table inet %[1]s
delete table inet %[1]s
table inet %[1]s {
  chain forward {
    type filter hook forward priority filter - 5; policy accept;
    jump miniupnpd
  }
  chain miniupnpd {
  }
  chain prerouting {
    type nat hook prerouting priority dstnat - 5; policy accept;
    jump prerouting_miniupnpd
  }
  chain prerouting_miniupnpd {
  }
  chain postrouting {
    type nat hook postrouting priority srcnat - 5; policy accept;
    jump postrouting_miniupnpd
  }
  chain postrouting_miniupnpd {
  }
}
`, upnpTable)
}

// config renders miniupnpd.conf.
func (d *MiniUPnPd) config(stun netip.AddrPort) string {
	cfg := d.cfg
	yes := func(on bool) string {
		if on {
			return "yes"
		}
		return "no"
	}
	var uuid [16]byte
	_, _ = rand.Read(uuid[:])
	lan := d.router.lan.Masked()
	return strings.Join([]string{
		"ext_ifname=" + wanIf,
		"listening_ip=" + lanIf,
		"ipv6_disable=yes",
		"enable_upnp=" + yes(!cfg.DisableUPnP),
		"enable_natpmp=" + yes(!cfg.DisableNATPMP),
		"secure_mode=yes",
		"ext_perform_stun=yes",
		"ext_stun_host=" + stun.Addr().String(),
		fmt.Sprintf("ext_stun_port=%d", stun.Port()),
		"lease_file=" + filepath.Join(d.dir, "leases"),
		"minissdpdsocket=" + filepath.Join(d.dir, "minissdpd.sock"),
		"upnp_table_name=" + upnpTable,
		"upnp_nat_table_name=" + upnpTable,
		"upnp_forward_chain=miniupnpd",
		"upnp_nat_chain=prerouting_miniupnpd",
		"upnp_nat_postrouting_chain=postrouting_miniupnpd",
		fmt.Sprintf("uuid=%x-%x-%x-%x-%x", uuid[0:4], uuid[4:6], uuid[6:8], uuid[8:10], uuid[10:16]),
		fmt.Sprintf("allow 1024-65535 %s 1024-65535", lan),
		"deny 0-65535 0.0.0.0/0 0-65535",
		"",
	}, "\n")
}

// start runs miniupnpd in the foreground (-d: logs on stderr, which the
// Process keeps) and waits until it has forwarding enabled and listens.
func (d *MiniUPnPd) start() error {
	p, err := d.router.Start(context.Background(), "miniupnpd", "-f", d.conf, "-d", "-P", filepath.Join(d.dir, "miniupnpd.pid"))
	if err != nil {
		return err
	}
	d.mu.Lock()
	d.proc = p
	d.mu.Unlock()
	deadline := time.Now().Add(miniupnpdReadyTimeout)
	for {
		out := p.Output()
		if strings.Contains(out, "Port forwarding is now enabled") &&
			(d.cfg.DisableNATPMP || strings.Contains(out, "Listening for NAT-PMP/PCP")) &&
			(d.cfg.DisableUPnP || strings.Contains(out, "HTTP listening on port")) {
			return nil
		}
		select {
		case <-p.Done():
			return fmt.Errorf("natlab: miniupnpd on %s exited: %v\n%s", d.router.name, p.Wait(), out)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = p.Stop()
			return fmt.Errorf("natlab: miniupnpd on %s not serving after %v:\n%s", d.router.name, miniupnpdReadyTimeout, out)
		}
	}
}

// Stop stops the daemon (by its PID). Its mappings' rules stay in the
// router until Restart or the lab ends, as they do when the real daemon
// exits; the router behaves as one without port mapping for new requests.
func (d *MiniUPnPd) Stop() error {
	d.mu.Lock()
	p := d.proc
	d.proc = nil
	d.mu.Unlock()
	if p == nil {
		return nil
	}
	return p.Stop()
}

// Restart simulates a router reboot: the daemon stops, its mappings (rules
// and lease file) are gone, and it starts again with a new epoch.
func (d *MiniUPnPd) Restart() error {
	if err := d.Stop(); err != nil {
		return err
	}
	if err := d.router.lab.nft(d.router.ns, upnpRuleset()); err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(d.dir, "leases")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return d.start()
}

// Output returns what the daemon logged so far.
func (d *MiniUPnPd) Output() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.proc == nil {
		return ""
	}
	return d.proc.Output()
}

// Redirects lists the mappings the daemon has in the router's rules, as
// "udp 4000 -> 10.1.0.10:4000".
func (d *MiniUPnPd) Redirects(ctx context.Context) ([]string, error) {
	out, err := d.router.Run(ctx, "nft", "list", "chain", "inet", upnpTable, "prerouting_miniupnpd")
	if err != nil {
		return nil, err
	}
	var rs []string
	for _, line := range strings.Split(out, "\n") {
		// iif "wan0" @nh,72,8 0x11 th dport 4000 dnat ip to 10.1.0.10:4000
		f := strings.Fields(line)
		i := indexOf(f, "dport")
		j := indexOf(f, "to")
		if i < 0 || j < 0 || i+1 >= len(f) || j+1 >= len(f) {
			continue
		}
		proto := "tcp"
		if strings.Contains(line, "0x11") {
			proto = "udp"
		}
		rs = append(rs, fmt.Sprintf("%s %s -> %s", proto, f[i+1], f[j+1]))
	}
	return rs, nil
}

func indexOf(f []string, s string) int {
	for i, x := range f {
		if x == s {
			return i
		}
	}
	return -1
}
