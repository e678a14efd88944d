package dht_test

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/internal/testnet"
)

// BenchmarkLookup1000 builds a 1,000-node network in this process on
// loopback (999 persistent nodes, 20 ephemeral announcers, one ephemeral
// client) and measures topic lookups from the client. It reports the
// median and 95th-percentile lookup time, the mean number of sequential
// hops, and the heap per node. Run it with a fixed count, e.g.
//
//	go test -run='^$' -bench=Lookup1000 -benchtime=300x ./dht/
func BenchmarkLookup1000(b *testing.B) {
	const size = 1000
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	nw, err := testnet.Start(ctx, testnet.Config{Persistent: size - 1})
	if err != nil {
		b.Fatal(err)
	}
	defer nw.Close()
	client, err := nw.AddNode(ctx, dht.Config{Mode: dht.ModeEphemeral})
	if err != nil {
		b.Fatal(err)
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	perNode := float64(after.HeapInuse-before.HeapInuse) / size

	topics := make([]dht.ID, 20)
	for i := range topics {
		topics[i] = dht.TopicKey(fmt.Sprintf("bench-%d", i))
		ann, err := nw.AddNode(ctx, dht.Config{Mode: dht.ModeEphemeral})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := ann.Announce(ctx, topics[i], newKey(b)); err != nil {
			b.Fatal(err)
		}
	}

	durations := make([]time.Duration, 0, b.N)
	hops, found := 0, 0
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		res, err := client.Lookup(ctx, topics[i%len(topics)])
		if err != nil {
			b.Fatal(err)
		}
		durations = append(durations, time.Since(start))
		hops += res.Hops
		if len(res.Peers) > 0 {
			found++
		}
	}
	b.StopTimer()
	slices.Sort(durations)
	b.ReportMetric(float64(durations[len(durations)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(durations[len(durations)*95/100].Microseconds())/1000, "p95-ms")
	b.ReportMetric(float64(hops)/float64(b.N), "hops")
	b.ReportMetric(float64(found)/float64(b.N)*100, "found-%")
	b.ReportMetric(perNode/1024, "KiB/node")
}
