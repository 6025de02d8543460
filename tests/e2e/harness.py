"""Shared parts of the Python end-to-end tests: a scripts/cluster run on free
ports, a camsig client (REST + WebSocket) and aiortc peers that signal only
through camsig. Media stays on loopback: aioice's host candidates are limited
to 127.0.0.1, which it leaves out by default."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import aiohttp
import aioice.ice
import av
from aiortc import (
    RTCConfiguration,
    RTCIceCandidate,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.sdp import candidate_from_sdp

ROOT = Path(__file__).resolve().parents[2]
WORK = Path(os.environ.get("E2E_WORK", ROOT / "target" / "e2e"))
CAMSIG_BIN = os.environ.get("CAMSIG_BIN", str(ROOT / "target" / "debug" / "camsig"))
T = 20.0  # seconds: ample for one step on a 2-core machine

# aioice skips 127.0.0.1 when it lists host addresses (aioice.ice.get_host_addresses);
# gather_candidates looks the function up in its module, so replacing it there is enough.
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"] if use_ipv4 else []

_t0 = time.monotonic()


def say(tag: str, msg: str) -> None:
    print(f"[{tag} {time.monotonic() - _t0:.1f}s] {msg}", flush=True)


def sigterm_exits() -> None:
    """Turn SIGTERM into SystemExit, so `finally` blocks stop what the test started."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def _free(port: int, kind: int = socket.SOCK_STREAM) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_ports(count: int, taken: tuple[int, ...] = ()) -> list[int]:
    """`count` consecutive ports free for TCP and UDP, below the usual ephemeral range."""
    while True:
        base = random.randrange(20000, 32000)
        ports = list(range(base, base + count))
        if any(p in taken for p in ports):
            continue
        if all(_free(p) and _free(p, socket.SOCK_DGRAM) for p in ports):
            return ports


class Cluster:
    """scripts/cluster (redis, three nodes, nginx) on free ports, with extra env for the nodes."""

    def __init__(self, name: str, env: dict[str, str] | None = None) -> None:
        self.logs = WORK / "logs" / name
        shutil.rmtree(self.logs, ignore_errors=True)
        self.secret = secrets.token_hex(32)
        self.lb, self.redis = free_ports(2)
        self.nodes = free_ports(3, (self.lb, self.redis))
        self.env = {**os.environ, "CAMSIG__AUTH__JWT_SECRET": self.secret, **(env or {})}
        self.proc = subprocess.Popen(
            [str(ROOT / "scripts" / "cluster")],
            env={**self.env, "CLUSTER_PORT": str(self.lb), "REDIS_PORT": str(self.redis),
                 "NODE_PORT": str(self.nodes[0]), "CAMSIG_BIN": CAMSIG_BIN, "CLUSTER_LOGS": str(self.logs)},
            stdin=subprocess.DEVNULL,
        )

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.nodes[i]}"

    async def ready(self) -> None:
        async with aiohttp.ClientSession() as http:
            for port in (self.lb, *self.nodes):
                async def up() -> bool:
                    async with http.get(f"http://127.0.0.1:{port}/readyz") as r:
                        return r.status == 200
                await until(f"readyz on {port}", up, 30)

    def token(self, user: str) -> str:
        # scripts/cluster sets a JWT secret: mint with the CLI, as an app's backend would.
        return subprocess.check_output([CAMSIG_BIN, "token", user, "--ttl", "900"], env=self.env, text=True).strip()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # scripts/cluster traps TERM and stops what it started
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


async def until(what: str, fn: Callable[[], Any], timeout: float = T) -> Any:
    end = time.monotonic() + timeout
    while True:
        try:
            v = await fn()
            if v:
                return v
        except (aiohttp.ClientError, OSError):
            pass
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


class ApiError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        self.status, self.body = status, body
        super().__init__(f"{status} {body}")


class Client:
    """One user on one node: REST calls and the events of one WebSocket."""

    def __init__(self, base: str, token: str, user: str) -> None:
        self.base, self.token, self.user = base, token, user
        self.http = aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"})
        self.events: list[dict] = []
        self.arrived = asyncio.Event()
        self.hello: dict | None = None
        self.ws = None
        self.reader: asyncio.Task | None = None

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.http.request(method, self.base + "/webrtc/" + path, json=body) as r:
            data = await r.json(content_type=None)
            if r.status >= 400:
                raise ApiError(r.status, data)
            return r.status, data

    async def post(self, path: str, body: Any = None) -> Any:
        return (await self.call("POST", path, body if body is not None else {}))[1]

    async def get(self, path: str) -> Any:
        return (await self.call("GET", path))[1]

    async def connect(self) -> dict:
        self.ws = await self.http.ws_connect(f"{self.base.replace('http', 'ws', 1)}/ws?token={self.token}", heartbeat=None)
        self.reader = asyncio.create_task(self._read())
        self.hello = (await self.next("hello"))["data"]
        return self.hello

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.events.append(json.loads(msg.data))
                self.arrived.set()

    async def next(self, action: str, pred: Callable[[dict], bool] = lambda d: True, timeout: float = T) -> dict:
        """The first unseen event `server-action:<action>` whose data matches; earlier others stay queued."""
        end = time.monotonic() + timeout
        while True:
            for i, e in enumerate(self.events):
                if e.get("action") == f"server-action:{action}" and pred(e.get("data", {})):
                    return self.events.pop(i)
            self.arrived.clear()
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.user}: no {action} event within {timeout} s; have {[e.get('action') for e in self.events]}")
            try:
                await asyncio.wait_for(self.arrived.wait(), left)
            except asyncio.TimeoutError:
                pass

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            self.reader.cancel()
        await self.http.close()


