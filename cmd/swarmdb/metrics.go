package main

import (
	"encoding/json"
	"net/http"
	"sort"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/swarmdb/swarmdb/node"
)

// Prometheus metrics of `swarmdb node --metrics ADDR` (served at /metrics).
//
// Almost everything is read from one node.Stats() snapshot per scrape by
// nodeCollector, so the counters are kept in one place (the components)
// and never twice. Only what no snapshot holds comes from the node's
// connection hook: connections opened by path and role, and how long each
// took to set up (connMetrics).

// connectBuckets span a LAN connection (milliseconds) to a TURN relay after
// a failed direct attempt (seconds).
var connectBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// connMetrics counts swarm connections from OnPeerConnect.
type connMetrics struct {
	opened  *prometheus.CounterVec
	connect *prometheus.HistogramVec
}

func newConnMetrics() *connMetrics {
	return &connMetrics{
		opened: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "swarmdb_punch_connections_total",
			Help: "Swarm connections established, by path (lan, direct, relay) and role (client: we dialled).",
		}, []string{"path", "role"}),
		connect: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "swarmdb_connect_seconds",
			Help:    "Time to set up a swarm connection (signaling, hole punching, handshake), by path.",
			Buckets: connectBuckets,
		}, []string{"path"}),
	}
}

func (m *connMetrics) observe(e node.PeerEvent) {
	m.opened.WithLabelValues(string(e.Path), e.Role).Inc()
	m.connect.WithLabelValues(string(e.Path)).Observe(e.ConnectTime.Seconds())
}

// metricsHandler serves the node's metrics (and the Go runtime's).
func metricsHandler(nd *node.Node, conns *connMetrics) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newNodeCollector(nd), conns.opened, conns.connect,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	metrics := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { healthz(w, nd) })
	mux.Handle("/", metrics) // /metrics, and every other path as before
	return mux
}

// healthz answers `swarmdb health` (a container's health check): 200 with
// a small JSON summary while the node runs. The metrics server starts only
// after the node did, and stops before it closes.
func healthz(w http.ResponseWriter, nd *node.Node) {
	st := nd.Stats()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"status": "ok", "public_key": st.PublicKey,
		"swarm_peers": st.Swarm.Connections, "message_peers": st.Bridge.Peers})
}

// nodeCollector turns one node.Stats() (plus DHT stats) snapshot into
// metrics at every scrape.
type nodeCollector struct {
	nd    *node.Node
	descs map[string]*prometheus.Desc
	mu    sync.Mutex // one scrape at a time: snapshots are cheap but not free
}

type metricDef struct {
	name, help string
	labels     []string
}

