package holepunch

// Birthday-paradox punching for one symmetric ("hard") NAT against an
// endpoint-independent-mapping ("easy") NAT. ICE alone cannot punch that
// pair: the hard side's port towards the easy side is unknown (a random
// port per destination) and the easy side's port-restricted filter only
// lets in the exact ip:port it has sent to. So the hard side opens many
// sockets, each of which sends to the easy side's reflexive address (one
// random mapping each), and the easy side sprays probes at random ports of
// the hard side's IP from its one shared socket. With 256 hard sockets and
// ports spread over 1024-65535, a probe hits with p = 256/64512: about 174
// probes for 50%, 1024 for 98%, 2048 for 99.9% (Tailscale, "How NAT
// traversal works"; shared/reference/nat.md, B5.5, reproduced on the lab).
// Hyperdht does the same (256 sockets, 1750 random probes every 20 ms).

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/transport/v2"
	"github.com/pion/transport/v2/stdnet"

	"github.com/swarmdb/swarmdb/internal/demux"
)

// BirthdayTag is the first byte of every birthday packet. It collides with
// nothing else on the node's shared socket (internal/demux holds the table
// of first bytes, and tests that no two protocols share one).
const BirthdayTag = demux.TagBirthday

// BirthdaySecretSize is the size of the per-attempt secret both sides learn
// from the encrypted signaling.
const BirthdaySecretSize = 16

// BirthdayPacketSize is the fixed size of every birthday packet.
const BirthdayPacketSize = 1 + BirthdaySecretSize + 1

// BirthdayKind says what a birthday packet is.
type BirthdayKind byte

const (
	// BirthdayProbe opens a mapping (hard side) or searches for one (easy
	// side).
	BirthdayProbe BirthdayKind = 1
	// BirthdayAck is the hard side's answer to a probe that reached one of
	// its sockets: the path is open both ways.
	BirthdayAck BirthdayKind = 2
)

func (k BirthdayKind) String() string {
	switch k {
	case BirthdayProbe:
		return "probe"
	case BirthdayAck:
		return "ack"
	}
	return fmt.Sprintf("kind(%d)", byte(k))
}

// BirthdayPacket is one probe or ack. Layout (18 bytes):
//
//	 0      1                                  17     18
//	+------+----------------------------------+------+
//	| 0xB1 | secret (16)                      | kind |
//	+------+----------------------------------+------+
//
// The secret is a nonce from the signaling, sent in the clear: it only
// tells this attempt's packets from stray or stale ones. It authenticates
// nothing; an on-path attacker who copies it can at worst make a punch
// pick a wrong address, which the Noise handshake on top then rejects.
type BirthdayPacket struct {
	Kind   BirthdayKind
	Secret [BirthdaySecretSize]byte
}

// Append appends the encoded packet to b.
func (p BirthdayPacket) Append(b []byte) []byte {
	b = append(b, BirthdayTag)
	b = append(b, p.Secret[:]...)
	return append(b, byte(p.Kind))
}

// IsBirthday reports whether b looks like a birthday packet (tag byte and
// size), for a demultiplexer that routes datagrams by their first byte.
func IsBirthday(b []byte) bool {
	return len(b) == BirthdayPacketSize && b[0] == BirthdayTag
}

// ParseBirthday decodes a birthday packet. Anything else (wrong size, tag
// or kind) is ErrBirthdayPacket. It does not check the secret: use
// BirthdayPacket.Matches.
func ParseBirthday(b []byte) (BirthdayPacket, error) {
	if len(b) != BirthdayPacketSize {
		return BirthdayPacket{}, fmt.Errorf("%w: %d bytes, want %d", ErrBirthdayPacket, len(b), BirthdayPacketSize)
	}
	if b[0] != BirthdayTag {
		return BirthdayPacket{}, fmt.Errorf("%w: tag %#02x", ErrBirthdayPacket, b[0])
	}
	p := BirthdayPacket{Kind: BirthdayKind(b[BirthdayPacketSize-1])}
	copy(p.Secret[:], b[1:1+BirthdaySecretSize])
	if p.Kind != BirthdayProbe && p.Kind != BirthdayAck {
		return BirthdayPacket{}, fmt.Errorf("%w: unknown kind %d", ErrBirthdayPacket, byte(p.Kind))
	}
	return p, nil
}

