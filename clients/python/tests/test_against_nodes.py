"""The Python client against real camsig nodes: two node processes on one
redis-server, behind a small TCP balancer (a node that is gone is skipped,
as a load balancer's health check would). Run: python tests/test_against_nodes.py
(CAMSIG_BIN names the binary; redis-server must be installed)."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import aiohttp  # noqa: E402

import camsig  # noqa: E402

ROOT = HERE.parents[2]
BIN = os.environ.get("CAMSIG_BIN", str(ROOT / "target" / "debug" / "camsig"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Nodes:
    """redis-server and two camsig nodes, each on a free port."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.secret = secrets.token_hex(32)
        self.redis_port = free_port()
        self.redis = subprocess.Popen(["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
        self.env = {**os.environ, "CAMSIG__AUTH__JWT_SECRET": self.secret, "CAMSIG__REDIS__URL": f"redis://127.0.0.1:{self.redis_port}/",
                    "CAMSIG__PRESENCE__TTL_S": "3", "CAMSIG__PRESENCE__GRACE_S": "30", "RUST_LOG": "warn", **(env or {})}
        self.ports = [free_port(), free_port()]
        self.procs = [self._start(i) for i in range(2)]

    def _start(self, i: int) -> subprocess.Popen:
        env = {**self.env, "CAMSIG__SERVER__BIND": f"127.0.0.1:{self.ports[i]}", "CAMSIG__NODE__ID": f"py-{i}"}
        return subprocess.Popen([BIN], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def ready(self) -> None:
        async with aiohttp.ClientSession() as http:
            for port in self.ports:
                end = time.monotonic() + 30
                while True:
                    try:
                        async with http.get(f"http://127.0.0.1:{port}/readyz") as r:
                            if r.status == 200:
                                break
                    except aiohttp.ClientError:
                        pass
                    assert time.monotonic() < end, f"node on {port} never ready"
                    await asyncio.sleep(0.1)

    def token(self, user: str, ttl: int = 900) -> str:
        return subprocess.check_output([BIN, "token", user, "--ttl", str(ttl)], env=self.env, text=True).strip()

    def kill(self, i: int) -> None:
        self.procs[i].send_signal(signal.SIGKILL)
        self.procs[i].wait()

    def close(self) -> None:
        for p in [*self.procs, self.redis]:
            if p.poll() is None:
                p.kill()
                p.wait()


class Balancer:
    """Each new connection goes to the first backend that accepts it."""

    def __init__(self, ports: list[int]) -> None:
        self.ports, self.port = ports, free_port()
        # While set, new connections are refused: a client kept away.
        self.hold = False

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if self.hold:
            w.close()
            return
        for port in self.ports:
            try:
                br, bw = await asyncio.open_connection("127.0.0.1", port)
                break
            except OSError:
                continue
        else:
            w.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        try:
            await asyncio.gather(pipe(r, bw), pipe(br, w))
        except asyncio.CancelledError:
            pass  # the balancer closing

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def cand(i: int) -> dict:
    return {"candidate": f"candidate:{i} 1 udp 2122260223 127.0.0.1 {10000 + i} typ host", "sdpMid": "0", "sdpMLineIndex": 0}


OFFER = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\na=rtpmap:96 VP8/90000\r\n"
ANSWER = OFFER.replace("sendonly", "recvonly")


async def a_node_killed_mid_stream_loses_nothing(nodes: Nodes) -> None:
    """The viewer's node is SIGKILLed while the owner (on the other node)
    streams candidates, and the viewer is kept away meanwhile: it comes back
    through the balancer on the other node with `since`, and every
    candidate arrives once, in order."""
    lb = Balancer(nodes.ports)
    await lb.start()
    owner_url = f"http://127.0.0.1:{nodes.ports[1]}"
    async with camsig.Client(owner_url, token=nodes.token("py-owner")) as owner, camsig.Client(lb.url, token=nodes.token("py-viewer")) as viewer:
        await owner.camera_on({"label": "py"})
        shown = await viewer.camera_show("py-owner")
        room = shown["connection"]["room_id"]
        await owner.next_event("show_cam")
        await owner.offer(room, OFFER)
        ev = await viewer.next_event("put_offer")
        assert ev.data["offer"]["sdp"] == OFFER
        await viewer.answer(room, ANSWER)
        await owner.next_event("put_answer")
        got: list[dict] = []

        async def read() -> None:
            while len(got) < 200:
                ev = await viewer.next_event(timeout=30)
                if ev.action == "server-action:put_ice":
                    got.append(ev.data["candidate"])

        reader = asyncio.create_task(read())
        for i in range(200):
            if i == 60:
                lb.hold = True
                nodes.kill(0)  # the viewer's (the balancer's first choice)
            if i == 150:
                lb.hold = False
            await owner.ice(room, cand(i))
        await asyncio.wait_for(reader, 60)
        assert got == [cand(i) for i in range(200)], f"{len(got)} candidates, first wrong at {next((i for i, c in enumerate(got) if c != cand(i)), len(got))}"
        assert viewer.connects >= 2, f"the viewer never reconnected ({viewer.connects})"
        assert viewer.users["py-owner"]["camera"] == "on"
        try:
            await viewer.hangup("not-a-room")
            raise AssertionError("an unknown room was accepted")
        except camsig.ApiError as e:
            assert (e.status, e.code) == (404, "room_not_found"), e
    lb.server.close()


async def main() -> None:
    nodes = Nodes()
    try:
        await nodes.ready()
        await a_node_killed_mid_stream_loses_nothing(nodes)
        print("ok  a_node_killed_mid_stream_loses_nothing")
    finally:
        nodes.close()


if __name__ == "__main__":
    asyncio.run(main())
