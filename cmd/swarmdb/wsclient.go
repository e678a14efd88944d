package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/swarmdb/swarmdb/bridge"
	"github.com/swarmdb/swarmdb/db"
)

// put, get and watch are ToolDb clients of a running node: they dial its
// WebSocket endpoint (`swarmdb node --ws`), identify with a ping carrying a
// peer descriptor signed by a ToolDb (ECDSA P-256) account, and then speak
// ToolDb 2.6.6's messages. The node verifies the descriptor against its
// topic, so the client must name the same topic (--topic, or SWARMDB_TOPIC).

// Client timeouts.
const (
	// clientDialTimeout bounds the WebSocket dial plus the ping/pong.
	clientDialTimeout = 10 * time.Second
	// clientDefaultTimeout bounds put's confirmation and get's answer. A
	// node asks its peers for a key it does not hold and waits up to 2 s
	// for them (bridge's GetTimeout), so 5 s leaves room for the relay.
	clientDefaultTimeout = 5 * time.Second
	// putPollInterval spaces put's confirming gets: the node stores puts
	// asynchronously, so the first get may still see the old value.
	putPollInterval = 50 * time.Millisecond
	// clientInbox is how many parsed messages may wait for the caller.
	clientInbox = 256
)

// errNotFound: get had no answer within the timeout.
var errNotFound = errors.New("not found")

// clientFlags are the flags put, get and watch share.
type clientFlags struct {
	ws      string // as given; clientArgs.url is the URL
	topic   string
	keyFile string
	timeout time.Duration
	asJSON  bool
}

func (c *clientFlags) register(f *flags, withTimeout bool) {
	f.StringVar(&c.ws, "ws", "127.0.0.1:9000", "the node's WebSocket endpoint: host:port, ws://host:port or wss://host[:port]")
	f.StringVar(&c.topic, "topic", os.Getenv("SWARMDB_TOPIC"), "the node's topic (default $SWARMDB_TOPIC); the node refuses clients of another topic")
	f.StringVar(&c.keyFile, "key", "", `ToolDb account file ({"pub","priv"} hex, or a node's identity.json), created (0600) if missing; default a fresh account per run`)
	if withTimeout {
		f.DurationVar(&c.timeout, "timeout", clientDefaultTimeout, "how long to wait for the node's answer")
	}
	f.BoolVar(&c.asJSON, "json", false, "print whole records as JSON")
}

// wsClient is one ToolDb client connection to a node. A reader goroutine
// parses incoming messages into inbox; the caller writes.
type wsClient struct {
	conn     *bridge.WSConn
	user     *db.User
	clientID string

	inbox  chan bridge.Message
	ctx    context.Context // ends the reader
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu  sync.Mutex
	err error // why the reader stopped
}

// dialNode connects to the node at url, pings as a ToolDb client of topic
// and waits for the pong.
func dialNode(ctx context.Context, url, topic string, user *db.User) (*wsClient, error) {
	// The node refuses a client id that another live connection holds. Our
	// own previous connection (the last put with the same --key) can still
	// be closing on the node's side, so retry that refusal briefly.
	for wait := 50 * time.Millisecond; ; wait *= 2 {
		c, err := dialNodeOnce(ctx, url, topic, user)
		if !errors.Is(err, errIDClaimed) || wait > time.Second {
			return c, err
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil, err
		}
	}
}

// errIDClaimed marks the node's ID_CLAIMED refusal.
var errIDClaimed = errors.New("client id held by another connection")

func dialNodeOnce(ctx context.Context, url, topic string, user *db.User) (*wsClient, error) {
	if topic == "" {
		return nil, errors.New("no topic: pass --topic (the node's --topic) or set SWARMDB_TOPIC")
	}
	ctx, cancel := context.WithTimeout(ctx, clientDialTimeout)
	defer cancel()
	conn, err := bridge.Dial(ctx, url, bridge.DialOptions{})
	if err != nil {
		return nil, err
	}
	c := &wsClient{conn: conn, user: user, clientID: bridge.ClientID(user.Address()),
		inbox: make(chan bridge.Message, clientInbox)}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.wg.Add(1)
	go c.readLoop()

	// A ToolDb client advertises its options.host/port, 127.0.0.1:8080 by
	// default; nobody dials a client, so they only need to be signed.
	desc, err := bridge.SignPeerDesc(user, topic, time.Now().UnixMilli(), "127.0.0.1", 8080)
	if err != nil {
		c.Close()
		return nil, err
	}
	ping := &bridge.Message{Type: bridge.TypePing, ID: newMsgID(), ClientID: c.clientID, Peer: &desc}
	if err := c.send(ctx, ping); err != nil {
		c.Close()
		return nil, err
	}
	for {
		m, err := c.next(ctx)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("no pong from %s: %w", url, err)
		}
		switch {
		case m.Type == bridge.TypePong && m.ID == ping.ID:
			return c, nil
		case m.Type == bridge.TypeError && m.Ref == ping.ID:
			c.Close()
			if m.Code == "ID_CLAIMED" {
				return nil, fmt.Errorf("node refused us (%s): %s: %w", m.Code, m.Error, errIDClaimed)
			}
			return nil, fmt.Errorf("node refused us (%s): %s", m.Code, m.Error)
		}
	}
}

// send writes m, with our client id in "to" as ToolDb's sender does.
func (c *wsClient) send(ctx context.Context, m *bridge.Message) error {
	m.To = []string{c.clientID}
	return c.conn.WriteMessage(ctx, bridge.AppendMessage(nil, m))
}

