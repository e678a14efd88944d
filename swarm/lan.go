package swarm

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"io"
	"log"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/mdns"

	"github.com/swarmdb/swarmdb/dht"
)

// LAN discovery: DNS-SD over mDNS (RFC 6762, RFC 6763) with
// github.com/hashicorp/mdns. Every swarm that serves a topic publishes one
// service instance of type lanService named after its public key, on its
// UDP port (the DHT socket, which also answers hole-punching signaling for
// its key), with TXT records
//
//	v=1                      format version
//	k=<hex public key>       identity (checked again by the Noise handshake)
//	t=<hex lanTag(topic)>    one per served topic
//
// and every swarm that is a client of a topic browses the service type and
// dials the instances whose tags match. The tag is a hash of the topic key,
// so the LAN learns which peers share a topic but not the topic key itself.
//
// mDNS needs multicast sockets on the real interfaces of the process's
// network namespace; pion's vnet has none, so this is the one part of the
// swarm that does not open its sockets through Config.Net.

// lanService is the DNS-SD service type (RFC 6763 §7: _name._udp).
const lanService = "_swarmdb._udp"

// lanQueryTimeout is how long one browse listens for answers. Responders
// on a LAN answer within 20-120 ms (RFC 6762 §6 delays responses by up to
// 120 ms to avoid collisions).
const lanQueryTimeout = time.Second

// lanMaxInstances is the most instances one browse finds (the query
// library drops answers beyond its channel's buffer).
const lanMaxInstances = 256

// lanMaxTopics bounds the tags one instance publishes (a TXT record set
// should stay within one 1500-byte packet).
const lanMaxTopics = 24

// lanTag is the topic's tag on the LAN: SHA-256("swarmdb/lan/1" || topic),
// first 8 bytes.
func lanTag(t Topic) string {
	h := sha256.New()
	h.Write([]byte("swarmdb/lan/1"))
	h.Write(t[:])
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// lanInstance names our service instance after our key (base32, 52
// characters, within a DNS label's 63).
func lanInstance(pub ed25519.PublicKey) string {
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(pub))
}

// lanTXT builds our TXT records.
func lanTXT(pub ed25519.PublicKey, served []Topic) []string {
	txt := []string{"v=1", "k=" + hex.EncodeToString(pub)}
	for i, t := range served {
		if i == lanMaxTopics {
			break
		}
		txt = append(txt, "t="+lanTag(t))
	}
	return txt
}

// lanPeer is what a browse answer says: the peer's key, the tags it
// serves and its address: IPv4, and IPv6 when the instance has an AAAA
// record (a dual-stack node whose IPv6 socket shares the port).
type lanPeer struct {
	pub   ed25519.PublicKey
	tags  map[string]bool
	addr  netip.AddrPort // invalid without an IPv4 address
	addr6 netip.AddrPort // invalid without an IPv6 address
}

// parseLANEntry reads a browse answer; ok is false for anything that is
// not a version-1 swarmdb instance with a valid key and an address.
func parseLANEntry(e *mdns.ServiceEntry) (lanPeer, bool) {
	p := lanPeer{tags: make(map[string]bool)}
	version := false
	for _, f := range e.InfoFields {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "v":
			version = v == "1"
		case "k":
			b, err := hex.DecodeString(v)
			if err != nil || len(b) != ed25519.PublicKeySize {
				return p, false
			}
			p.pub = b
		case "t":
			p.tags[v] = true
		}
	}
	if !version || p.pub == nil || e.Port <= 0 || e.Port > 65535 {
		return p, false
	}
	if ip, ok := netip.AddrFromSlice(e.AddrV4.To4()); ok {
		p.addr = netip.AddrPortFrom(ip, uint16(e.Port))
	}
	if ip, ok := netip.AddrFromSlice(e.AddrV6.To16()); ok && e.AddrV6.To4() == nil && !ip.IsLinkLocalUnicast() {
		p.addr6 = netip.AddrPortFrom(ip, uint16(e.Port))
	}
	return p, p.addr.IsValid() || p.addr6.IsValid()
}

// addrs returns the peer's addresses, IPv4 first.
func (p lanPeer) addrs() []netip.AddrPort {
	var out []netip.AddrPort
	for _, a := range []netip.AddrPort{p.addr, p.addr6} {
		if a.IsValid() {
			out = append(out, a)
		}
	}
	return out
}

// lanDiscovery publishes and browses. It keeps no peer state: what it
// finds goes to the swarm's peer table through Swarm.foundLAN.
type lanDiscovery struct {
	s      *Swarm
	wake   chan struct{} // buffered 1: republish and browse now
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex // guards server
	server *mdns.Server
}

