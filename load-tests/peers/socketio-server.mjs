// The Socket.IO fan-out server a user would write, for `realtime-load compare` and
// `fanout --protocol socketio`. Our harness, not Socket.IO's code: `npm ci` here installs the
// pinned `socket.io`.
//
// - WebSocket transport only (no long-polling upgrade dance), default ping interval/timeout.
// - `subscribe` (room, ack): joins the room, then acks.
// - `publish` ({room, event, data}, ack): emits `event` to the room as (room, data), then acks.
// - `POST /publish {room, event, data}`: the same from a backend; 204.
// - `GET /healthz`: 200 once listening.
//
// Listens on HOST:PORT (default 127.0.0.1:3000).

import { createServer } from "node:http";
import { Server } from "socket.io";

const host = process.env.HOST ?? "127.0.0.1";
const port = Number(process.env.PORT ?? 3000);

function emit(io, message) {
  if (!message || typeof message.room !== "string") return false;
  io.to(message.room).emit(message.event ?? "message", message.room, message.data);
  return true;
}

const http = createServer((req, res) => {
  if (req.method === "GET" && req.url === "/healthz") {
    res.writeHead(200).end("ok");
    return;
  }
  if (req.method === "POST" && req.url === "/publish") {
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (chunk) => (body += chunk));
    req.on("end", () => {
      let message;
      try {
        message = JSON.parse(body);
      } catch {
        res.writeHead(400).end("bad JSON");
        return;
      }
      res.writeHead(emit(io, message) ? 204 : 400).end();
    });
    return;
  }
  res.writeHead(404).end();
});

const io = new Server(http, { transports: ["websocket"], serveClient: false });

io.on("connection", (socket) => {
  socket.on("subscribe", (room, ack) => {
    if (typeof room === "string") socket.join(room);
    if (typeof ack === "function") ack();
  });
  socket.on("publish", (message, ack) => {
    const ok = emit(io, message);
    if (typeof ack === "function") (ok ? ack() : ack("bad publish"));
  });
});

http.listen(port, host, () => {
  console.log(`socket.io fan-out on http://${host}:${port}`);
});

for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => {
    io.close();
    process.exit(0);
  });
}
