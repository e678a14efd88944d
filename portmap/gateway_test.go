package portmap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// hexWord renders an IPv4 address the way /proc/net/route does on this
// host.
func hexWord(a string) string {
	b := netip.MustParseAddr(a).As4()
	return fmt.Sprintf("%08X", binary.NativeEndian.Uint32(b[:]))
}

func TestParseRoutes(t *testing.T) {
	table := func(lines ...string) string {
		return "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n" + strings.Join(lines, "\n") + "\n"
	}
	route := func(iface, dst, gw, flags string, metric int, mask string) string {
		return fmt.Sprintf("%s\t%s\t%s\t%s\t0\t0\t%d\t%s\t0\t0\t0", iface, hexWord(dst), hexWord(gw), flags, metric, hexWord(mask))
	}
	got, err := parseRoutes(strings.NewReader(table(
		route("eth0", "10.1.0.0", "0.0.0.0", "0001", 0, "255.255.255.0"),
		route("wlan0", "0.0.0.0", "192.168.1.1", "0003", 600, "0.0.0.0"),
		route("eth0", "0.0.0.0", "10.1.0.1", "0003", 100, "0.0.0.0"),
		route("eth1", "0.0.0.0", "10.9.0.1", "0001", 0, "0.0.0.0"), // not a gateway route
	)))
	if err != nil || got != netip.MustParseAddr("10.1.0.1") {
		t.Fatalf("parseRoutes = %v, %v; want 10.1.0.1 (the lowest metric)", got, err)
	}
	// This machine's own table: a real listing parses (with or without a
	// default route).
	if _, err := DefaultGateway(); err != nil && !errors.Is(err, ErrNoGateway) {
		t.Fatalf("DefaultGateway: %v", err)
	}
	for name, in := range map[string]string{
		"empty":         "",
		"header only":   table(),
		"no default":    table(route("eth0", "10.1.0.0", "0.0.0.0", "0001", 0, "255.255.255.0")),
		"garbage":       table("eth0 zz yy 0003 0 0 0 00000000"),
		"short line":    table("eth0 00000000"),
		"down gateway":  table(route("eth0", "0.0.0.0", "10.1.0.1", "0002", 0, "0.0.0.0")),
		"zero next hop": table(route("eth0", "0.0.0.0", "0.0.0.0", "0003", 0, "0.0.0.0")),
	} {
		if _, err := parseRoutes(strings.NewReader(in)); !errors.Is(err, ErrNoGateway) {
			t.Errorf("%s: err %v, want ErrNoGateway", name, err)
		}
	}
}
