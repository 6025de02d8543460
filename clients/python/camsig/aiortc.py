"""An aiortc `RTCPeerConnection` bound to a camsig room (`pip install
camsig[aiortc]`): the offer or answer, trickled ICE with end of candidates,
renegotiation, and hangup."""

from __future__ import annotations

import asyncio
import re
from typing import Optional

from aiortc import RTCConfiguration, RTCIceCandidate, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp

from .client import Client, Event


def configuration(ice_servers: list[dict]) -> RTCConfiguration:
    """camsig's `ice_servers` as aiortc wants them (an empty list, not None:
    None makes aiortc use a public STUN server)."""
    return RTCConfiguration(iceServers=[RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential")) for s in ice_servers])


def split_candidates(sdp: str) -> tuple[str, list[dict]]:
    """aiortc gathers every candidate into its SDP: take them out, to trickle
    them through camsig instead."""
    out, cands, mid, index = [], [], None, -1
    for line in sdp.splitlines():
        if line.startswith("m="):
            index += 1
            mid = None
        elif line.startswith("a=mid:"):
            mid = line[6:]
        if line.startswith("a=candidate:"):
            cands.append({"candidate": line[2:], "sdpMid": mid, "sdpMLineIndex": index})
            continue
        if line == "a=end-of-candidates":
            continue
        out.append(line)
    mids = re.findall(r"^a=mid:(\S+)", sdp, re.M)
    for c in cands:
        if c["sdpMid"] is None and c["sdpMLineIndex"] < len(mids):
            c["sdpMid"] = mids[c["sdpMLineIndex"]]
    return "\r\n".join(out) + "\r\n", cands


class Call:
    """One side of a room. The owner calls `offer()`; the viewer, made with
    `Call.show(client, owner_id)`, calls `answer()`. Remote candidates,
    answers and renegotiating offers are applied as they come; `ended` is
    set on hangup (either side)."""

    def __init__(self, client: Client, room_id: str, role: str, ice_servers: Optional[list[dict]] = None, pc: Optional[RTCPeerConnection] = None, events=None):
        self.client, self.room_id, self.role = client, room_id, role
        self.pc = pc or RTCPeerConnection(configuration(ice_servers or []))
        self.sent: list[dict] = []
        self.ended = asyncio.Event()
        self.hangup_reason: Optional[str] = None
        self._events = events if events is not None else client.subscribe()
        self._pump: Optional[asyncio.Task] = None
        self._offered = asyncio.Event()

    @classmethod
    async def show(cls, client: Client, owner_id: str) -> "Call":
        """`cameraShow`: the viewer's side of a new room."""
        # Listening before the call: the offer may come before its answer does.
        events = client.subscribe()
        try:
            shown = await client.camera_show(owner_id)
        except BaseException:
            client.unsubscribe(events)
            raise
        call = cls(client, shown["connection"]["room_id"], "abonent", shown.get("ice_servers", []), events=events)
        call.start()
        return call

    @classmethod
    async def for_owner(cls, client: Client, room_id: str) -> "Call":
        """The owner's side of a room a viewer opened (`show_cam`)."""
        servers = (await client.ice_servers()).get("ice_servers", [])
        call = cls(client, room_id, "owner", servers)
        call.start()
        return call

    def start(self) -> None:
        if self._pump is None:
            self._pump = asyncio.create_task(self._run())

    async def offer(self) -> None:
        """Owner: the offer, then every candidate and the end of them."""
        self.start()
        await self.pc.setLocalDescription(await self.pc.createOffer())
        await self._send("offer")

    async def answer(self, timeout: float = 30) -> None:
        """Viewer: waits for the offer, answers, trickles."""
        self.start()
        await asyncio.wait_for(self._offered.wait(), timeout)

    async def hangup(self, reason: Optional[str] = None) -> None:
        if not self.ended.is_set():
            await self.client.hangup(self.room_id, reason)
        await self.close()

    async def close(self) -> None:
        self.ended.set()
        self.client.unsubscribe(self._events)
        if self._pump is not None and self._pump is not asyncio.current_task():
            self._pump.cancel()
        await self.pc.close()

    async def _send(self, kind: str) -> None:
        sdp, cands = split_candidates(self.pc.localDescription.sdp)
        if kind == "offer":
            await self.client.offer(self.room_id, sdp)
        else:
            await self.client.answer(self.room_id, sdp)
        for c in cands:
            await self.client.ice(self.room_id, c)
            self.sent.append(c)
        await self.client.ice(self.room_id, {"candidate": "", "sdpMid": cands[0]["sdpMid"] if cands else "0"})

    async def _run(self) -> None:
        while True:
            ev: Optional[Event] = await self._events.get()
            if ev is None:
                return
            d = ev.data
            if d.get("room_id") != self.room_id:
                continue
            name = ev.action.removeprefix("server-action:")
            if name == "put_offer":
                await self.pc.setRemoteDescription(RTCSessionDescription(d["offer"]["sdp"], "offer"))
                await self.pc.setLocalDescription(await self.pc.createAnswer())
                await self._send("answer")
                self._offered.set()
            elif name == "put_answer":
                await self.pc.setRemoteDescription(RTCSessionDescription(d["answer"]["sdp"], "answer"))
            elif name == "put_ice":
                await self._add_remote(d["candidate"])
            elif name == "hangup":
                self.hangup_reason = d.get("reason")
                await self.close()
                return

    async def _add_remote(self, c: dict) -> None:
        if not c.get("candidate"):
            await self.pc.addIceCandidate(None)
            return
        cand: RTCIceCandidate = candidate_from_sdp(c["candidate"].removeprefix("a=").removeprefix("candidate:"))
        cand.sdpMid, cand.sdpMLineIndex = c.get("sdpMid"), c.get("sdpMLineIndex")
        await self.pc.addIceCandidate(cand)


class Meeting:
    """A mesh meeting: one `Call` per other member, in the role the server
    gives (the newcomer answers each earlier member's offer; a member offers
    to each newcomer on `member_joined`). `tracks()` gives the local tracks
    for each new call; `on_call(user_id, call)` is told of each call before it
    negotiates (to watch its tracks). `calls` maps each other member to
    their call."""

    def __init__(self, client: Client, meeting_id: str, tracks=None, on_call=None):
        self.client, self.meeting_id = client, meeting_id
        self.tracks, self.on_call = tracks, on_call
        self.calls: dict[str, Call] = {}
        self._rooms: dict[str, Call] = {}
        self._task: Optional[asyncio.Task] = None
        self._servers: list[dict] = []

    async def join(self, name: str) -> dict:
        # Listening first: earlier members offer as soon as the join is in.
        events = self.client.subscribe()
        try:
            reply = await self.client.join_meeting(self.meeting_id, name)
            self._servers = (await self.client.ice_servers()).get("ice_servers", [])
        except BaseException:
            self.client.unsubscribe(events)
            raise
        for c in reply.get("connections", []):
            self._add(c["owner"], c["room_id"], "abonent")
        self._task = asyncio.create_task(self._run(events))
        return reply

    async def leave(self) -> None:
        await self.client.leave_meeting(self.meeting_id)
        await self.close()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for call in list(self.calls.values()):
            await call.close()

    def _add(self, user: str, room: str, role: str) -> Call:
        call = Call(self.client, room, role, self._servers, events=asyncio.Queue())
        for t in self.tracks() if self.tracks else []:
            call.pc.addTrack(t)
        if self.on_call:
            self.on_call(user, call)
        self.calls[user], self._rooms[room] = call, call
        call.start()
        return call

    async def _run(self, events: "asyncio.Queue[Optional[Event]]") -> None:
        try:
            while True:
                ev = await events.get()
                if ev is None:
                    return
                d, name = ev.data, ev.action.removeprefix("server-action:")
                if name == "member_joined" and d.get("meeting_id") == self.meeting_id:
                    await self._add(d["user_id"], d["room_id"], "owner").offer()
                elif name == "member_left" and d.get("meeting_id") == self.meeting_id:
                    call = self.calls.pop(d["user_id"], None)
                    if call is not None:
                        await call.close()
                elif d.get("room_id") in self._rooms:
                    self._rooms[d["room_id"]]._events.put_nowait(ev)
        finally:
            self.client.unsubscribe(events)
