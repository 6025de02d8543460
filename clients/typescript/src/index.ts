/**
 * camsig's client for browsers and Node 18+ (pass `WebSocket` where the
 * platform has none), with no runtime dependency:
 * - `CamsigClient`: the socket, events once and in order, the directory, calls;
 * - `CamsigCall`: an RTCPeerConnection bound to a room;
 * - `CamsigMeeting`: a mesh meeting, one call per other member.
 * Types come from the OpenAPI document (`openapi.ts`, generated).
 */

export * from "./client.js";
export * from "./call.js";
export * from "./meeting.js";
export type { components, paths } from "./openapi.js";
