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
