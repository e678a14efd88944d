package client

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"sync"
	"time"

	"github.com/swarmdb/swarmdb/bridge"
	"github.com/swarmdb/swarmdb/db"
)

// Record and User are db's, named here so that a client app needs one
// import: the records a node sends and the account that signs puts.
type (
	Record = db.Record
	User   = db.User
)

// Timeouts of a client.
const (
	// DialTimeout bounds the WebSocket dial plus the ping/pong.
	DialTimeout = 10 * time.Second
	// idClaimedMaxWait: Dial retries a node's ID_CLAIMED refusal (our own
	// previous connection with the same account still closing on the
	// node's side) with waits doubling from 50 ms up to this.
	idClaimedMaxWait = time.Second
	// putPollInterval spaces Put's confirming gets: the node stores puts
	// asynchronously, so the first get may still see the old value.
	putPollInterval = 50 * time.Millisecond
	// inboxSize is how many parsed messages may wait for the caller.
	inboxSize = 256
)

// Conn is one ToolDb client connection to a node. A reader goroutine
// parses incoming messages into inbox; the caller writes. A Conn serves
// one request (Get, Put, or a Subscription's Next) at a time: they share
// the inbox.
type Conn struct {
	// Immutable after Dial.
	conn     *bridge.WSConn
	user     *db.User
	clientID string
	inbox    chan bridge.Message
	ctx      context.Context // ends the reader
	cancel   context.CancelFunc
	wg       sync.WaitGroup

	mu  sync.Mutex
	err error // guarded by mu: why the reader stopped
}

// Dial connects to the node at url (ws:// or wss://), pings as a ToolDb
// client of topic signed by user, and waits for the pong.
func Dial(ctx context.Context, url, topic string, user *User) (*Conn, error) {
	// The node refuses a client id that another live connection holds. Our
	// own previous connection (the last put with the same account) can
	// still be closing on the node's side, so retry that refusal briefly.
	for wait := 50 * time.Millisecond; ; wait *= 2 {
		c, err := dialOnce(ctx, url, topic, user)
		if !errors.Is(err, errIDClaimed) || wait > idClaimedMaxWait {
			return c, err
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil, err
		}
	}
}

func dialOnce(ctx context.Context, url, topic string, user *db.User) (*Conn, error) {
	if topic == "" {
		return nil, ErrNoTopic
	}
	ctx, cancel := context.WithTimeout(ctx, DialTimeout)
	defer cancel()
	conn, err := bridge.Dial(ctx, url, bridge.DialOptions{})
	if err != nil {
		return nil, err
	}
	c := &Conn{conn: conn, user: user, clientID: bridge.ClientID(user.Address()),
		inbox: make(chan bridge.Message, inboxSize)}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.wg.Add(1)
	go c.readLoop()
	if err := c.ping(ctx, url, topic); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// ping identifies the client and waits for the node's pong or refusal.
func (c *Conn) ping(ctx context.Context, url, topic string) error {
	// A ToolDb client advertises its options.host/port, 127.0.0.1:8080 by
	// default; nobody dials a client, so they only need to be signed.
	desc, err := bridge.SignPeerDesc(c.user, topic, time.Now().UnixMilli(), "127.0.0.1", 8080)
	if err != nil {
		return err
	}
	ping := &bridge.Message{Type: bridge.TypePing, ID: newMsgID(), ClientID: c.clientID, Peer: &desc}
	if err := c.send(ctx, ping); err != nil {
		return err
	}
	for {
		m, err := c.next(ctx)
		if err != nil {
			return fmt.Errorf("no pong from %s: %w", url, err)
		}
		switch {
		case m.Type == bridge.TypePong && m.ID == ping.ID:
			return nil
		case m.Type == bridge.TypeError && m.Ref == ping.ID && m.Code == "ID_CLAIMED":
			return fmt.Errorf("node refused us (%s): %s: %w", m.Code, m.Error, errIDClaimed)
		case m.Type == bridge.TypeError && m.Ref == ping.ID:
			return fmt.Errorf("node refused us (%s): %s", m.Code, m.Error)
		}
	}
}

// send writes m, with our client id in "to" as ToolDb's sender does.
func (c *Conn) send(ctx context.Context, m *bridge.Message) error {
	m.To = []string{c.clientID}
	return c.conn.WriteMessage(ctx, bridge.AppendMessage(nil, m))
}

// next returns the next message from the node.
func (c *Conn) next(ctx context.Context) (bridge.Message, error) {
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

func (c *Conn) readLoop() {
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

// Close closes the connection and waits for the reader. Idempotent.
func (c *Conn) Close() error {
	c.cancel()
	err := c.conn.Close()
	c.wg.Wait()
	return err
}

// Get asks for key once and returns the first record the node answers
// with (verified when it is a plain record). It returns ErrNotFound when
// the node answers NOT_FOUND (after asking its peers) or when nothing
// comes before ctx's deadline.
func (c *Conn) Get(ctx context.Context, key string) (Record, error) {
	req := &bridge.Message{Type: bridge.TypeGet, ID: newMsgID(), Key: key}
	if err := c.send(ctx, req); err != nil {
		return db.Record{}, err
	}
	for {
		m, err := c.next(ctx)
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
			return db.Record{}, fmt.Errorf("%q: %w", key, ErrNotFound)
		}
		if err != nil {
			return db.Record{}, err
		}
		switch {
		case m.ID == req.ID && isRecord(m, key):
			if err := verify(m.Data); err != nil {
				return db.Record{}, err
			}
			return *m.Data, nil
		case m.Type == bridge.TypeError && m.Ref == req.ID && m.Code == "NOT_FOUND":
			return db.Record{}, fmt.Errorf("%q: %w (the node and the peers it asked hold no record)", key, ErrNotFound)
		case m.Type == bridge.TypeError && m.Ref == req.ID:
			return db.Record{}, fmt.Errorf("node: %s: %s", m.Code, m.Error)
		}
	}
}

// isRecord reports whether m carries a record (plain or CRDT) under key.
func isRecord(m bridge.Message, key string) bool {
	return (m.Type == bridge.TypePut || m.Type == bridge.TypeCRDTPut) && m.Data != nil && m.Data.Key == key
}

// verify checks a plain record as a node would (hash over the value
// bytes, signature, key owner). A CRDT record from a node is ToolDb's
// merged form, whose hash and signature are the newest writer's: not
// checkable.
func verify(r *db.Record) error {
	if r.CRDT != "" {
		return nil
	}
	var v db.Verifier
	if err := v.Verify(r, nil, time.Now()); err != nil {
		return fmt.Errorf("%w: %w", ErrUnverified, err)
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

// AppendRecord appends rec's JSON, as a node stores and sends it.
func AppendRecord(b []byte, rec *Record) []byte { return db.AppendRecord(b, rec) }
