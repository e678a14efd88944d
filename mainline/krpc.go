package mainline

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/anacrolix/dht/v2/krpc"
	"github.com/anacrolix/torrent/bencode"
)

// maxKRPCSize bounds a datagram we pass to the library. KRPC messages are
// small (a get_peers reply with 8 nodes is under 300 bytes; BEP 44 items
// are at most 1000 bytes of value); anything near a full datagram is junk.
const maxKRPCSize = 1500

// parseKRPC decodes b as one KRPC message (BEP 5: a bencoded dictionary
// with a transaction id "t" and a type "y" of q, r or e). Datagrams that
// fail are dropped here, before the library sees them: it would print each
// one to stderr, and a runtime panic inside its decoder would take the
// process down, where here it is an error.
func parseKRPC(b []byte) (m krpc.Msg, err error) {
	if len(b) == 0 || b[0] != 'd' || len(b) > maxKRPCSize {
		return m, ErrNotKRPC
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: decoder panicked: %v", ErrNotKRPC, r)
		}
	}()
	err = bencode.Unmarshal(b, &m)
	var trailing bencode.ErrUnusedTrailingBytes
	if errors.As(err, &trailing) {
		err = nil // the library accepts these too, as other clients send them
	}
	if err != nil {
		return m, fmt.Errorf("%w: %v", ErrNotKRPC, err)
	}
	switch {
	case m.T == "":
		return m, fmt.Errorf("%w: no transaction id", ErrNotKRPC)
	case m.Y != krpc.YQuery && m.Y != krpc.YResponse && m.Y != krpc.YError:
		return m, fmt.Errorf("%w: message type %q", ErrNotKRPC, m.Y)
	case m.Y == krpc.YQuery && (m.Q == "" || m.A == nil):
		return m, fmt.Errorf("%w: query without method or arguments", ErrNotKRPC)
	}
	return m, nil
}

// reflexiveOf returns the address a response says it saw our query come
// from (BEP 42's "ip" key), when it carries a valid one.
func reflexiveOf(m *krpc.Msg) (netip.AddrPort, bool) {
	if m.Y != krpc.YResponse || len(m.IP.IP) == 0 {
		return netip.AddrPort{}, false
	}
	ip, ok := netip.AddrFromSlice(m.IP.IP)
	if !ok || m.IP.Port <= 0 || m.IP.Port > 65535 {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(m.IP.Port)), true
}
