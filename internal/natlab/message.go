package natlab

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// Kind is the type of a reflector message.
type Kind byte

// Message kinds.
const (
	KindRequest  Kind = 1 // client to reflector: "what is my address?"
	KindResponse Kind = 2 // reflector to client
	KindHairpin  Kind = 3 // client to its own mapped address (hairpinning test)
)

// Flags ask the reflector to answer from another address (RFC 5780
// CHANGE-REQUEST), which is how filtering behaviour is measured.
type Flags byte

// Request flags.
const (
	FlagChangeIP   Flags = 1 << 0 // answer from the alternate IP
	FlagChangePort Flags = 1 << 1 // answer from the alternate port

	flagsKnown = FlagChangeIP | FlagChangePort
)

// MessageSize is the fixed size of every message, request or response, so
// the reflector never answers with more bytes than it received.
const MessageSize = 30

// messageMagic starts every message; it cannot be mistaken for STUN, whose
// first two bits are 00.
var messageMagic = [2]byte{'n', 'l'}

// Message is one reflector datagram. Layout (big endian, IPv4 only):
//
//	 0      2      3      4                          12
//	+------+------+------+--------------------------+
//	| "nl" | kind | flags| transaction id (8)        |
//	+------+------+------+--------------------------+
//	12                 18                  24                  30
//	+------------------+-------------------+-------------------+
//	| observed ip:port | responder ip:port | other ip:port     |
//	+------------------+-------------------+-------------------+
//
// observed is the source address the reflector saw (the client's mapping),
// responder the address the response was sent from, and other the
// reflector's alternate IP and port (RFC 5780 OTHER-ADDRESS). Each is a
// 4-byte IPv4 address and a 2-byte port; all zero means "absent". Requests
// leave them zero.
type Message struct {
	Kind      Kind
	Flags     Flags
	TxID      uint64
	Observed  netip.AddrPort
	Responder netip.AddrPort
	Other     netip.AddrPort
}

// Append appends the encoded message to b. Addresses that are not IPv4 are
// encoded as absent.
func (m Message) Append(b []byte) []byte {
	b = append(b, messageMagic[0], messageMagic[1], byte(m.Kind), byte(m.Flags))
	b = binary.BigEndian.AppendUint64(b, m.TxID)
	for _, ap := range []netip.AddrPort{m.Observed, m.Responder, m.Other} {
		b = appendAddrPort(b, ap)
	}
	return b
}

func appendAddrPort(b []byte, ap netip.AddrPort) []byte {
	a := ap.Addr().Unmap()
	if !a.Is4() {
		return append(b, 0, 0, 0, 0, 0, 0)
	}
	ip := a.As4()
	b = append(b, ip[:]...)
	return binary.BigEndian.AppendUint16(b, ap.Port())
}

// ParseMessage decodes a message. Anything else on the wire (wrong size,
// magic, kind or flags) is ErrMalformed.
func ParseMessage(b []byte) (Message, error) {
	if len(b) != MessageSize {
		return Message{}, fmt.Errorf("%w: %d bytes, want %d", ErrMalformed, len(b), MessageSize)
	}
	if b[0] != messageMagic[0] || b[1] != messageMagic[1] {
		return Message{}, fmt.Errorf("%w: bad magic %x", ErrMalformed, b[:2])
	}
	m := Message{Kind: Kind(b[2]), Flags: Flags(b[3]), TxID: binary.BigEndian.Uint64(b[4:12])}
	if m.Kind < KindRequest || m.Kind > KindHairpin {
		return Message{}, fmt.Errorf("%w: unknown kind %d", ErrMalformed, m.Kind)
	}
	if m.Flags&^flagsKnown != 0 {
		return Message{}, fmt.Errorf("%w: unknown flags %#x", ErrMalformed, byte(m.Flags))
	}
	m.Observed = parseAddrPort(b[12:18])
	m.Responder = parseAddrPort(b[18:24])
	m.Other = parseAddrPort(b[24:30])
	return m, nil
}

func parseAddrPort(b []byte) netip.AddrPort {
	if [6]byte(b) == [6]byte{} {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[:4])), binary.BigEndian.Uint16(b[4:6]))
}
