/**
 * CamsigCall: an RTCPeerConnection bound to one camsig room, as its owner
 * (who offers) or its abonent (who answers). It trickles ICE with an end of
 * candidates, applies the other side's answers, offers and candidates in
 * order, restarts ICE on the freshest `ice_servers` when the connection
 * fails, and ends on a hangup from either side.
 */

import type { CamsigClient, IceServer } from "./client.js";

export interface CallOptions {
  /** Sent to the other side: the owner adds it before its offer, the abonent before its answer. */
  stream?: MediaStream;
  /** Passed to the RTCPeerConnection with the room's `iceServers`. */
  rtcConfig?: RTCConfiguration;
  /** An RTCPeerConnection constructor, where the platform has none as a global. */
  RTCPeerConnection?: any;
  /** ICE restarts the owner tries after `failed` before it hangs up with `ice_failed`. */
  maxRestarts?: number;
  /** Told of each remote stream as it comes. */
  onStream?: (stream: MediaStream) => void;
}

/** The events a call needs, kept from before the call knew its room. */
export type RoomEvent = { action: string; id?: string; data: any };

export class CamsigCall {
  readonly pc: RTCPeerConnection;
  /** Resolves with the reason once the call ended, from either side. */
  readonly ended: Promise<string>;
  isEnded = false;
  reason: string | undefined;
  /** ICE restarts made so far. */
  restarts = 0;
  remoteStream: MediaStream | undefined;
  /** Told of each remote stream as it comes (from `CallOptions.onStream`; may be set later). */
  onStream: ((stream: MediaStream) => void) | undefined;

  private endNow!: (reason: string) => void;
  private chain: Promise<unknown> = Promise.resolve();
  private off: () => void;
  private remoteSet = false;
  private pendingRemote: any[] = [];
  private out: any[] = [];
  private ready = false; // our offer or answer went out: candidates may follow
  private sending: Promise<unknown> = Promise.resolve();
  private mid = "0";
  private streamAdded = false;
  private restarting = false;
  private restartTimer: any;

  constructor(
    readonly client: CamsigClient,
    readonly roomId: string,
    readonly role: "owner" | "abonent",
    /** The user on the other side, when known. */
    readonly peerId?: string,
    iceServers?: IceServer[],
    private readonly opts: CallOptions = {},
    early: RoomEvent[] = [],
  ) {
    const PC = opts.RTCPeerConnection ?? (globalThis as any).RTCPeerConnection;
    this.pc = new PC({ ...(opts.rtcConfig ?? {}), iceServers: iceServers ?? client.iceServersNow ?? [] });
    this.ended = new Promise((r) => (this.endNow = r));
    this.onStream = opts.onStream;
    this.pc.onicecandidate = (e) => {
      const c = e.candidate ? e.candidate.toJSON() : { candidate: "", sdpMid: this.mid, sdpMLineIndex: 0 };
      this.out.push(c);
      this.flush();
    };
    this.pc.ontrack = (e) => {
      const s = e.streams[0] ?? new MediaStream([e.track]);
      if (s === this.remoteStream) return;
      this.remoteStream = s;
      this.onStream?.(s);
    };
    this.pc.onconnectionstatechange = () => this.connectionChanged();
    if (role === "owner") this.addStream();
    const offs = [
      client.on("*", (ev: RoomEvent) => {
        if (ev.data?.room_id === roomId) this.queue(ev);
      }),
      client.on("ice_servers", (ev) => {
        try {
          this.pc.setConfiguration({ ...this.pc.getConfiguration(), iceServers: ev.data.ice_servers as any });
        } catch {}
      }),
    ];
    this.off = () => offs.forEach((f) => f());
    for (const ev of early) this.queue(ev);
  }

  /**
   * The viewer's side: `cameraShow(ownerId)`, then a call that answers the
   * owner's offer. Events of the new room that come before the reply are kept.
   */
  static async show(client: CamsigClient, ownerId: string, opts: CallOptions = {}): Promise<CamsigCall> {
    const early: RoomEvent[] = [];
    const off = client.on("*", (ev: RoomEvent) => {
      if (ev.data?.room_id) early.push(ev);
    });
    try {
      const r = await client.cameraShow(ownerId);
      const room = r.connection.room_id;
      return new CamsigCall(client, room, "abonent", ownerId, r.ice_servers as IceServer[], opts, early.filter((e) => e.data.room_id === room));
    } finally {
      off();
    }
  }

  /** The owner's side of a room a viewer opened (`show_cam`): sends the offer. */
  static async accept(client: CamsigClient, showCam: { room_id: string; user_id: string }, opts: CallOptions = {}): Promise<CamsigCall> {
    const servers = client.iceServersNow ?? (await client.iceServers()).ice_servers;
    const call = new CamsigCall(client, showCam.room_id, "owner", showCam.user_id, servers, opts);
    await call.offer();
    return call;
  }

