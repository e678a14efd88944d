//go:build !linux

package udpopt

import (
	"net"
	"syscall"
)

func setDontFragment(syscall.RawConn) bool { return false }

func gsoSupported(*net.UDPConn) bool { return false }

func segmentCmsg(int) []byte { return nil }

func gsoRefused(error) bool { return true }

func setGRO(syscall.RawConn) bool { return false }

// No GRO, no control messages: a read is one datagram, truncated as by ReadFrom.
const (
	msgTrunc  = 0
	msgCtrunc = 0
)

func groSize([]byte) int { return 0 }
