package bridge

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/swarmdb/swarmdb/db"
)

// Defaults for Limits and Config.
const (
	// DefaultMaxMessageSize bounds one message: far above any ToolDb record a client writes by
	// hand, and equal to secure's default stream message size, so a stream-0 message is never
	// split.
	DefaultMaxMessageSize = 64 << 10
	// DefaultMaxDepth bounds JSON nesting; ToolDb values are shallow, and a bound keeps a
	// hostile "[[[[…" from costing recursion.
	DefaultMaxDepth = 64
	// DefaultTopic is ToolDb's options.topic default.
	DefaultTopic = "tool-db-default"
	// ProtocolVersion is what we put in ping/pong's "swarmdb" field: 1
	// anti-entropy, 2 also broadcast over a tree (plumtree.go).
	ProtocolVersion = 2
	// treeVersion is the first version that takes part in the tree; older
	// swarmdb peers get every put in full.
	treeVersion = 2
	// DefaultGraftTimeout is Config.GraftTimeout's default: how long a put
	// announced on a lazy link may take to come down the tree before it is
	// asked for. Delivery through a busy mesh of 64 nodes takes about
	// 0.6 s at the median and 1.3 s at the 95th percentile (see the
	// README); a graft asked too early costs a copy and turns a link eager
	// that the next copy prunes again.
	DefaultGraftTimeout = time.Second
	// ihaveDelay: puts announced on a lazy link within this long go out in
	// one "ihave" list.
	ihaveDelay = 50 * time.Millisecond
	// defaultGetTimeout: ToolDb's getData waits 1 s for a relayed answer; we give peers that
	// relay again a little longer.
	defaultGetTimeout = 2 * time.Second
	// pendingGetTTL: how long a relayed get's asker is remembered for a late answer.
	pendingGetTTL = 10 * time.Second
	// maxRelayTo: a relayed message's "to" list grows by the peers it is sent to only up to
	// this many ids (about 1.5 KB).
	maxRelayTo = 64
	// behindBytes: a peer with more than this waiting in its outbound queue (or half of
	// OutboundQueue's messages) is behind. Bulk senders (anti-entropy) wait for it to drain,
	// and puts relayed to a swarmdb peer that is behind become a short "have" list of their
	// keys, sent when its queue has room: it asks only for those no other neighbour brought it
	// first. Its queue, and our memory, stay small however far behind it is, and it is never
	// cut off as a slow consumer.
	behindBytes = 256 << 10
	// maxLagged bounds the keys noted for one peer that fell behind; past it the keys are
	// dropped and a store comparison is scheduled instead.
	maxLagged = 1 << 16
	// dedupSize: remembered (type,id) pairs and record hashes; ToolDb's grow forever.
	dedupSize = 1 << 16
	// askedFor: how long a record version we asked one peer for is not asked of another that
	// lists it in a "have" (see wantMissing); askedSize bounds how many are remembered.
	askedFor  = time.Minute
	askedSize = 1 << 15
	// crossedGrace: how long a crossed connection that lost after it identified, and that its
	// remote dialled, is left for that remote to close (see Peer.endCrossed).
	crossedGrace = 5 * time.Second
	// rateStrikeInterval: going over the rate costs at most one strike per interval (see
	// Peer.rateLimited), so a burst is answered, not punished.
	rateStrikeInterval = time.Second
	// maxPeekRef: a rate-limited message larger than this is not parsed for its id.
	maxPeekRef = 4096
)