# ---------- media ----------

W, H, FPS = 320, 240, 30


class BarTrack(VideoStreamTrack):
    """A real video source: a white bar sweeping over a dark picture."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame(W, H, "yuv420p")
        y, u, v = frame.planes
        x = (self.n * 4) % (W - 64)
        row = bytearray([16]) * y.line_size
        row[x:x + 64] = b"\xeb" * 64
        y.update(bytes(row) * H)
        u.update(b"\x80" * u.buffer_size)
        v.update(b"\x80" * v.buffer_size)
        frame.pts, frame.time_base = pts, time_base
        self.n += 1
        return frame


class Nodes:
    """redis-server and `count` camsig nodes on loopback, as scripts/cluster starts them, each its own process.
    `per_node(i)` adds node i's own environment; `taken` are ports the caller holds for it."""

    def __init__(self, name: str, count: int, env: dict[str, str],
                 per_node: Callable[[int], dict[str, str]] = lambda i: {}, taken: tuple[int, ...] = ()) -> None:
        self.logs = WORK / "logs" / name
        shutil.rmtree(self.logs, ignore_errors=True)
        self.logs.mkdir(parents=True)
        self.secret = secrets.token_hex(32)
        self.redis_port, *self.ports = free_ports(count + 1, taken)
        self.env = {
            **os.environ,
            "CAMSIG__AUTH__JWT_SECRET": self.secret,
            "CAMSIG__REDIS__URL": f"redis://127.0.0.1:{self.redis_port}/",
            **env,
        }
        self.procs: list[subprocess.Popen] = []
        self.redis = self._spawn(
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.logs)],
            "redis.log", os.environ,
        )
        for i, port in enumerate(self.ports):
            self.procs.append(self._spawn(
                [CAMSIG_BIN], f"node{i + 1}.log",
                {**self.env, "CAMSIG__SERVER__BIND": f"127.0.0.1:{port}", "CAMSIG__NODE__ID": f"node{i + 1}", **per_node(i)},
            ))

    def _spawn(self, argv: list[str], log: str, env) -> subprocess.Popen:
        with open(self.logs / log, "w") as out:
            return subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.ports[i]}"

    def node_id(self, i: int) -> str:
        return f"node{i + 1}"

    async def ready(self) -> None:
        async with aiohttp.ClientSession() as http:
            for i in range(len(self.ports)):
                async def up() -> bool:
                    if self.procs[i].poll() is not None:
                        raise AssertionError(f"{self.node_id(i)} exited ({self.procs[i].returncode}); see {self.logs}")
                    async with http.get(f"{self.url(i)}/readyz") as r:
                        return r.status == 200
                await until(f"readyz on {self.node_id(i)}", up, 60)

    def token(self, user: str) -> str:
        return subprocess.check_output([CAMSIG_BIN, "token", user, "--ttl", "900"], env=self.env, text=True).strip()

    def kill(self, i: int) -> None:
        self.procs[i].send_signal(signal.SIGKILL)
        self.procs[i].wait(10)

    def close(self) -> None:
        for p in [*self.procs, self.redis]:  # redis last: nodes stop cleanly while it is there
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)