// Matches reports, in constant time, whether the packet carries secret.
func (p BirthdayPacket) Matches(secret [BirthdaySecretSize]byte) bool {
	return subtle.ConstantTimeCompare(p.Secret[:], secret[:]) == 1
}

// NewBirthdaySecret returns a fresh random secret for one punch attempt.
func NewBirthdaySecret() [BirthdaySecretSize]byte {
	var s [BirthdaySecretSize]byte
	_, _ = rand.Read(s[:]) // crypto/rand.Read never fails (Go 1.24+)
	return s
}

// parseMine returns the packet in b if it is a birthday packet with secret.
func parseMine(b []byte, secret [BirthdaySecretSize]byte) (BirthdayPacket, bool) {
	p, err := ParseBirthday(b)
	if err != nil || !p.Matches(secret) {
		return BirthdayPacket{}, false
	}
	return p, true
}

// Datagram is one datagram received on the node's shared socket.
type Datagram struct {
	B    []byte
	From netip.AddrPort
}

// PortRange is an inclusive range of UDP ports.
type PortRange struct {
	Lo, Hi uint16
}

// DefaultPortRange is where NATs put random mappings: Linux NAT (and most
// others) keeps a source port of 1024 or more in 1024-65535.
var DefaultPortRange = PortRange{Lo: 1024, Hi: 65535}

// size returns the number of ports in the range.
func (r PortRange) size() int { return int(r.Hi) - int(r.Lo) + 1 }

// Defaults and bounds of the birthday punch.
const (
	// DefaultBirthdayRate is the easy side's probe rate: 200 probes/s spends
	// the default budget in 10 s. Tailscale uses 100/s, hyperdht 50/s; the
	// probes are 18 bytes (46 on the wire), so 200/s is about 9 kB/s.
	DefaultBirthdayRate = 200
	// DefaultBirthdayProbes is the easy side's budget: with 256 hard
	// sockets, 2000 random probes find one with probability 99.96%.
	DefaultBirthdayProbes = 2000
	// DefaultHardSockets is how many sockets the hard side opens, and
	// MaxHardSockets the most it may: each costs a file descriptor and one
	// NAT mapping, and 256 is what Tailscale and hyperdht use.
	DefaultHardSockets = 256
	MaxHardSockets     = 256
	// DefaultHardInterval is how often each hard socket re-sends its probe.
	// The probes go unanswered, and Linux drops an unreplied UDP mapping
	// after 30 s (nat.md, A1); 5 s keeps mappings alive with room for loss
	// at about 51 packets/s for 256 sockets.
	DefaultHardInterval = 5 * time.Second
	// DefaultBirthdayTimeout bounds a punch whose context has no deadline:
	// the default budget takes 10 s, plus grace.
	DefaultBirthdayTimeout = 15 * time.Second
)

const (
	// birthdayAckGrace is how long the easy side still waits for an ack
	// after its last probe: many round trips (under 400 ms worldwide).
	birthdayAckGrace = time.Second
	// birthdayAckCopies is how many acks the hard side sends back to back.
	// It returns right after, so a single lost ack would strand the easy
	// side; duplicates are harmless (the easy side returns on the first).
	birthdayAckCopies = 3
	// minProbeTick is the finest send tick of the easy side; higher rates
	// send several probes per tick.
	minProbeTick = 5 * time.Millisecond
	// maxProbeBurst bounds the probes one tick sends while the easy side
	// catches up after its goroutine was held back (see probesDue).
	maxProbeBurst = 64
	// maxAnswered bounds how many hard sockets' own probes the easy side
	// answers directly (each answer is one extra probe).
	maxAnswered = 4 * MaxHardSockets
	// maxReadFailures is how many read errors in a row end a hard socket's
	// reader (the socket itself stays open until the punch ends).
	maxReadFailures = 8
)

// EasyConfig configures PunchEasy. Send, Packets, HardIP and Secret are
// required.
type EasyConfig struct {
	// Send sends b to an address from the node's one shared socket, the
	// socket whose reflexive address the hard side targets. Required.
	Send func(b []byte, to netip.AddrPort) error
	// Packets delivers the datagrams arriving on the shared socket that
	// carry BirthdayTag (the caller's demultiplexer feeds it). PunchEasy
	// reads it until it returns; packets with a wrong secret are ignored.
	// Required.
	Packets <-chan Datagram
	// HardIP is the hard side's public IP (its reflexive address from
	// signaling). Required.
	HardIP netip.Addr
	// Secret is this attempt's secret from signaling. Required (non-zero).
	Secret [BirthdaySecretSize]byte
	// Rate is the probe rate per second. Zero means DefaultBirthdayRate.
	Rate int
	// MaxProbes is the probe budget. Zero means DefaultBirthdayProbes.
	MaxProbes int
	// PortRange is where the probes go. Zero means DefaultPortRange.
	PortRange PortRange
	// Logger receives debug logs. Zero means discard.
	Logger *slog.Logger
}

