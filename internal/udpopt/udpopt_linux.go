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

// setGRO turns UDP_GRO on; the option is the same for IPv4 and IPv6 sockets.
func setGRO(raw syscall.RawConn) bool {
	ok := false
	if err := raw.Control(func(fd uintptr) {
		ok = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_GRO, 1) == nil
	}); err != nil {
		return false
	}
	return ok
}

// The recvmsg flags of a datagram (or run) longer than the buffer, and of control
// messages longer than theirs.
const (
	msgTrunc  = unix.MSG_TRUNC
	msgCtrunc = unix.MSG_CTRUNC
)

// groSize returns the segment size of the UDP_GRO control message in oob (an int,
// udp(7)), or 0 when there is none: the read holds one datagram.
func groSize(oob []byte) int {
	for len(oob) >= unix.CmsgLen(0) {
		h, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			return 0
		}
		if h.Level == unix.SOL_UDP && h.Type == unix.UDP_GRO && len(data) >= 4 {
			return int(*(*int32)(unsafe.Pointer(&data[0])))
		}
		oob = rest
	}
	return 0
}
