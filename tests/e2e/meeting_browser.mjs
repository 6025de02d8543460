// Proves the demo page's meeting view makes a real group call through a camsig
// cluster: headless Chromium pages with fake cameras, each a different person,
// signed in with pasted tokens through nginx. Ann creates a meeting and shares
// its link; Ann, Bob and Cat join through the load balancer and every page shows
// three tiles (itself and two peers) whose remote videos play real frames.
// Then Cat leaves (her tile and pairs close on the other two pages), Dan joins on
// a fourth node while Bob's socket is down (Bob's page comes back with ?since=,
// hears the missed member_joined and offers), and Dan's node is killed: after
// the presence lease and grace period the others hear member_left (gone) and
// close Dan's tile. Last, Bob's page stays offline past the grace period: Ann
// closes his tile, and Bob's page, back online, says he is out of the meeting.
//
// scripts/cluster stops the whole cluster when any of its processes exits, so
// the node that is killed is a fourth node this test starts itself on the same
// Redis and secret (outside nginx; Dan's page is opened on it directly).
//
// Usage: node tests/e2e/meeting_browser.mjs   (scripts/e2e installs playwright-core and builds camsig)
// Env: CAMSIG_BIN (target/debug/camsig), CHROMIUM (/usr/bin/chromium),
//      E2E_WORK (target/e2e: node_modules under node/, screenshots here).

import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, openSync, rmSync } from "node:fs";
import path from "node:path";
import assert from "node:assert/strict";
import {
  CAMSIG_BIN, LAUNCH, T, WORK, chromium, freePorts, live, logger, minter, newPage as openPage, ready, run, startCluster, stopCluster, until,
} from "./lib.mjs";

const LOGS = path.join(WORK, "logs/meeting_browser");
// Short presence settings, so a dead node's member is gone within seconds: its
// lease runs out after TTL_S, then the grace period GRACE_S. The grace must stay
// longer than the few seconds Bob's page is offline while Dan joins (so Bob comes
// back with ?since= still a member), and well under T.
const TTL_S = 3;
const GRACE_S = 6;
const say = logger("meeting_browser");

const open = new Map(); // user -> page, for the report on failure
let cluster = null;
let extraNode = null;
let browser = null;
let stopping = null;
// Once, whether from the end of main() or from a signal.
function cleanup() {
  stopping ??= (async () => {
    if (browser) await browser.close().catch(() => {});
    if (extraNode && extraNode.exitCode === null && extraNode.signalCode === null) extraNode.kill("SIGKILL");
    await stopCluster(cluster);
  })();
  return stopping;
}

// A person's page, remembered for the report on failure until its context closes.
async function newPage(user, url) {
  const page = await openPage(browser, say, user, url, { width: 1100, height: 800 });
  open.set(user, page);
  page.context().on("close", () => open.delete(user));
  return page;
}
const tiles = (page) => page.locator('[data-testid="meeting-tiles"] > .tile');

