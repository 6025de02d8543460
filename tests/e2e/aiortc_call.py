"""Proves two real WebRTC peers (aiortc) make a call with camsig as their only
signaling channel, through camsig's own Python client (clients/python): the
owner and the viewer hold their WebSockets and send their calls to two
different nodes of a scripts/cluster, the owner sends a generated video
track, and the viewer decodes at least 30 frames of it.

Usage: target/e2e/venv/bin/python tests/e2e/aiortc_call.py   (scripts/e2e sets it up)
"""

import asyncio
import sys

from aiortc.mediastreams import MediaStreamError

import camsig
from camsig.aiortc import Call

from harness import BarTrack, Cluster, H, T, W, picture_has_bar, say, sigterm_exits

TAG = "aiortc"


async def main(cluster: Cluster) -> None:
    await cluster.ready()
    async with camsig.Client(cluster.url(0), token=cluster.token("ann")) as owner, camsig.Client(cluster.url(1), token=cluster.token("bob")) as viewer:
        on = [owner.hello["node_id"], viewer.hello["node_id"]]
        assert on[0] != on[1], f"owner and viewer sessions are on different nodes: {on}"
        say(TAG, f"owner's WebSocket on {on[0]}, viewer's on {on[1]}")
        user = (await owner.camera_on({"name": "Ann"}))["user"]
        assert user["camera"] == "on"
        while True:
            seen = (await viewer.next_event("update_user", T)).data["user"]
            if seen["user_id"] == "ann" and seen["camera"] == "on":
                break
        assert seen["version"] == user["version"]
        assert viewer.users["ann"]["camera"] == "on"

        v = await Call.show(viewer, "ann")
        show = await owner.next_event("show_cam", T)
        assert show.data == {"room_id": v.room_id, "user_id": "bob"}, show.data
        o = await Call.for_owner(owner, v.room_id)
        o.pc.addTrack(BarTrack())

        frames, bars, sizes, enough = [0], [0], set(), asyncio.Event()

        @v.pc.on("track")
        def on_track(track):
            async def receive() -> None:
                while True:
                    try:
                        f = await track.recv()
                    except MediaStreamError:
                        return  # the call ended
                    frames[0] += 1
                    sizes.add((f.width, f.height))
                    bars[0] += picture_has_bar(f)
                    if frames[0] >= 30:
                        enough.set()
            asyncio.ensure_future(receive())

        await o.offer()
        await v.answer(T)
        say(TAG, f"offer/answer done; {len(o.sent)} + {len(v.sent)} candidates trickled through camsig")
        await asyncio.wait_for(enough.wait(), T)
        assert sizes == {(W, H)}, f"decoded frames are {W}x{H}: {sizes}"
        assert bars[0] >= 25, f"decoded pictures show the sent bar: {bars[0]} of {frames[0]}"
        say(TAG, f"viewer decoded {frames[0]} frames of {W}x{H}")

        # The owner turns the camera off: the viewer's call ends with reason camera_off.
        await owner.camera_off()
        await asyncio.wait_for(v.ended.wait(), T)
        assert v.hangup_reason == "camera_off", v.hangup_reason
        say(TAG, "camera off: the viewer's call ended (camera_off)")
        await o.close()


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
