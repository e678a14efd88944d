package natlab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/pion/transport/v2"
)

// node is what hosts and routers share: a name and a namespace to run
// things in.
type node struct {
	lab  *Lab
	name string // lab-unique
	ns   string // namespace name; "" for an Open router
}

// Name returns the node's lab-unique name (a LAN host's is "<router>-<name>").
func (n *node) Name() string { return n.name }

// Namespace returns the node's network namespace name, for "ip netns exec".
func (n *node) Namespace() string { return n.ns }

// Run runs a command inside the node's namespace (via "ip netns exec") and
// returns its combined stdout and stderr. A failure's error includes the
// output.
func (n *node) Run(ctx context.Context, name string, args ...string) (string, error) {
	if n.ns == "" {
		return "", fmt.Errorf("natlab: %s has no namespace", n.name)
	}
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.ns, name}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("natlab: %s: %s %s: %w: %s", n.name, name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// LossCounts are the packets that met a loss rule (SetLoss) and the ones it
// dropped. Dropped/Seen is the loss actually injected; packets lost
// elsewhere, say to a full socket buffer, are in neither.
type LossCounts struct {
	Seen, Dropped uint64
}

// lossCounts reads the loss table's counters in the node's namespace; with
// no loss set both are zero.
func (n *node) lossCounts(ctx context.Context) (LossCounts, error) {
	out, err := n.Run(ctx, "nft", "-j", "list", "counters")
	if err != nil {
		return LossCounts{}, err
	}
	var list struct {
		Nftables []struct {
			Counter *struct {
				Table, Name string
				Packets     uint64
			}
		}
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return LossCounts{}, fmt.Errorf("natlab: %s: nft counters: %w", n.name, err)
	}
	var c LossCounts
	for _, e := range list.Nftables {
		switch {
		case e.Counter == nil || e.Counter.Table != lossTable:
		case e.Counter.Name == lossSeen:
			c.Seen = e.Counter.Packets
		case e.Counter.Name == lossDropped:
			c.Dropped = e.Counter.Packets
		}
	}
	return c, nil
}

// Start starts a long-running command inside the node's namespace. The lab
// stops it (by its PID) when the test ends, if the caller has not. When ctx
// is done the process gets SIGTERM, then SIGKILL after two seconds.
func (n *node) Start(ctx context.Context, name string, args ...string) (*Process, error) {
	return n.start(ctx, nil, name, args...)
}

func (n *node) start(ctx context.Context, env []string, name string, args ...string) (*Process, error) {
	if n.ns == "" {
		return nil, fmt.Errorf("natlab: %s has no namespace", n.name)
	}
	ctx, cancel := context.WithCancel(ctx)
	// "ip netns exec" execs the command itself, so the PID we get is the
	// command's own PID, not a wrapper's.
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.ns, name}, args...)...)
	p := &Process{cmd: cmd, cancel: cancel, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = &p.out, &p.out
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = stopGrace
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, fmt.Errorf("natlab: %s: start %s: %w", n.name, name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := n.lab.track(p); err != nil {
		_ = p.Stop()
		return nil, err
	}
	return p, nil
}

// ChildEnv is set (to the host's name) in the environment of a test binary
// started by RunTest or StartTest, so the child test knows it is the child.
const ChildEnv = "NATLAB_CHILD"

// testArgs returns the argv that re-runs the current test binary with only
// the named test (subtests separated by "/").
func testArgs(test string) (string, []string, error) {
	exe, err := os.Executable() // the real path; "/proc/self/exe" would name "ip" after exec
	if err != nil {
		return "", nil, fmt.Errorf("natlab: find test binary: %w", err)
	}
	parts := strings.Split(test, "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	return exe, []string{"-test.run=" + strings.Join(parts, "/"), "-test.v", "-test.count=1"}, nil
}

// RunTest runs the named test of the current test binary inside the host's
// namespace with ChildEnv set (plus env, "KEY=value" entries), and returns
// its output (-test.v). The test should skip unless ChildEnv is set.
func (h *Host) RunTest(ctx context.Context, test string, env ...string) (string, error) {
	p, err := h.StartTest(ctx, test, env...)
	if err != nil {
		return "", err
	}
	err = p.Wait()
	if err != nil {
		err = fmt.Errorf("natlab: %s: test %s: %w", h.name, test, err)
	}
	return p.Output(), err
}

// StartTest is RunTest without waiting: it returns the running process.
func (h *Host) StartTest(ctx context.Context, test string, env ...string) (*Process, error) {
	exe, args, err := testArgs(test)
	if err != nil {
		return nil, err
	}
	return h.start(ctx, append([]string{ChildEnv + "=" + h.name}, env...), exe, args...)
}

// Process is a command started inside a lab namespace.
type Process struct {
	// Immutable after start.
	cmd    *exec.Cmd
	cancel context.CancelFunc
	done   chan struct{} // closed when the process has been waited for

	out     syncBuffer
	err     error // the Wait result; written before done is closed
	stopped sync.Once
	stopErr error
}

// PID returns the process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Wait waits for the process to exit and returns its exit error.
func (p *Process) Wait() error {
	<-p.done
	return p.err
}

// Output returns everything the process wrote to stdout and stderr so far.
func (p *Process) Output() string { return p.out.String() }

// Stop ends the process by its PID: SIGTERM, then SIGKILL after two
// seconds, and waits for it. Exiting because of that signal is not an
// error; an earlier failure is. Stop is idempotent.
func (p *Process) Stop() error {
	p.stopped.Do(func() {
		select {
		case <-p.done: // already exited: report how
			p.stopErr = p.err
			p.cancel()
			return
		default:
		}
		p.cancel()
		<-p.done
		var exitErr *exec.ExitError
		switch {
		case p.err == nil, errors.Is(p.err, context.Canceled):
		case errors.As(p.err, &exitErr) && !exitErr.Exited(): // killed by our signal
		default:
			p.stopErr = p.err
		}
	})
	return p.stopErr
}

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a
// process's stdout and stderr copiers and readers calling String.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Host is a machine in the lab: a namespace with one interface "eth0",
// either on the internet segment (public) or on a router's LAN.
type Host struct {
	node

	// Immutable after creation.
	router *Router    // nil for a public host
	ip     netip.Addr // primary address: the IPv4 one, or the IPv6 one of an IPv6-only host
	bits   int        // prefix length of the host's subnet
	ip6    netip.Addr // IPv6 address; zero without one (ipv6.go)

	// Guarded by mu.
	mu    sync.Mutex
	extra []netip.Addr
}

// IP returns the host's primary address.
func (h *Host) IP() netip.Addr { return h.ip }

// IPs returns all the host's addresses, primary first.
func (h *Host) IPs() []netip.Addr {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]netip.Addr{h.ip}, h.extra...)
}

