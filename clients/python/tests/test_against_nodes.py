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

    def term(self, i: int) -> None:
        self.procs[i].send_signal(signal.SIGTERM)

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
        # Backends a health check took out (a draining node's /readyz is 503).
        self.down: set[int] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if self.hold:
            w.close()
            return
        for port in self.ports:
            if port in self.down:
                continue
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


async def until(what: str, cond, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def a_token_that_expires_is_refreshed_without_a_reconnect(nodes: Nodes) -> None:
    """A 6 s token, warned 5 s ahead: the client fetches a new one from
    `get_token` and sends `refresh`; the socket outlives the first token."""
    minted: list[int] = []

    async def get_token() -> str:
        minted.append(1)
        return nodes.token("py-refresh", 6 if len(minted) == 1 else 900)

    async with camsig.Client(f"http://127.0.0.1:{nodes.ports[1]}", get_token=get_token) as c, \
            camsig.Client(f"http://127.0.0.1:{nodes.ports[1]}", token=nodes.token("py-other")) as other:
        first = time.monotonic()
        await until("a refresh", lambda: c.refreshes >= 1)
        await until("the first token to expire", lambda: time.monotonic() > first + 7, 15)
        await other.camera_on()
        while True:
            u = (await c.next_event("update_user")).data["user"]
            if u["user_id"] == "py-other" and u["camera"] == "on":
                break
        assert c.connects == 1, f"reconnected {c.connects - 1} times"


async def a_since_too_old_takes_the_resync_path(nodes: Nodes) -> None:
    """`events.keep_max` 4: the viewer kept away while 20 candidates pass
    comes back to a log that no longer covers it, gets `resync`, and the
    client reloads the directory and says so."""
    lb = Balancer(nodes.ports)
    await lb.start()
    async with camsig.Client(f"http://127.0.0.1:{nodes.ports[1]}", token=nodes.token("rs-owner")) as owner, \
            camsig.Client(lb.url, token=nodes.token("rs-viewer")) as viewer:
        await owner.camera_on()
        room = (await viewer.camera_show("rs-owner"))["connection"]["room_id"]
        await owner.offer(room, OFFER)
        await viewer.next_event("put_offer")
        lb.hold = True
        nodes.kill(0)
        for i in range(20):
            await owner.ice(room, cand(i))
        await owner.camera_off()
        lb.hold = False
        await viewer.next_event("resync")
        await until("the directory reloaded", lambda: viewer.users.get("rs-owner", {}).get("camera") == "off")
    lb.server.close()


async def a_drain_moves_the_client_with_no_flicker(nodes: Nodes) -> None:
    """SIGTERM on the viewer's node: `reconnect`, 1012, and the client is on
    the other node at once; the owner sees no `update_user` of the viewer."""
    lb = Balancer(nodes.ports)
    await lb.start()
    async with camsig.Client(f"http://127.0.0.1:{nodes.ports[1]}", token=nodes.token("dr-owner")) as owner, \
            camsig.Client(lb.url, token=nodes.token("dr-viewer")) as viewer:
        await owner.camera_on()
        room = (await viewer.camera_show("dr-owner"))["connection"]["room_id"]
        await owner.next_event("show_cam")
        lb.down.add(nodes.ports[0])
        nodes.term(0)
        await until("the viewer on the other node", lambda: viewer.connects >= 2)
        await owner.ice(room, cand(1))
        ev = await viewer.next_event("put_ice")
        assert ev.data["candidate"] == cand(1)
        nodes.procs[0].wait(30)
        await owner.camera_off()
        while True:
            u = (await owner.next_event("update_user")).data["user"]
            assert u["user_id"] != "dr-viewer" or u["online"], f"the viewer flickered: {u}"
            if u["user_id"] == "dr-owner" and u["camera"] == "off":
                break
    lb.server.close()


async def a_kicked_client_stops(nodes: Nodes) -> None:
    """An operator disconnects the user: the client hands on `kicked` and
    stops, rather than knocking on the ban."""
    async with camsig.Client(f"http://127.0.0.1:{nodes.ports[0]}", token=nodes.token("kk-user")) as c:
        admin = subprocess.check_output([BIN, "token", "ops", "--admin"], env=nodes.env, text=True).strip()
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{nodes.ports[1]}/admin/users/kk-user/disconnect"
            async with http.post(url, json={"reason": "test", "ban_s": 60}, headers={"Authorization": f"Bearer {admin}"}) as r:
                assert r.status == 200, await r.text()
        ev = await c.next_event("kicked")
        assert ev.data == {"reason": "test"}, ev.data
        await until("the client to stop", lambda: c.kicked and c._ws is None)
        connects = c.connects
        await asyncio.sleep(1)
        assert c.connects == connects, "no reconnect after a kick"


async def run(name: str, test, env: dict[str, str] | None = None) -> None:
    nodes = Nodes(env)
    try:
        await nodes.ready()
        await test(nodes)
        print(f"ok  {name}", flush=True)
    finally:
        nodes.close()


async def main() -> None:
    await run("a_node_killed_mid_stream_loses_nothing", a_node_killed_mid_stream_loses_nothing)
    await run("a_token_that_expires_is_refreshed_without_a_reconnect", a_token_that_expires_is_refreshed_without_a_reconnect,
              {"CAMSIG__AUTH__REFRESH_BEFORE_S": "5"})
    await run("a_since_too_old_takes_the_resync_path", a_since_too_old_takes_the_resync_path, {"CAMSIG__EVENTS__KEEP_MAX": "4"})
    await run("a_drain_moves_the_client_with_no_flicker", a_drain_moves_the_client_with_no_flicker)
    await run("a_kicked_client_stops", a_kicked_client_stops)


if __name__ == "__main__":
    asyncio.run(main())
