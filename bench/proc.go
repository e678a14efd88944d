package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Event is one JSON line a child process printed: {"event":"ready",...}.
type Event map[string]any

// Name returns the event's "event" field.
func (e Event) Name() string { s, _ := e["event"].(string); return s }

// Str returns a string field.
func (e Event) Str(k string) string { s, _ := e[k].(string); return s }

// Num returns a number field (NaN-free: 0 when absent).
func (e Event) Num(k string) float64 { f, _ := e[k].(float64); return f }

// Proc is a child process whose JSON events (one per line, on stdout or
// stderr) arrive on Events. With countStdout its stdout is counted, not
// parsed: pipe processes carry data there.
type Proc struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	Events  chan Event
	Started time.Time

	mu    sync.Mutex
	bytes int64
	want  int64
	full  chan struct{} // closed when bytes reaches want
	tail  bytes.Buffer  // last lines of non-JSON output, for error messages
	done  chan struct{}
	err   error
}

// procOpts says how to wire a child.
type procOpts struct {
	eventsOnStderr bool // pipe: events on stderr, data on stdout
	// lines: every stdout line arrives on Events as {"event":"line",
	// "text":LINE, "at":time.Time of arrival} (for commands that print
	// plain records).
	lines bool
	dir   string
}

// startProc starts name with args. The caller must Stop it.
func startProc(ctx context.Context, o procOpts, name string, args ...string) (*Proc, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = o.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	p := &Proc{cmd: cmd, stdin: stdin, Events: make(chan Event, 1024), done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p.Started = time.Now()
	var wg sync.WaitGroup
	wg.Add(2)
	evr, other := io.Reader(stdout), io.Reader(stderr)
	if o.eventsOnStderr {
		evr, other = stderr, stdout
	}
	go func() {
		defer wg.Done()
		if o.lines {
			p.readLines(evr)
		} else {
			p.readEvents(evr)
		}
	}()
	go func() {
		defer wg.Done()
		if o.eventsOnStderr {
			p.count(other)
		} else {
			p.readEvents(other) // stderr of an event-on-stdout child: logs
		}
	}()
	go func() {
		wg.Wait()
		p.err = cmd.Wait()
		close(p.Events)
		close(p.done)
	}()
	return p, nil
}

func (p *Proc) readEvents(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var ev Event
		if json.Unmarshal(line, &ev) == nil && ev.Name() != "" {
			select {
			case p.Events <- ev:
			default: // nobody listens for this many; drop
			}
			continue
		}
		p.mu.Lock()
		p.tail.Write(line)
		p.tail.WriteByte('\n')
		if p.tail.Len() > 8<<10 {
			b := p.tail.Bytes()[p.tail.Len()-4<<10:]
			p.tail.Reset()
			p.tail.Write(b)
		}
		p.mu.Unlock()
	}
}

func (p *Proc) readLines(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		select {
		case p.Events <- Event{"event": "line", "text": sc.Text(), "at": time.Now()}:
		default:
		}
	}
}

func (p *Proc) count(r io.Reader) {
	buf := make([]byte, 256<<10)
	for {
		n, err := r.Read(buf)
		p.mu.Lock()
		p.bytes += int64(n)
		if p.full != nil && p.bytes >= p.want {
			close(p.full)
			p.full = nil
		}
		p.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// WhenBytes returns a channel closed once stdout has carried n bytes.
func (p *Proc) WhenBytes(n int64) <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := make(chan struct{})
	if p.bytes >= n {
		close(c)
		return c
	}
	p.want, p.full = n, c
	return c
}

// Stdin is the child's standard input.
func (p *Proc) Stdin() io.Writer { return p.stdin }

// PID returns the child's process id.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Tail returns the child's last non-event output lines.
func (p *Proc) Tail() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.TrimSpace(p.tail.String())
}

// Wait waits for an event named name, skipping others, until timeout.
func (p *Proc) Wait(name string, timeout time.Duration) (Event, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case ev, ok := <-p.Events:
			if !ok {
				return nil, fmt.Errorf("%s exited before %q: %v\n%s", p.cmd.Path, name, p.err, p.Tail())
			}
			if ev.Name() == name {
				return ev, nil
			}
		case <-t.C:
			return nil, fmt.Errorf("%s: no %q event within %v\n%s", p.cmd.Path, name, timeout, p.Tail())
		}
	}
}

// Stop ends the child (and its process group) by its id: SIGTERM, then
// SIGKILL after 3 s. It is safe to call more than once.
func (p *Proc) Stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.stdin.Close()
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(3 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// Usage is a process's resident memory and the CPU time it used so far.
type Usage struct {
	RSS int64         // bytes
	CPU time.Duration // user + system
}

// usageOf reads /proc/PID (threads, such as node's workers, are counted
// with their process).
func usageOf(pid int) (Usage, error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Usage{}, err
	}
	var u Usage
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				u.RSS = kb << 10
			}
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return Usage{}, err
	}
	// Fields after the ")" that closes the command name; utime and stime
	// are fields 14 and 15 of the whole line.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return Usage{}, errors.New("bad /proc stat")
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return Usage{}, errors.New("short /proc stat")
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const ticks = 100 // USER_HZ on Linux
	u.CPU = time.Duration(ut+st) * time.Second / ticks
	return u, nil
}
