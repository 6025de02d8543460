/**
 * camsig's client for browsers and Node 18+ (pass `WebSocket` where the
 * platform has none): one socket held across reconnects with `since`, each
 * event once and in order, `update_user` ordered by `version`, a long poll
 * when the socket cannot be held, token refresh, and calls retried with one
 * `Idempotency-Key`. No runtime dependency.
 */

export interface UserState {
  user_id: string;
  online: boolean;
  camera: "on" | "off";
  version: number;
  updated_at?: string;
  meta?: unknown;
}

export interface CamsigEvent<T = any> {
  action: string;
  id?: string;
  data: T;
}

export class ApiError extends Error {
  constructor(public status: number, public code: string, message: string) {
    super(`${status} ${code}: ${message}`);
  }
}

export interface ClientOptions {
  baseUrl: string;
  token?: string;
  getToken?: () => string | Promise<string>;
  presence?: "all" | "watched" | "none";
  /** A WebSocket constructor, where the platform has none as a global. */
  WebSocket?: any;
  /** Failed sockets in a row before falling back to the long poll. */
  pollAfterFailures?: number;
  retries?: number;
}

type Handler = (ev: CamsigEvent) => void;

const RETRY = new Set([429, 503, 504]);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const jitter = (ms: number) => ms * (0.5 + Math.random());

export class CamsigClient {
  /** The directory as the events left it. */
  readonly users = new Map<string, UserState>();
  since: string | undefined;
  transport: "none" | "websocket" | "poll" = "none";
  /** Sockets opened so far (a reconnect adds one). */
  connects = 0;
  refreshes = 0;
  hello: any = {};

  private token: string | undefined;
  private handlers = new Map<string, Set<Handler>>();
  private seen = new Set<string>();
  private seenOrder: string[] = [];
  private ws: any;
  private closed = false;
  private connected!: Promise<void>;
  private markConnected!: () => void;
  private readonly opts: Required<Pick<ClientOptions, "presence" | "pollAfterFailures" | "retries">> & ClientOptions;

  constructor(opts: ClientOptions) {
    if (!opts.token && !opts.getToken) throw new Error("token or getToken is needed");
    this.opts = { presence: "all", pollAfterFailures: 3, retries: 8, ...opts, baseUrl: opts.baseUrl.replace(/\/$/, "") };
    this.token = opts.token;
    this.connected = new Promise((r) => (this.markConnected = r));
  }

  /** Loads the directory and opens the socket; resolves once it said hello. */
  async connect(): Promise<void> {
    if (!this.token) this.token = await this.opts.getToken!();
    await this.reloadUsers();
    void this.run();
    await this.connected;
  }

  close(): void {
    this.closed = true;
    try {
      this.ws?.close();
    } catch {}
  }

  /** `on("put_offer", fn)`; returns a function that removes it. `"*"` hears every event. */
  on(action: string, fn: Handler): () => void {
    const name = action === "*" || action.startsWith("server-action:") ? action : `server-action:${action}`;
    if (!this.handlers.has(name)) this.handlers.set(name, new Set());
    this.handlers.get(name)!.add(fn);
    return () => this.handlers.get(name)!.delete(fn);
  }