// Limits bound what one connection may cost us. Zero values mean the defaults noted.
type Limits struct {
	// MaxMessageSize in bytes, both ways. Zero means DefaultMaxMessageSize.
	MaxMessageSize int
	// MaxDepth of JSON nesting. Zero means DefaultMaxDepth.
	MaxDepth int
	// MessagesPerSecond is the sustained rate of messages a peer may send; Burst is how many
	// it may send at once. Zero means 2000 and 4000. A ToolDb peer's messages beyond it are
	// dropped, each answered RATE_LIMITED with its id in ref, and the connection stays (going
	// over the rate costs at most one strike a second, so only a flood that goes on for
	// about MaxStrikes seconds is closed); a swarmdb node's are read later, so its
	// transport's flow control slows it down and nothing it relays is lost.
	MessagesPerSecond float64
	Burst             int
	// OutboundQueue and OutboundBytes bound the messages waiting to be written to a peer, in
	// number and in bytes. A ToolDb peer whose next message does not fit is a slow consumer
	// and is disconnected; a swarmdb node that falls behind is sent short "have" lists instead
	// of relayed puts (see behindBytes). Zero means 4096 and 4 MiB.
	OutboundQueue int
	OutboundBytes int
	// WriteTimeout bounds one write; a peer that stops reading is disconnected. Zero means 10 s.
	WriteTimeout time.Duration
	// MaxStrikes is how many bad messages (malformed, unknown type, refused records; going
	// over the rate, once a second) a peer may send before it is disconnected; one strike is
	// forgiven every StrikeDecay. Zero means 32 and 10 s.
	MaxStrikes  int
	StrikeDecay time.Duration
	// MaxSubscriptions per connection. Zero means 4096.
	MaxSubscriptions int
	// MaxInflight is how many puts and function calls of one connection are processed at
	// once (they wait on signature checks and fsync; more in flight lets the store group
	// commits). Zero means 64.
	MaxInflight int
	// MaxQueryKeys bounds a queryAck. Zero means 10000.
	MaxQueryKeys int
	// IdentifyTimeout is how long a connection may stay without a verified ping or pong
	// (a ToolDb server on another topic never answers our ping). Zero means 30 s.
	IdentifyTimeout time.Duration
}

func (l *Limits) setDefaults() {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&l.MaxMessageSize, DefaultMaxMessageSize)
	def(&l.MaxDepth, DefaultMaxDepth)
	if l.MessagesPerSecond <= 0 {
		l.MessagesPerSecond = 2000
	}
	def(&l.Burst, 4000)
	def(&l.OutboundQueue, 4096)
	def(&l.OutboundBytes, 4<<20)
	// Patient senders fill the queue to half, so it must hold two messages of the largest size.
	l.OutboundBytes = max(l.OutboundBytes, 2*l.MaxMessageSize)
	if l.WriteTimeout <= 0 {
		l.WriteTimeout = 10 * time.Second
	}
	def(&l.MaxStrikes, 32)
	if l.StrikeDecay <= 0 {
		l.StrikeDecay = 10 * time.Second
	}
	def(&l.MaxSubscriptions, 4096)
	def(&l.MaxInflight, 64)
	def(&l.MaxQueryKeys, 10000)
	if l.IdentifyTimeout <= 0 {
		l.IdentifyTimeout = 30 * time.Second
	}
}

// Function is a server function (ToolDb's addServerFunction): args as the client sent them,
// the result is encoded as JSON into functionReturn.return. An error becomes code "ERR".
type Function func(ctx context.Context, args []byte) (any, error)

