// Proves the demo page makes a real call through a camsig cluster: two headless
// Chromium pages with fake cameras, signed in with pasted tokens, each holding its
// WebSocket on a different node; the viewer's <video> plays real frames, resumes
// with ?since= after losing its socket, and ends when the owner's camera goes off.
// Then, on a dev-mode node (as `cargo run` starts it), two people sign in by name and call.
//
// Usage: node tests/e2e/browser.mjs   (scripts/e2e installs playwright-core and builds camsig)
// Env: CAMSIG_BIN (target/debug/camsig), CHROMIUM (/usr/bin/chromium),
//      E2E_WORK (target/e2e: node_modules under node/, screenshots here).

import { randomBytes } from "node:crypto";
import { mkdirSync, rmSync } from "node:fs";
import path from "node:path";
import assert from "node:assert/strict";
import {
  LAUNCH, T, WORK, chromium, devSignIn, freePorts, live, logger, minter, newPage as openPage, ready, run, startCluster, startDevNode,
  stopCluster, stopNode, until,
} from "./lib.mjs";

const say = logger("browser");

let cluster = null;
let devNode = null;
let browser = null;
let stopping = null;
// Once, whether from the end of main() or from a signal.
function cleanup() {
  stopping ??= (async () => {
    if (browser) await browser.close().catch(() => {});
    await stopNode(devNode, 5000);
    await stopCluster(cluster);
  })();
  return stopping;
}

const newPage = (user, port) => openPage(browser, say, user, `http://127.0.0.1:${port}/`, { width: 1000, height: 760 });
async function cameraOn(page) {
  await page.getByTestId("camera-btn").click();
  await page.locator('[data-testid="camera-btn"][data-state="on"]').waitFor({ timeout: T });
  await until("local preview", () => page.getByTestId("local-video").evaluate((v) => v.videoWidth > 0));
}
// A video is playing real frames: it has a size and its clock moves.
async function assertPlaying(page, who) {
  const video = page.getByTestId(`remote-video-${who}`);
  await until(`${who}'s video to have frames`, () => video.evaluate((v) => v.videoWidth > 0 && v.currentTime > 0));
  const a = await video.evaluate((v) => ({ t: v.currentTime, w: v.videoWidth, h: v.videoHeight, frames: v.getVideoPlaybackQuality().totalVideoFrames }));
  await page.waitForTimeout(1500);
  const b = await video.evaluate((v) => ({ t: v.currentTime, frames: v.getVideoPlaybackQuality().totalVideoFrames, paused: v.paused }));
  assert.ok(b.t > a.t + 0.5, `currentTime advances (${a.t} -> ${b.t})`);
  assert.ok(b.frames > a.frames, `frames are decoded (${a.frames} -> ${b.frames})`);
  assert.equal(b.paused, false);
  await page.locator(`[data-testid="view-${who}"][data-state="live"]`).waitFor({ timeout: T });
  say(`${who}'s video plays on the viewer: ${a.w}x${a.h}, t ${a.t.toFixed(2)} -> ${b.t.toFixed(2)} s, frames ${a.frames} -> ${b.frames}`);
}
async function assertEnded(page, who, words) {
  await page.locator(`[data-testid="view-${who}"][data-state="ended"]`).waitFor({ timeout: T });
  const status = await page.getByTestId(`view-status-${who}`).textContent();
  assert.match(status, words, "the page says why the call ended");
  const cleared = await page.getByTestId(`remote-video-${who}`).evaluate((v) => v.srcObject === null && v.videoWidth === 0);
  assert.ok(cleared, "the viewer's video element no longer holds the stream");
  say(`viewer's video ended: "${status}"`);
}

