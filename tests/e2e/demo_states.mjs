// The demo page, state by state, on a dev-mode node (as `cargo run` starts it):
//   1 alone         signed in, nobody else online
//   2 camera off    someone online with the camera off is listed, without Show
//   3 camera on     their camera on: listed as on, with Show
//   4 in call       the video plays; the frames panels show the offer, answer and ICE
//                   both ways (put_offer/put_ice in, answer/ice out; put_answer on the owner's)
//   5 ended         the server restarts and loses the call: both pages say so in words,
//                   not "Ann hung up"
//   6 ended         the viewer's network drops, the owner hangs up, the event expires:
//                   back, the viewer reads the closed room and names nobody
// Each state is asserted through the DOM (waiting on selectors and conditions, no fixed
// sleeps) and screenshotted to E2E_WORK/demo-<n>-<state>.png (demo-4-in-call.png is
// docs/demo.png). Also: no version numbers in the list, SDPs cut short in the panel but
// whole once opened, the panel bounded, every hangup reason in words.
//
// Usage: node tests/e2e/demo_states.mjs   (scripts/e2e installs playwright-core and builds camsig)
// Env: CAMSIG_BIN, CHROMIUM, E2E_WORK (see lib.mjs).

import { mkdirSync, rmSync } from "node:fs";
import path from "node:path";
import assert from "node:assert/strict";
import {
  LAUNCH, T, WORK, chromium, devSignIn, freePorts, live, logger, newPage as openPage, ready, run, startDevNode, stopNode, until,
} from "./lib.mjs";

const say = logger("demo_states");
const LOGS = path.join(WORK, "logs/demo_states");

let node = null;
let browser = null;
const pages = {};
let stopping = null;
function cleanup() {
  stopping ??= (async () => {
    if (browser) await browser.close().catch(() => {});
    await stopNode(node, 5000);
  })();
  return stopping;
}

// The page from its top; the frames panel scrolled to its end, or to the last line
// named `from` (to show a call's signaling from its start); `full`: the whole page.
async function shot(page, name, from = null, full = false) {
  await page.evaluate((from) => {
    window.scrollTo(0, 0);
    const list = document.getElementById("frames");
    const line = from && [...list.querySelectorAll(`li[data-name="${from}"]`)].pop();
    list.scrollTop = line ? line.offsetTop - list.offsetTop : list.scrollHeight;
  }, from);
  const file = path.join(WORK, `demo-${name}.png`);
  await page.screenshot({ path: file, fullPage: full });
  say(`screenshot ${file}`);
}
// The frames panel's lines as "<dir> <name> <status>", oldest first.
const frames = (page) => page.locator("#frames > li").evaluateAll((lis) =>
  lis.map((li) => `${li.dataset.dir} ${li.dataset.name} ${li.querySelector(".f-status").textContent}`.trim()));
// Waits for a line in the frames panel: `dir` "in" (←) or "out" (→), `name` the event
// or REST call, `text` (optional) in its JSON.
async function frameSeen(page, dir, name, text = undefined) {
  const line = page.locator(`#frames > li[data-dir="${dir}"][data-name="${name}"]`, { hasText: text }).first();
  await line.waitFor({ timeout: T });
  return line;
}
async function assertPlaying(page, who) {
  const video = page.getByTestId(`remote-video-${who}`);
  await page.locator(`[data-testid="view-${who}"][data-state="live"]`).waitFor({ timeout: T });
  await page.waitForFunction((v) => v.videoWidth > 0 && v.currentTime > 0, await video.elementHandle(), { timeout: T });
  const t0 = await video.evaluate((v) => v.currentTime);
  await page.waitForFunction(([v, t]) => v.currentTime > t + 0.5 && !v.paused, [await video.elementHandle(), t0], { timeout: T });
  say(`${who}'s video plays`);
}
// Nothing like "v2" next to a name: versions order updates, they are not for people.
async function assertNoVersions(page) {
  const text = await page.getByTestId("users").innerText();
  assert.doesNotMatch(text, /\bv\d+\b/, `no version numbers in the list: ${JSON.stringify(text)}`);
}

