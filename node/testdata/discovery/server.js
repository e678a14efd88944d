// The reference ToolDb server of the documents swarmdb implements, on discovery-channel:
//
//   node server.js TOPIC MODE BOOTSTRAP PORT
//
// A ToolDb server (server: true, its WebSocket on 127.0.0.1:PORT) announces itself with
// DC().join(TOPIC, PORT) and, as the reference does, connects to the other servers it finds. It
// writes "from-js" and waits for "from-go" to reach it. Events on stdout: listening, found, wrote,
// got. Runs until stdin closes.
"use strict";
const DC = require("discovery-channel");
const { newToolDb, emit, until, dcOptions } = require("./common");

async function main() {
  const [topic, mode, bootstrap, portStr] = process.argv.slice(2);
  const port = Number(portStr);
  const db = await newToolDb(topic, { server: true, host: "127.0.0.1", port });
  emit("listening", { port });
  const channel = DC(dcOptions(bootstrap.split(","), mode));
  const seen = new Set();
  channel.on("peer", (id, peer, type) => {
    const addr = peer.host + ":" + peer.port;
    if (peer.port === port || seen.has(addr)) return; // itself, or known
    seen.add(addr);
    emit("found", { host: peer.host, port: peer.port, type });
    db.network.connectTo(peer.host, peer.port).catch(() => {});
  });
  channel.join(topic, port);
  await db.putData("from-js", { by: "tool-db server" });
  emit("wrote", { key: "from-js" });
  const got = await until(() => db.store.get("from-go").then(JSON.parse, () => null), 60000);
  emit("got", { key: "from-go", value: got && got.v });
  process.stdin.resume();
  process.stdin.on("end", () => { channel.destroy(); db.network.close(); process.exit(0); });
}

main().catch((e) => { console.error(e); process.exit(1); });
