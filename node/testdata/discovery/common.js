// What the scenarios share: a ToolDb instance with an in-memory store, line output, polling.
"use strict";
const { ToolDb, ToolDbStorageAdapter } = require("tool-db");
const EcdsaUser = require("@tool-db/ecdsa-user").default;
const { WsNetwork } = require("./wsnetwork");

class MemStore extends ToolDbStorageAdapter {
  constructor(db, name) { super(db, name); this.m = new Map(); }
  put(k, v) { this.m.set(k, v); return Promise.resolve(); }
  get(k) { return this.m.has(k) ? Promise.resolve(this.m.get(k)) : Promise.reject(new Error("not found")); }
  query(p) { return Promise.resolve([...this.m.keys()].filter((k) => k.startsWith(p))); }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// newToolDb makes a ToolDb peer; opts are ToolDb options (server, host, port).
async function newToolDb(topic, opts) {
  const db = new ToolDb(Object.assign({ userAdapter: EcdsaUser, storageAdapter: MemStore,
    networkAdapter: WsNetwork, storageName: "t" + Math.random(), topic }, opts));
  await db.ready;
  while (!db.userAccount.getAddress() || !db.peerAccount.getAddress()) await sleep(5);
  return db;
}

// emit prints one event as a JSON line for the Go test.
function emit(event, fields) {
  process.stdout.write(JSON.stringify(Object.assign({ event }, fields)) + "\n");
}

// until polls cond for at most ms and returns its first truthy value, or null.
async function until(cond, ms) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const v = await cond();
    if (v) return v;
    await sleep(20);
  }
  return null;
}

// dcOptions is discovery-channel's config: the DHT always with an explicit bootstrap list (left
// unset, bittorrent-dht contacts the public routers), and either the DHT or multicast DNS (run
// only inside a network namespace the Go test made). The intervals are the tests' (the defaults
// are 10-15 min for the DHT, 60-70 s for DNS).
function dcOptions(bootstrap, mode) {
  if (mode === "mdns") return { dht: false, dns: { interval: 1000 } };
  return { dht: { bootstrap, interval: 2000 }, dns: false };
}

module.exports = { newToolDb, emit, until, sleep, dcOptions };
