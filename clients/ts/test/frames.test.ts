import { test } from "node:test";
import assert from "node:assert/strict";
import { FrameDecoder, FrameError, decodePeer, decodeWhole, encodeJoin, encodeMessage, encodePeer } from "../src/frames.js";

// Bytes as the Rust side (`proto/src/frame.rs`) encodes them.
const hex = (s: string) => Uint8Array.from(s.match(/../g)!.map((b) => parseInt(b, 16)));

test("join and message frames match the Rust encoding", () => {
  assert.deepEqual(encodeJoin("t1"), hex("0000000301" + "7431"));
  assert.deepEqual(encodeMessage(7n, new Uint8Array([0xaa])), hex("0000000a10" + "0000000000000007" + "aa"));
  assert.deepEqual(encodePeer(1n << 62n, new Uint8Array([1, 2])), hex("4000000000000000" + "0102"));
  const [peer, data] = decodePeer(hex("4000000000000000" + "0102"));
  assert.equal(peer, 1n << 62n);
  assert.deepEqual(data, new Uint8Array([1, 2]));
});

test("joined, refused and messages decode, split anywhere", () => {
  // Joined{player_id 5, tick_hz 20, room "r1", saved None}, then Refused{0x101, "no"}.
  const joined = hex("00000011" + "02" + "0000000000000005" + "00000014" + "02" + "7231" + "00");
  const refused = hex("00000007" + "03" + "00000101" + "6e6f");
  const all = new Uint8Array([...joined, ...refused, ...encodeMessage(3n, new Uint8Array([9]))]);
  for (let cut = 0; cut <= all.length; cut++) {
    const d = new FrameDecoder();
    d.push(all.subarray(0, cut));
    const got = [];
    let f;
    while ((f = d.next())) got.push(f);
    d.push(all.subarray(cut));
    while ((f = d.next())) got.push(f);
    assert.equal(got.length, 3, `cut at ${cut}`);
    assert.deepEqual(got[0], { type: "joined", playerId: 5n, room: "r1", tickHz: 20, saved: { kind: "none" } });
    assert.deepEqual(got[1], { type: "refused", code: 0x101, reason: "no" });
    assert.deepEqual(got[2], { type: "message", peer: 3n, data: new Uint8Array([9]) });
  }
});

test("bad frames are refused with the node's codes", () => {
  const d = new FrameDecoder(16);
  d.push(hex("00010000"));
  assert.throws(() => d.next(), (e: FrameError) => e.code === "message-too-large");
  assert.throws(() => decodeWhole(hex("0000000510")), (e: FrameError) => e.code === "frame-malformed");
  assert.throws(() => decodeWhole(hex("0000000177")), /unknown frame type 0x77/);
  const two = new Uint8Array([...encodeMessage(0n, new Uint8Array()), ...encodeMessage(0n, new Uint8Array())]);
  assert.throws(() => decodeWhole(two), /exactly one frame/);
  assert.throws(() => decodePeer(new Uint8Array(3)), /shorter than its peer id/);
});

test("moved frames carry the target and its credential, and need them", () => {
  const body = JSON.stringify({ node: "edge-b", quic: "127.0.0.1:7700", cert_sha256: "ab", credential: "mv1.x" });
  const bytes = new TextEncoder().encode(body);
  const frame = new Uint8Array(5 + bytes.length);
  new DataView(frame.buffer).setUint32(0, 1 + bytes.length);
  frame[4] = 0x04;
  frame.set(bytes, 5);
  assert.deepEqual(decodeWhole(frame), {
    type: "moved",
    target: { node: "edge-b", quic: "127.0.0.1:7700", cert_sha256: "ab", credential: "mv1.x" },
  });
  assert.throws(() => decodeWhole(hex("0000000204" + "7b")), (e: FrameError) => e.code === "frame-malformed");
  const noCredential = new TextEncoder().encode(JSON.stringify({ node: "b", quic: "x", cert_sha256: "y" }));
  const bad = new Uint8Array([0, 0, 0, 1 + noCredential.length, 0x04, ...noCredential]);
  assert.throws(() => decodeWhole(bad), /bad Moved: no credential/);
});
