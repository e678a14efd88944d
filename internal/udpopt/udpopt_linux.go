package udpopt

import (
	"errors"
	"net"
	"syscall"
	"unsafe"

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

// gsoSupported reports whether the kernel knows UDP_SEGMENT on this socket.
func gsoSupported(c *net.UDPConn) bool {
	raw, err := c.SyscallConn()
	if err != nil {
		return false
	}
	ok := false
	if err := raw.Control(func(fd uintptr) {
		_, err := unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT)
		ok = err == nil
	}); err != nil {
		return false
	}
	return ok
}

// segmentCmsg is the control message that asks for segments of size bytes.
func segmentCmsg(size int) []byte {
	b := make([]byte, unix.CmsgSpace(2))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level = unix.IPPROTO_UDP
	h.Type = unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	*(*uint16)(unsafe.Pointer(&b[unix.CmsgLen(0)])) = uint16(size)
	return b
}

// gsoRefused reports the errors of a kernel or device that cannot segment: EIO when
// the device has no checksum offload, EINVAL or ENOPROTOOPT on an old kernel.
func gsoRefused(err error) bool {
	return errors.Is(err, unix.EIO) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOPROTOOPT) || errors.Is(err, unix.EOPNOTSUPP)
}
