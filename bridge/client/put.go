package client

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/swarmdb/swarmdb/bridge"
	"github.com/swarmdb/swarmdb/db"
)

// Put sends rec and reads the key back until the node answers with rec
// itself: ToolDb's put has no acknowledgement (a refused record gets an
// "error" message whose ref is the put's id, an accepted one nothing). It
// fails with ErrRefused on the node's error for the put, or when ctx ends;
// the error then says whether the node holds a newer record.
func (c *Conn) Put(ctx context.Context, rec *Record) error {
	put := &bridge.Message{Type: bridge.TypePut, ID: newMsgID(), Data: rec}
	if err := c.send(ctx, put); err != nil {
		return err
	}
	p := &putConfirm{c: c, rec: rec, put: put.ID, gets: map[string]bool{}}
	if err := p.sendGet(ctx); err != nil {
		return err
	}
	// next blocks; run it beside the poll ticker, until we return.
	rctx, stop := context.WithCancel(ctx)
	msgs, errc := make(chan bridge.Message), make(chan error, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stop()
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.forward(rctx, msgs, errc)
	}()
	return p.wait(ctx, msgs, errc)
}

// forward passes messages to msgs until ctx ends or the connection does,
// then the error to errc.
func (c *Conn) forward(ctx context.Context, msgs chan<- bridge.Message, errc chan<- error) {
	for {
		m, err := c.next(ctx)
		if err != nil {
			errc <- err
			return
		}
		select {
		case msgs <- m:
		case <-ctx.Done():
			errc <- ctx.Err()
			return
		}
	}
}

// putConfirm is one Put waiting for its record to read back.
type putConfirm struct {
	c     *Conn
	rec   *db.Record
	put   string          // the put's message id
	gets  map[string]bool // ids of our confirming gets
	other *db.Record      // the last record the node answered with that is not ours
}

func (p *putConfirm) sendGet(ctx context.Context) error {
	g := &bridge.Message{Type: bridge.TypeGet, ID: newMsgID(), Key: p.rec.Key}
	p.gets[g.ID] = true
	return p.c.send(ctx, g)
}

func (p *putConfirm) wait(ctx context.Context, msgs <-chan bridge.Message, errc <-chan error) error {
	poll := time.NewTicker(putPollInterval)
	defer poll.Stop()
	for {
		select {
		case <-poll.C:
			if err := p.sendGet(ctx); err != nil {
				return err
			}
		case err := <-errc:
			return p.failed(ctx, err)
		case m := <-msgs:
			if done, err := p.answer(m); done {
				return err
			}
		}
	}
}

// answer handles one message: done with nil once the node holds our
// record, done with an error when it refused the put.
func (p *putConfirm) answer(m bridge.Message) (done bool, err error) {
	switch {
	case m.Type == bridge.TypeError && m.Ref == p.put:
		return true, fmt.Errorf("%w (%s): %s", ErrRefused, m.Code, m.Error)
	case m.Type == bridge.TypePut && p.gets[m.ID] && m.Data != nil && m.Data.Key == p.rec.Key:
		if m.Data.Hash == p.rec.Hash && m.Data.Sig == p.rec.Sig {
			return true, nil
		}
		d := *m.Data
		p.other = &d
	}
	return false, nil
}

// failed says why the put was not confirmed when the reading stopped.
func (p *putConfirm) failed(ctx context.Context, err error) error {
	if ctx.Err() == nil {
		return err
	}
	if p.other != nil && p.other.Time > p.rec.Time {
		return fmt.Errorf("superseded: the node holds a newer record (t=%d, by %.12s…)", p.other.Time, p.other.Author)
	}
	return fmt.Errorf("not confirmed: %w", ctx.Err())
}