// metricDefs lists every metric the collector emits.
var metricDefs = []metricDef{
	{"swarmdb_info", "Constant 1, labelled with the node's identity.", []string{"public_key", "address"}},
	{"swarmdb_swarm_connections", "Open swarm connections by path.", []string{"path"}},
	{"swarmdb_swarm_connections_by_role", "Open swarm connections by role (client: we dialled).", []string{"role"}},
	{"swarmdb_swarm_connections_opened_total", "Swarm connections opened since start, by role.", []string{"role"}},
	{"swarmdb_swarm_connections_closed_total", "Swarm connections closed since start, by role.", []string{"role"}},
	{"swarmdb_swarm_duplicate_connections_total", "Connections that met another one to the same key.", nil},
	{"swarmdb_swarm_dial_attempts_total", "Dials started (DHT signaling, hole punching, handshake).", nil},
	{"swarmdb_swarm_dial_failures_total", "Failed dials by reason (timeout, refused, unreachable, signaling, firewall, other).", []string{"reason"}},
	{"swarmdb_swarm_inbound_refused_total", "Incoming connections refused, by reason (limit, banned, firewall).", []string{"reason"}},
	{"swarmdb_swarm_dialing", "Dials in flight.", nil},
	{"swarmdb_swarm_queued", "Peers waiting to be dialled.", nil},
	{"swarmdb_swarm_known_peers", "Peers known on the node's topic.", nil},
	{"swarmdb_swarm_announces_total", "Successful DHT announce rounds.", nil},
	{"swarmdb_swarm_lookups_total", "Successful DHT lookup rounds.", nil},
	{"swarmdb_swarm_lan_found_total", "Peers found by LAN discovery.", nil},
	{"swarmdb_swarm_network_changes_total", "Network changes handled.", nil},
	{"swarmdb_dht_packets_total", "DHT socket packets by direction (in, out).", []string{"direction"}},
	{"swarmdb_dht_requests_in_total", "DHT requests received.", nil},
	{"swarmdb_dht_replies_in_total", "DHT replies received to our requests.", nil},
	{"swarmdb_dht_timeouts_total", "DHT requests of ours that no reply came to, after all their tries.", nil},
	{"swarmdb_dht_resends_total", "DHT requests of ours sent again because no reply came soon enough.", nil},
	{"swarmdb_dht_join_retries_total", "Own-id lookups of a DHT join repeated in the background because the join left the routing table below k nodes.", nil},
	{"swarmdb_dht_dropped_total", "DHT packets dropped, by reason.", []string{"reason"}},
	{"swarmdb_dht_refused_total", "DHT announces refused, by reason.", []string{"reason"}},
	{"swarmdb_dht_stun_answered_total", "STUN binding requests answered on the DHT port.", nil},
	{"swarmdb_dht_relays_forwarded_total", "Signaling messages relayed for other peers.", nil},
	{"swarmdb_dht_routing_table", "Nodes in the DHT routing table.", nil},
	{"swarmdb_dht_records", "Topic records this node stores for others.", nil},
	{"swarmdb_mainline_read_only", "1 while the mainline DHT node is read-only (BEP 43: not known to be reachable), else 0.", nil},
	{"swarmdb_mainline_nodes", "Nodes in the mainline routing table, by state (good, all).", []string{"state"}},
	{"swarmdb_mainline_packets_total", "KRPC datagrams received, by outcome (handled, malformed, busy: the library's inbox was full).", []string{"outcome"}},
	{"swarmdb_mainline_traversals_total", "Mainline lookups and announces started.", nil},
	{"swarmdb_mainline_announces_stored_total", "announce_peer queries other mainline nodes accepted from this one.", nil},
	{"swarmdb_mainline_peers_found_total", "Peers found by mainline traversals.", nil},
	{"swarmdb_mainline_store", "Announces this node stores for others, by kind (infohashes, peers).", []string{"kind"}},
	{"swarmdb_mainline_announces_received_total", "announce_peer queries this node stored.", nil},
	{"swarmdb_mainline_topic_rounds_total", "Lookups and announces of the topic's infohash (discovery-channel's).", nil},
	{"swarmdb_mainline_websocket_announced", "1 while the WebSocket is announced under the topic's infohash, else 0.", nil},
	{"swarmdb_mainline_bootstrap_candidates_total", "Candidates found under the bootstrap name, by result (accepted, rejected).", []string{"result"}},
	{"swarmdb_mainline_joins_by_name_total", "DHT joins through bootstrap nodes found under the bootstrap name.", nil},
	{"swarmdb_mainline_name_announces_total", "Announces of this node under the bootstrap name.", nil},
	{"swarmdb_tooldb_servers_linked", "Links to ToolDb servers found by discovery (mainline DHT, dns-discovery).", nil},
	{"swarmdb_records_total", "Records offered to the store, by result (accepted, ignored: stale or duplicate, rejected).", []string{"result"}},
	{"swarmdb_store_commits_total", "Store group commits (one fsync each).", nil},
	{"swarmdb_peers", "Message-layer peers (swarm connections and WebSocket clients).", nil},
	{"swarmdb_bridge_messages_total", "Message-layer messages by direction (in, out).", []string{"direction"}},
	{"swarmdb_bridge_bytes_total", "Message-layer bytes by direction (in, out).", []string{"direction"}},
	{"swarmdb_bridge_dropped_total", "Messages dropped or refused by the message layer, by reason (duplicate, rejected).", []string{"reason"}},
	{"swarmdb_bridge_relayed_total", "Put copies relayed to other server peers.", nil},
	{"swarmdb_bridge_pushes_total", "Subscription pushes sent.", nil},
	{"swarmdb_bridge_sync_messages_total", "Anti-entropy messages sent.", nil},
	{"swarmdb_bridge_catchup_records_total", "Records sent by anti-entropy catch-up.", nil},
	{"swarmdb_bridge_disconnects_total", "Peers disconnected by the message layer, by reason (slow, abuse).", []string{"reason"}},
}

// isCounter: metrics named *_total are counters, the rest gauges.
func isCounter(name string) bool { return len(name) > 6 && name[len(name)-6:] == "_total" }

