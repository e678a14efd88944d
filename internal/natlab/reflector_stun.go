package natlab

import (
	"net"
	"net/netip"

	"github.com/pion/stun/v2"
)

// CHANGE-REQUEST flags (RFC 5780 §7.2, from RFC 3489).
const (
	stunChangeIP   = 0x04
	stunChangePort = 0x02
)

// answerSTUN answers a STUN Binding request that arrived on socket
// [ip][port] the RFC 3489/5780 way: XOR-MAPPED-ADDRESS and MAPPED-ADDRESS
// of the sender, from the other IP and/or port when a CHANGE-REQUEST asks
// for it. miniupnpd needs such a server: it learns its external address
// by STUN, and enables port forwarding only when all four of its tests
// (no change, change port, change IP, both) are answered, which proves that
// nothing upstream filters (see Router.StartMiniUPnPd). It reports whether
// b was a STUN request.
func (r *Reflector) answerSTUN(b []byte, ip, port int, from *net.UDPAddr) bool {
	if !stun.IsMessage(b) {
		return false
	}
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if err := m.Decode(); err != nil || m.Type != stun.BindingRequest {
		return true
	}
	ri, rp := ip, port
	if v, err := m.Get(stun.AttrChangeRequest); err == nil && len(v) == 4 {
		if v[3]&stunChangeIP != 0 {
			ri = 1 - ip
		}
		if v[3]&stunChangePort != 0 {
			rp = 1 - port
		}
	}
	src := from.AddrPort()
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	resp, err := stun.Build(stun.NewTransactionIDSetter(m.TransactionID), stun.BindingSuccess,
		&stun.XORMappedAddress{IP: src.Addr().AsSlice(), Port: int(src.Port())},
		&stun.MappedAddress{IP: src.Addr().AsSlice(), Port: int(src.Port())})
	if err != nil {
		return true
	}
	if _, err := r.conns[ri][rp].WriteTo(resp.Raw, from); err != nil {
		r.cfg.Logger.Debug("reflector stun write failed", "addr", from, "err", err)
	}
	return true
}
