package swarm

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/holepunch/dhtlink"
	"github.com/swarmdb/swarmdb/internal/natlab"
	"github.com/swarmdb/swarmdb/internal/testnet"
	"github.com/swarmdb/swarmdb/internal/testutil"
	"github.com/swarmdb/swarmdb/turnserver"
)

// labSwarm starts a swarm on a lab host, joined to the lab DHT.
func labSwarm(t *testing.T, h *natlab.Host, boot []netip.AddrPort) *testSwarm {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(nil)
	rec := newRecorder()
	s, err := New(Config{
		Key: key, Net: h.Net(), ListenAddr: h.IP().String() + ":0", Bootstrap: boot,
		DHT: dht.Config{Mode: dht.ModeEphemeral}, DisableLAN: true,
		OnConnection: rec.onConn, OnDisconnect: rec.onClose, Logger: testLogger(key.Public().(ed25519.PublicKey)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &testSwarm{Swarm: s, rec: rec, key: key}
}

// TestNATLabFourNATsOneTopic: four peers behind four different NATs (one
// symmetric) join one topic at once and all six pairs connect, each as one
// live session. Root only (natlab).
func TestNATLabFourNATsOneTopic(t *testing.T) {
	testutil.CheckLeaks(t)
	lab := natlab.New(t)
	boot := testnet.LabDHT(t, lab, 3, func(i int, h *natlab.Host, c *dht.Config) {
		if i != 0 {
			return
		}
		srv := turnserver.New(turnserver.Config{Net: h.Net(), ListenAddr: h.IP().String() + ":3478"})
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })
		c.OnTURN = dhtlink.TURNHandler(srv)
	})
	types := []natlab.NATType{natlab.FullCone, natlab.Restricted, natlab.PortRestricted, natlab.Symmetric}
	swarms := make([]*testSwarm, len(types))
	for i, typ := range types {
		swarms[i] = labSwarm(t, lab.AddRouter(natlab.RouterConfig{Type: typ}).AddHost("p"), boot)
	}
	var wg sync.WaitGroup
	start := time.Now()
	for _, s := range swarms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Join("natlab", JoinOptions{}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	for _, s := range swarms {
		var others []ed25519.PublicKey
		for _, o := range swarms {
			if o != s {
				others = append(others, o.PublicKey())
			}
		}
		waitConns(t, s, 90*time.Second, others...)
	}
	t.Logf("all six pairs connected %v after join", time.Since(start).Round(time.Millisecond))
	var grid strings.Builder
	for i, a := range swarms {
		for j := i + 1; j < len(swarms); j++ {
			b := swarms[j]
			pingPairEventually(t, a, b, 45*time.Second)
			c := a.Conn(b.PublicKey())
			fmt.Fprintf(&grid, "%-15s <-> %-15s %-7s %s\n", types[i], types[j], c.Path(), c.Info().Role)
		}
	}
	t.Log("\n" + grid.String())
}

// lanChildEnv names the environment of the LAN test's child processes.
const (
	lanEnvSeed = "SWARM_LAN_SEED" // hex seed of the child's key
	lanEnvPeer = "SWARM_LAN_PEER" // hex public key of the other child
)

// TestLANDiscoveryNoDHT: two hosts on one LAN, no DHT node anywhere, find
// each other by mDNS/DNS-SD and connect with the usual handshake. Each
// host runs TestLANChild in its own namespace (mDNS needs the host's real
// multicast sockets). Root only (natlab).
func TestLANDiscoveryNoDHT(t *testing.T) {
	if os.Getenv(natlab.ChildEnv) != "" {
		t.Skip("parent test")
	}
	lab := natlab.New(t)
	home := lab.AddRouter(natlab.RouterConfig{Type: natlab.PortRestricted})
	runLANPair(t, []*natlab.Host{home.AddHost("a"), home.AddHost("b")})
}

// TestLANDiscoveryIPv6Only is TestLANDiscoveryNoDHT on a LAN with IPv6
// alone: the hosts have no IPv4 address, so they publish and find each
// other's IPv6 addresses over IPv6 multicast DNS and connect over IPv6.
func TestLANDiscoveryIPv6Only(t *testing.T) {
	if os.Getenv(natlab.ChildEnv) != "" {
		t.Skip("parent test")
	}
	lab := natlab.New(t)
	lab.EnableIPv6()
	home := lab.AddRouter(natlab.RouterConfig{Type: natlab.PortRestricted, IPv6: true})
	runLANPair(t, []*natlab.Host{home.AddHostIPv6Only("a"), home.AddHostIPv6Only("b")})
}

// runLANPair runs TestLANChild on two hosts of one LAN, each looking for
// the other.
func runLANPair(t *testing.T, hosts []*natlab.Host) {
	t.Helper()
	seeds := make([][]byte, 2)
	pubs := make([]ed25519.PublicKey, 2)
	for i := range seeds {
		seeds[i] = make([]byte, ed25519.SeedSize)
		seeds[i][0] = byte(i + 1)
		pubs[i] = ed25519.NewKeyFromSeed(seeds[i]).Public().(ed25519.PublicKey)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	outs := make([]string, 2)
	errs := make([]error, 2)
	for i, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i], errs[i] = h.RunTest(ctx, "TestLANChild",
				lanEnvSeed+"="+hex.EncodeToString(seeds[i]), lanEnvPeer+"="+hex.EncodeToString(pubs[1-i]))
		}()
	}
	wg.Wait()
	for i := range hosts {
		if errs[i] != nil || !strings.Contains(outs[i], "LAN-CONNECTED path=lan") {
			t.Fatalf("host %d: %v\n%s", i, errs[i], outs[i])
		}
		t.Logf("host %d: %s", i, lastLine(outs[i], "LAN-CONNECTED"))
	}
}