func newNodeCollector(nd *node.Node) *nodeCollector {
	c := &nodeCollector{nd: nd, descs: map[string]*prometheus.Desc{}}
	for _, d := range metricDefs {
		c.descs[d.name] = prometheus.NewDesc(d.name, d.help, d.labels, nil)
	}
	return c
}

func (c *nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c *nodeCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	emit := func(name string, v float64, labels ...string) {
		t := prometheus.GaugeValue
		if isCounter(name) {
			t = prometheus.CounterValue
		}
		ch <- prometheus.MustNewConstMetric(c.descs[name], t, v, labels...)
	}
	st := c.nd.Stats()
	emit("swarmdb_info", 1, st.PublicKey, st.Address)
	collectSwarm(emit, st)
	c.collectDHT(emit)
	if ml, ok := c.nd.MainlineStats(); ok {
		c.collectMainline(emit, ml)
	}
	collectStore(emit, st)
}

// emitFunc emits one sample of the named metric.
type emitFunc func(name string, v float64, labels ...string)

// collectSwarm emits the swarm's metrics.
func collectSwarm(emit emitFunc, st node.Stats) {
	sw := st.Swarm
	for _, p := range sortedKeys(sw.ByPath) {
		emit("swarmdb_swarm_connections", float64(sw.ByPath[p]), string(p))
	}
	for _, r := range sortedKeys(sw.ByRole) {
		emit("swarmdb_swarm_connections_by_role", float64(sw.ByRole[r]), string(r))
	}
	for _, r := range sortedKeys(sw.Opened) {
		emit("swarmdb_swarm_connections_opened_total", float64(sw.Opened[r]), string(r))
	}
	for _, r := range sortedKeys(sw.Closed) {
		emit("swarmdb_swarm_connections_closed_total", float64(sw.Closed[r]), string(r))
	}
	emit("swarmdb_swarm_duplicate_connections_total", float64(sw.Duplicates))
	emit("swarmdb_swarm_dial_attempts_total", float64(sw.Attempts))
	for _, r := range sortedKeys(sw.FailuresByReason) {
		emit("swarmdb_swarm_dial_failures_total", float64(sw.FailuresByReason[r]), r)
	}
	for _, r := range sortedKeys(sw.InboundRefused) {
		emit("swarmdb_swarm_inbound_refused_total", float64(sw.InboundRefused[r]), r)
	}
	emit("swarmdb_swarm_dialing", float64(sw.Dialing))
	emit("swarmdb_swarm_queued", float64(sw.Queued))
	known := 0
	for _, n := range sw.PeersByTopic {
		known += n
	}
	emit("swarmdb_swarm_known_peers", float64(known))
	emit("swarmdb_swarm_announces_total", float64(sw.Announces))
	emit("swarmdb_swarm_lookups_total", float64(sw.Lookups))
	emit("swarmdb_swarm_lan_found_total", float64(sw.LANFound))
	emit("swarmdb_swarm_network_changes_total", float64(sw.NetworkChanges))
}

// collectDHT emits the DHT node's metrics, when the node runs one.
func (c *nodeCollector) collectDHT(emit emitFunc) {
	d, ok := c.nd.DHTStats()
	if !ok {
		return
	}
	emit("swarmdb_dht_packets_total", float64(d.PacketsIn), "in")
	emit("swarmdb_dht_packets_total", float64(d.PacketsOut), "out")
	emit("swarmdb_dht_requests_in_total", float64(d.RequestsIn))
	emit("swarmdb_dht_replies_in_total", float64(d.RepliesIn))
	emit("swarmdb_dht_timeouts_total", float64(d.Timeouts))
	emit("swarmdb_dht_resends_total", float64(d.Resends))
	emit("swarmdb_dht_join_retries_total", float64(d.JoinRetries))
	emit("swarmdb_dht_dropped_total", float64(d.DroppedMalformed), "malformed")
	emit("swarmdb_dht_dropped_total", float64(d.DroppedBadVersion), "bad_version")
	emit("swarmdb_dht_dropped_total", float64(d.DroppedRateLimited), "rate_limited")
	emit("swarmdb_dht_dropped_total", float64(d.DroppedUnexpectedReply), "unexpected_reply")
	emit("swarmdb_dht_dropped_total", float64(d.IgnoredBadID), "bad_id")
	emit("swarmdb_dht_refused_total", float64(d.RefusedBadToken), "bad_token")
	emit("swarmdb_dht_refused_total", float64(d.RefusedBadSignature), "bad_signature")
	emit("swarmdb_dht_refused_total", float64(d.RefusedBadRecord), "bad_record")
	emit("swarmdb_dht_stun_answered_total", float64(d.STUNAnswered))
	emit("swarmdb_dht_relays_forwarded_total", float64(d.RelaysForwarded))
	emit("swarmdb_dht_routing_table", float64(d.RoutingTable))
	emit("swarmdb_dht_records", float64(d.Records))
}

