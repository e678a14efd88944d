package natlab

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/pion/transport/v2"
)

// Behavior is a NAT's mapping or filtering behaviour in RFC 4787 terms.
type Behavior int

// Behaviours. The zero value means not measured.
const (
	BehaviorUnknown Behavior = iota
	EndpointIndependent
	AddressDependent
	AddressAndPortDependent
)

func (b Behavior) String() string {
	switch b {
	case EndpointIndependent:
		return "endpoint-independent"
	case AddressDependent:
		return "address-dependent"
	case AddressAndPortDependent:
		return "address-and-port-dependent"
	}
	return "unknown"
}

// Probe timing defaults: the lab's RTT is well under a millisecond, so
// 200 ms per attempt is generous, and three attempts ride out moderate
// injected loss. A negative result (a filtered packet) costs the whole
// Timeout*Attempts.
const (
	defaultProbeTimeout  = 200 * time.Millisecond
	defaultProbeAttempts = 3
)

// ProbeConfig configures Query and Classify.
type ProbeConfig struct {
	// Server is the reflector's primary address. Required for Classify.
	Server netip.AddrPort
	// Timeout is how long one attempt waits for its answer. Zero means
	// 200 ms.
	Timeout time.Duration
	// Attempts is how many times a request is sent before giving up. Zero
	// means 3.
	Attempts int
}

func (c ProbeConfig) withDefaults() ProbeConfig {
	if c.Timeout <= 0 {
		c.Timeout = defaultProbeTimeout
	}
	if c.Attempts <= 0 {
		c.Attempts = defaultProbeAttempts
	}
	return c
}

// Result is what Classify measured from one host.
type Result struct {
	// Mapped is the public address the reflector saw for the first socket.
	Mapped netip.AddrPort
	// NAT is false when Mapped is one of the host's own addresses.
	NAT bool
	// Mapping and Filtering are the RFC 4787 behaviours.
	Mapping, Filtering Behavior
	// Hairpin is true when a packet sent to our own Mapped address from
	// another local socket arrived.
	Hairpin bool
}

// Type returns the classic name of the measured behaviour: Open without
// NAT; otherwise any endpoint-dependent mapping is Symmetric, and an
// endpoint-independent mapping is named by its filtering.
func (r Result) Type() NATType {
	switch {
	case !r.NAT:
		return Open
	case r.Mapping != EndpointIndependent:
		return Symmetric
	case r.Filtering == EndpointIndependent:
		return FullCone
	case r.Filtering == AddressDependent:
		return Restricted
	default:
		return PortRestricted
	}
}

func (r Result) String() string {
	return fmt.Sprintf("%s (mapping %s, filtering %s, hairpin %t, mapped %v)", r.Type(), r.Mapping, r.Filtering, r.Hairpin, r.Mapped)
}

// Query sends a request with flags from conn to the reflector at to and
// waits for the matching response, retrying per cfg (cfg.Server is not
// used). It returns ErrNoResponse when no answer came, ctx.Err() when ctx
// ended first. Unrelated datagrams arriving on conn are skipped.
func Query(ctx context.Context, conn net.PacketConn, to netip.AddrPort, flags Flags, cfg ProbeConfig) (Message, error) {
	cfg = cfg.withDefaults()
	req := Message{Kind: KindRequest, Flags: flags, TxID: newTxID()}
	pkt := req.Append(nil)
	dst := net.UDPAddrFromAddrPort(to)
	var resp Message
	err := exchange(ctx, conn, cfg, func() error {
		_, err := conn.WriteTo(pkt, dst)
		return err
	}, func(m Message) bool {
		if m.Kind == KindResponse && m.TxID == req.TxID {
			resp = m
			return true
		}
		return false
	})
	if err != nil {
		return Message{}, fmt.Errorf("natlab: query %v flags %#x: %w", to, byte(flags), err)
	}
	return resp, nil
}

// exchange runs send-then-wait attempts on conn until match accepts a
// message or the attempts are used up.
func exchange(ctx context.Context, conn net.PacketConn, cfg ProbeConfig, send func() error, match func(Message) bool) error {
	// Wake a blocked read as soon as ctx ends.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Now()) })
	defer stop()
	defer conn.SetReadDeadline(time.Time{}) //nolint:errcheck
	buf := make([]byte, 1500)
	for range cfg.Attempts {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := send(); err != nil {
			return err
		}
		deadline := time.Now().Add(cfg.Timeout)
		if err := conn.SetReadDeadline(deadline); err != nil {
			return err
		}
		for {
			n, _, err := conn.ReadFrom(buf)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if errors.Is(err, os.ErrDeadlineExceeded) {
					break // next attempt
				}
				return err
			}
			if m, err := ParseMessage(buf[:n]); err == nil && match(m) {
				return nil
			}
		}
	}
	return ErrNoResponse
}

