/**
 * CamsigClient: one socket held across reconnects with `since`, each event
 * once and in order, `update_user` ordered by `version`, a long poll when the
 * socket cannot be held, token refresh, and calls sent over the socket with
 * acks (REST when there is none), retried with one idempotency key.
 */

import type { components } from "./openapi.js";

type Schemas = components["schemas"];
export type UserState = Schemas["UserState"];
export type Connection = Schemas["Connection"];
export type IceServer = Schemas["IceServer"];
export type IceCandidateInit = Schemas["IceCandidate"];
export type Meeting = Schemas["Meeting"];
export type ShowReply = Schemas["ShowReply"];
export type JoinReply = Schemas["JoinReply"];
export type ServerEvent = Schemas["Event"];
/** `put_offer`, `hangup`, ...: an event's name without `server-action:`. */
export type EventName = ServerEvent["action"] extends `server-action:${infer N}` ? N : never;
/** The event of one name, as the OpenAPI document types it. */
export type EventOf<N extends EventName> = Extract<ServerEvent, { action: `server-action:${N}` }>;

export type Status = "connecting" | "live" | "reconnecting" | "poll" | "closed";

/** What went over the wire, for a frames panel: `reply` is given for an outgoing call once it is answered. */
export interface Wire {
  dir: "out" | "in";
  kind: "rest" | "ws";
  name: string;
  method?: string;
  path?: string;
  body?: unknown;
  raw?: string;
}

