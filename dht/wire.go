package dht

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/swarmdb/swarmdb/internal/demux"
)

// Packet tags: the first byte of every DHT datagram. The shared UDP socket
// demultiplexes on this byte alone; internal/demux holds the one table of
// first bytes.
const (
	TagRequest  = demux.TagDHTRequest
	TagResponse = demux.TagDHTResponse
)

// Version is the wire protocol version. A packet with another version is
// dropped and counted; it is never answered, since the sender would not
// understand the answer either.
const Version byte = 1

// MaxPacketSize bounds every DHT datagram we send or accept. It stays below
// the 1280-byte IPv6 minimum MTU minus headers, so no packet is fragmented.
const MaxPacketSize = 1200

// maxValueSize bounds the opaque value field (records, relayed signaling).
const maxValueSize = 1024

// maxCloser is how many closer nodes of the request's family a response
// carries (Kademlia k).
const maxCloser = 20

// maxCrossCloser is how many nodes of another family a response adds for
// a requester that asked for them (RequestOptions.Want); a parser accepts
// maxCloser+maxCrossCloser addresses in all.
const maxCrossCloser = 8

// Command is the operation a request asks for.
type Command uint8

const (
	CmdPing       Command = 0 // empty reply; its Addr is the requester's reflexive address
	CmdFindNode   Command = 1 // Target set; reply carries the closest nodes
	CmdAnnounce   Command = 2 // Target = topic, Token, Value = signed announce
	CmdUnannounce Command = 3 // Target = topic, Token, Value = signed unannounce
	CmdLookup     Command = 4 // Target = topic; reply Value = peer records
	CmdRelay      Command = 5 // Target = KeyTarget(peer), Token, Value = key || payload; forwarded to the peer
	CmdSignal     Command = 6 // relay -> announcer: Value = client addr || payload; reply Value = answer
	CmdNATProbe   Command = 7 // ask for an unsolicited packet from another port or node (filtering check)
	CmdProbeReply Command = 8 // the unsolicited packet a NAT probe asks for
	CmdTURN       Command = 9 // Token; reply Value = TURN offer (turn.go), to verified sources only
)

func (c Command) String() string {
	switch c {
	case CmdPing:
		return "ping"
	case CmdFindNode:
		return "find_node"
	case CmdAnnounce:
		return "announce"
	case CmdUnannounce:
		return "unannounce"
	case CmdLookup:
		return "lookup"
	case CmdRelay:
		return "relay"
	case CmdSignal:
		return "signal"
	case CmdNATProbe:
		return "nat_probe"
	case CmdProbeReply:
		return "probe_reply"
	case CmdTURN:
		return "turn"
	}
	return fmt.Sprintf("command(%d)", uint8(c))
}

// Flag bits say which optional fields follow the fixed header.
const (
	flagID        = 1 << 0
	flagToken     = 1 << 1
	flagTarget    = 1 << 2
	flagValue     = 1 << 3
	flagCloser    = 1 << 4
	flagError     = 1 << 5
	flagTruncated = 1 << 6
	flagPad       = 1 << 7
)

// Message is one DHT request or response.
//
// Byte layout (all integers big-endian):
//
//	0        tag       0x5A request, 0x5B response
//	1        version   1
//	2        command
//	3        flags     bit0 id, bit1 token, bit2 target, bit3 value,
//	                   bit4 closer, bit5 error, bit6 truncated, bit7 pad
//	4..7     tid       transaction id, echoed by the response
//	8..      addr      request: the address it is sent to;
//	                   response: the address the request came from
//	                   (1-byte length 4|16, the IP, 2-byte port)
//	[32]     id        sender's node id (persistent nodes only)
//	[32]     token     write token the storing node handed out
//	[32]     target    key the command is about
//	[1]      error     ErrorCode (responses)
//	[1+n×a]  closer    count, then addresses as above (responses)
//	[2+n]    value     length, then bytes
//	[2+n]    pad       length, then zero bytes (requests that expect a
//	                   large answer pad themselves, see maxReplySize)
type Message struct {
	Response  bool
	Command   Command
	TID       uint32
	Addr      netip.AddrPort
	ID        *ID
	Token     *ID
	Target    *ID
	Error     ErrorCode
	Closer    []netip.AddrPort
	Truncated bool
	Value     []byte
	Pad       int
}

