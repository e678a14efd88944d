package secure

import (
	"crypto/cipher"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/swarmdb/swarmdb/internal/fifo"
)

// DefaultMaxPayload is the default largest datagram payload: MaxMTU, the largest packet
// path MTU discovery may send. Sessions start at DefaultMTU (1200 bytes, sealed 1225,
// which fits the 1232-byte UDP payload of the IPv6 minimum MTU and survives TURN
// ChannelData framing) and send more only where the path has carried it.
const DefaultMaxPayload = MaxMTU

// defaultQueueLen bounds opened-but-unread datagrams per conn; beyond it new ones are
// dropped (and counted in QueueOverflows), as a full socket buffer drops them. The queue
// holds memory only for what waits (internal/fifo), so the bound costs an idle
// connection nothing.
const defaultQueueLen = 4096

// DatagramConfig configures a DatagramConn. The zero value works.
type DatagramConfig struct {
	// MaxPayload is the largest payload one Write may carry and one received datagram
	// may hold. Zero means DefaultMaxPayload.
	MaxPayload int
	// QueueLen is how many opened datagrams may wait for Read. Zero means 4096.
	QueueLen int
	// Logger receives debug logs. Nil means discard.
	Logger *slog.Logger
}

func (c *DatagramConfig) withDefaults() DatagramConfig {
	out := *c
	if out.MaxPayload <= 0 {
		out.MaxPayload = DefaultMaxPayload
	}
	if out.QueueLen <= 0 {
		out.QueueLen = defaultQueueLen
	}
	if out.Logger == nil {
		out.Logger = slog.New(slog.DiscardHandler)
	}
	return out
}

// DatagramStats is a snapshot of a DatagramConn's counters. Bytes are wire bytes.
type DatagramStats struct {
	Cipher                 Cipher // the outer AEAD the handshake chose
	SentPackets, SentBytes uint64
	RecvPackets, RecvBytes uint64 // authenticated, accepted datagrams
	Keepalives             uint64 // accepted datagrams with an empty payload
	SendErrors             uint64 // inner writes that failed and were treated as loss
	// Dropped datagrams, by reason; none of them ever reaches Read.
	DroppedMalformed uint64 // too short, wrong tag, counter out of range or beyond the next key epoch, oversize
	DroppedAuth      uint64 // forged or corrupted: the AEAD tag did not verify
	DroppedReplay    uint64 // counter already seen
	DroppedTooOld    uint64 // counter behind the replay window
	// QueueOverflows counts authenticated datagrams dropped because QueueLen of them
	// waited unread: loss, as in a full socket buffer, not a bad datagram.
	QueueOverflows uint64
}

// Dropped is the total of all drop reasons.
func (s DatagramStats) Dropped() uint64 {
	return s.DroppedMalformed + s.DroppedAuth + s.DroppedReplay + s.DroppedTooOld
}

// DatagramConn seals every datagram written to an inner datagram conn and opens, checks
// and de-duplicates every datagram read from it. It implements net.Conn with datagram
// semantics: each Write is one datagram, each Read returns one datagram.
//
// The inner conn must be datagram-oriented (each Read returns one datagram): an
// ice.Conn, a connected UDP socket. DatagramConn does not rely on the inner conn's
// deadlines (pion ice/v2's are no-ops): it reads in its own goroutine, started by the
// first Read, and implements read deadlines itself. Close closes the inner conn and
// waits for that goroutine.
type DatagramConn struct {
	// immutable after NewDatagramConn
	inner     net.Conn
	cipher    Cipher
	remote    ed25519.PublicKey
	cfg       DatagramConfig
	created   time.Time
	bufPool   *sync.Pool // datagramBuffers for this MaxPayload
	queue     *fifo.Queue[datagram]
	closing   chan struct{} // closed by Close
	readDone  chan struct{} // closed when the read loop exits; readErr is then set
	source    PacketSource  // inner, when it hands datagrams over (no read loop then)
	rdeadline *deadline

	sendCounter atomic.Uint64
	sendKeys    atomic.Pointer[epochKeys] // replaced, under sendKeysMu, at each epoch's first datagram
	sendKeysMu  sync.Mutex
	lastRecv    atomic.Int64 // nanoseconds after created of the last authenticated datagram
	lastSend    atomic.Int64 // nanoseconds after created of the last datagram sent

	batch *sendBatch // non-nil when inner is a SegmentWriter (batch.go)

	// onPayload, once set (receivePayloads), takes every payload as it is opened,
	// instead of the queue that Read takes them from.
	onPayload atomic.Pointer[func([]byte)]

	mu      sync.Mutex // guards started, closed
	started bool
	closed  bool
	wg      sync.WaitGroup // the read loop

	readErr  error        // written by the read loop before readDone closes
	openMu   sync.Mutex   // serializes open: a PacketSource may call from two goroutines
	window   replayWindow // guarded by openMu
	recvKeys *epochKeys   // guarded by openMu; its epoch is that of the highest counter accepted
	closeErr error        // set once by Close
	once     sync.Once

	stats struct {
		sentPackets, sentBytes, recvPackets, recvBytes, keepalives, sendErrors atomic.Uint64
		malformed, auth, replay, tooOld, overflows                             atomic.Uint64
	}
}

