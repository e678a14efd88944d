package swarm

import (
	"context"
	"crypto/ed25519"
	"runtime"
	"slices"
	"testing"
	"time"
)

// BenchmarkJoinToFirstConnection measures, on a loopback DHT, the time from
// a new client's Join to its first connection event, with one server
// already announced. Reports the median and p95 in ms.
//
//	go test ./swarm -run '^$' -bench JoinToFirstConnection -benchtime 30x
func BenchmarkJoinToFirstConnection(b *testing.B) {
	nw := startNetB(b, 10)
	server := startSwarmB(b, nw, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := server.Join("bench-join", JoinOptions{Server: true}); err != nil {
		b.Fatal(err)
	}
	if err := server.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	var times []time.Duration
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		client := startSwarmB(b, nw, nil)
		b.StartTimer()
		start := time.Now()
		if _, err := client.Join("bench-join", JoinOptions{Client: true}); err != nil {
			b.Fatal(err)
		}
		waitFirstConn(b, client, 20*time.Second)
		times = append(times, time.Since(start))
		b.StopTimer()
		client.Close()
		b.StartTimer()
	}
	b.StopTimer()
	slices.Sort(times)
	b.ReportMetric(float64(times[len(times)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(times[(len(times)*95)/100].Microseconds())/1000, "p95-ms")
}

// BenchmarkMemory50Connections measures what 50 connections cost: one hub
// swarm serves a topic and 50 client swarms connect to it. Reported per
// connection (both ends, since everything runs in one process) against the
// same 51 swarms before they joined: heap bytes and goroutines.
//
//	go test ./swarm -run '^$' -bench Memory50Connections -benchtime 1x
func BenchmarkMemory50Connections(b *testing.B) {
	const n = 50
	nw := startNetB(b, 10)
	for range b.N {
		hub := startSwarmB(b, nw, func(c *Config) { c.MaxPeers = n + 10 })
		clients := make([]*testSwarm, n)
		for i := range clients {
			clients[i] = startSwarmB(b, nw, nil)
		}
		g0, h0 := snapshot()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		hub.Join("bench-mem", JoinOptions{Server: true})
		if err := hub.Flush(ctx); err != nil {
			b.Fatal(err)
		}
		for _, c := range clients {
			c.Join("bench-mem", JoinOptions{Client: true})
		}
		var keys []ed25519.PublicKey
		for _, c := range clients {
			keys = append(keys, c.PublicKey())
		}
		waitConnsB(b, hub, 60*time.Second, keys...)
		cancel()
		// What an idle connection keeps: past holepunch's agentLinger (1 s),
		// when the ICE agents of routed sessions have closed. Meanwhile the
		// membership protocol connects clients to each other too, so the
		// cost is per connection of any pair.
		time.Sleep(6 * time.Second)
		g1, h1 := snapshot()
		conns := hub.Stats().Connections
		for _, c := range clients {
			conns += c.Stats().Connections
		}
		perConn := float64(conns) / 2 // each connection has two ends here
		b.ReportMetric(float64(g1-g0)/perConn, "goroutines/conn")
		b.ReportMetric(float64(h1-h0)/perConn/1024, "heap-KiB/conn")
		b.ReportMetric(float64(hub.Stats().Connections), "hub-conns")
		b.ReportMetric(perConn, "conns")
		for _, c := range clients {
			c.Close()
		}
		hub.Close()
	}
}

func snapshot() (goroutines int, heap uint64) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return runtime.NumGoroutine(), ms.HeapAlloc
}
