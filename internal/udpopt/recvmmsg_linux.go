package udpopt

import (
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// recvBatch reads up to readBatch messages (datagrams, or runs the kernel coalesced)
// with one recvmmsg. Its arrays are the system call's arguments, set up once; only
// the buffers, which the caller lends each Read, change.
type recvBatch struct {
	raw    syscall.RawConn
	msgs   [readBatch]unix.Mmsghdr
	iovs   [readBatch]unix.Iovec
	names  [readBatch]unix.RawSockaddrInet6 // room for either family's address
	oobs   [readBatch][oobSize]byte
	slots  int // messages the next recvmmsg may fill
	n      int // messages the last one filled
	next   int // the next of them Read returns
	errno  syscall.Errno
	readFn func(fd uintptr) bool // recv as a method value, made once: a Read allocates nothing
	calls  int                   // recvmmsg calls that returned messages, for tests
}

func newRecvBatch(uc *net.UDPConn) *recvBatch {
	raw, err := uc.SyscallConn()
	if err != nil {
		return nil
	}
	b := &recvBatch{raw: raw}
	b.readFn = b.recv
	return b
}

// recv is the read callback: one recvmmsg that does not wait; false asks the poller to
// wait until the socket is readable.
func (b *recvBatch) recv(fd uintptr) bool {
	n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.msgs[0])), uintptr(b.slots), unix.MSG_DONTWAIT, 0, 0)
	if errno == unix.EAGAIN || errno == unix.EINTR {
		return false
	}
	b.n, b.errno = int(n), errno
	return true
}

// read fills buf's slots (readBatch of equal size, or one where buf is smaller than
// two maxRun) from the socket, waiting until at least one message is there.
func (b *recvBatch) read(buf []byte) error {
	b.slots = max(1, min(readBatch, len(buf)/maxRun))
	size := len(buf) / b.slots
	for i := range b.slots {
		b.iovs[i] = unix.Iovec{Base: unsafe.SliceData(buf[i*size:])}
		b.iovs[i].SetLen(size)
		b.msgs[i] = unix.Mmsghdr{Hdr: unix.Msghdr{
			Name:    (*byte)(unsafe.Pointer(&b.names[i])),
			Namelen: unix.SizeofSockaddrInet6,
			Iov:     &b.iovs[i],
			Iovlen:  1,
			Control: &b.oobs[i][0],
		}}
		b.msgs[i].Hdr.SetControllen(oobSize)
	}
	b.n, b.next, b.errno = 0, 0, 0
	if err := b.raw.Read(b.readFn); err != nil {
		return err
	}
	if b.errno != 0 {
		return &net.OpError{Op: "recvmmsg", Net: "udp", Err: b.errno}
	}
	b.calls++
	return nil
}

// segments returns message i of the last read, which landed in buf.
func (b *recvBatch) segments(buf []byte, i int) Segments {
	size := len(buf) / b.slots
	m := &b.msgs[i]
	return segmentsOf(buf[i*size:i*size+int(m.Len)], b.oobs[i][:m.Hdr.Controllen], int(m.Hdr.Flags), addrPortOf(&b.names[i]))
}

// addrPortOf is a socket address the kernel wrote as an AddrPort, IPv4-mapped IPv6
// given as IPv4 and a link-local address with its zone, as the net package gives it.
func addrPortOf(sa *unix.RawSockaddrInet6) netip.AddrPort {
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), networkOrder(sa4.Port))
	case unix.AF_INET6:
		a := netip.AddrFrom16(sa.Addr)
		if sa.Scope_id != 0 {
			zone := strconv.Itoa(int(sa.Scope_id))
			if ifi, err := net.InterfaceByIndex(int(sa.Scope_id)); err == nil {
				zone = ifi.Name
			}
			a = a.WithZone(zone)
		}
		return unmap(netip.AddrPortFrom(a, networkOrder(sa.Port)))
	}
	return netip.AddrPort{}
}

// networkOrder is a port as the kernel stores it, in network byte order.
func networkOrder(p uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return uint16(b[0])<<8 | uint16(b[1])
}
