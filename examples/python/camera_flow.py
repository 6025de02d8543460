"""The camera flow and a meeting through the generated Python SDK (openapi-python-client).

Ann turns her camera on, Bob asks to see it, they trade an offer, an answer and
ICE candidates, and Bob hangs up. Then Ann creates a meeting and Ann, Bob and
Cat join it in turn: each earlier member hears member_joined with the room of
its pair with the newcomer, where it is the owner and offers; Bob and Cat trade
an offer and an answer on their pair; Bob leaves, and Ann and Cat hear hangup
and member_left. Each side hears the others through the long poll
(GET /webrtc/events), so this needs nothing but the SDK.

    scripts/sdk                      # generates target/sdk/python
    python examples/python/camera_flow.py http://127.0.0.1:8080

The node must be in dev mode (no auth.jwt_secret), which hands out tokens.
"""

import sys

from camsig_client import AuthenticatedClient, Client
from camsig_client.api.camera import camera_on, camera_show
from camsig_client.api.events import poll_events
from camsig_client.api.meetings import get_meeting, meeting_create, meeting_join, meeting_leave
from camsig_client.api.ops import dev_token
from camsig_client.api.signaling import answer, hangup, ice, offer
from camsig_client.models import (
    AnswerBody,
    CameraOnBody,
    DevTokenBody,
    ErrorResponse,
    HangupBody,
    IceBody,
    IceCandidate,
    MeetingCreateBody,
    MeetingJoinBody,
    OfferBody,
    SessionDescription,
    ShowBody,
)

BASE = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080"


def sdp(kind: str) -> str:
    # A real SDP body; an app takes it from pc.createOffer() / pc.createAnswer().
    setup = "actpass" if kind == "offer" else "active"
    return (
        "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
        "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
        "a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r\n"
        f"a=setup:{setup}\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:96 VP8/90000\r\n"
    )


def ok(res):
    """The parsed body of a success; an error body stops the flow with its message."""
    if res.parsed is None or isinstance(res.parsed, ErrorResponse):
        sys.exit(f"HTTP {res.status_code}: {res.content.decode()}")
    return res.parsed


class Side:
    """One user: a client with their token, and where they are in their event log."""

    def __init__(self, name: str):
        self.name = name
        token = ok(dev_token.sync_detailed(client=Client(base_url=BASE), body=DevTokenBody(user_id=name))).token
        self.client = AuthenticatedClient(base_url=BASE, token=token, timeout=30.0)
        self.since = ok(poll_events.sync_detailed(client=self.client, timeout_s=0)).last_id

    def expect(self, action: str):
        """Waits for the next event, which must be `action`."""
        page = ok(poll_events.sync_detailed(client=self.client, since=self.since, timeout_s=10))
        assert page.events, f"no {action} arrived"
        event = page.events[0]
        assert event.action == f"server-action:{action}", f"expected {action}, got {event.action}"
        self.since = event.id
        print(f"  {self.name} heard {action} (id {event.id})")
        return event.data


ann, bob = Side("ann"), Side("bob")

user = ok(camera_on.sync_detailed(client=ann.client, body=CameraOnBody())).user
print(f"ann's camera is {user.camera} (version {user.version})")

shown = ok(camera_show.sync_detailed(client=bob.client, body=ShowBody(user_id="ann")))
room = shown.connection.room_id
print(f"bob asked to see ann: room {room}, {len(shown.ice_servers)} ICE server(s)")
assert ann.expect("show_cam").user_id == "bob"

ok(offer.sync_detailed(client=ann.client, body=OfferBody(room_id=room, offer=SessionDescription(type_="offer", sdp=sdp("offer")))))
assert bob.expect("put_offer").offer.type_ == "offer"

ok(answer.sync_detailed(client=bob.client, body=AnswerBody(room_id=room, answer=SessionDescription(type_="answer", sdp=sdp("answer")))))
assert ann.expect("put_answer").answer.type_ == "answer"

candidate = IceCandidate(candidate="candidate:1 1 udp 2113937151 192.0.2.1 54400 typ host", sdp_mid="0", sdp_m_line_index=0)
ok(ice.sync_detailed(client=bob.client, body=IceBody(room_id=room, candidate=candidate)))
assert ann.expect("put_ice").candidate.candidate == candidate.candidate
ok(ice.sync_detailed(client=ann.client, body=IceBody(room_id=room, candidate=candidate)))
bob.expect("put_ice")