// collectStore emits the store's and the message layer's metrics.
func collectStore(emit emitFunc, st node.Stats) {
	emit("swarmdb_records_total", float64(st.Store.Accepted), "accepted")
	emit("swarmdb_records_total", float64(st.Store.Ignored), "ignored")
	emit("swarmdb_records_total", float64(st.Store.Rejected), "rejected")
	emit("swarmdb_store_commits_total", float64(st.Store.Commits))

	br := st.Bridge
	emit("swarmdb_peers", float64(br.Peers))
	emit("swarmdb_bridge_messages_total", float64(br.MessagesIn), "in")
	emit("swarmdb_bridge_messages_total", float64(br.MessagesOut), "out")
	emit("swarmdb_bridge_bytes_total", float64(br.BytesIn), "in")
	emit("swarmdb_bridge_bytes_total", float64(br.BytesOut), "out")
	emit("swarmdb_bridge_dropped_total", float64(br.Duplicates), "duplicate")
	emit("swarmdb_bridge_dropped_total", float64(br.Rejected), "rejected")
	emit("swarmdb_bridge_relayed_total", float64(br.Relayed))
	emit("swarmdb_bridge_pushes_total", float64(br.Pushes))
	emit("swarmdb_bridge_sync_messages_total", float64(br.SyncMessages))
	emit("swarmdb_bridge_catchup_records_total", float64(br.CatchupSent))
	emit("swarmdb_bridge_disconnects_total", float64(br.SlowDisconnects), "slow")
	emit("swarmdb_bridge_disconnects_total", float64(br.AbuseDisconnects), "abuse")
}

// collectMainline emits the mainline part's metrics.
func (c *nodeCollector) collectMainline(emit emitFunc, ml node.MainlineStats) {
	emit("swarmdb_mainline_read_only", boolValue(ml.ReadOnly))
	emit("swarmdb_mainline_nodes", float64(ml.GoodNodes), "good")
	emit("swarmdb_mainline_nodes", float64(ml.Nodes), "all")
	emit("swarmdb_mainline_packets_total", float64(ml.PacketsIn-ml.DroppedBadKRPC), "handled")
	emit("swarmdb_mainline_packets_total", float64(ml.DroppedBadKRPC), "malformed")
	emit("swarmdb_mainline_packets_total", float64(ml.DroppedBusy), "busy")
	emit("swarmdb_mainline_traversals_total", float64(ml.Traversals))
	emit("swarmdb_mainline_announces_stored_total", float64(ml.AnnouncesStored))
	emit("swarmdb_mainline_peers_found_total", float64(ml.PeersFound))
	emit("swarmdb_mainline_store", float64(ml.StoredInfohashes), "infohashes")
	emit("swarmdb_mainline_store", float64(ml.StoredPeers), "peers")
	emit("swarmdb_mainline_announces_received_total", float64(ml.AnnouncesReceived))
	emit("swarmdb_mainline_topic_rounds_total", float64(ml.TopicRounds))
	emit("swarmdb_mainline_websocket_announced", boolValue(ml.WebSocketAnnounced))
	emit("swarmdb_mainline_bootstrap_candidates_total", float64(ml.Candidates-ml.Rejected), "accepted")
	emit("swarmdb_mainline_bootstrap_candidates_total", float64(ml.Rejected), "rejected")
	emit("swarmdb_mainline_joins_by_name_total", float64(ml.JoinsByName))
	emit("swarmdb_mainline_name_announces_total", float64(ml.NameAnnounces))
	emit("swarmdb_tooldb_servers_linked", float64(ml.ServersLinked))
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// sortedKeys returns m's keys in order, so scrapes list series stably.
func sortedKeys[K ~string, V any](m map[K]V) []K {
	out := make([]K, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}
