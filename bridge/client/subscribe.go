package client

import (
	"context"
	"fmt"

	"github.com/swarmdb/swarmdb/bridge"
)

// Subscription is a subscribe to one key: the stored record first, if
// any (as ToolDb answers a subscribe), then every update.
type Subscription struct {
	c    *Conn
	id   string // the subscribe's message id
	key  string
	last string // hash and signature of the last record returned
}

// Subscribe asks the node for key's updates.
func (c *Conn) Subscribe(ctx context.Context, key string) (*Subscription, error) {
	sub := &bridge.Message{Type: bridge.TypeSubscribe, ID: newMsgID(), Key: key}
	if err := c.send(ctx, sub); err != nil {
		return nil, err
	}
	return &Subscription{c: c, id: sub.ID, key: key}, nil
}

// Next returns the next record under the key. A push that repeats the
// last plain record (the subscribe's answer and the first push can be the
// same) is skipped. It fails with ErrRefused when the node refused the
// subscribe, with ErrUnverified for a record that does not verify (Next
// may be called again), and with the connection's error when it ends.
func (s *Subscription) Next(ctx context.Context) (Record, error) {
	for {
		m, err := s.c.next(ctx)
		if err != nil {
			return Record{}, err
		}
		switch {
		case m.Type == bridge.TypeError && m.Ref == s.id:
			return Record{}, fmt.Errorf("%w (%s): %s", ErrRefused, m.Code, m.Error)
		case isRecord(m, s.key):
			hk := m.Data.Hash + "\x00" + m.Data.Sig
			if hk == s.last && m.Data.CRDT == "" {
				continue
			}
			if err := verify(m.Data); err != nil {
				return Record{}, err
			}
			s.last = hk
			return *m.Data, nil
		}
	}
}