def picture_has_bar(frame: av.VideoFrame) -> bool:
    """The decoded picture is the sent one: bright bar pixels and dark background on one row."""
    plane = frame.planes[0]
    mid = bytes(plane)[(frame.height // 2) * plane.line_size:][: frame.width]
    return max(mid) > 180 and min(mid) < 60


# ---------- signaling through camsig ----------

def split_candidates(sdp: str) -> tuple[str, list[dict]]:
    """Takes the candidates out of aiortc's SDP, to trickle them through camsig's /ice instead."""
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
    # The mid line may come after the candidates within a section: fill it in.
    mids = re.findall(r"^a=mid:(\S+)", sdp, re.M)
    for c in cands:
        if c["sdpMid"] is None and c["sdpMLineIndex"] < len(mids):
            c["sdpMid"] = mids[c["sdpMLineIndex"]]
    return "\r\n".join(out) + "\r\n", cands


def ice_config(servers: list[dict], relay_only: bool) -> RTCConfiguration:
    ice = [RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential")) for s in servers]
    # iceServers=[] rather than None: None makes aiortc use a public STUN server.
    return RTCConfiguration(
        iceServers=ice,
        iceTransportPolicy=RTCIceTransportPolicy.RELAY if relay_only else RTCIceTransportPolicy.ALL,
    )


class Peer:
    """One side of a room: an aiortc peer connection that signals through a camsig client."""

    def __init__(self, client: Client, room: str, servers: list[dict], relay_only: bool) -> None:
        self.client, self.room = client, room
        self.pc = RTCPeerConnection(ice_config(servers, relay_only))
        self.sent: list[dict] = []
        self.frames = 0
        self.sizes: set[tuple[int, int]] = set()
        self.bar_frames = 0
        self.enough = asyncio.Event()
        self.receiver: asyncio.Task | None = None
        self.pump: asyncio.Task | None = None

        @self.pc.on("track")
        def on_track(track):
            self.receiver = asyncio.create_task(self._receive(track))

    async def _receive(self, track) -> None:
        while True:
            frame = await track.recv()
            self.frames += 1
            self.sizes.add((frame.width, frame.height))
            if picture_has_bar(frame):
                self.bar_frames += 1
            if self.frames >= 30:
                self.enough.set()

    async def send_description(self, kind: str) -> None:
        sdp, cands = split_candidates(self.pc.localDescription.sdp)
        await self.client.post(kind, {"room_id": self.room, kind: {"type": kind, "sdp": sdp}})
        for c in cands:
            await self.client.post("ice", {"room_id": self.room, "candidate": c})
            self.sent.append(c)
        await self.client.post("ice", {"room_id": self.room, "candidate": {"candidate": "", "sdpMid": cands[0]["sdpMid"] if cands else "0"}})

    async def add_remote(self, c: dict) -> None:
        if not c["candidate"]:
            await self.pc.addIceCandidate(None)
            return
        cand: RTCIceCandidate = candidate_from_sdp(c["candidate"].removeprefix("a=").removeprefix("candidate:"))
        cand.sdpMid, cand.sdpMLineIndex = c.get("sdpMid"), c.get("sdpMLineIndex")
        await self.pc.addIceCandidate(cand)

    def start_ice_pump(self) -> None:
        """Feeds put_ice events for this room to the peer connection, in order."""
        async def pump() -> None:
            while True:
                e = await self.client.next("put_ice", lambda d: d["room_id"] == self.room, timeout=3600)
                await self.add_remote(e["data"]["candidate"])
        self.pump = asyncio.create_task(pump())

    def selected_pair(self):
        """aioice's nominated pair of the first (bundled) transport."""
        ice = self.pc.getTransceivers()[0].receiver.transport.transport
        return ice._connection._nominated.get(1)

    async def close(self) -> None:
        for t in (self.receiver, self.pump):
            if t is not None:
                t.cancel()
        await self.pc.close()


async def camera_call(owner: Client, viewer: Client, relay_only: bool = False, tag: str = "call") -> tuple[Peer, Peer]:
    """The contract's flow: cameraShow, show_cam, offer, put_offer, answer, put_answer, ICE both ways."""
    show = await viewer.post("cameraShow", {"user_id": owner.user})
    room = show["connection"]["room_id"]
    e = await owner.next("show_cam", lambda d: d["room_id"] == room)
    assert e["data"]["user_id"] == viewer.user
    say(tag, f"room {room}: owner heard show_cam")

    owner_servers = (await owner.get("iceServers"))["ice_servers"]
    o = Peer(owner, room, owner_servers, relay_only)
    o.pc.addTrack(BarTrack())
    await o.pc.setLocalDescription(await o.pc.createOffer())  # aiortc gathers every candidate here
    await o.send_description("offer")

    v = Peer(viewer, room, show["ice_servers"], relay_only)
    offer = (await viewer.next("put_offer", lambda d: d["room_id"] == room))["data"]
    assert offer["user_id"] == owner.user
    await v.pc.setRemoteDescription(RTCSessionDescription(offer["offer"]["sdp"], "offer"))
    v.start_ice_pump()
    await v.pc.setLocalDescription(await v.pc.createAnswer())
    await v.send_description("answer")

    answer = (await owner.next("put_answer", lambda d: d["room_id"] == room))["data"]
    await o.pc.setRemoteDescription(RTCSessionDescription(answer["answer"]["sdp"], "answer"))
    o.start_ice_pump()
    say(tag, f"offer/answer done; {len(o.sent)} + {len(v.sent)} candidates trickled through camsig")
    return o, v


def turn_credential(secret: str, username: str) -> str:
    """The TURN REST API credential coturn's use-auth-secret checks."""
    return base64.b64encode(hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()).decode()

