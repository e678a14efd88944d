package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pion/turn/v2"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/holepunch"
)

// turnTestTimeout bounds one DHT or TURN exchange on loopback.
const turnTestTimeout = 10 * time.Second

func TestTURNListenAddr(t *testing.T) {
	cases := []struct {
		spec, listen, want string
		bad                bool
	}{
		{"auto", "0.0.0.0:49737", "0.0.0.0:49738", false},
		{"auto", "203.0.113.5:49737", "203.0.113.5:49738", false},
		{"auto", "127.0.0.1:0", "127.0.0.1:0", false}, // random DHT port: random relay port
		{"auto", ":4000", "0.0.0.0:4001", false},
		{"auto", "0.0.0.0:65535", "", true},
		{"off", "0.0.0.0:49737", "", false},
		{":3479", "0.0.0.0:49737", "0.0.0.0:3479", false},
		{"198.51.100.2:3478", "0.0.0.0:49737", "198.51.100.2:3478", false},
		{"[2001:db8::1]:3478", "0.0.0.0:49737", "[2001:db8::1]:3478", false},
		{"relay.example:3478", "0.0.0.0:49737", "", true},
		{"3478", "0.0.0.0:49737", "", true},
		{":70000", "0.0.0.0:49737", "", true},
	}
	for _, tc := range cases {
		got, err := turnListenAddr(tc.spec, tc.listen)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("turnListenAddr(%q, %q) = %q, %v; want %q (error %v)", tc.spec, tc.listen, got, err, tc.want, tc.bad)
		}
	}
}

// TestBootstrapTURNOverDHT wires a node the way runBootstrap does and walks
// the whole relay path on loopback: two clients get credentials from the
// node over the DHT, allocate on its relay and exchange datagrams through
// it.
func TestBootstrapTURNOverDHT(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	var relay atomic.Pointer[holepunch.TURNServer]
	node := dht.New(dht.Config{ListenAddr: "127.0.0.1:0", Mode: dht.ModePersistent, OnTURN: turnOffers(&relay), Logger: log})
	if err := node.Start(); err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	ctx, cancel := context.WithTimeout(context.Background(), turnTestTimeout)
	defer cancel()

	clients := make([]*dht.Node, 2)
	for i, ip := range []string{"127.0.0.2", "127.0.0.3"} {
		clients[i] = dht.New(dht.Config{ListenAddr: ip + ":0", Mode: dht.ModeEphemeral, Logger: log})
		if err := clients[i].Start(); err != nil {
			t.Fatal(err)
		}
		defer clients[i].Close()
	}
	// Before the relay runs the node declines.
	if _, err := clients[0].TURNOffer(ctx, node.LocalAddr()); !errors.Is(err, dht.ErrNoTURN) {
		t.Fatalf("offer before the relay started: %v", err)
	}
	srv, err := startTURNRelay("127.0.0.1:0", netip.Addr{}, true, log)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	relay.Store(srv)

	var relays []net.PacketConn
	for _, c := range clients {
		o, err := c.TURNOffer(ctx, node.LocalAddr())
		if err != nil {
			t.Fatal(err)
		}
		_, tag, err := holepunch.ParseTURNUsername(o.Username)
		if o.Server != srv.Addr() || tag != c.LocalAddr().Addr().String() || time.Until(o.Expires) <= 0 {
			t.Fatalf("offer %+v (tag %q) from relay %s", o, tag, srv.Addr())
		}
		relays = append(relays, allocate(t, o))
	}
	for i, r := range relays {
		peer := relays[1-i].LocalAddr()
		if _, err := r.WriteTo([]byte("open"), peer); err != nil { // creates the permission
			t.Fatal(err)
		}
	}
	relayed(t, relays[0], relays[1])
	relayed(t, relays[1], relays[0])
	if st := srv.Stats(); st.Allocations != 2 {
		t.Fatalf("relay stats %+v", st)
	}
}

