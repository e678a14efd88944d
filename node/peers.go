package node

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/swarmdb/swarmdb/bridge"
	"github.com/swarmdb/swarmdb/dht"
	"github.com/swarmdb/swarmdb/swarm"
)

const (
	// DefaultPeersInterval is how often a node looks its topic up for the
	// WebSocket URLs of other nodes (Config.PeersInterval). A URL is listed
	// while its last check is under three intervals old.
	DefaultPeersInterval = time.Minute
	// ProbeTimeout bounds one check of another node's URL: its status page
	// and a WebSocket upgrade, a few round trips.
	ProbeTimeout = 5 * time.Second
	// MaxPublicPeers caps the URLs /peers.json lists (and checks per round),
	// so a topic flooded with records costs a bounded amount of probing.
	MaxPublicPeers = 32
	// probeParallel bounds the checks in flight.
	probeParallel = 4
	// maxProbeBody bounds the status page read from another node.
	maxProbeBody = 1 << 20
)

// PublicPeer is one entry of /peers.json: a node of the topic that browsers
// can reach.
type PublicPeer struct {
	URL       string `json:"url"`
	PublicKey string `json:"public_key"` // the node's swarm key, hex
	// Verified is when the URL last passed the check: its /status.json
	// names the key that announced it, and its WebSocket upgrades.
	Verified time.Time `json:"verified"`
	// Self marks the node that served the list.
	Self bool `json:"self,omitempty"`
}

// PeersDoc is the body of GET /peers.json.
type PeersDoc struct {
	Topic string       `json:"topic"`
	Peers []PublicPeer `json:"peers"`
}

// PeersDoc returns the node's list of public WebSocket URLs of its topic:
// its own first (when it has one), then those it learned from the DHT and
// checked within the last three PeersIntervals, at most MaxPublicPeers.
func (n *Node) PeersDoc() PeersDoc {
	doc := PeersDoc{Topic: n.cfg.Topic, Peers: []PublicPeer{}}
	if u := n.cfg.PublicWebSocketURL; u != "" {
		doc.Peers = append(doc.Peers, PublicPeer{URL: u, PublicKey: hex.EncodeToString(n.PublicKey()), Verified: time.Now().UTC(), Self: true})
	}
	if n.peers != nil {
		doc.Peers = append(doc.Peers, n.peers.list(time.Now(), MaxPublicPeers-len(doc.Peers))...)
	}
	return doc
}

// startPeerDirectory starts the lookups behind /peers.json (a node without
// a DHT lists only itself).
func (n *Node) startPeerDirectory() {
	dn := n.swarm.Node()
	if dn == nil || len(n.cfg.Bootstrap) == 0 {
		return
	}
	topic := dht.ID(swarm.TopicOf(n.cfg.Topic))
	n.peers = newPeerDirectory(peerDirectoryConfig{
		Self:     hex.EncodeToString(n.PublicKey()),
		Interval: n.cfg.PeersInterval,
		Lookup: func(ctx context.Context) ([]dht.PeerRecord, error) {
			res, err := dn.Lookup(ctx, topic)
			if err != nil {
				return nil, err
			}
			return res.Peers, nil
		},
		Probe: func(ctx context.Context, wsURL, key string) error {
			return probePeer(ctx, n.cfg.ProbeClient, wsURL, key, n.cfg.Topic)
		},
		Logger: n.log.With("component", "peers"),
	})
	n.peers.start()
}

type peerDirectoryConfig struct {
	Self     string // our key, hex: never listed from the DHT
	Interval time.Duration
	Lookup   func(ctx context.Context) ([]dht.PeerRecord, error)
	Probe    func(ctx context.Context, wsURL, key string) error
	Logger   *slog.Logger
}

// peerDirectory keeps the checked public WebSocket URLs of the topic. One
// goroutine (run) looks the topic up every interval and checks the URLs
// that are new or due.
type peerDirectory struct {
	// Immutable after newPeerDirectory.
	cfg    peerDirectoryConfig
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// Guarded by mu.
	mu      sync.Mutex
	entries map[string]PublicPeer // by key
}

func newPeerDirectory(cfg peerDirectoryConfig) *peerDirectory {
	ctx, cancel := context.WithCancel(context.Background())
	return &peerDirectory{cfg: cfg, ctx: ctx, cancel: cancel, entries: make(map[string]PublicPeer)}
}

func (d *peerDirectory) start() {
	d.wg.Add(1)
	go d.run()
}

