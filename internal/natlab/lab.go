package natlab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Address plan. Only documentation and shared address space is used
// (RFC 5737, RFC 6598) plus RFC 1918 10.x on the LANs, and all of it exists
// only inside the lab's namespaces.
var (
	internetPrefix = netip.MustParsePrefix("203.0.113.0/24") // the internet segment
	firstPublic    = 10                                      // 203.0.113.10 is the first address handed out
)

// lanPrefix returns the LAN of the n-th router: 10.n.0.0/24, or
// 100.64.n.0/24 for a carrier-grade NAT (shared address space, RFC 6598).
func lanPrefix(n int, carrier bool) netip.Prefix {
	if carrier {
		return netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64, byte(n), 0}), 24)
	}
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(n), 0, 0}), 24)
}

// Ephemeral ports: every lab host gets its own ip_local_port_range, so two
// hosts behind one NAT never bind the same local port by accident. Linux NAT
// keeps a port only while the 5-tuple is free, so a shared local port makes
// one of the hosts look address-dependent (nat.md, B5.1 "port collision").
const (
	portRangeBase  = 10000
	portRangeSize  = 1000
	portRangeSlots = 50 // 10000-59999; host 51 shares host 1's range
)

// Time limits for the lab's own commands and for stopping processes.
const (
	setupTimeout = 30 * time.Second // one ip/nft/sysctl command during setup
	stopGrace    = 2 * time.Second  // SIGTERM to SIGKILL when a process is stopped
)

// namePrefix is the family prefix of every namespace a lab creates:
// "sdb<pid>-<4 hex>-<role>". The pid lets RemoveStale tell a crashed run from
// a live one; the random part separates several labs in one process.
const namePrefix = "sdb"

var (
	staleName = regexp.MustCompile(`^` + namePrefix + `([0-9]+)-[0-9a-f]{4}-`)
	validName = regexp.MustCompile(`^[a-z][a-z0-9]{0,11}$`)
)

// Lab is one NAT test topology. Create it with New; it is torn down when the
// test ends.
//
// Topology methods (AddPublicHost, AddRouter, Router.AddHost, ...) report
// setup failures with t.Fatalf on the test passed to New, so call them from
// that test's goroutine, before starting parallel subtests. Everything else
// (Run, Start, Net, the Set* knobs) returns errors and is safe for
// concurrent use.
type Lab struct {
	// Immutable after New.
	t      testing.TB
	prefix string // "sdb<pid>-<hex>"
	inet   string // namespace of the internet segment

	// Guarded by mu.
	mu         sync.Mutex
	namespaces []string // created, in order; deleted in reverse
	procs      []*Process
	names      map[string]bool // node names in use
	nextPublic int             // last octet of the next internet address
	nextRouter int             // number of the next router's LAN
	nextHost   int             // lab-wide host counter (port ranges)
	inetPorts  int             // bridge ports on the internet segment
	ipv6       bool            // EnableIPv6 was called (ipv6.go)
	stun       *Reflector      // miniupnpd's STUN server, made on first use
	closed     bool
}

// New builds an empty lab (just the internet segment) and registers its
// teardown with t.Cleanup. It calls Require first, so it skips the test
// without root, ip or nft (and fails it when CI=true). It also removes
// namespaces left behind by crashed earlier runs (RemoveStale).
func New(t testing.TB) *Lab {
	t.Helper()
	Require(t)
	if removed, err := RemoveStale(t.Logf); err != nil {
		t.Logf("natlab: removing stale namespaces: %v", err)
	} else if len(removed) > 0 {
		t.Logf("natlab: removed %d stale namespaces of crashed runs: %v", len(removed), removed)
	}
	var rnd [2]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatalf("natlab: random prefix: %v", err)
	}
	l := &Lab{
		t:          t,
		prefix:     fmt.Sprintf("%s%d-%s", namePrefix, os.Getpid(), hex.EncodeToString(rnd[:])),
		names:      map[string]bool{},
		nextPublic: firstPublic,
		nextRouter: 1,
	}
	// Registered before anything exists, so a failure half-way through
	// setup still removes what was made.
	t.Cleanup(l.teardown)
	l.inet = l.addNamespace("inet")
	l.must(l.ip(l.inet, "link add "+inetIf+" type bridge", "link set "+inetIf+" address "+bridgeMAC(0), "link set "+inetIf+" up"))
	// Plain L2 on the internet bridge: no netfilter on frames passing it.
	_ = l.sysctl(l.inet, "net.bridge.bridge-nf-call-iptables", "0")
	return l
}