// Router returns the router the host sits behind, or nil for a public host
// (including hosts of an Open router).
func (h *Host) Router() *Router { return h.router }

// Gateway returns the host's default gateway (its router's LAN address),
// or the zero Addr for a public host.
func (h *Host) Gateway() netip.Addr {
	if h.router == nil {
		return netip.Addr{}
	}
	return h.router.gateway()
}

// Net returns a transport.Net whose sockets are opened inside the host's
// namespace and whose Interfaces are the host's. Host names are refused
// (ErrNotLiteral): the lab has no DNS.
func (h *Host) Net() transport.Net { return &nsNet{path: nsPath(h.ns)} }

// AddIP adds another address to a public host (from the internet segment)
// and returns it. Only for public hosts; call it from the test goroutine.
func (h *Host) AddIP() netip.Addr {
	h.lab.t.Helper()
	if h.router != nil {
		h.lab.t.Fatalf("natlab: AddIP on LAN host %s: only public hosts get extra addresses", h.name)
	}
	a := h.lab.allocPublic()
	h.lab.must(h.lab.ip(h.ns, fmt.Sprintf("addr add %s/%d dev %s", a, h.bits, hostIf)))
	h.mu.Lock()
	h.extra = append(h.extra, a)
	h.mu.Unlock()
	return a
}

// SetLoss drops each packet the host sends or receives on eth0 with
// probability rate (0 to 1), independently in each direction. Zero removes
// the rule.
func (h *Host) SetLoss(rate float64) error {
	if rate < 0 || rate > 1 {
		return fmt.Errorf("%w: loss rate %v", ErrBadConfig, rate)
	}
	return h.lab.nft(h.ns, lossRuleset(false, rate))
}

// LossCounts reports what the host's loss rule has seen and dropped since
// SetLoss last set a rate.
func (h *Host) LossCounts(ctx context.Context) (LossCounts, error) { return h.lossCounts(ctx) }

// addHost builds a host namespace on the internet (r nil or Open) or on r's
// LAN, with IPv6 too where the lab or router has it.
func (l *Lab) addHost(name string, r *Router) *Host {
	l.t.Helper()
	return l.addHostOf(name, r, true)
}

// addHostOf is addHost; without v4 the host gets no IPv4 address (its slot
// on the subnet is still taken, so addresses stay in step).
func (l *Lab) addHostOf(name string, r *Router, v4 bool) *Host {
	l.t.Helper()
	short := name
	if i := strings.LastIndexByte(name, '-'); i >= 0 {
		short = name[i+1:]
	}
	if !validName.MatchString(short) {
		l.t.Fatalf("natlab: bad host name %q (want lowercase letters and digits, up to 12)", short)
	}
	l.claim(name)
	l.mu.Lock()
	seq := l.nextHost
	l.nextHost++
	l.mu.Unlock()

	h := &Host{node: node{lab: l, name: name}}
	h.ns = l.addNamespace(name)
	var route string
	if r == nil || r.typ == Open {
		h.ip, h.bits = l.allocPublic(), internetPrefix.Bits()
		l.must(l.connect(h.ns, hostIf, l.inet, l.inetPort(), inetIf))
	} else {
		h.router = r
		h.ip, h.bits = r.allocLAN(), r.lan.Bits()
		l.must(l.connect(h.ns, hostIf, r.ns, r.lanPort(), lanIf))
		route = "route add default via " + r.gateway().String()
	}
	cmds := []string{fmt.Sprintf("addr add %s/%d dev %s", h.ip, h.bits, hostIf), "link set " + hostIf + " up"}
	if route != "" {
		cmds = append(cmds, route)
	}
	if !v4 {
		cmds = []string{"link set " + hostIf + " up"}
	}
	l.must(l.ip(h.ns, cmds...))
	l.setupHostIPv6(h, r, h.ip.As4()[3])
	if !v4 {
		h.ip, h.bits = h.ip6, 64
	}
	lo := portRangeBase + (seq%portRangeSlots)*portRangeSize
	l.must(l.sysctl(h.ns, "net.ipv4.ip_local_port_range", strconv.Itoa(lo)+" "+strconv.Itoa(lo+portRangeSize-1)))
	if r != nil {
		r.mu.Lock()
		r.hosts = append(r.hosts, h)
		r.mu.Unlock()
	}
	return h
}