func (d *peerDirectory) close() {
	d.cancel()
	d.wg.Wait()
}

func (d *peerDirectory) run() {
	defer d.wg.Done()
	for {
		d.round()
		// Up to a fifth of jitter, so the nodes of a topic spread their
		// lookups.
		wait := d.cfg.Interval + rand.N(d.cfg.Interval/5+1)
		select {
		case <-d.ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// round looks the topic up once and checks every URL found that is new,
// changed, or last checked an interval ago or more.
func (d *peerDirectory) round() {
	ctx, cancel := context.WithTimeout(d.ctx, d.cfg.Interval)
	defer cancel()
	recs, err := d.cfg.Lookup(ctx)
	if err != nil {
		d.cfg.Logger.Debug("peers: lookup failed", "err", err)
		return
	}
	now := time.Now()
	var due []PublicPeer
	d.mu.Lock()
	for _, r := range recs {
		key := hex.EncodeToString(r.PublicKey)
		if r.WebSocketURL == "" || key == d.cfg.Self || len(due) == MaxPublicPeers {
			continue
		}
		if e, ok := d.entries[key]; ok && e.URL == r.WebSocketURL && now.Sub(e.Verified) < d.cfg.Interval {
			continue
		}
		due = append(due, PublicPeer{URL: r.WebSocketURL, PublicKey: key})
	}
	d.mu.Unlock()

	sem := make(chan struct{}, probeParallel)
	var wg sync.WaitGroup
	for _, p := range due {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			pctx, cancel := context.WithTimeout(ctx, ProbeTimeout)
			err := d.cfg.Probe(pctx, p.URL, p.PublicKey)
			cancel()
			d.mu.Lock()
			defer d.mu.Unlock()
			if err != nil {
				d.cfg.Logger.Debug("peers: check failed", "url", p.URL, "peer", p.PublicKey[:8], "err", err)
				if e, ok := d.entries[p.PublicKey]; ok && e.URL == p.URL {
					delete(d.entries, p.PublicKey)
				}
				return
			}
			p.Verified = time.Now().UTC()
			d.entries[p.PublicKey] = p
		}()
	}
	wg.Wait()
	d.mu.Lock()
	for k, e := range d.entries {
		if now.Sub(e.Verified) >= 3*d.cfg.Interval {
			delete(d.entries, k) // stale: no longer announced, or unreachable for long
		}
	}
	d.mu.Unlock()
}

// list returns up to limit fresh entries, most recently checked first.
func (d *peerDirectory) list(now time.Time, limit int) []PublicPeer {
	d.mu.Lock()
	out := make([]PublicPeer, 0, len(d.entries))
	for _, e := range d.entries {
		if now.Sub(e.Verified) < 3*d.cfg.Interval {
			out = append(out, e)
		}
	}
	d.mu.Unlock()
	slices.SortFunc(out, func(a, b PublicPeer) int {
		if c := b.Verified.Compare(a.Verified); c != 0 {
			return c
		}
		return strings.Compare(a.URL, b.URL)
	})
	if limit < 0 {
		limit = 0
	}
	if len(out) > limit {
		out = out[:limit]
	}
	return out
}

// probePeer checks that wsURL is reachable for browsers and belongs to the
// node with key: the status page at the same origin names that key and the
// topic, and a WebSocket upgrade there succeeds. The announcement itself
// was signed by the key (the storing DHT node checked the signature), so a
// node cannot get another server's URL listed: that server would have to
// claim the announcer's key.
func probePeer(ctx context.Context, client *http.Client, wsURL, key, topic string) error {
	u, err := url.Parse(wsURL)
	if err != nil {
		return err
	}
	page := *u
	page.Scheme = map[string]string{"ws": "http", "wss": "https"}[u.Scheme]
	page.Path, page.RawQuery = "/status.json", ""
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, page.String(), nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", page.String(), resp.Status)
	}
	var st struct {
		PublicKey string `json:"public_key"`
		Topic     string `json:"topic"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxProbeBody)).Decode(&st); err != nil {
		return fmt.Errorf("%s: %w", page.String(), err)
	}
	if st.PublicKey != key || st.Topic != topic {
		return fmt.Errorf("%s: serves key %.16s on topic %q, not the announcer's", page.String(), st.PublicKey, st.Topic)
	}
	c, err := bridge.Dial(ctx, wsURL, bridge.DialOptions{HTTPClient: client})
	if err != nil {
		return err
	}
	return c.Close()
}
