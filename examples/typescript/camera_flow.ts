// The camera flow and a meeting through the generated TypeScript types
// (openapi-typescript) and openapi-fetch: every path, body and reply below is
// checked by tsc against the spec.
//
// Camera flow: Ann turns her camera on, Bob asks to see it, they trade an
// offer, an answer and ICE candidates, and Bob hangs up. Meeting: Ann creates
// one and Ann, Bob and Cat join in turn; each earlier member hears
// member_joined with the room of its pair with the newcomer (it owns the pair
// and offers); Bob and Cat trade an offer and an answer on their pair; Bob
// leaves, and Ann and Cat hear hangup and member_left. Every event is heard
// through the long poll (GET /webrtc/events).
//
//   scripts/sdk                                 # types into target/sdk/typescript
//   cd examples/typescript && npm ci && npm run build && npm start -- http://127.0.0.1:8080
//
// The node must be in dev mode (no auth.jwt_secret), which hands out tokens.
import createClient from "openapi-fetch";
import type { components, paths } from "camsig-sdk";

type Event = components["schemas"]["Event"];
type Data<A extends Event["action"]> = Extract<Event, { action: A }>["data"];
type Client = ReturnType<typeof createClient<paths>>;

const base = process.argv[2] ?? "http://127.0.0.1:8080";

// A real SDP body; an app takes it from pc.createOffer() / pc.createAnswer().
function sdp(kind: "offer" | "answer"): string {
  const setup = kind === "offer" ? "actpass" : "active";
  return (
    "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n" +
    "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n" +
    "a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r\n" +
    `a=setup:${setup}\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:96 VP8/90000\r\n`
  );
}

// The data of a success; an error body stops the flow with its message.
function ok<T>(res: { data?: T; error?: unknown; response: Response }): T {
  if (res.data === undefined) {
    throw new Error(`HTTP ${res.response.status}: ${JSON.stringify(res.error)}`);
  }
  return res.data;
}

// One user: a client with their token, and where they are in their event log.
class Side {
  since = "0-0";
  constructor(
    public name: string,
    public client: Client,
  ) {}

  static async signIn(name: string): Promise<Side> {
    const anon = createClient<paths>({ baseUrl: base });
    const { token } = ok(await anon.POST("/dev/token", { body: { user_id: name } }));
    const side = new Side(name, createClient<paths>({ baseUrl: base, headers: { Authorization: `Bearer ${token}` } }));
    side.since = ok(await side.client.GET("/webrtc/events", { params: { query: { timeout_s: 0 } } })).last_id;
    return side;
  }

  // Waits for the next event, which must be `action`.
  async expect<A extends Event["action"]>(action: A): Promise<Data<A>> {
    const page = ok(await this.client.GET("/webrtc/events", { params: { query: { since: this.since, timeout_s: 10 } } }));
    const event = page.events[0];
    if (!event || event.action !== action) {
      throw new Error(`expected ${action}, got ${JSON.stringify(page.events)}`);
    }
    if ("id" in event) this.since = event.id;
    console.log(`  ${this.name} heard ${action.replace("server-action:", "")}`);
    return (event as unknown as { data: Data<A> }).data;
  }
}

function check(cond: boolean, what: string): void {
  if (!cond) throw new Error(`check failed: ${what}`);
}

const ann = await Side.signIn("tsann");
const bob = await Side.signIn("tsbob");

const { user } = ok(await ann.client.POST("/webrtc/cameraOn", { body: { meta: { name: "Ann" } } }));
console.log(`ann's camera is ${user.camera} (version ${user.version})`);

const shown = ok(await bob.client.POST("/webrtc/cameraShow", { body: { user_id: "tsann" } }));
const room_id = shown.connection.room_id;
console.log(`bob asked to see ann: room ${room_id}`);
check((await ann.expect("server-action:show_cam")).user_id === "tsbob", "show_cam names bob");

ok(await ann.client.POST("/webrtc/offer", { body: { room_id, offer: { type: "offer", sdp: sdp("offer") } } }));
check((await bob.expect("server-action:put_offer")).offer.type === "offer", "bob got the offer");

ok(await bob.client.POST("/webrtc/answer", { body: { room_id, answer: { type: "answer", sdp: sdp("answer") } } }));
check((await ann.expect("server-action:put_answer")).answer.type === "answer", "ann got the answer");

const candidate = { candidate: "candidate:1 1 udp 2113937151 192.0.2.1 54400 typ host", sdpMid: "0", sdpMLineIndex: 0 };
ok(await bob.client.POST("/webrtc/ice", { body: { room_id, candidate } }));
check((await ann.expect("server-action:put_ice")).candidate.candidate === candidate.candidate, "ann got the candidate");
ok(await ann.client.POST("/webrtc/ice", { body: { room_id, candidate } }));
await bob.expect("server-action:put_ice");