// allocate opens a TURN allocation with the credentials of o.
func allocate(t *testing.T, o dht.TURNOffer) net.PacketConn {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c, err := turn.NewClient(&turn.ClientConfig{
		TURNServerAddr: o.Server.String(), STUNServerAddr: o.Server.String(), Conn: conn,
		Username: o.Username, Password: o.Password, Realm: holepunch.DefaultTURNRealm,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	r, err := c.Allocate()
	if err != nil {
		t.Fatalf("allocate with the DHT's offer: %v", err)
	}
	t.Cleanup(func() {
		r.Close()
		c.Close()
		conn.Close()
	})
	return r
}

// relayed sends datagrams from one relayed address to the other until one
// arrives (the first may race the peer's permission), and checks it.
func relayed(t *testing.T, from, to net.PacketConn) {
	t.Helper()
	msg := []byte("ciphertext only")
	buf := make([]byte, 1500)
	deadline := time.Now().Add(turnTestTimeout)
	for time.Now().Before(deadline) {
		if _, err := from.WriteTo(msg, to.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		_ = to.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, src, err := to.ReadFrom(buf)
		if err != nil || bytes.Equal(buf[:n], []byte("open")) {
			continue
		}
		if !bytes.Equal(buf[:n], msg) || src.String() != from.LocalAddr().String() {
			t.Fatalf("got %q from %s", buf[:n], src)
		}
		return
	}
	t.Fatal("nothing crossed the relay")
}

// TestBootstrapCommandTURN runs the binary: by default the ready event names
// the relay and the node hands out offers for it; --turn off serves none.
func TestBootstrapCommandTURN(t *testing.T) {
	bin := buildBinary(t)
	client := dht.New(dht.Config{ListenAddr: "127.0.0.1:0", Mode: dht.ModeEphemeral})
	if err := client.Start(); err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	for _, tc := range []struct {
		name string
		args []string
		on   bool
	}{
		{"default on", nil, true},
		{"off", []string{"--turn", "off"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"bootstrap", "--listen", "127.0.0.1:0", "--json", "--turn-private"}, tc.args...)
			cmd := exec.Command(bin, args...)
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Process.Kill()
			events := make(chan map[string]any, 4)
			go readEvents(stdout, events)
			ready := nextEvent(t, events)
			addr, err := netip.ParseAddrPort(ready["addr"].(string))
			if ready["event"] != "ready" || err != nil {
				t.Fatalf("ready event: %v", ready)
			}
			ctx, cancel := context.WithTimeout(context.Background(), turnTestTimeout)
			defer cancel()
			o, err := client.TURNOffer(ctx, addr)
			if !tc.on {
				if ready["turn"] != "" || !errors.Is(err, dht.ErrNoTURN) {
					t.Fatalf("--turn off: ready %v, offer %+v %v", ready, o, err)
				}
			} else {
				relayAddr, perr := netip.ParseAddrPort(ready["turn"].(string))
				if perr != nil || relayAddr.Port() == 0 || relayAddr.Addr() != addr.Addr() {
					t.Fatalf("ready event turn %q, dht %s", ready["turn"], addr)
				}
				if err != nil || o.Server != relayAddr {
					t.Fatalf("offer %+v %v, relay %s", o, err, relayAddr)
				}
				// The offered credential works on the advertised relay.
				// Release it while the relay still runs.
				if err := allocate(t, o).Close(); err != nil {
					t.Fatal(err)
				}
			}
			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if ev := nextEvent(t, events); ev["event"] != "stopped" {
				t.Fatalf("after SIGTERM: %v", ev)
			}
			if err := cmd.Wait(); err != nil {
				t.Fatalf("exit: %v", err)
			}
		})
	}
}

// readEvents decodes JSON lines from r until it ends.
func readEvents(r io.Reader, out chan<- map[string]any) {
	defer close(out)
	lines := bufio.NewScanner(r)
	for lines.Scan() {
		var ev map[string]any
		if err := json.Unmarshal(lines.Bytes(), &ev); err != nil {
			ev = map[string]any{"event": "not json", "line": lines.Text()}
		}
		out <- ev
	}
}

func nextEvent(t *testing.T, events <-chan map[string]any) map[string]any {
	t.Helper()
	timer := time.NewTimer(turnTestTimeout)
	defer timer.Stop()
	select {
	case ev, ok := <-events:
		if !ok {
			t.Fatal("stdout closed without an event")
		}
		return ev
	case <-timer.C:
		t.Fatal("timed out waiting for an event")
	}
	return nil
}