func (c EasyConfig) withDefaults() (EasyConfig, error) {
	if c.Rate == 0 {
		c.Rate = DefaultBirthdayRate
	}
	if c.MaxProbes == 0 {
		c.MaxProbes = DefaultBirthdayProbes
	}
	if c.PortRange == (PortRange{}) {
		c.PortRange = DefaultPortRange
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case c.Send == nil:
		return c, fmt.Errorf("%w: no Send", ErrBirthdayConfig)
	case c.Packets == nil:
		return c, fmt.Errorf("%w: no Packets", ErrBirthdayConfig)
	case !c.HardIP.IsValid():
		return c, fmt.Errorf("%w: no HardIP", ErrBirthdayConfig)
	case c.Secret == [BirthdaySecretSize]byte{}:
		return c, fmt.Errorf("%w: zero Secret", ErrBirthdayConfig)
	case c.Rate < 0 || c.MaxProbes < 0:
		return c, fmt.Errorf("%w: negative Rate %d or MaxProbes %d", ErrBirthdayConfig, c.Rate, c.MaxProbes)
	case c.PortRange.Lo == 0 || c.PortRange.Lo > c.PortRange.Hi:
		return c, fmt.Errorf("%w: port range %d-%d", ErrBirthdayConfig, c.PortRange.Lo, c.PortRange.Hi)
	}
	c.HardIP = c.HardIP.Unmap()
	return c, nil
}

// portSampler draws ports from a range uniformly without replacement (a
// lazy Fisher-Yates shuffle that stores only the swapped entries), so no
// probe is wasted on a port already tried. When every port has been drawn
// it starts a new round: mappings may have appeared since.
type portSampler struct {
	lo   int
	n    int
	i    int         // draws in this round
	swap map[int]int // position -> value, for positions moved by a swap
	rng  *mrand.Rand
}

func newPortSampler(r PortRange, rng *mrand.Rand) *portSampler {
	return &portSampler{lo: int(r.Lo), n: r.size(), swap: make(map[int]int), rng: rng}
}

func (s *portSampler) at(pos int) int {
	if v, ok := s.swap[pos]; ok {
		return v
	}
	return pos
}

// next returns the next port.
func (s *portSampler) next() uint16 {
	if s.i == s.n {
		s.i = 0
		clear(s.swap)
	}
	j := s.i + s.rng.IntN(s.n-s.i)
	vi, vj := s.at(s.i), s.at(j)
	s.swap[j] = vi
	delete(s.swap, s.i) // position i is never read again this round
	s.i++
	return uint16(s.lo + vj)
}

// easyPunch is the easy side's protocol core: which probes to send and
// what a received datagram means. It has no sockets, goroutines or clock;
// PunchEasy owns those.
type easyPunch struct {
	hardIP   netip.Addr
	secret   [BirthdaySecretSize]byte
	budget   int
	ports    *portSampler
	sent     int                     // probes handed out, answers included
	answered map[netip.AddrPort]bool // hard sockets whose own probe we answered
}

func newEasyPunch(cfg EasyConfig, rng *mrand.Rand) *easyPunch {
	return &easyPunch{
		hardIP:   cfg.HardIP,
		secret:   cfg.Secret,
		budget:   cfg.MaxProbes,
		ports:    newPortSampler(cfg.PortRange, rng),
		answered: make(map[netip.AddrPort]bool),
	}
}

// next appends up to n search probes' destinations to dst, within the
// budget, and counts them as sent.
func (p *easyPunch) next(dst []netip.AddrPort, n int) []netip.AddrPort {
	for ; n > 0 && p.sent < p.budget; n-- {
		p.sent++
		dst = append(dst, netip.AddrPortFrom(p.hardIP, p.ports.next()))
	}
	return dst
}

// spent reports whether the whole budget is out.
func (p *easyPunch) spent() bool { return p.sent >= p.budget }

