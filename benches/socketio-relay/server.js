// The reference competitor camsig-bench measures camsig against: what an app
// developer would write instead of running camsig, a Socket.IO server with the
// Redis adapter, one process per node, all nodes on one Redis.
//
//   PORT=3001 REDIS_URL=redis://127.0.0.1:6379 node server.js
//
// A client connects to /socket.io/ with `auth: {user}` (or `?user=` in the
// query) and joins the room named after its user id. `POST /publish` with
// {"to": "<user>", "data": {...}} emits `put_ice` with `data` to room `to`
// through the adapter, so the event reaches that user's sockets on every node
// (Redis pub/sub), and answers 202. `GET /healthz` answers 200 once the
// adapter's Redis clients are connected and the port is open.
//
// Nothing else: no auth, no state, no log of past events, no presence. It is
// the bare relay that camsig's signaling is measured against.

"use strict";

const http = require("node:http");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");

const port = Number(process.env.PORT || 3000);
const redisUrl = process.env.REDIS_URL || "redis://127.0.0.1:6379";
const event = process.env.EVENT || "put_ice";
const maxBody = 64 * 1024;

function answer(res, status, body) {
  const text = body === undefined ? "" : JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

async function main() {
  const pubClient = createClient({ url: redisUrl });
  const subClient = pubClient.duplicate();
  for (const c of [pubClient, subClient]) {
    c.on("error", (err) => console.error(`redis: ${err.message}`));
  }
  await Promise.all([pubClient.connect(), subClient.connect()]);

  let io;
  const server = http.createServer((req, res) => {
    if (req.method === "GET" && req.url === "/healthz") {
      return answer(res, 200, { ok: true });
    }
    if (req.url !== "/publish") {
      return answer(res, 404, { error: "not_found" });
    }
    if (req.method !== "POST") {
      res.setHeader("allow", "POST");
      return answer(res, 405, { error: "method_not_allowed" });
    }
    const chunks = [];
    let size = 0;
    req.on("data", (chunk) => {
      size += chunk.length;
      if (size > maxBody) {
        answer(res, 413, { error: "too_large" });
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on("end", () => {
      if (res.headersSent) return;
      let msg;
      try {
        msg = JSON.parse(Buffer.concat(chunks).toString("utf8"));
      } catch {
        return answer(res, 400, { error: "invalid_json" });
      }
      if (!msg || typeof msg.to !== "string" || msg.to === "" || msg.data === undefined) {
        return answer(res, 400, { error: "want {\"to\": \"<user>\", \"data\": {...}}" });
      }
      // Local sockets in the room get it now; the adapter PUBLISHes it for the other nodes.
      io.to(msg.to).emit(event, msg.data);
      answer(res, 202);
    });
  });
  // Keep-alive connections from the load tool stay open between calls.
  server.keepAliveTimeout = 60_000;

  io = new Server(server, {
    adapter: createAdapter(pubClient, subClient),
    serveClient: false,
    cors: { origin: "*" },
  });
  io.on("connection", (socket) => {
    const user = (socket.handshake.auth && socket.handshake.auth.user) || socket.handshake.query.user;
    if (typeof user !== "string" || user === "") {
      socket.disconnect(true);
      return;
    }
    socket.join(user);
  });

  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", resolve);
  });
  console.error(`socketio-relay: :${port}, redis ${redisUrl}`);

  const stop = () => {
    io.close();
    Promise.allSettled([pubClient.quit(), subClient.quit()]).finally(() => process.exit(0));
    setTimeout(() => process.exit(0), 1000).unref();
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((err) => {
  console.error(`socketio-relay: ${err.stack || err}`);
  process.exit(1);
});