// Config configures a Bridge. Only Store is required.
type Config struct {
	// Store holds the records. Required; the bridge does not close it.
	Store *db.Store
	// Identity is the node's ToolDb peer account: it signs our peer descriptor, and its
	// address's last 20 characters are our client id. Zero means a fresh key per New.
	Identity *db.User
	// Topic is sent in our descriptor and required in peers'. Zero means DefaultTopic.
	Topic string
	// Server says we are a server peer (isServer in ping/pong): other servers relay puts to
	// us, and we are listed in pong.servers.
	Server bool
	// Host and Port are advertised in our descriptor (ping, pong and pong.servers): where
	// ToolDb peers can dial us. Zero means none (empty host, port 0), which ToolDb's client
	// skips when it collects servers; ToolDb's own default, 127.0.0.1:8080, would send other
	// peers to their own machine.
	Host string
	Port int
	// Functions are the server functions clients may call by name. Nil means none.
	Functions map[string]Function
	// AllowedOrigins are the browser origins the WebSocket handler accepts (path.Match
	// patterns on the origin host, or on "scheme://host" when the pattern has "://"). Nil
	// means any origin, as ToolDb's server does; requests without Origin are always allowed.
	AllowedOrigins []string
	// HTTPClient makes ConnectTo's WebSocket upgrades. Zero means http.DefaultClient.
	HTTPClient *http.Client
	// Limits bound each connection.
	Limits Limits
	// GetTimeout bounds Get's wait for peers when the key is not stored. Zero means 2 s.
	GetTimeout time.Duration
	// DisableSync turns off the anti-entropy comparisons between swarmdb nodes: we neither
	// start them nor answer them. Have and want lists, which stand in for puts relayed to a
	// peer that fell behind, are still answered.
	DisableSync bool
	// DisablePlumtree sends every put to every swarmdb peer (flooding, as
	// before the broadcast tree; for comparisons). Older swarmdb peers and
	// ToolDb peers always get every put.
	DisablePlumtree bool
	// GraftTimeout is how long a put announced to us on a lazy link may take
	// to arrive through the tree before we ask the announcer for it. Zero
	// means DefaultGraftTimeout.
	GraftTimeout time.Duration
	// SyncInterval is how often the stores of two connected swarmdb nodes are compared again
	// after the comparison on connect, so a record lost on the way (a message dropped by the
	// rate limit, a peer cut off as a slow consumer) is repaired within about this long.
	// Zero means 1 minute; each wait is shortened at random by up to a quarter.
	SyncInterval time.Duration
	// OnPeer, if set, is called (from the peer's goroutine, never under a lock) when a peer
	// identifies itself and when it goes away.
	OnPeer func(PeerEvent)
	// Now is the clock. Zero means time.Now.
	Now func() time.Time
	// Logger receives the bridge's logs. Zero means discard.
	Logger *slog.Logger
}

// PeerEvent reports a peer's identification (Up) or its end (!Up, Err says why).
type PeerEvent struct {
	Up   bool
	Peer PeerStatus
	Err  error
}

// Stats are bridge-wide counters.
type Stats struct {
	Peers            int
	MessagesIn       uint64
	MessagesOut      uint64
	BytesIn          uint64
	BytesOut         uint64
	Duplicates       uint64 // messages dropped by (type,id) or hash dedup
	Rejected         uint64 // bad messages and refused records
	RateLimited      uint64 // messages of ToolDb peers dropped by Limits.MessagesPerSecond (also in Rejected)
	Throttled        uint64 // messages of swarmdb peers read late to keep to Limits.MessagesPerSecond
	Relayed          uint64 // put/crdtPut copies sent on to other peers
	Pushes           uint64 // subscription pushes
	SyncMessages     uint64 // swarmdbSync messages sent
	SyncRounds       uint64 // comparisons from the root we started (on connect, periodic)
	Announced        uint64 // keys listed to peers in "have": repairs we accepted, puts not relayed (Lagged)
	Lagged           uint64 // relayed puts a peer that fell behind got as a "have" entry instead (see behindBytes)
	Asked            uint64 // keys asked for in "want" messages
	NotAsked         uint64 // keys listed in a "have" that we lacked but had asked another peer for already
	CatchupSent      uint64 // records sent by anti-entropy
	SlowDisconnects  uint64
	AbuseDisconnects uint64
	// Broadcast tree (plumtree.go): puts announced on lazy links instead of
	// sent in full (IHaves, items), grafts and prunes sent, and the links
	// lazy now.
	IHaves, Grafts, Prunes uint64
	LazyLinks              int
}

