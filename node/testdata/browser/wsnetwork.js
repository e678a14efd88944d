// The small WebSocket network adapter of the browser client (ToolDb's own
// @tool-db/websocket-network is not on npm). It behaves as the reference's
// client side does (tooldb-protocol.md §2.5): dial ws://host:port, or
// wss://host for port 443, send ToolDb's ping on open, one JSON text frame
// per message, retry a failed dial up to options.maxRetries times every
// options.wait ms. Two differences, both needed by a browser that lives
// longer than one connection: connectURL takes a full URL (wss:// on any
// port, as --public-ws and /peers.json give them), and a connection that
// drops after it was established is dialled again (the reference only
// retries dials that never opened), with onReconnect(url) called once the
// node answered the new ping, so the app can subscribe again and catch up.
import { ToolDbNetworkAdapter } from "tool-db";

export class WsNetwork extends ToolDbNetworkAdapter {
  constructor(db) {
    super(db);
    this.conns = new Map(); // url -> { ws, tries, timer, clientId, everOpen }
    this.events = []; // what happened, for the tests: {url, type, code}
    this.onReconnect = () => {};
    this.closed = false;
  }

  connectTo(host, port) {
    return this.connectURL(port === 443 ? "wss://" + host : "ws://" + host + ":" + port);
  }

  // connectURL resolves with the node's client id once it answered our
  // ping, or rejects when the dial failed options.maxRetries + 1 times.
  connectURL(url) {
    return new Promise((resolve, reject) => {
      const c = { ws: null, tries: 0, timer: null, clientId: "", everOpen: false, resolve, reject };
      this.conns.set(url, c);
      this.dial(url, c);
    });
  }

  dial(url, c) {
    const ws = new WebSocket(url);
    c.ws = ws;
    let identified = false;
    ws.onopen = () => {
      this.events.push({ url, type: "open" });
      this.craftPingMessage().then((ping) => ws.send(ping));
    };
    ws.onmessage = (ev) => {
      if (typeof ev.data !== "string") return;
      this.onClientMessage(ev.data, c.clientId, (id) => {
        c.clientId = id;
        this.isClientConnected[id] = () => c.ws === ws && ws.readyState === WebSocket.OPEN;
        this.clientToSend[id] = (msg) => ws.send(msg);
        if (identified) return;
        identified = true;
        c.tries = 0;
        this.events.push({ url, type: "identified" });
        if (c.resolve) {
          c.resolve(id);
          c.resolve = c.reject = null;
        } else {
          this.onReconnect(url);
        }
        if (!c.everOpen) c.everOpen = true;
      });
    };
    ws.onerror = () => this.events.push({ url, type: "error" });
    ws.onclose = (ev) => {
      this.events.push({ url, type: "close", code: ev.code });
      if (c.clientId && identified) this.onClientDisconnect(c.clientId);
      if (this.closed || c.ws !== ws) return;
      if (c.tries >= this.tooldb.options.maxRetries) {
        this.events.push({ url, type: "gave-up" });
        this.conns.delete(url);
        if (c.reject) c.reject(new Error("cannot connect to " + url));
        return;
      }
      c.tries++;
      c.timer = setTimeout(() => this.dial(url, c), this.tooldb.options.wait);
    };
  }

  openCount() {
    let n = 0;
    for (const c of this.conns.values()) if (c.ws && c.ws.readyState === WebSocket.OPEN) n++;
    return n;
  }

  close() {
    this.closed = true;
    for (const c of this.conns.values()) {
      clearTimeout(c.timer);
      if (c.ws) c.ws.close();
    }
  }
}