// Prefix returns the per-run prefix of every namespace this lab creates.
func (l *Lab) Prefix() string { return l.prefix }

// InternetPrefix returns the internet segment's subnet (203.0.113.0/24).
func (l *Lab) InternetPrefix() netip.Prefix { return internetPrefix }

// AddPublicHost adds a host with one address on the internet segment.
func (l *Lab) AddPublicHost(name string) *Host {
	l.t.Helper()
	return l.addHost(name, nil)
}

// AddRouter adds a NAT router whose WAN side is on the internet segment and
// whose LAN is 10.N.0.0/24. A router of type Open has no namespace; its
// AddHost adds public hosts.
func (l *Lab) AddRouter(cfg RouterConfig) *Router {
	l.t.Helper()
	return l.addRouter(cfg, nil, false)
}

// AddCarrierNAT adds a carrier-grade NAT: a router like AddRouter's but with
// its LAN in the shared address space 100.64.N.0/24 (RFC 6598). Put home
// routers behind it with its AddRouter.
func (l *Lab) AddCarrierNAT(cfg RouterConfig) *Router {
	l.t.Helper()
	return l.addRouter(cfg, nil, true)
}

// AddDoubleNAT adds a home router configured by home behind a new
// port-restricted (EIM + APDF, as RFC 6888 asks of CGNs) carrier-grade NAT,
// and returns the home router; its Upstream is the carrier NAT.
func (l *Lab) AddDoubleNAT(home RouterConfig) *Router {
	l.t.Helper()
	return l.AddCarrierNAT(RouterConfig{}).AddRouter(home)
}

// AddReflector adds a public host with two internet addresses and starts a
// Reflector on it (ports 3478 and 3479), closed when the test ends.
func (l *Lab) AddReflector(name string) *Reflector {
	l.t.Helper()
	h := l.AddPublicHost(name)
	alt := h.AddIP()
	r, err := NewReflector(ReflectorConfig{Net: h.Net(), Primary: h.IP(), Alternate: alt})
	l.must(err)
	l.must(r.Start())
	l.t.Cleanup(func() { _ = r.Close() })
	return r
}

// must fails the lab's test on a setup error.
func (l *Lab) must(err error) {
	l.t.Helper()
	if err != nil {
		l.t.Fatalf("%v", err)
	}
}

// claim reserves a lab-unique node name.
func (l *Lab) claim(name string) {
	l.t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		l.t.Fatalf("natlab: lab already torn down")
	}
	if l.names[name] {
		l.t.Fatalf("natlab: name %q used twice", name)
	}
	l.names[name] = true
}

// allocPublic hands out the next internet-segment address.
func (l *Lab) allocPublic() netip.Addr {
	l.t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.nextPublic > 254 {
		l.t.Fatalf("natlab: internet segment %s is full", internetPrefix)
	}
	a := internetPrefix.Addr().As4()
	a[3] = byte(l.nextPublic)
	l.nextPublic++
	return netip.AddrFrom4(a)
}

// addNamespace creates the namespace "<prefix>-<role>" and records it for
// teardown.
func (l *Lab) addNamespace(role string) string {
	l.t.Helper()
	ns := l.prefix + "-" + role
	l.must(l.run("", "", "ip", "netns", "add", ns))
	l.mu.Lock()
	l.namespaces = append(l.namespaces, ns)
	l.mu.Unlock()
	l.must(l.ip(ns, "link set lo up"))
	noDAD(l, ns)
	return ns
}

// connect creates a veth pair (vethPair) with peer attached to the bridge in
// peerNS.
func (l *Lab) connect(ns, ifName, peerNS, peer, bridge string) error {
	if err := l.vethPair(ns, ifName, peerNS, peer); err != nil {
		return err
	}
	return l.ip(peerNS, fmt.Sprintf("link set %s master %s", peer, bridge), fmt.Sprintf("link set %s up", peer))
}

// vethPair creates a veth pair straight inside two namespaces (it never
// exists in the root namespace): ifName in ns, peer in peerNS.
//
// Both ends send one packet per frame (gso_max_segs 1), as a real NIC puts
// them on the wire. A veth would otherwise pass a UDP segmentation offload
// batch (up to 64 datagrams, see internal/udpopt) as one frame through the
// routers, and their loss rules would drop whole batches: the same share
// of bytes as random loss, but in bursts.
func (l *Lab) vethPair(ns, ifName, peerNS, peer string) error {
	return l.ip("", fmt.Sprintf("link add %s gso_max_segs 1 netns %s type veth peer name %s gso_max_segs 1 netns %s", ifName, ns, peer, peerNS))
}