// Bridge is the message layer of one node over one store. New starts nothing; Start starts the
// store watcher that drives subscriptions and the sync index; Attach adds connections; Close
// ends every peer and waits for every goroutine.
//
// Locking. Each mutex guards the group of fields under it. They are taken one at a time,
// with these exceptions, always in this order (the left one held while the right one is
// taken, never the other way):
//
//	treeMu   → seenIDs' lock     onIHave and treeTick ask the dedup set under the tree's lock
//	index.mu → the store's locks the tree index reads the store while it builds or updates
//	mu       → the store's locks Start opens the store watcher
//
// Every other lock is a leaf, held while nothing else is taken: each Peer's mu and strikeMu,
// subs' lock, the dedup sets' and the outbound queues' locks. Peer.mu and Bridge.mu are never
// held together. No lock is held while a message goes into an outbound queue, a user
// callback runs, or a connection is closed.
type Bridge struct {
	// Immutable after New.
	cfg      Config
	log      *slog.Logger
	store    *db.Store
	clientID string
	desc     PeerDesc

	ctx    context.Context // set by Start, cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	seenIDs    *dedup // (type, id) pairs seen or sent
	seenHashes *dedup // h+s of records verified
	asked      *dedup // key and item hash of records asked for by "want", recently

	index syncIndex      // locks itself
	subs  *subscriptions // locks itself

	treeMu    sync.Mutex // guards tree, treeTimer, treeDue and deferred
	tree      *plumtree[*Peer]
	treeTimer *time.Timer    // runs treeTick at treeDue
	treeDue   time.Time      // zero while the timer is not armed
	deferred  []deferredWant // asks for "have" items, held while the tree may bring them

	mu       sync.Mutex // guards the fields below; see the lock order above
	started  bool
	closed   bool
	peers    map[*Peer]struct{}
	byClient map[string]*Peer       // identified peers by client id
	pending  map[string]*pendingGet // relayed or local gets by message id
	servers  map[string]PeerDesc    // verified server descriptors heard of, by address
	haves    []haveNote             // repairs to announce to the other peers (see announce)

	stats struct {
		msgsIn, msgsOut, bytesIn, bytesOut, dups, rejected, relayed, pushes,
		syncMsgs, syncRounds, announced, lagged, asked, notAsked, catchupSent, slow, abuse, rateLimited, throttled,
		ihaves, grafts, prunes atomic.Uint64
	}
}

type pendingGet struct {
	key     string         // only a record of this key answers
	asker   *Peer          // nil for a local Get
	waiter  chan db.Record // local Get: receives the stored record
	typ     string         // TypeGet or TypeCRDTGet: the reply type the asker expects
	expires time.Time
}

