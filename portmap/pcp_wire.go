package portmap

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// The PCP wire format (RFC 6887): the parts a MAP client needs, plus
// ANNOUNCE, which a client sends to read the server's epoch. Everything is
// big endian; every message is a multiple of 4 bytes and at most 1100.

// PCPVersion is the version byte of every PCP message (RFC 6887 §7).
// NAT-PMP (RFC 6886) uses 0 in the same position, which is how a PCP client
// recognises a NAT-PMP-only server (RFC 6887 §9).
const PCPVersion = 2

// PCPPort is the UDP port a PCP (and NAT-PMP) server listens on.
const PCPPort = 5351

// Sizes of the message parts.
const (
	pcpHeaderSize  = 24
	pcpMapSize     = 36
	pcpNonceSize   = 12
	pcpMaxSize     = 1100 // RFC 6887 §7: the largest PCP message
	pcpOptionHdr   = 4
	pcpResponseBit = 0x80
)

// Opcode is a PCP operation.
type Opcode byte

// The opcodes a MAP client uses (RFC 6887 §7.1, §11, §14.1).
const (
	OpAnnounce Opcode = 0
	OpMap      Opcode = 1
	OpPeer     Opcode = 2
)

// ResultCode is a PCP response's verdict (RFC 6887 §7.4).
type ResultCode byte

// Result codes.
const (
	ResultSuccess               ResultCode = 0
	ResultUnsuppVersion         ResultCode = 1
	ResultNotAuthorized         ResultCode = 2
	ResultMalformedRequest      ResultCode = 3
	ResultUnsuppOpcode          ResultCode = 4
	ResultUnsuppOption          ResultCode = 5
	ResultMalformedOption       ResultCode = 6
	ResultNetworkFailure        ResultCode = 7
	ResultNoResources           ResultCode = 8
	ResultUnsuppProtocol        ResultCode = 9
	ResultUserExQuota           ResultCode = 10
	ResultCannotProvideExternal ResultCode = 11
	ResultAddressMismatch       ResultCode = 12
	ResultExcessiveRemotePeers  ResultCode = 13
)

func (r ResultCode) String() string {
	names := [...]string{"SUCCESS", "UNSUPP_VERSION", "NOT_AUTHORIZED", "MALFORMED_REQUEST", "UNSUPP_OPCODE",
		"UNSUPP_OPTION", "MALFORMED_OPTION", "NETWORK_FAILURE", "NO_RESOURCES", "UNSUPP_PROTOCOL",
		"USER_EX_QUOTA", "CANNOT_PROVIDE_EXTERNAL", "ADDRESS_MISMATCH", "EXCESSIVE_REMOTE_PEERS"}
	if int(r) < len(names) {
		return names[r]
	}
	return fmt.Sprintf("result(%d)", byte(r))
}

// IANA protocol numbers a MAP request names.
const (
	ProtoTCP byte = 6
	ProtoUDP byte = 17
)

// MapPayload is the MAP opcode's body, the same in requests and responses
// (RFC 6887 §11.1). Layout (36 bytes):
//
//	 0                                    12       13        16
//	+-------------------------------------+--------+---------+
//	| mapping nonce (96 bits)             | proto  | reserved|
//	+-------------------------------------+--------+---------+
//	16              18              20                        36
//	+---------------+---------------+--------------------------+
//	| internal port | external port | external IP (128 bits)   |
//	+---------------+---------------+--------------------------+
//
// In a request the external port and IP are suggestions (zero: none); in a
// response they are what the server assigned. An IPv4 address travels in
// its IPv4-mapped IPv6 form (::ffff:a.b.c.d, RFC 6887 §5).
type MapPayload struct {
	Nonce        [pcpNonceSize]byte
	Protocol     byte
	InternalPort uint16
	ExternalPort uint16
	ExternalIP   netip.Addr // 0.0.0.0: an IPv4 mapping, no suggestion
}

