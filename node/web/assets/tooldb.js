// A small client of the ToolDb 2.6.6 message protocol (one JSON text frame
// per message; see the node's README) for the node's page: no build step,
// WebCrypto for the ECDSA P-256 keys, signatures and hashes ToolDb uses.
// The page's identity is kept in localStorage, so its records keep one
// author across reloads.

const ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXZabcdefghijklmnopqrstuvwxyz"; // ToolDb's textRandom has no Y
const KEY_STORE = "swarmdb-page-key";
const enc = new TextEncoder();

export function randomId(n = 10) {
  const b = crypto.getRandomValues(new Uint8Array(n));
  return Array.from(b, (x) => ALPHABET[x % ALPHABET.length]).join("");
}

function hex(buf) {
  return Array.from(new Uint8Array(buf), (x) => x.toString(16).padStart(2, "0")).join("");
}

export async function sha256hex(s) {
  return hex(await crypto.subtle.digest("SHA-256", enc.encode(s)));
}

// loadKeys returns the page's key pair and its ToolDb address (the JWK's x
// and y, base64url, concatenated), creating and saving them the first time.
async function loadKeys() {
  const algo = { name: "ECDSA", namedCurve: "P-256" };
  const saved = localStorage.getItem(KEY_STORE);
  if (saved) {
    const jwk = JSON.parse(saved);
    const priv = await crypto.subtle.importKey("jwk", jwk, algo, true, ["sign"]);
    return { priv, address: jwk.x + jwk.y };
  }
  const pair = await crypto.subtle.generateKey(algo, true, ["sign", "verify"]);
  const jwk = await crypto.subtle.exportKey("jwk", pair.privateKey);
  localStorage.setItem(KEY_STORE, JSON.stringify(jwk));
  return { priv: pair.privateKey, address: jwk.x + jwk.y };
}

// ToolDbClient keeps one WebSocket to the node, reconnecting when it drops,
// and re-sends its subscriptions on every new connection (the node answers
// a subscribe with the stored record, so the page catches up).
export class ToolDbClient {
  constructor(url, topic, onState) {
    this.url = url;
    this.topic = topic;
    this.onState = onState || (() => {});
    this.pending = new Map(); // message id -> resolve (get, query)
    this.subs = new Map(); // key -> set of callbacks
    this.ws = null;
    this.ready = null;
  }

  async start() {
    this.keys = await loadKeys();
    this.clientId = this.keys.address.slice(-20);
    this.connect();
  }

  get address() {
    return this.keys ? this.keys.address : "";
  }

  async sign(h) {
    const sig = await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, this.keys.priv, enc.encode(h));
    return hex(sig);
  }

  connect() {
    this.onState("connecting");
    const ws = new WebSocket(this.url);
    this.ws = ws;
    let opened;
    this.ready = new Promise((resolve) => (opened = resolve));
    ws.onopen = async () => {
      const ts = Date.now();
      const peer = { topic: this.topic, timestamp: ts, host: "", port: 0, address: this.keys.address };
      peer.sig = await this.sign(await sha256hex(`${this.topic}-${ts}-:0`));
      const id = randomId();
      this.pending.set(id, () => {
        this.onState("connected");
        opened();
        for (const key of this.subs.keys()) this.sendSubscribe(key);
      });
      this.send({ type: "ping", id, to: [this.clientId], isServer: false, clientId: this.clientId, peer });
    };
    ws.onmessage = (ev) => this.onMessage(ev.data);
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.onState("disconnected");
      setTimeout(() => this.connect(), 2000);
    };
  }

  send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  onMessage(text) {
    let m;
    try {
      m = JSON.parse(text);
    } catch {
      return;
    }
    const done = this.pending.get(m.id);
    if (done) {
      this.pending.delete(m.id);
      done(m);
    }
    if (m.type === "put" && m.data && this.subs.has(m.data.k)) {
      for (const cb of this.subs.get(m.data.k)) cb(m.data);
    }
  }

  request(msg, timeoutMs = 3000) {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.pending.delete(msg.id);
        resolve(null);
      }, timeoutMs);
      this.pending.set(msg.id, (m) => {
        clearTimeout(timer);
        resolve(m);
      });
      this.send(msg);
    });
  }

  async query(prefix) {
    await this.ready;
    const m = await this.request({ type: "query", key: prefix, id: randomId(), to: [this.clientId] });
    return m && Array.isArray(m.keys) ? m.keys.slice().sort() : [];
  }

  async get(key, timeoutMs = 3000) {
    await this.ready;
    const m = await this.request({ type: "get", key, id: randomId(), to: [this.clientId] }, timeoutMs);
    return m && m.data ? m.data : null;
  }

  sendSubscribe(key) {
    this.send({ type: "subscribe", key, id: randomId(), to: [this.clientId] });
  }

  async subscribe(key, cb) {
    if (!this.subs.has(key)) this.subs.set(key, new Set());
    this.subs.get(key).add(cb);
    await this.ready;
    this.sendSubscribe(key);
    return () => this.subs.get(key) && this.subs.get(key).delete(cb);
  }

  // put signs value (any JSON) under key as ToolDb's putData does with
  // proof of work 0: h = sha256(JSON(v) + a + t + n), s = ECDSA over h.
  async put(key, value) {
    await this.ready;
    const a = this.keys.address;
    const t = Date.now();
    const h = await sha256hex(JSON.stringify(value) + a + t + "0");
    const data = { k: key, a, n: 0, t, h, s: await this.sign(h), v: value, c: null };
    this.send({ type: "put", id: randomId(), to: [this.clientId], data });
    return data;
  }
}