  /** Owner: the offer, then the candidates gathered meanwhile and after. */
  offer(iceRestart = false): Promise<void> {
    return this.serial(async () => {
      if (this.isEnded) return;
      this.ready = false;
      await this.pc.setLocalDescription(await this.pc.createOffer(iceRestart ? { iceRestart: true } : undefined));
      this.mid = this.pc.getTransceivers()[0]?.mid ?? "0";
      await this.client.offer(this.roomId, this.pc.localDescription!.sdp);
      this.ready = true;
      this.flush();
    });
  }

  /** Ends the call for both sides. */
  async hangup(reason?: string): Promise<void> {
    if (this.isEnded) return;
    this.close(reason ?? "hangup");
    try {
      await this.client.hangup(this.roomId, reason);
    } catch (e: any) {
      if (e?.code !== "room_closed" && e?.code !== "room_not_found") throw e;
    }
  }

  /** Ends the call here only (the room is left to the server). */
  close(reason = "closed"): void {
    if (this.isEnded) return;
    this.isEnded = true;
    this.reason = reason;
    clearTimeout(this.restartTimer);
    this.off();
    try {
      this.pc.close();
    } catch {}
    this.endNow(reason);
  }

  private addStream(): void {
    const s = this.opts.stream;
    if (!s || this.streamAdded) return;
    this.streamAdded = true;
    for (const t of s.getTracks()) this.pc.addTrack(t, s);
  }

  private serial(fn: () => Promise<void>): Promise<void> {
    const p = this.chain.then(fn);
    this.chain = p.catch(() => undefined);
    return p;
  }

  private queue(ev: RoomEvent): void {
    void this.serial(() => this.handle(ev)).catch((e) => console.error(`camsig: room ${this.roomId}:`, e));
  }

  private async handle(ev: RoomEvent): Promise<void> {
    if (this.isEnded) return;
    const d = ev.data;
    switch (ev.action.replace(/^server-action:/, "")) {
      case "put_offer":
        if (this.role !== "abonent") return;
        this.ready = false;
        await this.setRemote(d.offer);
        this.addStream();
        this.mid = this.pc.getTransceivers()[0]?.mid ?? "0";
        await this.pc.setLocalDescription(await this.pc.createAnswer());
        await this.client.answer(this.roomId, this.pc.localDescription!.sdp);
        this.ready = true;
        this.flush();
        break;
      case "put_answer":
        if (this.role !== "owner" || this.pc.signalingState !== "have-local-offer") return;
        await this.setRemote(d.answer);
        break;
      case "put_ice":
        if (this.remoteSet) await this.addRemote(d.candidate);
        else this.pendingRemote.push(d.candidate);
        break;
      case "hangup":
        this.close(d.reason ?? "hangup");
        break;
    }
  }

  private async setRemote(desc: RTCSessionDescriptionInit): Promise<void> {
    await this.pc.setRemoteDescription(desc);
    this.remoteSet = true;
    for (const c of this.pendingRemote.splice(0)) await this.addRemote(c);
  }

  private async addRemote(c: any): Promise<void> {
    try {
      if (!c?.candidate) await this.pc.addIceCandidate({ candidate: "", sdpMid: c?.sdpMid ?? this.mid, sdpMLineIndex: c?.sdpMLineIndex ?? 0 });
      else await this.pc.addIceCandidate(c);
    } catch {
      // A candidate of an older ICE generation, or one this side cannot use.
    }
  }

  /** Our candidates go out in order, and only after our offer or answer. */
  private flush(): void {
    if (!this.ready || this.isEnded) return;
    for (const c of this.out.splice(0)) {
      this.sending = this.sending
        .then(() => (this.isEnded ? null : this.client.ice(this.roomId, c)))
        .catch((e: any) => {
          if (e?.code === "room_closed") this.close("room_closed");
        });
    }
  }

  private connectionChanged(): void {
    if (this.isEnded) return;
    const s = this.pc.connectionState;
    clearTimeout(this.restartTimer);
    if (this.role !== "owner") return; // the owner offers, so the owner restarts
    if (s === "failed") void this.restart();
    if (s === "disconnected") this.restartTimer = setTimeout(() => this.pc.connectionState === "disconnected" && this.restart(), 2000);
  }

  /** An ICE restart on the freshest TURN credentials; past `maxRestarts`, a hangup. */
  private async restart(): Promise<void> {
    if (this.restarting || this.isEnded) return;
    if (this.restarts >= (this.opts.maxRestarts ?? 3)) return void this.hangup("ice_failed").catch(() => undefined);
    this.restarting = true;
    this.restarts++;
    try {
      // Fresh credentials: the ones the call began with may have expired.
      const fresh = await this.client.iceServers().catch(() => undefined);
      const servers = fresh?.ice_servers ?? this.client.iceServersNow ?? [];
      this.pc.setConfiguration({ ...this.pc.getConfiguration(), iceServers: servers as any });
      await this.offer(true);
    } catch (e) {
      console.error(`camsig: room ${this.roomId}: ICE restart failed`, e);
    } finally {
      this.restarting = false;
    }
  }
}
