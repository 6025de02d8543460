// libwebrtc's sample signaling client (examples/peerconnection/client/
// peer_connection_client.cc) in Node, byte for byte: HTTP/1.0, no Host header,
// a new TCP connection per request, the answer read until `\r\nContent-Length: `
// is satisfied, `\r\nPragma: ` found by exact (case-sensitive) match, and a
// hanging GET opened again after each answer. Used by pc_browser.mjs.

import net from "node:net";

// atoi: leading spaces, digits, whatever follows ignored; 0 if none.
export function atoi(buf) {
  const m = /^[ \t]*([+-]?\d+)/.exec(buf.toString("latin1"));
  return m ? parseInt(m[1], 10) : 0;
}

// GetHeaderValue: `pattern` found before the end of the headers.
function headerAt(data, eoh, pattern) {
  const found = data.indexOf(pattern);
  return found !== -1 && found < eoh ? found + pattern.length : -1;
}
function headerStr(data, eoh, name) {
  const begin = headerAt(data, eoh, Buffer.from(`\r\n${name}: `));
  if (begin === -1) return null;
  const end = data.indexOf("\r\n", begin);
  return data.subarray(begin, end === -1 ? eoh : end).toString("latin1");
}

// One answer as ReadIntoBuffer and ParseServerResponse read it.
export class Answer {
  constructor(raw) {
    this.raw = raw;
    const eoh = raw.indexOf("\r\n\r\n");
    const sp = raw.indexOf(" ");
    this.status = sp === -1 ? -1 : atoi(raw.subarray(sp + 1)); // GetResponseStatus
    this.statusLine = raw.subarray(0, raw.indexOf("\r\n")).toString("latin1");
    const cl = headerAt(raw, eoh, Buffer.from("\r\nContent-Length: "));
    this.contentLength = cl === -1 ? null : atoi(raw.subarray(cl));
    const pragma = headerAt(raw, eoh, Buffer.from("\r\nPragma: "));
    this.pragma = pragma === -1 ? null : atoi(raw.subarray(pragma));
    this.connection = headerStr(raw, eoh, "Connection");
    this.allowOrigin = headerStr(raw, eoh, "Access-Control-Allow-Origin");
    this.body = raw.subarray(eoh + 4);
    this.eoh = eoh;
  }
  header(name) { return headerStr(this.raw, this.eoh, name); }
  toString() { return JSON.stringify(this.raw.toString("latin1")); }
}

// What every answer of the sample server has and the sample client relies on.
export function checkAnswer(what, a) {
  if (a.status !== 200) throw new Error(`${what}: status ${a.status}, want 200; answer ${a}`);
  if (a.connection !== "close") throw new Error(`${what}: no \`\\r\\nConnection: close\`; answer ${a}`);
  if (a.allowOrigin !== "*") throw new Error(`${what}: no \`Access-Control-Allow-Origin: *\`; answer ${a}`);
  return a;
}

export class ClosedEarly extends Error {}

// One request on a new TCP connection; resolves to its Answer. `timeout` 0:
// wait as long as it takes (a hanging GET); `opened(socket)` hands the socket
// over, for the caller to close it early (the sample's hanging_get_->Close()).
export function exchange(port, request, { timeout = 20_000, opened = () => {} } = {}) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1");
    opened(socket);
    let data = Buffer.alloc(0);
    let done = false;
    const finish = (err, value) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy(); // the sample client closes on `Connection: close`
      err ? reject(err) : resolve(value);
    };
    const timer = timeout ? setTimeout(() => finish(new Error(`${JSON.stringify(request.toString("latin1").slice(0, 60))}: no whole answer within ${timeout} ms; have ${JSON.stringify(data.toString("latin1"))}`)), timeout) : null;
    socket.once("connect", () => socket.write(request));
    socket.on("data", (chunk) => {
      data = Buffer.concat([data, chunk]);
      const eoh = data.indexOf("\r\n\r\n");
      if (eoh === -1) return;
      const at = headerAt(data, eoh, Buffer.from("\r\nContent-Length: "));
      if (at === -1) return finish(new Error(`no \`\\r\\nContent-Length: \` in ${JSON.stringify(data.toString("latin1"))}`));
      const total = eoh + 4 + atoi(data.subarray(at));
      if (data.length > total) return finish(new Error(`${data.length - total} bytes after the body: ${JSON.stringify(data.toString("latin1"))}`));
      if (data.length === total) finish(null, new Answer(data));
    });
    socket.on("error", (e) => finish(e));
    socket.on("close", () => finish(new ClosedEarly(`${JSON.stringify(request.toString("latin1").slice(0, 60))}: closed after ${data.length} bytes, before a whole answer: ${JSON.stringify(data.toString("latin1"))}`)));
  });
}