async function join(page, name) {
  await page.locator('[data-testid="meeting-room"][data-state="open"]').waitFor({ timeout: T });
  await page.getByTestId("meeting-name").fill(name);
  await page.getByTestId("meeting-join-btn").click();
  await page.locator('[data-testid="meeting-room"][data-state="joined"]').waitFor({ timeout: T });
}
// The page shows exactly these members' tiles, mine first.
async function assertTiles(page, me, users) {
  const want = [me, ...users.filter((u) => u !== me).sort()];
  await until(`${me}'s tiles to be ${want.join(",")}`, async () => {
    const have = await tiles(page).evaluateAll((ts) => ts.map((t) => t.dataset.user));
    return have.length === want.length && have[0] === me && [...have.slice(1)].sort().join() === want.slice(1).join();
  });
  assert.equal(await page.locator('[data-testid="meeting-tiles"] video').count(), want.length, `${me}: one <video> per tile`);
  assert.equal(await page.getByTestId("meeting-count").textContent(), String(want.length));
  // Self view: my own camera plays.
  await until(`${me}'s self view`, () => page.getByTestId(`meeting-video-${me}`).evaluate((v) => v.videoWidth > 0 && v.currentTime > 0));
}
// A remote tile plays real frames: it has a size, its clock moves and frames are decoded;
// and its pill says the pair's RTCPeerConnection is connected.
async function assertPlaying(page, me, who) {
  await page.locator(`[data-testid="meeting-state-${who}"][data-state="connected"]`).waitFor({ timeout: T });
  const video = page.getByTestId(`meeting-video-${who}`);
  await until(`${who}'s video on ${me}'s page to have frames`, () => video.evaluate((v) => v.videoWidth > 0 && v.currentTime > 0));
  const a = await video.evaluate((v) => ({ t: v.currentTime, w: v.videoWidth, h: v.videoHeight, frames: v.getVideoPlaybackQuality().totalVideoFrames }));
  await page.waitForTimeout(1200);
  const b = await video.evaluate((v) => ({ t: v.currentTime, frames: v.getVideoPlaybackQuality().totalVideoFrames, paused: v.paused }));
  assert.ok(b.t > a.t + 0.4, `${me} sees ${who}: currentTime advances (${a.t} -> ${b.t})`);
  assert.ok(b.frames > a.frames, `${me} sees ${who}: frames are decoded (${a.frames} -> ${b.frames})`);
  assert.equal(b.paused, false);
  say(`${me} sees ${who}: ${a.w}x${a.h}, t ${a.t.toFixed(2)} -> ${b.t.toFixed(2)} s, frames ${a.frames} -> ${b.frames}`);
}
async function assertMesh(pages) {
  const users = Object.keys(pages);
  for (const me of users) await assertTiles(pages[me], me, users);
  for (const me of users) for (const who of users) if (who !== me) await assertPlaying(pages[me], me, who);
}
// Keeps a page's RTCPeerConnection with `who`, to look at after its tile is gone.
async function holdPc(page, who) {
  const ok = await page.evaluate((who) => {
    const call = [...camsig.calls.values()].find((c) => c.meeting && c.peer === who);
    if (!call?.pc) return false;
    (window.heldPcs ??= {})[who] = call.pc;
    return call.pc.connectionState;
  }, who);
  assert.ok(ok, `a pair with ${who} is open`);
}
// `who`'s tile is gone from the page, their pair's connection closed, and the page says why.
async function assertLeft(page, me, who, reason) {
  await page.getByTestId(`meeting-tile-${who}`).waitFor({ state: "detached", timeout: T });
  const pc = await page.evaluate((who) => ({
    state: window.heldPcs[who].connectionState,
    open: [...camsig.calls.values()].some((c) => c.meeting && c.peer === who),
  }), who);
  assert.equal(pc.state, "closed", `${me}'s connection with ${who} is closed`);
  assert.equal(pc.open, false, `${me} holds no pair with ${who}`);
  const notice = page.getByTestId("meeting-notice");
  await until(`${me}'s notice about ${who}`, async () => (await notice.getAttribute("data-user")) === who);
  assert.equal(await notice.getAttribute("data-reason"), reason, `${me} heard member_left with reason ${reason}`);
  say(`${me}: ${who}'s tile closed ("${await notice.textContent()}")`);
}