// bufferPools holds one pool of datagram buffers per size, shared by every DatagramConn
// with that MaxPayload: a pool per conn kept a few buffers (about 4 KB) for each idle
// connection between garbage collections.
var bufferPools sync.Map // buffer size → *sync.Pool of *[]byte

func datagramBuffers(size int) *sync.Pool {
	if p, ok := bufferPools.Load(size); ok {
		return p.(*sync.Pool)
	}
	p, _ := bufferPools.LoadOrStore(size, &sync.Pool{New: func() any {
		b := make([]byte, size)
		return &b
	}})
	return p.(*sync.Pool)
}

type datagram struct {
	buf     *[]byte
	payload []byte // aliases *buf
}

var _ net.Conn = (*DatagramConn)(nil)

// NewDatagramConn wraps inner with the keys of a completed handshake, sealing with the
// cipher it chose (keys.Cipher). It starts nothing; the read loop starts with the first
// Read. inner is owned by the DatagramConn from now on.
func NewDatagramConn(inner net.Conn, keys Keys, cfg DatagramConfig) *DatagramConn {
	cfg = cfg.withDefaults()
	// +1 to detect oversize datagrams, and room for the nonce (packet.go).
	bufSize := cfg.MaxPayload + PacketOverhead + 1 + nonceSize
	c := &DatagramConn{
		inner:     inner,
		cipher:    keys.Cipher,
		recvKeys:  newEpochKeys(keys.Cipher, keys.Recv),
		remote:    keys.Remote,
		cfg:       cfg,
		created:   time.Now(),
		bufPool:   datagramBuffers(bufSize),
		queue:     fifo.New[datagram](cfg.QueueLen),
		closing:   make(chan struct{}),
		readDone:  make(chan struct{}),
		rdeadline: newDeadline(),
	}
	c.sendKeys.Store(newEpochKeys(keys.Cipher, keys.Send))
	if sw, ok := inner.(SegmentWriter); ok {
		c.batch = newSendBatch(sw, c.batchSent)
	}
	if src, ok := inner.(PacketSource); ok {
		c.source = src
	}
	return c
}

// A PacketSource is an inner conn that can hand each datagram over as it arrives
// instead of being read. A DatagramConn over one opens each datagram on the source's
// goroutine (holepunch: the node's socket read loop) and needs no read loop of its own:
// one goroutine, one queue and one copy fewer per connection and per datagram.
type PacketSource interface {
	// SetReceiver makes the conn call f with every datagram from now on, the ones
	// already waiting for Read first, instead of queueing them for Read. f may be called
	// from several goroutines, also at the same time, and must not keep b.
	SetReceiver(f func(b []byte))
}

// RemotePublicKey is the authenticated identity of the peer.
func (c *DatagramConn) RemotePublicKey() ed25519.PublicKey { return c.remote }

// Cipher is the AEAD that seals this conn's datagrams, as the handshake chose it.
func (c *DatagramConn) Cipher() Cipher { return c.cipher }

// LastReceive is when the last authenticated datagram arrived (the creation time if none
// has). Forged datagrams do not move it, so it is a sound liveness signal.
func (c *DatagramConn) LastReceive() time.Time {
	return c.created.Add(time.Duration(c.lastRecv.Load()))
}