async function clusterCall() {
  const [lb, redis] = await freePorts(2);
  const nodes = await freePorts(3, [lb, redis]);
  const secret = randomBytes(32).toString("hex");
  const env = { ...process.env, CAMSIG__AUTH__JWT_SECRET: secret };
  const logs = path.join(WORK, "logs/browser");
  rmSync(logs, { recursive: true, force: true });
  cluster = startCluster(env, { lb, redis, node: nodes[0], logs }, (code) => { if (!stopping) say(`scripts/cluster exited early (${code})`); });
  const [ownerNode, viewerNode] = [nodes[0], nodes[1]];
  for (const port of [lb, ownerNode, viewerNode]) await ready(port);
  say(`cluster up: lb ${lb}, nodes ${nodes.join(",")}`);

  const token = minter(env);
  async function open(user, port, direct = true, tryName = false) {
    const page = await newPage(user, port);
    // The page the server sends says it has a secret: a token field, no name sign-in.
    await page.getByTestId("token-form").waitFor({ state: "visible", timeout: T });
    if (tryName) {
      assert.equal(await page.getByTestId("dev-form").isVisible(), false, "no name sign-in on a server with a secret");
    }
    await page.getByTestId("token").fill(token(user));
    await page.getByTestId("token-btn").click();
    const node = await live(page);
    if (direct) {
      const health = await (await fetch(`http://127.0.0.1:${port}/healthz`)).json();
      assert.equal(node, health.node_id, `${user}'s socket is on the node it was opened on`);
    }
    say(`${user} signed in, WebSocket on ${node}`);
    return { page, node };
  }
  const owner = await open("ann", ownerNode, true, true);
  const viewer = await open("bob", viewerNode);
  assert.notEqual(owner.node, viewer.node, "owner and viewer sessions are on different nodes");
  const O = owner.page, V = viewer.page;

  // Cameras on: the owner's (and the viewer's too, so the screenshot shows both sides).
  await cameraOn(O);
  await cameraOn(V);
  await V.getByTestId("user-ann").waitFor({ timeout: T });
  await O.getByTestId("user-bob").waitFor({ timeout: T });
  say("both cameras on, each listed on the other page");

  // Call 1: Show, answer, ICE both ways, frames.
  await V.getByTestId("show-ann").click();
  await assertPlaying(V, "ann");
  await O.getByTestId("watcher-bob").waitFor({ timeout: T });
  await V.screenshot({ path: path.join(WORK, "cluster.png") });

  // The viewer loses its socket; the owner stops the call meanwhile. Back on
  // ?since=<last id>, the viewer gets the missed hangup replayed.
  const lastId = await V.evaluate(() => camsig.offline());
  await O.getByTestId("stop-bob").click();
  await O.getByTestId("watcher-bob").waitFor({ state: "detached", timeout: T });
  assert.equal(await V.locator('[data-testid="view-ann"][data-state="live"]').count(), 1, "viewer has not heard of it yet");
  const wsUrl = V.waitForEvent("websocket", { timeout: T });
  await V.evaluate(() => camsig.online());
  assert.match((await wsUrl).url(), new RegExp(`since=${lastId}`), "the page reconnects with since=<last event id>");
  await assertEnded(V, "ann", /ann hung up/);

  // Call 2: the viewer shows again, then hangs up itself; the owner hears it.
  await V.getByTestId("close-ann").click();
  await V.getByTestId("show-ann").click();
  await assertPlaying(V, "ann");
  await O.getByTestId("watcher-bob").waitFor({ timeout: T });
  await V.getByTestId("hangup-ann").click();
  await O.getByTestId("watcher-bob").waitFor({ state: "detached", timeout: T });
  say("viewer hung up; the owner's page dropped the viewer");

  // Call 3: the owner turns the camera off; the viewer's video ends.
  await V.getByTestId("close-ann").click();
  await V.getByTestId("show-ann").click();
  await assertPlaying(V, "ann");
  await O.getByTestId("camera-btn").click();
  await O.locator('[data-testid="camera-btn"][data-state="off"]').waitFor({ timeout: T });
  await assertEnded(V, "ann", /turned the camera off/);
  // Ann is still online: listed with her camera off, and nothing to show.
  await V.locator('[data-testid="user-ann"][data-camera="off"][data-online="true"]').waitFor({ timeout: T });
  await V.getByTestId("show-ann").waitFor({ state: "detached", timeout: T });
  await V.screenshot({ path: path.join(WORK, "demo-ended.png") });

  // Errors read in words: the server's message is shown.
  await V.evaluate(() => camsig.show("nobody-here"));
  const err = V.getByTestId("error-text");
  await err.waitFor({ timeout: T });
  const text = await err.textContent();
  assert.equal(text, "Could not show nobody-here's camera: no such user");
  assert.ok(!/user_not_found|\{/.test(text), `a sentence, not a code: ${text}`);
  say(`error shown: "${text}"`);

  // Through nginx too: the page's WebSocket upgrades through the proxy.
  const viaLb = await open("carl", lb, false);
  assert.match(viaLb.node, /^node[123]$/);
}

// As `cargo run` starts it: one node, no secret, so the page signs in by name.
async function devModeCall() {
  const [port] = await freePorts(1);
  const logs = path.join(WORK, "logs/browser");
  devNode = startDevNode(port, path.join(logs, "dev-data"), path.join(logs, "dev-node.log"));
  await ready(port);
  const pages = {};
  for (const name of ["Ann Lee", "Bob"]) {
    const page = await newPage(name, port);
    await devSignIn(page, name);
    pages[name] = page;
  }
  const [A, B] = [pages["Ann Lee"], pages.Bob];
  assert.equal(await A.getByTestId("me").textContent(), "Ann Lee (ann-lee)");
  await cameraOn(A);
  await cameraOn(B);
  await B.getByTestId("user-ann-lee").getByText("Ann Lee").waitFor({ timeout: T });
  await B.getByTestId("show-ann-lee").click();
  await assertPlaying(B, "ann-lee");
  const shot = path.join(WORK, "demo.png");
  await B.screenshot({ path: shot });
  say(`screenshot: ${shot}`);

  // Reloads: a page that goes away hangs up its calls. An owner page reloaded with
  // the camera on says it is on (elsewhere: not on this page), and opens it on a click.
  await A.getByTestId("watcher-bob").waitFor({ timeout: T });
  await B.reload();
  await live(B);
  await A.getByTestId("watcher-bob").waitFor({ state: "detached", timeout: T });
  await A.reload();
  await live(A);
  await A.locator('[data-testid="camera-btn"][data-state="elsewhere"]').waitFor({ timeout: T });
  assert.equal(await A.evaluate(() => window.cameraOpens), 0, "no camera opened by the reload");
  await cameraOn(A);
  await B.getByTestId("show-ann-lee").click();
  await assertPlaying(B, "ann-lee");
  say("after reloads on both sides, the call plays again");
  say("dev mode: signed in by name, call plays");
}

async function main() {
  mkdirSync(WORK, { recursive: true });
  browser = await chromium.launch(LAUNCH);
  await clusterCall();
  await devModeCall();
}

await run(say, main, cleanup, { logs: path.join(WORK, "logs/browser") });