// AppendMessage appends the encoding of m to b.
func AppendMessage(b []byte, m *Message) []byte {
	tag := TagRequest
	if m.Response {
		tag = TagResponse
	}
	var flags byte
	if m.ID != nil {
		flags |= flagID
	}
	if m.Token != nil {
		flags |= flagToken
	}
	if m.Target != nil {
		flags |= flagTarget
	}
	if m.Value != nil {
		flags |= flagValue
	}
	if len(m.Closer) > 0 {
		flags |= flagCloser
	}
	if m.Error != CodeOK {
		flags |= flagError
	}
	if m.Truncated {
		flags |= flagTruncated
	}
	if m.Pad > 0 {
		flags |= flagPad
	}
	b = append(b, tag, Version, byte(m.Command), flags)
	b = binary.BigEndian.AppendUint32(b, m.TID)
	b = AppendAddr(b, m.Addr)
	if m.ID != nil {
		b = append(b, m.ID[:]...)
	}
	if m.Token != nil {
		b = append(b, m.Token[:]...)
	}
	if m.Target != nil {
		b = append(b, m.Target[:]...)
	}
	if m.Error != CodeOK {
		b = append(b, byte(m.Error))
	}
	if len(m.Closer) > 0 {
		b = append(b, byte(len(m.Closer)))
		for _, a := range m.Closer {
			b = AppendAddr(b, a)
		}
	}
	if m.Value != nil {
		b = binary.BigEndian.AppendUint16(b, uint16(len(m.Value)))
		b = append(b, m.Value...)
	}
	if m.Pad > 0 {
		b = binary.BigEndian.AppendUint16(b, uint16(m.Pad))
		b = append(b, make([]byte, m.Pad)...)
	}
	return b
}

// ParseMessage decodes one DHT datagram. The message shares no memory with
// b, so the read loop can reuse its buffer.
func ParseMessage(b []byte) (*Message, error) {
	if len(b) < 8 {
		return nil, ErrShortPacket
	}
	if len(b) > MaxPacketSize {
		return nil, ErrTooLarge
	}
	m := &Message{}
	switch b[0] {
	case TagRequest:
	case TagResponse:
		m.Response = true
	default:
		return nil, ErrNotDHT
	}
	if b[1] != Version {
		return nil, ErrBadVersion
	}
	m.Command = Command(b[2])
	flags := b[3]
	m.TID = binary.BigEndian.Uint32(b[4:8])
	r := reader{b: b[8:]}
	m.Addr = r.addr()
	if flags&flagID != 0 {
		m.ID = r.id()
	}
	if flags&flagToken != 0 {
		m.Token = r.id()
	}
	if flags&flagTarget != 0 {
		m.Target = r.id()
	}
	if flags&flagError != 0 {
		m.Error = ErrorCode(r.byte())
		if m.Error == CodeOK && r.err == nil {
			r.err = fmt.Errorf("%w: error flag with code 0", ErrBadAddress)
		}
	}
	if flags&flagCloser != 0 {
		n := int(r.byte())
		if n == 0 || n > maxCloser+maxCrossCloser {
			r.fail(ErrTooLarge)
		}
		for i := 0; i < n && r.err == nil; i++ {
			m.Closer = append(m.Closer, r.addr())
		}
	}
	m.Truncated = flags&flagTruncated != 0
	if flags&flagValue != 0 {
		if v := r.bytes(maxValueSize); r.err == nil {
			m.Value = append([]byte{}, v...)
		}
	}
	if flags&flagPad != 0 {
		pad := r.bytes(MaxPacketSize)
		m.Pad = len(pad)
	}
	if r.err != nil {
		return nil, r.err
	}
	if len(r.b) != 0 {
		return nil, ErrTrailingData
	}
	return m, nil
}

