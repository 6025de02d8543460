"""The client: one WebSocket held across reconnects (with `since`, so
nothing is lost), events once and in order, `update_user` ordered by
`version`, calls retried with one `Idempotency-Key`, and a long poll when
the socket cannot be held."""

from __future__ import annotations

import asyncio
import inspect
import json
import random
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable, Optional, Union
from urllib.parse import quote

import aiohttp

TokenSource = Callable[[], Union[str, Awaitable[str]]]

# Statuses a call is retried on, with the same key: nothing was done (503,
# 429), it may have been (504), or the same key is still running (409
# request_in_progress).
_RETRY = {429, 503, 504}


class ApiError(Exception):
    """An error answer: `status`, and `code` as in the contract's table."""

    def __init__(self, status: int, code: str, message: str = ""):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


@dataclass
class Event:
    """One event: `action` as in the contract (`server-action:put_ice`),
    `id` (None for `update_user` and session events) and `data`."""

    action: str
    data: dict
    id: Optional[str] = None
    raw: dict = field(default_factory=dict, repr=False)


class Client:
    """`async with Client(base_url, token=... | get_token=...) as c:` then
    `async for ev in c.events():` and the calls."""

    def __init__(
        self,
        base_url: str,
        token: Optional[str] = None,
        get_token: Optional[TokenSource] = None,
        presence: str = "all",
        retries: int = 8,
        poll_after_failures: int = 3,
    ):
        if token is None and get_token is None:
            raise ValueError("token or get_token is needed")
        self.base_url = base_url.rstrip("/")
        self._token, self._get_token = token, get_token
        self.presence = presence
        self.retries = retries
        self.poll_after_failures = poll_after_failures
        # The directory as the events left it: user id -> UserState.
        self.users: dict[str, dict] = {}
        self.since: Optional[str] = None
        self.transport = "none"
        # Sockets opened so far (a reconnect adds one).
        self.connects = 0
        # The last `hello` (`session_id`, `node_id`, ...).
        self.hello: dict = {}
        # Tokens refreshed on the open socket.
        self.refreshes = 0
        self._http: Optional[aiohttp.ClientSession] = None
        self._queue: asyncio.Queue[Optional[Event]] = asyncio.Queue()
        # Extra readers (`subscribe`), each handed every event too.
        self._subscribers: list[asyncio.Queue[Optional[Event]]] = []
        self._seen: dict[str, None] = {}
        self._task: Optional[asyncio.Task] = None
        self._closed = False
        # An operator disconnected this user (a `kicked` event): the client stopped.
        self.kicked = False
        self._ws: Optional[aiohttp.ClientWebSocketResponse] = None
        self._connected = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------

    async def __aenter__(self) -> "Client":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def start(self) -> None:
        self._http = aiohttp.ClientSession()
        if self._token is None:
            self._token = await self._fresh_token()
        await self.reload_users()
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._connected.wait(), 30)

    async def close(self) -> None:
        self._closed = True
        if self._ws is not None:
            await self._ws.close()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        if self._http is not None:
            await self._http.close()
        self._queue.put_nowait(None)
        for q in self._subscribers:
            q.put_nowait(None)

    def subscribe(self) -> "asyncio.Queue[Optional[Event]]":
        """A queue of its own that gets every event from now on (None when the
        client closes), beside `events()`: for a helper such as a call."""
        q: asyncio.Queue[Optional[Event]] = asyncio.Queue()
        self._subscribers.append(q)
        return q

    def unsubscribe(self, q: "asyncio.Queue[Optional[Event]]") -> None:
        if q in self._subscribers:
            self._subscribers.remove(q)

    async def events(self) -> AsyncIterator[Event]:
        """Each event once, in order, across reconnects and node changes."""
        while True:
            ev = await self._queue.get()
            if ev is None:
                return
            yield ev

    async def next_event(self, action: Optional[str] = None, timeout: float = 30) -> Event:
        """The next event (of `action`, short or full name), dropping others."""
        want = None if action is None else (action if action.startswith("server-action:") else f"server-action:{action}")

        async def find() -> Event:
            while True:
                ev = await self._queue.get()
                if ev is None:
                    raise ConnectionError("the client is closed")
                if want is None or ev.action == want:
                    return ev

        return await asyncio.wait_for(find(), timeout)

    # -- calls -------------------------------------------------------------

    async def camera_on(self, meta: Optional[dict] = None) -> dict:
        return await self.call("cameraOn", {} if meta is None else {"meta": meta})

    async def camera_off(self) -> dict:
        return await self.call("cameraOff", {})

    async def camera_show(self, user_id: str) -> dict:
        return await self.call("cameraShow", {"user_id": user_id})

    async def offer(self, room_id: str, sdp: str) -> dict:
        return await self.call("offer", {"room_id": room_id, "offer": {"type": "offer", "sdp": sdp}})

    async def answer(self, room_id: str, sdp: str) -> dict:
        return await self.call("answer", {"room_id": room_id, "answer": {"type": "answer", "sdp": sdp}})

    async def ice(self, room_id: str, candidate: dict, dest: Optional[str] = None) -> dict:
        body: dict = {"room_id": room_id, "candidate": candidate}
        if dest is not None:
            body["dest"] = dest
        return await self.call("ice", body)

    async def hangup(self, room_id: str, reason: Optional[str] = None) -> dict:
        return await self.call("hangup", {"room_id": room_id} if reason is None else {"room_id": room_id, "reason": reason})

    async def create_meeting(self, title: Optional[str] = None, max_members: Optional[int] = None) -> dict:
        body = {k: v for k, v in (("title", title), ("max_members", max_members)) if v is not None}
        return await self.call("meetings", body)

    async def join_meeting(self, meeting_id: str, name: str) -> dict:
        return await self.call(f"meetings/{quote(meeting_id)}/join", {"name": name})

    async def leave_meeting(self, meeting_id: str) -> dict:
        return await self.call(f"meetings/{quote(meeting_id)}/leave", {})

    async def ice_servers(self) -> dict:
        return await self.get("iceServers")

    async def user(self, user_id: str) -> dict:
        return await self.get(f"users/{quote(user_id)}")

    async def call(self, op: str, body: dict) -> dict:
        """POST `/webrtc/<op>`: one logical call, retried with one key."""
        key = str(uuid.uuid4())
        return await self._request("POST", op, body, key)

    async def get(self, path: str) -> dict:
        return await self._request("GET", path, None, None)

    async def _request(self, method: str, path: str, body: Optional[dict], key: Optional[str]) -> dict:
        assert self._http is not None, "use `async with Client(...)`"
        for attempt in range(self.retries + 1):
            headers = {"Authorization": f"Bearer {self._token}"}
            if key is not None:
                headers["Idempotency-Key"] = key
            try:
                async with self._http.request(method, f"{self.base_url}/webrtc/{path}", json=body, headers=headers) as r:
                    text = await r.text()
                    data = json.loads(text) if text else {}
                    if r.status < 400:
                        return data
                    err = data.get("error", {}) if isinstance(data, dict) else {}
                    code = err.get("code", "unknown")
                    if r.status == 401 and self._get_token is not None and attempt < self.retries:
                        self._token = await self._fresh_token()
                        continue
                    retry = r.status in _RETRY or code == "request_in_progress"
                    if not retry or attempt == self.retries:
                        raise ApiError(r.status, code, err.get("message", ""))
                    wait = float(r.headers.get("Retry-After", "0.2"))
            except aiohttp.ClientError:
                # The node went away mid-call: another takes the retry.
                if attempt == self.retries:
                    raise
                wait = 0.2
            await asyncio.sleep(min(wait, 2.0) * (0.5 + random.random()))
        raise AssertionError("unreachable")

    async def reload_users(self) -> None:
        """The directory, page by page, kept where it is newer."""
        cursor = None
        while True:
            q = "users?limit=200" + (f"&cursor={quote(cursor)}" if cursor else "")
            page = await self.get(q)
            for u in page.get("users", []):
                self._apply_user(u)
            cursor = page.get("next_cursor")
            if not cursor:
                return

    # -- the event stream ---------------------------------------------------

    async def _fresh_token(self) -> str:
        assert self._get_token is not None
        t = self._get_token()
        return await t if inspect.isawaitable(t) else t  # type: ignore[return-value]

    def _apply_user(self, u: dict) -> bool:
        old = self.users.get(u.get("user_id", ""))
        if old is not None and old.get("version", 0) >= u.get("version", 0):
            return False
        self.users[u["user_id"]] = u
        return True

    async def _deliver(self, raw: dict) -> Optional[str]:
        """Hands an event on once; returns what the loop must do."""
        action, data, eid = raw.get("action", ""), raw.get("data") or {}, raw.get("id")
        name = action.removeprefix("server-action:")
        if name == "hello":
            self.hello = data
            self._connected.set()
            if self.since is None:
                self.since = data.get("last_id")
            return None
        if name == "update_user":
            if not self._apply_user(data.get("user", {})):
                return None
        elif name == "resync":
            self.since = data.get("last_id")
            self._seen.clear()
            await self.reload_users()
        elif name == "reconnect":
            if data.get("last_id") and self.since is None:
                self.since = data.get("last_id")
            return "reconnect"
        elif name == "token_expiring":
            return "refresh"
        todo = "kicked" if name == "kicked" else None
        if eid is not None:
            if eid in self._seen:
                return None
            self._seen[eid] = None
            if len(self._seen) > 4096:
                self._seen.pop(next(iter(self._seen)))
            self.since = eid
        ev = Event(action=action, data=data, id=eid, raw=raw)
        self._queue.put_nowait(ev)
        for q in self._subscribers:
            q.put_nowait(ev)
        return todo

    async def _run(self) -> None:
        failures = 0
        while not self._closed:
            try:
                if failures >= self.poll_after_failures:
                    await self._poll_once()
                    failures = self.poll_after_failures - 1  # try the socket again next
                    continue
                await self._hold_socket()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception:
                failures += 1
                if self._get_token is not None:
                    try:
                        self._token = await self._fresh_token()
                    except Exception:
                        pass
                await asyncio.sleep(min(0.1 * 2**failures, 5.0) * (0.5 + random.random()))

    async def _hold_socket(self) -> None:
        assert self._http is not None
        url = self.base_url.replace("http", "ws", 1) + f"/ws?token={quote(self._token or '')}&presence={self.presence}"
        if self.since:
            url += f"&since={quote(self.since)}"
        async with self._http.ws_connect(url, heartbeat=None, max_msg_size=0) as ws:
            self._ws = ws
            self.connects += 1
            self.transport = "websocket"
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                raw = json.loads(msg.data)
                if "action" not in raw:
                    continue  # a command's ack
                todo = await self._deliver(raw)
                if todo == "reconnect":
                    return
                if todo == "kicked":
                    # An operator disconnected this user: stop, rather than knock on a ban.
                    self._closed = True
                    self.kicked = True
                    self._ws = None
                    return
                if todo == "refresh" and self._get_token is not None:
                    self._token = await self._fresh_token()
                    await ws.send_json({"cmd": "refresh", "ack": str(uuid.uuid4()), "token": self._token})
                    self.refreshes += 1
            self._ws = None
            if ws.close_code in (1012, 1001):
                return  # a drain or a restart: at once, elsewhere
            raise ConnectionError(f"closed {ws.close_code}")

    async def _poll_once(self) -> None:
        assert self._http is not None
        q = f"events?timeout_s=25" + (f"&since={quote(self.since)}" if self.since else "")
        async with self._http.get(f"{self.base_url}/webrtc/{q}", headers={"Authorization": f"Bearer {self._token}"}) as r:
            if r.status != 200:
                raise ConnectionError(f"long poll {r.status}")
            self.transport = "poll"
            self._connected.set()
            page = await r.json()
        for raw in page.get("events", []):
            if await self._deliver(raw) == "kicked":
                self._closed = True
                self.kicked = True
                return
        if page.get("last_id") and self.since is None:
            self.since = page["last_id"]