// PeerConnectionClient: sign in, the hanging GET, messages one at a time, sign out.
export class PcClient {
  constructor(port, say) {
    this.port = port;
    this.say = say;
    this.myId = -1;
    this.peers = new Map();
    this.answers = []; // every hanging GET answer, in order
    this.reopened = 0;
    this.failure = null;
    this.waiting = false;
    this.hangSocket = null;
    this.sending = Promise.resolve();
  }

  async signIn(name) {
    const a = checkAnswer("sign_in", await exchange(this.port, Buffer.from(`GET /sign_in?${name} HTTP/1.0\r\n\r\n`)));
    if (a.pragma === null) throw new Error(`sign_in: no \`\\r\\nPragma: \`: ${a}`);
    this.myId = a.pragma;
    const lines = a.body.toString("utf8").split("\n");
    if (lines.at(-1) !== "") throw new Error(`sign_in: body does not end in a newline: ${a}`);
    if (lines[0] !== `${name},${this.myId},1`) throw new Error(`sign_in: first line is not \`${name},${this.myId},1\`: ${a}`);
    const entries = lines.slice(0, -1).map((l) => l.split(","));
    for (const [n, id] of entries.slice(1)) if (+id !== this.myId) this.peers.set(+id, n);
    this.signInAnswer = a;
    this.waiting = true;
    this.hanging = this.#hang();
    return entries;
  }

  async #hang() {
    while (this.waiting) {
      let a;
      try {
        a = await exchange(this.port, Buffer.from(`GET /wait?peer_id=${this.myId} HTTP/1.0\r\n\r\n`), { timeout: 0, opened: (s) => { this.hangSocket = s; } });
      } catch (e) {
        if (!this.waiting) return;
        if (e instanceof ClosedEarly && ++this.reopened <= 50) { // OnClose: the sample opens it again
          this.say(`hanging GET closed without an answer (${e.message}); opening it again`);
          await new Promise((r) => setTimeout(r, 50));
          continue;
        }
        this.failure = e;
        return;
      }
      try {
        checkAnswer("/wait", a);
        if (a.pragma === null) throw new Error(`/wait: no \`\\r\\nPragma: \`: ${a}`);
      } catch (e) { this.failure = e; return; }
      this.answers.push(a);
      if (a.pragma === this.myId) {
        const [n, id, connected] = a.body.toString("utf8").split(",");
        if (+connected) this.peers.set(+id, n); else this.peers.delete(+id);
      }
    }
  }

  check() { if (this.failure) throw this.failure; }

  // Messages go one at a time, in order (Conductor's pending_messages_).
  sendToPeer(peerId, message) {
    const body = Buffer.isBuffer(message) ? message : Buffer.from(message, "utf8");
    const req = Buffer.concat([Buffer.from(`POST /message?peer_id=${this.myId}&to=${peerId} HTTP/1.0\r\nContent-Length: ${body.length}\r\nContent-Type: text/plain\r\n\r\n`), body]);
    const p = this.sending.then(async () => checkAnswer(`POST /message to ${peerId}`, await exchange(this.port, req)));
    this.sending = p.catch(() => {});
    return p;
  }

  stopWaiting() {
    this.waiting = false;
    this.hangSocket?.destroy();
  }

  async signOut() {
    this.stopWaiting(); // SignOut(): the hanging GET is closed first
    await this.hanging?.catch(() => {});
    const a = checkAnswer("sign_out", await exchange(this.port, Buffer.from(`GET /sign_out?peer_id=${this.myId} HTTP/1.0\r\n\r\n`)));
    this.myId = -1;
    return a;
  }
}
