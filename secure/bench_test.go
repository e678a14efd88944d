package secure

import (
	"io"
	"runtime"
	"testing"
	"time"
)

// BenchmarkStreamThroughputUDP: one stream, one direction, over two loopback UDP sockets
// with 4 MiB buffers; each op is one 64 KiB Write. The MB/s column is the number.
//
//	go test -run XXX -bench StreamThroughput -benchtime 256x ./secure/
func BenchmarkStreamThroughputUDP(b *testing.B) {
	for _, bc := range []struct {
		name string
		cfg  Config
	}{
		{"mtu1200", Config{}},
		{"mtu1200-rwnd16M", Config{MaxReceiveBufferSize: 16 << 20}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			a, p := newUDPPair(b)
			c, s := newSessions(b, a, p, bc.cfg)
			benchThroughput(b, c.Stream0(), s.Stream0())
			b.StopTimer()
			st := c.Stats()
			b.ReportMetric(float64(st.Datagram.SentPackets)/float64(b.N), "datagrams/op")
		})
	}
}

// BenchmarkStreamThroughputPipe is the same over the in-memory pipe: no syscalls, so it
// shows the cost of QUIC plus sealing alone.
func BenchmarkStreamThroughputPipe(b *testing.B) {
	pa, pb := newPipe(pipeOptions{})
	c, s := newSessions(b, pa, pb, Config{})
	benchThroughput(b, c.Stream0(), s.Stream0())
}

func benchThroughput(b *testing.B, w, r *Stream) {
	const chunk = 64 << 10
	buf := make([]byte, chunk)
	total := int64(b.N) * chunk
	done := make(chan error, 1)
	go func() {
		_, err := io.CopyN(io.Discard, r, total)
		done <- err
	}()
	b.SetBytes(chunk)
	b.ResetTimer()
	for range b.N {
		if _, err := w.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

// BenchmarkIdleSessionMemory reports the heap and goroutines one idle session costs (both
// ends counted separately: the figure is per end), over loopback UDP.
//
//	go test -run XXX -bench IdleSessionMemory -benchtime 1x ./secure/
func BenchmarkIdleSessionMemory(b *testing.B) {
	const n = 100
	for range b.N {
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		g0 := runtime.NumGoroutine()
		sessions := make([]*Session, 0, 2*n)
		for range n {
			a, p := newUDPPair(b)
			c, s := newSessions(b, a, p, Config{})
			sessions = append(sessions, c, s)
		}
		// Let the setup's transient buffers go; keepalives keep running.
		time.Sleep(100 * time.Millisecond)
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(2*n), "heap-B/session")
		b.ReportMetric(float64(runtime.NumGoroutine()-g0)/float64(2*n), "goroutines/session")
		for _, s := range sessions {
			s.Close()
		}
	}
}