async function main() {
  mkdirSync(WORK, { recursive: true });
  rmSync(LOGS, { recursive: true, force: true });
  const [port] = await freePorts(1);
  const dataDir = path.join(LOGS, "data");
  const nodeLog = path.join(LOGS, "node.log");
  // A short drain, so the restart below takes a second or two; events kept one second,
  // so a page away a little longer gets resync instead of the events it missed (state 6).
  const start = () => startDevNode(port, dataDir, nodeLog, { CAMSIG__SERVER__DRAIN_S: "1", CAMSIG__EVENTS__KEEP_S: "1" });
  node = start();
  await ready(port);
  browser = await chromium.launch(LAUNCH);
  const open = (user) => openPage(browser, say, user, `http://127.0.0.1:${port}/`, { width: 1200, height: 800 });

  // 1. Ann alone: she is listed (as you), with the camera off; the page says nobody else is here.
  const A = pages.ann = await open("ann");
  await devSignIn(A, "Ann");
  await A.locator('[data-testid="user-ann"][data-camera="off"]').waitFor({ timeout: T });
  await A.getByTestId("users-empty").waitFor({ state: "visible", timeout: T });
  assert.equal(await A.locator("#users > li").count(), 1, "only Ann is listed");
  assert.equal(await A.getByTestId("users-count").textContent(), "1");
  await frameSeen(A, "in", "hello");
  await frameSeen(A, "out", "users");
  await assertNoVersions(A);
  await shot(A, "1-alone");

  // 2. Bob signs in and leaves his camera off: Ann sees him online, camera off, nothing to show.
  const B = pages.bob = await open("bob");
  await devSignIn(B, "Bob");
  const bobOnAnn = A.locator('[data-testid="user-bob"][data-camera="off"][data-online="true"]');
  await bobOnAnn.waitFor({ timeout: T });
  assert.equal(await A.getByTestId("camera-bob").textContent(), "camera off");
  assert.equal(await A.getByTestId("show-bob").count(), 0, "no Show for a camera that is off");
  await A.getByTestId("users-empty").waitFor({ state: "hidden", timeout: T });
  await until("Ann's count of people online to be 2", async () => (await A.getByTestId("users-count").textContent()) === "2");
  await frameSeen(A, "in", "update_user", '"user_id":"bob"'); // Bob coming online reached Ann live
  await assertNoVersions(A);
  await shot(A, "2-online-camera-off");

  // 3. Ann turns her camera on: Bob sees it on, with Show.
  await A.getByTestId("camera-btn").click();
  await A.locator('[data-testid="camera-btn"][data-state="on"]').waitFor({ timeout: T });
  await A.waitForFunction(() => document.getElementById("local-video").videoWidth > 0, null, { timeout: T });
  await B.locator('[data-testid="user-ann"][data-camera="on"]').waitFor({ timeout: T });
  await B.getByTestId("show-ann").waitFor({ timeout: T });
  assert.equal(await B.getByTestId("camera-ann").textContent(), "camera on");
  assert.equal(await (await frameSeen(A, "out", "cameraOn")).locator(".f-status").textContent(), "200");
  // Me first, then cameras on, then the rest.
  assert.deepEqual(await B.locator("#users > li").evaluateAll((lis) => lis.map((li) => li.dataset.testid)), ["user-bob", "user-ann"]);
  await assertNoVersions(B);
  await shot(B, "3-camera-on");

  // 4. Bob watches Ann: video plays, and each page's panel shows the signaling both ways.
  await B.getByTestId("show-ann").click();
  await assertPlaying(B, "ann");
  await A.getByTestId("watcher-bob").waitFor({ timeout: T });
  for (const [page, dir, name] of [
    [B, "out", "cameraShow"], [B, "in", "put_offer"], [B, "out", "answer"], [B, "in", "put_ice"], [B, "out", "ice"],
    [A, "in", "show_cam"], [A, "out", "offer"], [A, "in", "put_answer"], [A, "in", "put_ice"], [A, "out", "ice"],
  ]) await frameSeen(page, dir, name);
  assert.equal(await (await frameSeen(B, "out", "answer")).locator(".f-status").textContent(), "202");
  // The offer's SDP is cut on its line (120 characters and "…"), and whole once the line is opened.
  const offer = await frameSeen(B, "in", "put_offer");
  const line = await offer.locator(".f-json").textContent();
  const sdp = JSON.parse(line).offer.sdp;
  assert.ok(sdp.endsWith("…") && sdp.length === 121, `the SDP is cut on the line (${sdp.length} characters)`);
  assert.match(await offer.locator(".dir").textContent(), /←/);
  await offer.locator("summary").click();
  // The toggle event that writes it out comes just after the click.
  const whole = JSON.parse(await until("the opened frame's JSON", () => offer.locator("pre").textContent()));
  assert.equal(whole.action, "server-action:put_offer");
  assert.ok(whole.data.offer.sdp.length > 500 && whole.data.offer.sdp.startsWith(sdp.slice(0, 120)), "the opened frame has the whole SDP");
  await offer.locator("summary").click();
  assert.match(await (await frameSeen(B, "out", "answer")).locator(".dir").textContent(), /→/);
  say(`Bob's frames: ${(await frames(B)).filter((f) => !/update_user|users/.test(f)).slice(0, 12).join(", ")}`);
  await assertNoVersions(B);
  await shot(B, "4-in-call", "cameraShow");

  // Every reason a hangup can carry, in words; with no `by` (a room's state read after
  // a reconnect) no name is put on it.
  const said = await B.evaluate(() => {
    // Bob's page: watching Ann, and (as if) Ann watching Bob.
    const viewer = { role: "viewer", peer: "ann" }, owner = { role: "owner", peer: "ann" };
    return {
      hangup: reasonText("hangup", "ann", viewer),
      hangupUnknown: reasonText("hangup", null, viewer),
      mine: reasonText("hangup", "bob", viewer),
      cameraOff: reasonText("camera_off", "ann", viewer),
      cameraOffUnknown: reasonText("camera_off", null, viewer),
      gone: reasonText("gone", "ann", owner),
      goneMe: reasonText("gone", null, viewer),
      timeout: reasonText("timeout", "ann", viewer),
      drain: reasonText("drain", null, viewer),
      restart: reasonText("restart", null, viewer),
      restartedBy: reasonText("restart", "ann", owner),
      other: reasonText("done, bye", "ann", viewer),
    };
  });
  assert.deepEqual(said, {
    hangup: "Ann hung up.",
    hangupUnknown: "The call was hung up while this page was away.",
    mine: "You hung up.",
    cameraOff: "Ann turned the camera off.",
    cameraOffUnknown: "Ann turned the camera off.",
    gone: "Ann left (connection lost).",
    goneMe: "This page was away too long (connection lost); the server closed the call.",
    timeout: "The call timed out while connecting.",
    drain: "The server restarted; the call was lost.",
    restart: "The server restarted; the call was lost.",
    restartedBy: "Ann started the call again.",
    other: "Ann ended the call (done, bye).",
  });

  // 5. The server restarts (dev mode keeps no state): both pages come back, find the
  // call gone, and say so in words, not "Ann hung up".
  await stopNode(node);
  say("node stopped (drained)");
  await B.locator('[data-testid="ws-status"]:not([data-state="live"])').waitFor({ timeout: T });
  node = start();
  await ready(port);
  say("node started again on the same port and data dir");
  await live(A);
  await live(B);
  await B.locator('[data-testid="view-ann"][data-state="ended"]').waitFor({ timeout: T });
  const words = await B.getByTestId("view-status-ann").textContent();
  assert.equal(words, "The server restarted; the call was lost.");
  assert.equal(await B.getByTestId("view-ann").getAttribute("data-reason"), "restart");
  assert.ok(await B.getByTestId("remote-video-ann").evaluate((v) => v.srcObject === null), "the video no longer holds the stream");
  await frameSeen(B, "in", "reconnect"); // the draining node said so before closing
  await frameSeen(B, "in", "resync"); // the new process had none of the old events
  await frameSeen(B, "out", "connections"); // so the page asked for the room: 404
  // Ann's side: the watcher is gone and a notice says why (her camera state went with the server too).
  await A.getByTestId("watcher-bob").waitFor({ state: "detached", timeout: T });
  await A.getByTestId("notice").waitFor({ state: "visible", timeout: T });
  await until("Ann's notice about the call", async () => /Your call with bob ended: The server restarted; the call was lost\./.test(await A.getByTestId("notice-text").textContent()));
  // The server lost Ann's camera too: her page says so and stops showing it as on.
  await A.locator('[data-testid="camera-btn"][data-state="off"]').waitFor({ timeout: T });
  assert.match(await A.getByTestId("notice-text").textContent(), /Your camera is off: the server turned it off while this page was away/);
  say(`Bob: "${words}"; Ann: "${await A.getByTestId("notice-text").innerText()}"`);
  // After the restart Ann is still listed, online; the server lost her camera, so: off.
  await B.locator('[data-testid="user-ann"][data-camera="off"][data-online="true"]').waitFor({ timeout: T });
  await shot(B, "5-ended", "reconnect", true);
  await shot(A, "5-ended-owner", "reconnect", true);

  // 6. Bob's network drops during a call; Ann hangs up meanwhile, and the hangup
  // event expires before Bob is back. Back, his page gets resync, reads the room
  // (closed, reason hangup, no name) and says so without naming anyone.
  await A.getByTestId("camera-btn").click();
  await A.locator('[data-testid="camera-btn"][data-state="on"]').waitFor({ timeout: T });
  await B.getByTestId("close-ann").click();
  await B.getByTestId("show-ann").click();
  await assertPlaying(B, "ann");
  await A.getByTestId("watcher-bob").waitFor({ timeout: T });
  const away = await B.evaluate(() => { const ws = camsig.ws; ws.onclose = null; ws.close(); camsig.ws = null; return { since: camsig.lastId, token: camsig.token }; });
  await A.getByTestId("stop-bob").click();
  await A.getByTestId("watcher-bob").waitFor({ state: "detached", timeout: T });
  await until("the hangup for Bob to expire from his event log", async () => {
    const r = await fetch(`http://127.0.0.1:${port}/webrtc/events?since=${away.since}&timeout_s=0`, { headers: { Authorization: `Bearer ${away.token}` } });
    return (await r.json()).events[0]?.action === "server-action:resync";
  });
  const checks = () => B.locator('#frames > li[data-dir="out"][data-name="connections"]').count();
  const checked = await checks();
  await B.evaluate(() => connect());
  await B.locator('[data-testid="view-ann"][data-state="ended"]').waitFor({ timeout: T });
  assert.equal(await B.getByTestId("view-status-ann").textContent(), "The call was hung up while this page was away.");
  assert.equal(await B.getByTestId("view-ann").getAttribute("data-reason"), "hangup");
  assert.ok((await checks()) > checked, "the page read the room's state");
  say(`Bob, back after the hangup expired: "${await B.getByTestId("view-status-ann").textContent()}"`);
  await shot(B, "6-ended-while-away", "open", true);

  // The panel keeps the last 200 lines.
  const kept = await B.evaluate(() => {
    for (let i = 0; i < 250; i++) frameLine("in", "ws", "test", "test", "{}", () => "{}");
    return document.querySelectorAll("#frames > li").length;
  });
  assert.equal(kept, 200, "the frames panel is bounded");
  assert.equal(await B.getByTestId("frames-count").textContent(), "200");
}

// On failure: each page's screenshot, frames and event log, under LOGS.
async function report() {
  for (const [user, page] of Object.entries(pages)) {
    try {
      await page.screenshot({ path: path.join(LOGS, `fail-${user}.png`) });
      say(`${user} frames: ${(await frames(page)).join(", ")}`);
      const log = await page.evaluate(() => [...document.querySelectorAll("#log li")].map((li) => li.textContent).reverse());
      for (const line of log) console.log(`    ${user} | ${line}`);
    } catch (e) { say(`${user}: no report (${e.message})`); }
  }
}

await run(say, main, cleanup, { logs: LOGS, onFail: report });
