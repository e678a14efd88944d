package secure

import (
	"bytes"
	"fmt"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/internal/testutil"
)

// segmentRecorder is a SegmentWriter that keeps what it was given.
type segmentRecorder struct {
	net.Conn // the rest of net.Conn: unused by the batch path
	mu       sync.Mutex
	calls    [][]int // per WriteSegments call: the datagram sizes it was cut into
	data     [][]byte
	block    chan struct{} // non-nil: each call waits until it is closed
	entered  chan struct{} // non-nil: told (if there is room) when a call starts
	closed   bool
	maxSeg   int // nonzero: a call with larger datagrams fails whole, as EMSGSIZE does
}

func (r *segmentRecorder) WriteSegments(b []byte, segSize int) error {
	if r.entered != nil {
		select {
		case r.entered <- struct{}{}:
		default:
		}
	}
	if r.block != nil {
		<-r.block
	}
	if r.maxSeg != 0 && segSize > r.maxSeg {
		return syscall.EMSGSIZE
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var sizes []int
	for off := 0; off < len(b); off += segSize {
		d := b[off:min(off+segSize, len(b))]
		sizes = append(sizes, len(d))
		r.data = append(r.data, append([]byte(nil), d...))
	}
	r.calls = append(r.calls, sizes)
	return nil
}

func (r *segmentRecorder) Close() error { r.mu.Lock(); r.closed = true; r.mu.Unlock(); return nil }

func (r *segmentRecorder) snapshot() ([][]int, [][]byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]int(nil), r.calls...), append([][]byte(nil), r.data...)
}

// Datagrams written while the writer is busy go out together, cut into runs of one
// size (a shorter datagram ends its run), in order, each one sealed on its own.
func TestBatchRuns(t *testing.T) {
	ik, rk := testKeys(t)
	rec := &segmentRecorder{block: make(chan struct{}), entered: make(chan struct{}, 1)}
	c := NewDatagramConn(rec, ik, DatagramConfig{})
	// The first datagram goes out alone and holds the writer; the next ones queue.
	sizes := []int{1000, 1400, 1400, 1400, 900, 1400, 1400, 20, 20}
	for i, n := range sizes {
		if _, err := c.Write(bytes.Repeat([]byte{byte(i)}, n)); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			<-rec.entered
		}
	}
	close(rec.block) // let the writer go
	closed := make(chan struct{})
	go func() { c.Close(); close(closed) }() // Close sends what is batched first
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
	calls, data := rec.snapshot()
	o := PacketOverhead
	want := [][]int{{1000 + o}, {1400 + o, 1400 + o, 1400 + o, 900 + o}, {1400 + o, 1400 + o, 20 + o}, {20 + o}}
	if len(calls) != len(want) {
		t.Fatalf("calls %v, want %v", calls, want)
	}
	for i := range want {
		if len(calls[i]) != len(want[i]) {
			t.Fatalf("calls %v, want %v", calls, want)
		}
		for j := range want[i] {
			if calls[i][j] != want[i][j] {
				t.Fatalf("calls %v, want %v", calls, want)
			}
		}
	}
	// Each datagram opens with the peer's keys, in order, to what was written.
	r := NewDatagramConn(nil, rk, DatagramConfig{})
	for i, d := range data {
		got, ok := r.open(d)
		if !ok || !bytes.Equal(got, bytes.Repeat([]byte{byte(i)}, sizes[i])) {
			t.Fatalf("datagram %d does not open to what was written", i)
		}
	}
	if st := c.Stats(); st.SentPackets != uint64(len(sizes)) {
		t.Fatalf("SentPackets %d, want %d", st.SentPackets, len(sizes))
	}
	if _, err := c.Write([]byte("late")); err == nil {
		t.Fatal("Write after Close succeeded")
	}
}

// A datagram the system refuses does not take the rest of its run with it: a path
// MTU probe larger than the local link allows (the first probe, MaxMTU, on any
// Ethernet host) runs with the shorter data packet after it, and that packet must
// still go.
func TestBatchRunWithRefusedDatagram(t *testing.T) {
	ik, _ := testKeys(t)
	o := PacketOverhead
	rec := &segmentRecorder{block: make(chan struct{}), entered: make(chan struct{}, 1), maxSeg: 1444 + o}
	c := NewDatagramConn(rec, ik, DatagramConfig{})
	sizes := []int{1000, MaxMTU, 1200, 1200}
	for i, n := range sizes {
		if _, err := c.Write(bytes.Repeat([]byte{byte(i)}, n)); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			<-rec.entered // the first goes alone and holds the writer; the rest queue
		}
	}
	close(rec.block)
	c.Close()
	calls, _ := rec.snapshot()
	var got []int
	for _, call := range calls {
		got = append(got, call...)
	}
	want := []int{1000 + o, 1200 + o, 1200 + o}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("datagrams sent %v (calls %v), want %v", got, calls, want)
	}
	if st := c.Stats(); st.SendErrors != 1 || st.SentPackets != 3 {
		t.Fatalf("SendErrors %d, SentPackets %d, want 1 and 3", st.SendErrors, st.SentPackets)
	}
}

// A writer that cannot keep up holds Write back at batchMax datagrams: memory stays
// bounded.
func TestBatchBackPressure(t *testing.T) {
	ik, _ := testKeys(t)
	rec := &segmentRecorder{block: make(chan struct{})}
	c := NewDatagramConn(rec, ik, DatagramConfig{})
	defer func() {
		close(rec.block)
		c.Close()
	}()
	wrote := make(chan int, 1)
	go func() {
		n := 0
		for ; n < 3*batchMax; n++ {
			if _, err := c.Write(make([]byte, 100)); err != nil {
				break
			}
			select {
			case wrote <- n + 1:
			default:
				<-wrote
				wrote <- n + 1
			}
		}
	}()
	time.Sleep(100 * time.Millisecond)
	// The blocked writer holds one batch (up to batchMax datagrams), batchMax more
	// wait, and the next Write blocks.
	if n := <-wrote; n > 2*batchMax {
		t.Fatalf("%d Writes returned while the writer was stuck, want at most %d", n, 2*batchMax)
	}
}

// The writer goroutine leaves once there is nothing to send, so an idle connection
// has none, and the next datagram brings one back.
func TestBatchWriterLeavesWhenIdle(t *testing.T) {
	ik, _ := testKeys(t)
	rec := &segmentRecorder{}
	c := NewDatagramConn(rec, ik, DatagramConfig{})
	defer c.Close()
	running := func() bool {
		c.batch.mu.Lock()
		defer c.batch.mu.Unlock()
		return c.batch.running
	}
	sent := func() int { _, data := rec.snapshot(); return len(data) }
	for i := 1; i <= 2; i++ {
		if _, err := c.Write([]byte("datagram")); err != nil {
			t.Fatal(err)
		}
		testutil.Poll(5*time.Second, 0, func() bool { return sent() == i && !running() })
		if sent() != i || running() {
			t.Fatalf("after datagram %d: %d sent, writer up: %v", i, sent(), running())
		}
	}
}