// receive handles one datagram. An ack with our secret ends the punch: won
// is its source. A probe with our secret means a hard socket's mapping
// reached us: answer is where to send one probe back (counted as sent),
// once per source. Anything else leaves both zero.
func (p *easyPunch) receive(d Datagram) (won, answer netip.AddrPort) {
	pkt, mine := parseMine(d.B, p.secret)
	if !mine {
		return netip.AddrPort{}, netip.AddrPort{}
	}
	from := netip.AddrPortFrom(d.From.Addr().Unmap(), d.From.Port())
	switch pkt.Kind {
	case BirthdayAck:
		return from, netip.AddrPort{}
	case BirthdayProbe:
		if !p.answered[from] && len(p.answered) < maxAnswered {
			p.answered[from] = true
			p.sent++
			return netip.AddrPort{}, from
		}
	}
	return netip.AddrPort{}, netip.AddrPort{}
}

// PunchEasy runs the easy side of a birthday punch: it sends probes, at
// cfg.Rate, to random ports of cfg.HardIP from the shared socket until one
// of the hard side's sockets acks, and returns the address that acked.
// Start it at about the same time as the hard side's PunchHard. A probe
// that arrives from the hard side (its mapping reached us, which a
// port-restricted NAT allows once we have sent to that port) is answered
// at once with a probe to its source, which the hard side then acks.
//
// It gives up with ErrPunchBudget when cfg.MaxProbes probes are out and no
// ack came within a second after the last, and with ErrPunchTimeout at the
// context's deadline (DefaultBirthdayTimeout when it has none); a canceled
// context returns its error. PunchEasy starts no goroutines.
func PunchEasy(ctx context.Context, cfg EasyConfig) (netip.AddrPort, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return netip.AddrPort{}, err
	}
	ctx, cancel := withDefaultDeadline(ctx)
	defer cancel()
	log := cfg.Logger.With("stage", "birthday-easy", "addr", cfg.HardIP)

	probe := BirthdayPacket{Kind: BirthdayProbe, Secret: cfg.Secret}.Append(nil)
	core := newEasyPunch(cfg, mrand.New(mrand.NewPCG(mrand.Uint64(), mrand.Uint64())))
	ticker := time.NewTicker(probeTick(cfg.Rate))
	defer ticker.Stop()
	var grace <-chan time.Time // set once the budget is spent
	start := time.Now()
	searched := 0 // search probes handed out; answers are not paced
	send := func(to netip.AddrPort) {
		if err := cfg.Send(probe, to); err != nil {
			// A failed send (e.g. a full buffer) costs one probe; the
			// search goes on.
			log.Debug("birthday probe send failed", "peer", to, "err", err)
		}
	}
	var batch []netip.AddrPort
	for {
		select {
		case <-ticker.C:
			batch = core.next(batch[:0], probesDue(time.Since(start), cfg.Rate, searched))
			searched += len(batch)
			for _, to := range batch {
				send(to)
			}
			if core.spent() && grace == nil {
				ticker.Stop()
				grace = time.After(birthdayAckGrace)
			}
		case d, ok := <-cfg.Packets:
			if !ok {
				return netip.AddrPort{}, fmt.Errorf("holepunch: birthday: packet channel closed: %w", net.ErrClosed)
			}
			won, answer := core.receive(d)
			if won.IsValid() {
				log.Debug("birthday punch succeeded", "peer", won, "probes", core.sent, "took", time.Since(start))
				return won, nil
			}
			if answer.IsValid() {
				send(answer)
			}
		case <-grace:
			log.Debug("birthday probe budget spent", "probes", core.sent, "took", time.Since(start))
			return netip.AddrPort{}, fmt.Errorf("%w: %d probes to %v", ErrPunchBudget, core.sent, cfg.HardIP)
		case <-ctx.Done():
			return netip.AddrPort{}, ctxErr(ctx, core.sent)
		}
	}
}

// probeTick is the easy side's send tick for a rate: one probe's time,
// and no finer than minProbeTick (higher rates send several per tick).
func probeTick(rate int) time.Duration {
	return max(time.Second/time.Duration(rate), minProbeTick)
}

// probesDue is how many search probes the easy side sends at a tick: those
// the rate allows in elapsed, less the issued ones, at most maxProbeBurst.
// Counting from the start instead of sending a fixed number per tick keeps
// the rate when ticks come late or are dropped (a loaded machine; a Go
// ticker drops the ticks its reader misses): under load the lab's rate fell
// to 100-150 probes/s, and a punch then did not spend its budget before the
// dial's deadline.
func probesDue(elapsed time.Duration, rate, issued int) int {
	allowed := int(elapsed * time.Duration(rate) / time.Second)
	return min(max(allowed-issued, 0), maxProbeBurst)
}

