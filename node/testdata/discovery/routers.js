// A closed mainline DHT of bittorrent-dht 7.10.0 nodes (the version discovery-channel 5.5.1
// installs) on loopback, standing in for the public routers:
//
//   node routers.js N
//
// The first node bootstraps from nobody, the others from the first. Prints
// {"event":"ready","routers":["127.0.0.1:P",...],"bytesPerNode":B} (B: RSS growth per node; run
// with --expose-gc for a steadier figure) and runs until stdin closes.
"use strict";
const DHT = require("bittorrent-dht");
const { emit } = require("./common");

async function main() {
  const n = Number(process.argv[2] || 3);
  const nodes = [];
  if (global.gc) global.gc();
  const rssBefore = process.memoryUsage().rss;
  for (let i = 0; i < n; i++) {
    const bootstrap = i === 0 ? false : ["127.0.0.1:" + nodes[0].address().port];
    const dht = new DHT({ bootstrap });
    await new Promise((resolve) => dht.listen(0, "127.0.0.1", resolve));
    if (i > 0) await new Promise((resolve) => dht.once("ready", resolve));
    nodes.push(dht);
  }
  if (global.gc) global.gc();
  const bytesPerNode = (process.memoryUsage().rss - rssBefore) / n;
  emit("ready", { routers: nodes.map((d) => "127.0.0.1:" + d.address().port), bytesPerNode });
  process.stdin.resume();
  process.stdin.on("end", () => { nodes.forEach((d) => d.destroy()); process.exit(0); });
}

main().catch((e) => { console.error(e); process.exit(1); });
