package dht_test

import (
	"net"
	"net/netip"
	"testing"
)

// BenchmarkSocketFamily measures what one dual-stack socket would cost the
// IPv4 traffic that every node carries today, against the socket per
// family the node uses: a 100-byte datagram echoed over loopback, each way
// through ReadFrom and WriteTo as the node's read loop does.
//
//	udp4:          two "udp4" sockets on 127.0.0.1 (the node's IPv4 socket)
//	dual-mapped:   two dual-stack "udp" sockets on [::], talking over
//	               127.0.0.1, which the kernel hands up as ::ffff:127.0.0.1
//	udp6:          two "udp6" sockets on ::1 (the node's IPv6 socket)
//
// go test -run '^$' -bench SocketFamily -benchmem ./dht/
func BenchmarkSocketFamily(b *testing.B) {
	for _, c := range []struct {
		name, network, bind, to string
	}{
		{"udp4", "udp4", "127.0.0.1:0", "127.0.0.1"},
		{"dual-mapped", "udp", "[::]:0", "127.0.0.1"},
		{"udp6", "udp6", "[::1]:0", "::1"},
	} {
		b.Run(c.name, func(b *testing.B) {
			a, err := net.ListenPacket(c.network, c.bind)
			if err != nil {
				b.Skipf("%s: %v", c.name, err)
			}
			defer a.Close()
			e, err := net.ListenPacket(c.network, c.bind)
			if err != nil {
				b.Skip(err)
			}
			defer e.Close()
			ip := netip.MustParseAddr(c.to)
			aTo := net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, uint16(e.LocalAddr().(*net.UDPAddr).Port)))
			done := make(chan struct{})
			go func() {
				defer close(done)
				buf := make([]byte, 2048)
				for {
					n, from, err := e.ReadFrom(buf)
					if err != nil {
						return
					}
					if _, err := e.WriteTo(buf[:n], from); err != nil {
						return
					}
				}
			}()
			msg := make([]byte, 100)
			buf := make([]byte, 2048)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, err := a.WriteTo(msg, aTo); err != nil {
					b.Fatal(err)
				}
				if _, _, err := a.ReadFrom(buf); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			e.Close()
			<-done
		})
	}
}