// PCPRequest is a PCP request (RFC 6887 §7.1). Header layout (24 bytes):
//
//	 0        1          2          4                 8                    24
//	+--------+-+--------+----------+-----------------+--------------------+
//	| version|R| opcode | reserved | lifetime (u32)  | client IP (128)    |
//	+--------+-+--------+----------+-----------------+--------------------+
//
// R is 0 in requests. Map is set for OpMap and nil for OpAnnounce. Options
// are neither sent nor accepted in requests here.
type PCPRequest struct {
	Opcode   Opcode
	Lifetime uint32 // seconds; 0 deletes a mapping
	ClientIP netip.Addr
	Map      *MapPayload
}

// PCPResponse is a PCP response (RFC 6887 §7.2). Header layout (24 bytes):
//
//	 0        1          2          3        4                8            12          24
//	+--------+-+--------+----------+--------+----------------+------------+-----------+
//	| version|R| opcode | reserved | result | lifetime (u32) | epoch (u32)| reserved  |
//	+--------+-+--------+----------+--------+----------------+------------+-----------+
//
// R is 1. Map is set when the opcode is OpMap and the payload is present
// (a server may omit it from an error response to a request it could not
// parse, RFC 6887 §7.2). Options after the payload are checked for shape
// and skipped; OptionCount says how many there were.
type PCPResponse struct {
	Opcode      Opcode
	Result      ResultCode
	Lifetime    uint32
	Epoch       uint32 // seconds since the server's state began (RFC 6887 §8.5)
	Map         *MapPayload
	OptionCount int
}

// AppendPCPRequest appends the encoding of r to b.
func AppendPCPRequest(b []byte, r *PCPRequest) []byte {
	b = append(b, PCPVersion, byte(r.Opcode)&^pcpResponseBit, 0, 0)
	b = binary.BigEndian.AppendUint32(b, r.Lifetime)
	b = appendIP(b, r.ClientIP)
	if r.Map != nil {
		b = appendMap(b, r.Map)
	}
	return b
}

// ParsePCPRequest decodes a request made by AppendPCPRequest (a server's
// view; the tests' fake router uses it).
func ParsePCPRequest(b []byte) (*PCPRequest, error) {
	if err := checkPCPShape(b); err != nil {
		return nil, err
	}
	if b[1]&pcpResponseBit != 0 {
		return nil, fmt.Errorf("%w: response bit set in a request", ErrMalformed)
	}
	r := &PCPRequest{Opcode: Opcode(b[1]), Lifetime: binary.BigEndian.Uint32(b[4:8])}
	r.ClientIP = parseIP(b[8:24])
	rest := b[pcpHeaderSize:]
	switch r.Opcode {
	case OpAnnounce:
	case OpMap:
		if len(rest) < pcpMapSize {
			return nil, fmt.Errorf("%w: MAP request of %d bytes", ErrMalformed, len(b))
		}
		r.Map = parseMap(rest[:pcpMapSize])
		rest = rest[pcpMapSize:]
	default:
		return nil, fmt.Errorf("%w: opcode %d", ErrMalformed, r.Opcode)
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%w: %d bytes of options in a request", ErrMalformed, len(rest))
	}
	return r, nil
}

// AppendPCPResponse appends the encoding of r to b (the tests' fake router
// uses it; options are never written).
func AppendPCPResponse(b []byte, r *PCPResponse) []byte {
	b = append(b, PCPVersion, byte(r.Opcode)|pcpResponseBit, 0, byte(r.Result))
	b = binary.BigEndian.AppendUint32(b, r.Lifetime)
	b = binary.BigEndian.AppendUint32(b, r.Epoch)
	b = append(b, make([]byte, 12)...)
	if r.Map != nil {
		b = appendMap(b, r.Map)
	}
	return b
}

