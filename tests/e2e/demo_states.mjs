// The demo page, state by state, on a dev-mode node (as `cargo run` starts it):
//   1 alone         signed in, nobody else online; loading the page and signing in by
//                   name met no refused request and no console error (no /dev/token probe)
//   2 camera off    someone online with the camera off is listed, without Show
//   3 camera on     their camera on: listed as on, with Show
//   4 in call       the video plays; the frames panels show the offer, answer and ICE
//                   both ways (put_offer/put_ice in, answer/ice out; put_answer on the owner's)
//   5 ended         the server restarts and loses the call: both pages say so in words,
//                   not "Ann hung up"
//   6 ended         the viewer's network drops, the owner hangs up, the event expires:
//                   back, the viewer reads the closed room and names nobody
//   7 elsewhere     Ann signs in on a second page while her camera is on: the page says
//                   it is on elsewhere and opens no camera (no getUserMedia call, not even
//                   on a viewer's show_cam) until its button is clicked
//   8 meeting link  Bob opens a meeting's link: its title shows before he joins
//   9 meeting       Bob in the meeting with his camera off for people online: his panel
//                   says it streams to the meeting, his line says "camera in meeting"
//                   (Ann's page: "in your meeting", not "camera off"); Ann joins with
//                   hers on: the same stream (no second getUserMedia). Leaving closes
//                   Bob's camera and keeps Ann's
//  10 token         two pages signed in with 20-second tokens get token_expiring: one
//                   gets a fresh token from /dev/token by itself, the other asks for
//                   one (a banner); both are still connected, never closed, past the
//                   first tokens' exp
// Each state is asserted through the DOM (waiting on selectors and conditions, no fixed
// sleeps) and screenshotted to E2E_WORK/demo-<n>-<state>.png (demo-0-sign-in.png is the
// page before signing in; demo-4-in-call.png is docs/demo.png). Also: no version numbers
// in the list, SDPs cut short in the panel but whole once opened, the panel bounded,
// every hangup reason in words.
//
// Usage: node tests/e2e/demo_states.mjs   (scripts/e2e installs playwright-core and builds camsig)
// Env: CAMSIG_BIN, CHROMIUM, E2E_WORK (see lib.mjs).