func newLANDiscovery(s *Swarm) *lanDiscovery {
	return &lanDiscovery{s: s, wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// start checks that multicast works here (by opening the responder with
// no topics) and starts the loop.
func (l *lanDiscovery) start() error {
	if err := l.publish(); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	go l.run(ctx)
	return nil
}

// changed asks for a republish and a browse now (topics or addresses
// changed).
func (l *lanDiscovery) changed() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

func (l *lanDiscovery) close() {
	if l.cancel != nil {
		l.cancel()
		<-l.done
	}
	l.mu.Lock()
	if l.server != nil {
		l.server.Shutdown()
		l.server = nil
	}
	l.mu.Unlock()
}

// discardLog silences the library's log.Logger output (it logs every
// malformed packet on the LAN).
var discardLog = log.New(io.Discard, "", 0)

// publish (re)starts the responder with the current served topics and
// interface addresses.
func (l *lanDiscovery) publish() error {
	served, _ := l.s.lanTopics()
	ips := l.localIPs()
	port := int(l.s.LocalAddr().Port())
	pub := l.s.PublicKey()
	svc, err := mdns.NewMDNSService(lanInstance(pub), lanService, "", lanInstance(pub)[:16]+".local.", port, ips, lanTXT(pub, served))
	if err != nil {
		return err
	}
	srv, err := mdns.NewServer(&mdns.Config{Zone: svc, Logger: discardLog})
	if err != nil {
		return err
	}
	l.mu.Lock()
	old := l.server
	l.server = srv
	l.mu.Unlock()
	if old != nil {
		old.Shutdown()
	}
	return nil
}

// localIPs lists the addresses peers on the LAN can reach us at: the
// bound address, or every up, non-loopback interface address; IPv6 ones
// too when the node's IPv6 socket has the published port (lanIPv6).
func (l *lanDiscovery) localIPs() []net.IP {
	if a := l.s.LocalAddr().Addr(); a.IsValid() && !a.IsUnspecified() {
		return append([]net.IP{a.AsSlice()}, l.lanIPv6()...)
	}
	var ips []net.IP
	ifs, err := net.Interfaces()
	if err != nil {
		return nil
	}
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
				ips = append(ips, n.IP.To4())
			}
		}
	}
	return append(ips, l.lanIPv6()...)
}

// lanIPv6 lists the IPv6 addresses to publish: those of the node's IPv6
// socket when it listens on the published port (one DNS-SD instance has
// one port), bound to one address or, for [::], every up, non-loopback,
// non-link-local interface address.
func (l *lanDiscovery) lanIPv6() []net.IP {
	node := l.s.Node()
	if node == nil {
		return nil
	}
	v6 := node.LocalAddrIn(dht.IPv6)
	if !v6.IsValid() || v6.Port() != l.s.LocalAddr().Port() || v6 == l.s.LocalAddr() {
		return nil
	}
	if !v6.Addr().IsUnspecified() {
		return []net.IP{v6.Addr().AsSlice()}
	}
	var ips []net.IP
	ifs, err := net.Interfaces()
	if err != nil {
		return nil
	}
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() == nil && !n.IP.IsLinkLocalUnicast() {
				ips = append(ips, n.IP)
			}
		}
	}
	return ips
}

// run browses every LANInterval and on changes.
func (l *lanDiscovery) run(ctx context.Context) {
	defer close(l.done)
	republish := false
	for {
		if republish {
			if err := l.publish(); err != nil {
				l.s.log.Debug("swarm: lan publish failed", "err", err)
			}
		}
		l.browse(ctx)
		t := time.NewTimer(l.s.cfg.LANInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
			republish = false
		case <-l.wake:
			t.Stop()
			republish = true
		}
	}
}

// browse runs one DNS-SD query and hands matching peers to the swarm.
//
// The answers are read only after the query has returned: hashicorp/mdns
// sends an entry on the channel and goes on filling it in when later
// answers name the same instance (a data race if read meanwhile). It never
// blocks on a full channel, dropping the entry instead, so the buffer is
// the most instances one browse can find.
func (l *lanDiscovery) browse(ctx context.Context) {
	_, wanted := l.s.lanTopics()
	if len(wanted) == 0 {
		return
	}
	entries := make(chan *mdns.ServiceEntry, lanMaxInstances)
	// Ask over IPv6 multicast too when the node has an IPv6 socket: on an
	// IPv6-only LAN that is the only way.
	no6 := l.s.Node() == nil || !l.s.Node().LocalAddrIn(dht.IPv6).IsValid()
	err := mdns.QueryContext(ctx, &mdns.QueryParam{
		Service: lanService, Domain: "local", Timeout: lanQueryTimeout,
		Entries: entries, DisableIPv6: no6, Logger: discardLog,
	})
	close(entries)
	if err != nil && ctx.Err() == nil {
		l.s.log.Debug("swarm: lan query failed", "err", err)
	}
	for e := range entries {
		p, ok := parseLANEntry(e)
		if !ok || p.pub.Equal(l.s.PublicKey()) {
			continue
		}
		for _, t := range wanted {
			if p.tags[lanTag(t)] {
				l.s.foundLAN(t, p.pub, p.addrs())
			}
		}
	}
}

// lanTopics returns the topics served (published on the LAN) and the
// topics joined as a client (browsed for).
func (s *Swarm) lanTopics() (served, wanted []Topic) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for t, d := range s.topics {
		if d.server {
			served = append(served, t)
		}
		if d.client {
			wanted = append(wanted, t)
		}
	}
	return served, wanted
}

// foundLAN records a peer found on the LAN for topic.
func (s *Swarm) foundLAN(topic Topic, pub ed25519.PublicKey, addrs []netip.AddrPort) {
	s.mu.Lock()
	s.stats.lanFound++
	s.mu.Unlock()
	if s.node != nil {
		addrs = s.node.Usable(addrs)
	}
	s.found(topic, []dht.PeerRecord{{PublicKey: pub}}, map[peerKey][]netip.AddrPort{peerKey(pub): addrs})
}
