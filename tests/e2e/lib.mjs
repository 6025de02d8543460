// Shared by the browser e2e tests (browser.mjs, meeting_browser.mjs, demo_states.mjs):
// paths, playwright-core, waiting, free ports, Chromium with fake cameras, one page
// per person, scripts/cluster, a dev-mode node, tokens, and the run-then-clean-up frame.

import { spawn, execFileSync } from "node:child_process";
import { mkdirSync, openSync } from "node:fs";
import { createRequire } from "node:module";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const WORK = process.env.E2E_WORK || path.join(ROOT, "target/e2e");
export const CAMSIG_BIN = process.env.CAMSIG_BIN || path.join(ROOT, "target/debug/camsig");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
// node_modules live under target/, out of the source tree.
export const { chromium } = createRequire(path.join(WORK, "node/package.json"))("playwright-core");

export const T = 20_000; // ms: ample for one step on a 2-core machine

// `say` for a test: each line with the test's name and the seconds since it began.
export function logger(name) {
  const t0 = Date.now();
  return (msg) => console.log(`[${name} ${((Date.now() - t0) / 1000).toFixed(1)}s] ${msg}`);
}

function listenable(port) {
  return new Promise((resolve) => {
    const s = net.createServer().once("error", () => resolve(false));
    s.listen(port, "127.0.0.1", () => s.close(() => resolve(true)));
  });
}
// A base port with `count` free ports after it (scripts/cluster puts its nodes on NODE_PORT..+2).
export async function freePorts(count, taken = []) {
  for (;;) {
    const base = 20000 + Math.floor(Math.random() * 20000);
    const ports = Array.from({ length: count }, (_, i) => base + i);
    if (ports.some((p) => taken.includes(p))) continue;
    if ((await Promise.all(ports.map(listenable))).every(Boolean)) return ports;
  }
}

export async function until(what, fn, ms = T) {
  const end = Date.now() + ms;
  for (;;) {
    try { const v = await fn(); if (v) return v; } catch { /* not yet */ }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

export const ready = (port) => until(`readyz on ${port}`, async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).ok, 30_000);

export const LAUNCH = {
  executablePath: CHROMIUM,
  headless: true,
  args: [
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    // Real host addresses in candidates (not mDNS names), so the filter below can keep loopback only.
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--no-sandbox",
  ],
};

// A fresh browser context (own storage, like another person's browser) on `url`.
// `page.problems` collects, from the first request on, what a page should never
// see: responses of 400 or more, failed requests, console errors, uncaught errors.
// `window.cameraOpens` counts getUserMedia calls (the camera opening).
export async function newPage(browser, say, user, url, viewport) {
  const ctx = await browser.newContext({ viewport, permissions: ["camera"] });
  // Keep media on loopback: drop remote candidates on any other address.
  await ctx.addInitScript(() => {
    const add = RTCPeerConnection.prototype.addIceCandidate;
    RTCPeerConnection.prototype.addIceCandidate = function (c, ...rest) {
      if (c && c.candidate && !/ 127\.0\.0\.1 /.test(c.candidate)) return Promise.resolve();
      return add.call(this, c, ...rest);
    };
    window.cameraOpens = 0;
    const media = navigator.mediaDevices;
    if (media?.getUserMedia) {
      const open = media.getUserMedia.bind(media);
      media.getUserMedia = (...args) => { window.cameraOpens++; return open(...args); };
    }
  });
  const page = await ctx.newPage();
  page.problems = [];
  page.on("pageerror", (e) => { page.problems.push(`uncaught ${e.message}`); say(`${user} page error: ${e.message}`); });
  page.on("console", (m) => { if (m.type() === "error") page.problems.push(`console error: ${m.text()}`); });
  page.on("response", (r) => { if (r.status() >= 400) page.problems.push(`${r.status()} ${r.request().method()} ${r.url()}`); });
  page.on("requestfailed", (r) => page.problems.push(`failed ${r.method()} ${r.url()}: ${r.failure()?.errorText}`));
  await page.goto(url);
  return page;
}

// Waits until the page's WebSocket is live; returns the node it is on.
export async function live(page) {
  await page.locator('[data-testid="ws-status"][data-state="live"]').waitFor({ timeout: T });
  return page.getByTestId("node-id").getAttribute("data-node");
}

// scripts/cluster (redis, three nodes from `node`, nginx on `lb`), with `env`.
export function startCluster(env, { lb, redis, node, logs }, onEarlyExit) {
  const cluster = spawn(path.join(ROOT, "scripts/cluster"), [], {
    env: { ...env, CLUSTER_PORT: String(lb), REDIS_PORT: String(redis), NODE_PORT: String(node), CAMSIG_BIN, CLUSTER_LOGS: logs },
    stdio: ["ignore", "inherit", "inherit"],
  });
  cluster.once("exit", onEarlyExit);
  return cluster;
}

export async function stopCluster(cluster) {
  if (!cluster || cluster.exitCode !== null) return;
  // scripts/cluster traps TERM and stops redis, the nodes and nginx.
  const exited = new Promise((r) => cluster.once("exit", r));
  cluster.kill("SIGTERM");
  await Promise.race([exited, new Promise((r) => setTimeout(r, 8000))]);
}

// One node as `cargo run` starts it: no secret (dev mode), so the page signs in by
// name. Its dev secret is kept in `dataDir`: a node started again on the same
// directory accepts the tokens the pages hold. Logs are appended to `logFile`.
export function startDevNode(port, dataDir, logFile, extraEnv = {}) {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("CAMSIG")));
  mkdirSync(dataDir, { recursive: true });
  mkdirSync(path.dirname(logFile), { recursive: true });
  const log = openSync(logFile, "a");
  return spawn(CAMSIG_BIN, [], {
    env: { ...env, CAMSIG__SERVER__BIND: `127.0.0.1:${port}`, CAMSIG__SERVER__DATA_DIR: dataDir, ...extraEnv },
    stdio: ["ignore", log, log],
  });
}

// SIGTERM (a node drains, then exits), SIGKILL if it is still there after `ms`.
export async function stopNode(node, ms = 15_000) {
  if (!node || node.exitCode !== null || node.signalCode !== null) return;
  const exited = new Promise((r) => node.once("exit", r));
  node.kill("SIGTERM");
  const timer = setTimeout(() => node.kill("SIGKILL"), ms);
  await exited;
  clearTimeout(timer);
}

// Signs a page in by name on a dev-mode node and waits for its WebSocket.
export async function devSignIn(page, name) {
  await page.getByTestId("dev-form").waitFor({ state: "visible", timeout: T });
  await page.getByTestId("name").fill(name);
  await page.getByTestId("signin-btn").click();
  return live(page);
}

// A node with a JWT secret has no dev tokens: mint with the CLI, to paste in the page.
export const minter = (env) => (user) => execFileSync(CAMSIG_BIN, ["token", user, "--ttl", "900"], { env }).toString().trim();

// Runs `main`, cleans up once (also on SIGINT/SIGTERM), and exits 0 or 1.
export async function run(say, main, cleanup, { logs, onFail = async () => {} }) {
  for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => cleanup().finally(() => process.exit(130)));
  let failed = false;
  try {
    await main();
    say("PASS");
  } catch (e) {
    failed = true;
    console.error(e);
    await onFail();
    say(`FAIL (logs: ${logs})`);
  } finally {
    await cleanup();
  }
  process.exit(failed ? 1 : 0);
}