// New checks cfg and prepares a bridge; it starts nothing.
func New(cfg Config) (*Bridge, error) {
	if cfg.Store == nil {
		return nil, errors.New("bridge: Config.Store is required")
	}
	cfg.Limits.setDefaults()
	if cfg.Topic == "" {
		cfg.Topic = DefaultTopic
	}
	if cfg.SyncInterval <= 0 {
		cfg.SyncInterval = defaultSyncInterval
	}
	if cfg.GetTimeout <= 0 {
		cfg.GetTimeout = defaultGetTimeout
	}
	if cfg.GraftTimeout <= 0 {
		cfg.GraftTimeout = DefaultGraftTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Identity == nil {
		u, err := db.NewUser(nil)
		if err != nil {
			return nil, err
		}
		cfg.Identity = u
	}
	b := &Bridge{
		cfg:        cfg,
		log:        cfg.Logger,
		store:      cfg.Store,
		clientID:   ClientID(cfg.Identity.Address()),
		seenIDs:    newDedup(dedupSize),
		seenHashes: newDedup(dedupSize),
		asked:      newDedupFor(askedSize, askedFor),
		peers:      map[*Peer]struct{}{},
		byClient:   map[string]*Peer{},
		subs:       newSubscriptions(),
		pending:    map[string]*pendingGet{},
		servers:    map[string]PeerDesc{},
		tree:       newPlumtree[*Peer](cfg.GraftTimeout),
	}
	d, err := SignPeerDesc(cfg.Identity, cfg.Topic, cfg.Now().UnixMilli(), cfg.Host, int64(cfg.Port))
	if err != nil {
		return nil, err
	}
	b.desc = d
	b.index.store = cfg.Store
	return b, nil
}

// ClientID is ToolDb's getClientAddress: the last 20 characters of a peer address.
func ClientID(address string) string {
	if len(address) <= 20 {
		return address
	}
	return address[len(address)-20:]
}

// peerDescHash is what a peer descriptor's signature covers:
// hex(sha256(topic + "-" + timestamp + "-" + host + ":" + port)).
func peerDescHash(topic string, ts int64, host string, port int64) string {
	s := topic + "-" + strconv.FormatInt(ts, 10) + "-" + host + ":" + strconv.FormatInt(port, 10)
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// SignPeerDesc builds the descriptor ToolDb's getPeerSignature would for u.
func SignPeerDesc(u *db.User, topic string, ts int64, host string, port int64) (PeerDesc, error) {
	sig, err := u.SignHash(peerDescHash(topic, ts, host, port))
	if err != nil {
		return PeerDesc{}, err
	}
	return PeerDesc{Topic: topic, Timestamp: ts, Host: host, Port: port, Address: u.Address(), Sig: sig}, nil
}

// VerifyPeerDesc checks d's signature (which ToolDb's verifyPeer never really does), that it is
// for topic, and that its timestamp is not beyond now plus db.MaxClockSkew.
func VerifyPeerDesc(d *PeerDesc, topic string, now time.Time) error {
	if d.Topic != topic {
		return fmt.Errorf("%w: topic %q, want %q", ErrBadPeer, truncate(d.Topic, 64), topic)
	}
	if d.Timestamp > now.Add(db.MaxClockSkew).UnixMilli() {
		return fmt.Errorf("%w: timestamp in the future", ErrBadPeer)
	}
	if err := db.VerifySignature(d.Address, peerDescHash(d.Topic, d.Timestamp, d.Host, d.Port), d.Sig); err != nil {
		return fmt.Errorf("%w: %w", ErrBadPeer, err)
	}
	return nil
}

// ClientID returns our ToolDb client id.
func (b *Bridge) ClientID() string { return b.clientID }

// Descriptor returns our signed peer descriptor.
func (b *Bridge) Descriptor() PeerDesc { return b.desc }

// Store returns the bridge's store.
func (b *Bridge) Store() *db.Store { return b.store }

// Start starts the store watcher (subscription pushes, sync index upkeep) and the janitor for
// pending gets. It returns at once; ctx is not retained beyond its values.
func (b *Bridge) Start(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	if b.started {
		return nil
	}
	b.ctx, b.cancel = context.WithCancel(context.WithoutCancel(ctx))
	b.started = true
	w := b.store.WatchPrefix("")
	b.wg.Add(2)
	go b.watchLoop(w)
	go b.janitor()
	return nil
}

func (b *Bridge) running() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.started && !b.closed
}

// Close ends every peer and waits for every goroutine the bridge started. Idempotent. The
// store stays open.
func (b *Bridge) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	peers := make([]*Peer, 0, len(b.peers))
	for p := range b.peers {
		peers = append(peers, p)
	}
	started := b.started
	b.mu.Unlock()
	for _, p := range peers {
		p.close(ErrClosed)
	}
	if started {
		b.cancel()
	}
	b.treeMu.Lock()
	if b.treeTimer != nil {
		b.treeTimer.Stop()
	}
	b.treeMu.Unlock()
	b.wg.Wait()
	return nil
}

// Stats returns a snapshot of the counters.
func (b *Bridge) Stats() Stats {
	b.mu.Lock()
	n := len(b.peers)
	b.mu.Unlock()
	s := &b.stats
	b.treeMu.Lock()
	lazy, _ := b.tree.size()
	b.treeMu.Unlock()
	return Stats{
		IHaves: s.ihaves.Load(), Grafts: s.grafts.Load(), Prunes: s.prunes.Load(), LazyLinks: lazy,
		Peers: n, MessagesIn: s.msgsIn.Load(), MessagesOut: s.msgsOut.Load(),
		BytesIn: s.bytesIn.Load(), BytesOut: s.bytesOut.Load(), Duplicates: s.dups.Load(),
		Rejected: s.rejected.Load(), Relayed: s.relayed.Load(), Pushes: s.pushes.Load(),
		SyncMessages: s.syncMsgs.Load(), SyncRounds: s.syncRounds.Load(), Announced: s.announced.Load(), Lagged: s.lagged.Load(), Asked: s.asked.Load(), NotAsked: s.notAsked.Load(), CatchupSent: s.catchupSent.Load(),
		SlowDisconnects: s.slow.Load(), AbuseDisconnects: s.abuse.Load(), RateLimited: s.rateLimited.Load(), Throttled: s.throttled.Load(),
	}
}

// Peers returns the status of every attached connection.
func (b *Bridge) Peers() []PeerStatus {
	b.mu.Lock()
	ps := make([]*Peer, 0, len(b.peers))
	for p := range b.peers {
		ps = append(ps, p)
	}
	b.mu.Unlock()
	out := make([]PeerStatus, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.Status())
	}
	return out
}