import { execFileSync } from "node:child_process";
import { mkdirSync, rmSync } from "node:fs";
import path from "node:path";
import assert from "node:assert/strict";
import {
  CAMSIG_BIN, LAUNCH, T, WORK, chromium, devSignIn, freePorts, live, logger, newPage as openPage, ready, run, startDevNode, stopNode, until,
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
// Nothing refused, failed or logged as an error on this page so far (see lib.mjs newPage).
function assertClean(page, when) {
  assert.deepEqual(page.problems, [], `no refused request and no console error ${when}`);
}
const cameraOpens = (page) => page.evaluate(() => window.cameraOpens);
const claims = (token) => JSON.parse(Buffer.from(token.split(".")[1], "base64url").toString());

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
  // `camsig token` with the dev secret the node keeps in dataDir.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("CAMSIG")));
  const mint = (user, ttl, name = null) => execFileSync(CAMSIG_BIN, ["token", user, "--ttl", String(ttl), ...(name ? ["--name", name] : [])],
    { env: { ...env, CAMSIG__SERVER__DATA_DIR: dataDir } }).toString().trim();

  // 1. Ann alone: she is listed (as you), with the camera off; the page says nobody else is here.
  // Loading asked the server nothing it refuses (no /dev/token probe), nor did signing in.
  const A = pages.ann = await open("ann");
  await A.getByTestId("dev-form").waitFor({ state: "visible", timeout: T });
  assertClean(A, "on load");
  assert.deepEqual(await A.evaluate(() => performance.getEntriesByType("resource").map((e) => new URL(e.name).pathname)
    .filter((p) => p.startsWith("/dev/"))), [], "no /dev/token request on load");
  // The page the server sent says dev mode: a name, the token field one click away.
  assert.equal(await A.getByTestId("token-form").isVisible(), false, "dev mode signs in by name first");
  await A.getByTestId("token-toggle").waitFor({ state: "visible", timeout: T });
  await shot(A, "0-sign-in");
  await devSignIn(A, "Ann");
  assertClean(A, "signing in by name");
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
  assertClean(B, "on load");
  await devSignIn(B, "Bob");
  assertClean(B, "signing in by name");
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
      hangup: camsig.reasonText("hangup", "ann", viewer),
      hangupUnknown: camsig.reasonText("hangup", null, viewer),
      mine: camsig.reasonText("hangup", "bob", viewer),
      cameraOff: camsig.reasonText("camera_off", "ann", viewer),
      cameraOffUnknown: camsig.reasonText("camera_off", null, viewer),
      gone: camsig.reasonText("gone", "ann", owner),
      goneMe: camsig.reasonText("gone", null, viewer),
      timeout: camsig.reasonText("timeout", "ann", viewer),
      drain: camsig.reasonText("drain", null, viewer),
      restart: camsig.reasonText("restart", null, viewer),
      restartedBy: camsig.reasonText("restart", "ann", owner),
      other: camsig.reasonText("done, bye", "ann", viewer),
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
  const away = await B.evaluate(() => ({ since: camsig.offline(), token: camsig.token }));
  await A.getByTestId("stop-bob").click();
  await A.getByTestId("watcher-bob").waitFor({ state: "detached", timeout: T });
  await until("the hangup for Bob to expire from his event log", async () => {
    const r = await fetch(`http://127.0.0.1:${port}/webrtc/events?since=${away.since}&timeout_s=0`, { headers: { Authorization: `Bearer ${away.token}` } });
    return (await r.json()).events[0]?.action === "server-action:resync";
  });
  const checks = () => B.locator('#frames > li[data-dir="out"][data-name="connections"]').count();
  const checked = await checks();
  await B.evaluate(() => camsig.online());
  await B.locator('[data-testid="view-ann"][data-state="ended"]').waitFor({ timeout: T });
  assert.equal(await B.getByTestId("view-status-ann").textContent(), "The call was hung up while this page was away.");
  assert.equal(await B.getByTestId("view-ann").getAttribute("data-reason"), "hangup");
  assert.ok((await checks()) > checked, "the page read the room's state");
  say(`Bob, back after the hangup expired: "${await B.getByTestId("view-status-ann").textContent()}"`);
  await shot(B, "6-ended-while-away", "open", true);

  // 7. Ann's camera is on (page A). She signs in on a second page, as on another
  // device: it says her camera is on elsewhere and opens nothing. Bob shows Ann:
  // page A answers; the second page hears show_cam and opens nothing either.
  const A2 = pages["ann-2"] = await open("ann-2");
  await devSignIn(A2, "Ann");
  await A2.locator('[data-testid="user-ann"][data-camera="on"]').waitFor({ timeout: T });
  assert.equal(await cameraOpens(A2), 0, "signing in with the camera on elsewhere opens no camera");
  await A2.locator('[data-testid="my-camera"][data-viewers="elsewhere"][data-meeting="false"]').waitFor({ timeout: T });
  assert.match(await A2.getByTestId("camera-status").textContent(), /^On elsewhere: people online see your camera on/);
  assert.equal(await A2.getByTestId("camera-btn").textContent(), "Turn camera on here");
  assert.ok(await A2.getByTestId("local-video").evaluate((v) => v.srcObject === null), "no stream on the second page");
  await B.getByTestId("close-ann").click();
  await B.getByTestId("show-ann").click();
  await assertPlaying(B, "ann");
  await frameSeen(A2, "in", "show_cam");
  assert.equal(await cameraOpens(A2), 0, "a viewer's show_cam opens no camera on a page that did not turn it on");
  await shot(A2, "7-camera-elsewhere");
  // A click opens it (and turns nothing else on: the camera was on already).
  await A2.getByTestId("camera-btn").click();
  await A2.locator('[data-testid="my-camera"][data-viewers="on"]').waitFor({ timeout: T });
  await A2.waitForFunction(() => document.getElementById("local-video").videoWidth > 0, null, { timeout: T });
  assert.equal(await cameraOpens(A2), 1, "the click opened the camera, once");
  await A2.context().close();
  delete pages["ann-2"];
  await B.getByTestId("hangup-ann").click();
  await A.getByTestId("watcher-bob").waitFor({ state: "detached", timeout: T });

  // 8. Ann creates a meeting and Bob opens its link: the title shows before he joins,
  // and his page asked nothing about the meeting (GET meetings/{id} is for members only).
  await A.getByTestId("meeting-title").fill("Standup");
  await A.getByTestId("meeting-create-btn").click();
  await A.locator('[data-testid="meeting-room"][data-state="open"]').waitFor({ timeout: T });
  const link = await A.getByTestId("meeting-link").inputValue();
  await B.goto(link);
  await live(B);
  await B.locator('[data-testid="meeting-room"][data-state="open"]').waitFor({ timeout: T });
  assert.equal(await B.getByTestId("meeting-heading").textContent(), "Standup", "the meeting's title before joining");
  assert.equal(await B.locator('#frames > li[data-dir="out"][data-name="meetings"]').count(), 0, "no meeting request before joining");
  await shot(B, "8-meeting-link");

  // 9. Bob joins with his camera off for people online: Join opens it, and it streams
  // to the meeting. His panel says so, and his line in People online does not say
  // "camera off"; to the others (the server's state) it is off: nothing to Show.
  await B.getByTestId("meeting-name").fill("Bob");
  await B.getByTestId("meeting-join-btn").click();
  await B.locator('[data-testid="meeting-room"][data-state="joined"]').waitFor({ timeout: T });
  assert.equal(await B.getByTestId("user-bob").getAttribute("data-camera"), "meeting", "my line: camera in meeting");
  assert.equal(await B.getByTestId("camera-bob").textContent(), "camera in meeting");
  assert.equal(await B.getByTestId("my-camera").getAttribute("data-meeting"), "true");
  assert.equal(await B.getByTestId("my-camera").getAttribute("data-viewers"), "off");
  assert.equal(await B.getByTestId("camera-status").textContent(),
    "Streaming to the meeting “Standup” only: people online see your camera as off and cannot watch it.");
  assert.equal(await B.getByTestId("camera-btn").textContent(), "Turn on for people online too");
  await B.waitForFunction(() => document.getElementById("local-video").videoWidth > 0, null, { timeout: T });
  assert.equal(await cameraOpens(B), 1, "Join opened the camera");
  await A.locator('[data-testid="user-bob"][data-camera="off"]').waitFor({ timeout: T });
  assert.equal(await A.getByTestId("show-bob").count(), 0);
  // Ann joins with her camera on for people online: the meeting takes that stream.
  const annOpens = await cameraOpens(A);
  await A.getByTestId("meeting-name").fill("Ann");
  await A.getByTestId("meeting-join-btn").click();
  await A.locator('[data-testid="meeting-room"][data-state="joined"]').waitFor({ timeout: T });
  assert.equal(await cameraOpens(A), annOpens, "one camera for people online and the meeting: no second getUserMedia");
  assert.equal(await A.getByTestId("my-camera").getAttribute("data-viewers"), "on");
  assert.equal(await A.getByTestId("my-camera").getAttribute("data-meeting"), "true");
  assert.equal(await A.getByTestId("camera-status").textContent(), "On: people online can watch it, and it streams to the meeting “Standup”.");
  assert.ok(await A.evaluate(() => document.querySelector('[data-testid="meeting-video-ann"]').srcObject === document.getElementById("local-video").srcObject),
    "the meeting tile shows the panel's stream");
  for (const [page, who] of [[A, "bob"], [B, "ann"]]) {
    await page.locator(`[data-testid="meeting-state-${who}"][data-state="connected"]`).waitFor({ timeout: T });
    await page.waitForFunction((who) => document.querySelector(`[data-testid="meeting-video-${who}"]`).videoWidth > 0, who, { timeout: T });
  }
  // On each other's page: Bob's camera is off for people online, but he is in Ann's
  // meeting, streaming to it: his line says so, not "camera off". Ann's is on.
  await A.locator('[data-testid="user-bob"][data-camera="meeting"]').waitFor({ timeout: T });
  assert.equal(await A.getByTestId("camera-bob").textContent(), "in your meeting");
  assert.equal(await B.getByTestId("camera-ann").textContent(), "camera on");
  await B.getByTestId("user-ann").locator("small", { hasText: "in your meeting" }).waitFor({ timeout: T });
  await shot(B, "9-meeting-camera");
  await shot(A, "9-meeting-camera-on");
  // Leaving: Bob's camera closes (only the meeting used it); Ann's stays on for people online.
  await B.evaluate(() => { window.heldTrack = camsig.localStream.getVideoTracks()[0]; });
  await B.getByTestId("meeting-leave-btn").click();
  await B.locator('[data-testid="my-camera"][data-viewers="off"][data-meeting="false"]').waitFor({ timeout: T });
  assert.equal(await B.evaluate(() => window.heldTrack.readyState), "ended", "Bob's camera is closed");
  assert.equal(await B.getByTestId("user-bob").getAttribute("data-camera"), "off");
  await A.evaluate(() => { window.heldTrack = camsig.localStream.getVideoTracks()[0]; });
  await A.getByTestId("meeting-leave-btn").click();
  await A.locator('[data-testid="my-camera"][data-viewers="on"][data-meeting="false"]').waitFor({ timeout: T });
  assert.equal(await A.evaluate(() => window.heldTrack.readyState), "live", "Ann's camera stays open for people online");
  assert.equal(await A.getByTestId("camera-status").textContent(), "On: people online can watch it.");
  await A.locator('[data-testid="user-bob"][data-camera="off"]').waitFor({ timeout: T });
  await B.locator('[data-testid="user-ann"][data-camera="on"]').waitFor({ timeout: T });

  // 10. Tokens near their exp (20 s, under auth.refresh_before_s: token_expiring
  // comes with hello). Dan's page is in dev mode: it gets a fresh token from
  // /dev/token and sends refresh by itself. Eve's page was given a token: it asks her for a new one (a banner).
  // Past the first tokens' exp, both pages are still connected, never closed.
  const D = pages.dan = await open("dan");
  await devSignIn(D, "Dan");
  await D.getByTestId("signout-btn").click();
  await D.getByTestId("token-toggle").click();
  const E = pages.eve = await open("eve");
  // Eve's page reads the mode a server with a secret gives (no dev tokens to
  // fetch): it has to ask her for a new token. (Not by rewriting the page with
  // page.route: a routed page's WebSocket does not connect in this Chromium.)
  await E.addInitScript(() => {
    const find = Document.prototype.querySelector;
    Document.prototype.querySelector = function (s) {
      return s === 'meta[name="camsig-dev"]' ? { content: "false" } : find.call(this, s);
    };
  });
  await E.reload();
  await E.getByTestId("token-form").waitFor({ state: "visible", timeout: T });
  const SHORT = 20;
  const first = { dan: mint("dan", SHORT, "Dan"), eve: mint("eve", SHORT) };
  const exp = Math.max(claims(first.dan).exp, claims(first.eve).exp);
  for (const [page, user] of [[D, "dan"], [E, "eve"]]) {
    await page.getByTestId("token").fill(first[user]);
    await page.getByTestId("token-btn").click();
    await live(page);
    await frameSeen(page, "in", "token_expiring");
  }
  // Dan's: refreshed from /dev/token, no banner.
  const refreshed = async (page) => {
    const line = await frameSeen(page, "out", "refresh");
    await until("the refresh's ack", async () => (await line.locator(".f-status").textContent()) === "ack");
  };
  await refreshed(D);
  assert.equal(await D.getByTestId("token-banner").isVisible(), false, "no banner where the page refreshes by itself");
  // Eve's: a banner asks for a token; one for someone else is refused in words.
  await E.getByTestId("token-banner").waitFor({ state: "visible", timeout: T });
  assert.match(await E.getByTestId("token-banner-text").textContent(), /^Your token expires at .* \(in \d+ s\)\. Paste a new one for eve \(camsig token eve\)/);
  await shot(E, "10-token-banner");
  await E.getByTestId("token-refresh").fill(mint("mallory", 900));
  await E.getByTestId("token-refresh-btn").click();
  await until("the refusal in the banner", async () => /That token was not taken: That token is for mallory, not for eve\./.test(await E.getByTestId("token-banner-text").textContent()));
  await E.getByTestId("token-refresh").fill(mint("eve", 900));
  await E.getByTestId("token-refresh-btn").click();
  await E.getByTestId("token-banner").waitFor({ state: "hidden", timeout: T });
  await refreshed(E);
  say(`both pages refreshed their tokens; waiting past the first ones' exp (${new Date(exp * 1000).toISOString()}) and the 5 s leeway`);
  await until("the first tokens to be expired", () => Date.now() / 1000 > exp + 7, (SHORT + 20) * 1000);
  for (const [page, user] of [[D, "dan"], [E, "eve"]]) {
    assert.equal(await page.getByTestId("ws-status").getAttribute("data-state"), "live", `${user}'s socket is live`);
    assert.equal(await page.locator('#frames > li[data-name="close"]').count(), 0, `${user}'s socket was never closed`);
    assert.equal(await page.locator('#frames > li[data-dir="in"][data-name="hello"]').count(), 1, `${user}'s page never reconnected`);
    const token = await page.evaluate(() => sessionStorage.getItem("camsig.token"));
    assert.ok(claims(token).sub === user && claims(token).exp > exp + 60, `${user}'s page holds a fresh token`);
    assert.ok(await page.evaluate(async () => Array.isArray((await camsig.client.get("users?limit=1")).users)), `${user}'s REST calls use it`);
  }
  say("past the first tokens' exp, both pages are connected on refreshed tokens");

  // The panel keeps the last 200 lines.
  const kept = await B.evaluate(() => {
    for (let i = 0; i < 250; i++) camsig.frameLine("in", "ws", "test", "test", "{}", () => "{}");
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