const closed = ok(await bob.client.POST("/webrtc/hangup", { body: { room_id, reason: "done" } }));
check(closed.connection.state === "closed", "the room is closed");
check((await ann.expect("server-action:hangup")).reason === "done", "ann heard the hangup");
console.log("the camera flow ran to the end");

// ---------- a meeting: three members, one pair per two of them ----------

const cat = await Side.signIn("tscat");
const sides: Record<string, Side> = { tsann: ann, tsbob: bob, tscat: cat };

const { meeting } = ok(await ann.client.POST("/webrtc/meetings", { body: { title: "Standup" } }));
const meeting_id = meeting.meeting_id;
check(meeting.created_by === "tsann" && meeting.members.length === 0, "the creator is not yet a member");
console.log(`ann created meeting ${meeting_id} (${meeting.title}, at most ${meeting.max_members})`);

const pairs = new Map<string, string>(); // "owner>abonent" -> room_id
const joiners: [string, string][] = [["tsann", "Ann"], ["tsbob", "Bob"], ["tscat", "Cat"]];
for (const [k, [user, name]] of joiners.entries()) {
  const joined = ok(
    await sides[user].client.POST("/webrtc/meetings/{meeting_id}/join", { params: { path: { meeting_id } }, body: { name } }),
  );
  const members = joined.meeting.members.map((m) => m.user_id);
  check(members.length === k + 1 && members[k] === user, `${user} is the newest of ${members}`);
  const before = members.slice(0, k);
  // One pair per earlier member: the newcomer is the abonent, the earlier member the owner.
  check(JSON.stringify(joined.connections.map((c) => c.owner)) === JSON.stringify(before), `${user}'s pairs are owned by ${before}`);
  for (const c of joined.connections) {
    check(c.abonent === user && c.meeting_id === meeting_id && c.state === "requested", `pair ${c.owner} -> ${user}`);
    pairs.set(`${c.owner}>${user}`, c.room_id);
  }
  console.log(`${user} joined as ${name}: ${joined.connections.length} pair(s), owned by [${before}]`);
  // Each earlier member hears member_joined with the room of its pair: it sends the offer there.
  for (const owner of before) {
    const heard = await sides[owner].expect("server-action:member_joined");
    check(heard.meeting_id === meeting_id && heard.user_id === user && heard.name === name, `${owner} heard ${user} join`);
    check(heard.room_id === pairs.get(`${owner}>${user}`), `${owner}'s member_joined names their pair`);
  }
}

const seen = ok(await cat.client.GET("/webrtc/meetings/{meeting_id}", { params: { path: { meeting_id } } }));
check(seen.members.map((m) => `${m.user_id}:${m.name}`).join() === "tsann:Ann,tsbob:Bob,tscat:Cat", "three members, in order");

// The pair bob -> cat: cat is its abonent, so only bob may offer.
const pair = pairs.get("tsbob>tscat")!;
const wrong = await cat.client.POST("/webrtc/offer", { body: { room_id: pair, offer: { type: "offer", sdp: sdp("offer") } } });
check(wrong.response.status === 403 && wrong.error?.error.code === "forbidden", "the abonent may not offer");
ok(await bob.client.POST("/webrtc/offer", { body: { room_id: pair, offer: { type: "offer", sdp: sdp("offer") } } }));
const got = await cat.expect("server-action:put_offer");
check(got.room_id === pair && got.user_id === "tsbob" && got.offer.type === "offer", "cat got bob's offer");
ok(await cat.client.POST("/webrtc/answer", { body: { room_id: pair, answer: { type: "answer", sdp: sdp("answer") } } }));
const back = await bob.expect("server-action:put_answer");
check(back.room_id === pair && back.user_id === "tscat" && back.answer.type === "answer", "bob got cat's answer");
ok(await cat.client.POST("/webrtc/ice", { body: { room_id: pair, candidate } }));
check((await bob.expect("server-action:put_ice")).room_id === pair, "bob got cat's candidate");

// Bob leaves: his pairs close, and Ann and Cat each hear hangup, then member_left.
const left = ok(await bob.client.POST("/webrtc/meetings/{meeting_id}/leave", { params: { path: { meeting_id } } }));
check(left.meeting.members.map((m) => m.user_id).join() === "tsann,tscat", "ann and cat remain");
for (const [side, room] of [[ann, pairs.get("tsann>tsbob")!], [cat, pair]] as const) {
  const bye = await side.expect("server-action:hangup");
  check(bye.room_id === room && bye.user_id === "tsbob" && bye.reason === "left", "hangup for the pair with bob");
  const gone = await side.expect("server-action:member_left");
  check(gone.meeting_id === meeting_id && gone.user_id === "tsbob" && gone.reason === "left", "member_left for bob");
}
const after = await bob.client.GET("/webrtc/meetings/{meeting_id}", { params: { path: { meeting_id } } });
check(after.response.status === 403, "bob is no longer a member");
console.log("the meeting ran to the end");
