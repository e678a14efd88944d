// The Node.js side of swarmdb's side-by-side benchmarks, driven by `go run ./bench`.
//
//   node bench.js dht-server                  HyperDHT networks on 127.0.0.1, driven by JSON lines on stdin:
//                                             {"cmd":"start","size":N,"topics":T} builds N-1 persistent nodes,
//                                             T ephemeral announcers and one ephemeral client;
//                                             {"cmd":"lookup","i":I} looks topic I%T up from the client;
//                                             {"cmd":"stop"} tears the network down. One JSON reply per line.
//   node bench.js tooldb N BYTES              ToolDb 2.6.6 server-side verified puts into its leveldb
//                                             store, then reads; prints {"writesPerSec","readsPerSec",...}
//   node bench.js testnet N                   N HyperDHT nodes on 127.0.0.1 (or --host IP); prints
//                                             {"event":"ready","bootstrap":"host:port,..."} and runs until
//                                             SIGTERM or stdin closes
//   node bench.js dht-node --bootstrap H:P    one persistent HyperDHT node (the idle-resources probe)
//   node bench.js pipe [--server] TOPIC --bootstrap H:P,...
//                                             Hyperswarm with the same interface as `swarmdb pipe --json`:
//                                             events on stderr, data on stdin/stdout
//
// Every mode talks only to the addresses it is given; nothing here uses public bootstrap nodes.
"use strict";
const crypto = require("crypto");
const os = require("os");
const fs = require("fs");
const path = require("path");
const readline = require("readline");

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

function parseBootstrap(s) {
  if (!s) throw new Error("--bootstrap host:port[,host:port] is required (public bootstrap nodes are never used)");
  return s.split(",").filter(Boolean).map((hp) => {
    const i = hp.lastIndexOf(":");
    return { host: hp.slice(0, i), port: Number(hp.slice(i + 1)) };
  });
}

function flag(args, name) {
  const i = args.indexOf(name);
  if (i < 0) return null;
  const v = args[i + 1];
  args.splice(i, 2);
  return v;
}

function bool(args, name) {
  const i = args.indexOf(name);
  if (i < 0) return false;
  args.splice(i, 1);
  return true;
}

const sha256 = (s) => crypto.createHash("sha256").update(s).digest();

// ---------------------------------------------------------------------------------------------
// DHT: lookup time and hops.

// startNetwork builds a network the way hyperdht's own createTestnet does (persistent, not
// firewalled nodes on one host), but bootstraps 16 nodes at a time like swarmdb's testnet.
async function startNetwork(DHT, size, host) {
  const nodes = [];
  const first = new DHT({ ephemeral: false, firewalled: false, bootstrap: [], port: 0, host });
  await first.fullyBootstrapped();
  nodes.push(first);
  const bootstrap = [{ host, port: first.address().port }];
  while (nodes.length < size) {
    const batch = [];
    for (let i = 0; i < 16 && nodes.length + batch.length < size; i++) {
      batch.push(new DHT({ ephemeral: false, firewalled: false, bootstrap, host }));
    }
    await Promise.all(batch.map((n) => n.fullyBootstrapped()));
    nodes.push(...batch);
  }
  return { nodes, bootstrap };
}

async function destroyAll(nodes) {
  for (let i = nodes.length - 1; i >= 0; i--) await nodes[i].destroy();
}

// timedLookup runs one lookup and counts hops the way swarmdb's dht package does: the number
// of sequential request rounds until the closest replying node was reached (1 when a seed
// already was the closest). dht-rpc does not track this, so the query's reply hook is wrapped
// to record which round each candidate was learned in.
async function timedLookup(node, topic) {
  const start = process.hrtime.bigint();
  const q = node.lookup(topic);
  const round = new Map();
  const key = (n) => n.host + ":" + n.port;
  const orig = q._onvisitbound;
  q._onvisitbound = (m, req) => {
    const hop = round.get(key(req.to)) || 0;
    if (m && m.closerNodes) {
      for (const n of m.closerNodes) if (!round.has(key(n))) round.set(key(n), hop + 1);
    }
    return orig(m, req);
  };
  let found = 0;
  for await (const data of q) found += data.peers.length;
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  const closest = q.closestReplies[0];
  const hops = closest ? (round.get(key(closest.from)) || 0) + 1 : 0;
  return { ms, hops, found: found > 0, queried: q.successes + q.errors };
}

