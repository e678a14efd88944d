package node

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/swarmdb/swarmdb/holepunch"
)

// TestConnectReason maps holepunch's sentinel errors, wrapped the way
// Endpoint.Connect wraps them, to the event reason codes.
func TestConnectReason(t *testing.T) {
	wrap := func(errs ...error) error {
		var err error = errs[0]
		for _, e := range errs[1:] {
			err = fmt.Errorf("%w; relay: %w", err, e)
		}
		return fmt.Errorf("holepunch: connect 0a0b0c0d: %w", err)
	}
	cases := []struct {
		err      error
		timedOut bool
		want     string
	}{
		{wrap(holepunch.ErrRefused), false, "refused"},
		{wrap(holepunch.ErrBusy), false, "busy"},
		{wrap(holepunch.ErrBothSymmetric, fmt.Errorf("%w: no offer", holepunch.ErrNoTURN)), false, "both-sides-symmetric"},
		{wrap(holepunch.ErrPunchFailed, holepunch.ErrNoTURN), false, "punch-failed"},
		{wrap(holepunch.ErrNoTURN), false, "no-turn"},
		{wrap(fmt.Errorf("%w: %w", holepunch.ErrNoRelays, context.DeadlineExceeded)), true, "timeout"},
		{wrap(holepunch.ErrNoRelays), false, "no-relays"},
		{wrap(holepunch.ErrHandshake), false, "handshake-failed"},
		{wrap(holepunch.ErrSignal), false, "signal-failed"},
		{wrap(errors.New("other")), false, "connect-failed"},
	}
	for _, c := range cases {
		if got := connectReason(c.err, c.timedOut); got != c.want {
			t.Errorf("connectReason(%v, %v) = %q, want %q", c.err, c.timedOut, got, c.want)
		}
	}
}