// KnownServers returns the verified server descriptors heard in pongs (ToolDb's serverPeers,
// which it never dials; the node may).
func (b *Bridge) KnownServers() []PeerDesc {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]PeerDesc, 0, len(b.servers))
	for _, d := range b.servers {
		out = append(out, d)
	}
	return out
}

// newID returns a fresh 10-character message id from ToolDb's textRandom alphabet.
func newID() string {
	const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXZabcdefghijklmnopqrstuvwxyz"
	var b [10]byte
	for i := range b {
		b[i] = alphabet[rand.IntN(len(alphabet))]
	}
	return string(b[:])
}

// Put stores rec (verified strictly) and, if it changed the store, sends it to our server
// peers (to every peer when we are not a server, as a ToolDb client sends to its servers).
// Subscribers are notified through the store watcher.
func (b *Bridge) Put(ctx context.Context, rec db.Record) (db.Outcome, error) {
	out, err := b.store.Put(ctx, rec)
	if err != nil {
		return out, err
	}
	b.seenHashes.add(recordID(&rec))
	if out.Changed() {
		typ := TypePut
		if rec.CRDT != "" {
			typ = TypeCRDTPut
		}
		m := &Message{Type: typ, ID: newID(), Data: &rec}
		b.seenIDs.add(typ + "\x00" + m.ID)
		b.broadcast(m, nil, !b.cfg.Server)
	}
	return out, nil
}

// Get returns the record stored under key. If there is none and peers are connected, it asks
// them (a get relayed through the mesh) and waits up to Config.GetTimeout for a verified answer,
// which is stored before it is returned. Without an answer the error wraps db.ErrNotFound.
func (b *Bridge) Get(ctx context.Context, key string) (db.Record, error) {
	rec, err := b.store.Get(key)
	if !errors.Is(err, db.ErrNotFound) || !b.running() {
		return rec, err
	}
	m := &Message{Type: TypeGet, ID: newID(), Key: key}
	waiter := make(chan db.Record, 1)
	b.mu.Lock()
	b.pending[m.ID] = &pendingGet{key: key, waiter: waiter, typ: TypeGet, expires: b.cfg.Now().Add(pendingGetTTL)}
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.pending, m.ID)
		b.mu.Unlock()
	}()
	b.seenIDs.add(TypeGet + "\x00" + m.ID)
	if b.broadcast(m, nil, true) == 0 {
		return rec, err
	}
	t := time.NewTimer(b.cfg.GetTimeout)
	defer t.Stop()
	select {
	case r := <-waiter:
		return r, nil
	case <-t.C:
		return db.Record{}, fmt.Errorf("%w: %q: %w", db.ErrNotFound, key, ErrTimeout)
	case <-ctx.Done():
		return db.Record{}, ctx.Err()
	case <-b.ctx.Done():
		return db.Record{}, ErrClosed
	}
}

// Query returns the stored keys starting with prefix (anti-entropy keeps server stores
// converged, so the local answer is the mesh's).
func (b *Bridge) Query(prefix string) ([]string, error) { return b.store.Query(prefix) }

// Subscribe returns a watcher of key's accepted changes, whichever peer or local Put made them.
func (b *Bridge) Subscribe(key string) *db.Watcher { return b.store.Watch(key) }

