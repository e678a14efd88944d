package natlab

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/pion/transport/v2"
)

// nsNet is a transport.Net whose sockets and interface lists come from one
// network namespace. Every call that creates a socket runs through inNetns;
// name resolution is refused (ErrNotLiteral) because a lookup would run in
// the test process's own namespace and could leave the lab.
type nsNet struct {
	path string // immutable: mount path of the namespace
}

var _ transport.Net = (*nsNet)(nil)

// inNS runs f inside the namespace and returns its result.
func inNS[T any](n *nsNet, f func() (T, error)) (T, error) {
	var v T
	err := inNetns(n.path, func() error {
		var err error
		v, err = f()
		return err
	})
	return v, err
}

// checkLiteral accepts "host:port" where host is empty or an IP literal.
func checkLiteral(address string) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return fmt.Errorf("natlab: address %q: %w", address, err)
	}
	if host == "" {
		return nil
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return fmt.Errorf("%w: %q", ErrNotLiteral, address)
	}
	return nil
}

// ListenPacket opens a packet socket inside the namespace.
func (n *nsNet) ListenPacket(network, address string) (net.PacketConn, error) {
	if err := checkLiteral(address); err != nil {
		return nil, err
	}
	return inNS(n, func() (net.PacketConn, error) { return net.ListenPacket(network, address) })
}

// ListenUDP opens a UDP socket inside the namespace.
func (n *nsNet) ListenUDP(network string, laddr *net.UDPAddr) (transport.UDPConn, error) {
	return inNS(n, func() (transport.UDPConn, error) {
		c, err := net.ListenUDP(network, laddr)
		if err != nil {
			return nil, err // not a typed nil inside the interface
		}
		return c, nil
	})
}

// ListenTCP opens a TCP listener inside the namespace; accepted connections
// belong to the same namespace.
func (n *nsNet) ListenTCP(network string, laddr *net.TCPAddr) (transport.TCPListener, error) {
	return inNS(n, func() (transport.TCPListener, error) {
		l, err := net.ListenTCP(network, laddr)
		if err != nil {
			return nil, err
		}
		return tcpListener{l}, nil
	})
}

// Dial connects from inside the namespace. The address must be an IP literal.
func (n *nsNet) Dial(network, address string) (net.Conn, error) {
	if err := checkLiteral(address); err != nil {
		return nil, err
	}
	return inNS(n, func() (net.Conn, error) { return net.Dial(network, address) })
}

// DialUDP connects a UDP socket from inside the namespace.
func (n *nsNet) DialUDP(network string, laddr, raddr *net.UDPAddr) (transport.UDPConn, error) {
	return inNS(n, func() (transport.UDPConn, error) {
		c, err := net.DialUDP(network, laddr, raddr)
		if err != nil {
			return nil, err
		}
		return c, nil
	})
}

// DialTCP connects a TCP socket from inside the namespace.
func (n *nsNet) DialTCP(network string, laddr, raddr *net.TCPAddr) (transport.TCPConn, error) {
	return inNS(n, func() (transport.TCPConn, error) {
		c, err := net.DialTCP(network, laddr, raddr)
		if err != nil {
			return nil, err
		}
		return c, nil
	})
}

// ResolveIPAddr parses an IP literal; host names are refused.
func (n *nsNet) ResolveIPAddr(network, address string) (*net.IPAddr, error) {
	if _, err := netip.ParseAddr(address); err != nil {
		return nil, fmt.Errorf("%w: %q", ErrNotLiteral, address)
	}
	return net.ResolveIPAddr(network, address)
}

// ResolveUDPAddr parses an IP-literal UDP address; host names are refused.
func (n *nsNet) ResolveUDPAddr(network, address string) (*net.UDPAddr, error) {
	if err := checkLiteral(address); err != nil {
		return nil, err
	}
	return net.ResolveUDPAddr(network, address)
}

// ResolveTCPAddr parses an IP-literal TCP address; host names are refused.
func (n *nsNet) ResolveTCPAddr(network, address string) (*net.TCPAddr, error) {
	if err := checkLiteral(address); err != nil {
		return nil, err
	}
	return net.ResolveTCPAddr(network, address)
}

// Interfaces lists the namespace's interfaces and their addresses, read
// fresh on every call (netlink sockets are per namespace too).
func (n *nsNet) Interfaces() ([]*transport.Interface, error) {
	return inNS(n, func() ([]*transport.Interface, error) {
		ifs, err := net.Interfaces()
		if err != nil {
			return nil, err
		}
		out := make([]*transport.Interface, 0, len(ifs))
		for i := range ifs {
			addrs, err := ifs[i].Addrs()
			if err != nil {
				return nil, err
			}
			ifc := transport.NewInterface(ifs[i])
			for _, a := range addrs {
				ifc.AddAddress(a)
			}
			out = append(out, ifc)
		}
		return out, nil
	})
}

// InterfaceByIndex returns the interface with the given index.
func (n *nsNet) InterfaceByIndex(index int) (*transport.Interface, error) {
	ifs, err := n.Interfaces()
	if err != nil {
		return nil, err
	}
	for _, ifc := range ifs {
		if ifc.Index == index {
			return ifc, nil
		}
	}
	return nil, fmt.Errorf("%w: index=%d", transport.ErrInterfaceNotFound, index)
}

// InterfaceByName returns the interface with the given name.
func (n *nsNet) InterfaceByName(name string) (*transport.Interface, error) {
	ifs, err := n.Interfaces()
	if err != nil {
		return nil, err
	}
	for _, ifc := range ifs {
		if ifc.Name == name {
			return ifc, nil
		}
	}
	return nil, fmt.Errorf("%w: %s", transport.ErrInterfaceNotFound, name)
}

// CreateDialer wraps d so that its Dial runs inside the namespace.
func (n *nsNet) CreateDialer(d *net.Dialer) transport.Dialer {
	return nsDialer{n: n, d: d}
}

type nsDialer struct {
	n *nsNet
	d *net.Dialer
}

func (d nsDialer) Dial(network, address string) (net.Conn, error) {
	if err := checkLiteral(address); err != nil {
		return nil, err
	}
	return inNS(d.n, func() (net.Conn, error) { return d.d.Dial(network, address) })
}

type tcpListener struct{ *net.TCPListener }

func (l tcpListener) AcceptTCP() (transport.TCPConn, error) {
	c, err := l.TCPListener.AcceptTCP()
	if err != nil {
		return nil, err
	}
	return c, nil
}
