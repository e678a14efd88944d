// Package udpopt sets socket options the standard library does not expose, and moves
// runs of datagrams in one system call where the kernel offloads them (SegmentWriter,
// SegmentReader). dht and secure use it; it imports nothing of ours.
package udpopt

import (
	"net"
	"syscall"
)

// SetDontFragment makes the kernel send every datagram of conn with the IP Don't
// Fragment bit and never fragment one locally: a datagram larger than the interface MTU
// fails with EMSGSIZE, and one larger than a link further on is dropped there. That is
// what path MTU discovery needs: a probe too large for the path is lost, not delivered
// in pieces. The kernel's cached path MTU (from ICMP "fragmentation needed") is ignored
// (IP_PMTUDISC_PROBE), as RFC 8899 advises, so a forged ICMP message cannot black-hole
// the connection's packets.
//
// It reports whether the option took for the socket's family. Sockets without a file
// descriptor (pion's vnet) and systems other than Linux report false.
func SetDontFragment(conn net.PacketConn) bool {
	raw, ok := rawConn(conn)
	return ok && setDontFragment(raw)
}

// rawConn is conn's file descriptor access; false for a conn without one.
func rawConn(conn net.PacketConn) (syscall.RawConn, bool) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil, false
	}
	raw, err := sc.SyscallConn()
	return raw, err == nil
}
