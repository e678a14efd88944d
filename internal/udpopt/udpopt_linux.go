package udpopt

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// setDontFragment sets the option for IPv4 on an IPv4 socket, and for both families on
// an IPv6 one (which may also carry IPv4-mapped traffic).
func setDontFragment(raw syscall.RawConn) bool {
	ok := false
	if err := raw.Control(func(fd uintptr) {
		domain, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN)
		if err != nil {
			return
		}
		err = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_PROBE)
		if domain == unix.AF_INET6 {
			// An IPv6-only socket refuses the IPv4 option; that is fine.
			err = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_PROBE)
		}
		ok = err == nil
	}); err != nil {
		return false
	}
	return ok
}