// next returns the next message from the node.
func (c *wsClient) next(ctx context.Context) (bridge.Message, error) {
	select {
	case m, ok := <-c.inbox:
		if !ok {
			c.mu.Lock()
			defer c.mu.Unlock()
			return bridge.Message{}, fmt.Errorf("connection to the node lost: %w", c.err)
		}
		return m, nil
	case <-ctx.Done():
		return bridge.Message{}, ctx.Err()
	}
}

func (c *wsClient) readLoop() {
	defer c.wg.Done()
	defer close(c.inbox)
	for {
		raw, err := c.conn.ReadMessage(c.ctx)
		if err != nil {
			c.mu.Lock()
			c.err = err
			c.mu.Unlock()
			return
		}
		m, err := bridge.ParseMessage(raw, 0)
		if err != nil {
			continue // a message type we do not know (or a bad one): not ours to judge
		}
		select {
		case c.inbox <- m:
		case <-c.ctx.Done():
			return
		}
	}
}

// Close closes the connection and waits for the reader.
func (c *wsClient) Close() {
	c.cancel()
	_ = c.conn.Close()
	c.wg.Wait()
}

// get asks for key once and returns the first record the node answers
// with (verified when it is a plain record), errNotFound when the node
// answers NOT_FOUND (after asking its peers) or nothing comes before ctx
// ends (a ToolDb server has no "not found" answer).
func (c *wsClient) get(ctx context.Context, key string) (db.Record, error) {
	req := &bridge.Message{Type: bridge.TypeGet, ID: newMsgID(), Key: key}
	if err := c.send(ctx, req); err != nil {
		return db.Record{}, err
	}
	for {
		m, err := c.next(ctx)
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
			return db.Record{}, fmt.Errorf("%q: %w", key, errNotFound)
		}
		if err != nil {
			return db.Record{}, err
		}
		switch {
		case m.ID == req.ID && (m.Type == bridge.TypePut || m.Type == bridge.TypeCRDTPut) && m.Data != nil && m.Data.Key == key:
			if err := checkRecord(m.Data); err != nil {
				return db.Record{}, err
			}
			return *m.Data, nil
		case m.Type == bridge.TypeError && m.Ref == req.ID && m.Code == "NOT_FOUND":
			return db.Record{}, fmt.Errorf("%q: %w (the node and the peers it asked hold no record)", key, errNotFound)
		case m.Type == bridge.TypeError && m.Ref == req.ID:
			return db.Record{}, fmt.Errorf("node: %s: %s", m.Code, m.Error)
		}
	}
}

// checkRecord verifies a plain record as a node would (hash over the value
// bytes, signature, key owner). A CRDT record from a node is ToolDb's merged
// form, whose hash and signature are the newest writer's: not checkable.
func checkRecord(r *db.Record) error {
	if r.CRDT != "" {
		return nil
	}
	var v db.Verifier
	if err := v.Verify(r, nil, time.Now()); err != nil {
		return fmt.Errorf("the node sent a record that does not verify: %w", err)
	}
	return nil
}

// newMsgID returns a ToolDb-style 10-character message id.
func newMsgID() string {
	const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXZabcdefghijklmnopqrstuvwxyz"
	var b [10]byte
	for i := range b {
		n, err := rand.Int(rand.Reader, big.NewInt(int64(len(alphabet))))
		if err != nil {
			panic(err) // crypto/rand does not fail on supported platforms
		}
		b[i] = alphabet[n.Int64()]
	}
	return string(b[:])
}

// loadUser reads a ToolDb account from path, or creates one there (mode
// 0600) when the file does not exist. path "" means a fresh account that is
// not kept. The file is ToolDb's exported keys {"pub","priv"}; a node's
// identity.json (its "tooldb" member) is read too, to write as the node.
func loadUser(path string) (*db.User, error) {
	if path == "" {
		return db.NewUser(nil)
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return createUser(path)
	}
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	var f struct {
		db.Keys
		ToolDb *db.Keys `json:"tooldb"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	keys := f.Keys
	if f.ToolDb != nil {
		keys = *f.ToolDb
	}
	u, err := db.ImportKeys(keys)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	return u, nil
}

func createUser(path string) (*db.User, error) {
	u, err := db.NewUser(nil)
	if err != nil {
		return nil, err
	}
	keys, err := u.ExportKeys()
	if err != nil {
		return nil, err
	}
	b, err := json.MarshalIndent(keys, "", "  ")
	if err != nil {
		return nil, err
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("key file: %w", err)
		}
	}
	// O_EXCL: two runs creating the same file must not both win.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return loadUser(path)
	}
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return nil, fmt.Errorf("key file: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	return u, nil
}

// clientArgs is a parsed client command line.
type clientArgs struct {
	flags clientFlags
	url   string // the node's WebSocket URL
	args  []string
	user  *db.User
}

// parseClientArgs parses a client command's flags and its positional
// arguments (usage names them in f.args) and loads the ToolDb account. It
// returns ok false with the exit code when the command must stop.
func parseClientArgs(f *flags, withTimeout bool, args []string, std stdio) (clientArgs, int, bool) {
	var cf clientFlags
	cf.register(f, withTimeout)
	pos, code, ok := f.parse(args, len(strings.Fields(f.args)), std)
	if !ok {
		return clientArgs{}, code, false
	}
	if pos[0] == "" {
		return clientArgs{}, f.usageError(std, "empty KEY"), false
	}
	url, err := clientWSURL(cf.ws)
	if err != nil {
		return clientArgs{}, f.usageError(std, "%v", err), false
	}
	if cf.topic == "" {
		return clientArgs{}, f.usageError(std, "no topic: pass --topic (the node's --topic) or set SWARMDB_TOPIC"), false
	}
	user, err := loadUser(cf.keyFile)
	if err != nil {
		return clientArgs{}, failed(std, f.name, err), false
	}
	return clientArgs{flags: cf, url: url, args: pos, user: user}, exitOK, true
}