async function dhtServer() {
  const DHT = require("hyperdht");
  let net = null;
  let client = null;
  let topics = [];
  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) {
    if (!line.trim()) continue;
    const msg = JSON.parse(line);
    try {
      if (msg.cmd === "start") {
        const rss0 = process.memoryUsage().rss;
        const t0 = Date.now();
        net = await startNetwork(DHT, msg.size - 1, "127.0.0.1");
        const mk = () => {
          const n = new DHT({ ephemeral: true, bootstrap: net.bootstrap, host: "127.0.0.1" });
          net.nodes.push(n);
          return n;
        };
        client = mk();
        await client.fullyBootstrapped();
        if (global.gc) global.gc();
        const rss1 = process.memoryUsage().rss;
        topics = [];
        for (let i = 0; i < msg.topics; i++) {
          const t = sha256("bench-" + i);
          const ann = mk();
          await ann.fullyBootstrapped();
          await ann.announce(t, DHT.keyPair()).finished();
          topics.push(t);
        }
        out({ ok: true, buildMs: Date.now() - t0, bytesPerNode: (rss1 - rss0) / msg.size });
      } else if (msg.cmd === "lookup") {
        out({ ok: true, ...(await timedLookup(client, topics[msg.i % topics.length])) });
      } else if (msg.cmd === "stop") {
        if (net) await destroyAll(net.nodes);
        net = null;
        out({ ok: true });
      } else {
        out({ ok: false, error: "unknown cmd " + msg.cmd });
      }
    } catch (e) {
      out({ ok: false, error: String((e && e.stack) || e) });
    }
  }
  if (net) await destroyAll(net.nodes);
  process.exit(0);
}

// ---------------------------------------------------------------------------------------------
// Database: ToolDb 2.6.6's server-side put path (verify, LWW read, store) and reads.

async function tooldb(n, bytes) {
  const { ToolDb, verifyMessage } = require("tool-db");
  const EcdsaUser = require("@tool-db/ecdsa-user").default;
  const Leveldb = require("@tool-db/leveldb-store").default;
  const dir = fs.mkdtempSync(path.join(process.env.BENCH_TMP || os.tmpdir(), "tooldb-bench-"));
  process.chdir(dir); // the leveldb adapter opens its store relative to the working directory
  const db = new ToolDb({ userAdapter: EcdsaUser, storageAdapter: Leveldb, storageName: "bench", server: false });
  await db.ready;
  while (!db.userAccount.getAddress()) await new Promise((r) => setTimeout(r, 5));
  const pad = "x".repeat(Math.max(0, bytes - 20));
  // Sign through ToolDb itself, outside the clock (to a scratch key, then renamed: at pow 0 the
  // key is not covered by the hash, exactly as a ToolDb server sees such records).
  const recs = [];
  for (let i = 0; i < n; i++) {
    const m = await db.putData("seed", { i, msg: pad });
    recs.push({ ...m.data, k: "bench/" + i });
  }
  const window = 64; // puts in flight, like the Go side's 64 writers
  let next = 0;
  const t0 = process.hrtime.bigint();
  async function writer() {
    while (next < recs.length) {
      const rec = recs[next++];
      const res = await verifyMessage.call(db, rec, db.options.pow);
      if (res !== "Verified") throw new Error("not verified: " + res);
      const old = await db.store.get(rec.k).catch(() => null);
      if (!old || JSON.parse(old).t < rec.t) await db.store.put(rec.k, JSON.stringify(rec));
    }
  }
  await Promise.all(Array.from({ length: window }, writer));
  const writeSec = Number(process.hrtime.bigint() - t0) / 1e9;
  const reads = n * 4;
  let r = 0;
  const t1 = process.hrtime.bigint();
  async function reader() {
    while (r < reads) {
      const k = "bench/" + (r++ % n);
      const v = JSON.parse(await db.store.get(k));
      if (v.k !== k) throw new Error("read the wrong record");
    }
  }
  await Promise.all(Array.from({ length: window }, reader));
  const readSec = Number(process.hrtime.bigint() - t1) / 1e9;
  out({ ops: n, bytes: JSON.stringify(recs[0]).length, writesPerSec: n / writeSec, readsPerSec: reads / readSec });
  process.chdir(os.tmpdir());
  fs.rmSync(dir, { recursive: true, force: true });
  process.exit(0);
}

