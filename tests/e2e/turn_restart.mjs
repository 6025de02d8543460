// Proves a call outlives its first TURN credentials: two headless Chromium
// pages in relay-only mode (`?relay=1`) call through coturn, with camsig's
// `ice.turn_ttl_s` short. Once the first credentials have expired (the pages
// got `server-action:ice_servers` twice), coturn is restarted, which drops
// every allocation: the owner's page restarts ICE with the fresh credentials
// and the video plays again.
//
// Usage: node tests/e2e/turn_restart.mjs   (scripts/e2e installs playwright-core, coturn and builds camsig)

import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, openSync, rmSync } from "node:fs";
import path from "node:path";
import assert from "node:assert/strict";
import { LAUNCH, T, WORK, chromium, freePorts, live, logger, minter, newPage as openPage, ready, run, startCluster, stopCluster, until } from "./lib.mjs";

const say = logger("turn_restart");
const TTL_S = 6;
const logs = path.join(WORK, "logs/turn_restart");

let cluster = null;
let browser = null;
let turn = null;
let stopping = null;
function cleanup() {
  stopping ??= (async () => {
    if (browser) await browser.close().catch(() => {});
    if (turn && turn.exitCode === null) turn.kill("SIGKILL");
    await stopCluster(cluster);
  })();
  return stopping;
}

// coturn on loopback with the TURN REST API secret camsig signs with.
function startTurn(port, secret) {
  const out = openSync(path.join(logs, "turnserver.out"), "a");
  return spawn("turnserver", [
    "-n", "--listening-ip", "127.0.0.1", "--relay-ip", "127.0.0.1", "--listening-port", String(port),
    "--min-port", "41000", "--max-port", "41999",
    "--use-auth-secret", `--static-auth-secret=${secret}`, "--realm", "camsig.test",
    "--fingerprint", "--no-tls", "--no-dtls", "--no-tcp-relay", "--allow-loopback-peers", "--no-cli", "--no-rfc5780",
    "--log-file", path.join(logs, "turnserver.log"), "--simple-log", "--no-stdout-log",
  ], { stdio: ["ignore", out, out] });
}

async function stopTurn() {
  const exited = new Promise((r) => turn.once("exit", r));
  turn.kill("SIGKILL");
  await exited;
}

async function framesOf(page) {
  return page.getByTestId("remote-video-ann").evaluate((v) => v.getVideoPlaybackQuality().totalVideoFrames);
}
async function playing(page, what) {
  const a = await framesOf(page);
  await until(`${what}: frames decoded`, async () => (await framesOf(page)) > a + 10);
}

async function main() {
  rmSync(logs, { recursive: true, force: true });
  mkdirSync(logs, { recursive: true });
  const [lb, redis, turnPort] = await freePorts(3);
  const nodes = await freePorts(3, [lb, redis, turnPort]);
  const secret = randomBytes(32).toString("hex");
  const turnSecret = randomBytes(24).toString("hex");
  turn = startTurn(turnPort, turnSecret);
  const env = {
    ...process.env,
    CAMSIG__AUTH__JWT_SECRET: secret,
    CAMSIG__ICE__TURN_URLS: `turn:127.0.0.1:${turnPort}?transport=udp`,
    CAMSIG__ICE__TURN_SECRET: turnSecret,
    CAMSIG__ICE__TURN_TTL_S: String(TTL_S),
  };
  cluster = startCluster(env, { lb, redis, node: nodes[0], logs }, (code) => { if (!stopping) say(`scripts/cluster exited early (${code})`); });
  for (const port of [nodes[0], nodes[1]]) await ready(port);
  browser = await chromium.launch(LAUNCH);
  const token = minter(env);
  async function open(user, port) {
    const page = await openPage(browser, say, user, `http://127.0.0.1:${port}/?relay=1`, { width: 900, height: 700 });
    await page.getByTestId("token-form").waitFor({ state: "visible", timeout: T });
    await page.getByTestId("token").fill(token(user));
    await page.getByTestId("token-btn").click();
    say(`${user} signed in, WebSocket on ${await live(page)}`);
    return page;
  }
  const O = await open("ann", nodes[0]);
  const V = await open("bob", nodes[1]);
  await O.getByTestId("camera-btn").click();
  await O.locator('[data-testid="camera-btn"][data-state="on"]').waitFor({ timeout: T });
  await V.getByTestId("show-ann").click();
  await V.locator('[data-testid="view-ann"][data-state="live"]').waitFor({ timeout: T });
  await playing(V, "the call through coturn");
  const relayOnly = await V.evaluate(() => [...camsig.calls.values()][0].pc.getConfiguration().iceTransportPolicy);
  assert.equal(relayOnly, "relay");
  say("the call plays through coturn, relay only");

  // The first credentials are gone: two refreshes came (at 80 % and 160 % of the ttl).
  const firstUser = await O.evaluate(() => [...camsig.calls.values()][0].servers.find((s) => s.username)?.username);
  await until("two ice_servers refreshes on both pages", async () =>
    (await O.evaluate(() => camsig.iceRefreshes || 0)) >= 2 && (await V.evaluate(() => camsig.iceRefreshes || 0)) >= 2, 4 * TTL_S * 1000);
  const expiry = Number(firstUser.split(":")[0]);
  assert.ok(Date.now() / 1000 > expiry, `the first credentials (${firstUser}) have expired`);
  const freshUser = await O.evaluate(() => camsig.ice.servers.find((s) => s.username)?.username);
  assert.notEqual(freshUser, firstUser);
  say(`first credentials ${firstUser} expired; the pages hold ${freshUser}`);

  // Every allocation goes with coturn: only an ICE restart with fresh credentials brings the video back.
  await stopTurn();
  turn = startTurn(turnPort, turnSecret);
  say("coturn restarted: every relay allocation is gone");
  await until("the owner to restart ICE", async () => (await O.evaluate(() => camsig.iceRestarts || 0)) >= 1, 60_000);
  await until("the call to be connected again", async () =>
    (await V.evaluate(() => [...camsig.calls.values()][0]?.pc.connectionState)) === "connected", 60_000);
  await playing(V, "the call after the ICE restart");
  const restarts = await O.evaluate(() => camsig.iceRestarts);
  say(`the owner restarted ICE ${restarts} time(s); the video plays again through coturn`);
}

run(say, main, cleanup, { logs });
