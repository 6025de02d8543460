"""Proves camsig's TURN credentials work with a real coturn and nothing else does:
coturn (use-auth-secret) runs on loopback with the secret the camsig nodes hold;
an allocation with the credential camsig hands out succeeds, one with a forged
credential or an expired username is refused (401); and two aiortc peers on two
nodes, gathering relay candidates only, call each other through the relay.

Usage: target/e2e/venv/bin/python tests/e2e/turn_call.py   (scripts/e2e sets it up)
"""

import asyncio
import os
import secrets
import shutil
import subprocess
import sys
import time

from aioice import stun
from aioice.turn import create_turn_endpoint

from harness import WORK, Client, Cluster, T, camera_call, free_ports, say, sigterm_exits, turn_credential

TAG = "turn"
TURN_DIR = WORK / "turn"


class Coturn:
    """turnserver in the foreground on 127.0.0.1, TURN REST API auth, no TLS, no CLI."""

    def __init__(self, secret: str) -> None:
        (self.port,) = free_ports(1)
        shutil.rmtree(TURN_DIR, ignore_errors=True)
        TURN_DIR.mkdir(parents=True)
        self.log = TURN_DIR / "turnserver.log"
        self.proc = subprocess.Popen(
            [
                "turnserver", "-n",  # no config file
                "--listening-ip", "127.0.0.1", "--relay-ip", "127.0.0.1",
                "--listening-port", str(self.port),
                "--min-port", "40000", "--max-port", "40999",
                "--use-auth-secret", f"--static-auth-secret={secret}", "--realm", "camsig.test",
                "--fingerprint", "--no-tls", "--no-dtls", "--no-tcp-relay",
                "--allow-loopback-peers", "--no-cli", "--no-rfc5780",
                "--log-file", str(self.log), "--simple-log", "--no-stdout-log",
                "--pidfile", str(TURN_DIR / "turnserver.pid"),
            ],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(TURN_DIR / "turnserver.stderr", "w"),
        )

    @property
    def addr(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


async def allocate(turn: Coturn, username: str, password: str) -> tuple[str, int]:
    """A TURN Allocate over UDP; returns the relayed address or raises stun.TransactionFailed."""
    transport, _ = await create_turn_endpoint(asyncio.DatagramProtocol, turn.addr, username, password)
    try:
        return transport.get_extra_info("sockname")
    finally:
        transport.close()


async def refused(turn: Coturn, username: str, password: str) -> int:
    try:
        addr = await allocate(turn, username, password)
    except stun.TransactionFailed as e:
        return e.response.attributes["ERROR-CODE"][0]
    raise AssertionError(f"coturn allocated {addr} for {username!r} with a credential it should refuse")


async def main(turn: Coturn, secret: str, cluster: Cluster) -> None:
    # coturn is up once it answers; camsig's own credential is the control.
    await cluster.ready()
    owner = Client(cluster.url(0), cluster.token("ann"), "ann")
    viewer = Client(cluster.url(1), cluster.token("bob"), "bob")
    peers = []
    try:
        ice = await owner.get("iceServers")
        (server,) = ice["ice_servers"]
        assert server["urls"] == [f"turn:127.0.0.1:{turn.port}?transport=udp"], server
        expiry, user = server["username"].split(":", 1)
        assert user == "ann" and abs(int(expiry) - (time.time() + ice["ttl_s"])) < 30, server
        assert server["credential"] == turn_credential(secret, server["username"]), "camsig signs as coturn checks"

        async def coturn_up() -> bool:
            try:
                return bool(await allocate(turn, server["username"], server["credential"]))
            except (stun.TransactionTimeout, ConnectionError, OSError):
                return False
        end = time.monotonic() + T
        while not await coturn_up():
            assert turn.proc.poll() is None, f"turnserver exited; see {turn.log}"
            assert time.monotonic() < end, f"coturn never allocated; see {turn.log}"
            await asyncio.sleep(0.3)
        relayed = await allocate(turn, server["username"], server["credential"])
        assert relayed[0] == "127.0.0.1", relayed
        say(TAG, f"camsig's credential {server['username']!r}: allocated {relayed}")

        # Refusals: each differs from a valid credential in one thing only.
        future = f"{int(time.time()) + 600}:mallory"
        assert await allocate(turn, future, turn_credential(secret, future)), "a fresh, well-signed username works"
        forged = turn_credential("not-" + secret, future)
        assert await refused(turn, future, forged) == 401
        expired = f"{int(time.time()) - 60}:mallory"
        assert await refused(turn, expired, turn_credential(secret, expired)) == 401
        assert await refused(turn, server["username"] + "x", server["credential"]) == 401
        say(TAG, "coturn refuses forged (401), expired (401) and altered (401) credentials")

        # A call through the relay only.
        on = [(await owner.connect())["node_id"], (await viewer.connect())["node_id"]]
        assert on[0] != on[1], f"owner and viewer sessions are on different nodes: {on}"
        await owner.post("cameraOn")
        o, v = await camera_call(owner, viewer, relay_only=True, tag=TAG)
        peers += [o, v]
        for p in (o, v):
            assert p.sent and all(" typ relay" in c["candidate"] for c in p.sent), f"relay candidates only: {p.sent}"
        await asyncio.wait_for(v.enough.wait(), T)
        assert v.bar_frames >= 25, f"decoded pictures show the sent bar: {v.bar_frames} of {v.frames}"
        for name, p in (("owner", o), ("viewer", v)):
            pair = p.selected_pair()
            assert pair is not None, f"{name} has a nominated pair"
            assert (pair.local_candidate.type, pair.remote_candidate.type) == ("relay", "relay"), f"{name}: {pair}"
            say(TAG, f"{name}'s selected pair: relay {pair.local_addr} -> relay {pair.remote_addr}")
        say(TAG, f"viewer decoded {v.frames} frames through coturn on {on[0]} / {on[1]}")
    finally:
        for p in peers:
            await p.close()
        await owner.close()
        await viewer.close()


if __name__ == "__main__":
    sigterm_exits()
    assert shutil.which("turnserver"), "needs coturn (apt-get install coturn)"
    secret = secrets.token_hex(24)
    turn = Coturn(secret)
    cluster = Cluster(TAG, {
        "CAMSIG__ICE__TURN_URLS": f"turn:127.0.0.1:{turn.port}?transport=udp",
        "CAMSIG__ICE__TURN_SECRET": secret,
    })
    try:
        asyncio.run(main(turn, secret, cluster))
        say(TAG, "PASS")
    except BaseException as e:
        say(TAG, f"FAIL: {e!r} (logs: {cluster.logs}, {turn.log})")
        if os.environ.get("E2E_VERBOSE") and turn.log.exists():
            print(turn.log.read_text()[-4000:], file=sys.stderr)
        raise
    finally:
        cluster.close()
        turn.close()
    sys.exit(0)
