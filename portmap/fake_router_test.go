package portmap

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// fakeEvent is something a fake router was asked to do.
type fakeEvent struct {
	op        string // "map", "delete", "announce", "external"
	transport Transport
	external  uint16
	lifetime  uint32
}

// fakePMP is a PCP and NAT-PMP server on loopback, the way RFC 6887 and
// RFC 6886 describe one: mappings by internal port and protocol, an epoch
// that restart resets, lifetimes capped at maxLifetime.
type fakePMP struct {
	conn        *net.UDPConn
	external    netip.Addr
	maxLifetime uint32
	natpmpOnly  bool

	mu       sync.Mutex
	start    time.Time
	base     uint32               // epoch at start
	mappings map[[2]uint16]uint16 // (proto, internal port) -> external port
	events   chan fakeEvent
	done     chan struct{}
}

func startFakePMP(t *testing.T, addr string, natpmpOnly bool, maxLifetime uint32) *fakePMP {
	t.Helper()
	conn, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatal(err)
	}
	f := &fakePMP{conn: conn, external: netip.MustParseAddr("203.0.113.77"), maxLifetime: maxLifetime, natpmpOnly: natpmpOnly,
		start: time.Now(), base: 1000, mappings: map[[2]uint16]uint16{}, events: make(chan fakeEvent, 64), done: make(chan struct{})}
	go f.serve()
	t.Cleanup(func() {
		conn.Close()
		<-f.done
	})
	return f
}

// setMaxLifetime changes the longest lifetime granted.
func (f *fakePMP) setMaxLifetime(s uint32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.maxLifetime = s
}

func (f *fakePMP) port() uint16 { return uint16(f.conn.LocalAddr().(*net.UDPAddr).Port) }

// restart forgets every mapping and starts the epoch again, as a rebooted
// router does.
func (f *fakePMP) restart() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.start, f.base, f.mappings = time.Now(), 0, map[[2]uint16]uint16{}
}

func (f *fakePMP) epoch() uint32 { return f.base + uint32(time.Since(f.start)/time.Second) }

func (f *fakePMP) emit(e fakeEvent) {
	select {
	case f.events <- e:
	default:
	}
}

// next waits for the next event of kind op.
func (f *fakePMP) next(t *testing.T, op string) fakeEvent {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case e := <-f.events:
			if e.op == op {
				return e
			}
		case <-timeout:
			t.Fatalf("fake router: no %q request within 10 s", op)
		}
	}
}

func (f *fakePMP) serve() {
	defer close(f.done)
	buf := make([]byte, 1500)
	for {
		n, from, err := f.conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		var out []byte
		f.mu.Lock()
		switch {
		case n >= 2 && buf[0] == 0:
			out = f.natpmp(buf[:n])
		case f.natpmpOnly:
			// RFC 6886 §3.5: unsupported version, result 1.
			out = binary.BigEndian.AppendUint32([]byte{0, 0x80 | buf[1], 0, 1}, f.epoch())
		default:
			out = f.pcp(buf[:n])
		}
		f.mu.Unlock()
		if out != nil {
			_, _ = f.conn.WriteToUDP(out, from)
		}
	}
}

func (f *fakePMP) pcp(b []byte) []byte {
	req, err := ParsePCPRequest(b)
	if err != nil {
		return nil
	}
	resp := &PCPResponse{Opcode: req.Opcode, Epoch: f.epoch()}
	switch req.Opcode {
	case OpAnnounce:
		f.emit(fakeEvent{op: "announce"})
	case OpMap:
		t := UDP
		if req.Map.Protocol == ProtoTCP {
			t = TCP
		}
		key := [2]uint16{uint16(req.Map.Protocol), req.Map.InternalPort}
		m := *req.Map
		if req.Lifetime == 0 {
			delete(f.mappings, key)
			f.emit(fakeEvent{op: "delete", transport: t, external: m.ExternalPort})
		} else {
			ext, ok := f.mappings[key]
			if !ok {
				ext = req.Map.ExternalPort
				if ext == 0 {
					ext = 40000 + uint16(len(f.mappings))
				}
				f.mappings[key] = ext
			}
			m.ExternalPort, m.ExternalIP = ext, f.external
			resp.Lifetime = min(req.Lifetime, f.maxLifetime)
			f.emit(fakeEvent{op: "map", transport: t, external: ext, lifetime: resp.Lifetime})
		}
		resp.Map = &m
	default:
		resp.Result = ResultUnsuppOpcode
	}
	return AppendPCPResponse(nil, resp)
}

// natpmp answers RFC 6886 §3.2 (external address) and §3.3 (mapping).
func (f *fakePMP) natpmp(b []byte) []byte {
	op := b[1]
	hdr := binary.BigEndian.AppendUint32([]byte{0, 0x80 | op, 0, 0}, f.epoch())
	switch {
	case op == 0 && len(b) == 2:
		f.emit(fakeEvent{op: "external"})
		ip := f.external.As4()
		return append(hdr, ip[:]...)
	case (op == 1 || op == 2) && len(b) == 12:
		internal := binary.BigEndian.Uint16(b[4:6])
		want := binary.BigEndian.Uint16(b[6:8])
		life := binary.BigEndian.Uint32(b[8:12])
		t := UDP
		if op == 2 {
			t = TCP
		}
		key := [2]uint16{uint16(op), internal}
		ext := want
		if life == 0 {
			delete(f.mappings, key)
			f.emit(fakeEvent{op: "delete", transport: t})
			ext = 0
		} else {
			if old, ok := f.mappings[key]; ok {
				ext = old
			}
			f.mappings[key] = ext
			life = min(life, f.maxLifetime)
			f.emit(fakeEvent{op: "map", transport: t, external: ext, lifetime: life})
		}
		out := binary.BigEndian.AppendUint16(hdr, internal)
		out = binary.BigEndian.AppendUint16(out, ext)
		return binary.BigEndian.AppendUint32(out, life)
	}
	return nil
}

// closedUDPPort returns a loopback UDP port nothing listens on (an ICMP
// port unreachable answers anything sent there).
func closedUDPPort(t *testing.T) uint16 {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	p := uint16(c.LocalAddr().(*net.UDPAddr).Port)
	c.Close()
	return p
}

var errFakeIGD = errors.New("fake igd")
