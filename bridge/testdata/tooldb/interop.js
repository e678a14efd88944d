// Interop scenario for bridge/interop_test.go, with the real tool-db 2.6.6 from npm:
//
//   node interop.js TOPIC HOST PORT_A PORT_B
//
// Client X connects to the Go node A, client Y to the Go node B (A and B are connected to each
// other by the Go test). Y subscribes to a key, X writes it twice, Y must be notified of both
// writes; Y reads a key X wrote (a get that Y has no local copy of), lists keys with a query,
// calls a server function, and reads a CRDT X wrote. Prints one JSON object with what happened.
"use strict";
const { ToolDb, ToolDbStorageAdapter, MapCrdt } = require("tool-db");
const EcdsaUser = require("@tool-db/ecdsa-user").default;
const { WsNetwork } = require("./wsnetwork");

class MemStore extends ToolDbStorageAdapter {
  constructor(db, name) { super(db, name); this.m = new Map(); }
  put(k, v) { this.m.set(k, v); return Promise.resolve(); }
  get(k) { return this.m.has(k) ? Promise.resolve(this.m.get(k)) : Promise.reject(new Error("not found")); }
  query(p) { return Promise.resolve([...this.m.keys()].filter((k) => k.startsWith(p))); }
}

const [topic, host, portA, portB] = process.argv.slice(2);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function client(port) {
  const db = new ToolDb({ userAdapter: EcdsaUser, storageAdapter: MemStore, networkAdapter: WsNetwork,
    storageName: "c" + Math.random(), topic, server: false });
  await db.ready;
  while (!db.userAccount.getAddress() || !db.peerAccount.getAddress()) await sleep(5);
  await db.network.connectTo(host, Number(port));
  return db;
}

// until polls cond (ToolDb offers no event for most of these) for at most ms.
async function until(cond, ms) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const v = await cond();
    if (v) return v;
    await sleep(20);
  }
  return null;
}

async function main() {
  const out = { notified: [], errors: [] };
  const x = await client(portA);
  const y = await client(portB);

  // Y subscribes before anything is written.
  y.addKeyListener("interop-sub", (msg) => out.notified.push(msg.v));
  await y.subscribeData("interop-sub");
  await sleep(200); // the subscribe must reach B before X writes (there is no ack)

  await x.putData("interop-get", { from: "X", note: "read me from B" });
  await x.putData("interop-sub", { n: 1 });
  out.first = await until(() => out.notified.find((v) => v && v.n === 1), 10000);
  await sleep(50); // distinct timestamps
  await x.putData("interop-sub", { n: 2 });
  out.second = await until(() => out.notified.find((v) => v && v.n === 2), 10000);

  out.get = await until(() => y.getData("interop-get", false, 2000).catch(() => null), 10000);
  out.keys = (await y.queryKeys("interop-", false, 1000)).sort();
  out.fn = await y.doFunction("echo", { hello: "go" }, 5000).catch((e) => ({ error: String(e) }));

  const map = new MapCrdt(x.userAccount.getAddress());
  map.SET("a", 1);
  map.SET("b", "two");
  await x.putCrdt("interop-map", map);
  const m2 = new MapCrdt(y.userAccount.getAddress());
  out.crdt = await until(async () => {
    const got = await y.getCrdt("interop-map", m2, false, 2000).catch(() => null);
    return got ? got.type || "stored" : null;
  }, 10000);
  out.crdtValue = m2.value;

  x.network.close();
  y.network.close();
  console.log(JSON.stringify(out));
  setTimeout(() => process.exit(0), 100);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
