package node

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"github.com/swarmdb/swarmdb/portmap"
)

// Router port mapping (package portmap). The node asks its gateway for a
// UDP mapping of its one socket as soon as the socket is bound (the swarm's
// OnListen), and waits briefly for the answer: the first NAT measurement
// and the DHT's reachability check then already see the mapping, and that
// check, not an assumption, makes the node persistent when the mapping
// lets an unsolicited probe in. The mapped address goes to hole punching
// as a candidate (swarm.Config.Mapped). With MapWebSocket the WebSocket's
// TCP port is mapped too, and the mainline part announces it there.

// portMapStartWait bounds how long Start waits for the router's first
// answer. A gateway with no port mapping usually says so at once (ICMP port
// unreachable on PCP's and SSDP's ports); only one that drops the requests
// silently makes Start wait this long, and the mapping still comes later
// if the router answers later.
const portMapStartWait = time.Second

// portMapFollowUpTimeout bounds the work after a mapping appears or goes
// once the node runs: a NAT measurement and a DHT reachability check.
const portMapFollowUpTimeout = 30 * time.Second

// startPortMap is the swarm's OnListen: it starts the port-mapping client
// for the socket at local (and the WebSocket with MapWebSocket) and waits
// for its first outcome, at most portMapStartWait.
func (n *Node) startPortMap(ctx context.Context, local netip.AddrPort) {
	if reason := n.portMapOff(local); reason != "" {
		n.log.Debug("port mapping off", "reason", reason)
		return
	}
	cfg := n.cfg.PortMap
	cfg.Net = n.cfg.Net
	cfg.UDPPort = local.Port()
	if a := local.Addr(); !a.IsUnspecified() {
		cfg.LocalIP = a
	}
	if n.cfg.MapWebSocket {
		switch ws := n.wsAddrPort(); {
		case !ws.IsValid():
			n.log.Warn("no websocket to map: the node runs no websocket server")
		case ws.Addr().IsLoopback():
			n.log.Warn("not mapping the websocket: it listens on loopback, which the router cannot forward to", "ws", ws)
		default:
			cfg.TCPPort = ws.Port()
		}
	}
	cfg.OnChange = n.portMapChanged
	cfg.Logger = n.log.With("component", "portmap")
	c, err := portmap.New(cfg)
	if errors.Is(err, portmap.ErrNoGateway) {
		n.log.Debug("port mapping off", "reason", err)
		return
	}
	if err != nil {
		n.log.Warn("port mapping off", "err", err)
		return
	}
	if err := c.Start(); err != nil {
		n.log.Warn("port mapping off", "err", err)
		return
	}
	n.portmap.Store(c)
	t := time.NewTimer(portMapStartWait)
	defer t.Stop()
	select {
	case <-c.Ready():
	case <-t.C:
		n.log.Debug("no answer from the gateway yet; starting without a port mapping")
	case <-ctx.Done():
	}
}

// portMapOff says why the node does not map ports ("" when it does).
func (n *Node) portMapOff(local netip.AddrPort) string {
	switch {
	case n.cfg.DisablePortMap:
		return "disabled"
	case !n.internetNode():
		return "LAN only"
	case local.Addr().IsLoopback():
		return "the socket is on loopback"
	case n.dhtOnThisHost():
		// Every DHT node is on this host: there is no router between
		// them and us (tests and the demo run so).
		return "every bootstrap node and mainline router is on loopback"
	}
	return ""
}

// dhtOnThisHost reports whether every configured bootstrap node and
// mainline router is a loopback address.
func (n *Node) dhtOnThisHost() bool {
	for _, b := range n.cfg.Bootstrap {
		if !b.Addr().IsLoopback() {
			return false
		}
	}
	for _, r := range n.cfg.Mainline {
		if ap, err := netip.ParseAddrPort(r); err != nil || !ap.Addr().IsLoopback() {
			return false
		}
	}
	return true
}

// portMapChanged is the client's OnChange: it wakes portMapLoop.
func (n *Node) portMapChanged(portmap.Status) {
	select {
	case n.portmapChange <- struct{}{}:
	default:
	}
}

// portMapLoop follows the mapping once the node runs: when the mapped
// address appears, changes or goes, the NAT is measured again (the
// filtering a mapping opens shows there), and a node that is not yet
// persistent runs the DHT's reachability check again (Bootstrap does).
func (n *Node) portMapLoop(c *portmap.Client) {
	defer n.wg.Done()
	last := n.mappedUDP()
	for {
		select {
		case <-n.stop:
			return
		case <-n.portmapChange:
		}
		cur := n.mappedUDP()
		if cur == last {
			continue
		}
		last = cur
		n.log.Info("port mapping changed", "external", cur, "state", c.Status().State)
		ctx, cancel := context.WithTimeout(context.Background(), portMapFollowUpTimeout)
		round := make(chan struct{})
		go func() { // Close must not wait for this round's timeout
			select {
			case <-n.stop:
				cancel()
			case <-round:
			}
		}()
		if _, err := n.swarm.RemeasureNAT(ctx); err != nil {
			n.log.Debug("nat measurement after a port mapping change failed", "err", err)
		}
		if dn := n.swarm.Node(); dn != nil && cur.IsValid() && !dn.Persistent() {
			if err := dn.Bootstrap(ctx); err != nil {
				n.log.Debug("dht reachability check after a port mapping failed", "err", err)
			}
		}
		close(round)
		cancel()
	}
}

// mappedUDP is the public address the router forwards to the node's
// socket, when it is one peers can use: a public IPv4 address, and the one
// the DHT sees us at, if it sees us yet. A router that reports a private
// or shared (RFC 6598) external address sits behind another NAT, where its
// mapping opens nothing.
func (n *Node) mappedUDP() netip.AddrPort {
	return n.mapped(portmap.UDP)
}

// mappedWebSocket is mappedUDP for the WebSocket's TCP mapping.
func (n *Node) mappedWebSocket() netip.AddrPort {
	return n.mapped(portmap.TCP)
}

func (n *Node) mapped(t portmap.Transport) netip.AddrPort {
	c := n.portmap.Load()
	if c == nil {
		return netip.AddrPort{}
	}
	m, ok := c.Mapping(t)
	if !ok || !publicIPv4(m.External.Addr()) {
		return netip.AddrPort{}
	}
	if n.swarm != nil {
		if dn := n.swarm.Node(); dn != nil {
			if pub := dn.PublicAddr(); pub.IsValid() && pub.Addr() != m.External.Addr() {
				return netip.AddrPort{}
			}
		}
	}
	return m.External
}

// publicIPv4 reports whether ip is a global unicast IPv4 address outside
// the private and shared (RFC 6598) ranges.
func publicIPv4(ip netip.Addr) bool {
	return ip.Is4() && ip.IsGlobalUnicast() && !ip.IsPrivate() && !sharedSpace.Contains(ip)
}

var sharedSpace = netip.MustParsePrefix("100.64.0.0/10")

// PortMap returns the port-mapping client's status; ok is false when the
// node maps no ports (disabled, LAN only, not started, no gateway).
func (n *Node) PortMap() (portmap.Status, bool) {
	c := n.portmap.Load()
	if c == nil {
		return portmap.Status{}, false
	}
	return c.Status(), true
}

// closePortMap deletes the mappings (after the swarm closed, so that no
// session relies on them any more).
func (n *Node) closePortMap() {
	if c := n.portmap.Load(); c != nil {
		_ = c.Close()
	}
}