// ParsePCPResponse decodes a PCP response. A NAT-PMP server answers a PCP
// request with a version-0 message (RFC 6887 §9, RFC 6886 §3.5): that is
// ErrNATPMPServer, so the caller can switch protocols.
func ParsePCPResponse(b []byte) (*PCPResponse, error) {
	if len(b) >= 2 && b[0] == 0 {
		return nil, ErrNATPMPServer
	}
	if err := checkPCPShape(b); err != nil {
		return nil, err
	}
	if b[1]&pcpResponseBit == 0 {
		return nil, fmt.Errorf("%w: response bit clear", ErrMalformed)
	}
	r := &PCPResponse{
		Opcode:   Opcode(b[1] &^ pcpResponseBit),
		Result:   ResultCode(b[3]),
		Lifetime: binary.BigEndian.Uint32(b[4:8]),
		Epoch:    binary.BigEndian.Uint32(b[8:12]),
	}
	rest := b[pcpHeaderSize:]
	if r.Opcode == OpMap && len(rest) > 0 {
		if len(rest) < pcpMapSize {
			return nil, fmt.Errorf("%w: MAP response of %d bytes", ErrMalformed, len(b))
		}
		r.Map = parseMap(rest[:pcpMapSize])
		rest = rest[pcpMapSize:]
	} else if r.Opcode != OpMap && r.Opcode != OpAnnounce && r.Result == ResultSuccess {
		return nil, fmt.Errorf("%w: successful response to opcode %d", ErrMalformed, r.Opcode)
	}
	// Options (RFC 6887 §7.3): code, reserved, 16-bit length, data padded
	// to a multiple of 4.
	for len(rest) > 0 {
		if len(rest) < pcpOptionHdr {
			return nil, fmt.Errorf("%w: truncated option header", ErrMalformed)
		}
		n := int(binary.BigEndian.Uint16(rest[2:4]))
		padded := (n + 3) &^ 3
		if len(rest)-pcpOptionHdr < padded {
			return nil, fmt.Errorf("%w: option %d of %d bytes overruns the message", ErrMalformed, rest[0], n)
		}
		rest = rest[pcpOptionHdr+padded:]
		r.OptionCount++
	}
	if r.Opcode == OpMap && r.Result == ResultSuccess && r.Map == nil {
		return nil, fmt.Errorf("%w: successful MAP response without a payload", ErrMalformed)
	}
	return r, nil
}

// checkPCPShape checks what every PCP message shares: version, size.
func checkPCPShape(b []byte) error {
	switch {
	case len(b) < pcpHeaderSize:
		return fmt.Errorf("%w: %d bytes", ErrMalformed, len(b))
	case len(b) > pcpMaxSize || len(b)%4 != 0:
		return fmt.Errorf("%w: size %d (want a multiple of 4, at most %d)", ErrMalformed, len(b), pcpMaxSize)
	case b[0] != PCPVersion:
		return fmt.Errorf("%w: version %d", ErrMalformed, b[0])
	}
	return nil
}

func appendMap(b []byte, m *MapPayload) []byte {
	b = append(b, m.Nonce[:]...)
	b = append(b, m.Protocol, 0, 0, 0)
	b = binary.BigEndian.AppendUint16(b, m.InternalPort)
	b = binary.BigEndian.AppendUint16(b, m.ExternalPort)
	return appendIP(b, m.ExternalIP)
}

func parseMap(b []byte) *MapPayload {
	m := &MapPayload{Protocol: b[12]}
	copy(m.Nonce[:], b[:pcpNonceSize])
	m.InternalPort = binary.BigEndian.Uint16(b[16:18])
	m.ExternalPort = binary.BigEndian.Uint16(b[18:20])
	m.ExternalIP = parseIP(b[20:36])
	return m
}

// appendIP writes a 128-bit address field: IPv4 in its IPv4-mapped IPv6
// form (so 0.0.0.0 is ::ffff:0.0.0.0, which asks for an IPv4 mapping with no
// suggested address, RFC 6887 §11.1), the zero Addr as all zeros (::).
func appendIP(b []byte, ip netip.Addr) []byte {
	if !ip.IsValid() {
		return append(b, make([]byte, 16)...)
	}
	s := ip.As16()
	return append(b, s[:]...)
}

// parseIP reads a 128-bit address field; an IPv4-mapped address comes back
// as IPv4, so one value has one encoding.
func parseIP(b []byte) netip.Addr {
	return netip.AddrFrom16([16]byte(b)).Unmap()
}
