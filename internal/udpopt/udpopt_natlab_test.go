package udpopt_test

// An external test package: natlab's blaster uses udpopt, so a test of
// package udpopt itself cannot import natlab.

import (
	"errors"
	"net/netip"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/internal/natlab"
	"github.com/swarmdb/swarmdb/internal/udpopt"
)

// Two hosts on the lab's internet segment (Ethernet MTU 1500): a 2000-byte datagram is
// fragmented and delivered without the option, refused with EMSGSIZE with it, and one
// that fits still goes through.
func TestSetDontFragmentNATLab(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("Don't Fragment is set on Linux only")
	}
	lab := natlab.New(t)
	a, b := lab.AddPublicHost("a"), lab.AddPublicHost("b")
	rc, err := b.Net().ListenPacket("udp4", netip.AddrPortFrom(b.IP(), 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	sc, err := a.Net().ListenPacket("udp4", netip.AddrPortFrom(a.IP(), 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	to := rc.LocalAddr()
	arrives := func(n int) bool {
		t.Helper()
		buf := make([]byte, 4096)
		_ = rc.SetReadDeadline(time.Now().Add(2 * time.Second))
		got, _, err := rc.ReadFrom(buf)
		if err != nil {
			t.Fatalf("%d-byte datagram: %v", n, err)
		}
		return got == n
	}
	if _, err := sc.WriteTo(make([]byte, 2000), to); err != nil {
		t.Fatalf("without the option: %v", err)
	}
	if !arrives(2000) {
		t.Fatal("the fragmented datagram arrived with the wrong size")
	}
	if !udpopt.SetDontFragment(sc) {
		t.Fatal("SetDontFragment reported false on a kernel socket")
	}
	if _, err := sc.WriteTo(make([]byte, 2000), to); !errors.Is(err, syscall.EMSGSIZE) {
		t.Fatalf("2000 bytes with the option: %v, want EMSGSIZE", err)
	}
	if _, err := sc.WriteTo(make([]byte, 1472), to); err != nil {
		t.Fatalf("1472 bytes (a full Ethernet frame) with the option: %v", err)
	}
	if !arrives(1472) {
		t.Fatal("the full-size datagram arrived with the wrong size")
	}
}
