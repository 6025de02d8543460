// Real calls in headless Chromium (fake cameras) through camsig's TypeScript
// client as the node builds it in (`/client/index.js`), on three nodes of
// scripts/cluster sharing one Redis:
// - 1:1: Ann turns her camera on (node 0) and answers each `show_cam` with
//   `CamsigCall.accept`; Bob (node 1) watches with `CamsigCall.show`. Bob's
//   video decodes frames; Bob hangs up and Ann's call ends with `hangup`.
// - a meeting of three, each on their own node, through `CamsigMeeting`:
//   every member decodes both others' video; Cat leaves, and Ann's and Bob's
//   calls with her end while theirs plays on.
// Pages are on the node's own origin (its /healthz), so the import and the
// calls are same-origin, as for the demo page.
//
// Usage: node tests/e2e/client_browser.mjs   (scripts/e2e installs playwright-core and builds camsig)

import { randomBytes } from "node:crypto";
import { mkdirSync, rmSync } from "node:fs";
import path from "node:path";
import assert from "node:assert/strict";
import { LAUNCH, T, WORK, chromium, freePorts, logger, minter, newPage, ready, run, startCluster, stopCluster, until } from "./lib.mjs";

const LOGS = path.join(WORK, "logs/client_browser");
const say = logger("client_browser");
let cluster = null;
let browser = null;
let stopping = null;
const pages = new Map();

function cleanup() {
  stopping ??= (async () => {
    if (browser) await browser.close().catch(() => {});
    await stopCluster(cluster);
  })();
  return stopping;
}

// A page on `base` with the client loaded and signed in as `user` (window.c),
// its camera open (window.stream).
async function person(base, user, token) {
  const page = await newPage(browser, say, user, `${base}/healthz`, { width: 800, height: 600 });
  pages.set(user, page);
  // Console errors but the browser's own favicon request (a page on /healthz has no icon).
  page.errors = [];
  page.on("console", (m) => { if (m.type() === "error" && !m.location().url.endsWith("/favicon.ico")) page.errors.push(`${m.location().url}: ${m.text()}`); });
  await page.evaluate(async (token) => {
    window.camsig = await import("/client/index.js");
    window.c = new camsig.CamsigClient({ baseUrl: location.origin, token });
    await c.connect();
    window.stream = await navigator.mediaDevices.getUserMedia({ video: { width: 320, height: 240 }, audio: false });
    document.body.replaceChildren();
    // A <video> per remote user, playing what their call receives.
    window.show = (who, s) => {
      let v = document.getElementById(`v-${who}`);
      if (!v) {
        v = Object.assign(document.createElement("video"), { id: `v-${who}`, muted: true, autoplay: true, playsInline: true });
        document.body.append(v);
      }
      v.srcObject = s;
      v.play().catch(() => {});
    };
  }, token);
  return page;
}

// `who`'s video on `me`'s page plays real frames: its clock moves and frames are decoded.
async function assertPlaying(page, me, who) {
  await until(`${who}'s video on ${me}'s page`, () => page.evaluate((who) => {
    const v = document.getElementById(`v-${who}`);
    return v && v.videoWidth > 0 && v.currentTime > 0;
  }, who));
  const frames = () => page.evaluate((who) => {
    const v = document.getElementById(`v-${who}`);
    return { t: v.currentTime, frames: v.getVideoPlaybackQuality().totalVideoFrames, w: v.videoWidth, h: v.videoHeight };
  }, who);
  const a = await frames();
  await page.waitForTimeout(1200);
  const b = await frames();
  assert.ok(b.t > a.t + 0.4 && b.frames > a.frames, `${me} sees ${who}: t ${a.t} -> ${b.t}, frames ${a.frames} -> ${b.frames}`);
  say(`${me} sees ${who}: ${a.w}x${a.h}, frames ${a.frames} -> ${b.frames}`);
}

