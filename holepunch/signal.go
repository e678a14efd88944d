package holepunch

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/swarmdb/swarmdb/natcheck"
)

// The signaling payload travels inside Noise IK message 1 (client to
// server) and message 2 (server to client), so relays can neither read nor
// alter it. It says everything the other side needs to punch:
//
//	offset  size  field
//	0       1     version (SignalVersion)
//	1       1     code (CodeOK, or why the server refuses; always 0 in msg1)
//	2       1     mode (ModeAuto, ModeRelay)
//	3       1     mapping   (Mapping of the sender's NAT)
//	4       1     filtering (Filtering of the sender's NAT)
//	5       16    punch secret (birthday probes carry it; chosen by the client)
//	21      1     n = len(ufrag), then n bytes ICE ufrag
//	..      1     n = len(pwd),   then n bytes ICE pwd
//	..      1     n = number of candidates, then n candidates:
//	                1  kind (CandHost, CandSrflx, CandRelay)
//	                1  address length (4 or 16), then the IP
//	                2  port, big endian
//	..      1     version 2 only: n = len(hello), 1..MaxHello, then n bytes
//	              hello (the dialer's word to the server's firewall)
//
// A payload with a hello is version 2, one without is version 1, so a
// dialer that has nothing to say speaks to every server. Trailing bytes are
// an error. A receiver refuses versions it does not know with ErrBadSignal
// (the sender sees no answer; nothing is guessed).
type signal struct {
	Code      Code
	Mode      Mode
	Mapping   natcheck.Mapping
	Filtering natcheck.Filtering
	Secret    [16]byte
	Ufrag     string
	Pwd       string
	Cands     []candidate
	// Hello is opaque to holepunch: the dialer's application says why it
	// dials (package swarm: how much it needs the connection), and the
	// server's firewall reads it before any ICE work. Only message 1
	// carries one.
	Hello []byte
}

// SignalVersion is the version byte of a signaling payload without a
// hello; signalVersionHello is the one of a payload with a hello.
const (
	SignalVersion      = 1
	signalVersionHello = 2
)

// MaxHello bounds a dial's hello (DialOptions.Hello): it rides in message
// 1, which must fit one DHT datagram.
const MaxHello = 32

// maxCandidates bounds the candidates in one payload. Eight host addresses
// plus a reflexive and a relay address cover any real host; the bound keeps
// the payload inside one DHT datagram (dht's limit is 1024 bytes for the
// whole Noise message).
const maxCandidates = 12

// Code is the server's verdict in message 2.
type Code byte

const (
	// CodeOK: the server accepts and is starting ICE.
	CodeOK Code = iota
	// CodeRefused: the server's firewall refused the client's key.
	CodeRefused
	// CodeBusy: the server is at its handshake limit; try later.
	CodeBusy
	// CodeSimultaneous: the server is dialling the client at the same time
	// and its dial wins the tie-break; the connection arrives that way.
	CodeSimultaneous
	// CodeUseRelay: both sides have endpoint-dependent mapping; no direct
	// path exists, dial again in ModeRelay.
	CodeUseRelay
	// CodeNoRelay: the client asked for a relayed connection but sent no
	// relay candidate.
	CodeNoRelay
	codeMax
)

func (c Code) String() string {
	switch c {
	case CodeOK:
		return "ok"
	case CodeRefused:
		return "refused"
	case CodeBusy:
		return "busy"
	case CodeSimultaneous:
		return "simultaneous"
	case CodeUseRelay:
		return "use-relay"
	case CodeNoRelay:
		return "no-relay"
	}
	return fmt.Sprintf("code(%d)", byte(c))
}

// Mode says which paths a dial tries.
type Mode byte

const (
	// ModeAuto: LAN and direct candidates, plus birthday punching where one
	// side has endpoint-dependent mapping.
	ModeAuto Mode = iota
	// ModeRelay: the client brings a TURN relay candidate as well; used
	// when both sides have endpoint-dependent mapping or a direct attempt
	// failed.
	ModeRelay
	modeMax
)

// candidateKind is an ICE candidate type as carried in the payload.
type candidateKind byte

const (
	candHost candidateKind = iota + 1
	candSrflx
	candRelay
	candMax
)

func (k candidateKind) String() string {
	switch k {
	case candHost:
		return "host"
	case candSrflx:
		return "srflx"
	case candRelay:
		return "relay"
	}
	return "unknown"
}

// candidate is one address the sender can be reached at.
type candidate struct {
	Kind candidateKind
	Addr netip.AddrPort
}

