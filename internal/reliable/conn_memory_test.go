package reliable

import (
	"io"
	"runtime"
	"testing"
	"time"
)

// Idle memory is why this transport exists (doc.go: quic-go held about
// 108 KiB per idle connection), so it is measured, not estimated: the heap
// that many idle Conns hold, congestion controllers included, divided by
// their number.

// idleConnBudget is the most heap one idle Conn may hold after a small
// exchange: about a Hyperswarm connection's share of ours (24.5 KiB in all,
// doc.go) for the whole transport.
const idleConnBudget = 6 << 10

// measureIdleConns runs setup on count/2 fresh pairs, lets each settle, and
// returns the heap bytes each Conn holds afterwards.
func measureIdleConns(t *testing.T, count int, path netPath, setup func(n *connPair)) float64 {
	t.Helper()
	conns := make([]*Conn, 0, count)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.GC() // the second empties sync.Pool's victim cache: the stream blocks
	runtime.ReadMemStats(&before)
	for i := range count / 2 {
		n := newConnPair(t, path, uint64(i), Config{})
		setup(n)
		n.settle(10 * time.Second)
		conns = append(conns, n.conns[0], n.conns[1])
	}
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(conns)
	return float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / float64(len(conns))
}

// smallExchange runs a request/response on one stream, which both sides
// then close and forget, and a message each way on a second one, which
// stays open and idle.
func smallExchange(n *connPair) {
	t := n.t
	a, b := n.conns[0], n.conns[1]
	done, _ := a.OpenStream()
	idle, _ := a.OpenStream()
	a.Write(done, make([]byte, 1000))
	a.CloseWrite(done)
	a.Write(idle, make([]byte, 100))
	var doneRead, idleRead, replied bool
	n.run(time.Second, func() bool {
		// As the secure package does after each event.
		a.Wake(nil)
		b.Wake(nil)
		for _, ok := b.AcceptStream(); ok; _, ok = b.AcceptStream() {
		}
		if b.streams[idle] != nil && !idleRead {
			if p, _ := readAll(b, idle); len(p) == 100 {
				idleRead = true
				b.Write(idle, make([]byte, 100))
			}
		}
		if b.streams[done] != nil && !replied {
			if _, err := readAll(b, done); err == io.EOF {
				replied = true
				b.Write(done, make([]byte, 1000))
				b.CloseWrite(done)
			}
		}
		if replied && !doneRead {
			if _, err := readAll(a, done); err == io.EOF {
				doneRead = true
			}
		}
		p, _ := readAll(a, idle)
		return doneRead && len(p) == 100
	})
	n.settle(time.Second)
	if len(a.streams) != 1 || len(b.streams) != 1 {
		t.Fatalf("streams held: %d and %d, want the idle one", len(a.streams), len(b.streams))
	}
}

func TestConnIdleMemory(t *testing.T) {
	per := measureIdleConns(t, 1000, netPath{delay: 5 * time.Millisecond}, smallExchange)
	t.Logf("an idle Conn after a small exchange holds %.0f bytes", per)
	if per > idleConnBudget {
		t.Errorf("an idle Conn holds %.0f bytes, budget %d", per, idleConnBudget)
	}
}

// After a bulk transfer the arrays and maps that grew with the data in
// flight (the sent history, BBR's packets, the streams) are given back once
// the connection is idle: its memory returns to the small exchange's.
func TestConnIdleMemoryAfterBulk(t *testing.T) {
	per := measureIdleConns(t, 100, netPath{delay: 5 * time.Millisecond, rate: 50e6, loss: 0.01}, func(n *connPair) {
		n.transfer(256<<10, 10*time.Second) // on stream 0
		n.conns[1].CloseWrite(0)
		n.run(time.Second, func() bool {
			_, err := readAll(n.conns[0], 0)
			return err == io.EOF
		})
		smallExchange(n)
	})
	t.Logf("an idle Conn after a 256 KiB transfer and a small exchange holds %.0f bytes", per)
	if per > idleConnBudget {
		t.Errorf("an idle Conn holds %.0f bytes, budget %d", per, idleConnBudget)
	}
}

// After many streams at once the stream table and the wake list, which grew
// with them, are given back too.
func TestConnIdleMemoryAfterManyStreams(t *testing.T) {
	per := measureIdleConns(t, 100, netPath{delay: 5 * time.Millisecond}, func(n *connPair) {
		a, b := n.conns[0], n.conns[1]
		var ids []uint64
		for range InitialMaxStreams {
			id, err := a.OpenStream()
			if err != nil {
				n.t.Fatal(err)
			}
			a.Write(id, []byte("hello"))
			a.CloseWrite(id)
			ids = append(ids, id)
		}
		eof := map[uint64]bool{}
		n.run(time.Second, func() bool {
			for id, ok := b.AcceptStream(); ok; id, ok = b.AcceptStream() {
				if _, err := readAll(b, id); err != io.EOF {
					n.t.Fatalf("stream %d: %v", id, err)
				}
				b.CloseWrite(id)
			}
			for _, id := range ids {
				if _, err := readAll(a, id); err == io.EOF {
					eof[id] = true
				}
			}
			return len(eof) == len(ids)
		})
		a.Wake(nil)
		b.Wake(nil)
		smallExchange(n)
	})
	t.Logf("an idle Conn after %d streams at once and a small exchange holds %.0f bytes", InitialMaxStreams, per)
	if per > idleConnBudget {
		t.Errorf("an idle Conn holds %.0f bytes, budget %d", per, idleConnBudget)
	}
}
