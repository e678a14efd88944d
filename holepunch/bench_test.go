package holepunch_test

import (
	"context"
	"io"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/holepunch"
	"github.com/swarmdb/swarmdb/internal/natlab"
)

// echoServer echoes every connection the peer accepts on stream 0.
func echoServer(p *peer) {
	go func() {
		for c := range p.in {
			go func() {
				defer c.Close()
				_, _ = io.Copy(c.Stream0(), c.Stream0())
			}()
		}
	}()
}

// BenchmarkConnectLoopback: two nodes on a small loopback DHT; each
// iteration dials by key and waits for the first echoed byte. Reports the
// median and p95 of that time.
//
//	go test -run '^$' -bench ConnectLoopback -benchtime 200x ./holepunch/
func BenchmarkConnectLoopback(b *testing.B) {
	n := startNet(b, 6)
	server := addPeer(b, n, nil)
	client := addPeer(b, n, nil)
	ctx := context.Background()
	if _, err := server.ep.Listen(ctx); err != nil {
		b.Fatal(err)
	}
	echoServer(server)
	relays, err := client.link.FindRelays(ctx, server.pub)
	if err != nil {
		b.Fatal(err)
	}
	times := make([]time.Duration, 0, b.N)
	one := []byte{1}
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		c, err := client.ep.Connect(ctx, server.pub, relays)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Stream0().Write(one); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c.Stream0(), make([]byte, 1)); err != nil {
			b.Fatal(err)
		}
		times = append(times, time.Since(start))
		c.Close()
	}
	b.StopTimer()
	slices.Sort(times)
	b.ReportMetric(ms(times[len(times)/2]), "ms-p50")
	b.ReportMetric(ms(times[len(times)*95/100]), "ms-p95")
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// BenchmarkThroughputLoopback: one stream, one direction, 1 MiB writes,
// over a connection made by key on loopback.
//
//	go test -run '^$' -bench ThroughputLoopback -benchtime 256x ./holepunch/
func BenchmarkThroughputLoopback(b *testing.B) {
	n := startNet(b, 6)
	server := addPeer(b, n, nil)
	client := addPeer(b, n, nil)
	c, s := dialPair(b, client, server)
	benchThroughput(b, c, s)
}

// dialPair makes server listen, dials it from client and returns both ends;
// they close when the benchmark ends.
func dialPair(b *testing.B, client, server *peer) (c, s *holepunch.Conn) {
	ctx := context.Background()
	if _, err := server.ep.Listen(ctx); err != nil {
		b.Fatal(err)
	}
	c, err := client.ep.Connect(ctx, server.pub, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	s = <-server.in
	b.Cleanup(func() { s.Close() })
	return c, s
}

// benchThroughput sends b.N MiB from c to s on stream 0.
func benchThroughput(b *testing.B, c, s *holepunch.Conn) {
	const chunk = 1 << 20
	done := make(chan int64)
	go func() {
		n, _ := io.CopyN(io.Discard, s.Stream0(), int64(b.N)*chunk)
		done <- n
	}()
	buf := make([]byte, chunk)
	b.SetBytes(chunk)
	b.ResetTimer()
	for range b.N {
		if _, err := c.Stream0().Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	if got := <-done; got != int64(b.N)*chunk {
		b.Fatalf("received %d bytes", got)
	}
	b.StopTimer()
}

// BenchmarkThroughputNATLab: the same through two real port-restricted
// NATs (nftables in network namespaces); the path is direct. Root only.
//
//	go test -run '^$' -bench ThroughputNATLab -benchtime 256x ./holepunch/
func BenchmarkThroughputNATLab(b *testing.B) {
	lab := natlab.New(b)
	boot := labDHT(b, lab, 3, nil)
	server := labPeer(b, lab.AddRouter(natlab.RouterConfig{Type: natlab.PortRestricted}).AddHost("s"), boot)
	client := labPeer(b, lab.AddRouter(natlab.RouterConfig{Type: natlab.PortRestricted}).AddHost("c"), boot)
	c, s := dialPair(b, client, server)
	if c.Path() != holepunch.PathDirect {
		b.Fatalf("path %s, want direct", c.Path())
	}
	benchThroughput(b, c, s)
}

// BenchmarkIdleConnMemory: heap held per idle connection (both ends, since
// both live in this process), over 20 connections from one client to 20
// servers.
//
//	go test -run '^$' -bench IdleConnMemory -benchtime 1x ./holepunch/
func BenchmarkIdleConnMemory(b *testing.B) {
	const conns = 20
	n := startNet(b, 6)
	client := addPeer(b, n, nil)
	ctx := context.Background()
	var servers []*peer
	for range conns {
		s := addPeer(b, n, nil)
		if _, err := s.ep.Listen(ctx); err != nil {
			b.Fatal(err)
		}
		servers = append(servers, s)
	}
	for range b.N {
		before := heapInUse()
		goBefore := runtime.NumGoroutine()
		var open []*holepunch.Conn
		for _, s := range servers {
			c, err := client.ep.Connect(ctx, s.pub, nil)
			if err != nil {
				b.Fatal(err)
			}
			open = append(open, c, <-s.in)
		}
		// Let buffers and timers settle, and the agents of the routed
		// sessions retire (agentLinger, 1 s): what an idle connection keeps.
		time.Sleep(6 * time.Second)
		after := heapInUse()
		b.ReportMetric(float64(after-before)/conns/1024, "KiB/conn")
		b.ReportMetric(float64(runtime.NumGoroutine()-goBefore)/conns, "goroutines/conn")
		for _, c := range open {
			c.Close()
		}
	}
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}