// ---------------------------------------------------------------------------------------------
// Testnet and single DHT node processes (loopback, NAT lab public segment).

function untilStopped(cleanup) {
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    try {
      await cleanup();
    } finally {
      process.exit(0);
    }
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  // A parent that holds our stdin as a pipe ends us by closing it, even if it dies.
  if (fs.fstatSync(0).isFIFO()) {
    process.stdin.on("end", stop);
    process.stdin.resume();
  }
}

async function testnet(size, host) {
  const DHT = require("hyperdht");
  const net = await startNetwork(DHT, size, host);
  // hyperdht needs every node's address to find the others; the first one is enough.
  out({ event: "ready", bootstrap: net.bootstrap.map((b) => b.host + ":" + b.port).join(",") });
  untilStopped(() => destroyAll(net.nodes));
}

async function dhtNode(bootstrap, host) {
  const DHT = require("hyperdht");
  const node = new DHT({ ephemeral: false, firewalled: false, bootstrap, host });
  await node.fullyBootstrapped();
  out({ event: "ready", addr: host + ":" + node.address().port });
  untilStopped(() => node.destroy());
}

// ---------------------------------------------------------------------------------------------
// pipe: Hyperswarm behind the interface of `swarmdb pipe --json`.

function isPrivate(ip) {
  return /^(127\.|10\.|192\.168\.|172\.(1[6-9]|2\d|3[01])\.|100\.(6[4-9]|[7-9]\d|1[01]\d|12[0-7])\.)/.test(ip);
}

async function pipe(args) {
  const Hyperswarm = require("hyperswarm");
  const server = bool(args, "--server");
  const bootstrap = parseBootstrap(flag(args, "--bootstrap"));
  bool(args, "--json"); // always JSON
  const topicName = args[0];
  if (!topicName) throw new Error("usage: pipe [--server] TOPIC --bootstrap host:port");
  const ev = (obj) => process.stderr.write(JSON.stringify(obj) + "\n");
  const swarm = new Hyperswarm({ bootstrap });
  const topic = sha256(topicName);
  let first = null;
  swarm.on("connection", (socket, info) => {
    const ms = Number(process.hrtime.bigint() - joined) / 1e6;
    const remote = socket.rawStream ? socket.rawStream.remoteHost : "";
    ev({
      event: "connection",
      peer: info.publicKey.toString("hex"),
      path: isPrivate(remote) ? "lan" : "direct", // Hyperswarm has no relay unless relayThrough is set
      remote: remote + ":" + (socket.rawStream ? socket.rawStream.remotePort : 0),
      connect_ms: ms,
    });
    socket.on("error", () => {});
    socket.on("data", (b) => process.stdout.write(b));
    if (first === null) {
      first = socket;
      process.stdin.on("data", (b) => {
        if (!first.write(b)) {
          process.stdin.pause();
          first.once("drain", () => process.stdin.resume());
        }
      });
    }
  });
  const joined = process.hrtime.bigint();
  const discovery = swarm.join(topic, { server, client: !server });
  if (server) await discovery.flushed();
  ev({ event: "ready", public_key: swarm.keyPair.publicKey.toString("hex"), topic: topicName, server });
  const stop = async () => {
    await swarm.destroy();
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

// ---------------------------------------------------------------------------------------------

async function main() {
  const args = process.argv.slice(2);
  const cmd = args.shift();
  const host = flag(args, "--host") || "127.0.0.1";
  switch (cmd) {
    case "dht-server":
      return dhtServer();
    case "tooldb":
      return tooldb(Number(args[0] || 2000), Number(args[1] || 64));
    case "testnet":
      return testnet(Number(args[0] || 10), host);
    case "dht-node":
      return dhtNode(parseBootstrap(flag(args, "--bootstrap")), host);
    case "pipe":
      return pipe(args);
    default:
      console.error("usage: node bench.js dht-server | tooldb N BYTES | testnet N | dht-node --bootstrap H:P | pipe [--server] TOPIC --bootstrap H:P");
      process.exit(2);
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
