"""A three-member mesh meeting through camsig's Python client
(`camsig.aiortc.Meeting`): three aiortc members, each on its own node of a
scripts/cluster, each sending a generated video track; every member decodes
30+ frames from each of the others. Then one leaves, and the others' calls
with it end.

Usage: target/e2e/venv/bin/python tests/e2e/meeting_client.py   (scripts/e2e sets it up)
"""

import asyncio
import sys

from aiortc.mediastreams import MediaStreamError

import camsig
from camsig.aiortc import Meeting

from harness import BarTrack, Cluster, T, picture_has_bar, say, sigterm_exits

TAG = "meeting_client"
USERS = ["ann", "bob", "cid"]


async def main(cluster: Cluster) -> None:
    await cluster.ready()
    clients = [camsig.Client(cluster.url(i), token=cluster.token(u)) for i, u in enumerate(USERS)]
    for c in clients:
        await c.start()
    frames = {u: {} for u in USERS}

    def watcher(me: str):
        def on_call(other: str, call) -> None:
            @call.pc.on("track")
            def on_track(track):
                async def receive() -> None:
                    while True:
                        try:
                            f = await track.recv()
                        except MediaStreamError:
                            return
                        if picture_has_bar(f):
                            frames[me][other] = frames[me].get(other, 0) + 1
                asyncio.ensure_future(receive())
        return on_call

    try:
        mid = (await clients[0].create_meeting(title="standup"))["meeting"]["meeting_id"]
        meetings = []
        for u, c in zip(USERS, clients):
            m = Meeting(c, mid, tracks=lambda: [BarTrack()], on_call=watcher(u))
            await m.join(u.title())
            meetings.append(m)
        say(TAG, f"three joined {mid}")

        async def mesh_up() -> None:
            while not all(frames[a].get(b, 0) >= 30 for a in USERS for b in USERS if a != b):
                await asyncio.sleep(0.1)
        await asyncio.wait_for(mesh_up(), T * 2)
        say(TAG, f"mesh up: {frames}")
        for m, u in zip(meetings, USERS):
            assert sorted(m.calls) == sorted(x for x in USERS if x != u), (u, list(m.calls))

        await meetings[2].leave()
        for m in meetings[:2]:
            async def gone(m=m) -> None:
                while "cid" in m.calls:
                    await asyncio.sleep(0.05)
            await asyncio.wait_for(gone(), T)
        say(TAG, "cid left: the others' calls with cid ended")
        for m in meetings[:2]:
            await m.close()
    finally:
        for c in clients:
            await c.close()


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