// broadcast sends m to identified peers other than except and those already in m.To: to
// server peers only, or to every peer when all is set. It appends our id to m.To first, as
// ToolDb's sendToAll does, and returns how many peers it was sent to (not counting those
// left a "have" instead, see behindBytes).
func (b *Bridge) broadcast(m *Message, except *Peer, all bool) int {
	m.To = appendUnique(m.To, b.clientID)
	b.mu.Lock()
	targets := make([]*Peer, 0, len(b.byClient))
	var ids []string
	for id, p := range b.byClient {
		if p == except || contains(m.To, id) {
			continue
		}
		if all || p.isServer.Load() {
			targets = append(targets, p)
			ids = append(ids, id)
		}
	}
	b.mu.Unlock()
	if len(targets) == 0 {
		return 0
	}
	// A swarmdb peer that has fallen behind gets the key in a "have" list later instead; one
	// whose link is lazy in the broadcast tree gets the put announced in an "ihave" list.
	var lazy []*Peer
	if m.Data != nil && (m.Type == TypePut || m.Type == TypeCRDTPut) {
		n := 0
		for i, p := range targets {
			if p.swarmdb.Load() && p.out.behind() {
				p.lag(m.Data.Key)
				continue
			}
			if b.lazyLink(p) {
				lazy = append(lazy, p)
				continue
			}
			targets[n], ids[n] = p, ids[i]
			n++
		}
		targets, ids = targets[:n], ids[:n]
	}
	for _, p := range lazy {
		p.announceLazily(m.Data.Key, m.ID)
	}
	// "to" lists who already has the message; the peers we send it to
	// will, so their neighbours need not send it to them again. In a
	// dense mesh this saves a good share of the copies. The list stops
	// growing at maxRelayTo ids so a message stays small in a large mesh.
	// A peer that was left a "have" or an "ihave" is not listed: a
	// neighbour with room for it, or on its branch of the tree, may bring
	// it the put sooner.
	if len(m.To)+len(ids) <= maxRelayTo {
		m.To = appendUnique(m.To, ids...)
	}
	msg := AppendMessage(nil, m)
	for _, p := range targets {
		p.sendRaw(msg)
	}
	return len(targets)
}

func appendUnique(to []string, ids ...string) []string {
	out := append([]string(nil), to...)
	for _, id := range ids {
		if id != "" && !contains(out, id) {
			out = append(out, id)
		}
	}
	return out
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// watchLoop turns accepted store changes into subscription pushes and sync index updates.
func (b *Bridge) watchLoop(w *db.Watcher) {
	defer b.wg.Done()
	defer func() { w.Close() }()
	for {
		ev, err := w.Next(b.ctx)
		if errors.Is(err, db.ErrWatchOverflow) {
			// We fell behind: resubscribe and rebuild the index from the store.
			b.log.Warn("store watcher overflow; rebuilding sync index")
			w = b.store.WatchPrefix("")
			b.index.invalidate()
			continue
		}
		if err != nil {
			return
		}
		b.index.update(&ev)
		b.push(&ev)
	}
}

// recordMessages returns what to send peer p for key: a plain record as one put; a CRDT key as
// every signed source (crdtPut each) to a swarmdb peer, which verifies strictly, or as ToolDb's
// merged record to a ToolDb peer, which merges without verifying. rec is the record at hand
// (nil: read the store).
func (b *Bridge) recordMessages(p *Peer, key string, rec *db.Record, isCRDT bool) []Message {
	if rec != nil && !isCRDT && rec.CRDT == "" {
		r := *rec
		return []Message{{Type: TypePut, Data: &r}}
	}
	if p.swarmdb.Load() {
		st, err := b.store.CRDT(key)
		if err != nil {
			if r, err := b.store.Get(key); err == nil && r.CRDT == "" {
				return []Message{{Type: TypePut, Data: &r}}
			}
			return nil
		}
		out := make([]Message, 0, len(st.Sources))
		// The head first, so the answer to a crdtGet (which takes the request id) is the
		// newest source.
		head := st.Head
		out = append(out, Message{Type: TypeCRDTPut, Data: &head})
		for i := range st.Sources {
			if st.Sources[i].Hash == head.Hash && st.Sources[i].Sig == head.Sig {
				continue
			}
			s := st.Sources[i]
			out = append(out, Message{Type: TypeCRDTPut, Data: &s})
		}
		return out
	}
	r, err := b.store.MergedRecord(key)
	if err != nil {
		return nil
	}
	typ := TypePut
	if r.CRDT != "" {
		typ = TypeCRDTPut
	}
	return []Message{{Type: typ, Data: &r}}
}

// janitor forgets relayed gets nobody answered.
func (b *Bridge) janitor() {
	defer b.wg.Done()
	t := time.NewTicker(pendingGetTTL / 2)
	defer t.Stop()
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-t.C:
		}
		now := b.cfg.Now()
		b.mu.Lock()
		for id, pg := range b.pending {
			if pg.asker != nil && now.After(pg.expires) {
				delete(b.pending, id)
			}
		}
		b.mu.Unlock()
	}
}
