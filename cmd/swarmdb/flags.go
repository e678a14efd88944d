package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
)

// parseAddrList parses "host:port,host:port", resolving host names.
func parseAddrList(s string) ([]netip.AddrPort, error) {
	var out []netip.AddrPort
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if ap, err := netip.ParseAddrPort(part); err == nil {
			out = append(out, ap)
			continue
		}
		ua, err := net.ResolveUDPAddr("udp4", part)
		if err != nil {
			return nil, fmt.Errorf("bootstrap address %q: %w", part, err)
		}
		out = append(out, ua.AddrPort())
	}
	return out, nil
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

// newLogger logs to stderr: text for people, JSON with --json.
func newLogger(asJSON bool, level slog.Level) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if asJSON {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}
