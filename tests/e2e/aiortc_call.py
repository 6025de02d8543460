"""Proves two real WebRTC peers (aiortc) make a call with camsig as their only
signaling channel: the owner and the viewer hold their WebSockets and send their
REST calls to two different nodes of a scripts/cluster, the owner sends a
generated video track, and the viewer decodes at least 30 frames of it.

Usage: target/e2e/venv/bin/python tests/e2e/aiortc_call.py   (scripts/e2e sets it up)
"""

import asyncio
import sys

from harness import Client, Cluster, H, T, W, camera_call, say, sigterm_exits

TAG = "aiortc"


async def main(cluster: Cluster) -> None:
    await cluster.ready()
    owner = Client(cluster.url(0), cluster.token("ann"), "ann")
    viewer = Client(cluster.url(1), cluster.token("bob"), "bob")
    peers = []
    try:
        on = [(await owner.connect())["node_id"], (await viewer.connect())["node_id"]]
        assert on[0] != on[1], f"owner and viewer sessions are on different nodes: {on}"
        say(TAG, f"owner's WebSocket on {on[0]}, viewer's on {on[1]}")

        user = (await owner.post("cameraOn", {"meta": {"name": "Ann"}}))["user"]
        assert user["camera"] == "on"
        seen = await viewer.next("update_user", lambda d: d["user"]["user_id"] == "ann" and d["user"]["camera"] == "on")
        assert seen["data"]["user"]["version"] == user["version"]
        listed = (await viewer.get("users?camera=on"))["users"]
        assert [u["user_id"] for u in listed] == ["ann"], listed

        o, v = await camera_call(owner, viewer, tag=TAG)
        peers += [o, v]
        await asyncio.wait_for(v.enough.wait(), T)
        assert v.sizes == {(W, H)}, f"decoded frames are {W}x{H}: {v.sizes}"
        assert v.bar_frames >= 25, f"decoded pictures show the sent bar: {v.bar_frames} of {v.frames}"
        pair = v.selected_pair()
        assert pair is not None and pair.remote_addr[0] == "127.0.0.1", f"media on loopback: {pair}"
        say(TAG, f"viewer decoded {v.frames} frames of {W}x{H} over {pair}")

        # The owner turns the camera off: the viewer hears hangup with reason camera_off.
        await owner.post("cameraOff")
        bye = await viewer.next("hangup", lambda d: d["room_id"] == o.room)
        assert bye["data"]["reason"] == "camera_off", bye
        say(TAG, "camera off: the viewer heard hangup (camera_off)")
    finally:
        for p in peers:
            await p.close()
        await owner.close()
        await viewer.close()


if __name__ == "__main__":
    sigterm_exits()
    cluster = Cluster(TAG)
    try:
        asyncio.run(main(cluster))
        say(TAG, "PASS")
    except BaseException as e:
        say(TAG, f"FAIL: {e!r} (logs: {cluster.logs})")
        raise
    finally:
        cluster.close()
    sys.exit(0)
