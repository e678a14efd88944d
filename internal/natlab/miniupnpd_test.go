package natlab_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/internal/natlab"
)

// TestMiniUPnPd is the port-mapping router's self-test, with raw NAT-PMP
// (RFC 6886) so that it depends on no client of ours: a LAN host behind a
// symmetric NAT asks miniupnpd for a UDP mapping, gets the router's public
// address, the router has the DNAT rule, a public host's unsolicited
// datagram reaches the LAN host through it, and the daemon, restarted,
// has forgotten it. The NAT table reload of SetHairpin keeps the mapping.
func TestMiniUPnPd(t *testing.T) {
	natlab.RequireMiniUPnPd(t)
	lab := natlab.New(t)
	r := lab.AddRouter(natlab.RouterConfig{Type: natlab.Symmetric})
	h := r.AddHost("h")
	peer := lab.AddPublicHost("peer")
	d := r.StartMiniUPnPd(natlab.MiniUPnPdConfig{})
	if h.Gateway() != netip.MustParseAddr("10.1.0.1") || peer.Gateway().IsValid() {
		t.Fatalf("gateways: LAN host %v, public host %v", h.Gateway(), peer.Gateway())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	ask := func(req []byte, size int) []byte {
		t.Helper()
		c, err := h.Net().DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(h.Gateway(), 5351)))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		buf := make([]byte, 64)
		for range 5 {
			if _, err := c.Write(req); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			n, err := c.Read(buf)
			if err == nil && n == size {
				return buf[:n]
			}
		}
		t.Fatalf("no NAT-PMP answer to %x\n%s", req, d.Output())
		return nil
	}
	ext := ask([]byte{0, 0}, 12)
	if code := binary.BigEndian.Uint16(ext[2:4]); code != 0 || !bytes.Equal(ext[8:12], r.PublicIP().AsSlice()) {
		t.Fatalf("external address answer %x: want result 0 and %s", ext, r.PublicIP())
	}
	// Map UDP 4000 for 60 s (opcode 1).
	resp := ask([]byte{0, 1, 0, 0, 0x0f, 0xa0, 0x0f, 0xa0, 0, 0, 0, 60}, 16)
	if code, port := binary.BigEndian.Uint16(resp[2:4]), binary.BigEndian.Uint16(resp[10:12]); code != 0 || port != 4000 {
		t.Fatalf("mapping answer %x: want result 0, external port 4000", resp)
	}
	want := "udp 4000 -> " + h.IP().String() + ":4000"
	if rs, err := d.Redirects(ctx); err != nil || !slices.Contains(rs, want) {
		t.Fatalf("redirects %v (%v), want %q", rs, err, want)
	}
	if err := r.SetHairpin(true); err != nil { // reloads the NAT table
		t.Fatal(err)
	}
	if rs, _ := d.Redirects(ctx); !slices.Contains(rs, want) {
		t.Fatalf("a NAT table reload dropped the mapping: %v", rs)
	}

	in, err := h.Net().ListenPacket("udp4", netip.AddrPortFrom(h.IP(), 4000).String())
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := peer.Net().ListenPacket("udp4", netip.AddrPortFrom(peer.IP(), 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	got := make(chan netip.AddrPort, 1)
	go func() {
		buf := make([]byte, 64)
		_ = in.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, from, err := in.ReadFrom(buf)
		if err == nil && string(buf[:n]) == "unsolicited" {
			got <- from.(*net.UDPAddr).AddrPort()
		}
		close(got)
	}()
	for range 10 {
		_, _ = out.WriteTo([]byte("unsolicited"), net.UDPAddrFromAddrPort(netip.AddrPortFrom(r.PublicIP(), 4000)))
		time.Sleep(50 * time.Millisecond)
	}
	from, ok := <-got
	if !ok || from.Addr().Unmap() != peer.IP() {
		t.Fatalf("the public host's datagram did not reach the LAN host through the mapping (got %v)", from)
	}

	if err := d.Restart(); err != nil {
		t.Fatal(err)
	}
	if rs, _ := d.Redirects(ctx); len(rs) != 0 {
		t.Fatalf("redirects after a restart: %v, want none", rs)
	}
	ext = ask([]byte{0, 0}, 12)
	if epoch := binary.BigEndian.Uint32(ext[4:8]); epoch > 5 {
		t.Fatalf("epoch after a restart %d s, want a fresh one", epoch)
	}
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
}
