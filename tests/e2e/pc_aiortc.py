"""libwebrtc's sample signaling protocol (examples/peerconnection: the
peerconnection_server / peerconnection_client wire) through camsig's
compatibility listener, with real WebRTC peers on two nodes of one Redis:

1. Two camsig nodes share a redis-server, each with its own compat port.
   Peer A signs in on node 1, peer B on node 2, each speaking the sample
   client's bytes exactly as peer_connection_client.cc does: HTTP/1.0, no
   Host header, a new TCP connection per request, the answer read until
   `\\r\\nContent-Length: ` is satisfied, `\\r\\nPragma: ` found by exact match,
   and a hanging GET (/wait) opened again after each answer.
2. A hears `bob,<id>,1` (Pragma = A's id); B's sign-in lists A.
3. A calls B as the sample's Conductor does: `{"type": "offer", "sdp": ...}`,
   `{"type": "answer", ...}` and one `{"sdpMid", "sdpMLineIndex",
   "candidate"}` message per candidate, in jsoncpp's StyledWriter layout.
   Both send a generated video track (harness.BarTrack) and each decodes 30+
   frames of the other's.
4. A hangs up with `BYE`: B's hanging GET gets exactly `BYE`, Pragma = A's
   id. B signs out: A's hanging GET gets `bob,<id>,0`.

Usage: target/e2e/venv/bin/python tests/e2e/pc_aiortc.py   (scripts/e2e sets it up)
"""

from __future__ import annotations

import asyncio
import json
import sys

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from aiortc.sdp import candidate_from_sdp

from harness import H, T, W, BarTrack, Nodes, free_ports, ice_config, picture_has_bar, say, sigterm_exits, split_candidates, until

TAG = "pc_aiortc"
MEDIA_T = 45.0  # two VP8 encoders and decoders in Python on a small machine
FRAMES = 30


# ---------- the nodes ----------

def compat_nodes() -> Nodes:
    """redis-server and two camsig nodes on it, each with the compat listener on its own port."""
    compat = free_ports(2)
    nodes = Nodes(TAG, 2, {}, lambda i: {
        "CAMSIG__COMPAT__PEERCONNECTION__ENABLED": "true",
        "CAMSIG__COMPAT__PEERCONNECTION__BIND": f"127.0.0.1:{compat[i]}",
    }, taken=tuple(compat))
    nodes.compat = compat
    return nodes


# ---------- peer_connection_client.cc's wire ----------

class WireError(AssertionError):
    pass


class Answer:
    """One answer as peer_connection_client.cc reads it (ReadIntoBuffer, ParseServerResponse)."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        eoh = raw.find(b"\r\n\r\n")
        self.head = raw[:eoh]
        # GetResponseStatus: atoi after the first space.
        sp = raw.find(b" ")
        self.status = atoi(raw[sp + 1:]) if sp != -1 else -1
        self.content_length = header_int(raw, eoh, b"\r\nContent-Length: ")
        self.pragma = header_int(raw, eoh, b"\r\nPragma: ")
        self.body = raw[eoh + 4:]

    def header(self, name: bytes) -> bytes | None:
        """GetHeaderValue's string form: the value after `\\r\\n<name>: ` up to the line's end."""
        return header_str(self.raw, self.raw.find(b"\r\n\r\n"), b"\r\n" + name + b": ")

    def __repr__(self) -> str:
        return repr(self.raw)


def atoi(b: bytes) -> int:
    s = b.lstrip(b" \t")
    n = 0
    sign = 1
    if s[:1] in (b"-", b"+"):
        sign = -1 if s[:1] == b"-" else 1
        s = s[1:]
    digits = 0
    for c in s:
        if not 48 <= c <= 57:
            break
        n = n * 10 + c - 48
        digits += 1
    return sign * n if digits else 0


def header_int(data: bytes, eoh: int, pattern: bytes) -> int | None:
    found = data.find(pattern)
    if found != -1 and found < eoh:
        return atoi(data[found + len(pattern):])
    return None


def header_str(data: bytes, eoh: int, pattern: bytes) -> bytes | None:
    found = data.find(pattern)
    if found != -1 and found < eoh:
        begin = found + len(pattern)
        end = data.find(b"\r\n", begin)
        return data[begin:end if end != -1 else eoh]
    return None


def status_line(a: Answer) -> bytes:
    return a.raw.split(b"\r\n", 1)[0]


def check_answer(what: str, a: Answer) -> None:
    """What every answer of the sample server has and the sample client relies on."""
    if a.status != 200:
        raise WireError(f"{what}: status {a.status}, want 200; answer {a!r}")
    if a.header(b"Connection") != b"close":
        raise WireError(f"{what}: no `\\r\\nConnection: close`; answer {a!r}")
    if a.header(b"Access-Control-Allow-Origin") != b"*":
        raise WireError(f"{what}: no `Access-Control-Allow-Origin: *`; answer {a!r}")


async def exchange(port: int, request: bytes, timeout: float | None = T) -> Answer:
    """One request on a new TCP connection; the answer read until Content-Length is satisfied."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()

        async def read() -> Answer:
            data = b""
            while True:
                eoh = data.find(b"\r\n\r\n")
                if eoh != -1:
                    cl = header_int(data, eoh, b"\r\nContent-Length: ")
                    if cl is None:
                        raise WireError(f"{request[:60]!r}: no `\\r\\nContent-Length: ` in the headers: {data!r}")
                    if len(data) >= eoh + 4 + cl:
                        if len(data) > eoh + 4 + cl:
                            raise WireError(f"{request[:60]!r}: {len(data) - eoh - 4 - cl} bytes after the body of Content-Length {cl}: {data!r}")
                        return Answer(data)
                chunk = await reader.read(0xFFFF)
                if not chunk:
                    raise ConnectionResetError(f"{request[:60]!r}: connection closed after {len(data)} bytes, before a whole answer: {data!r}")
                data += chunk

        return await (asyncio.wait_for(read(), timeout) if timeout else read())
    finally:
        writer.close()  # the sample client closes on `Connection: close`
        try:
            await writer.wait_closed()
        except OSError:
            pass