// LastSend is when the last datagram was sent (the creation time if none has been).
func (c *DatagramConn) LastSend() time.Time {
	return c.created.Add(time.Duration(c.lastSend.Load()))
}

// Stats returns a snapshot of the counters.
func (c *DatagramConn) Stats() DatagramStats {
	s := &c.stats
	return DatagramStats{
		Cipher:      c.cipher,
		SentPackets: s.sentPackets.Load(), SentBytes: s.sentBytes.Load(),
		RecvPackets: s.recvPackets.Load(), RecvBytes: s.recvBytes.Load(),
		Keepalives: s.keepalives.Load(), SendErrors: s.sendErrors.Load(),
		DroppedMalformed: s.malformed.Load(), DroppedAuth: s.auth.Load(),
		DroppedReplay: s.replay.Load(), DroppedTooOld: s.tooOld.Load(),
		QueueOverflows: s.overflows.Load(),
	}
}

// Write seals p as one datagram and sends it. An empty p sends a keepalive, which the
// peer authenticates and counts but does not return from Read. Write is safe for
// concurrent use. Failures of the inner conn other than closure are treated as datagram
// loss (counted in SendErrors): UDP sockets report transient ICMP errors on write, and
// the transport above copes with loss but not with a failing conn.
func (c *DatagramConn) Write(p []byte) (int, error) {
	select {
	case <-c.closing:
		return 0, net.ErrClosed
	default:
	}
	if len(p) > c.cfg.MaxPayload {
		return 0, fmt.Errorf("%w: %d > %d bytes", ErrDatagramTooLarge, len(p), c.cfg.MaxPayload)
	}
	ctr := c.sendCounter.Add(1) - 1
	if ctr >= MaxCounter {
		return 0, ErrCounterExhausted
	}
	aead := c.sendKey(ctr)
	if aead == nil {
		// ctr's epoch is long past (this Write stalled for a whole epoch while others
		// sent): the peer's replay window would refuse the datagram, so it is lost.
		c.stats.sendErrors.Add(1)
		return len(p), nil
	}
	if c.batch != nil {
		if !c.batch.add(func(dst []byte) []byte { return appendSealed(dst, c.cipher, aead, ctr, p) }) {
			return 0, fmt.Errorf("secure: datagram write: %w", net.ErrClosed)
		}
		c.lastSend.Store(int64(time.Since(c.created)))
		return len(p), nil
	}
	bp := c.bufPool.Get().(*[]byte)
	pkt := appendSealed((*bp)[:0], c.cipher, aead, ctr, p)
	_, err := c.inner.Write(pkt)
	n := len(pkt)
	c.bufPool.Put(bp)
	if err != nil {
		if isClosedErr(err) {
			return 0, fmt.Errorf("secure: datagram write: %w", err)
		}
		c.stats.sendErrors.Add(1)
		c.cfg.Logger.Debug("secure: datagram write failed", "err", err)
		return len(p), nil
	}
	c.lastSend.Store(int64(time.Since(c.created)))
	c.stats.sentPackets.Add(1)
	c.stats.sentBytes.Add(uint64(n))
	return len(p), nil
}

// sendKey returns the AEAD that seals counter ctr, or nil when ctr's epoch is neither
// the current one nor next to it. The first datagram of an epoch makes it current,
// deriving its key (rekey.go); concurrent Writes read the keys without a lock, and one
// holding a counter of the epoch before still finds its key.
func (c *DatagramConn) sendKey(ctr uint64) cipher.AEAD {
	e := epochOf(c.cipher, ctr)
	k := c.sendKeys.Load()
	if e == k.n {
		return k.cur
	}
	if e == k.n+1 {
		c.sendKeysMu.Lock()
		if k = c.sendKeys.Load(); e == k.n+1 {
			k = k.advance()
			c.sendKeys.Store(k)
		}
		c.sendKeysMu.Unlock()
	}
	return k.key(e)
}

