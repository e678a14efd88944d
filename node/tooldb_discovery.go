package node

import (
	"net/netip"

	"github.com/swarmdb/swarmdb/dnsdisc"
)

// ToolDb servers found by discovery-channel's two halves (the mainline DHT
// and dns-discovery's multicast DNS) go through serverFound: reported once
// as a MainlinePeer, then dialled by the server dialer.

// maxReported bounds the addresses remembered as reported.
const maxReported = 4096

// serverFound reports a ToolDb server found by source ("dht" or "mdns")
// and dials it.
func (n *Node) serverFound(addr netip.AddrPort, source string) {
	p := MainlinePeer{Addr: addr, Source: source, Kind: "tooldb"}
	n.foundMu.Lock()
	isNew := !n.reported[p]
	if isNew && len(n.reported) < maxReported {
		n.reported[p] = true
	}
	n.foundMu.Unlock()
	if isNew && n.cfg.OnMainlinePeer != nil {
		n.cfg.OnMainlinePeer(p)
	}
	n.dialer.found(addr, source)
}

// startDialer makes the dialer of found ToolDb servers, once.
func (n *Node) startDialer() {
	n.foundMu.Lock()
	defer n.foundMu.Unlock()
	if n.dialer == nil {
		n.dialer = newServerDialer(n.bridge.ConnectTo, n.bridge.Peers, n.Address(), n.log.With("component", "dialer"))
		n.reported = make(map[MainlinePeer]bool)
	}
}

// wsAddrPort is the WebSocket server's bound address (invalid without one).
func (n *Node) wsAddrPort() netip.AddrPort {
	if n.wsAddr == nil {
		return netip.AddrPort{}
	}
	ws, err := netip.ParseAddrPort(n.wsAddr.String())
	if err != nil {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ws.Addr().Unmap(), ws.Port())
}

// startDNSDiscovery answers and asks dns-discovery's multicast DNS question
// for the topic, beside the swarm's own LAN discovery (and off with it). A
// server answers with its WebSocket; the ToolDb servers found are dialled.
// mDNS that cannot start (no multicast interface, port refused) is logged,
// not fatal, as the swarm's is.
func (n *Node) startDNSDiscovery() {
	if n.cfg.DisableLAN {
		return
	}
	n.startDialer()
	var serve netip.AddrPort
	if ws := n.wsAddrPort(); n.cfg.Server && ws.IsValid() {
		serve = ws
		if ws.Addr().IsUnspecified() {
			serve = netip.AddrPortFrom(netip.IPv4Unspecified(), ws.Port())
		}
	}
	d, err := dnsdisc.New(dnsdisc.Config{
		Topic: n.cfg.Topic, Serve: serve,
		OnPeer: func(p netip.AddrPort) { n.serverFound(p, "mdns") },
		Logger: n.log.With("component", "dns-discovery"),
	})
	if err == nil {
		err = d.Start()
	}
	if err != nil {
		n.log.Warn("dns-discovery (discovery-channel's multicast DNS) off", "err", err)
		return
	}
	n.dnsdisc = d
}
