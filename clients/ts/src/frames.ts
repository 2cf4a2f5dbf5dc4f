/**
 * The player wire frames (`proto/src/frame.rs`), for browsers. Reliable traffic is a sequence of
 * `len u32 BE | type u8 | body` frames; unreliable traffic is one datagram per message, `peer u64
 * BE | data`. Player ids are u64, so they are `bigint` here.
 */
export const FRAME = { JOIN: 0x01, JOINED: 0x02, REFUSED: 0x03, MOVED: 0x04, MESSAGE: 0x10 } as const;

export type SavedState = { kind: "none" } | { kind: "found"; data: Uint8Array } | { kind: "unavailable" };

export type Frame =
  | { type: "join"; ticket: string }
  | { type: "joined"; playerId: bigint; room: string; tickHz: number; saved: SavedState }
  | { type: "refused"; code: number; reason: string }
  | { type: "message"; peer: bigint; data: Uint8Array }
  | { type: "moved"; target: MoveTarget };

/**
 * Where a room moved (`Moved{target}`, a JSON body): the target node's addresses and pins, and
 * the single-use credential to send as the ticket of a `Join` there.
 */
export interface MoveTarget {
  node: string;
  quic: string;
  cert_sha256: string;
  webtransport?: { url: string; cert_sha256: string[]; probe_url?: string };
  websocket?: string;
  credential: string;
}

function moveTarget(text: string): MoveTarget {
  const t = JSON.parse(text) as Record<string, unknown>;
  for (const k of ["node", "quic", "cert_sha256", "credential"]) {
    if (typeof t?.[k] !== "string") throw new FrameError("frame-malformed", `bad Moved: no ${k}`);
  }
  return t as unknown as MoveTarget;
}

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder("utf-8", { fatal: true });

function withHeader(type: number, bodyLen: number): { out: Uint8Array; view: DataView } {
  const out = new Uint8Array(5 + bodyLen);
  const view = new DataView(out.buffer);
  view.setUint32(0, 1 + bodyLen);
  out[4] = type;
  return { out, view };
}

/** `Join{ticket}`. */
export function encodeJoin(ticket: string): Uint8Array {
  const t = utf8.encode(ticket);
  const { out } = withHeader(FRAME.JOIN, t.length);
  out.set(t, 5);
  return out;
}

/** A reliable message to `peer` (0n = the room). */
export function encodeMessage(peer: bigint, data: Uint8Array): Uint8Array {
  const { out, view } = withHeader(FRAME.MESSAGE, 8 + data.length);
  view.setBigUint64(5, peer);
  out.set(data, 13);
  return out;
}

/** An unreliable message's datagram body. */
export function encodePeer(peer: bigint, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(8 + data.length);
  new DataView(out.buffer).setBigUint64(0, peer);
  out.set(data, 8);
  return out;
}

/** Splits a datagram (or message body) into `[peer, data]`. */
export function decodePeer(bytes: Uint8Array): [bigint, Uint8Array] {
  if (bytes.length < 8) throw new FrameError("frame-malformed", "message shorter than its peer id");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return [view.getBigUint64(0), bytes.subarray(8)];
}

/** Bytes that are not a frame, with the close code the node would use. */
export class FrameError extends Error {
  constructor(
    readonly code: "frame-malformed" | "message-too-large",
    message: string,
  ) {
    super(message);
  }
}

/** Decodes one frame body (type byte and what follows). */
export function decodeBody(body: Uint8Array): Frame {
  if (body.length === 0) throw new FrameError("frame-malformed", "empty frame");
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const rest = body.subarray(1);
  try {
    switch (body[0]) {
      case FRAME.JOIN:
        return { type: "join", ticket: fromUtf8.decode(rest) };
      case FRAME.JOINED: {
        if (rest.length < 13) throw new FrameError("frame-malformed", "short Joined");
        const playerId = view.getBigUint64(1);
        const tickHz = view.getUint32(9);
        const roomLen = body[13];
        if (rest.length < 13 + roomLen + 1) throw new FrameError("frame-malformed", "short Joined room");
        const room = fromUtf8.decode(body.subarray(14, 14 + roomLen));
        const tag = body[14 + roomLen];
        const after = body.subarray(15 + roomLen);
        let saved: SavedState;
        if (tag === 0 && after.length === 0) saved = { kind: "none" };
        else if (tag === 1) saved = { kind: "found", data: after.slice() };
        else if (tag === 2 && after.length === 0) saved = { kind: "unavailable" };
        else throw new FrameError("frame-malformed", "bad saved state");
        return { type: "joined", playerId, room, tickHz, saved };
      }
      case FRAME.REFUSED:
        if (rest.length < 4) throw new FrameError("frame-malformed", "short Refused");
        return { type: "refused", code: view.getUint32(1), reason: new TextDecoder().decode(body.subarray(5)) };
      case FRAME.MESSAGE: {
        const [peer, data] = decodePeer(rest);
        return { type: "message", peer, data: data.slice() };
      }
      case FRAME.MOVED:
        return { type: "moved", target: moveTarget(fromUtf8.decode(rest)) };
      default:
        throw new FrameError("frame-malformed", `unknown frame type 0x${body[0].toString(16).padStart(2, "0")}`);
    }
  } catch (e) {
    if (e instanceof FrameError) throw e;
    throw new FrameError("frame-malformed", String(e));
  }
}

/**
 * Takes stream bytes as they arrive and yields whole frames, refusing a length over `maxFrame`
 * before buffering it.
 */
export class FrameDecoder {
  private buf = new Uint8Array(0);

  constructor(private readonly maxFrame = 1 << 20) {}

  push(bytes: Uint8Array): void {
    if (this.buf.length === 0) {
      this.buf = bytes.slice();
      return;
    }
    const next = new Uint8Array(this.buf.length + bytes.length);
    next.set(this.buf);
    next.set(bytes, this.buf.length);
    this.buf = next;
  }

  /** The next whole frame, or `null` until more bytes arrive. */
  next(): Frame | null {
    if (this.buf.length < 4) return null;
    const len = new DataView(this.buf.buffer, this.buf.byteOffset, 4).getUint32(0);
    if (len > this.maxFrame) throw new FrameError("message-too-large", `frame of ${len} bytes is over ${this.maxFrame}`);
    if (this.buf.length < 4 + len) return null;
    const body = this.buf.subarray(4, 4 + len);
    this.buf = this.buf.subarray(4 + len);
    return decodeBody(body);
  }
}

/** Decodes a WebSocket message, which is exactly one frame. */
export function decodeWhole(bytes: Uint8Array): Frame {
  if (bytes.length < 4) throw new FrameError("frame-malformed", "message shorter than a frame header");
  const len = new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0);
  if (len !== bytes.length - 4) throw new FrameError("frame-malformed", "a WebSocket message must be exactly one frame");
  return decodeBody(bytes.subarray(4));
}
