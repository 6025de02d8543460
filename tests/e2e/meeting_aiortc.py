"""Proves a three-member meeting (a mesh group call) works with real WebRTC
peers and camsig as their only signaling channel, across three nodes on one
Redis, and that members who leave or vanish drop out of it:

1. Ann, Bob and Cat each hold their WebSocket on, and send their REST calls
   to, a node of their own. Ann creates a meeting; the three join in turn.
   Each member is an app that reacts to its events only: on member_joined it
   builds the pair's RTCPeerConnection and offers (it owns the pair), on
   put_offer it answers, put_answer and put_ice go to the pair they name.
   Every member sends a generated video track to each other member, and each
   decodes at least 30 frames from each of the other two.
2. Bob leaves: Ann and Cat each hear hangup (reason `left`) then member_left
   (reason `left`) and close their pair with Bob; Ann and Cat still see each
   other.
3. Ann's node is SIGKILLed (and Ann's app stops): Cat hears hangup then
   member_left, both with reason `gone`, within presence ttl + grace + slack
   of the kill (the nodes run with ttl_s 2 and grace_s 1).

scripts/cluster is not used: it stops the whole cluster as soon as any node
exits. The test starts redis-server and the three nodes itself, with the same
command lines, so that it can kill one node.

Usage: target/e2e/venv/bin/python tests/e2e/meeting_aiortc.py   (scripts/e2e sets it up)
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

from aiortc import RTCSessionDescription

from harness import H, T, W, ApiError, BarTrack, Client, Nodes, Peer, say, sigterm_exits, until

TAG = "meeting_aiortc"
TTL_S, GRACE_S = 2, 1
SLACK_S = 5.0  # lease sweep (250 ms) twice, the leave step, and a loaded 2-core machine
MEDIA_T = 60.0  # six VP8 encoders and six decoders in Python on a small machine
FRAMES = 30


class Member:
    """One member's app: reacts to the events of its WebSocket, one RTCPeerConnection per other member."""

    def __init__(self, user: str, name: str, client: Client) -> None:
        self.user, self.name, self.client = user, name, client
        self.servers: list[dict] = []
        self.pairs: dict[str, Peer] = {}  # room_id -> the open pair
        self.other: dict[str, str] = {}  # room_id -> the other member, for every pair ever opened
        self.closed: dict[str, Peer] = {}  # room_id -> a pair closed on hangup
        self.log: list[tuple[str, dict]] = []  # every event handled (but update_user), in order
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        self.servers = (await self.client.get("iceServers"))["ice_servers"]
        self.task = asyncio.create_task(self._run())

    def check(self) -> None:
        """Raises what failed in the event loop, if anything."""
        if self.task is not None and self.task.done() and not self.task.cancelled() and self.task.exception():
            raise AssertionError(f"{self.user}'s app failed: {self.task.exception()!r}") from self.task.exception()

    def peer_with(self, user: str) -> Peer:
        rooms = [r for r, u in self.other.items() if u == user and r in self.pairs]
        assert len(rooms) == 1, f"{self.user} has one open pair with {user}: {rooms}"
        return self.pairs[rooms[0]]

    def events(self, action: str) -> list[dict]:
        return [d for a, d in self.log if a == action]

    async def _next(self) -> dict:
        c = self.client
        while not c.events:
            c.arrived.clear()
            await c.arrived.wait()
        return c.events.pop(0)

    async def _run(self) -> None:
        while True:
            e = await self._next()
            action = e.get("action", "").removeprefix("server-action:")
            data = e.get("data", {})
            if action == "update_user":
                continue
            self.log.append((action, data))
            if action == "member_joined":
                # The newcomer is our abonent: build the pair, send our video, offer.
                room = data["room_id"]
                assert room not in self.other, f"{self.user}: member_joined for a known room {room}"
                self.other[room] = data["user_id"]
                p = self.pairs[room] = Peer(self.client, room, self.servers, False)
                p.pc.addTrack(BarTrack())
                await p.pc.setLocalDescription(await p.pc.createOffer())
                await p.send_description("offer")
                say(TAG, f"{self.user}: {data['user_id']} joined; offered in {room}")
            elif action == "put_offer":
                room = data["room_id"]
                if room not in self.pairs:
                    # An earlier member offers in our pair with them: answer, with our video.
                    self.other[room] = data["user_id"]
                    self.pairs[room] = Peer(self.client, room, self.servers, False)
                p = self.pairs[room]
                await p.pc.setRemoteDescription(RTCSessionDescription(data["offer"]["sdp"], "offer"))
                if not p.pc.getSenders() or p.pc.getSenders()[0].track is None:
                    p.pc.addTrack(BarTrack())
                await p.pc.setLocalDescription(await p.pc.createAnswer())
                await p.send_description("answer")
                say(TAG, f"{self.user}: answered {data['user_id']} in {room}")
            elif action == "put_answer":
                p = self.pairs[data["room_id"]]
                await p.pc.setRemoteDescription(RTCSessionDescription(data["answer"]["sdp"], "answer"))
            elif action == "put_ice":
                p = self.pairs.get(data["room_id"])
                if p is not None:
                    await p.add_remote(data["candidate"])
            elif action == "hangup":
                p = self.pairs.pop(data["room_id"], None)
                if p is not None:
                    self.closed[data["room_id"]] = p
                    await p.close()
                say(TAG, f"{self.user}: hangup in {data['room_id']} from {data['user_id']} ({data.get('reason')})")
            elif action == "member_left":
                say(TAG, f"{self.user}: {data['user_id']} left the meeting ({data['reason']})")

    async def close_pairs(self) -> None:
        for room in list(self.pairs):
            p = self.pairs.pop(room)
            self.closed[room] = p
            await p.close()

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        for p in [*self.pairs.values(), *self.closed.values()]:
            try:
                await asyncio.wait_for(p.close(), 5)
            except Exception:
                pass
        try:
            await asyncio.wait_for(self.client.close(), 5)
        except Exception:
            pass


