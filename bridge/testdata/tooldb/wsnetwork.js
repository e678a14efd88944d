// A minimal WebSocket network adapter for tool-db 2.6.6, written for these tests because
// ToolDb's own @tool-db/websocket-network is not published on npm. It does what the reference
// (tooldb-protocol.md §2.5) says the original does on the client side: dial
// ws://host:port (wss://host for 443), send ToolDb's ping on open, one JSON text frame per
// message, and route frames through ToolDbNetworkAdapter.onClientMessage.
"use strict";
const WebSocket = require("ws");
const { ToolDbNetworkAdapter } = require("tool-db");

class WsNetwork extends ToolDbNetworkAdapter {
  constructor(db) {
    super(db);
    this.sockets = new Set();
  }

  // connectTo resolves once the server answered our ping (its client id is known).
  connectTo(host, port) {
    const url = port === 443 ? "wss://" + host : "ws://" + host + ":" + port;
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      this.sockets.add(ws);
      let clientId = null;
      ws.on("open", () => {
        this.craftPingMessage().then((ping) => ws.send(ping));
      });
      ws.on("message", (data, isBinary) => {
        if (isBinary) return;
        this.onClientMessage(data.toString(), clientId, (id) => {
          clientId = id;
          this.isClientConnected[id] = () => ws.readyState === WebSocket.OPEN;
          this.clientToSend[id] = (msg) => ws.send(msg);
          resolve(id);
        });
      });
      ws.on("error", reject);
      ws.on("close", () => {
        this.sockets.delete(ws);
        if (clientId) this.onClientDisconnect(clientId);
      });
    });
  }

  close() {
    for (const ws of this.sockets) ws.close();
  }
}

module.exports = { WsNetwork };
