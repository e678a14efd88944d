package node

import (
	"encoding/hex"
	"net"
	"strconv"
	"time"

	"github.com/swarmdb/swarmdb/bridge"
	"github.com/swarmdb/swarmdb/mainline"
	"github.com/swarmdb/swarmdb/portmap"
	"github.com/swarmdb/swarmdb/swarm"
)

// StatusVersion is the version of the Status JSON shape; fields are only
// ever added within a version.
const StatusVersion = 1

// Status is what GET /status.json returns and the node's page shows: who
// the node is, where it listens, its NAT, its peers, its DHTs and its
// store. It is a snapshot; the page polls it.
type Status struct {
	Version   int     `json:"version"`
	Topic     string  `json:"topic"`
	PublicKey string  `json:"public_key"` // the swarm identity, hex
	Address   string  `json:"address"`    // the ToolDb address (author of the node's records)
	ClientID  string  `json:"client_id"`  // the ToolDb client id (the address's last 20 characters)
	UptimeS   float64 `json:"uptime_s"`

	// WebSocket is the listener as seen from this machine ("" when off);
	// PublicWebSocket the --public-ws URL ("" when none); Advertised the
	// host:port in the node's ToolDb descriptor ("" when none).
	WebSocket       string `json:"ws"`
	PublicWebSocket string `json:"public_ws"`
	Advertised      string `json:"advertised"`
	UDP             string `json:"udp"`

	NAT NATStatus `json:"nat"`
	// PortMap is the router port mapping; nil when the node maps no ports
	// (disabled, LAN only, no gateway).
	PortMap *portmap.Status `json:"portmap"`
	Peers   []PeerStatus    `json:"peers"`
	// WebSocketPeers counts the message layer's connections that are not
	// swarm connections: browsers, ToolDb clients and servers.
	WebSocketPeers int `json:"websocket_peers"`

	// DHT is nil for a LAN-only node (no DHT).
	DHT *DHTStatus `json:"dht"`
	// Mainline is the BitTorrent mainline DHT part; nil means it is off.
	Mainline *MainlineStatus `json:"mainline"`

	Store    StoreStatus    `json:"store"`
	Messages MessagesStatus `json:"messages"`
}

// NATStatus is the last NAT measurement. Class is "lan-only" without a DHT
// to measure against and "measuring" until the first measurement.
type NATStatus struct {
	Class      string `json:"class"`
	PublicAddr string `json:"public_addr"`
	Mapping    string `json:"mapping"`
	Filtering  string `json:"filtering"`
}

// PeerStatus is one open swarm connection.
type PeerStatus struct {
	PublicKey     string    `json:"public_key"`
	Path          string    `json:"path"` // lan, direct or relay
	Role          string    `json:"role"` // client (we dialled) or server
	ConnectMS     float64   `json:"connect_ms"`
	ConnectedAt   time.Time `json:"connected_at"`
	BytesSent     uint64    `json:"bytes_sent"`
	BytesReceived uint64    `json:"bytes_received"`
	RTTMS         float64   `json:"rtt_ms"`
	Cipher        string    `json:"cipher"` // what seals the datagrams: ChaCha20-Poly1305 or AES-256-GCM
}

// DHTStatus is the node's own DHT.
type DHTStatus struct {
	ID           string `json:"id"`
	Persistent   bool   `json:"persistent"`
	PublicAddr   string `json:"public_addr"`
	RoutingTable int    `json:"routing_table"`
	Records      int    `json:"records"` // stored for others
	RequestsIn   uint64 `json:"requests_in"`
	RepliesIn    uint64 `json:"replies_in"`
	Timeouts     uint64 `json:"timeouts"`
	Announces    uint64 `json:"announces"` // successful rounds of the topic
	Lookups      uint64 `json:"lookups"`
}

// MainlineStatus is the BitTorrent mainline DHT (BEP 5) part of the node.
// The page shows "off" when Status.Mainline is nil.
type MainlineStatus struct {
	// State is "bootstrapping" (no good nodes yet) or "ready".
	State string `json:"state"`
	// ReadOnly is true while the node is not known to be reachable (BEP 43).
	ReadOnly bool `json:"read_only"`
	// Nodes is the number of good nodes in the routing table.
	Nodes int `json:"nodes"`
	// InfoHash is the topic's infohash (hex SHA-1 of the topic), as
	// discovery-channel and ToolDb servers use it.
	InfoHash string `json:"infohash"`
	// Announced says the WebSocket is announced under the topic; Reason
	// says why not.
	Announced bool   `json:"announced"`
	Reason    string `json:"reason,omitempty"`
	// PeersFound counts peers found over all lookups; ServersLinked the
	// live links to ToolDb servers found.
	PeersFound    uint64 `json:"peers_found"`
	ServersLinked int    `json:"servers_linked"`
	// JoinsByName counts DHT joins through bootstrap nodes found under the
	// bootstrap name.
	JoinsByName uint64 `json:"joins_by_name"`
}