closed = ok(hangup.sync_detailed(client=bob.client, body=HangupBody(room_id=room, reason="done")))
assert closed.connection.state == "closed"
assert ann.expect("hangup").reason == "done"
print("the camera flow ran to the end")

# ---------- a meeting: three members, one pair per two of them ----------

cat = Side("cat")
sides = {"ann": ann, "bob": bob, "cat": cat}

meeting = ok(meeting_create.sync_detailed(client=ann.client, body=MeetingCreateBody(title="Standup"))).meeting
mid = meeting.meeting_id
assert meeting.created_by == "ann" and meeting.members == [], "the creator is not yet a member"
print(f"ann created meeting {mid} ({meeting.title}, at most {meeting.max_members})")

pairs = {}  # (owner, abonent) -> room_id
for k, (user, name) in enumerate([("ann", "Ann"), ("bob", "Bob"), ("cat", "Cat")]):
    joined = ok(meeting_join.sync_detailed(mid, client=sides[user].client, body=MeetingJoinBody(name=name)))
    members = [m.user_id for m in joined.meeting.members]
    assert len(members) == k + 1 and members[-1] == user, members
    before = members[:-1]
    # One pair per earlier member: the newcomer is the abonent, the earlier member the owner.
    assert [c.owner for c in joined.connections] == before, joined.connections
    for c in joined.connections:
        assert c.abonent == user and c.meeting_id == mid and c.state == "requested"
        pairs[(c.owner, user)] = c.room_id
    print(f"{user} joined as {name}: {len(joined.connections)} pair(s), owned by {before}")
    # Each earlier member hears member_joined with the room of its pair: it sends the offer there.
    for owner in before:
        heard = sides[owner].expect("member_joined")
        assert (heard.meeting_id, heard.user_id, heard.name) == (mid, user, name)
        assert heard.room_id == pairs[(owner, user)]

seen = ok(get_meeting.sync_detailed(mid, client=cat.client))
assert [(m.user_id, m.name) for m in seen.members] == [("ann", "Ann"), ("bob", "Bob"), ("cat", "Cat")]

# The pair bob -> cat: cat is its abonent, so only bob may offer.
room = pairs[("bob", "cat")]
wrong = offer.sync_detailed(client=cat.client, body=OfferBody(room_id=room, offer=SessionDescription(type_="offer", sdp=sdp("offer"))))
assert wrong.status_code == 403 and isinstance(wrong.parsed, ErrorResponse) and wrong.parsed.error.code.value == "forbidden"
ok(offer.sync_detailed(client=bob.client, body=OfferBody(room_id=room, offer=SessionDescription(type_="offer", sdp=sdp("offer")))))
got = cat.expect("put_offer")
assert (got.room_id, got.user_id, got.offer.type_) == (room, "bob", "offer")
ok(answer.sync_detailed(client=cat.client, body=AnswerBody(room_id=room, answer=SessionDescription(type_="answer", sdp=sdp("answer")))))
got = bob.expect("put_answer")
assert (got.room_id, got.user_id, got.answer.type_) == (room, "cat", "answer")
ok(ice.sync_detailed(client=cat.client, body=IceBody(room_id=room, candidate=candidate)))
assert bob.expect("put_ice").room_id == room

# Bob leaves: his pairs close, and Ann and Cat each hear hangup, then member_left.
# body=None: leave takes no body, and the generated default (UNSET) is not JSON.
left = ok(meeting_leave.sync_detailed(mid, client=bob.client, body=None)).meeting
assert [m.user_id for m in left.members] == ["ann", "cat"]
for user, room in [("ann", pairs[("ann", "bob")]), ("cat", pairs[("bob", "cat")])]:
    bye = sides[user].expect("hangup")
    assert (bye.room_id, bye.user_id, bye.reason) == (room, "bob", "left")
    gone = sides[user].expect("member_left")
    assert (gone.meeting_id, gone.user_id, gone.reason) == (mid, "bob", "left")
assert get_meeting.sync_detailed(mid, client=bob.client).status_code == 403, "bob is no longer a member"
print("the meeting ran to the end")