// withDefaultDeadline bounds a context that has no deadline.
func withDefaultDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, DefaultBirthdayTimeout)
}

// ctxErr is the error for a punch whose context ended: ErrPunchTimeout at
// the deadline (wrapping context.DeadlineExceeded too), otherwise the
// context's own error.
func ctxErr(ctx context.Context, probes int) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%w after %d probes: %w", ErrPunchTimeout, probes, ctx.Err())
	}
	return fmt.Errorf("holepunch: birthday punch: %w", ctx.Err())
}

// HardConfig configures PunchHard. Easy and Secret are required.
type HardConfig struct {
	// Net opens the sockets. Zero means the real network (pion stdnet).
	Net transport.Net
	// LocalIP is the address the sockets bind to. Zero (or an unspecified
	// address) means any address of Easy's family: 0.0.0.0 or ::.
	LocalIP netip.Addr
	// Easy is the easy side's reflexive address (from signaling): where
	// every socket sends its probes. Required.
	Easy netip.AddrPort
	// Secret is this attempt's secret from signaling. Required (non-zero).
	Secret [BirthdaySecretSize]byte
	// Sockets is how many sockets to open, at most MaxHardSockets. Zero
	// means DefaultHardSockets.
	Sockets int
	// Interval is how often each socket re-sends its probe to keep its
	// mapping alive. Zero means DefaultHardInterval.
	Interval time.Duration
	// Logger receives debug logs. Zero means discard.
	Logger *slog.Logger
}

func (c HardConfig) withDefaults() (HardConfig, error) {
	if c.Sockets == 0 {
		c.Sockets = DefaultHardSockets
	}
	if c.Interval == 0 {
		c.Interval = DefaultHardInterval
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case !c.Easy.IsValid():
		return c, fmt.Errorf("%w: no Easy address", ErrBirthdayConfig)
	case c.Secret == [BirthdaySecretSize]byte{}:
		return c, fmt.Errorf("%w: zero Secret", ErrBirthdayConfig)
	case c.Sockets < 0 || c.Sockets > MaxHardSockets:
		return c, fmt.Errorf("%w: %d sockets (1-%d)", ErrBirthdayConfig, c.Sockets, MaxHardSockets)
	case c.Interval < 0:
		return c, fmt.Errorf("%w: negative Interval", ErrBirthdayConfig)
	}
	if c.Net == nil {
		n, err := stdnet.NewNet()
		if err != nil {
			return c, fmt.Errorf("holepunch: birthday: network: %w", err)
		}
		c.Net = n
	}
	c.Easy = netip.AddrPortFrom(c.Easy.Addr().Unmap(), c.Easy.Port())
	if !c.LocalIP.IsValid() || c.LocalIP.IsUnspecified() {
		// Any address: of the family we send to (a shared socket bound
		// to "::" still punches IPv4 with udp4 sockets here).
		c.LocalIP = netip.IPv4Unspecified()
		if c.Easy.Addr().Is6() {
			c.LocalIP = netip.IPv6Unspecified()
		}
	}
	if c.LocalIP.Unmap().Is4() != c.Easy.Addr().Is4() {
		return c, fmt.Errorf("%w: LocalIP %v and Easy %v are of different families", ErrBirthdayConfig, c.LocalIP, c.Easy)
	}
	c.LocalIP = c.LocalIP.Unmap()
	return c, nil
}

// hardWin is a hard socket that got a probe and acked it.
type hardWin struct {
	i    int
	from netip.AddrPort
}

