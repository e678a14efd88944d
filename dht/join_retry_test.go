package dht

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/internal/testutil"
)

// TestJoinRetry: a join that left fewer than K nodes in its routing table
// looks again after a pause, in the background, until a lookup finds no
// node it did not know (one repeat when the network is that small), the
// table holds K, or the pauses run out; a join that found K does not look
// again. The bootstrap node is a bare socket that answers pings as a
// persistent node and FIND_NODE with the others (real nodes that know
// nobody), except the requests it is told to ignore: an overloaded
// bootstrap node. Before the repeats, a joiner whose bootstrap node did
// not answer its first lookup ended its join knowing that node alone, and
// stayed so until a bucket refresh minutes later.
func TestJoinRetry(t *testing.T) {
	for _, c := range []struct {
		name    string
		k       int
		others  int
		ignore  func(j *Node, m *Message, from netip.AddrPort) bool
		retries uint64 // Stats.JoinRetries once the repeats ended
	}{
		{
			name:   "K found, no repeat",
			k:      4,
			others: 4,
			ignore: func(*Node, *Message, netip.AddrPort) bool { return false },
		},
		{
			name:    "fewer than K in the network, one repeat",
			others:  4,
			ignore:  func(*Node, *Message, netip.AddrPort) bool { return false },
			retries: 1,
		},
		{
			// The joiner's request gives up (a timeout) before the
			// bootstrap node answers any: its resends are ignored too.
			// The repeat finds the others, and the next finds no more.
			name:   "first lookup unanswered, repeated",
			others: 4,
			ignore: func(j *Node, m *Message, from netip.AddrPort) bool {
				return m.Command == CmdFindNode && *m.Target == NodeID(from) && j.Stats().Timeouts == 0
			},
			retries: 2,
		},
		{
			// A network of two: every repeat finds the bootstrap node
			// alone, and they stop after the last pause.
			name:    "nobody else to find, repeats bounded",
			others:  0,
			ignore:  func(*Node, *Message, netip.AddrPort) bool { return false },
			retries: uint64(len(joinRetryPauses)),
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			testutil.CheckLeaks(t)
			var others []netip.AddrPort
			for range c.others {
				o := New(Config{ListenAddr: "127.0.0.1:0", Mode: ModePersistent})
				if err := o.Start(); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { o.Close() })
				others = append(others, o.LocalAddr())
			}
			j := New(Config{ListenAddr: "127.0.0.1:0", Mode: ModePersistent, K: c.k})
			if err := j.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { j.Close() })
			j.AddBootstrap(fakeBootstrap(t, others, func(m *Message, from netip.AddrPort) bool { return c.ignore(j, m, from) }))
			ctx, cancel := context.WithTimeout(context.Background(), testutil.Scaled(20*time.Second))
			defer cancel()
			if err := j.Bootstrap(ctx); err != nil {
				t.Fatal(err)
			}
			want := 1 + c.others
			testutil.Eventually(t, testutil.Scaled(10*time.Second), func() bool {
				return j.Stats().RoutingTable == want && !j.stacks[IPv4].lookingAgain.Load()
			}, "the routing table to hold the bootstrap node and every other (%d), the repeats to end", want)
			st := j.Stats()
			t.Logf("routing table %d, join retries %d, timeouts %d, resends %d", st.RoutingTable, st.JoinRetries, st.Timeouts, st.Resends)
			if st.JoinRetries != c.retries {
				t.Errorf("%d join retries, want %d", st.JoinRetries, c.retries)
			}
		})
	}
}

// fakeBootstrap serves a bootstrap node on a bare loopback socket until
// the test ends: it answers pings as the persistent node its address
// implies, and FIND_NODE with the addresses of others, except the
// requests ignore picks.
func fakeBootstrap(t *testing.T, others []netip.AddrPort, ignore func(m *Message, from netip.AddrPort) bool) netip.AddrPort {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	addr := addrPortOf(conn)
	id := NodeID(addr)
	var wg sync.WaitGroup
	t.Cleanup(func() {
		conn.Close()
		wg.Wait()
	})
	wg.Go(func() {
		buf := make([]byte, MaxPacketSize)
		for {
			k, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			m, err := ParseMessage(buf[:k])
			if err != nil || m.Response || ignore(m, from) {
				continue
			}
			reply := &Message{Response: true, Command: m.Command, TID: m.TID, Addr: from, ID: &id}
			switch m.Command {
			case CmdPing:
			case CmdFindNode:
				reply.Closer = others
			default:
				continue
			}
			_, _ = conn.WriteToUDPAddrPort(AppendMessage(nil, reply), from)
		}
	})
	return addr
}

// TestJoinRetryPause: the jitter spreads a pause over half to one and a
// half times itself.
func TestJoinRetryPause(t *testing.T) {
	d := 250 * time.Millisecond
	for _, c := range []struct {
		u    float64
		want time.Duration
	}{{0, d / 2}, {0.5, d}, {0.75, 5 * d / 4}} {
		if got := joinRetryPause(d, c.u); got != c.want {
			t.Errorf("joinRetryPause(%v, %v) = %v, want %v", d, c.u, got, c.want)
		}
	}
}
