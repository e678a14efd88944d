package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Exit codes, the same for every command (each command's -h lists the ones
// it uses).
const (
	exitOK          = 0
	exitError       = 1   // could not do it: unreachable, refused, local I/O, a corrupt store
	exitUsage       = 2   // bad flags or arguments; nothing was started
	exitNotFound    = 3   // get: no record under the key; pipe: nobody serves the topic
	exitConnect     = 4   // pipe: the server was found but could not be reached
	exitLost        = 5   // pipe, watch: the connection ended before the work did
	exitInterrupted = 130 // SIGINT or SIGTERM stopped work that had not finished (128+SIGINT)
)

// stdio is a command's standard streams.
type stdio struct {
	in       io.Reader
	out, err io.Writer
}

// cliCommand is one subcommand: main parses args (flags anywhere, see
// parseFlags) and returns the exit code; ctx ends on SIGINT or SIGTERM.
type cliCommand struct {
	name, summary string
	main          func(ctx context.Context, args []string, std stdio) int
}

// flags is one command's flag set and what its usage says. Adding a flag is
// one line: fs.String(...), fs.Var(...) or, for host:port lists, hosts.list.
type flags struct {
	*flag.FlagSet
	name  string // the command
	args  string // the positional arguments, as usage shows them ("KEY JSON")
	about string // what the command does, its output and exit codes
	hosts addrFlags
}

func newFlags(name, args, about string) *flags {
	f := &flags{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError), name: name, args: args, about: about}
	f.Usage = func() {} // parse prints usage itself: on stdout for -h, a hint on stderr for errors
	return f
}

func (f *flags) printUsage(w io.Writer) {
	line := "usage: swarmdb " + f.name + " [flags]"
	if f.args != "" {
		line += " " + f.args
	}
	fmt.Fprintf(w, "%s\n\n%s\n\nflags:\n", line, f.about)
	f.SetOutput(w)
	f.PrintDefaults()
}

// parse parses args with flags allowed before, between and after the
// positional arguments ("--" ends the flags), and checks that there are
// want of those (-1: any number). It returns ok false with the exit code
// when the command must stop: 0 after -h (usage on stdout), 2 for a usage
// error (one line on stderr, and where to find the usage).
func (f *flags) parse(args []string, want int, std stdio) (pos []string, code int, ok bool) {
	f.SetOutput(io.Discard) // the error comes back from Parse; we print it once
	for {
		err := f.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			f.printUsage(std.out)
			return nil, exitOK, false
		}
		if err != nil {
			// The flag package names flags with one dash; our usage, with two.
			return nil, f.usageError(std, "%s", strings.Replace(err.Error(), "for flag -", "for --", 1)), false
		}
		rest := f.Args()
		if len(rest) == 0 {
			break
		}
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
	if want >= 0 && len(pos) != want {
		if want == 0 {
			return nil, f.usageError(std, "unexpected argument %q", pos[0]), false
		}
		return nil, f.usageError(std, "want %s, got %d argument(s)", f.args, len(pos)), false
	}
	return pos, exitOK, true
}

// usageError prints a usage error and returns exitUsage.
func (f *flags) usageError(std stdio, format string, a ...any) int {
	fmt.Fprintf(std.err, "swarmdb %s: %s\nrun 'swarmdb %s -h' for usage\n", f.name, fmt.Sprintf(format, a...), f.name)
	return exitUsage
}

// failed prints err for the command and returns exitError.
func failed(std stdio, name string, err error) int {
	fmt.Fprintf(std.err, "swarmdb %s: %v\n", name, err)
	return exitError
}

// dnsTimeout bounds resolving every host name in the address flags: a DNS
// server that does not answer would otherwise hold the command for the
// resolver's own 10 s.
const dnsTimeout = 3 * time.Second

// lookupHost resolves a host name to IPv4 addresses: the system resolver
// (tests replace it; they must send no packet off the host).
var lookupHost = func(ctx context.Context, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip4", host)
}

// addrFlags are a command's host:port list flags. Set checks the syntax
// (a usage error); resolve, after parsing, looks host names up (an error).
type addrFlags struct {
	lists []*addrList
}

// list registers a comma-separated host:port flag whose addresses resolve
// into dst.
func (f *flags) list(dst *[]netip.AddrPort, name, usage string) {
	l := &addrList{dst: dst}
	f.hosts.lists = append(f.hosts.lists, l)
	f.Var(l, name, usage)
}

type addrList struct {
	dst   *[]netip.AddrPort
	hosts []string // as given, validated
}