// Classify measures, from inside the network n belongs to, how the NAT in
// front of it behaves, the way RFC 5780 (sections 4.3 to 4.5) does against a
// Reflector at cfg.Server:
//
//   - mapping: one socket asks the primary address, the alternate IP (same
//     port), then the alternate IP and port. The same mapped address every
//     time is endpoint-independent; a change only with the IP is
//     address-dependent; otherwise address-and-port-dependent.
//   - filtering: a fresh socket (so no earlier packet opened the filter)
//     asks the primary address to answer from the alternate IP and port; if
//     that arrives filtering is endpoint-independent. Otherwise it asks for
//     an answer from the alternate port only: arriving means
//     address-dependent, nothing means address-and-port-dependent.
//   - hairpinning: a third socket sends to the first socket's mapped
//     address.
//
// A fresh socket is used for each part so that no part's packets open the
// filter for another.
func Classify(ctx context.Context, n transport.Net, cfg ProbeConfig) (Result, error) {
	cfg = cfg.withDefaults()
	if !cfg.Server.IsValid() {
		return Result{}, fmt.Errorf("%w: ProbeConfig.Server is required", ErrBadConfig)
	}
	var res Result
	c1, err := n.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		return Result{}, fmt.Errorf("natlab: classify: %w", err)
	}
	defer c1.Close()

	// Mapping (RFC 5780 4.3).
	m1, err := Query(ctx, c1, cfg.Server, 0, cfg)
	if err != nil {
		return Result{}, err
	}
	if !m1.Other.IsValid() {
		return Result{}, fmt.Errorf("%w: response without other address", ErrMalformed)
	}
	res.Mapped = m1.Observed
	if res.NAT, err = isNATed(n, m1.Observed.Addr()); err != nil {
		return Result{}, err
	}
	m2, err := Query(ctx, c1, netip.AddrPortFrom(m1.Other.Addr(), cfg.Server.Port()), 0, cfg)
	if err != nil {
		return Result{}, err
	}
	if m2.Observed == m1.Observed {
		res.Mapping = EndpointIndependent
	} else {
		m3, err := Query(ctx, c1, m1.Other, 0, cfg)
		if err != nil {
			return Result{}, err
		}
		if m3.Observed == m2.Observed {
			res.Mapping = AddressDependent
		} else {
			res.Mapping = AddressAndPortDependent
		}
	}

	// Filtering (RFC 5780 4.4), on a fresh mapping.
	if res.Filtering, err = classifyFiltering(ctx, n, cfg); err != nil {
		return Result{}, err
	}

	// Hairpinning (RFC 5780 4.5).
	if res.Hairpin, err = probeHairpin(ctx, n, c1, res.Mapped, cfg); err != nil {
		return Result{}, err
	}
	return res, nil
}

func classifyFiltering(ctx context.Context, n transport.Net, cfg ProbeConfig) (Behavior, error) {
	c, err := n.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		return BehaviorUnknown, fmt.Errorf("natlab: classify: %w", err)
	}
	defer c.Close()
	if _, err := Query(ctx, c, cfg.Server, 0, cfg); err != nil {
		return BehaviorUnknown, err
	}
	_, err = Query(ctx, c, cfg.Server, FlagChangeIP|FlagChangePort, cfg)
	if err == nil {
		return EndpointIndependent, nil
	}
	if !errors.Is(err, ErrNoResponse) {
		return BehaviorUnknown, err
	}
	_, err = Query(ctx, c, cfg.Server, FlagChangePort, cfg)
	if err == nil {
		return AddressDependent, nil
	}
	if !errors.Is(err, ErrNoResponse) {
		return BehaviorUnknown, err
	}
	return AddressAndPortDependent, nil
}

// probeHairpin sends from a new socket to mapped and reports whether c (the
// socket that owns mapped) received it.
func probeHairpin(ctx context.Context, n transport.Net, c net.PacketConn, mapped netip.AddrPort, cfg ProbeConfig) (bool, error) {
	s, err := n.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		return false, fmt.Errorf("natlab: classify: %w", err)
	}
	defer s.Close()
	probe := Message{Kind: KindHairpin, TxID: newTxID()}
	pkt := probe.Append(nil)
	err = exchange(ctx, c, cfg, func() error {
		_, err := s.WriteTo(pkt, net.UDPAddrFromAddrPort(mapped))
		return err
	}, func(m Message) bool { return m.Kind == KindHairpin && m.TxID == probe.TxID })
	if errors.Is(err, ErrNoResponse) {
		return false, nil
	}
	return err == nil, err
}

// isNATed reports whether addr is not one of n's interface addresses.
func isNATed(n transport.Net, addr netip.Addr) (bool, error) {
	ifs, err := n.Interfaces()
	if err != nil {
		return false, fmt.Errorf("natlab: interfaces: %w", err)
	}
	for _, ifc := range ifs {
		addrs, err := ifc.Addrs()
		if err != nil {
			return false, fmt.Errorf("natlab: interface addresses: %w", err)
		}
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(ipn.IP); ok && ip.Unmap() == addr {
					return false, nil
				}
			}
		}
	}
	return true, nil
}

// newTxID returns a random transaction id.
func newTxID() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux
	return binary.BigEndian.Uint64(b[:])
}