// Read returns the payload of the next authenticated, non-replayed datagram. If p is
// shorter than the payload, the rest is discarded and io.ErrShortBuffer returned.
func (c *DatagramConn) Read(p []byte) (int, error) {
	c.startReader()
	for {
		if d, ok := c.queue.Pop(); ok {
			return c.deliver(p, d)
		}
		select {
		case <-c.queue.Ready():
		case <-c.readDone:
			if d, ok := c.queue.Pop(); ok {
				return c.deliver(p, d)
			}
			return 0, c.readErr
		case <-c.closing:
			return 0, net.ErrClosed
		case <-c.rdeadline.done():
			return 0, os.ErrDeadlineExceeded
		}
	}
}

func (c *DatagramConn) deliver(p []byte, d datagram) (int, error) {
	n := copy(p, d.payload)
	short := n < len(d.payload)
	c.bufPool.Put(d.buf)
	if short {
		return n, fmt.Errorf("secure: datagram of %d bytes into %d: %w", len(d.payload), len(p), io.ErrShortBuffer)
	}
	return n, nil
}

// receivePayloads makes the conn hand every authenticated payload to f as it is
// opened, on the goroutine that received it (the PacketSource's, or the read loop's),
// instead of queueing it for Read; it starts receiving. f may be called from several
// goroutines at the same time and must not keep the slice. Call it once, before any
// Read; Read then returns nothing.
func (c *DatagramConn) receivePayloads(f func([]byte)) {
	c.onPayload.Store(&f)
	c.startReader()
}

func (c *DatagramConn) startReader() {
	c.mu.Lock()
	if c.started || c.closed {
		c.mu.Unlock()
		return
	}
	c.started = true
	if c.source == nil {
		c.wg.Add(1)
		go c.readLoop()
	}
	c.mu.Unlock()
	// Outside the lock: SetReceiver hands over the datagrams already waiting at once,
	// and a payload receiver answers them, which writes, which takes the lock.
	if c.source != nil {
		c.source.SetReceiver(c.receive)
	}
}

// receive opens one datagram a PacketSource handed over (pkt is the source's) and
// queues its payload for Read.
func (c *DatagramConn) receive(pkt []byte) {
	select {
	case <-c.closing:
		return
	default:
	}
	bp := c.bufPool.Get().(*[]byte)
	if len(pkt) > cap(*bp) {
		c.bufPool.Put(bp)
		c.stats.malformed.Add(1) // larger than MaxPayload sealed
		return
	}
	if !c.admit(bp, append((*bp)[:0], pkt...)) {
		c.bufPool.Put(bp)
	}
}

// admit opens pkt, which lies in *bp, and queues its payload for Read, or hands it to
// the payload receiver (both the read loop and receive take datagrams this way). It
// reports whether bp went with the payload: false for a dropped datagram, a keepalive
// or a payload the receiver took, whose buffer the caller keeps.
// When QueueLen datagrams already wait, the payload is dropped and counted, and its
// buffer returned to the pool.
func (c *DatagramConn) admit(bp *[]byte, pkt []byte) bool {
	c.openMu.Lock()
	payload, ok := c.open(pkt)
	c.openMu.Unlock()
	switch {
	case !ok:
		return false
	case len(payload) == 0:
		c.stats.keepalives.Add(1)
		return false
	}
	if f := c.onPayload.Load(); f != nil {
		(*f)(payload)
		return false
	}
	if !c.queue.Push(datagram{buf: bp, payload: payload}) {
		c.bufPool.Put(bp)
		c.stats.overflows.Add(1)
	}
	return true
}

// batchSent counts one WriteSegments call of the batch writer. Failures other than
// closure are datagram loss, as in Write.
func (c *DatagramConn) batchSent(n, bytes int, err error) {
	if err != nil {
		if !isClosedErr(err) {
			c.stats.sendErrors.Add(uint64(n))
			c.cfg.Logger.Debug("secure: datagram write failed", "datagrams", n, "err", err)
		}
		return
	}
	c.stats.sentPackets.Add(uint64(n))
	c.stats.sentBytes.Add(uint64(bytes))
}

