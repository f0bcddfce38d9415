// The Socket.IO peer: what a team would write instead of Parley, on the stack users would pick
// (Node + Socket.IO). It does the same pairing as the bare relay, with the same frames, but over
// Socket.IO events: a frame {type: "message", ...} travels as the event "message" with the frame
// as its argument (`42["message",{...}]` on the wire). Visitors and agents say who they are in the
// Socket.IO handshake auth ({role, token}). No limits, no persistence, no resume.
//
// Usage: node server.js [--listen HOST:PORT]   (default 127.0.0.1:9300)
// With REDIS_URL set, the @socket.io/redis-adapter is attached; it relays emits between nodes,
// but the pairing below stays per node, so a split placement (agents and visitors on different
// nodes) pairs nobody: scenario 5 does not run this peer (docs/benchmarks.md, section 5).
"use strict";

const http = require("http");
const { Server } = require("socket.io");

const args = process.argv.slice(2);
const listenArg = args[args.indexOf("--listen") + 1];
const [host, port] = (args.includes("--listen") ? listenArg : "127.0.0.1:9300").split(":");

const httpServer = http.createServer();
const io = new Server(httpServer, {
  // WebSocket only, no per-message compression, 16 KiB frames: the same wire as Parley's.
  transports: ["websocket"],
  perMessageDeflate: false,
  maxHttpBufferSize: 16 * 1024,
  serveClient: false,
  pingInterval: 20000,
  pingTimeout: 20000,
});

if (process.env.REDIS_URL) {
  const { createClient } = require("redis");
  const { createAdapter } = require("@socket.io/redis-adapter");
  const pub = createClient({ url: process.env.REDIS_URL });
  const sub = pub.duplicate();
  Promise.all([pub.connect(), sub.connect()]).then(() => io.adapter(createAdapter(pub, sub)));
}

let nextConv = 0;
let nextVisitor = 0;
let turn = 0;
const agents = []; // {socket, id}
const conversations = new Map(); // id -> {seq, visitorId, visitor, agent, agentId, category, first}
const waiting = [];

function assign(id) {
  const c = conversations.get(id);
  if (!c) return;
  if (agents.length === 0) {
    waiting.push(id);
    return;
  }
  turn = (turn + 1) % agents.length;
  const agent = agents[turn];
  c.agent = agent.socket;
  c.agentId = agent.id;
  const conversation = {
    id, category: c.category, state: "assigned",
    visitor: { id: c.visitorId }, agent: { id: agent.id },
    created_at: Date.now(), last_seq: 1, recovered: true,
  };
  c.visitor.emit("assigned", { type: "assigned", conversation });
  agent.socket.emit("assigned", { type: "assigned", conversation });
  agent.socket.emit("message", {
    type: "message", conversation_id: id, seq: 1,
    sender: { role: "visitor", id: c.visitorId }, text: c.first.text, ts: Date.now(), cid: c.first.cid,
  });
}

function relay(socket, id, role, senderId, frame) {
  const c = conversations.get(id);
  if (!c) {
    socket.emit("error", { type: "error", code: "not_found", message: "no such conversation" });
    return;
  }
  c.seq += 1;
  socket.emit("ack", { type: "ack", conversation_id: id, cid: frame.cid, seq: c.seq, duplicate: false });
  const other = role === "visitor" ? c.agent : c.visitor;
  if (other) {
    other.emit("message", {
      type: "message", conversation_id: id, seq: c.seq,
      sender: { role, id: senderId }, text: frame.text, ts: Date.now(), cid: frame.cid,
    });
  }
}

function close(id, by, reason) {
  const c = conversations.get(id);
  if (!c) return;
  conversations.delete(id);
  const frame = { type: "closed", conversation_id: id, by, reason };
  c.visitor.emit("closed", frame);
  if (c.agent) c.agent.emit("closed", frame);
}

io.on("connection", (socket) => {
  const auth = socket.handshake.auth || {};
  if (auth.role === "agent") {
    const token = String(auth.token || "");
    const id = token.startsWith("token-") ? token.slice(6) : token;
    socket.on("hello", () => {
      socket.emit("welcome", {
        type: "welcome", protocol: 1, role: "agent",
        agent: { id, name: id, capacity: 1000, status: "online" }, conversations: [],
      });
      agents.push({ socket, id });
      while (waiting.length > 0) assign(waiting.shift());
    });
    socket.on("message", (f) => relay(socket, f.conversation_id, "agent", id, f));
    socket.on("close", (f) => close(f.conversation_id, "agent", "agent_closed"));
    socket.on("disconnect", () => {
      const i = agents.findIndex((a) => a.socket === socket);
      if (i >= 0) agents.splice(i, 1);
    });
    return;
  }
  nextVisitor += 1;
  const visitorId = `sio-${nextVisitor}`;
  let conv = null;
  socket.on("hello", () => {
    socket.emit("welcome", {
      type: "welcome", protocol: 1, role: "visitor",
      visitor: { id: visitorId, token: "sio", verified: false }, conversations: [],
    });
  });
  socket.on("start", (f) => {
    if (conv && conversations.has(conv)) return;
    nextConv += 1;
    const id = `sio-conv-${nextConv}`;
    conv = id;
    if (f.cid) socket.emit("ack", { type: "ack", conversation_id: id, cid: f.cid, seq: 1, duplicate: false });
    conversations.set(id, {
      seq: 1, visitorId, visitor: socket, agent: null, agentId: null,
      category: f.category, first: { text: f.text, cid: f.cid },
    });
    if (agents.length === 0) {
      waiting.push(id);
      socket.emit("queued", {
        type: "queued", conversation_id: id, position: waiting.length,
        estimated_wait_ms: 60000, reason: "no_agent_available",
      });
    } else {
      assign(id);
    }
  });
  socket.on("message", (f) => relay(socket, conv, "visitor", visitorId, f));
  socket.on("close", () => {
    if (conv) close(conv, "visitor", "visitor_closed");
    conv = null;
  });
  socket.on("disconnect", () => {
    if (conv) conversations.delete(conv);
  });
});

httpServer.listen(Number(port), host, () => {
  console.error(`socket.io peer on ws://${host}:${port}/socket.io/ (node ${process.version})`);
});

function shutdown() {
  io.close();
  process.exit(0);
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
