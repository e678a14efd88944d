// The benchmark's discovery-channel side (go run ./bench -parts mainline):
//
//   node find.js TOPIC BOOTSTRAP
//
// Joins TOPIC as a client (DC().join(TOPIC)) on the mainline DHT at BOOTSTRAP and prints
// {"event":"found","ms":M} with the time from making the channel to its first peer, then exits.
"use strict";
const DC = require("discovery-channel");
const { emit } = require("./common");

const [topic, bootstrap] = process.argv.slice(2);
const start = process.hrtime.bigint();
const channel = DC({ dht: { bootstrap: bootstrap.split(",") }, dns: false });
channel.on("peer", (id, peer) => {
  emit("found", { ms: Number(process.hrtime.bigint() - start) / 1e6, host: peer.host, port: peer.port });
  channel.destroy();
  process.exit(0);
});
channel.join(topic);
