// A WebSocket network adapter for tool-db 2.6.6 with both sides, written for these tests because
// ToolDb's own @tool-db/websocket-network is not published on npm. It does what the reference
// (tooldb-protocol.md §2.5) says the original does: the dialer sends ToolDb's ping on open and
// connects to ws://host:port; a server listens with ws's WebSocket.Server on options.port (any
// path); one JSON text frame per message, routed through onClientMessage.
"use strict";
const WebSocket = require("ws");
const { ToolDbNetworkAdapter } = require("tool-db");

class WsNetwork extends ToolDbNetworkAdapter {
  constructor(db) {
    super(db);
    this.sockets = new Set();
    if (db.options.server) {
      this.wss = new WebSocket.Server({ port: db.options.port, host: db.options.host });
      this.wss.on("connection", (ws) => this.attach(ws, () => {}));
    }
  }

  // attach routes a socket's frames through ToolDb; ready gets the peer's client id once its
  // ping or pong arrived.
  attach(ws, ready) {
    this.sockets.add(ws);
    let clientId = null;
    ws.on("message", (data, isBinary) => {
      if (isBinary) return;
      this.onClientMessage(data.toString(), clientId, (id) => {
        clientId = id;
        this.isClientConnected[id] = () => ws.readyState === WebSocket.OPEN;
        this.clientToSend[id] = (msg) => ws.send(msg);
        ready(id);
      });
    });
    ws.on("close", () => {
      this.sockets.delete(ws);
      if (clientId) this.onClientDisconnect(clientId);
    });
  }

  // connectTo resolves once the server answered our ping (its client id is known).
  connectTo(host, port) {
    const url = port === 443 ? "wss://" + host : "ws://" + host + ":" + port;
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      ws.on("open", () => this.craftPingMessage().then((ping) => ws.send(ping)));
      ws.on("error", reject);
      this.attach(ws, resolve);
    });
  }

  close() {
    for (const ws of this.sockets) ws.close();
    if (this.wss) this.wss.close();
  }
}

module.exports = { WsNetwork };