// readLoop reads, opens and checks datagrams until the inner conn fails or is closed.
func (c *DatagramConn) readLoop() {
	defer c.wg.Done()
	defer close(c.readDone)
	var bp *[]byte
	defer func() {
		if bp != nil {
			c.bufPool.Put(bp)
		}
	}()
	for {
		if bp == nil {
			bp = c.bufPool.Get().(*[]byte)
		}
		n, err := c.inner.Read(*bp)
		if err != nil {
			select {
			case <-c.closing:
				c.readErr = net.ErrClosed
				return
			default:
			}
			if errors.Is(err, syscall.ECONNREFUSED) {
				// An ICMP port-unreachable on a connected UDP socket. It can be forged
				// and the peer may come back, so it is not fatal; liveness decides.
				continue
			}
			c.readErr = fmt.Errorf("secure: datagram read: %w", err)
			return
		}
		if c.admit(bp, (*bp)[:n]) {
			bp = nil
		}
	}
}

// open checks one received datagram; it returns the payload (decrypted in place) or
// false after counting why it was dropped.
func (c *DatagramConn) open(pkt []byte) ([]byte, bool) {
	if len(pkt) > c.cfg.MaxPayload+PacketOverhead {
		c.stats.malformed.Add(1)
		return nil, false
	}
	ctr, err := parsePacketHeader(pkt)
	if err == nil {
		err = c.window.check(ctr)
	}
	var aead cipher.AEAD
	e := epochOf(c.cipher, ctr)
	if err == nil {
		// The window passed it, so ctr is at most ReplayWindowSize behind the highest
		// counter accepted: its epoch is the current one, the one before or, if it is
		// ahead, any. Only the next one gets a key, derived once; beyond it would take
		// 2^23 lost datagrams in a row, or a forger.
		if e == c.recvKeys.n+1 {
			c.recvKeys.deriveNext()
		}
		if aead = c.recvKeys.key(e); aead == nil {
			err = fmt.Errorf("%w: counter %d beyond the next key epoch", ErrMalformedPacket, ctr)
		}
	}
	var payload []byte
	if err == nil {
		_, payload, err = openSealed(pkt[packetHeaderLen:packetHeaderLen], c.cipher, aead, pkt)
	}
	switch {
	case err == nil:
	case errors.Is(err, ErrReplayed):
		c.stats.replay.Add(1)
		return nil, false
	case errors.Is(err, ErrTooOld):
		c.stats.tooOld.Add(1)
		return nil, false
	case errors.Is(err, ErrAuthFailed):
		c.stats.auth.Add(1)
		return nil, false
	default:
		c.stats.malformed.Add(1)
		return nil, false
	}
	c.window.accept(ctr)
	if e == c.recvKeys.n+1 {
		c.recvKeys = c.recvKeys.advance() // the peer has moved to the next epoch
	}
	c.lastRecv.Store(int64(time.Since(c.created)))
	c.stats.recvPackets.Add(1)
	c.stats.recvBytes.Add(uint64(len(pkt)))
	return payload, true
}

// readError is the error that ended the read loop, or nil while it runs.
func (c *DatagramConn) readError() error {
	select {
	case <-c.readDone:
		return c.readErr
	default:
		return nil
	}
}

// Close sends what is still batched, closes the inner conn and waits for the read
// loop. Idempotent.
func (c *DatagramConn) Close() error {
	c.once.Do(func() {
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		close(c.closing)
		if c.batch != nil {
			c.batch.close() // a closing session's last packets go out first
		}
		c.closeErr = c.inner.Close()
		c.rdeadline.stop()
	})
	c.wg.Wait()
	return c.closeErr
}

// LocalAddr returns the inner conn's local address.
func (c *DatagramConn) LocalAddr() net.Addr { return c.inner.LocalAddr() }

// RemoteAddr returns the inner conn's remote address.
func (c *DatagramConn) RemoteAddr() net.Addr { return c.inner.RemoteAddr() }

// SetDeadline sets the read deadline (implemented here) and the inner write deadline.
func (c *DatagramConn) SetDeadline(t time.Time) error {
	c.rdeadline.set(t)
	return c.inner.SetWriteDeadline(t)
}

// SetReadDeadline sets the read deadline. It works whatever the inner conn does with
// deadlines.
func (c *DatagramConn) SetReadDeadline(t time.Time) error {
	c.rdeadline.set(t)
	return nil
}

// SetWriteDeadline forwards to the inner conn (a UDP write rarely blocks).
func (c *DatagramConn) SetWriteDeadline(t time.Time) error { return c.inner.SetWriteDeadline(t) }

func isClosedErr(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrClosedPipe) || errors.Is(err, io.EOF)
}