async function oneToOne(nodes, token) {
  const ann = await person(nodes[0], "ann", token("ann"));
  const bob = await person(nodes[1], "bob", token("bob"));
  await ann.evaluate(async () => {
    window.calls = [];
    c.on("show_cam", async (ev) => calls.push(await camsig.CamsigCall.accept(c, ev.data, { stream })));
    await c.cameraOn({ label: "ann's camera" });
  });
  await until("bob's directory to show ann's camera on", () => bob.evaluate(() => c.users.get("ann")?.camera === "on"));
  await bob.evaluate(async () => {
    window.call = await camsig.CamsigCall.show(c, "ann", { onStream: (s) => show("ann", s) });
  });
  await assertPlaying(bob, "bob", "ann");
  const over = await bob.evaluate(() => ({ commands: c.transport, room: call.roomId, state: call.pc.connectionState }));
  assert.equal(over.commands, "websocket");
  assert.equal(over.state, "connected");
  await bob.evaluate(() => call.hangup());
  const ended = await ann.evaluate(() => Promise.race([calls[0].ended, new Promise((r) => setTimeout(() => r("not ended"), 15000))]));
  assert.equal(ended, "hangup", "ann's call ends when bob hangs up");
  assert.equal(await ann.evaluate(() => calls[0].pc.connectionState), "closed");
  say("1:1: bob saw ann's camera, and his hangup ended ann's call");
  await ann.evaluate(() => c.cameraOff());
}

async function meetingOfThree(nodes, token) {
  const ann = await person(nodes[0], "ann2", token("ann2"));
  const id = await ann.evaluate(async () => (await c.createMeeting("Standup")).meeting.meeting_id);
  const members = { ann2: ann, bob2: await person(nodes[1], "bob2", token("bob2")), cat2: await person(nodes[2], "cat2", token("cat2")) };
  for (const [user, page] of Object.entries(members)) {
    await page.evaluate(async ([id, name]) => {
      window.left = [];
      window.meeting = new camsig.CamsigMeeting(c, id, {
        stream,
        onCall: (who, call) => { call.onStream = (s) => show(who, s); },
        onLeft: (who, reason) => left.push([who, reason]),
      });
      await meeting.join(name);
    }, [id, user.slice(0, 3)]);
    say(`${user} joined`);
  }
  for (const [me, page] of Object.entries(members)) {
    for (const who of Object.keys(members)) if (who !== me) await assertPlaying(page, me, who);
    const roles = await page.evaluate(() => [...meeting.calls].map(([who, call]) => `${who}:${call.role}`).sort());
    say(`${me}'s calls: ${roles.join(" ")}`);
  }
  // The server's roles: whoever was there first owns the pair (and offers).
  assert.deepEqual(await ann.evaluate(() => [...meeting.calls].map(([w, c]) => `${w}:${c.role}`).sort()), ["bob2:owner", "cat2:owner"]);
  assert.deepEqual(await members.cat2.evaluate(() => [...meeting.calls].map(([w, c]) => `${w}:${c.role}`).sort()), ["ann2:abonent", "bob2:abonent"]);
  await members.cat2.evaluate(() => meeting.leave());
  for (const me of ["ann2", "bob2"]) {
    const page = members[me];
    await until(`${me} to hear cat2 left`, () => page.evaluate(() => left.some(([w, r]) => w === "cat2" && r === "left") && !meeting.calls.has("cat2")));
  }
  await assertPlaying(ann, "ann2", "bob2");
  await assertPlaying(members.bob2, "bob2", "ann2");
  say("meeting: three members saw each other; cat left and the two others went on");
}

async function main() {
  mkdirSync(WORK, { recursive: true });
  rmSync(LOGS, { recursive: true, force: true });
  mkdirSync(LOGS, { recursive: true });
  const [lb, redis, node] = await freePorts(5);
  const env = {
    ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("CAMSIG"))),
    CAMSIG__AUTH__JWT_SECRET: randomBytes(32).toString("hex"),
    RUST_LOG: "warn",
  };
  cluster = startCluster(env, { lb, redis, node, logs: LOGS }, (code) => {
    if (!stopping) { say(`scripts/cluster exited early (${code})`); process.exit(1); }
  });
  const nodes = [0, 1, 2].map((i) => `http://127.0.0.1:${node + i}`);
  for (let i = 0; i < 3; i++) await ready(node + i);
  browser = await chromium.launch(LAUNCH);
  const token = minter({ ...env, CAMSIG__REDIS__URL: `redis://127.0.0.1:${redis}` });
  await oneToOne(nodes, token);
  await meetingOfThree(nodes, token);
  for (const [user, page] of pages) {
    assert.deepEqual(page.errors, [], `${user}'s page logged no errors`);
    assert.deepEqual(page.problems.filter((p) => !p.startsWith("console error")), [], `${user}'s page saw no failed request or uncaught error`);
  }
}

run(say, main, cleanup, {
  logs: LOGS,
  onFail: async () => {
    for (const [user, page] of pages) say(`${user}: problems ${JSON.stringify(page.problems)}, errors ${JSON.stringify(page.errors)}`);
  },
});
