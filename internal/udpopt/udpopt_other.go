//go:build !linux

package udpopt

import "syscall"

func setDontFragment(syscall.RawConn) bool { return false }
