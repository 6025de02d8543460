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
  constructor(extra = {}) {
    this.extra = extra;
  }
  async start() {
    const extra = this.extra;
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
  token(user, ttl = 900) {
    return execFileSync(BIN, ["token", user, "--ttl", String(ttl)], { env: this.env }).toString().trim();
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
    // Refuse WebSocket upgrades only, as a proxy that cannot carry them would.
    this.noUpgrade = false;
  }
  async start() {
    this.port = await freePort();
    this.server = net.createServer((c) => {
      if (this.hold) return c.destroy();
      c.once("data", (first) => {
        if (this.noUpgrade && /\r\nupgrade:\s*websocket/i.test(first.toString("latin1"))) return c.destroy();
        c.pause();
        c.unshift(first);
        tryAt(0);
      });
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
          c.resume();
        });
      };
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


// A 6 s token, warned 5 s ahead: the client gets a new one from getToken and
// sends `refresh` on its socket, which outlives the first token.
async function aTokenThatExpiresIsRefreshedWithoutAReconnect(nodes) {
  let minted = 0;
  const c = new CamsigClient({ WebSocket, baseUrl: nodes.url(1), getToken: () => nodes.token("ts-refresh", ++minted === 1 ? 6 : 900) });
  const other = new CamsigClient({ WebSocket, baseUrl: nodes.url(1), token: nodes.token("ts-other") });
  await c.connect();
  await other.connect();
  const first = Date.now();
  await until("a refresh", () => c.refreshes >= 1, 15000);
  await until("the first token to expire", () => Date.now() > first + 7000, 15000);
  const on = c.next("update_user", 10000, (d) => d.user.user_id === "ts-other" && d.user.camera === "on");
  await other.cameraOn();
  await on;
  if (c.connects !== 1) throw new Error(`reconnected ${c.connects - 1} times`);
  c.close();
  other.close();
}

// events.keep_max 4: the viewer kept away while 20 candidates pass comes back
// to a log that no longer covers it, gets `resync`, and the client reloads
// the directory before handing the resync on.
async function aSinceTooOldTakesTheResyncPath(nodes) {
  const lb = new Balancer(nodes.ports);
  await lb.start();
  const owner = new CamsigClient({ WebSocket, baseUrl: nodes.url(1), token: nodes.token("rs-owner") });
  const viewer = new CamsigClient({ WebSocket, baseUrl: lb.url, token: nodes.token("rs-viewer") });
  await owner.connect();
  await viewer.connect();
  await owner.cameraOn();
  const room = (await viewer.cameraShow("rs-owner")).connection.room_id;
  const offered = viewer.next("put_offer");
  await owner.offer(room, OFFER);
  await offered;
  const resync = viewer.next("resync", 60000);
  lb.hold = true;
  nodes.procs[0].kill("SIGKILL");
  for (let i = 0; i < 20; i++) await owner.ice(room, cand(i));
  await owner.cameraOff();
  lb.hold = false;
  await resync;
  if (viewer.users.get("rs-owner")?.camera !== "off") throw new Error("resync came before the directory was reloaded");
  owner.close();
  viewer.close();
  lb.server.close();
}

// Calls go over the socket as commands with acks while it is open, and over
// REST while it is not; a command's error is the same ApiError as REST's.
async function callsGoOverTheSocketAndFallBackToRest(nodes) {
  const wire = [];
  const c = new CamsigClient({ WebSocket, baseUrl: nodes.url(1), token: nodes.token("ts-cmd"), onWire: (w) => void wire.push(w) });
  await c.connect();
  const on = await c.cameraOn({ label: "cmd" });
  if (on.user.camera !== "on") throw new Error(`cameraOn answered ${JSON.stringify(on)}`);
  const sent = wire.filter((w) => w.dir === "out" && w.name === "cameraOn");
  if (sent.length !== 1 || sent[0].kind !== "ws" || typeof sent[0].body.idempotency_key !== "string") throw new Error(`cameraOn went ${JSON.stringify(sent)}`);
  try {
    await c.cameraShow("ts-cmd");
    throw new Error("showing oneself was accepted");
  } catch (e) {
    if (!(e instanceof ApiError) || e.code !== "cannot_show_self" || e.status !== 400) throw e;
  }
  const m = await c.createMeeting("Standup");
  const joined = await c.joinMeeting(m.meeting.meeting_id, "Ann");
  if (joined.meeting.members.length !== 1) throw new Error("the join did not answer the meeting");
  // A client on the long poll (as after failed sockets) calls over REST and still hears events.
  const polling = new CamsigClient({ WebSocket, baseUrl: nodes.url(0), token: nodes.token("ts-cmd"), pollAfterFailures: 0, onWire: (w) => void wire.push(w) });
  await polling.connect();
  if (polling.transport !== "poll") throw new Error(`transport ${polling.transport}`);
  const heard = c.next("update_user", 10000, (d) => d.user.user_id === "ts-cmd" && d.user.camera === "off");
  const off = await polling.cameraOff();
  if (off.user.camera !== "off") throw new Error("cameraOff over REST failed");
  await heard;
  const rest = wire.filter((w) => w.dir === "out" && w.name === "cameraOff");
  if (rest.length !== 1 || rest[0].kind !== "rest") throw new Error(`cameraOff went ${JSON.stringify(rest)}`);
  const shown = polling.next("show_cam", 40000);
  const viewer = new CamsigClient({ WebSocket, baseUrl: nodes.url(1), token: nodes.token("ts-cmd-viewer") });
  await viewer.connect();
  await c.cameraOn();
  await viewer.cameraShow("ts-cmd");
  await shown;
  c.close();
  polling.close();
  viewer.close();
}

// Sockets refused (a proxy without WebSocket support): after pollAfterFailures
// the client takes the long poll, hears events there, and goes back to a
// socket once one can be held again.
async function theLongPollStandsInWhileNoSocketCanBeHeld(nodes) {
  const lb = new Balancer(nodes.ports);
  await lb.start();
  lb.noUpgrade = true;
  const owner = new CamsigClient({ WebSocket, baseUrl: nodes.url(1), token: nodes.token("lp-owner") });
  const viewer = new CamsigClient({ WebSocket, baseUrl: lb.url, token: nodes.token("lp-viewer"), pollAfterFailures: 2 });
  await owner.connect();
  await viewer.connect();
  if (viewer.transport !== "poll") throw new Error(`transport ${viewer.transport}`);
  await owner.cameraOn();
  const room = (await viewer.cameraShow("lp-owner")).connection.room_id;
  const got = [];
  viewer.on("put_ice", (ev) => got.push(ev.data.candidate));
  for (let i = 0; i < 5; i++) await owner.ice(room, cand(i));
  await until("candidates over the long poll", () => got.length >= 5);
  lb.noUpgrade = false;
  await until("the socket again", () => viewer.transport === "websocket", 60000);
  for (let i = 5; i < 10; i++) await owner.ice(room, cand(i));
  await until("candidates over the socket", () => got.length >= 10);
  if (JSON.stringify(got) !== JSON.stringify(Array.from({ length: 10 }, (_, i) => cand(i)))) throw new Error(`lost, doubled or reordered: ${JSON.stringify(got)}`);
  owner.close();
  viewer.close();
  lb.server.close();
}

/** An operator disconnects the user: the client hands on `kicked` and stops (status closed, why kicked). */
async function aKickedClientStops(nodes) {
  const client = new CamsigClient({ WebSocket, baseUrl: nodes.url(0), token: nodes.token("tk-user") });
  const statuses = [];
  client.onStatus((s, why) => statuses.push(`${s}:${why ?? ""}`));
  await client.connect();
  const kicked = client.next("kicked");
  const admin = execFileSync(BIN, ["token", "ops", "--admin"], { env: nodes.env }).toString().trim();
  const r = await fetch(`${nodes.url(1)}/admin/users/tk-user/disconnect`, { method: "POST", headers: { Authorization: `Bearer ${admin}`, "content-type": "application/json" }, body: JSON.stringify({ reason: "test", ban_s: 60 }) });
  if (r.status !== 200) throw new Error(`disconnect answered ${r.status}`);
  const ev = await kicked;
  if (ev.data.reason !== "test") throw new Error(`kicked: ${JSON.stringify(ev)}`);
  await until("the client to stop", () => client.status === "closed");
  if (!statuses.includes("closed:kicked")) throw new Error(`statuses: ${statuses}`);
  const connects = client.connects;
  await new Promise((r) => setTimeout(r, 1000));
  if (client.connects !== connects) throw new Error("reconnected after a kick");
}

const TESTS = [
  ["the_long_poll_stands_in_while_no_socket_can_be_held", theLongPollStandsInWhileNoSocketCanBeHeld],
  ["calls_go_over_the_socket_and_fall_back_to_rest", callsGoOverTheSocketAndFallBackToRest],
  ["a_node_killed_mid_stream_loses_nothing", aNodeKilledMidStreamLosesNothing],
  ["a_token_that_expires_is_refreshed_without_a_reconnect", aTokenThatExpiresIsRefreshedWithoutAReconnect, { CAMSIG__AUTH__REFRESH_BEFORE_S: "5" }],
  ["a_since_too_old_takes_the_resync_path", aSinceTooOldTakesTheResyncPath, { CAMSIG__EVENTS__KEEP_MAX: "4" }],
  ["a_drain_moves_the_client_with_no_flicker", aDrainMovesTheClientWithNoFlicker],
  ["a_kicked_client_stops", aKickedClientStops],
];
const only = process.argv.slice(2);
for (const [name, test, env] of TESTS) {
  if (only.length && !only.includes(name)) continue;
  const nodes = new Nodes(env);
  try {
    await nodes.start();
    await test(nodes);
    console.log(`ok  ${name}`);
  } finally {
    nodes.stop();
  }
}
process.exit(0);
