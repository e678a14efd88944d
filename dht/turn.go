package dht

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"
)

// TURN credentials over the DHT. A public node that serves a TURN relay
// (turnserver.Server) answers CmdTURN with an offer: its relay address
// and a short-lived username and password (the TURN REST API scheme). The
// DHT only carries the offer; the hook that makes it lives with the relay,
// so dht imports nothing of pion/turn.

// maxTURNField bounds the username and password of an offer: a length byte.
const maxTURNField = 255

// TURNOffer is a TURN relay a node offers and the credential to use it.
//
// Byte layout (the Value of a CmdTURN reply; integers big-endian):
//
//	addr      relay server address, as AppendAddr (length 4|16, IP, port)
//	8         expires, unix seconds
//	1+n       username, length then bytes (at most 255)
//	1+n       password, length then bytes (at most 255)
type TURNOffer struct {
	Server   netip.AddrPort // UDP address of the TURN server
	Username string
	Password string
	Expires  time.Time // after it the server refuses new allocations
}

// URL is the ICE server URL of the offer: "turn:IP:PORT?transport=udp".
func (o TURNOffer) URL() string { return "turn:" + o.Server.String() + "?transport=udp" }

// valid reports whether o can be encoded and used.
func (o TURNOffer) valid() bool {
	return o.Server.IsValid() && o.Server.Port() != 0 && o.Username != "" &&
		len(o.Username) <= maxTURNField && len(o.Password) <= maxTURNField
}

// AppendTURNOffer appends the encoding of o to b. Username and password
// longer than 255 bytes are cut; the handler never sends such an offer.
func AppendTURNOffer(b []byte, o TURNOffer) []byte {
	b = AppendAddr(b, o.Server)
	b = binary.BigEndian.AppendUint64(b, uint64(o.Expires.Unix()))
	for _, s := range []string{o.Username, o.Password} {
		s = s[:min(len(s), maxTURNField)]
		b = append(b, byte(len(s)))
		b = append(b, s...)
	}
	return b
}

// ParseTURNOffer decodes an offer. It shares no memory with b.
func ParseTURNOffer(b []byte) (TURNOffer, error) {
	r := reader{b: b}
	var o TURNOffer
	o.Server = r.addr()
	if r.err == nil && (!o.Server.IsValid() || o.Server.Port() == 0) {
		r.fail(ErrBadAddress)
	}
	if v := r.take(8); v != nil {
		o.Expires = time.Unix(int64(binary.BigEndian.Uint64(v)), 0)
	}
	o.Username = string(r.take(int(r.byte())))
	o.Password = string(r.take(int(r.byte())))
	if r.err == nil && o.Username == "" {
		r.fail(ErrShortPacket)
	}
	if r.err != nil {
		return TURNOffer{}, fmt.Errorf("dht: turn offer: %w", r.err)
	}
	if len(r.b) != 0 {
		return TURNOffer{}, fmt.Errorf("dht: turn offer: %w", ErrTrailingData)
	}
	return o, nil
}

// TURNHandler makes a TURN offer for the requester (its address as this
// node sees it), or returns false to make none. It runs on the read loop
// and must return at once (issuing a credential is one HMAC).
type TURNHandler func(requester netip.AddrPort) (TURNOffer, bool)

// handleTURN answers CmdTURN. Only a source that proved its address with a
// token gets an offer: the offer is larger than the request, and the
// credential is meant for the requester, not for a spoofed address.
func (n *Node) handleTURN(m *Message, src netip.AddrPort, verified bool, reply *Message) {
	if n.cfg.OnTURN == nil {
		reply.Error = CodeUnknownCommand
		return
	}
	if !verified {
		n.ctr.refusedBadToken.Add(1)
		reply.Error = CodeBadToken
		return
	}
	o, ok := n.cfg.OnTURN(src)
	if !ok || !o.valid() {
		reply.Error = CodeRateLimited
		return
	}
	reply.Value = AppendTURNOffer(nil, o)
}

// TURNOffer asks the node at addr for a TURN relay offer. It fetches a
// token with a ping first unless one is cached (and again once if the
// cached one went stale). ErrNoTURN means the node serves none.
func (n *Node) TURNOffer(ctx context.Context, addr netip.AddrPort) (TURNOffer, error) {
	tok := n.cachedTokenFor(addr)
	for attempt := 0; ; attempt++ {
		if tok == nil {
			reply, err := n.request(ctx, addr, &Message{Command: CmdPing, Pad: 64})
			if err != nil {
				return TURNOffer{}, fmt.Errorf("dht: turn offer from %s: %w", addr, err)
			}
			if tok = reply.Token; tok == nil {
				return TURNOffer{}, fmt.Errorf("dht: turn offer from %s: %w", addr, ErrBadToken)
			}
		}
		reply, err := n.request(ctx, addr, &Message{Command: CmdTURN, Token: tok})
		if err != nil {
			return TURNOffer{}, fmt.Errorf("dht: turn offer from %s: %w", addr, err)
		}
		switch reply.Error {
		case CodeOK:
			o, err := ParseTURNOffer(reply.Value)
			if err != nil {
				return TURNOffer{}, fmt.Errorf("dht: turn offer from %s: %w", addr, err)
			}
			return o, nil
		case CodeBadToken:
			if attempt == 0 {
				tok = nil // stale cached token: ping for a fresh one
				continue
			}
		case CodeUnknownCommand, CodeRateLimited:
			return TURNOffer{}, fmt.Errorf("dht: turn offer from %s: %w (%s)", addr, ErrNoTURN, reply.Error)
		}
		return TURNOffer{}, fmt.Errorf("dht: turn offer from %s: %w (%s)", addr, reply.Error.asError(), reply.Error)
	}
}