async def wait(what: str, members: list[Member], cond, timeout: float = T) -> None:
    async def ok() -> bool:
        for m in members:
            m.check()
        return cond()
    await until(what, ok, timeout)


def frames_from(m: Member, other: str) -> int:
    return m.peer_with(other).frames


async def main(nodes: Nodes) -> None:
    await nodes.ready()
    say(TAG, f"redis on {nodes.redis_port}, nodes on {nodes.ports}; logs in {nodes.logs}")
    spec = [("ann", "Ann"), ("bob", "Bob"), ("cat", "Cat")]
    members = [Member(u, n, Client(nodes.url(i), nodes.token(u), u)) for i, (u, n) in enumerate(spec)]
    ann, bob, cat = members
    try:
        for i, m in enumerate(members):
            hello = await m.client.connect()
            assert hello["node_id"] == nodes.node_id(i), f"{m.user}'s WebSocket is on {nodes.node_id(i)}: {hello}"
            await m.start()
        say(TAG, "three WebSockets open, one on each node")

        meeting = (await ann.client.post("meetings", {"title": "Standup"}))["meeting"]
        mid = meeting["meeting_id"]
        assert meeting["members"] == [] and meeting["created_by"] == "ann", meeting
        say(TAG, f"meeting {mid} created")

        joined: dict[str, dict] = {}
        for k, m in enumerate(members):
            reply = await m.client.post(f"meetings/{mid}/join", {"name": m.name})
            joined[m.user] = reply
            got = [x["user_id"] for x in reply["meeting"]["members"]]
            assert got == [x.user for x in members[: k + 1]], f"{m.user}'s join: members {got}"
            conns = reply["connections"]
            owners = [c["owner"] for c in conns]
            assert owners == [x.user for x in members[:k]], f"{m.user}'s join: one pair per earlier member, in order: {conns}"
            for c in conns:
                assert c["abonent"] == m.user and c["meeting_id"] == mid and c["state"] == "requested", c
            say(TAG, f"{m.user} joined on {nodes.node_id(k)}: pairs {[(c['owner'], c['room_id']) for c in conns]}")

        def pair_room(owner: str, abonent: str) -> str:
            return next(c["room_id"] for c in joined[abonent]["connections"] if c["owner"] == owner)

        # The mesh forms: each member decodes 30+ frames from each of the other two.
        def mesh_up() -> bool:
            for m in members:
                for o in members:
                    if o is not m and not any(u == o.user and r in m.pairs and m.pairs[r].frames >= FRAMES for r, u in m.other.items()):
                        return False
            return True
        start = time.monotonic()
        await wait("every member decoding 30 frames from each other member", members, mesh_up, MEDIA_T)
        say(TAG, f"mesh up in {time.monotonic() - start:.1f}s: " + ", ".join(
            f"{m.user}<-{o.user} {frames_from(m, o.user)}" for m in members for o in members if o is not m))

        # Every pair is the one the server gave, with the roles it gave.
        for owner, abonent in [("ann", "bob"), ("ann", "cat"), ("bob", "cat")]:
            room = pair_room(owner, abonent)
            o, a = next(x for x in members if x.user == owner), next(x for x in members if x.user == abonent)
            assert o.other.get(room) == abonent and a.other.get(room) == owner, f"pair {owner}->{abonent} is {room} on both sides"
            for m in (o, a):
                p = m.pairs[room]
                assert p.sizes == {(W, H)}, f"{m.user} decodes {W}x{H} in {room}: {p.sizes}"
                assert p.bar_frames >= FRAMES - 5, f"{m.user} decodes the sent picture in {room}: {p.bar_frames} of {p.frames}"
                pair = p.selected_pair()
                assert pair is not None and pair.remote_addr[0] == "127.0.0.1", f"media on loopback: {pair}"
            conn = await o.client.get(f"connections/{room}")
            assert conn["state"] == "answered" and conn["meeting_id"] == mid, conn
        # The events each member heard: member_joined from each newcomer, put_offer from each earlier member.
        for m, newcomers in [(ann, ["bob", "cat"]), (bob, ["cat"]), (cat, [])]:
            mj = m.events("member_joined")
            assert [d["user_id"] for d in mj] == newcomers, f"{m.user}'s member_joined: {mj}"
            for d in mj:
                assert d["meeting_id"] == mid and d["room_id"] == pair_room(m.user, d["user_id"]), d
                assert d["name"] == next(x.name for x in members if x.user == d["user_id"]), d
            offers = {d["user_id"]: d["room_id"] for d in m.events("put_offer")}
            assert offers == {c["owner"]: c["room_id"] for c in joined[m.user]["connections"]}, f"{m.user}'s offers: {offers}"
            assert not m.events("hangup") and not m.events("member_left"), m.log
        for i, m in enumerate(members):
            seen = await m.client.get(f"meetings/{mid}")
            assert [x["user_id"] for x in seen["members"]] == ["ann", "bob", "cat"], f"{m.user} on {nodes.node_id(i)}: {seen}"
        say(TAG, "roles, rooms, events and the meeting read all agree")

        # Bob leaves: Ann and Cat hear hangup, then member_left, both `left`, and close that pair.
        left = (await bob.client.post(f"meetings/{mid}/leave"))["meeting"]
        assert [x["user_id"] for x in left["members"]] == ["ann", "cat"], left
        await bob.close_pairs()
        bob_rooms = {"ann": pair_room("ann", "bob"), "cat": pair_room("bob", "cat")}
        await wait("member_left for bob at ann and cat", members,
                   lambda: all(m.events("member_left") for m in (ann, cat)))
        for m in (ann, cat):
            tail = [(a, d) for a, d in m.log if a in ("hangup", "member_left")]
            assert [a for a, _ in tail] == ["hangup", "member_left"], f"{m.user}: {tail}"
            hang, gone = tail[0][1], tail[1][1]
            assert hang["room_id"] == bob_rooms[m.user] and hang["user_id"] == "bob" and hang["reason"] == "left", hang
            assert gone == {"meeting_id": mid, "user_id": "bob", "reason": "left"}, gone
            assert bob_rooms[m.user] not in m.pairs, f"{m.user} closed the pair with bob"
            conn = await m.client.get(f"connections/{bob_rooms[m.user]}")
            assert conn["state"] == "closed", conn
        try:
            await bob.client.get(f"meetings/{mid}")
            raise AssertionError("bob could still read the meeting he left")
        except ApiError as e:
            assert e.status == 403, e
        say(TAG, "bob left: ann and cat heard hangup + member_left (left) and closed their pair with him")

        # Ann and Cat still see each other.
        base = {m.user: frames_from(m, o.user) for m, o in ((ann, cat), (cat, ann))}
        await wait("media still flowing between ann and cat", members,
                   lambda: frames_from(ann, "cat") >= base["ann"] + FRAMES and frames_from(cat, "ann") >= base["cat"] + FRAMES)
        say(TAG, "ann and cat still decode each other's video")

        # Ann's node dies and her app stops: Cat hears hangup + member_left, `gone`, within ttl + grace + slack.
        ann_room = pair_room("ann", "cat")
        nodes.kill(0)
        killed = time.monotonic()
        await ann.close()
        say(TAG, f"SIGKILLed {nodes.node_id(0)} (ann's node) and stopped ann's app")
        bound = TTL_S + GRACE_S + SLACK_S
        await wait("member_left (gone) for ann at cat", [cat],
                   lambda: any(d["user_id"] == "ann" for d in cat.events("member_left")), bound)
        took = time.monotonic() - killed
        tail = [(a, d) for a, d in cat.log if a in ("hangup", "member_left")][2:]
        assert [a for a, _ in tail] == ["hangup", "member_left"], f"cat after the kill: {tail}"
        hang, gone = tail[0][1], tail[1][1]
        assert hang["room_id"] == ann_room and hang["user_id"] == "ann" and hang["reason"] == "gone", hang
        assert gone == {"meeting_id": mid, "user_id": "ann", "reason": "gone"}, gone
        assert took >= GRACE_S, f"ann was gone {took:.1f}s after the kill, sooner than grace_s {GRACE_S}"
        assert ann_room not in cat.pairs and not cat.pairs, f"cat closed the pair with ann: {list(cat.pairs)}"
        seen = await cat.client.get(f"meetings/{mid}")
        assert [x["user_id"] for x in seen["members"]] == ["cat"], seen
        conn = await cat.client.get(f"connections/{ann_room}")
        assert conn["state"] == "closed", conn
        say(TAG, f"ann's node killed: cat heard hangup + member_left (gone) after {took:.1f}s (bound {bound:.0f}s)")

        await cat.client.post(f"meetings/{mid}/leave")
        cat.check()
        bob.check()
    finally:
        for m in members:
            await m.close()


if __name__ == "__main__":
    sigterm_exits()
    nodes = Nodes(TAG, 3, {
        "CAMSIG__PRESENCE__TTL_S": str(TTL_S),
        "CAMSIG__PRESENCE__GRACE_S": str(GRACE_S),
        "RUST_LOG": os.environ.get("RUST_LOG", "info"),
    })
    try:
        asyncio.run(main(nodes))
        say(TAG, "PASS")
    except BaseException as e:
        say(TAG, f"FAIL: {e!r} (logs: {nodes.logs})")
        raise
    finally:
        nodes.close()
    sys.exit(0)
