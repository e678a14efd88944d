package secure

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/internal/testutil"
)

// Loss recovery, end to end over the in-memory pipe with a 20 ms RTT. What
// pion/sctp got wrong (shared/reference/transport.md §1): a lost
// retransmission and a lost tail waited for its 1 s T3 timer. QUIC's loss
// detection (RFC 9002) finds a lost retransmission like any loss and probes a
// lost tail after one probe timeout, and BBR keeps the rate.

const lossTestOneWay = 10 * time.Millisecond

// maxStall is the longest the receiver may wait for the next byte. A timer
// recovery (pion's T3) costs a second or more. The tests scale it by the
// machine's load (testutil.Scaled): under .ci/run with two busy loops a
// lost tail's second probe once came at 328 ms.
const maxStall = 300 * time.Millisecond

// transferResult is what transfer measured at the receiver.
type transferResult struct {
	stall   time.Duration // the longest gap between two reads, after the first
	took    time.Duration // first write to last byte
	tail    time.Duration // last write returned to last byte
	mibps   float64
	written time.Time // when the last write returned
}

// transfer sends size bytes client→server on a new stream and times the
// receiving side. onWritten runs once the last Write has returned.
func transfer(t *testing.T, p sessionPair, size int, onWritten func()) transferResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	w, err := p.client.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	r, err := p.server.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var res transferResult
	var wrote atomic.Int64 // unix nanos of the last write's return
	var wg sync.WaitGroup
	start := time.Now()
	wg.Go(func() {
		buf := make([]byte, 64<<10)
		for sent := 0; sent < size; sent += len(buf) {
			if _, err := w.Write(buf[:min(len(buf), size-sent)]); err != nil {
				t.Errorf("write: %v", err)
				return
			}
		}
		wrote.Store(time.Now().UnixNano())
		if onWritten != nil {
			onWritten()
		}
	})
	buf := make([]byte, 64<<10)
	got := 0
	var last time.Time
	for got < size {
		n, err := r.Read(buf)
		if err != nil {
			t.Fatalf("read after %d of %d bytes: %v", got, size, err)
		}
		now := time.Now()
		if !last.IsZero() {
			res.stall = max(res.stall, now.Sub(last))
		}
		last = now
		got += n
	}
	wg.Wait()
	res.took = last.Sub(start)
	res.written = time.Unix(0, wrote.Load())
	res.tail = last.Sub(res.written)
	res.mibps = float64(size) / (1 << 20) / res.took.Seconds()
	return res
}

// At 2 % random loss both ways and a 20 ms RTT, no read waits longer than
// 300 ms and the rate stays up. The seed fixes which datagrams are lost; with
// about 20,000 datagrams each way there are hundreds of losses, some of them
// retransmissions.
func TestSessionNoStallAtTwoPercentLoss(t *testing.T) {
	testutil.CheckLeaks(t)
	p := newPipeSessions(t, pipeOptions{loss: 0.02, delay: lossTestOneWay, seed: 2}, Config{})
	res := transfer(t, p, 16<<20, nil)
	st := p.client.Stats()
	t.Logf("16 MiB in %v (%.1f MiB/s), longest stall %v; client: %d bytes lost, %d loss events, cwnd %d, bw %.1f MB/s, %s",
		res.took.Round(time.Millisecond), res.mibps, res.stall.Round(time.Millisecond), st.LostBytes, st.LossEvents, st.CWND, st.BtlBw/1e6, st.CCState)
	if bound := testutil.Scaled(maxStall); res.stall > bound {
		t.Errorf("a read waited %v, want at most %v", res.stall, bound)
	}
	if st.LostBytes == 0 {
		t.Error("no packet was lost: the test exercised nothing")
	}
}

// Every datagram of the data direction is dropped for two RTTs, starting at
// one in the middle of the transfer. The first retransmissions of what was
// lost go out about one RTT in, inside the outage, and are lost too; they
// must be found again without a timer-sized stall.
func TestSessionRecoversLostRetransmission(t *testing.T) {
	testutil.CheckLeaks(t)
	const outage = 4 * lossTestOneWay // two RTTs
	var (
		mu      sync.Mutex
		n       int
		dropped int
		until   time.Time
	)
	tamper := func(dir int, b []byte) [][]byte {
		if dir != 0 {
			return [][]byte{b}
		}
		mu.Lock()
		defer mu.Unlock()
		n++
		now := time.Now()
		if n == 3000 {
			until = now.Add(outage)
		}
		if now.Before(until) {
			dropped++
			return nil
		}
		return [][]byte{b}
	}
	p := newPipeSessions(t, pipeOptions{delay: lossTestOneWay, tamper: tamper}, Config{})
	res := transfer(t, p, 8<<20, nil)
	mu.Lock()
	defer mu.Unlock()
	t.Logf("8 MiB in %v, longest stall %v, %d datagrams dropped in the outage, %d bytes declared lost",
		res.took.Round(time.Millisecond), res.stall.Round(time.Millisecond), dropped, p.client.Stats().LostBytes)
	if dropped == 0 {
		t.Fatal("the outage dropped nothing: the transfer was too short")
	}
	if bound := testutil.Scaled(maxStall); res.stall > outage+bound {
		t.Errorf("a read waited %v, want at most the outage plus %v", res.stall, bound)
	}
}

// The last packet of a transfer is lost: nothing sent later can reveal the
// loss, so a probe must (RFC 9002 §6.2), after one probe timeout, not a
// retransmission timer of a second. After 256 KiB have arrived, one more
// message of 1000 bytes is written, and the datagram carrying it (the next
// large one the client sends; ACKs are small) is dropped.
func TestSessionRecoversLostTail(t *testing.T) { testLostTail(t, 1) }

// The same, and the probe that retransmits the tail is lost too: a lost
// retransmission, found by the next probe (twice the timeout), still far
// below pion/sctp's T3 (1 s, then 2 s backed off).
func TestSessionRecoversLostTailRetransmission(t *testing.T) { testLostTail(t, 2) }

func testLostTail(t *testing.T, drops int32) {
	testutil.CheckLeaks(t)
	var armed, dropped atomic.Int32
	tamper := func(dir int, b []byte) [][]byte {
		if dir == 0 && len(b) > 1000 && armed.Add(-1) >= 0 {
			dropped.Add(1)
			return nil
		}
		return [][]byte{b}
	}
	p := newPipeSessions(t, pipeOptions{delay: lossTestOneWay, tamper: tamper}, Config{})
	w, r := p.client.Stream0(), p.server.Stream0()
	buf := make([]byte, 64<<10)
	for range 4 {
		if _, err := w.Write(buf); err != nil {
			t.Fatal(err)
		}
		if _, err := r.ReadMessage(nil); err != nil {
			t.Fatal(err)
		}
	}
	armed.Store(drops)
	start := time.Now()
	if _, err := w.Write(buf[:1000]); err != nil {
		t.Fatal(err)
	}
	r.SetReadDeadline(time.Now().Add(5 * time.Second))
	m, err := r.ReadMessage(nil)
	took := time.Since(start)
	if err != nil || len(m) != 1000 {
		t.Fatalf("tail message: %d bytes, %v", len(m), err)
	}
	t.Logf("%d datagrams carrying the tail dropped; it arrived %v after it was written (RTT %v)", dropped.Load(), took.Round(time.Millisecond), 2*lossTestOneWay)
	if dropped.Load() != drops {
		t.Fatalf("dropped %d datagrams, want %d", dropped.Load(), drops)
	}
	if bound := testutil.Scaled(maxStall); took > bound {
		t.Errorf("the tail arrived after %v, want at most %v", took, bound)
	}
}
