// libwebrtc's sample signaling protocol (examples/peerconnection) through
// camsig's compatibility listener, from a browser the way the sample's
// server_test.html speaks it, and from a raw-TCP client the way
// peer_connection_client.cc does (pc_wire.mjs):
// - one dev-mode node with the compat listener on its own port;
// - a headless Chromium page on another origin (the node's normal port,
//   /healthz) signs in with XMLHttpRequest (cross-origin, its id read from the
//   body and `Pragma` with getResponseHeader), keeps a hanging GET with XHR,
//   and sends with a synchronous XHR POST /message, as server_test.html does;
// - the raw-TCP client signs in: its list has the page, and the page's
//   hanging GET hears `tcpclient,<id>,1`;
// - messages both ways, byte for byte (multi-line JSON, non-ASCII), each
//   with Pragma = the sender's id;
// - the client signs out: the page's hanging GET hears `tcpclient,<id>,0`;
//   the page signs out; OPTIONS answers 200 with the CORS headers;
// - the page logs no console error (the browser's own /favicon.ico aside).
//
// Usage: node tests/e2e/pc_browser.mjs   (scripts/e2e installs playwright-core and builds camsig)

import { mkdirSync, rmSync } from "node:fs";
import path from "node:path";
import assert from "node:assert/strict";
import { LAUNCH, T, WORK, chromium, freePorts, logger, newPage, ready, run, startDevNode, stopNode, until } from "./lib.mjs";
import { PcClient, checkAnswer, exchange } from "./pc_wire.mjs";

const LOGS = path.join(WORK, "logs/pc_browser");
const say = logger("pc_browser");
let node = null;
let browser = null;
let client = null;
let page = null;
let stopping = null;

function cleanup() {
  stopping ??= (async () => {
    client?.stopWaiting();
    if (browser) await browser.close().catch(() => {});
    await stopNode(node);
  })();
  return stopping;
}

// server_test.html's script, kept to its requests and callbacks; what it
// would trace goes to window.got (every hanging GET answer) instead.
function sampleScript(server) {
  window.server = server;
  window.request = null;
  window.hangingGet = null;
  window.my_id = -1;
  window.other_peers = {};
  window.got = [];
  window.signInAnswer = null;
  window.stopping = false;

  window.GetIntHeader = function (r, name) {
    const val = r.getResponseHeader(name);
    return val != null && val.length ? parseInt(val) : -1;
  };

  window.hangingGetCallback = function () {
    if (hangingGet.readyState != 4 || stopping) return;
    if (hangingGet.status != 200) {
      got.push({ kind: "error", status: hangingGet.status, text: hangingGet.statusText });
      disconnect();
    } else {
      const peer_id = GetIntHeader(hangingGet, "Pragma");
      if (peer_id == my_id) {
        const data = hangingGet.responseText;
        got.push({ kind: "notification", peer_id, data });
        const parsed = data.split(",");
        if (parseInt(parsed[2]) != 0) other_peers[parseInt(parsed[1])] = parsed[0];
        else delete other_peers[parseInt(parsed[1])];
      } else {
        got.push({ kind: "message", peer_id, data: hangingGet.responseText });
      }
    }
    if (hangingGet) {
      hangingGet.abort();
      hangingGet = null;
    }
    if (my_id != -1) window.setTimeout(startHangingGet, 0);
  };

  window.startHangingGet = function () {
    hangingGet = new XMLHttpRequest();
    hangingGet.onreadystatechange = hangingGetCallback;
    hangingGet.open("GET", server + "/wait?peer_id=" + my_id, true);
    hangingGet.send();
  };

  window.signIn = (localName) => new Promise((resolve, reject) => {
    request = new XMLHttpRequest();
    request.onreadystatechange = () => {
      if (request.readyState != 4) return;
      signInAnswer = { status: request.status, statusText: request.statusText, text: request.responseText, pragma: GetIntHeader(request, "Pragma") };
      if (request.status != 200) return reject(new Error(`sign_in: ${request.status} ${request.statusText}`));
      const peers = request.responseText.split("\n");
      my_id = parseInt(peers[0].split(",")[1]);
      for (let i = 1; i < peers.length; ++i) {
        if (peers[i].length > 0) {
          const parsed = peers[i].split(",");
          other_peers[parseInt(parsed[1])] = parsed[0];
        }
      }
      startHangingGet();
      request = null;
      resolve(signInAnswer);
    };
    request.open("GET", server + "/sign_in?" + localName, true);
    request.send();
  });

  // As the sample: a synchronous POST, Content-Type text/plain (no preflight).
  window.sendToPeer = function (peer_id, data) {
    const r = new XMLHttpRequest();
    r.open("POST", server + "/message?peer_id=" + my_id + "&to=" + peer_id, false);
    r.setRequestHeader("Content-Type", "text/plain");
    r.send(data);
    return { status: r.status, text: r.responseText, pragma: GetIntHeader(r, "Pragma") };
  };

  window.disconnect = function () {
    stopping = true;
    if (hangingGet) {
      hangingGet.abort();
      hangingGet = null;
    }
    let out = null;
    if (my_id != -1) {
      const r = new XMLHttpRequest();
      r.open("GET", server + "/sign_out?peer_id=" + my_id, false);
      r.send();
      out = { status: r.status, text: r.responseText };
      my_id = -1;
    }
    return out;
  };
}

