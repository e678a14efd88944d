// Golden vectors and cross-checks against the real tool-db 2.6.6 npm package.
//
//   node tooldb.js gen > ../vectors.json     records, CRDT changes and a signup made by ToolDb
//   node tooldb.js verify < records.json     ToolDb's verdict on records made elsewhere (Go)
//   node tooldb.js bench N                    ToolDb server-side verified puts into leveldb
//
// Used by the Go tests of package db (golden_test.go, bench_test.go). Keys are random on every
// run, so `gen` output changes each time; the committed vectors.json is one such run.
"use strict";
const { ToolDb, ToolDbStorageAdapter, MapCrdt, ListCrdt, CounterCrdt, sha256, verifyMessage } = require("tool-db");
const EcdsaUser = require("@tool-db/ecdsa-user").default;

// An in-memory store so `gen` and `verify` touch no disk.
class MemStore extends ToolDbStorageAdapter {
  constructor(db, name) { super(db, name); this.m = new Map(); }
  put(k, v) { this.m.set(k, v); return Promise.resolve(); }
  get(k) { return this.m.has(k) ? Promise.resolve(this.m.get(k)) : Promise.reject(new Error("not found")); }
  query(p) { return Promise.resolve([...this.m.keys()].filter((k) => k.startsWith(p))); }
}

async function newDb(opts) {
  const db = new ToolDb({ userAdapter: EcdsaUser, storageAdapter: MemStore, storageName: "v" + Math.random(), ...opts });
  await db.ready;
  // anonUser() runs asynchronously in the adapter's constructor; wait for the address.
  while (!db.userAccount.getAddress()) await new Promise((r) => setTimeout(r, 5));
  return db;
}

// Values that catch re-encoding: integer-like keys (JS orders them first), 1e21, -0,
// non-ASCII, characters Go's encoding/json would HTML-escape, a raw U+2028, nesting.
const VALUES = [
  "hello",
  42,
  -0,
  1.5e-7,
  true,
  null,
  [1, "two", [3], { four: 4 }],
  { b: 1, a: 2, 10: "ten", 2: [1.5, 1e21, 0, 0.1], z: { y: "é<>&\u2028\u2029" }, "": "empty" },
  { text: "line\nbreak \"quoted\" \\ tab\t \u0001 \ud83d\ude00" },
];

async function gen() {
  const out = { tooldb: "2.6.6", ecdsaUser: "1.1.3", records: [], crdts: [], signups: [], keys: [] };

  for (const pow of [0, 2]) {
    const db = await newDb({ pow });
    for (const v of VALUES) {
      const m = await db.putData("plain", v);
      out.records.push({ pow, note: "putData", record: m.data, json: JSON.stringify(m.data) });
    }
    const u = await db.putData("profile", { name: "me" }, true);
    out.records.push({ pow, note: "user namespaced", record: u.data, json: JSON.stringify(u.data) });
    const f = await db.putData("==frozen", { owner: true });
    out.records.push({ pow, note: "frozen", record: f.data, json: JSON.stringify(f.data) });
  }

  // CRDTs: two authors edit, each publishes its full change list; ToolDb's own merge of both
  // lists gives the expected value.
  const a = await newDb({});
  const b = await newDb({});
  const addrA = a.userAccount.getAddress();
  const addrB = b.userAccount.getAddress();

  const mapA = new MapCrdt(addrA);
  mapA.SET("x", 1); mapA.SET("y", "z"); mapA.DEL("x"); mapA.SET("w", { deep: [1, 2] });
  const mapB = new MapCrdt(addrB);
  mapB.SET("x", "b"); mapB.SET("q", null); mapB.DEL("q");
  const listA = new ListCrdt(addrA);
  listA.PUSH("a1"); listA.PUSH("a2"); listA.INS("a0", 0); listA.DEL(1);
  const listB = new ListCrdt(addrB);
  listB.PUSH("b1"); listB.PUSH({ b: 2 }); listB.INS("b0", 1);
  const cntA = new CounterCrdt(addrA);
  cntA.ADD(5); cntA.ADD(2); cntA.SUB(1);
  const cntB = new CounterCrdt(addrB);
  cntB.ADD(5); cntB.SUB(0.5);

  for (const [name, ca, cb, Ctor] of [["map", mapA, mapB, MapCrdt], ["list", listA, listB, ListCrdt], ["counter", cntA, cntB, CounterCrdt]]) {
    const ra = await a.putCrdt(name, ca);
    const rb = await b.putCrdt(name, cb);
    const merged = new Ctor("merger", ca.getChanges());
    merged.mergeChanges(cb.getChanges());
    out.crdts.push({
      name,
      type: ra.data.c,
      records: [ra.data, rb.data],
      jsons: [JSON.stringify(ra.data), JSON.stringify(rb.data)],
      valueA: ca.value,
      valueB: cb.value,
      merged: merged.value,
    });
  }

  // Signup: an encrypted account under "==name", signed by the new account's key.
  const s = await newDb({});
  const signup = await s.signUp("alice", "correct horse");
  const acc = await s.userAccount.decryptAccount(signup.data.v, sha256("correct horse"));
  out.signups.push({ user: "alice", password: "correct horse", record: signup.data, json: JSON.stringify(signup.data), pub: acc.pub, priv: acc.priv });

  // Key export in ToolDb's format (hex SPKI / hex PKCS8), with the address it gives.
  const hexed = await s.userAccount.encryptAccount(sha256("pw")).then((enc) => s.userAccount.decryptAccount(enc, sha256("pw")));
  out.keys.push({ address: s.userAccount.getAddress(), pub: hexed.pub, priv: hexed.priv });

  process.stdout.write(JSON.stringify(out, null, 1) + "\n");
  process.exit(0);
}

// verify reads {records:[{pow, record}], crdts:[{type, changes:[[...],[...]]}]} on stdin and
// prints ToolDb's verdict for each record and ToolDb's merged value for each CRDT.
async function verify() {
  const input = JSON.parse(require("fs").readFileSync(0, "utf8"));
  const db = await newDb({});
  const results = [];
  for (const r of input.records || []) {
    results.push(await verifyMessage.call(db, r.record, r.pow));
  }
  const merged = [];
  for (const c of input.crdts || []) {
    const Ctor = { MAP: MapCrdt, LIST: ListCrdt, COUNTER: CounterCrdt }[c.type];
    const doc = new Ctor("merger");
    for (const ch of c.changes) doc.mergeChanges(ch);
    merged.push(doc.value);
  }
  process.stdout.write(JSON.stringify({ results, merged }) + "\n");
  process.exit(0);
}

const cmd = process.argv[2];
if (cmd === "gen") gen().catch((e) => { console.error(e); process.exit(1); });
else if (cmd === "verify") verify().catch((e) => { console.error(e); process.exit(1); });
else if (cmd === "bench") require("./bench.js")(Number(process.argv[3] || 2000)).catch((e) => { console.error(e); process.exit(1); });
else { console.error("usage: node tooldb.js gen|verify|bench N"); process.exit(2); }