class Wire:
    """PeerConnectionClient: sign in, a hanging GET opened again after each answer, messages one at a time, sign out."""

    def __init__(self, tag: str, port: int) -> None:
        self.tag, self.port = tag, port
        self.my_id = -1
        self.name = ""
        self.peers: dict[int, str] = {}
        self.events: asyncio.Queue = asyncio.Queue()
        self.answers: list[Answer] = []  # every hanging GET answer, in order
        self.reopened = 0  # hanging GETs closed by the server without an answer
        self._hang: asyncio.Task | None = None
        self._send = asyncio.Lock()  # Conductor's pending_messages_: one message at a time, in order

    async def sign_in(self, name: str) -> list[tuple[str, int, bool]]:
        a = await exchange(self.port, f"GET /sign_in?{name} HTTP/1.0\r\n\r\n".encode())
        check_answer(f"{self.tag} sign_in", a)
        if not a.raw.startswith(b"HTTP/1.1 200 Added\r\n"):
            say(self.tag, f"note: sign_in status line is {status_line(a)!r} (the sample's: b'HTTP/1.1 200 Added')")
        if a.pragma is None:
            raise WireError(f"{self.tag} sign_in: no `\\r\\nPragma: `: {a!r}")
        self.my_id, self.name = a.pragma, name
        lines = a.body.split(b"\n")
        if lines[-1] != b"":
            raise WireError(f"{self.tag} sign_in: body does not end in a newline: {a.body!r}")
        entries = [parse_entry(line) for line in lines[:-1]]
        if entries[0] != (name, self.my_id, True) or lines[0] != f"{name},{self.my_id},1".encode():
            raise WireError(f"{self.tag} sign_in: first line is not `{name},{self.my_id},1` (Pragma {self.my_id}): {a.body!r}")
        for n, i, _ in entries[1:]:
            if i != self.my_id:
                self.peers[i] = n
        say(self.tag, f"signed in on :{self.port} as {name}, id {self.my_id}; peers {self.peers}")
        self._hang = asyncio.create_task(self._hanging_get())
        return entries

    async def _hanging_get(self) -> None:
        while True:
            try:
                a = await exchange(self.port, f"GET /wait?peer_id={self.my_id} HTTP/1.0\r\n\r\n".encode(), timeout=None)
            except (ConnectionResetError, ConnectionRefusedError) as e:
                # OnClose: the sample client connects the hanging GET again.
                self.reopened += 1
                say(self.tag, f"hanging GET closed without an answer ({e}); opening it again")
                if self.reopened > 50:
                    await self.events.put(("error", e))
                    return
                await asyncio.sleep(0.05)
                continue
            except Exception as e:  # noqa: BLE001 - handed to the test
                await self.events.put(("error", e))
                return
            self.answers.append(a)
            try:
                check_answer(f"{self.tag} /wait", a)
                if a.pragma is None:
                    raise WireError(f"{self.tag} /wait: no `\\r\\nPragma: `: {a!r}")
            except WireError as e:
                await self.events.put(("error", e))
                return
            if a.pragma == self.my_id:
                name, pid, connected = parse_entry(a.body)
                if connected:
                    self.peers[pid] = name
                else:
                    self.peers.pop(pid, None)
                await self.events.put(("peer", a))
            else:
                await self.events.put(("message", a))

    async def next(self, what: str, timeout: float = T) -> tuple[str, Answer]:
        try:
            kind, a = await asyncio.wait_for(self.events.get(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"{self.tag}: nothing on the hanging GET within {timeout} s, waiting for {what}") from None
        if kind == "error":
            raise AssertionError(f"{self.tag}: hanging GET failed waiting for {what}: {a}") from a
        return kind, a

    async def send_to_peer(self, peer_id: int, message: bytes) -> Answer:
        async with self._send:
            req = (f"POST /message?peer_id={self.my_id}&to={peer_id} HTTP/1.0\r\n"
                   f"Content-Length: {len(message)}\r\n"
                   "Content-Type: text/plain\r\n"
                   "\r\n").encode() + message
            a = await exchange(self.port, req)
            check_answer(f"{self.tag} POST /message to {peer_id}", a)
            return a

    async def stop_waiting(self) -> None:
        if self._hang is not None:
            self._hang.cancel()
            try:
                await self._hang
            except asyncio.CancelledError:
                pass
            self._hang = None

    async def sign_out(self) -> Answer:
        await self.stop_waiting()  # SignOut(): the hanging GET is closed first
        a = await exchange(self.port, f"GET /sign_out?peer_id={self.my_id} HTTP/1.0\r\n\r\n".encode())
        check_answer(f"{self.tag} sign_out", a)
        self.my_id = -1
        return a


def parse_entry(entry: bytes) -> tuple[str, int, bool]:
    """ParseEntry: `name,id,connected`."""
    sep = entry.find(b",")
    if sep == -1:
        raise WireError(f"not a `name,id,connected` entry: {entry!r}")
    name = entry[:sep].decode()
    pid = atoi(entry[sep + 1:])
    sep2 = entry.find(b",", sep + 1)
    connected = sep2 != -1 and atoi(entry[sep2 + 1:]) != 0
    return name, pid, connected


def styled(obj: dict) -> bytes:
    """jsoncpp's Json::StyledWriter, which the sample's Conductor sends with:
    members sorted, three-space indent, `"key" : value`, a newline at the end."""
    members = ",\n".join(f"   {json.dumps(k, ensure_ascii=False)} : {json.dumps(v, ensure_ascii=False)}" for k, v in sorted(obj.items()))
    return ("{\n" + members + "\n}\n").encode()


# ---------- the Conductor ----------

class Conductor:
    """The sample's Conductor with an aiortc RTCPeerConnection: offers on
    ConnectToPeer, answers a received offer, trickles each candidate as its
    own message, applies received messages in order, and closes on BYE."""

    def __init__(self, tag: str, wire: Wire) -> None:
        self.tag, self.wire = tag, wire
        self.pc: RTCPeerConnection | None = None
        self.peer_id = -1
        self.sent = 0
        self.received_candidates = 0
        self.frames = 0
        self.bars = 0
        self.sizes: set[tuple[int, int]] = set()
        self.enough = asyncio.Event()
        self.bye = asyncio.Event()
        self.messages: list[Answer] = []  # every message from a peer, in order
        self.outbox: list[bytes] = []  # every message sent, in order
        self.notes: list[Answer] = []  # every peer notification, in order
        self.note_arrived = asyncio.Event()
        self.failure: BaseException | None = None
        self._tasks: list[asyncio.Task] = []
        self._loop: asyncio.Task | None = None

    def _new_pc(self) -> RTCPeerConnection:
        pc = RTCPeerConnection(ice_config([], False))
        pc.addTrack(BarTrack())

        @pc.on("track")
        def on_track(track):
            self._tasks.append(asyncio.create_task(self._receive(track)))
        return pc

    async def _receive(self, track) -> None:
        while True:
            try:
                f = await track.recv()
            except MediaStreamError:
                return
            self.frames += 1
            self.sizes.add((f.width, f.height))
            self.bars += picture_has_bar(f)
            if self.frames >= FRAMES:
                self.enough.set()

    async def send(self, message: bytes) -> None:
        self.outbox.append(message)
        await self.wire.send_to_peer(self.peer_id, message)

    async def _send_description(self) -> None:
        sdp, cands = split_candidates(self.pc.localDescription.sdp)
        await self.send(styled({"type": self.pc.localDescription.type, "sdp": sdp}))
        for c in cands:  # OnIceCandidate, one message each
            await self.send(styled({"sdpMid": c["sdpMid"], "sdpMLineIndex": c["sdpMLineIndex"], "candidate": c["candidate"]}))
            self.sent += 1

    async def connect_to_peer(self, peer_id: int) -> None:
        self.peer_id = peer_id
        self.pc = self._new_pc()
        await self.pc.setLocalDescription(await self.pc.createOffer())  # aiortc gathers every candidate here
        await self._send_description()

    def start(self) -> None:
        self._loop = asyncio.create_task(self._run())

    def check(self) -> None:
        if self.failure is not None:
            raise AssertionError(f"{self.tag}: {self.failure}") from self.failure

    async def _run(self) -> None:
        try:
            while True:
                kind, a = await self.wire.next("anything", timeout=3600)
                if kind == "peer":
                    self.notes.append(a)
                    self.note_arrived.set()
                else:
                    self.messages.append(a)
                    await self._on_message(a.pragma, a.body)
        except BaseException as e:
            if not isinstance(e, asyncio.CancelledError):
                self.failure = e
                say(self.tag, f"failed: {e!r}")
            raise

    async def _on_message(self, peer_id: int, body: bytes) -> None:
        if body == b"BYE":  # PeerConnectionClient::OnMessageFromPeer: the hangup signal
            say(self.tag, f"BYE from {peer_id}")
            if peer_id == self.peer_id:
                await self.close_pc()
            self.bye.set()
            return
        if self.pc is None:
            self.peer_id = peer_id
            self.pc = self._new_pc()
        elif peer_id != self.peer_id:
            raise AssertionError(f"a message from {peer_id} while in a call with {self.peer_id}: {body!r}")
        msg = json.loads(body)
        if msg.get("type"):
            await self.pc.setRemoteDescription(RTCSessionDescription(msg["sdp"], msg["type"]))
            say(self.tag, f"{msg['type']} from {peer_id} applied")
            if msg["type"] == "offer":
                await self.pc.setLocalDescription(await self.pc.createAnswer())
                await self._send_description()
        else:
            cand = candidate_from_sdp(msg["candidate"].removeprefix("a=").removeprefix("candidate:"))
            cand.sdpMid, cand.sdpMLineIndex = msg["sdpMid"], msg["sdpMLineIndex"]
            await self.pc.addIceCandidate(cand)
            self.received_candidates += 1

    async def hang_up(self) -> None:
        """DisconnectFromCurrentPeer: SendHangUp, then DeletePeerConnection."""
        await self.send(b"BYE")
        await self.close_pc()

    async def close_pc(self) -> None:
        if self.pc is not None:
            await self.pc.close()
            self.pc = None

    async def close(self) -> None:
        for t in [*self._tasks, *([self._loop] if self._loop else [])]:
            t.cancel()
        await self.close_pc()
        await self.wire.stop_waiting()


# ---------- the test ----------

async def wait_for(what: str, fut, timeout: float, *conductors: Conductor) -> None:
    task = asyncio.ensure_future(fut)
    end = asyncio.get_running_loop().time() + timeout
    while not task.done():
        for c in conductors:
            if c.failure is not None:
                task.cancel()
                c.check()
        if asyncio.get_running_loop().time() > end:
            task.cancel()
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.wait({task}, timeout=0.1)
    task.result()


async def main(nodes: Nodes) -> None:
    await nodes.ready()
    say(TAG, f"nodes up: http {nodes.ports}, compat {nodes.compat}, redis {nodes.redis_port}")

    a_wire, b_wire = Wire("A", nodes.compat[0]), Wire("B", nodes.compat[1])
    a, b = Conductor("A", a_wire), Conductor("B", b_wire)
    try:
        entries = await a_wire.sign_in("alice")
        assert entries == [("alice", a_wire.my_id, True)], f"A is alone on a fresh Redis: {entries}"
        a.start()
        say(TAG, f"ok A signed in on node1 (:{nodes.compat[0]}), id {a_wire.my_id}")

        entries = await b_wire.sign_in("bob")
        assert b_wire.my_id != a_wire.my_id, f"ids unique across nodes: {a_wire.my_id}, {b_wire.my_id}"
        assert entries == [("bob", b_wire.my_id, True), ("alice", a_wire.my_id, True)], f"B's sign-in lists B, then A: {entries}"
        b.start()
        a_id, b_id = a_wire.my_id, b_wire.my_id
        say(TAG, f"ok B signed in on node2 (:{nodes.compat[1]}), id {b_id}; its list has A")

        await wait_for("A to hear of B", a.note_arrived.wait(), T, a, b)
        note = a.notes[0]
        assert note.pragma == a_id, f"a notification carries the receiver's id as Pragma: {note!r}"
        assert note.body == f"bob,{b_id},1\n".encode(), f"A hears `bob,{b_id},1\\n`: {note!r}"
        assert note.content_length == len(note.body)
        say(TAG, f"ok A's hanging GET: {note.body!r}, Pragma {note.pragma}")

        await a.connect_to_peer(b_id)
        say(TAG, f"ok A sent its offer and {a.sent} candidates to B")
        await wait_for("B to answer", until_true(lambda: a.pc is not None and a.pc.remoteDescription is not None), T, a, b)
        say(TAG, f"ok offer/answer done through node1 -> node2 -> node1; {a.sent} + {b.sent} candidates trickled")
        await wait_for("frames both ways", asyncio.gather(a.enough.wait(), b.enough.wait()), MEDIA_T, a, b)
        for c in (a, b):
            assert c.sizes == {(W, H)}, f"{c.tag} decodes {W}x{H}: {c.sizes}"
            assert c.bars >= FRAMES - 5, f"{c.tag}'s decoded pictures show the sent bar: {c.bars} of {c.frames}"
            assert c.received_candidates >= 1, f"{c.tag} applied trickled candidates: {c.received_candidates}"
        say(TAG, f"ok video both ways: A decoded {a.frames} frames, B decoded {b.frames} ({W}x{H})")
        assert b.messages[0].body.startswith(b'{\n   "sdp" : "v=0\\r\\n'), f"B's first message is A's offer: {b.messages[0]!r}"
        for me, other, other_id in ((a, b, b_id), (b, a, a_id)):
            got = [m.body for m in me.messages]
            assert got == other.outbox, f"{me.tag} got {other.tag}'s messages byte for byte, in order: got {got}, sent {other.outbox}"
            assert all(m.pragma == other_id and m.content_length == len(m.body) for m in me.messages), f"Pragma = the sender's id: {me.messages}"
        say(TAG, f"ok messages byte for byte and in order, Pragma = sender: A->B {len(a.outbox)}, B->A {len(b.outbox)}")

        await a.hang_up()
        await wait_for("B to get BYE", b.bye.wait(), T, a, b)
        bye = b.messages[-1]
        assert len(b.messages) == len(a.outbox), f"BYE is B's next message: {b.messages[-2:]}"
        assert bye.body == b"BYE" and bye.content_length == 3 and bye.pragma == a_id, f"B's hanging GET gets exactly BYE from A: {bye!r}"
        say(TAG, f"ok B's hanging GET: {bye.body!r}, Pragma {bye.pragma} (A)")

        a.note_arrived.clear()
        out = await b_wire.sign_out()
        say(TAG, f"ok B signed out: {status_line(out)!r}")
        await wait_for("A to hear B left", a.note_arrived.wait(), T, a, b)
        note = a.notes[-1]
        assert note.pragma == a_id and note.body == f"bob,{b_id},0\n".encode(), f"A hears `bob,{b_id},0\\n`: {note!r}"
        assert b_id not in a_wire.peers
        say(TAG, f"ok A's hanging GET: {note.body!r}, Pragma {note.pragma}")
        assert len(a.notes) == 2 and len(b.notes) == 0, f"no other notifications: A {a.notes}, B {b.notes}"
        for w in (a_wire, b_wire):
            assert w.reopened == 0, f"{w.tag}'s hanging GETs were answered, never dropped: {w.reopened} reopened"

        await a.close()
        await a_wire.sign_out()
        say(TAG, "ok A signed out")
    finally:
        await a.close()
        await b.close()


async def until_true(fn) -> None:
    while not fn():
        await asyncio.sleep(0.05)


if __name__ == "__main__":
    sigterm_exits()
    nodes = compat_nodes()
    try:
        asyncio.run(main(nodes))
        say(TAG, "PASS")
    except BaseException as e:
        say(TAG, f"FAIL: {e!r} (logs: {nodes.logs})")
        raise
    finally:
        nodes.close()
    sys.exit(0)