// RequestOptions is what a requester says about itself in the Value of a
// PING, FIND_NODE or LOOKUP request.
//
// Byte layout:
//
//	0  level  LookupExtVersion (1): the requester reads record extensions;
//	          0: it does not
//	1  want   bit 0 IPv4, bit 1 IPv6: the families whose nodes the
//	          requester wants in Closer; the byte is left out when it
//	          wants only the family the request travels over
//
// A LOOKUP from before IPv6 carries the level byte alone; PING and
// FIND_NODE carried no value, and nodes from before IPv6 ignore one there
// and read only the level of a LOOKUP, so they answer as they always did:
// with nodes of their one family. Bytes after the want byte are reserved
// for later options: a parser ignores them.
type RequestOptions struct {
	// Ext: the requester reads record extensions (LOOKUP).
	Ext bool
	// Want is the family mask of the nodes wanted in Closer; zero means
	// the family of the socket the request arrives on.
	Want byte
}

// wantAll is every family's bit.
const wantAll = 1<<numFamilies - 1

// AppendRequestOptions appends the encoding of o to b: nothing for the
// zero value, the level byte alone without Want.
func AppendRequestOptions(b []byte, o RequestOptions) []byte {
	var level byte
	if o.Ext {
		level = LookupExtVersion
	}
	switch {
	case o.Want != 0:
		return append(b, level, o.Want&wantAll)
	case o.Ext:
		return append(b, level)
	}
	return b
}

// ParseRequestOptions decodes a request's Value. Any value parses: unknown
// want bits and bytes after the want byte are ignored.
func ParseRequestOptions(b []byte) RequestOptions {
	var o RequestOptions
	if len(b) > 0 {
		o.Ext = b[0] >= LookupExtVersion
	}
	if len(b) > 1 {
		o.Want = b[1] & wantAll
	}
	return o
}

// AppendAddr appends the wire form of an address: a length byte (4 or 16),
// the IP and the port. IPv4-mapped IPv6 addresses are written as IPv4.
func AppendAddr(b []byte, a netip.AddrPort) []byte {
	ip := a.Addr().Unmap()
	if !ip.IsValid() {
		return append(b, 0)
	}
	s := ip.AsSlice()
	b = append(b, byte(len(s)))
	b = append(b, s...)
	return binary.BigEndian.AppendUint16(b, a.Port())
}

// reader decodes fields in order and remembers the first error, so the
// parser reads as a list of fields rather than a ladder of checks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
	r.b = nil
}

func (r *reader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if len(r.b) < n {
		r.fail(ErrShortPacket)
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) byte() byte {
	v := r.take(1)
	if v == nil {
		return 0
	}
	return v[0]
}

func (r *reader) id() *ID {
	v := r.take(IDSize)
	if v == nil {
		return nil
	}
	var id ID
	copy(id[:], v)
	return &id
}

func (r *reader) addr() netip.AddrPort {
	n := int(r.byte())
	if r.err != nil {
		return netip.AddrPort{}
	}
	switch n {
	case 0:
		return netip.AddrPort{}
	case 4, 16:
	default:
		r.fail(ErrBadAddress)
		return netip.AddrPort{}
	}
	v := r.take(n + 2)
	if v == nil {
		return netip.AddrPort{}
	}
	ip, _ := netip.AddrFromSlice(v[:n])
	if ip.Is4In6() {
		// AppendAddr sends IPv4 in its 4-byte form; a mapped form is a
		// second spelling of the same address, which would let one
		// address pass checks (and dedup) as two.
		r.fail(ErrBadAddress)
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ip, binary.BigEndian.Uint16(v[n:]))
}

func (r *reader) bytes(max int) []byte {
	l := r.take(2)
	if l == nil {
		return nil
	}
	n := int(binary.BigEndian.Uint16(l))
	if n > max {
		r.fail(ErrTooLarge)
		return nil
	}
	return r.take(n)
}
