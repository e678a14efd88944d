package natlab

import "testing"

// TestIsNeighbourDiscovery: ARP and IPv6 neighbour discovery cross the delay line at once;
// everything else, ICMPv6 echo included, is delayed.
func TestIsNeighbourDiscovery(t *testing.T) {
	eth := func(etherType uint16, payload ...byte) []byte {
		f := make([]byte, 12, 14+len(payload))
		f = append(f, byte(etherType>>8), byte(etherType))
		return append(f, payload...)
	}
	ipv6 := func(next, icmpType byte) []byte {
		h := make([]byte, 41)
		h[0], h[6], h[40] = 0x60, next, icmpType
		return eth(0x86dd, h...)
	}
	for _, c := range []struct {
		name  string
		frame []byte
		want  bool
	}{
		{"arp", eth(0x0806, make([]byte, 28)...), true},
		{"ipv4-udp", eth(0x0800, make([]byte, 28)...), false},
		{"neighbour-solicitation", ipv6(58, 135), true},
		{"neighbour-advert", ipv6(58, 136), true},
		{"router-solicitation", ipv6(58, 133), true},
		{"echo-request", ipv6(58, 128), false},
		{"ipv6-udp", ipv6(17, 135), false},
		{"short", []byte{1, 2, 3}, false},
		{"ipv6-truncated", eth(0x86dd, 0x60), false},
	} {
		if got := isNeighbourDiscovery(c.frame); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
