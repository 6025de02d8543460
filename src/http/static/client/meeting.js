/**
 * CamsigMeeting: a mesh meeting, one CamsigCall per other member, in the
 * roles the server gives. A newcomer answers each earlier member's offer;
 * an earlier member offers to each newcomer on `member_joined`; a member
 * who left (`member_left`) has their call closed.
 */
import { CamsigCall } from "./call.js";
export class CamsigMeeting {
    constructor(client, meetingId, opts = {}) {
        this.client = client;
        this.meetingId = meetingId;
        this.opts = opts;
        /** Each other member's call, by user id. */
        this.calls = new Map();
        this.joined = false;
        this.servers = [];
        this.chain = Promise.resolve();
    }
    /** Joins as `name`; resolves once the server answered with our pairs. */
    async join(name) {
        // Listening first: earlier members offer as soon as the join is in, and
        // a newcomer may join before our reply comes.
        const early = [];
        let joined = false;
        this.off?.();
        this.off = this.client.on("*", (ev) => {
            if (!joined)
                early.push(ev);
            else
                this.route(ev);
        });
        let reply;
        try {
            reply = await this.client.joinMeeting(this.meetingId, name);
            this.servers = this.client.iceServersNow ?? (await this.client.iceServers()).ice_servers;
        }
        catch (e) {
            this.off();
            this.off = undefined;
            throw e;
        }
        this.meeting = reply.meeting;
        this.joined = true;
        for (const c of reply.connections) {
            if (c.state === "closed" || this.calls.has(c.owner))
                continue;
            this.add(c.owner, c.room_id, "abonent", early.filter((e) => e.data?.room_id === c.room_id));
        }
        joined = true;
        for (const ev of early)
            if (!this.callFor(ev.data?.room_id))
                this.route(ev);
        return reply;
    }
    /** Leaves: every pair closes for the others too. */
    async leave() {
        this.close();
        try {
            await this.client.leaveMeeting(this.meetingId);
        }
        catch (e) {
            if (e?.code !== "forbidden" && e?.code !== "meeting_not_found")
                throw e;
        }
    }
    /** Stops here without telling the server (the page is going away). */
    close() {
        this.joined = false;
        this.off?.();
        this.off = undefined;
        for (const call of this.calls.values())
            call.close("left");
        this.calls.clear();
    }
    callFor(room) {
        if (!room)
            return undefined;
        for (const c of this.calls.values())
            if (c.roomId === room)
                return c;
        return undefined;
    }
    add(userId, roomId, role, early = []) {
        this.calls.get(userId)?.close("replaced");
        const call = new CamsigCall(this.client, roomId, role, userId, this.servers, this.opts, early);
        this.calls.set(userId, call);
        this.opts.onCall?.(userId, call);
        void call.ended.then(() => {
            if (this.calls.get(userId) === call)
                this.calls.delete(userId);
        });
        return call;
    }
    /** member_joined and member_left, in order; room events go to each call itself. */
    route(ev) {
        const d = ev.data ?? {};
        if (d.meeting_id !== this.meetingId || !this.joined)
            return;
        const name = ev.action.replace(/^server-action:/, "");
        this.chain = this.chain
            .then(async () => {
            if (name === "member_joined") {
                if (this.callFor(d.room_id))
                    return;
                this.opts.onJoined?.(d.user_id, d.name);
                await this.add(d.user_id, d.room_id, "owner").offer();
            }
            else if (name === "member_left") {
                const call = this.calls.get(d.user_id);
                this.calls.delete(d.user_id);
                call?.close(d.reason ?? "left");
                this.opts.onLeft?.(d.user_id, d.reason ?? "left");
            }
        })
            .catch((e) => console.error(`camsig: meeting ${this.meetingId}:`, e));
    }
}