func (l *addrList) String() string {
	if l == nil {
		return ""
	}
	return strings.Join(l.hosts, ",")
}

func (l *addrList) Set(s string) error {
	l.hosts = l.hosts[:0]
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		host, port, err := net.SplitHostPort(part)
		if err == nil && host == "" {
			err = errors.New("missing host")
		}
		if err == nil {
			if p, perr := strconv.ParseUint(port, 10, 16); perr != nil || p == 0 {
				err = fmt.Errorf("bad port %q", port)
			}
		}
		if err != nil {
			return fmt.Errorf("%q: want host:port: %v", part, err)
		}
		l.hosts = append(l.hosts, part)
	}
	return nil
}

// resolve fills every list flag's destination, resolving host names (IPv4,
// as the node's socket is) within dnsTimeout.
func (a *addrFlags) resolve(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, dnsTimeout)
	defer cancel()
	for _, l := range a.lists {
		var out []netip.AddrPort
		for _, hp := range l.hosts {
			host, port, _ := net.SplitHostPort(hp)
			p, _ := strconv.ParseUint(port, 10, 16)
			if ip, err := netip.ParseAddr(host); err == nil {
				out = append(out, netip.AddrPortFrom(ip.Unmap(), uint16(p)))
				continue
			}
			ips, err := lookupHost(ctx, host)
			if err == nil && len(ips) == 0 {
				err = errors.New("no IPv4 address")
			}
			if err != nil {
				if ctx.Err() != nil {
					err = fmt.Errorf("no answer from DNS within %v", dnsTimeout)
				}
				return fmt.Errorf("cannot resolve %q: %w", host, err)
			}
			out = append(out, netip.AddrPortFrom(ips[0].Unmap(), uint16(p)))
		}
		*l.dst = out
	}
	return nil
}

// checkHostPort checks a listen address: host:port, host optional (every
// interface), port 0 allowed (any free port).
func checkHostPort(flagName, s string) error {
	_, port, err := net.SplitHostPort(s)
	if err == nil {
		_, err = strconv.ParseUint(port, 10, 16)
	}
	if err != nil {
		return fmt.Errorf("--%s %q: want host:port (e.g. 0.0.0.0:49737, :9000)", flagName, s)
	}
	return nil
}

// nodeWSListen turns node's --ws into a listen address: "host:port",
// ":port" or "ws://host:port"; "off" and "" mean none.
func nodeWSListen(s string) (string, error) {
	switch s {
	case "", "off":
		return "", nil
	}
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil || u.Scheme != "ws" || (u.Path != "" && u.Path != "/") || u.Host == "" {
			if err == nil && u.Scheme == "wss" {
				return "", fmt.Errorf("--ws %q: the node serves plain ws:// (put a TLS proxy in front for wss://)", s)
			}
			return "", fmt.Errorf("--ws %q: want host:port, :port, ws://host:port or off", s)
		}
		s = u.Host
	}
	return s, checkHostPort("ws", s)
}

// clientWSURL turns a client's --ws into a URL: "host:port" and ":port"
// (this host) mean ws://; "ws://…" and "wss://…" are taken as they are.
func clientWSURL(s string) (string, error) {
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
			return "", fmt.Errorf("--ws %q: want host:port, ws://host:port or wss://host[:port]", s)
		}
		return s, nil
	}
	host, port, err := net.SplitHostPort(s)
	if err == nil {
		_, err = strconv.ParseUint(port, 10, 16)
	}
	if err != nil {
		return "", fmt.Errorf("--ws %q: want host:port, ws://host:port or wss://host[:port]", s)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return "ws://" + net.JoinHostPort(host, port), nil
}

// eventWriter prints one JSON object per line (--json) or a human line.
type eventWriter struct {
	json bool
	w    io.Writer
}

func (e eventWriter) emit(event string, human string, fields map[string]any) {
	if !e.json {
		fmt.Fprintln(e.w, human)
		return
	}
	obj := map[string]any{"event": event}
	for k, v := range fields {
		obj[k] = v
	}
	b, _ := json.Marshal(obj)
	fmt.Fprintln(e.w, string(b))
}

// newLogger logs to w: text for people, JSON with --json.
func newLogger(w io.Writer, asJSON bool, level slog.Level) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if asJSON {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// logLevel is -v's level: debug, else def.
func logLevel(verbose bool, def slog.Level) slog.Level {
	if verbose {
		return slog.LevelDebug
	}
	return def
}

// splitList splits a comma-separated flag value, dropping empty entries.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
