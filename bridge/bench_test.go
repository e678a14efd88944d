package bridge

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/swarmdb/swarmdb/db"
)

// BenchmarkPutsThroughBridge measures verified puts per second arriving as ToolDb put messages
// on one connection and landing durably in Pebble (on disk, fsynced by group commit):
// parse, dedup, strict verification (hash + P-256 signature), store, relay check.
//
//	go test -run '^$' -bench PutsThroughBridge -benchtime 20000x ./bridge/
func BenchmarkPutsThroughBridge(b *testing.B) {
	for _, fs := range []string{"disk", "mem"} {
		b.Run(fs, func(b *testing.B) {
			cfg := db.Config{Dir: b.TempDir()}
			if fs == "mem" {
				cfg = db.Config{Dir: "db", FS: vfs.NewMem()}
			}
			s, err := db.Open(cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			br := newBridge(b, Config{Store: s, Server: true,
				Limits: Limits{MessagesPerSecond: 1e9, Burst: 1 << 30, OutboundQueue: 1 << 16}})
			f, _ := newFakePeer(b, br, false)
			f.hello(DefaultTopic, false, false)
			u, _ := db.NewUser(nil)
			msgs := make([][]byte, b.N)
			now := time.Now()
			for i := range msgs {
				r, err := u.NewRecord(fmt.Sprintf("bench-%d", i), []byte(fmt.Sprintf(`{"i":%d,"text":"a typical small chat message"}`, i)), "", now, 0)
				if err != nil {
					b.Fatal(err)
				}
				msgs[i] = AppendMessage(nil, putMsg(r))
			}
			w := s.WatchPrefix("bench-")
			defer w.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			b.ResetTimer()
			start := time.Now()
			go func() {
				for _, m := range msgs {
					if f.c.WriteMessage(ctx, m) != nil {
						return
					}
				}
			}()
			for range b.N {
				if _, err := w.Next(ctx); err != nil {
					b.Fatal(err)
				}
			}
			el := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/el.Seconds(), "puts/s")
			b.ReportMetric(float64(s.Stats().Commits), "fsyncs")
		})
	}
}

// BenchmarkParsePut measures decoding one put message (without verification).
func BenchmarkParsePut(b *testing.B) {
	r := record(b, testUser, "chat-1", `{"text":"a typical small chat message","n":1}`)
	msg := AppendMessage(nil, putMsg(r))
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if _, err := ParseMessage(msg, 0); err != nil {
			b.Fatal(err)
		}
	}
}
