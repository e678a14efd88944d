package natlab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// ctnetlink message types (linux/netfilter/nfnetlink_conntrack.h); x/sys
// names the subsystem but not its messages.
const (
	ipctnlMsgCtDelete = 2 // IPCTNL_MSG_CT_DELETE
	sizeofNfgenmsg    = 4 // struct nfgenmsg: family, version, res_id (big endian)
)

// conntrackSeq numbers flush requests so a stale reply is never taken for
// the answer to a new one.
var conntrackSeq atomic.Uint32

// FlushConntrack empties the router's connection-tracking table, as a home
// router does when it reboots or its NAT table overflows: every mapping and
// every "we sent to them" permission is forgotten at once. Packets of an
// existing flow that arrive from the WAN afterwards are unsolicited and are
// dropped until a LAN host sends again (and is mapped anew). The nft binding
// sets of the cone types are not touched (SetHairpin reloads those).
//
// There is no conntrack(8) here: the flush is one ctnetlink request
// (NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_DELETE with an nfgenmsg and no
// attributes, which the kernel treats as "delete everything") sent on a
// NETLINK_NETFILTER socket opened inside the router's namespace. No-op for
// an Open router, which has no namespace of its own.
func (r *Router) FlushConntrack() error {
	if r.typ == Open {
		return nil
	}
	return inNetns(nsPath(r.ns), func() error {
		if err := flushConntrack(); err != nil {
			return fmt.Errorf("natlab: %s: flush conntrack: %w", r.name, err)
		}
		return nil
	})
}

// flushConntrack sends the flush request on a netlink socket of the
// calling thread's namespace and waits for the kernel's acknowledgement.
func flushConntrack() error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return fmt.Errorf("netlink socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlink bind: %w", err)
	}
	// A lost ack must not hang the test forever.
	tv := unix.Timeval{Sec: 5}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fmt.Errorf("netlink timeout: %w", err)
	}
	seq := conntrackSeq.Add(1)
	req := appendFlushRequest(nil, seq)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlink send: %w", err)
	}
	buf := make([]byte, 4096)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return fmt.Errorf("netlink receive: %w", err)
		}
		for b := buf[:n]; len(b) >= unix.SizeofNlMsghdr; {
			size := int(binary.NativeEndian.Uint32(b[0:4]))
			if size < unix.SizeofNlMsghdr || size > len(b) {
				return errors.New("malformed netlink reply")
			}
			typ, got := binary.NativeEndian.Uint16(b[4:6]), binary.NativeEndian.Uint32(b[8:12])
			if typ == unix.NLMSG_ERROR && got == seq {
				return parseAck(b[unix.SizeofNlMsghdr:size])
			}
			b = b[min(len(b), (size+3)&^3):] // messages are 4-byte aligned
		}
	}
}

// appendFlushRequest appends the flush message:
//
//	nlmsghdr  len u32 | type u16 = CTNETLINK<<8|CT_DELETE | flags u16 = REQUEST|ACK | seq u32 | pid u32 = 0
//	nfgenmsg  family u8 = AF_UNSPEC (every family) | version u8 = 0 | res_id u16 (big endian) = 0
func appendFlushRequest(b []byte, seq uint32) []byte {
	total := unix.SizeofNlMsghdr + sizeofNfgenmsg
	b = binary.NativeEndian.AppendUint32(b, uint32(total))
	b = binary.NativeEndian.AppendUint16(b, unix.NFNL_SUBSYS_CTNETLINK<<8|ipctnlMsgCtDelete)
	b = binary.NativeEndian.AppendUint16(b, unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	b = binary.NativeEndian.AppendUint32(b, seq)
	b = binary.NativeEndian.AppendUint32(b, 0)
	return append(b, unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0)
}

// parseAck reads an NLMSG_ERROR payload: a negative errno, or 0 for the
// acknowledgement.
func parseAck(data []byte) error {
	if len(data) < 4 {
		return errors.New("short netlink ack")
	}
	if errno := int32(binary.NativeEndian.Uint32(data)); errno != 0 {
		return unix.Errno(-errno)
	}
	return nil
}
