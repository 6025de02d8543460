// The camera flow through the generated TypeScript types (openapi-typescript)
// and openapi-fetch: every path, body and reply below is checked by tsc
// against the spec.
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
  constructor(public client: Client) {}

  static async signIn(name: string): Promise<Side> {
    const anon = createClient<paths>({ baseUrl: base });
    const { token } = ok(await anon.POST("/dev/token", { body: { user_id: name } }));
    const side = new Side(createClient<paths>({ baseUrl: base, headers: { Authorization: `Bearer ${token}` } }));
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
    console.log(`  ${action.replace("server-action:", "")}`);
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