  /** The next event of `action` (short or full name). */
  next(action: string, timeoutMs = 30000, pred: (d: any) => boolean = () => true): Promise<CamsigEvent> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(new Error(`no ${action} within ${timeoutMs} ms`));
      }, timeoutMs);
      const off = this.on(action, (ev) => {
        if (!pred(ev.data)) return;
        clearTimeout(timer);
        off();
        resolve(ev);
      });
    });
  }

  // -- calls ----------------------------------------------------------------

  cameraOn(meta?: unknown) { return this.call("cameraOn", meta === undefined ? {} : { meta }); }
  cameraOff() { return this.call("cameraOff", {}); }
  cameraShow(userId: string) { return this.call("cameraShow", { user_id: userId }); }
  offer(roomId: string, sdp: string) { return this.call("offer", { room_id: roomId, offer: { type: "offer", sdp } }); }
  answer(roomId: string, sdp: string) { return this.call("answer", { room_id: roomId, answer: { type: "answer", sdp } }); }
  ice(roomId: string, candidate: unknown, dest?: "owner" | "abonent") { return this.call("ice", dest ? { room_id: roomId, candidate, dest } : { room_id: roomId, candidate }); }
  hangup(roomId: string, reason?: string) { return this.call("hangup", reason ? { room_id: roomId, reason } : { room_id: roomId }); }
  createMeeting(title?: string, maxMembers?: number) { return this.call("meetings", { ...(title ? { title } : {}), ...(maxMembers ? { max_members: maxMembers } : {}) }); }
  joinMeeting(id: string, name: string) { return this.call(`meetings/${encodeURIComponent(id)}/join`, { name }); }
  leaveMeeting(id: string) { return this.call(`meetings/${encodeURIComponent(id)}/leave`, {}); }
  iceServers() { return this.get("iceServers"); }

  /** POST `/webrtc/<op>`: one logical call, retried with one key. */
  call(op: string, body: unknown): Promise<any> {
    const key = (globalThis as any).crypto?.randomUUID?.() ?? `${Date.now()}-${Math.random()}`;
    return this.request("POST", op, body, key);
  }

  get(path: string): Promise<any> {
    return this.request("GET", path, undefined, undefined);
  }

  private async request(method: string, path: string, body: unknown, key: string | undefined): Promise<any> {
    for (let attempt = 0; ; attempt++) {
      const headers: Record<string, string> = { Authorization: `Bearer ${this.token}` };
      if (body !== undefined) headers["Content-Type"] = "application/json";
      if (key) headers["Idempotency-Key"] = key;
      let wait = 200;
      try {
        const r = await fetch(`${this.opts.baseUrl}/webrtc/${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
        const text = await r.text();
        const data = text ? JSON.parse(text) : {};
        if (r.ok) return data;
        const code = data?.error?.code ?? "unknown";
        if (r.status === 401 && this.opts.getToken && attempt < this.opts.retries) {
          this.token = await this.opts.getToken();
          continue;
        }
        if (!(RETRY.has(r.status) || code === "request_in_progress") || attempt >= this.opts.retries) {
          throw new ApiError(r.status, code, data?.error?.message ?? "");
        }
        wait = Number(r.headers.get("Retry-After") ?? "0.2") * 1000;
      } catch (e) {
        if (e instanceof ApiError || attempt >= this.opts.retries) throw e;
      }
      await sleep(jitter(Math.min(wait, 2000)));
    }
  }

  async reloadUsers(): Promise<void> {
    let cursor: string | undefined;
    do {
      const page = await this.get(`users?limit=200${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
      for (const u of page.users ?? []) this.applyUser(u);
      cursor = page.next_cursor ?? undefined;
    } while (cursor);
  }

  // -- the event stream -------------------------------------------------------

  private applyUser(u: UserState): boolean {
    const old = this.users.get(u.user_id);
    if (old && old.version >= u.version) return false;
    this.users.set(u.user_id, u);
    return true;
  }

  private emit(ev: CamsigEvent): void {
    for (const name of [ev.action, "*"]) for (const fn of [...(this.handlers.get(name) ?? [])]) fn(ev);
  }

  /** Hands an event on once; returns what the loop must do. */
  private async deliver(raw: any): Promise<"reconnect" | "refresh" | undefined> {
    const action: string = raw.action ?? "";
    const data = raw.data ?? {};
    const name = action.replace(/^server-action:/, "");
    if (name === "hello") {
      this.hello = data;
      if (this.since === undefined) this.since = data.last_id;
      this.markConnected();
      return;
    }
    if (name === "update_user") {
      if (!this.applyUser(data.user)) return;
    } else if (name === "resync") {
      this.since = data.last_id;
      this.seen.clear();
      this.seenOrder = [];
      await this.reloadUsers();
    } else if (name === "reconnect") {
      return "reconnect";
    } else if (name === "token_expiring") {
      return "refresh";
    }
    if (raw.id !== undefined) {
      if (this.seen.has(raw.id)) return;
      this.seen.add(raw.id);
      this.seenOrder.push(raw.id);
      if (this.seenOrder.length > 4096) this.seen.delete(this.seenOrder.shift()!);
      this.since = raw.id;
    }
    this.emit({ action, id: raw.id, data });
  }

  private async run(): Promise<void> {
    let failures = 0;
    while (!this.closed) {
      try {
        if (failures >= this.opts.pollAfterFailures) {
          await this.pollOnce();
          failures = this.opts.pollAfterFailures - 1; // the socket again next
          continue;
        }
        await this.holdSocket();
        failures = 0;
      } catch {
        failures++;
        if (this.opts.getToken) {
          try {
            this.token = await this.opts.getToken();
          } catch {}
        }
        await sleep(jitter(Math.min(100 * 2 ** failures, 5000)));
      }
    }
  }

  private holdSocket(): Promise<void> {
    const WS = this.opts.WebSocket ?? (globalThis as any).WebSocket;
    let url = `${this.opts.baseUrl.replace(/^http/, "ws")}/ws?token=${encodeURIComponent(this.token ?? "")}&presence=${this.opts.presence}`;
    if (this.since) url += `&since=${encodeURIComponent(this.since)}`;
    return new Promise((resolve, reject) => {
      const ws = new WS(url);
      this.ws = ws;
      let chain = Promise.resolve();
      let opened = false;
      ws.onopen = () => {
        opened = true;
        this.connects++;
        this.transport = "websocket";
      };
      ws.onmessage = (m: any) => {
        // One at a time, in order, even when a step awaits (a resync's reload).
        chain = chain.then(async () => {
          const raw = JSON.parse(typeof m.data === "string" ? m.data : String(m.data));
          if (!("action" in raw)) return; // a command's ack
          const todo = await this.deliver(raw);
          if (todo === "reconnect") ws.close();
          if (todo === "refresh" && this.opts.getToken) {
            this.token = await this.opts.getToken();
            ws.send(JSON.stringify({ cmd: "refresh", ack: `r${Date.now()}`, token: this.token }));
            this.refreshes++;
          }
        });
      };
      let settled = false;
      const settle = (ok: boolean, why: string) => {
        if (settled) return;
        settled = true;
        chain.then(() => (ok ? resolve() : reject(new Error(why))));
      };
      ws.onclose = (e: any) => {
        settle(this.closed || e.code === 1012 || e.code === 1001 || (opened && e.code === 1000), `closed ${e.code}`);
      };
      // Some implementations (Node 20's) report a failed or broken socket
      // with `error` and never `close`: that is a failure too.
      ws.onerror = () => {
        if (!opened) settle(false, "the socket failed");
        else setTimeout(() => settle(false, "the socket broke"), 1000);
      };
    });
  }

  private async pollOnce(): Promise<void> {
    const q = `events?timeout_s=25${this.since ? `&since=${encodeURIComponent(this.since)}` : ""}`;
    const r = await fetch(`${this.opts.baseUrl}/webrtc/${q}`, { headers: { Authorization: `Bearer ${this.token}` } });
    if (r.status !== 200) throw new Error(`long poll ${r.status}`);
    this.transport = "poll";
    this.markConnected();
    const page = await r.json();
    for (const raw of page.events ?? []) await this.deliver(raw);
    if (page.last_id && this.since === undefined) this.since = page.last_id;
  }
}
