// The node's page: polls /status.json (every second) and /peers.json, and
// explores the data over the ToolDb protocol on the node's own WebSocket.
import { ToolDbClient } from "./tooldb.js";

const $ = (id) => document.getElementById(id);
const STATUS_EVERY_MS = 1000;
const PEERS_EVERY_MS = 5000;

function text(id, v) {
  const el = $(id);
  const s = v === undefined || v === null || v === "" ? "—" : String(v);
  if (el.textContent !== s) el.textContent = s;
}

function bytes(n) {
  if (n < 1024) return n + " B";
  if (n < 1 << 20) return (n / 1024).toFixed(1) + " KiB";
  return (n / (1 << 20)).toFixed(1) + " MiB";
}

function duration(s) {
  s = Math.max(0, Math.floor(s));
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
}

// portMapText describes the router port mapping: protocol, external
// address(es) and lifetime, or why there is none.
function portMapText(pm) {
  if (!pm) return "off";
  if (pm.state !== "mapped" || !pm.udp) return pm.state + (pm.error ? " (" + pm.error.split("\n")[0] + ")" : "");
  let s = pm.protocol + " " + pm.udp.external;
  if (pm.tcp) s += ", websocket " + pm.tcp.external;
  return s + (pm.udp.lifetime_s ? " for " + duration(pm.udp.lifetime_s) : " (permanent)");
}

function renderStatus(st) {
  text("topic", st.topic);
  text("public-key", st.public_key);
  text("address", st.address);
  text("ws", st.ws);
  text("public-ws", st.public_ws || "none");
  text("advertised", st.advertised || "none");
  text("udp", st.udp);
  text("uptime", duration(st.uptime_s));
  text("nat-class", st.nat.class);
  text("nat-public", st.nat.public_addr);
  text("nat-mapping", st.nat.mapping);
  text("nat-filtering", st.nat.filtering);
  text("nat-portmap", portMapText(st.portmap));
  if (st.dht) {
    text("dht-state", st.dht.persistent ? "persistent (stores records)" : "ephemeral");
    text("dht-routing", st.dht.routing_table + " nodes");
    text("dht-records", st.dht.records);
    text("dht-rounds", st.dht.announces + " / " + st.dht.lookups);
  } else {
    text("dht-state", "off (LAN only)");
    for (const id of ["dht-routing", "dht-records", "dht-rounds"]) text(id, "");
  }
  const ml = st.mainline;
  text("mainline-state", ml ? ml.state + (ml.read_only ? " (read-only)" : "") : "off");
  text("mainline-nodes", ml ? ml.nodes : "");
  text("mainline-infohash", ml ? ml.infohash : "");
  text("peer-count", st.peers.length);
  text("ws-peers", st.websocket_peers);
  const now = Date.now();
  const rows = st.peers.map((p) => {
    const tr = document.createElement("tr");
    tr.dataset.key = p.public_key;
    const since = p.connected_at && !p.connected_at.startsWith("0001") ? (now - Date.parse(p.connected_at)) / 1000 : 0;
    const cells = [p.public_key.slice(0, 16) + "…", p.path, p.role, p.connect_ms.toFixed(1) + " ms", duration(since),
      bytes(p.bytes_sent), bytes(p.bytes_received), p.rtt_ms.toFixed(1) + " ms"];
    cells.forEach((c, i) => {
      const td = document.createElement("td");
      td.textContent = c;
      if (i === 1) td.className = "path-" + p.path;
      tr.appendChild(td);
    });
    return tr;
  });
  $("peers").tBodies[0].replaceChildren(...rows);
}

function renderPeers(doc) {
  const items = doc.peers.map((p) => {
    const li = document.createElement("li");
    li.textContent = p.url + (p.self ? "  (this node)" : "  checked " + new Date(p.verified).toLocaleTimeString());
    return li;
  });
  if (items.length === 0) {
    const li = document.createElement("li");
    li.textContent = "none known";
    items.push(li);
  }
  $("servers").replaceChildren(...items);
}

async function poll(url, every, render) {
  for (;;) {
    try {
      const r = await fetch(url, { cache: "no-store" });
      render(await r.json());
      $("live").textContent = "live";
      $("live").className = "badge ok";
    } catch (e) {
      $("live").textContent = "node unreachable";
      $("live").className = "badge bad";
    }
    await new Promise((r) => setTimeout(r, every));
  }
}

// The data explorer.
let client = null;
let unwatch = null;

function showRecord(key, rec) {
  text("value-key", key);
  $("value").textContent = rec ? JSON.stringify(rec.v, null, 2) : "(no record)";
  text("value-meta", rec ? "by " + rec.a.slice(0, 16) + "… at " + new Date(rec.t).toLocaleString() : "");
}

async function select(key) {
  for (const li of $("keys").children) li.classList.toggle("sel", li.textContent === key);
  if (unwatch) unwatch();
  $("watch-log").replaceChildren();
  showRecord(key, await client.get(key));
  unwatch = await client.subscribe(key, (rec) => {
    showRecord(key, rec);
    const li = document.createElement("li");
    li.textContent = new Date().toLocaleTimeString() + "  " + JSON.stringify(rec.v);
    $("watch-log").prepend(li);
  });
}

async function listKeys(ev) {
  if (ev) ev.preventDefault();
  const keys = await client.query($("prefix").value);
  $("keys").replaceChildren(...keys.map((k) => {
    const li = document.createElement("li");
    li.textContent = k;
    li.onclick = () => select(k);
    return li;
  }));
}

async function put(ev) {
  ev.preventDefault();
  const key = $("put-key").value.trim();
  let value;
  try {
    value = JSON.parse($("put-value").value);
  } catch (e) {
    text("put-result", "value is not JSON: " + e.message);
    return;
  }
  if (!key) {
    text("put-result", "key is empty");
    return;
  }
  const rec = await client.put(key, value);
  text("put-result", "sent, signed by " + rec.a.slice(0, 12) + "…");
  // The node stores a put asynchronously and sends no acknowledgement:
  // read the key back until it holds this record.
  for (let i = 0; i < 10; i++) {
    const back = await client.get(key, 1000);
    if (back && back.h === rec.h) {
      text("put-result", "stored on the node at " + new Date(rec.t).toLocaleTimeString());
      return;
    }
    await new Promise((r) => setTimeout(r, 300));
  }
  text("put-result", "sent, but the node does not hold it (refused, or a newer record won)");
}

async function startExplorer(topic) {
  if (!window.isSecureContext || !crypto.subtle) {
    const note = $("explorer-note");
    note.hidden = false;
    note.textContent = "The data explorer signs ToolDb messages with WebCrypto, which browsers only offer on https:// " +
      "(start the node with --tls-cert/--tls-key) or on localhost.";
    for (const el of document.querySelectorAll("#explorer button")) el.disabled = true;
    return;
  }
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  client = new ToolDbClient(scheme + location.host + "/", topic, (state) => {
    $("ws-state").textContent = state;
    $("ws-state").className = "badge" + (state === "connected" ? " ok" : state === "disconnected" ? " bad" : "");
  });
  await client.start();
  $("query-form").onsubmit = listKeys;
  $("put-form").onsubmit = put;
  await listKeys();
}

(async () => {
  const st = await (await fetch("status.json", { cache: "no-store" })).json();
  renderStatus(st);
  poll("status.json", STATUS_EVERY_MS, renderStatus);
  poll("peers.json", PEERS_EVERY_MS, renderPeers);
  startExplorer(st.topic);
})();
