// The browser client the Go tests drive: the reference ToolDb browser stack
// (tool-db, IndexedDB storage, ECDSA users) plus our WebSocket adapter,
// with a few helpers on window.harness that the tests call through CDP.
import { ToolDb } from "tool-db";
import ToolDbIndexedb from "@tool-db/indexeddb-store";
import EcdsaUser from "@tool-db/ecdsa-user";
import { WsNetwork } from "./wsnetwork.js";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const harness = {
  db: null,
  seen: {}, // key -> values the key listener was given, in order

  // start makes the client (its data in IndexedDB under storageName, so a
  // reload with the same name finds it again) and connects to every URL.
  async start({ topic, urls, storageName, wait = 300, maxRetries = 200 }) {
    const db = new ToolDb({ topic, server: false, storageName, wait, maxRetries,
      networkAdapter: WsNetwork, storageAdapter: ToolDbIndexedb, userAdapter: EcdsaUser });
    await db.ready;
    while (!db.userAccount.getAddress() || !db.peerAccount.getAddress()) await sleep(5);
    this.db = db;
    // Catch up after a reconnect: subscribe again to every watched key;
    // the node answers a subscribe with the record it holds.
    db.network.onReconnect = () => {
      for (const key of Object.keys(this.seen)) db.subscribeData(key);
    };
    for (const url of urls) await db.network.connectURL(url);
    return { user: db.userAccount.getAddress(), peer: db.peerAccount.getAddress() };
  },

  async connect(url) {
    await this.db.network.connectURL(url);
    return this.db.network.openCount();
  },

  async put(key, value) {
    const msg = await this.db.putData(key, value);
    return msg && msg.data ? msg.data.h : null;
  },

  async get(key, timeoutMs = 3000) {
    const v = await this.db.getData(key, false, timeoutMs);
    return v === undefined ? null : v;
  },

  // local reads the record straight from IndexedDB (no network).
  async local(key) {
    try {
      const raw = await this.db.store.get(key);
      return raw ? JSON.parse(raw).v : null;
    } catch (e) {
      return null;
    }
  },

  async watch(key) {
    if (!this.seen[key]) {
      this.seen[key] = [];
      this.db.addKeyListener(key, (msg) => this.seen[key].push(msg.v));
    }
    await this.db.subscribeData(key);
  },

  values(key) {
    return this.seen[key] || [];
  },

  async peersJSON(base) {
    const r = await fetch(base + "/peers.json");
    return r.json();
  },

  events() {
    return this.db ? this.db.network.events : [];
  },

  openCount() {
    return this.db ? this.db.network.openCount() : 0;
  },
};

window.harness = harness;
