package natlab

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"

	"github.com/pion/transport/v2"
	"github.com/pion/transport/v2/stdnet"
)

// Default reflector ports (STUN's port and the next one, as in RFC 5780
// deployments).
const (
	DefaultReflectorPort    = 3478
	DefaultReflectorAltPort = 3479
)

// ReflectorConfig configures a Reflector.
type ReflectorConfig struct {
	// Net opens the reflector's sockets. Zero means the process's own
	// network (pion stdnet).
	Net transport.Net
	// Primary and Alternate are the reflector's two IPv4 addresses.
	// Required, and they must differ: the alternate IP is what makes
	// address-dependent behaviour visible.
	Primary, Alternate netip.Addr
	// Port and AltPort are the two ports, on both addresses. Zero means
	// DefaultReflectorPort and DefaultReflectorAltPort.
	Port, AltPort uint16
	// Logger receives debug messages. Zero means discard.
	Logger *slog.Logger
}

// Reflector is a small RFC 5780-style server: it listens on two IPs times
// two ports, answers each request with the source address it observed, and,
// when asked (FlagChangeIP, FlagChangePort), answers from the other IP
// and/or port. It exists for the lab and its tests; the node's own NAT
// classifier runs over the DHT. It answers STUN Binding requests with
// CHANGE-REQUEST the same way (reflector_stun.go), for miniupnpd.
type Reflector struct {
	// Immutable after NewReflector.
	cfg   ReflectorConfig
	addrs [2][2]netip.AddrPort // [ip index][port index]

	// Guarded by mu.
	mu      sync.Mutex
	conns   [2][2]net.PacketConn
	started bool
	closed  bool

	wg sync.WaitGroup // one read loop per socket
}

// NewReflector checks cfg and fills in defaults. It opens nothing; Start
// does.
func NewReflector(cfg ReflectorConfig) (*Reflector, error) {
	if !cfg.Primary.Is4() || !cfg.Alternate.Is4() || cfg.Primary == cfg.Alternate {
		return nil, fmt.Errorf("%w: reflector needs two different IPv4 addresses, got %v and %v", ErrBadConfig, cfg.Primary, cfg.Alternate)
	}
	if cfg.Port == 0 {
		cfg.Port = DefaultReflectorPort
	}
	if cfg.AltPort == 0 {
		cfg.AltPort = DefaultReflectorAltPort
	}
	if cfg.Port == cfg.AltPort {
		return nil, fmt.Errorf("%w: reflector ports must differ", ErrBadConfig)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	r := &Reflector{cfg: cfg}
	for i, ip := range []netip.Addr{cfg.Primary, cfg.Alternate} {
		for j, port := range []uint16{cfg.Port, cfg.AltPort} {
			r.addrs[i][j] = netip.AddrPortFrom(ip, port)
		}
	}
	return r, nil
}

// Addr returns the primary address, the one clients are configured with.
func (r *Reflector) Addr() netip.AddrPort { return r.addrs[0][0] }

// OtherAddr returns the alternate IP with the alternate port.
func (r *Reflector) OtherAddr() netip.AddrPort { return r.addrs[1][1] }

// Start opens the four sockets and starts answering.
func (r *Reflector) Start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	if r.started {
		return nil
	}
	n := r.cfg.Net
	if n == nil {
		sn, err := stdnet.NewNet()
		if err != nil {
			return fmt.Errorf("natlab: reflector: %w", err)
		}
		n = sn
	}
	for i := range 2 {
		for j := range 2 {
			c, err := n.ListenPacket("udp4", r.addrs[i][j].String())
			if err != nil {
				r.closeConnsLocked()
				return fmt.Errorf("natlab: reflector listen %v: %w", r.addrs[i][j], err)
			}
			r.conns[i][j] = c
		}
	}
	r.started = true
	for i := range 2 {
		for j := range 2 {
			r.wg.Add(1)
			go r.readLoop(i, j, r.conns[i][j])
		}
	}
	return nil
}

// Close stops the reflector and waits for its goroutines. Idempotent.
func (r *Reflector) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	r.closeConnsLocked()
	r.mu.Unlock()
	r.wg.Wait()
	return nil
}

func (r *Reflector) closeConnsLocked() {
	for i := range 2 {
		for j := range 2 {
			if r.conns[i][j] != nil {
				_ = r.conns[i][j].Close()
			}
		}
	}
}

// readLoop answers requests arriving on socket [ip][port]. The sockets
// never change after Start, so reading r.conns here needs no lock.
func (r *Reflector) readLoop(ip, port int, c net.PacketConn) {
	defer r.wg.Done()
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				r.cfg.Logger.Debug("reflector read failed", "addr", r.addrs[ip][port], "err", err)
			}
			return
		}
		if ua, ok := from.(*net.UDPAddr); ok && r.answerSTUN(buf[:n], ip, port, ua) {
			continue
		}
		req, err := ParseMessage(buf[:n])
		if err != nil || req.Kind != KindRequest {
			r.cfg.Logger.Debug("reflector dropped datagram", "addr", from, "err", err)
			continue
		}
		ua, ok := from.(*net.UDPAddr)
		if !ok {
			continue
		}
		ri, rp := ip, port
		if req.Flags&FlagChangeIP != 0 {
			ri = 1 - ip
		}
		if req.Flags&FlagChangePort != 0 {
			rp = 1 - port
		}
		observed := netip.AddrPortFrom(ua.AddrPort().Addr().Unmap(), ua.AddrPort().Port())
		resp := Message{
			Kind:      KindResponse,
			Flags:     req.Flags,
			TxID:      req.TxID,
			Observed:  observed,
			Responder: r.addrs[ri][rp],
			Other:     r.addrs[1-ip][1-port],
		}
		if _, err := r.conns[ri][rp].WriteTo(resp.Append(nil), ua); err != nil {
			r.cfg.Logger.Debug("reflector write failed", "addr", from, "err", err)
		}
	}
}
