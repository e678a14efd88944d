//go:build !linux

package udpopt

import "net"

// recvBatch is Linux's (recvmmsg); elsewhere a SegmentReader reads one message per call.
type recvBatch struct {
	n, next, calls int
}

func newRecvBatch(*net.UDPConn) *recvBatch { return nil }

func (b *recvBatch) read([]byte) error { panic("udpopt: no recvmmsg") }

func (b *recvBatch) segments([]byte, int) Segments { panic("udpopt: no recvmmsg") }
