// The TypeScript client (its compiled dist/) against real camsig nodes: two
// node processes on one redis-server behind a small TCP balancer that skips
// a node that is gone, as a load balancer's health check would.
// Run: npm ci && npm run build && npm test  (CAMSIG_BIN names the binary).
// Node 18 has no WebSocket: the test passes `ws`'s, as a Node app would.
import { spawn, execFileSync } from "node:child_process";
import net from "node:net";
import crypto from "node:crypto";
import path from "node:path";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";
import { CamsigClient, ApiError } from "../dist/index.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const BIN = process.env.CAMSIG_BIN ?? path.join(ROOT, "target/debug/camsig");
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function until(what, cond, ms = 30000) {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

class Nodes {
  async start(extra = {}) {
    this.redisPort = await freePort();
    this.redis = spawn("redis-server", ["--port", String(this.redisPort), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], { stdio: "ignore" });
    this.env = { ...process.env, CAMSIG__AUTH__JWT_SECRET: crypto.randomBytes(32).toString("hex"), CAMSIG__REDIS__URL: `redis://127.0.0.1:${this.redisPort}/`,
      CAMSIG__PRESENCE__GRACE_S: "30", RUST_LOG: "warn", ...extra };
    this.ports = [await freePort(), await freePort()];
    this.procs = this.ports.map((p, i) => spawn(BIN, [], { env: { ...this.env, CAMSIG__SERVER__BIND: `127.0.0.1:${p}`, CAMSIG__NODE__ID: `ts-${i}` }, stdio: "ignore" }));
    for (const p of this.ports) {
      await until(`node ${p} ready`, async () => {
        try { return (await fetch(`http://127.0.0.1:${p}/readyz`)).status === 200; } catch { return false; }
      });
    }
  }
  token(user) {
    return execFileSync(BIN, ["token", user, "--ttl", "900"], { env: this.env }).toString().trim();
  }
  url(i) { return `http://127.0.0.1:${this.ports[i]}`; }
  stop() {
    for (const p of [...this.procs, this.redis]) p.kill("SIGKILL");
  }
}

class Balancer {
  constructor(ports) {
    this.ports = ports;
    this.hold = false;
    this.down = new Set();
  }
  async start() {
    this.port = await freePort();
    this.server = net.createServer((c) => {
      if (this.hold) return c.destroy();
      const tryAt = (i) => {
        if (i >= this.ports.length) return c.destroy();
        if (this.down.has(this.ports[i])) return tryAt(i + 1);
        const b = net.connect(this.ports[i], "127.0.0.1");
        b.once("error", () => { if (!b.connected) tryAt(i + 1); else c.destroy(); });
        b.once("connect", () => {
          b.connected = true;
          c.pipe(b).pipe(c);
          c.on("error", () => b.destroy());
          b.on("error", () => c.destroy());
          c.on("close", () => b.destroy());
          b.on("close", () => c.destroy());
        });
      };
      tryAt(0);
    });
    await new Promise((r) => this.server.listen(this.port, "127.0.0.1", r));
  }
  get url() { return `http://127.0.0.1:${this.port}`; }
}

const cand = (i) => ({ candidate: `candidate:${i} 1 udp 2122260223 127.0.0.1 ${10000 + i} typ host`, sdpMid: "0", sdpMLineIndex: 0 });
const OFFER = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\na=rtpmap:96 VP8/90000\r\n";

async function aNodeKilledMidStreamLosesNothing(nodes) {
  const lb = new Balancer(nodes.ports);
  await lb.start();
  const owner = new CamsigClient({ WebSocket, baseUrl: nodes.url(1), token: nodes.token("ts-owner") });
  const viewer = new CamsigClient({ WebSocket, baseUrl: lb.url, token: nodes.token("ts-viewer") });
  await owner.connect();
  await viewer.connect();
  await owner.cameraOn({ label: "ts" });
  const shown = owner.next("show_cam");
  const room = (await viewer.cameraShow("ts-owner")).connection.room_id;
  await shown;
  const offered = viewer.next("put_offer");
  await owner.offer(room, OFFER);
  if ((await offered).data.offer.sdp !== OFFER) throw new Error("the offer changed on the way");
  const got = [];
  viewer.on("put_ice", (ev) => got.push(ev.data.candidate));
  for (let i = 0; i < 200; i++) {
    if (i === 60) {
      lb.hold = true;
      nodes.procs[0].kill("SIGKILL"); // the viewer's: the balancer's first choice
    }
    if (i === 150) lb.hold = false;
    await owner.ice(room, cand(i));
  }
  await until("every candidate", () => got.length >= 200, 60000).catch((e) => { throw new Error(`${e.message}: ${got.length} got, ${viewer.connects} connects, ${viewer.transport}`); });
  const want = JSON.stringify(Array.from({ length: 200 }, (_, i) => cand(i)));
  if (JSON.stringify(got) !== want) throw new Error(`candidates lost, doubled or out of order: ${got.length}`);
  if (viewer.connects < 2 && viewer.transport !== "poll") throw new Error("the viewer never reconnected");
  if (viewer.users.get("ts-owner")?.camera !== "on") throw new Error("the directory is wrong");
  try {
    await viewer.hangup("not-a-room");
    throw new Error("an unknown room was accepted");
  } catch (e) {
    if (!(e instanceof ApiError) || e.code !== "room_not_found") throw e;
  }
  owner.close();
  viewer.close();
  lb.server.close();
}

async function aDrainMovesTheClientWithNoFlicker(nodes) {
  const lb = new Balancer(nodes.ports);
  await lb.start();
  const owner = new CamsigClient({ WebSocket, baseUrl: nodes.url(1), token: nodes.token("td-owner") });
  const viewer = new CamsigClient({ WebSocket, baseUrl: lb.url, token: nodes.token("td-viewer") });
  await owner.connect();
  await viewer.connect();
  const flicker = [];
  owner.on("update_user", (ev) => { if (ev.data.user.user_id === "td-viewer" && !ev.data.user.online) flicker.push(ev.data.user); });
  await owner.cameraOn();
  const room = (await viewer.cameraShow("td-owner")).connection.room_id;
  lb.down.add(nodes.ports[0]);
  nodes.procs[0].kill("SIGTERM");
  await until("the viewer on the other node", () => viewer.connects >= 2);
  const ice = viewer.next("put_ice");
  await owner.ice(room, cand(1));
  if (JSON.stringify((await ice).data.candidate) !== JSON.stringify(cand(1))) throw new Error("wrong candidate");
  await new Promise((r) => nodes.procs[0].exitCode !== null ? r() : nodes.procs[0].once("exit", r));
  const off = owner.next("update_user", 30000, (d) => d.user.user_id === "td-owner" && d.user.camera === "off");
  await owner.cameraOff();
  await off;
  if (flicker.length) throw new Error(`the viewer flickered: ${JSON.stringify(flicker)}`);
  owner.close();
  viewer.close();
  lb.server.close();
}

for (const [name, test] of [["a_node_killed_mid_stream_loses_nothing", aNodeKilledMidStreamLosesNothing], ["a_drain_moves_the_client_with_no_flicker", aDrainMovesTheClientWithNoFlicker]]) {
  const nodes = new Nodes();
  try {
    await nodes.start();
    await test(nodes);
    console.log(`ok  ${name}`);
  } finally {
    nodes.stop();
  }
}
process.exit(0);
