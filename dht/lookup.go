package dht

import (
	"net/netip"
	"slices"
)

// lookup is the state machine of one iterative Kademlia lookup: it knows
// which nodes to ask next and when the search has converged, and does no
// I/O. The caller sends the requests it returns from next and feeds the
// outcomes back through reply and fail.
//
// Convergence follows Kademlia §2.3: the lookup ends when the k closest
// nodes that have not failed have all replied. Up to alpha requests are in
// flight at once (dht-rpc uses 10, the paper 3; more in flight hides the
// 1 s timeouts of dead nodes).
type lookup struct {
	target   ID
	k, alpha int
	cands    []*candidate // sorted by distance to target
	byAddr   map[netip.AddrPort]*candidate
	inflight int
}

type candState uint8

const (
	candFresh candState = iota
	candInflight
	candReplied
	candFailed
)

type candidate struct {
	addr  netip.AddrPort
	id    ID
	state candState
	hop   int // sequential requests needed to learn of this node
	reply *Message
}

// maxCandidates bounds the memory of one lookup; far candidates beyond it
// can never be among the k closest anyway once k have replied.
const maxCandidates = 200

func newLookup(target ID, k, alpha int, seeds []netip.AddrPort) *lookup {
	l := &lookup{target: target, k: k, alpha: alpha, byAddr: make(map[netip.AddrPort]*candidate)}
	for _, a := range seeds {
		l.add(a, 0)
	}
	return l
}

func (l *lookup) add(addr netip.AddrPort, hop int) {
	if !addr.IsValid() {
		return
	}
	if c, ok := l.byAddr[addr]; ok {
		c.hop = min(c.hop, hop)
		return
	}
	c := &candidate{addr: addr, id: NodeID(addr), hop: hop}
	i, _ := slices.BinarySearchFunc(l.cands, c, func(a, b *candidate) int {
		if Closer(l.target, a.id, b.id) {
			return -1
		}
		if Closer(l.target, b.id, a.id) {
			return 1
		}
		return 0
	})
	if i >= maxCandidates {
		return
	}
	l.cands = slices.Insert(l.cands, i, c)
	l.byAddr[addr] = c
	if len(l.cands) > maxCandidates {
		drop := l.cands[maxCandidates]
		if drop.state != candInflight {
			delete(l.byAddr, drop.addr)
			l.cands = l.cands[:maxCandidates]
		}
	}
}

// next returns the candidates to query now and marks them in flight.
func (l *lookup) next() []*candidate {
	var out []*candidate
	live := 0
	for _, c := range l.cands {
		if live >= l.k || l.inflight >= l.alpha {
			break
		}
		if c.state == candFailed {
			continue
		}
		live++
		if c.state == candFresh {
			c.state = candInflight
			l.inflight++
			out = append(out, c)
		}
	}
	return out
}

// reply records a successful response from addr and the closer nodes it
// named. self is excluded by the caller.
func (l *lookup) reply(addr netip.AddrPort, m *Message) {
	c := l.byAddr[addr]
	if c == nil || c.state != candInflight {
		return
	}
	c.state = candReplied
	c.reply = m
	l.inflight--
	for _, a := range m.Closer {
		l.add(a, c.hop+1)
	}
}

// fail records that addr did not answer.
func (l *lookup) fail(addr netip.AddrPort) {
	c := l.byAddr[addr]
	if c == nil || c.state != candInflight {
		return
	}
	c.state = candFailed
	l.inflight--
}

// done reports whether the lookup converged: nothing in flight and the k
// closest live candidates have all replied.
func (l *lookup) done() bool {
	if l.inflight > 0 {
		return false
	}
	live := 0
	for _, c := range l.cands {
		if live >= l.k {
			break
		}
		switch c.state {
		case candFailed:
			continue
		case candFresh:
			return false
		}
		live++
	}
	return true
}

// closest returns the replied candidates, nearest first, at most k.
func (l *lookup) closest() []*candidate {
	var out []*candidate
	for _, c := range l.cands {
		if c.state == candReplied {
			out = append(out, c)
			if len(out) == l.k {
				break
			}
		}
	}
	return out
}

// hops is the number of sequential request rounds it took to find the
// closest replying node: 1 when a seed was already the closest.
func (l *lookup) hops() int {
	for _, c := range l.cands {
		if c.state == candReplied {
			return c.hop + 1
		}
	}
	return 0
}