export class ApiError extends Error {
  constructor(public status: number, public code: string, message: string) {
    super(message || `${status} ${code}`);
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
  /** Attempts of one call after its first. */
  retries?: number;
  /** `"rest"` sends every call over REST even while the socket is open. */
  commands?: "socket" | "rest";
  /** How long a command over the socket waits for its ack before it is retried. */
  ackTimeoutMs?: number;
  /** Told of every call and frame; may return a function that hears the reply. */
  onWire?: (w: Wire) => void | ((status: number, data: unknown) => void);
}

type Handler = (ev: any) => void;

/** The contract's status for each code, so an error over the socket looks like one over REST. */
const STATUS: Record<string, number> = {
  bad_request: 400, cannot_show_self: 400, unauthorized: 401, forbidden: 403, user_not_found: 404, room_not_found: 404,
  meeting_not_found: 404, not_found: 404, request_timeout: 408, payload_too_large: 413, invalid_sdp: 422,
  invalid_candidate: 422, idempotency_key_reused: 422, rate_limited: 429, unavailable: 503, outcome_unknown: 504, internal: 500,
};
const RETRY_STATUS = new Set([429, 503, 504]);
const retryable = (status: number, code: string) => RETRY_STATUS.has(status) || code === "request_in_progress";
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const jitter = (ms: number) => ms * (0.5 + Math.random());

export function newKey(): string {
  const c = (globalThis as any).crypto;
  if (c?.randomUUID) return c.randomUUID();
  const b: Uint8Array = c?.getRandomValues ? c.getRandomValues(new Uint8Array(16)) : Uint8Array.from({ length: 16 }, () => Math.floor(Math.random() * 256));
  b[6] = (b[6] & 15) | 64;
  b[8] = (b[8] & 63) | 128;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** Each REST call's socket command and path. */
const OPS: Record<string, { cmd: string; path: (b: any) => string; strip?: string[] }> = {
  cameraOn: { cmd: "cameraOn", path: () => "cameraOn" },
  cameraOff: { cmd: "cameraOff", path: () => "cameraOff" },
  cameraShow: { cmd: "cameraShow", path: () => "cameraShow" },
  offer: { cmd: "offer", path: () => "offer" },
  answer: { cmd: "answer", path: () => "answer" },
  ice: { cmd: "ice", path: () => "ice" },
  hangup: { cmd: "hangup", path: () => "hangup" },
  meetingCreate: { cmd: "meetingCreate", path: () => "meetings" },
  meetingJoin: { cmd: "meetingJoin", path: (b) => `meetings/${encodeURIComponent(b.meeting_id)}/join`, strip: ["meeting_id"] },
  meetingLeave: { cmd: "meetingLeave", path: (b) => `meetings/${encodeURIComponent(b.meeting_id)}/leave`, strip: ["meeting_id"] },
};

interface Pending {
  ws: any;
  resolve: (v: any) => void;
  reject: (e: any) => void;
}

export class CamsigClient {
  /** The directory as the events left it, newest `version` of each user. */
  readonly users = new Map<string, UserState>();
  /** Where the next socket or poll resumes from. */
  since: string | undefined;
  transport: "none" | "websocket" | "poll" = "none";
  status: Status = "connecting";
  /** Sockets opened so far (a reconnect adds one). */
  connects = 0;
  refreshes = 0;
  /** The last `hello`: `session_id`, `user_id`, `node_id`, `heartbeat_s`, `last_id`. */
  hello: any = {};
  /** The freshest `ice_servers` (from an event, or `iceServers()`). */
  iceServersNow: IceServer[] | undefined;

  private token: string | undefined;
  private handlers = new Map<string, Set<Handler>>();
  private statusHandlers = new Set<(s: Status, why?: string) => void>();
  private seen = new Set<string>();
  private seenOrder: string[] = [];
  private ws: any;
  private live = false; // the socket said hello
  private acks = new Map<string, Pending>();
  private ackSeq = 0;
  private closed = false;
  private connected!: Promise<void>;
  private markConnected!: () => void;
  private suspended: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  private readonly opts: Required<Pick<ClientOptions, "presence" | "pollAfterFailures" | "retries" | "commands" | "ackTimeoutMs">> & ClientOptions;

  constructor(opts: ClientOptions) {
    if (!opts.token && !opts.getToken) throw new Error("token or getToken is needed");
    this.opts = { presence: "all", pollAfterFailures: 3, retries: 8, commands: "socket", ackTimeoutMs: 10000, ...opts, baseUrl: opts.baseUrl.replace(/\/$/, "") };
    this.token = opts.token;
    this.connected = new Promise((r) => (this.markConnected = r));
  }

  /** The token calls and sockets carry now. */
  get currentToken(): string | undefined {
    return this.token;
  }

  /**
   * The token later calls and sockets carry: after the app sent `refresh`
   * itself with `command("refresh", { token })` (without `getToken`).
   */
  setToken(token: string): void {
    this.token = token;
  }

  /**
   * Drops the socket and opens none until `resume()`, as if the network were
   * gone (a page going offline; tests). Events missed meanwhile come on the
   * next socket, from `since`.
   */
  suspend(): void {
    if (this.suspended || this.closed) return;
    this.suspended = new Promise((r) => (this.wake = r));
    this.live = false;
    try {
      this.ws?.close();
    } catch {}
  }

  /** Opens the socket again after `suspend()`, with `since`. */
  resume(): void {
    const wake = this.wake;
    this.suspended = undefined;
    this.wake = undefined;
    wake?.();
  }

  /** Loads the directory and opens the socket; resolves once it said hello (or a poll answered). */
  async connect(): Promise<void> {
    if (!this.token) this.token = await this.opts.getToken!();
    await this.reloadUsers();
    void this.run();
    await this.connected;
  }

  close(why?: string): void {
    this.closed = true;
    this.live = false;
    this.resume();
    this.setStatus("closed", why);
    for (const p of this.acks.values()) p.reject(new Error("the client was closed"));
    this.acks.clear();
    try {
      this.ws?.close();
    } catch {}
  }

  /**
   * `on("put_offer", fn)`: each event of that name, once and in order; `"*"`
   * hears every event. Returns a function that removes the handler.
   */
  on<N extends EventName>(action: N, fn: (ev: EventOf<N>) => void): () => void;
  on(action: string, fn: Handler): () => void;
  on(action: string, fn: Handler): () => void {
    const name = action === "*" || action.startsWith("server-action:") ? action : `server-action:${action}`;
    if (!this.handlers.has(name)) this.handlers.set(name, new Set());
    this.handlers.get(name)!.add(fn);
    return () => this.handlers.get(name)?.delete(fn);
  }

  /** Told when the connection's state changes (for an app's "reconnecting…"). */
  onStatus(fn: (s: Status, why?: string) => void): () => void {
    this.statusHandlers.add(fn);
    return () => this.statusHandlers.delete(fn);
  }

  /** The next event of `action` that `pred` accepts. */
  next<N extends EventName>(action: N, timeoutMs?: number, pred?: (d: EventOf<N>["data"]) => boolean): Promise<EventOf<N>>;
  next(action: string, timeoutMs?: number, pred?: (d: any) => boolean): Promise<any>;
  next(action: string, timeoutMs = 30000, pred: (d: any) => boolean = () => true): Promise<any> {
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

  cameraOn(meta?: Record<string, unknown>): Promise<{ user: UserState }> {
    return this.call("cameraOn", meta === undefined ? {} : { meta });
  }
  cameraOff(): Promise<{ user: UserState }> {
    return this.call("cameraOff", {});
  }
  cameraShow(userId: string): Promise<ShowReply> {
    return this.call("cameraShow", { user_id: userId });
  }
  offer(roomId: string, sdp: string): Promise<{ connection: Connection }> {
    return this.call("offer", { room_id: roomId, offer: { type: "offer", sdp } });
  }
  answer(roomId: string, sdp: string): Promise<{ connection: Connection }> {
    return this.call("answer", { room_id: roomId, answer: { type: "answer", sdp } });
  }
  ice(roomId: string, candidate: IceCandidateInit, dest?: "owner" | "abonent"): Promise<unknown> {
    return this.call("ice", dest ? { room_id: roomId, candidate, dest } : { room_id: roomId, candidate });
  }
  hangup(roomId: string, reason?: string): Promise<{ connection: Connection }> {
    return this.call("hangup", reason ? { room_id: roomId, reason } : { room_id: roomId });
  }
  createMeeting(title?: string, maxMembers?: number): Promise<{ meeting: Meeting }> {
    return this.call("meetingCreate", { ...(title ? { title } : {}), ...(maxMembers ? { max_members: maxMembers } : {}) });
  }
  joinMeeting(meetingId: string, name: string): Promise<JoinReply> {
    return this.call("meetingJoin", { meeting_id: meetingId, name });
  }
  leaveMeeting(meetingId: string): Promise<{ meeting: Meeting }> {
    return this.call("meetingLeave", { meeting_id: meetingId });
  }
  getMeeting(meetingId: string): Promise<{ meeting: Meeting }> {
    return this.get(`meetings/${encodeURIComponent(meetingId)}`);
  }
  getConnection(roomId: string): Promise<Connection> {
    return this.get(`connections/${encodeURIComponent(roomId)}`);
  }
  async iceServers(): Promise<{ ice_servers: IceServer[]; ttl_s: number }> {
    const r = await this.get("iceServers");
    this.iceServersNow = r.ice_servers;
    return r;
  }

  /**
   * Watches users (a `?presence=watched` session): acked with their state now,
   * which `users` takes. Over the socket only; the list is the socket's, so
   * the app watches again after a reconnect (on `hello`).
   */
  async watch(userIds: string[]): Promise<UserState[]> {
    const r = await this.command("watch", { user_ids: userIds });
    for (const u of r.users ?? []) this.applyUser(u);
    return r.users ?? [];
  }
  async unwatch(userIds: string[]): Promise<void> {
    await this.command("unwatch", { user_ids: userIds });
  }

  /**
   * One logical call (`cameraOn`, `offer`, `meetingJoin`, ...): over the
   * socket with an ack while it is open, over REST otherwise, retried on
   * 429, 503, 504, `request_in_progress` and a lost socket, always with the
   * same idempotency key, so it takes effect once.
   */
  async call(op: string, body: Record<string, unknown>): Promise<any> {
    const spec = OPS[op];
    if (!spec) throw new Error(`unknown call ${op}`);
    const key = newKey();
    return this.retrying(() => {
      // A command whose socket went away before its ack rejects with a plain Error: retried.
      if (this.opts.commands === "socket" && this.live) return this.command(spec.cmd, { ...body, idempotency_key: key });
      const rest: Record<string, unknown> = { ...body };
      for (const f of spec.strip ?? []) delete rest[f];
      return this.request("POST", spec.path(body), rest, key);
    });
  }

  /** A GET under `/webrtc/`, retried on 429, 503 and network errors. */
  get(path: string): Promise<any> {
    return this.retrying(() => this.request("GET", path, undefined, undefined));
  }

  /**
   * Runs `attempt` until it answers: again after a new token on 401 (with
   * `getToken`), after `Retry-After` on 429, 503, 504 and
   * `request_in_progress`, and after a short backoff on any other failure
   * that is not an `ApiError`; at most `retries` times more.
   */
  private async retrying<T>(attempt: () => Promise<T>): Promise<T> {
    for (let n = 0; ; n++) {
      let wait = 200;
      try {
        return await attempt();
      } catch (e) {
        if (e instanceof ApiError) {
          if (e.status === 401 && this.opts.getToken && n < this.opts.retries) {
            this.token = await this.opts.getToken();
            continue;
          }
          if (!retryable(e.status, e.code) || n >= this.opts.retries) throw e;
          wait = (e as any).retryAfterMs ?? 200;
        } else if (n >= this.opts.retries) {
          throw e;
        }
      }
      await sleep(jitter(Math.min(wait, 2000)));
    }
  }

  /** One HTTP request; an error answer is an ApiError, a network failure a plain Error. */
  private async request(method: string, path: string, body: unknown, key: string | undefined): Promise<any> {
    const headers: Record<string, string> = { Authorization: `Bearer ${this.token}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (key) headers["Idempotency-Key"] = key;
    const reply = this.opts.onWire?.({ dir: "out", kind: "rest", name: path.split(/[/?]/)[0], method, path: `/webrtc/${path}`, body }) || undefined;
    let r: Response;
    try {
      r = await fetch(`${this.opts.baseUrl}/webrtc/${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (e) {
      reply?.(0, { error: String(e) });
      throw e;
    }
    const text = await r.text();
    let data: any = {};
    try {
      data = text ? JSON.parse(text) : {};
    } catch {}
    reply?.(r.status, data);
    if (r.ok) return data;
    const err = new ApiError(r.status, data?.error?.code ?? `http_${r.status}`, data?.error?.message ?? "");
    const after = r.headers.get("Retry-After");
    if (after) (err as any).retryAfterMs = Number(after) * 1000;
    throw err;
  }

  /** A command over the open socket; resolves with its ack's `result`. */
  command(cmd: string, fields: Record<string, unknown>): Promise<any> {
    const ws = this.ws;
    if (!ws || !this.live) return Promise.reject(new Error("no socket"));
    const ack = `c${++this.ackSeq}`;
    const shown = { ...fields };
    if (shown.token) shown.token = "…";
    const reply = this.opts.onWire?.({ dir: "out", kind: "ws", name: cmd, body: shown }) || undefined;
    return new Promise<any>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.acks.delete(ack);
        reject(new Error(`no ack for ${cmd} within ${this.opts.ackTimeoutMs} ms`));
      }, this.opts.ackTimeoutMs);
      this.acks.set(ack, {
        ws,
        resolve: (v) => {
          clearTimeout(timer);
          reply?.(200, v);
          resolve(v);
        },
        reject: (e) => {
          clearTimeout(timer);
          reply?.(e instanceof ApiError ? e.status : 0, { error: { code: e.code, message: e.message } });
          reject(e);
        },
      });
      ws.send(JSON.stringify({ cmd, ack, ...fields }));
    });
  }

  /** Reloads the directory (after `resync`, or on demand). */
  async reloadUsers(): Promise<void> {
    let cursor: string | undefined;
    do {
      const page = await this.get(`users?limit=200${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
      for (const u of page.users ?? []) this.applyUser(u);
      cursor = page.next_cursor ?? undefined;
    } while (cursor);
  }

  /** Takes a user's state if it is newer than the one held; says whether it was. */
  applyUser(u: UserState): boolean {
    const old = this.users.get(u.user_id);
    if (old && old.version >= u.version) return false;
    this.users.set(u.user_id, u);
    return true;
  }

  // -- the event stream -------------------------------------------------------

  private setStatus(s: Status, why?: string): void {
    if (this.status === s) return;
    this.status = s;
    for (const fn of [...this.statusHandlers]) fn(s, why);
  }

  private emit(ev: any): void {
    for (const name of [ev.action, "*"]) {
      for (const fn of [...(this.handlers.get(name) ?? [])]) {
        try {
          fn(ev);
        } catch (e) {
          console.error("camsig: a handler threw", e);
        }
      }
    }
  }

  /** Hands an event on once; returns what the loop must do. */
  private async deliver(raw: any): Promise<"reconnect" | "refresh" | "kicked" | undefined> {
    const action: string = raw.action ?? "";
    const data = raw.data ?? {};
    const name = action.replace(/^server-action:/, "");
    let todo: "reconnect" | "refresh" | "kicked" | undefined;
    if (name === "hello") {
      this.hello = data;
      if (this.since === undefined) this.since = data.last_id;
    } else if (name === "update_user") {
      if (!this.applyUser(data.user)) return;
    } else if (name === "resync") {
      this.since = data.last_id;
      this.seen.clear();
      this.seenOrder = [];
      await this.reloadUsers();
    } else if (name === "reconnect") {
      todo = "reconnect";
    } else if (name === "token_expiring") {
      todo = "refresh";
    } else if (name === "ice_servers") {
      this.iceServersNow = data.ice_servers;
    } else if (name === "kicked") {
      // An operator disconnected this user: the client stops (status
      // "closed", why "kicked") rather than knock on a ban; the app decides.
      todo = "kicked";
    }
    if (raw.id !== undefined) {
      if (this.seen.has(raw.id)) return;
      this.seen.add(raw.id);
      this.seenOrder.push(raw.id);
      if (this.seenOrder.length > 4096) this.seen.delete(this.seenOrder.shift()!);
      this.since = raw.id;
    }
    this.emit({ action, id: raw.id, data });
    return todo;
  }

  private async run(): Promise<void> {
    let failures = 0;
    while (!this.closed) {
      if (this.suspended) {
        await this.suspended;
        if (this.closed) return;
      }
      try {
        if (failures >= this.opts.pollAfterFailures) {
          await this.pollOnce();
          failures = this.opts.pollAfterFailures - 1; // the socket again next
          continue;
        }
        await this.holdSocket();
        failures = 0;
      } catch (e) {
        if (this.closed) return;
        failures++;
        this.setStatus(this.transport === "poll" ? "poll" : "reconnecting", String(e));
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
    if (this.status !== "live" && this.connects > 0) this.setStatus("reconnecting");
    const openReply = this.opts.onWire?.({ dir: "out", kind: "ws", name: "open", body: this.since ? { since: this.since } : {} }) || undefined;
    return new Promise((resolve, reject) => {
      const ws = new WS(url);
      this.ws = ws;
      let chain = Promise.resolve();
      let opened = false;
      ws.onopen = () => {
        opened = true;
        openReply?.(101, {});
        this.connects++;
        this.transport = "websocket";
      };
      ws.onmessage = (m: any) => {
        const text = typeof m.data === "string" ? m.data : String(m.data);
        let raw: any;
        try {
          raw = JSON.parse(text);
        } catch {
          return;
        }
        this.opts.onWire?.({ dir: "in", kind: "ws", name: String(raw.action ?? raw.cmd ?? "frame").replace(/^server-action:/, ""), body: raw.data ?? raw.result ?? raw.error, raw: text });
        // A command's reply goes to its caller at once, outside the event
        // chain: an event being handled may be the one waiting for it.
        if (raw.cmd === "ack" || raw.cmd === "error") {
          const p = this.acks.get(raw.ack);
          if (!p) return;
          this.acks.delete(raw.ack);
          if (raw.cmd === "ack") p.resolve(raw.result ?? {});
          else p.reject(new ApiError(STATUS[raw.error?.code] ?? 409, raw.error?.code ?? "error", raw.error?.message ?? ""));
          return;
        }
        // Events one at a time, in order, even when one awaits (a resync's reload).
        chain = chain.then(async () => {
          const isHello = raw.action === "server-action:hello";
          if (isHello) {
            this.live = true;
            this.setStatus("live");
            this.markConnected();
          }
          const todo = await this.deliver(raw);
          if (todo === "reconnect") {
            this.setStatus("reconnecting", "drain");
            ws.close();
          }
          if (todo === "kicked") this.close("kicked");
          if (todo === "refresh" && this.opts.getToken) {
            this.token = await this.opts.getToken();
            await this.command("refresh", { token: this.token }).catch(() => undefined);
            this.refreshes++;
          }
        }).catch((e) => console.error("camsig: an event failed", e));
      };
      let settled = false;
      const settle = (ok: boolean, why: string) => {
        if (settled) return;
        settled = true;
        if (this.ws === ws) this.live = false;
        for (const [ack, p] of this.acks) {
          if (p.ws === ws) {
            this.acks.delete(ack);
            p.reject(new SocketLost(why));
          }
        }
        chain.then(() => (ok ? resolve() : reject(new Error(why))));
      };
      ws.onclose = (e: any) => {
        this.opts.onWire?.({ dir: "in", kind: "ws", name: "close", body: { code: e.code, reason: e.reason } });
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
    this.setStatus("poll");
    this.markConnected();
    const page = await r.json();
    for (const raw of page.events ?? []) {
      const todo = await this.deliver(raw);
      if (todo === "refresh" && this.opts.getToken) this.token = await this.opts.getToken();
      if (todo === "kicked") return this.close("kicked");
    }
    if (page.last_id && this.since === undefined) this.since = page.last_id;
  }
}

/** A command's socket went away before its ack: the call is retried. */
class SocketLost extends Error {}