// PunchHard runs the hard side of a birthday punch: it opens cfg.Sockets
// sockets, each of which at once sends a probe to cfg.Easy (opening its own
// NAT mapping before any easy probe can arrive, which a router that drops
// unsolicited input would otherwise discard) and re-sends it every
// cfg.Interval. When an easy probe arrives on one of them, that socket acks
// it, every other socket is closed, and PunchHard returns the socket and
// the address the probe came from (the easy side's confirmed address).
// The caller owns the returned socket; late birthday packets may still
// arrive on it and should be dropped (IsBirthday).
//
// It gives up with ErrPunchTimeout at the context's deadline
// (DefaultBirthdayTimeout when it has none; give it the easy side's budget
// time plus a little), and a canceled context returns its error. Every
// goroutine it starts has ended when it returns.
func PunchHard(ctx context.Context, cfg HardConfig) (net.PacketConn, netip.AddrPort, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, netip.AddrPort{}, err
	}
	ctx, cancel := withDefaultDeadline(ctx)
	defer cancel()
	log := cfg.Logger.With("stage", "birthday-hard", "peer", cfg.Easy)

	probe := BirthdayPacket{Kind: BirthdayProbe, Secret: cfg.Secret}.Append(nil)
	ack := BirthdayPacket{Kind: BirthdayAck, Secret: cfg.Secret}.Append(nil)
	easy := net.UDPAddrFromAddrPort(cfg.Easy)
	bind := netip.AddrPortFrom(cfg.LocalIP, 0).String()
	network := "udp4"
	if cfg.LocalIP.Is6() {
		network = "udp6"
	}

	conns := make([]net.PacketConn, 0, cfg.Sockets)
	won := make(chan hardWin, cfg.Sockets) // never blocks a reader
	var wg sync.WaitGroup
	closeAll := func(keep int) {
		for i, c := range conns {
			if i != keep {
				_ = c.Close()
			}
		}
		wg.Wait()
	}
	// Open and send on each socket before the next, so the first mappings
	// exist as early as possible.
	sent := 0
	for i := range cfg.Sockets {
		if ctx.Err() != nil {
			closeAll(-1)
			return nil, netip.AddrPort{}, ctxErr(ctx, sent)
		}
		c, err := cfg.Net.ListenPacket(network, bind)
		if err != nil {
			closeAll(-1)
			return nil, netip.AddrPort{}, fmt.Errorf("holepunch: birthday: socket %d of %d: %w", i+1, cfg.Sockets, err)
		}
		conns = append(conns, c)
		if _, err := c.WriteTo(probe, easy); err != nil {
			log.Debug("birthday probe send failed", "err", err)
		}
		sent++
		wg.Go(func() { hardReadLoop(c, i, cfg.Secret, ack, won, log) })
	}
	start := time.Now()
	log.Debug("birthday sockets open", "sockets", len(conns))

	// Keepalives go round-robin, one socket per step, so the hard side
	// sends at an even Sockets/Interval packets per second.
	keep := time.NewTicker(max(cfg.Interval/time.Duration(cfg.Sockets), time.Millisecond))
	defer keep.Stop()
	next := 0
	for {
		select {
		case w := <-won:
			closeAll(w.i)
			log.Debug("birthday punch succeeded", "addr", w.from, "socket", w.i, "sent", sent, "took", time.Since(start))
			return conns[w.i], w.from, nil
		case <-keep.C:
			if _, err := conns[next].WriteTo(probe, easy); err != nil {
				log.Debug("birthday keepalive send failed", "err", err)
			}
			sent++
			next = (next + 1) % len(conns)
		case <-ctx.Done():
			closeAll(-1)
			// A socket may have won while we were closing; it is closed
			// now, and the punch is over either way.
			return nil, netip.AddrPort{}, ctxErr(ctx, sent)
		}
	}
}

// hardReadLoop reads one hard socket until it is closed or an easy probe
// with the secret arrives; that probe is acked (birthdayAckCopies times)
// and reported on won, and the loop ends without closing the socket.
func hardReadLoop(c net.PacketConn, i int, secret [BirthdaySecretSize]byte, ack []byte, won chan<- hardWin, log *slog.Logger) {
	buf := make([]byte, 64) // a birthday packet is 18 bytes; larger reads are not ours
	failures := 0
	for {
		n, addr, err := c.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Some systems report ICMP errors on unconnected UDP sockets
			// (Windows' WSAECONNRESET): skip a few, but never spin.
			log.Debug("birthday socket read failed", "socket", i, "err", err)
			if failures++; failures >= maxReadFailures {
				return
			}
			continue
		}
		failures = 0
		p, mine := parseMine(buf[:n], secret)
		if !mine || p.Kind != BirthdayProbe {
			continue
		}
		ua, ok := addr.(*net.UDPAddr)
		if !ok {
			continue
		}
		from := ua.AddrPort()
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		for range birthdayAckCopies {
			if _, err := c.WriteTo(ack, addr); err != nil {
				log.Debug("birthday ack send failed", "socket", i, "err", err)
			}
		}
		won <- hardWin{i: i, from: from}
		return
	}
}