// StoreStatus counts the store's records.
type StoreStatus struct {
	Accepted uint64 `json:"accepted"`
	Ignored  uint64 `json:"ignored"`
	Rejected uint64 `json:"rejected"`
}

// MessagesStatus counts the message layer's traffic.
type MessagesStatus struct {
	In       uint64 `json:"in"`
	Out      uint64 `json:"out"`
	BytesIn  uint64 `json:"bytes_in"`
	BytesOut uint64 `json:"bytes_out"`
}

// Status returns a snapshot (only the identity before Start).
func (n *Node) Status() Status {
	s := Status{
		Version: StatusVersion, Topic: n.cfg.Topic, PublicKey: hex.EncodeToString(n.PublicKey()),
		Address: n.Address(), PublicWebSocket: n.cfg.PublicWebSocketURL, Peers: []PeerStatus{},
	}
	if n.ready() != nil {
		return s
	}
	s.ClientID = n.bridge.ClientID()
	s.UptimeS = time.Since(n.startedAt).Seconds()
	s.WebSocket = n.WebSocketURL()
	if d := n.bridge.Descriptor(); d.Host != "" {
		s.Advertised = net.JoinHostPort(d.Host, strconv.FormatInt(d.Port, 10))
	}
	s.UDP = n.LocalAddr().String()
	s.NAT = n.natStatus()
	if pm, ok := n.PortMap(); ok {
		s.PortMap = &pm
	}
	n.mu.Lock()
	since := make(map[*swarm.Conn]time.Time, len(n.connectedAt))
	for c, t := range n.connectedAt {
		since[c] = t
	}
	n.mu.Unlock()
	for _, c := range n.swarm.Conns() {
		info, st := c.Info(), c.Stats()
		s.Peers = append(s.Peers, PeerStatus{
			PublicKey: hex.EncodeToString(info.PublicKey), Path: string(c.Path()), Role: string(info.Role),
			ConnectMS: ms(info.ConnectTime), ConnectedAt: since[c], BytesSent: st.BytesSent,
			BytesReceived: st.BytesReceived, RTTMS: ms(st.SRTT), Cipher: st.Datagram.Cipher.String(),
		})
	}
	bs := n.bridge.Stats()
	// Counted by kind, not as the bridge's peers less the swarm's
	// connections: while a connection is replaced the bridge can hold the
	// old one's peer and the new one's, and the difference counted one of
	// them as a WebSocket peer.
	for _, p := range n.bridge.Peers() {
		if p.Kind != bridge.KindSwarm {
			s.WebSocketPeers++
		}
	}
	s.Messages = MessagesStatus{In: bs.MessagesIn, Out: bs.MessagesOut, BytesIn: bs.BytesIn, BytesOut: bs.BytesOut}
	ss := n.store.Stats()
	s.Store = StoreStatus{Accepted: ss.Accepted, Ignored: ss.Ignored, Rejected: ss.Rejected}
	if dn := n.swarm.Node(); dn != nil {
		ds, sw := dn.Stats(), n.swarm.Stats()
		s.DHT = &DHTStatus{
			ID: hex.EncodeToString(ds.ID[:]), Persistent: ds.Persistent, RoutingTable: ds.RoutingTable,
			Records: ds.Records, RequestsIn: ds.RequestsIn, RepliesIn: ds.RepliesIn, Timeouts: ds.Timeouts,
			Announces: sw.Announces, Lookups: sw.Lookups,
		}
		if ds.PublicAddr.IsValid() {
			s.DHT.PublicAddr = ds.PublicAddr.String()
		}
	}
	if ms, ok := n.MainlineStats(); ok {
		s.Mainline = mainlineStatus(ms, n.cfg.Topic)
	}
	return s
}

func mainlineStatus(ms MainlineStats, topic string) *MainlineStatus {
	ih := mainline.TopicInfohash(topic)
	st := &MainlineStatus{State: "bootstrapping", ReadOnly: ms.ReadOnly, Nodes: ms.GoodNodes,
		InfoHash: hex.EncodeToString(ih[:]), Announced: ms.WebSocketAnnounced, Reason: ms.WebSocketReason,
		PeersFound: ms.PeersFound, ServersLinked: ms.ServersLinked, JoinsByName: ms.JoinsByName}
	if ms.GoodNodes > 0 {
		st.State = "ready"
	}
	return st
}

func (n *Node) natStatus() NATStatus {
	if !n.internetNode() {
		return NATStatus{Class: "lan-only"}
	}
	r := n.NAT()
	if r.Class == "" {
		return NATStatus{Class: "measuring"}
	}
	st := NATStatus{Class: string(r.Class), Mapping: r.Mapping.String(), Filtering: r.Filtering.String()}
	if r.PublicAddr.IsValid() {
		st.PublicAddr = r.PublicAddr.String()
	}
	return st
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
