// ToolDb 2.6.6's server-side put path, timed: verifyMessage (hash only at pow>0, signature),
// read the stored record for LWW, write JSON to the leveldb store. Records are signed before
// the clock starts. Prints {"ops":N,"seconds":S,"perSec":R}. Used by BenchmarkSideBySideToolDb.
"use strict";
const os = require("os");
const fs = require("fs");
const path = require("path");
const { ToolDb, verifyMessage } = require("tool-db");
const EcdsaUser = require("@tool-db/ecdsa-user").default;
const Leveldb = require("@tool-db/leveldb-store").default;

module.exports = async function bench(n) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tooldb-bench-"));
  const cwd = process.cwd();
  process.chdir(dir); // the leveldb adapter opens its store relative to the working directory
  try {
    const db = new ToolDb({ userAdapter: EcdsaUser, storageAdapter: Leveldb, storageName: "bench", server: false });
    await db.ready;
    while (!db.userAccount.getAddress()) await new Promise((r) => setTimeout(r, 5));
    const recs = [];
    for (let i = 0; i < n; i++) {
      const m = await db.putData("seed" + (i % 1), { i }); // sign through ToolDb itself
      recs.push({ ...m.data, k: "bench/" + i });
    }
    const window = 64; // concurrent puts in flight, like a busy server
    const start = process.hrtime.bigint();
    let next = 0;
    async function worker() {
      while (next < recs.length) {
        const rec = recs[next++];
        const res = await verifyMessage.call(db, rec, db.options.pow);
        if (res !== "Verified") throw new Error("not verified: " + res);
        const old = await db.store.get(rec.k).catch(() => null);
        if (!old || JSON.parse(old).t < rec.t) await db.store.put(rec.k, JSON.stringify(rec));
      }
    }
    await Promise.all(Array.from({ length: window }, worker));
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    process.stdout.write(JSON.stringify({ ops: n, seconds, perSec: n / seconds }) + "\n");
    process.exit(0);
  } finally {
    process.chdir(cwd);
  }
};