// appendSignal appends the encoding of s to b.
func appendSignal(b []byte, s *signal) []byte {
	version := byte(SignalVersion)
	if len(s.Hello) > 0 {
		version = signalVersionHello
	}
	b = append(b, version, byte(s.Code), byte(s.Mode), byte(s.Mapping), byte(s.Filtering))
	b = append(b, s.Secret[:]...)
	b = append(b, byte(len(s.Ufrag)))
	b = append(b, s.Ufrag...)
	b = append(b, byte(len(s.Pwd)))
	b = append(b, s.Pwd...)
	b = append(b, byte(len(s.Cands)))
	for _, c := range s.Cands {
		ip := c.Addr.Addr().Unmap()
		b = append(b, byte(c.Kind), byte(ip.BitLen()/8))
		b = append(b, ip.AsSlice()...)
		b = binary.BigEndian.AppendUint16(b, c.Addr.Port())
	}
	if len(s.Hello) > 0 {
		b = append(b, byte(len(s.Hello)))
		b = append(b, s.Hello...)
	}
	return b
}

// parseSignal decodes a payload made by appendSignal.
func parseSignal(b []byte) (*signal, error) {
	r := reader{b: b}
	v := r.byte()
	if r.err == nil && v != SignalVersion && v != signalVersionHello {
		return nil, fmt.Errorf("%w: version %d", ErrBadSignal, v)
	}
	s := &signal{
		Code:      Code(r.byte()),
		Mode:      Mode(r.byte()),
		Mapping:   natcheck.Mapping(r.byte()),
		Filtering: natcheck.Filtering(r.byte()),
	}
	copy(s.Secret[:], r.bytes(len(s.Secret)))
	s.Ufrag = string(r.bytes(int(r.byte())))
	s.Pwd = string(r.bytes(int(r.byte())))
	n := int(r.byte())
	if n > maxCandidates {
		return nil, fmt.Errorf("%w: %d candidates", ErrBadSignal, n)
	}
	for range n {
		kind := candidateKind(r.byte())
		ip, ok := netip.AddrFromSlice(r.bytes(int(r.byte())))
		port := r.uint16()
		if r.err != nil {
			break
		}
		// An IPv4 address must use the 4-byte form (one encoding per value).
		if !ok || ip.Is4In6() || kind == 0 || kind >= candMax || port == 0 {
			return nil, fmt.Errorf("%w: bad candidate", ErrBadSignal)
		}
		s.Cands = append(s.Cands, candidate{Kind: kind, Addr: netip.AddrPortFrom(ip, port)})
	}
	if v == signalVersionHello {
		n := int(r.byte())
		if r.err == nil && (n == 0 || n > MaxHello) {
			return nil, fmt.Errorf("%w: hello of %d bytes", ErrBadSignal, n)
		}
		s.Hello = append([]byte(nil), r.bytes(n)...)
	}
	switch {
	case r.err != nil:
		return nil, fmt.Errorf("%w: %v", ErrBadSignal, r.err)
	case len(r.b) != 0:
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrBadSignal, len(r.b))
	case s.Code >= codeMax || s.Mode >= modeMax:
		return nil, fmt.Errorf("%w: code %d mode %d", ErrBadSignal, s.Code, s.Mode)
	case s.Mapping > natcheck.MappingEndpointDependent || s.Filtering > natcheck.FilteringAddressAndPortDependent:
		return nil, fmt.Errorf("%w: nat %d/%d", ErrBadSignal, s.Mapping, s.Filtering)
	case s.Code == CodeOK && (len(s.Ufrag) < 4 || len(s.Pwd) < 22):
		// RFC 8445 §5.3: ufrag at least 24 bits, pwd at least 128 bits, as
		// ICE characters (4 and 22 of them).
		return nil, fmt.Errorf("%w: short ICE credentials", ErrBadSignal)
	}
	return s, nil
}

// reader consumes b front to back; the first short read sets err and every
// later read returns zero values.
type reader struct {
	b   []byte
	err error
}

func (r *reader) bytes(n int) []byte {
	if r.err != nil {
		return nil
	}
	if len(r.b) < n {
		r.err = fmt.Errorf("short payload: want %d bytes, have %d", n, len(r.b))
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *reader) byte() byte {
	if b := r.bytes(1); b != nil {
		return b[0]
	}
	return 0
}

func (r *reader) uint16() uint16 {
	if b := r.bytes(2); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}
