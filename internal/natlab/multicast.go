package natlab

import (
	"context"
	"fmt"
)

// EnableLoopbackMulticast lets multicast (mDNS) work inside the host's
// namespace on its loopback interface only: multicast on lo, and the
// 224.0.0.0/4 route through it. Group traffic then stays in this one
// namespace, which the lab made: tests of LAN discovery use it, never the
// machine's own network.
func (h *Host) EnableLoopbackMulticast(ctx context.Context) error {
	for _, args := range [][]string{
		{"link", "set", "lo", "multicast", "on"},
		{"route", "add", "224.0.0.0/4", "dev", "lo"},
	} {
		if out, err := h.Run(ctx, "ip", args...); err != nil {
			return fmt.Errorf("natlab: %s: ip %v: %w: %s", h.name, args, err, out)
		}
	}
	return nil
}
