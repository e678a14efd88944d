package node

import (
	"net"
	"testing"
)

func TestAdvertisedHostPort(t *testing.T) {
	lo := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9000}
	any := &net.TCPAddr{IP: net.IPv4zero, Port: 9000}
	for _, c := range []struct {
		public string
		listen net.Addr
		tls    bool
		host   string
		port   int
	}{
		{"wss://node.example", lo, false, "node.example", 443},
		{"wss://node.example:443/", lo, false, "node.example", 443},
		{"ws://203.0.113.5:9000", any, false, "203.0.113.5", 9000},
		{"wss://node.example:8443", lo, true, "", 0}, // ToolDb would dial ws://node.example:8443
		{"ws://node.example:443", lo, false, "", 0},  // ToolDb would dial wss://
		{"ws://node.example", lo, false, "", 0},      // no port: ToolDb needs one
		{"wss://node.example/tooldb", lo, false, "", 0},
		{"", lo, false, "127.0.0.1", 9000},
		{"", lo, true, "", 0},
		{"", any, false, "", 0},
		{"", nil, false, "", 0},
	} {
		h, p := advertisedHostPort(c.public, c.listen, c.tls)
		if h != c.host || p != c.port {
			t.Errorf("advertisedHostPort(%q, %v, tls %v) = %q %d, want %q %d", c.public, c.listen, c.tls, h, p, c.host, c.port)
		}
	}
}
