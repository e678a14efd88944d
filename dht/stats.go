package dht

import (
	"net/netip"
	"sync/atomic"
)

// Stats is a snapshot of a node's state and counters.
type Stats struct {
	ID           ID
	Persistent   bool
	LocalAddr    netip.AddrPort
	PublicAddr   netip.AddrPort
	RoutingTable int
	Records      int
	Topics       int
	// Families is the node's state in each family it has a socket for.
	Families []FamilyState

	PacketsIn, PacketsOut   uint64
	RequestsIn, RepliesIn   uint64
	Timeouts                uint64 // requests no reply came to, after all their tries
	Resends                 uint64 // tries sent again because no reply came soon enough
	JoinRetries             uint64 // own-id lookups of a join repeated in the background: it left the routing table below K (lookAgain)
	STUNAnswered            uint64
	RelaysForwarded         uint64
	SignalsAnswered         uint64
	AnnouncesStored         uint64
	OtherPackets            uint64 // handed to the STUN, Birthday and Sealed handlers (Node.Handle)
	KRPCPackets             uint64 // handed to the KRPC handler (mainline DHT)
	DroppedMalformed        uint64 // truncated, oversized, garbage, or of a class with no handler
	DroppedBadVersion       uint64
	DroppedRateLimited      uint64
	DroppedUnexpectedReply  uint64 // unknown tid or wrong source
	RefusedBadToken         uint64
	RefusedBadSignature     uint64
	RefusedBadRecord        uint64
	IgnoredBadID            uint64 // id does not match the source address
	RepliesTruncated        uint64 // trimmed to the request size (unverified source)
	ProbeRepliesReceived    uint64
	ProbeRepliesUnsolicited uint64 // from an IP we never sent to
}

// counters are updated without the node lock.
type counters struct {
	packetsIn, packetsOut   atomic.Uint64
	requestsIn, repliesIn   atomic.Uint64
	timeouts                atomic.Uint64
	resends                 atomic.Uint64
	joinRetries             atomic.Uint64
	stunAnswered            atomic.Uint64
	relaysForwarded         atomic.Uint64
	signalsAnswered         atomic.Uint64
	announcesStored         atomic.Uint64
	otherPackets            atomic.Uint64
	krpcPackets             atomic.Uint64
	droppedMalformed        atomic.Uint64
	droppedBadVersion       atomic.Uint64
	droppedRateLimited      atomic.Uint64
	droppedUnexpectedReply  atomic.Uint64
	refusedBadToken         atomic.Uint64
	refusedBadSignature     atomic.Uint64
	refusedBadRecord        atomic.Uint64
	ignoredBadID            atomic.Uint64
	repliesTruncated        atomic.Uint64
	probeRepliesReceived    atomic.Uint64
	probeRepliesUnsolicited atomic.Uint64
}

func (c *counters) fill(s *Stats) {
	s.PacketsIn = c.packetsIn.Load()
	s.PacketsOut = c.packetsOut.Load()
	s.RequestsIn = c.requestsIn.Load()
	s.RepliesIn = c.repliesIn.Load()
	s.Timeouts = c.timeouts.Load()
	s.Resends = c.resends.Load()
	s.JoinRetries = c.joinRetries.Load()
	s.STUNAnswered = c.stunAnswered.Load()
	s.RelaysForwarded = c.relaysForwarded.Load()
	s.SignalsAnswered = c.signalsAnswered.Load()
	s.AnnouncesStored = c.announcesStored.Load()
	s.OtherPackets = c.otherPackets.Load()
	s.KRPCPackets = c.krpcPackets.Load()
	s.DroppedMalformed = c.droppedMalformed.Load()
	s.DroppedBadVersion = c.droppedBadVersion.Load()
	s.DroppedRateLimited = c.droppedRateLimited.Load()
	s.DroppedUnexpectedReply = c.droppedUnexpectedReply.Load()
	s.RefusedBadToken = c.refusedBadToken.Load()
	s.RefusedBadSignature = c.refusedBadSignature.Load()
	s.RefusedBadRecord = c.refusedBadRecord.Load()
	s.IgnoredBadID = c.ignoredBadID.Load()
	s.RepliesTruncated = c.repliesTruncated.Load()
	s.ProbeRepliesReceived = c.probeRepliesReceived.Load()
	s.ProbeRepliesUnsolicited = c.probeRepliesUnsolicited.Load()
}