// ip runs iproute2 commands (one per line, without the leading "ip") in ns,
// or in the root namespace when ns is "" (used only for "link add ... netns").
func (l *Lab) ip(ns string, cmds ...string) error {
	return l.run(ns, strings.Join(cmds, "\n")+"\n", "ip", "-batch", "-")
}

// nft loads an nft script inside ns.
func (l *Lab) nft(ns, script string) error {
	return l.run(ns, script, "nft", "-f", "-")
}

// run runs a setup command with stdin inside ns ("" means the root
// namespace) and returns its output in the error. The command is forked from
// a thread that has joined ns, so it starts inside it: much faster than
// "ip -n" or "ip netns exec", which also build a mount namespace each time
// (about 50 ms and 250 ms here), and the lab's own commands need no /sys.
func (l *Lab) run(ns, stdin, name string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	var out []byte
	runCmd := func() error {
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Stdin = strings.NewReader(stdin)
		var err error
		out, err = cmd.CombinedOutput()
		return err
	}
	var err error
	if ns == "" {
		err = runCmd()
	} else {
		err = inNetns(nsPath(ns), runCmd)
	}
	if err != nil {
		return fmt.Errorf("natlab: %s %s in %q: %w: %s\n%s", name, strings.Join(args, " "), ns, err, strings.TrimSpace(string(out)), stdin)
	}
	return nil
}

// sysctl writes a network sysctl inside ns from this process: /proc/sys/net
// resolves to the namespace of the thread that opens it.
func (l *Lab) sysctl(ns, key, value string) error {
	path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	err := inNetns(nsPath(ns), func() error { return os.WriteFile(path, []byte(value), 0o644) })
	if err != nil {
		return fmt.Errorf("natlab: sysctl %s=%s in %s: %w", key, value, ns, err)
	}
	return nil
}

// track records a started process so teardown stops it.
func (l *Lab) track(p *Process) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	l.procs = append(l.procs, p)
	return nil
}

// teardown stops every process the lab started (by PID), kills anything
// still running inside the lab's namespaces (only our own namespaces, so only
// descendants of processes we started), and deletes the namespaces, which
// also deletes their veths, bridges and rules.
func (l *Lab) teardown() {
	l.mu.Lock()
	l.closed = true
	procs, namespaces := l.procs, l.namespaces
	l.procs, l.namespaces = nil, nil
	l.mu.Unlock()

	for _, p := range procs {
		if err := p.Stop(); err != nil {
			l.t.Logf("natlab: stopping pid %d: %v", p.PID(), err)
		}
	}
	for _, ns := range slices.Backward(namespaces) {
		for _, pid := range nsPIDs(ns) {
			l.t.Logf("natlab: killing leftover pid %d in %s", pid, ns)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	// Deleting a namespace takes tens of milliseconds of kernel time
	// (unmounting its bind mount), so delete them all at once.
	errs := make([]error, len(namespaces))
	var wg sync.WaitGroup
	for i, ns := range namespaces {
		wg.Go(func() { errs[i] = l.run("", "", "ip", "netns", "del", ns) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		l.t.Errorf("natlab: teardown: %v", err)
	}
}

// nsPIDs lists the processes inside namespace ns, never our own.
func nsPIDs(ns string) []int {
	out, err := exec.Command("ip", "netns", "pids", ns).Output()
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
			pids = append(pids, pid)
		}
	}
	return pids
}

// RemoveStale deletes namespaces of this package's naming family
// ("sdb<pid>-<hex>-...") whose creating process is gone and that have no
// process inside. It touches nothing else: a namespace whose owner pid is
// alive (or reused), or that still has processes, is left alone. New calls
// it; logf may be nil.
func RemoveStale(logf func(format string, args ...any)) ([]string, error) {
	entries, err := os.ReadDir("/run/netns")
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, e := range entries {
		m := staleName.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		pid, err := strconv.Atoi(m[1])
		if err != nil || pid == os.Getpid() || processAlive(pid) || len(nsPIDs(e.Name())) > 0 {
			continue
		}
		if out, err := exec.Command("ip", "netns", "del", e.Name()).CombinedOutput(); err != nil {
			if logf != nil {
				logf("natlab: delete stale %s: %v: %s", e.Name(), err, out)
			}
			continue
		}
		removed = append(removed, e.Name())
	}
	return removed, nil
}

// processAlive reports whether pid exists (EPERM means it does).
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