async function main() {
  mkdirSync(WORK, { recursive: true });
  rmSync(LOGS, { recursive: true, force: true });
  mkdirSync(LOGS, { recursive: true });
  browser = await chromium.launch(LAUNCH);

  const [lb, redis] = await freePorts(2);
  const nodes = await freePorts(3, [lb, redis]);
  const [fourth] = await freePorts(1, [lb, redis, ...nodes]);
  const secret = randomBytes(32).toString("hex");
  const env = {
    ...process.env,
    CAMSIG__AUTH__JWT_SECRET: secret,
    CAMSIG__PRESENCE__TTL_S: String(TTL_S),
    CAMSIG__PRESENCE__GRACE_S: String(GRACE_S),
  };
  cluster = startCluster(env, { lb, redis, node: nodes[0], logs: LOGS }, (code) => { if (!stopping) say(`scripts/cluster exited early (${code})`); });
  for (const port of [lb, ...nodes]) await ready(port);
  // A fourth node on the same Redis and secret, not behind nginx: the one this test kills.
  const log = openSync(path.join(LOGS, "node4.log"), "w");
  extraNode = spawn(CAMSIG_BIN, [], {
    env: { ...env, CAMSIG__REDIS__URL: `redis://127.0.0.1:${redis}/`, CAMSIG__SERVER__BIND: `127.0.0.1:${fourth}`, CAMSIG__NODE__ID: "node4" },
    stdio: ["ignore", log, log],
  });
  await ready(fourth);
  say(`cluster up: lb ${lb}, nodes ${nodes.join(",")} (node1-3), node4 on ${fourth} (pid ${extraNode.pid})`);

  const token = minter(env);
  async function signIn(user, url) {
    const page = await newPage(user, url);
    await page.getByTestId("token-form").waitFor({ state: "visible", timeout: T });
    await page.getByTestId("token").fill(token(user));
    await page.getByTestId("token-btn").click();
    const node = await live(page);
    say(`${user} signed in at ${url}, WebSocket on ${node}`);
    return { page, node };
  }
  const LB = `http://127.0.0.1:${lb}`;

  // Ann creates the meeting and gets a link to share.
  const ann = await signIn("ann", `${LB}/`);
  const A = ann.page;
  await A.getByTestId("meeting-title").fill("Standup");
  await A.getByTestId("meeting-create-btn").click();
  await A.locator('[data-testid="meeting-room"][data-state="open"]').waitFor({ timeout: T });
  const link = await A.getByTestId("meeting-link").inputValue();
  const id = new URL(link).searchParams.get("meeting");
  assert.ok(/^[0-9A-Z]{26}$/.test(id) && link.startsWith(`${LB}/`), `a shareable link: ${link}`);
  assert.equal(new URL(link).searchParams.get("title"), "Standup", "the link carries the title");
  assert.equal(new URL(A.url()).searchParams.get("meeting"), id, "the page's own URL is the link");
  assert.equal(await A.getByTestId("meeting-heading").textContent(), "Standup");
  say(`meeting created: ${link}`);
  await join(A, "Ann");
  await assertTiles(A, "ann", ["ann"]);

  // Bob and Cat open the link (through nginx), sign in, and join.
  const bob = await signIn("bob", link);
  const cat = await signIn("cat", link);
  const B = bob.page, C = cat.page;
  // The link names the meeting before joining (GET meetings/{id} is for members only).
  assert.equal(await B.getByTestId("meeting-heading").textContent(), "Standup");
  await join(B, "Bob");
  await join(C, "Cat");
  say(`sockets: ann on ${ann.node}, bob on ${bob.node}, cat on ${cat.node}`);

  // Every page: three tiles, and both peers' videos play.
  await assertMesh({ ann: A, bob: B, cat: C });
  const members = await A.evaluate(async (id) => (await camsig.client.getMeeting(id)).members.map((m) => m.name), id);
  assert.deepEqual(members, ["Ann", "Bob", "Cat"]);
  const shot = path.join(WORK, "meeting.png");
  await A.screenshot({ path: shot });
  say(`screenshot: ${shot}`);

  // A taken name is refused in words, and nothing is joined.
  // (Cat's page is in the meeting, so try it from a fresh page of another user.)
  const eve = await signIn("eve", link);
  await eve.page.getByTestId("meeting-name").fill("Bob");
  await eve.page.getByTestId("meeting-join-btn").click();
  const err = eve.page.getByTestId("error-text");
  await err.waitFor({ timeout: T });
  assert.equal(await err.textContent(), 'Someone in this meeting is already called "Bob". Pick another name.');
  await eve.page.locator('[data-testid="meeting-room"][data-state="open"]').waitFor({ timeout: T });
  assert.equal(await tiles(eve.page).count(), 0, "a refused join shows no tiles");
  await eve.page.context().close();
  say("a taken name is refused");

  // Cat leaves: on Ann's and Bob's pages her tile goes and the pair closes.
  await holdPc(A, "cat");
  await holdPc(B, "cat");
  await C.getByTestId("meeting-leave-btn").click();
  await C.locator('[data-testid="meeting-room"][data-state="open"]').waitFor({ timeout: T });
  assert.equal(await tiles(C).count(), 0, "the leaver's page shows no tiles");
  assert.equal(await C.evaluate(() => [...camsig.calls.values()].filter((c) => c.meeting).length), 0);
  await assertLeft(A, "ann", "cat", "left");
  await assertLeft(B, "bob", "cat", "left");
  await C.context().close();
  await assertMesh({ ann: A, bob: B });

  // Bob's socket drops; Dan joins meanwhile on node4. Bob's page reconnects with
  // ?since=<last id>, hears the missed member_joined, and offers to Dan.
  // (Dan signs in first, so Bob is offline only for the join: well within the grace period.)
  const dan = await signIn("dan", `http://127.0.0.1:${fourth}/?meeting=${id}`);
  assert.equal(dan.node, "node4", "Dan's socket is on the fourth node");
  const D = dan.page;
  const lastId = await B.evaluate(() => camsig.offline());
  await join(D, "Dan");
  await A.getByTestId("meeting-tile-dan").waitFor({ timeout: T });
  assert.equal(await B.getByTestId("meeting-tile-dan").count(), 0, "Bob has not heard of Dan yet");
  const ws = B.waitForEvent("websocket", { timeout: T });
  await B.evaluate(() => camsig.online());
  assert.match((await ws).url(), new RegExp(`since=${lastId}`), "the page reconnects with since=<last event id>");
  await live(B);
  await assertMesh({ ann: A, bob: B, dan: D });

  // Dan's node dies (his page is closed too, so nothing comes back): after the
  // lease and the grace period the others hear hangup and member_left (gone).
  await holdPc(A, "dan");
  await holdPc(B, "dan");
  const killed = Date.now();
  extraNode.kill("SIGKILL");
  await D.context().close();
  say(`killed node4 (pid ${extraNode.pid}), the node of Dan's socket; closed Dan's page`);
  await assertLeft(A, "ann", "dan", "gone");
  const after = (Date.now() - killed) / 1000;
  await assertLeft(B, "bob", "dan", "gone");
  say(`Dan was gone ${after.toFixed(1)} s after his node died (lease ${TTL_S} s + grace ${GRACE_S} s)`);
  assert.ok(after >= GRACE_S, `not before the grace period ran out (${after} s)`);
  await assertMesh({ ann: A, bob: B });
  const left = await A.evaluate(async (id) => (await camsig.client.getMeeting(id)).members.map((m) => m.user_id), id);
  assert.deepEqual(left, ["ann", "bob"]);

  // Bob's page is offline longer than the grace period: presence takes him out
  // (gone). Back online, his page finds it is no longer a member and says so.
  await holdPc(A, "bob");
  await holdPc(B, "ann");
  await B.evaluate(() => camsig.offline());
  await assertLeft(A, "ann", "bob", "gone");
  await assertTiles(A, "ann", ["ann"]);
  await B.evaluate(() => camsig.online());
  await live(B);
  await B.locator('[data-testid="meeting-room"][data-state="open"]').waitFor({ timeout: T });
  const notice = B.getByTestId("meeting-notice");
  assert.equal(await notice.getAttribute("data-reason"), "gone");
  assert.equal(await tiles(B).count(), 0, "an ex-member's page shows no tiles");
  assert.equal(await B.evaluate(() => window.heldPcs.ann.connectionState), "closed");
  say(`bob, back after the grace period: "${await notice.textContent()}"`);
}

// On failure: each open page's screenshot, tiles and event log, under LOGS.
async function report() {
  for (const [user, page] of open) {
    try {
      await page.screenshot({ path: path.join(LOGS, `fail-${user}.png`) });
      const state = await page.evaluate(() => ({
        tiles: [...document.querySelectorAll('[data-testid="meeting-tiles"] > .tile')].map((t) => `${t.dataset.user}:${t.dataset.state}`),
        calls: [...camsig.calls.values()].map((c) => `${c.room.slice(-6)} ${c.role} ${c.peer} ${c.pc?.connectionState}`),
        log: [...document.querySelectorAll("#log li")].map((li) => li.textContent).reverse(),
      }));
      say(`${user}: tiles ${state.tiles.join(" ")}; calls ${state.calls.join(", ")}`);
      for (const line of state.log) console.log(`    ${user} | ${line}`);
    } catch (e) { say(`${user}: no report (${e.message})`); }
  }
}

await run(say, main, cleanup, { logs: LOGS, onFail: report });
