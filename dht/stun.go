package dht

import (
	"net"
	"net/netip"
	"time"

	"github.com/pion/stun/v2"
)

// answerSTUN answers a plain RFC 5389 Binding request with the sender's
// address in XOR-MAPPED-ADDRESS, so every DHT node is a STUN server on its
// DHT port. It reports whether b was such a request. Binding requests that
// carry USERNAME are ICE connectivity checks (RFC 8445 §7.2.2) and belong
// to the ICE agent, so they are left alone, as are STUN responses.
//
// A response (32 bytes, or 40 with FINGERPRINT) is larger than the
// smallest request (20 bytes): STUN's own 1.6× ceiling, which no spoofed
// flood can raise since nothing else is echoed.
func (n *Node) answerSTUN(b []byte, src netip.AddrPort) bool {
	if !stun.IsMessage(b) {
		return false
	}
	req := &stun.Message{Raw: append([]byte(nil), b...)}
	if err := req.Decode(); err != nil || req.Type != stun.BindingRequest || req.Contains(stun.AttrUsername) {
		return false
	}
	if req.Contains(stun.AttrFingerprint) && stun.Fingerprint.Check(req) != nil {
		n.ctr.droppedMalformed.Add(1)
		return true
	}
	setters := []stun.Setter{
		stun.NewTransactionIDSetter(req.TransactionID),
		stun.BindingSuccess,
		&stun.XORMappedAddress{IP: net.IP(src.Addr().AsSlice()), Port: int(src.Port())},
	}
	if req.Contains(stun.AttrFingerprint) {
		setters = append(setters, stun.Fingerprint)
	}
	resp, err := stun.Build(setters...)
	if err != nil {
		return true
	}
	n.mu.Lock()
	allowed := n.limiter.allow(src.Addr(), time.Now())
	n.mu.Unlock()
	if !allowed {
		n.ctr.droppedRateLimited.Add(1)
		return true
	}
	if _, err := n.stackFor(src).conn.WriteTo(resp.Raw, net.UDPAddrFromAddrPort(src)); err == nil {
		n.ctr.stunAnswered.Add(1)
		n.ctr.packetsOut.Add(1)
	}
	return true
}