async function main() {
  mkdirSync(WORK, { recursive: true });
  rmSync(LOGS, { recursive: true, force: true });
  mkdirSync(LOGS, { recursive: true });
  const [port, compat] = await freePorts(2);
  node = startDevNode(port, path.join(LOGS, "data"), path.join(LOGS, "node.log"), {
    CAMSIG__COMPAT__PEERCONNECTION__ENABLED: "true",
    CAMSIG__COMPAT__PEERCONNECTION__BIND: `127.0.0.1:${compat}`,
  });
  node.once("exit", (code, sig) => { if (!stopping) { say(`camsig exited early (${code ?? sig}); logs ${LOGS}`); process.exit(1); } });
  await ready(port);
  say(`node up: http ${port}, compat ${compat}`);
  const server = `http://127.0.0.1:${compat}`;

  browser = await chromium.launch(LAUNCH);
  page = await newPage(browser, say, "page", `http://127.0.0.1:${port}/healthz`, { width: 800, height: 600 });
  page.errors = [];
  page.on("console", (m) => { if (m.type() === "error" && !m.location().url.endsWith("/favicon.ico")) page.errors.push(`${m.location().url}: ${m.text()}`); });
  assert.notEqual(new URL(page.url()).origin, server, "the page is on another origin than the compat port");
  await page.evaluate(sampleScript, server);

  // The page signs in.
  const signIn = await page.evaluate(() => signIn("page"));
  const pageId = await page.evaluate(() => my_id);
  assert.equal(signIn.text, `page,${pageId},1\n`, `the page's sign-in lists itself only: ${JSON.stringify(signIn)}`);
  assert.equal(signIn.pragma, pageId, `the sign-in's Pragma (getResponseHeader, cross-origin) is the page's id: ${JSON.stringify(signIn)}`);
  say(`ok page signed in cross-origin from ${new URL(page.url()).origin}: id ${pageId}, ${JSON.stringify(signIn.text)}`);

  // The raw-TCP client signs in; the page hears of it.
  client = new PcClient(compat, (m) => say(`client: ${m}`));
  const entries = await client.signIn("tcpclient");
  const clientId = client.myId;
  assert.notEqual(clientId, pageId);
  assert.deepEqual(entries, [["tcpclient", String(clientId), "1"], ["page", String(pageId), "1"]], `the client's sign-in lists itself, then the page: ${client.signInAnswer}`);
  if (client.signInAnswer.statusLine !== "HTTP/1.1 200 Added") say(`note: sign_in status line ${JSON.stringify(client.signInAnswer.statusLine)} (the sample's: "HTTP/1.1 200 Added")`);
  say(`ok client signed in (HTTP/1.0, no Host): id ${clientId}, ${JSON.stringify(client.signInAnswer.body.toString())}`);
  const hello = await until("the page to hear of the client", () => page.evaluate(() => got.find((g) => g.kind !== "message")));
  assert.deepEqual(hello, { kind: "notification", peer_id: pageId, data: `tcpclient,${clientId},1\n` }, "the page's hanging GET: the client signed in");
  assert.equal(await page.evaluate((id) => other_peers[id], clientId), "tcpclient");
  say(`ok page's hanging GET: ${JSON.stringify(hello.data)}, Pragma ${hello.peer_id}`);

  // Page -> client, byte for byte, Pragma = the page's id.
  const toClient = '{\n   "sdp" : "v=0\\r\\no=- 4611731400430051336 2 IN IP4 127.0.0.1\\r\\ns=-\\r\\n",\n   "type" : "offer"\n}\nnon-ASCII: héllo ✓ 😀, quotes "\' and a tab\t.';
  const sent = await page.evaluate(([to, data]) => sendToPeer(to, data), [clientId, toClient]);
  assert.equal(sent.status, 200, `the page's POST /message: ${JSON.stringify(sent)}`);
  const m1 = await until("the client to get the page's message", () => { client.check(); return client.answers.find((a) => a.pragma !== clientId); });
  assert.equal(m1.pragma, pageId, `Pragma is the sender (page) id: ${m1}`);
  assert.ok(m1.body.equals(Buffer.from(toClient, "utf8")), `the client gets the page's message byte for byte: ${m1}`);
  assert.equal(m1.contentLength, Buffer.byteLength(toClient));
  say(`ok client's hanging GET: the page's ${m1.body.length}-byte message, byte for byte, Pragma ${m1.pragma}`);

  // Client -> page, byte for byte, Pragma = the client's id.
  const toPage = '{\n   "candidate" : "candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host",\n   "sdpMLineIndex" : 0,\n   "sdpMid" : "0"\n}\r\nzweite Zeile: grüße ✓\n';
  await client.sendToPeer(pageId, toPage);
  const m2 = await until("the page to get the client's message", () => page.evaluate(() => got.find((g) => g.kind === "message")));
  assert.deepEqual(m2, { kind: "message", peer_id: clientId, data: toPage }, "the page's hanging GET: the client's message, Pragma = the client's id");
  say(`ok page's hanging GET: the client's message, byte for byte, Pragma ${m2.peer_id}`);

  // The client signs out; the page hears it.
  const out = await client.signOut();
  say(`ok client signed out: ${out.statusLine}`);
  const bye = await until("the page to hear the client left", () => page.evaluate(() => got.filter((g) => g.kind !== "message")[1]));
  assert.deepEqual(bye, { kind: "notification", peer_id: pageId, data: `tcpclient,${clientId},0\n` }, "the page's hanging GET: the client signed out");
  assert.equal(await page.evaluate((id) => id in other_peers, clientId), false);
  say(`ok page's hanging GET: ${JSON.stringify(bye.data)}, Pragma ${bye.peer_id}`);
  const answers = await page.evaluate(() => got);
  assert.equal(answers.length, 3, `the page's hanging GET got three answers, no error: ${JSON.stringify(answers)}`);
  assert.equal(client.answers.length, 1, `the client's hanging GET got one answer: ${client.answers.map(String)}`);
  assert.equal(client.reopened, 0, "the client's hanging GETs were answered, never dropped");

  // The page signs out (synchronous XHR, as the sample's disconnect()).
  const pageOut = await page.evaluate(() => disconnect());
  assert.equal(pageOut?.status, 200, `the page's sign_out: ${JSON.stringify(pageOut)}`);
  say("ok page signed out");

  // OPTIONS (a browser's preflight) answers 200 with the CORS headers.
  const opt = checkAnswer("OPTIONS", await exchange(compat, Buffer.from(`OPTIONS /message?peer_id=${pageId}&to=${clientId} HTTP/1.0\r\n\r\n`)));
  const methods = opt.header("Access-Control-Allow-Methods") ?? "";
  for (const m of ["POST", "GET", "OPTIONS"]) assert.ok(methods.split(/,\s*/).includes(m), `OPTIONS: Access-Control-Allow-Methods has ${m}: ${opt}`);
  say(`ok OPTIONS: ${opt.statusLine}, Allow-Methods ${methods}, Allow-Headers ${opt.header("Access-Control-Allow-Headers")}`);

  assert.deepEqual(page.errors, [], "the page logged no console errors");
  const problems = page.problems.filter((p) => !p.includes("/favicon.ico") && !/^failed GET .*\/wait\?peer_id=\d+: net::ERR_ABORTED$/.test(p) && !p.startsWith("console error"));
  assert.deepEqual(problems, [], "the page saw no failed request (its own abort of the last hanging GET aside)");
  say(`ok page: no console errors; left aside: ${JSON.stringify(page.problems)}`);
}

run(say, main, cleanup, {
  logs: LOGS,
  onFail: async () => {
    if (page) say(`page: problems ${JSON.stringify(page.problems)}, errors ${JSON.stringify(page.errors)}, got ${JSON.stringify(await page.evaluate(() => window.got).catch(() => null))}`);
    if (client) say(`client: answers ${client.answers.map(String).join(" | ")}, failure ${client.failure}`);
  },
});
