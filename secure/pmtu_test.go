package secure

import (
	"sync/atomic"
	"testing"
)

// Path MTU discovery over the in-memory pipe, whose "path" drops every datagram larger
// than a limit: the session finds the largest packet that fits (within the search's
// 16-byte tolerance), keeps DefaultMTU without the option, and keeps it when the
// DatagramConn could not carry the largest probe.
func TestPathMTUDiscovery(t *testing.T) {
	for _, tc := range []struct {
		name       string
		pathLimit  int // largest sealed datagram the path carries; 0: any
		cfg        Config
		lo, hi     uint64 // PacketSize after the transfer
		wantProbes bool
	}{
		{"unlimited path", 0, Config{PathMTUDiscovery: true}, MaxMTU - 16, MaxMTU, true},
		{"1300-byte path", 1300, Config{PathMTUDiscovery: true}, 1300 - PacketOverhead - 16, 1300 - PacketOverhead, true},
		{"option off", 0, Config{}, DefaultMTU, DefaultMTU, false},
		{"no room for probes", 0, Config{PathMTUDiscovery: true, Datagram: DatagramConfig{MaxPayload: 1400}}, DefaultMTU, DefaultMTU, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var largest atomic.Int64
			opts := pipeOptions{tamper: func(_ int, b []byte) [][]byte {
				if tc.pathLimit > 0 && len(b) > tc.pathLimit {
					return nil
				}
				if int64(len(b)) > largest.Load() {
					largest.Store(int64(len(b)))
				}
				return [][]byte{b}
			}}
			p := newPipeSessions(t, opts, tc.cfg)
			// Bulk data until the size is in range (a failing size costs three
			// probes, one an RTT while data flows), at most 16 MiB.
			for i := 0; i < 16; i++ {
				transfer(t, p, 1<<20, nil)
				if got := p.client.Stats().PacketSize; i >= 3 && got >= tc.lo && got <= tc.hi {
					break
				}
			}
			got := p.client.Stats().PacketSize
			if got < tc.lo || got > tc.hi {
				t.Errorf("packet size %d, want %d-%d", got, tc.lo, tc.hi)
			}
			if probed := largest.Load() > DefaultMTU+PacketOverhead; probed != tc.wantProbes {
				t.Errorf("largest datagram delivered: %d bytes; probes wanted: %v", largest.Load(), tc.wantProbes)
			}
		})
	}
}
