package dnsdisc

import (
	"context"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/internal/natlab"
	"github.com/swarmdb/swarmdb/internal/testutil"
)

func TestMain(m *testing.M) { testutil.VerifyNoLeaks(m) }

// TestFindOnLAN: a node that serves and a node that only asks find each
// other, inside a namespace the test makes (multicast never leaves it);
// the serving node never reports its own answers.
func TestFindOnLAN(t *testing.T) {
	lab := natlab.New(t)
	h := lab.AddPublicHost("mdns")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := h.EnableLoopbackMulticast(ctx); err != nil {
		t.Fatal(err)
	}
	out, err := h.RunTest(ctx, "TestFindOnLANChild")
	if err != nil || !strings.Contains(out, "--- PASS: TestFindOnLANChild") {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

// TestFindOnLANChild is TestFindOnLAN's body, run inside the namespace.
func TestFindOnLANChild(t *testing.T) {
	if os.Getenv(natlab.ChildEnv) == "" {
		t.Skip("helper for TestFindOnLAN; runs only inside a lab namespace")
	}
	var mu sync.Mutex
	found := map[string][]netip.AddrPort{}
	report := func(who string) func(netip.AddrPort) {
		return func(p netip.AddrPort) {
			mu.Lock()
			found[who] = append(found[who], p)
			mu.Unlock()
		}
	}
	fast := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond}
	server, err := New(Config{Topic: "lan-topic", Serve: netip.MustParseAddrPort("0.0.0.0:7000"), OnPeer: report("server"), QueryDelays: fast})
	if err != nil {
		t.Fatal(err)
	}
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	client, err := New(Config{Topic: "lan-topic", OnPeer: report("client"), QueryDelays: fast})
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Start(); err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	var got []netip.AddrPort
	ok := testutil.Poll(10*time.Second, 0, func() bool {
		mu.Lock()
		got = append([]netip.AddrPort(nil), found["client"]...)
		self := len(found["server"])
		mu.Unlock()
		if self != 0 {
			t.Fatalf("the server reported its own answer: %v", found["server"])
		}
		return len(got) > 0
	})
	if !ok {
		t.Fatalf("client found nothing in 10 s; stats server %+v client %+v", server.Stats(), client.Stats())
	}
	// 0.0.0.0 in the answer is the sender: an address of this
	// namespace, whichever the kernel picked as the source.
	if got[0].Port() != 7000 || !isLocal(t, got[0].Addr()) {
		t.Fatalf("client found %v, want port 7000 at an address of this host", got)
	}
	if s := server.Stats(); s.Answers == 0 {
		t.Fatalf("server stats %+v: no answer sent", s)
	}
}

func isLocal(t *testing.T, ip netip.Addr) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr() == ip {
			return true
		}
	}
	return false
}
