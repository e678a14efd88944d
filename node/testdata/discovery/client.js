// The reference ToolDb client of the documents swarmdb implements, on discovery-channel:
//
//   node client.js TOPIC MODE BOOTSTRAP KEY
//
// MODE is "dht" (BOOTSTRAP is a comma-separated list of mainline nodes) or "mdns". It joins the
// topic with DC().join(TOPIC), connects a ToolDb client to every server found (deduplicated by
// host:port, as the reference does), reads KEY, subscribes to it and reports each value it is
// notified of. Events on stdout: found, connected, read, subscribed, notified. Runs until stdin
// closes.
"use strict";
const DC = require("discovery-channel");
const { newToolDb, emit, dcOptions } = require("./common");

async function main() {
  const [topic, mode, bootstrap, key] = process.argv.slice(2);
  const db = await newToolDb(topic, { server: false });
  db.addKeyListener(key, (msg) => emit("notified", { value: msg.v }));
  const channel = DC(dcOptions(bootstrap.split(","), mode));
  const seen = new Set();
  channel.on("peer", async (id, peer, type) => {
    const addr = peer.host + ":" + peer.port;
    if (seen.has(addr)) return;
    seen.add(addr);
    emit("found", { host: peer.host, port: peer.port, type });
    try {
      await db.network.connectTo(peer.host, peer.port);
    } catch (e) {
      emit("dial_failed", { addr, error: String(e) });
      return;
    }
    emit("connected", { addr });
    const value = await db.getData(key, false, 5000).catch(() => null);
    emit("read", { value });
    await db.subscribeData(key);
    emit("subscribed", {});
  });
  channel.join(topic);
  process.stdin.resume();
  process.stdin.on("end", () => { channel.destroy(); db.network.close(); process.exit(0); });
}

main().catch((e) => { console.error(e); process.exit(1); });
