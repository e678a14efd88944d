package natlab_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/internal/natlab"
)

// udp6 is one UDP socket inside a lab host.
type udp6 struct {
	t    *testing.T
	conn net.PacketConn
}

func listen6(t *testing.T, h *natlab.Host, port uint16) *udp6 {
	t.Helper()
	c, err := h.Net().ListenPacket("udp6", netip.AddrPortFrom(h.IP6(), port).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &udp6{t, c}
}

func (u *udp6) addr() netip.AddrPort { return u.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

func (u *udp6) send(to netip.AddrPort, msg string) {
	u.t.Helper()
	if _, err := u.conn.WriteTo([]byte(msg), net.UDPAddrFromAddrPort(to)); err != nil {
		u.t.Fatal(err)
	}
}

// recv waits up to wait for a datagram; ok false when none came.
func (u *udp6) recv(wait time.Duration) (msg string, from netip.AddrPort, ok bool) {
	_ = u.conn.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 1500)
	n, a, err := u.conn.ReadFrom(buf)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "", netip.AddrPort{}, false
	}
	if err != nil {
		u.t.Fatal(err)
	}
	ap := a.(*net.UDPAddr).AddrPort()
	return string(buf[:n]), netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}

// TestIPv6Firewall checks the lab's IPv6: a host behind a router with IPv6
// reaches a public host with its own address (no translation), a reply
// comes back only from the exact address and port it sent to (the
// stateful firewall: address-and-port-dependent filtering, unsolicited
// packets dropped), two hosts behind two such routers punch by sending at
// once, and an IPv6-only host has no IPv4 address at all. The IPv4 side of
// the router still translates.
func TestIPv6Firewall(t *testing.T) {
	lab := natlab.New(t)
	lab.EnableIPv6()
	pub := lab.AddPublicHost("pub")
	r1 := lab.AddRouter(natlab.RouterConfig{Type: natlab.Symmetric, IPv6: true})
	r2 := lab.AddRouter(natlab.RouterConfig{Type: natlab.Symmetric, IPv6: true})
	h1, h2, only6 := r1.AddHost("a"), r2.AddHost("a"), r2.AddHostIPv6Only("b")
	for _, h := range []*natlab.Host{pub, h1, h2, only6} {
		if !h.IP6().IsValid() || !lab.Internet6Prefix().Contains(h.IP6()) && !strings.HasPrefix(h.IP6().String(), "2001:db8:") {
			t.Fatalf("%s: IPv6 %s", h.Name(), h.IP6())
		}
	}
	if only6.IP() != only6.IP6() || !r2.LAN6().Contains(only6.IP6()) {
		t.Fatalf("IPv6-only host: IP %s IP6 %s", only6.IP(), only6.IP6())
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if out, err := only6.Run(ctx, "ip", "-4", "addr", "show", "dev", "eth0"); err != nil || strings.Contains(out, "inet ") {
		t.Fatalf("IPv6-only host has IPv4: %q %v", out, err)
	}

	srv := listen6(t, pub, 7000)
	srvOther := listen6(t, pub, 7001)
	c := listen6(t, h1, 0)
	t.Run("no translation", func(t *testing.T) {
		c.send(srv.addr(), "hello")
		msg, from, ok := srv.recv(2 * time.Second)
		if !ok || msg != "hello" || from != c.addr() {
			t.Fatalf("got %q from %s (%v), want it from %s", msg, from, ok, c.addr())
		}
		srv.send(from, "reply")
		if msg, _, ok := c.recv(2 * time.Second); !ok || msg != "reply" {
			t.Fatalf("reply %q %v", msg, ok)
		}
	})
	t.Run("unsolicited dropped", func(t *testing.T) {
		srvOther.send(c.addr(), "stranger port") // same IP, other port
		if msg, _, ok := c.recv(500 * time.Millisecond); ok {
			t.Fatalf("unsolicited %q arrived", msg)
		}
		fresh := listen6(t, h1, 0)
		srv.send(fresh.addr(), "never sent to")
		if msg, _, ok := fresh.recv(500 * time.Millisecond); ok {
			t.Fatalf("unsolicited %q arrived", msg)
		}
	})
	t.Run("punch", func(t *testing.T) {
		a, b := listen6(t, h1, 0), listen6(t, only6, 0)
		// Each side's first packet opens its own firewall; the one that
		// arrives before the other side sent is dropped, the next gets in.
		got := make(chan bool, 2)
		for _, p := range []struct{ me, peer *udp6 }{{a, b}, {b, a}} {
			go func() {
				for range 10 {
					p.me.send(p.peer.addr(), "punch")
					if _, from, ok := p.me.recv(100 * time.Millisecond); ok && from == p.peer.addr() {
						p.me.send(p.peer.addr(), "punch")
						got <- true
						return
					}
				}
				got <- false
			}()
		}
		if !<-got || !<-got {
			t.Fatal("two hosts behind IPv6 firewalls did not punch")
		}
	})
	t.Run("ipv4 still translated", func(t *testing.T) {
		s4, err := pub.Net().ListenPacket("udp4", netip.AddrPortFrom(pub.IP(), 7100).String())
		if err != nil {
			t.Fatal(err)
		}
		defer s4.Close()
		c4, err := h1.Net().ListenPacket("udp4", netip.AddrPortFrom(h1.IP(), 0).String())
		if err != nil {
			t.Fatal(err)
		}
		defer c4.Close()
		if _, err := c4.WriteTo([]byte("v4"), s4.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		_ = s4.SetReadDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 100)
		_, from, err := s4.ReadFrom(buf)
		if err != nil || from.(*net.UDPAddr).AddrPort().Addr().Unmap() != r1.PublicIP() {
			t.Fatalf("IPv4 from %v (%v), want the router's %s", from, err, r1.PublicIP())
		}
	})
	if os.Getenv("NATLAB_DEBUG") != "" {
		out, _ := r1.Run(ctx, "nft", "list", "table", "ip6", "natlab6")
		t.Log(out)
	}
}