func lastLine(out, prefix string) string {
	for _, l := range strings.Split(out, "\n") {
		if i := strings.Index(l, prefix); i >= 0 {
			return l[i:]
		}
	}
	return ""
}

// TestLANChild is one side of TestLANDiscoveryNoDHT; it runs only inside a
// lab host.
func TestLANChild(t *testing.T) {
	if os.Getenv(natlab.ChildEnv) == "" || os.Getenv(lanEnvSeed) == "" {
		t.Skip("run by TestLANDiscoveryNoDHT inside a lab host")
	}
	seed, err := hex.DecodeString(os.Getenv(lanEnvSeed))
	if err != nil {
		t.Fatal(err)
	}
	peer, err := hex.DecodeString(os.Getenv(lanEnvPeer))
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	if len(seed) != ed25519.SeedSize {
		t.Fatalf("%s: %d bytes, want %d", lanEnvSeed, len(seed), ed25519.SeedSize)
	}
	log := testLogger(ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey))
	if log == nil {
		// It failed once in a loaded CI run with nothing to show why.
		log = testutil.LogOnFailure(t, 300)
	}
	s, err := New(Config{
		Seed: seed, LANInterval: time.Second,
		OnConnection: rec.onConn, OnDisconnect: rec.onClose, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ts := &testSwarm{Swarm: s, rec: rec}
	start := time.Now()
	if _, err := s.Join("lan-only", JoinOptions{}); err != nil {
		t.Fatal(err)
	}
	waitConns(t, ts, 40*time.Second, ed25519.PublicKey(peer))
	c := s.Conn(peer)
	// Let the other side see the connection too before closing.
	msg := []byte("hello over the lan")
	if _, err := c.Stream0().Write(msg); err != nil {
		t.Fatal(err)
	}
	c.Stream0().SetReadDeadline(time.Now().Add(20 * time.Second))
	got, err := c.Stream0().ReadMessage(nil)
	if err != nil || string(got) != string(msg) {
		t.Fatalf("exchange: %q %v", got, err)
	}
	fmt.Printf("LAN-CONNECTED path=%s role=%s lanFound=%d after %v\n", c.Path(), c.Info().Role, s.Stats().LANFound, time.Since(start).Round(time.Millisecond))
}
