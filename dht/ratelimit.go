package dht

import (
	"net/netip"
	"time"
)

// rateLimiter is a token bucket per source IP. Not safe for concurrent use;
// the node guards it. The map is bounded: when it is full, buckets that
// have refilled completely (idle sources) are dropped first.
type rateLimiter struct {
	rate       float64 // tokens per second
	burst      float64
	maxSources int
	buckets    map[netip.Addr]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newRateLimiter(rate float64, burst, maxSources int) *rateLimiter {
	return &rateLimiter{rate: rate, burst: float64(burst), maxSources: maxSources, buckets: make(map[netip.Addr]*bucket)}
}

// allow takes one token from ip's bucket and reports whether there was one.
func (r *rateLimiter) allow(ip netip.Addr, now time.Time) bool {
	if r.rate <= 0 {
		return true
	}
	b := r.buckets[ip]
	if b == nil {
		if len(r.buckets) >= r.maxSources {
			r.prune(now)
			if len(r.buckets) >= r.maxSources {
				return false // under a spoofed-source flood, new sources wait
			}
		}
		b = &bucket{tokens: r.burst, last: now}
		r.buckets[ip] = b
	}
	b.tokens = min(r.burst, b.tokens+now.Sub(b.last).Seconds()*r.rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

func (r *rateLimiter) prune(now time.Time) {
	for ip, b := range r.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*r.rate >= r.burst {
			delete(r.buckets, ip)
		}
	}
}
