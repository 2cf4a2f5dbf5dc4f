/**
 * A browser player: joins an edge node with a route's ticket over WebTransport (reliable frames
 * on one bidirectional stream, unreliable messages as datagrams), or over WebSocket when the
 * browser has no WebTransport, the session cannot be opened, or the caller asks for it. The
 * same ticket, frames and close codes either way.
 */
import { type CloseInfo, codeName, fromWebSocketClose, fromWebTransport } from "./codes.js";
import { FrameDecoder, decodePeer, decodeWhole, encodeJoin, encodeMessage, encodePeer, type Frame } from "./frames.js";
import type { Route, RouteNode, WebTransportEndpoint } from "./router.js";

export type Carrier = "webtransport" | "websocket";

export interface Joined {
  playerId: bigint;
  room: string;
  tickHz: number;
}

export interface Message {
  /** Who sent it (0n = the room's guest). */
  from: bigint;
  data: Uint8Array;
  /** Whether it came reliably (always true over WebSocket). */
  reliable: boolean;
}

export interface ConnectOptions {
  /** `auto` (default): WebTransport, else WebSocket. */
  transport?: "auto" | Carrier;
  /** How long opening a WebTransport session may take before falling back, ms (default 3000). */
  webTransportTimeoutMs?: number;
  /** How long the join may take in all, ms (default 10000). */
  timeoutMs?: number;
}

/** A join the node refused, or a connection that could not be made. */
export class JoinError extends Error {
  constructor(readonly close: CloseInfo) {
    super(close.name ? `${close.name}: ${close.reason}` : close.reason);
  }
}

function hexToBytes(hex: string): Uint8Array {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** The WebTransport options that pin a node's published certificates (none with a CA pair). */
export function hashesFor(ep: WebTransportEndpoint): WebTransportOptions {
  if (ep.cert_sha256.length === 0) return {};
  return {
    serverCertificateHashes: ep.cert_sha256.map((h) => ({ algorithm: "sha-256", value: hexToBytes(h) as BufferSource })),
  };
}

type Listener<T> = (v: T) => void;

/** A joined player. */
export class Player {
  private messageListeners: Listener<Message>[] = [];
  private closeListeners: Listener<CloseInfo>[] = [];
  private closed?: CloseInfo;
  private pending: Message[] = [];

  private constructor(
    readonly carrier: Carrier,
    readonly joined: Joined,
    readonly node: RouteNode,
    private readonly sendReliable: (bytes: Uint8Array) => void,
    private readonly sendUnreliable: ((bytes: Uint8Array) => void) | null,
    private readonly closeFn: () => void,
  ) {}

  /** @internal */
  static create(
    carrier: Carrier,
    joined: Joined,
    node: RouteNode,
    reliable: (b: Uint8Array) => void,
    unreliable: ((b: Uint8Array) => void) | null,
    close: () => void,
  ): Player {
    return new Player(carrier, joined, node, reliable, unreliable, close);
  }

  /** Sends `data` to `to` (0n = the room). Unreliable messages go reliably over WebSocket. */
  send(data: Uint8Array, opts: { reliable?: boolean; to?: bigint } = {}): void {
    if (this.closed) throw new JoinError(this.closed);
    const to = opts.to ?? 0n;
    if (opts.reliable === false && this.sendUnreliable) this.sendUnreliable(encodePeer(to, data));
    else this.sendReliable(encodeMessage(to, data));
  }

  /** Calls `fn` for every message (those that arrived before are delivered at once). */
  onMessage(fn: Listener<Message>): void {
    this.messageListeners.push(fn);
    for (const m of this.pending.splice(0)) fn(m);
  }

  /** Calls `fn` once when the connection ends, with the Outpost code when the node sent one. */
  onClose(fn: Listener<CloseInfo>): void {
    if (this.closed) fn(this.closed);
    else this.closeListeners.push(fn);
  }

  /** Leaves the room. */
  leave(): void {
    this.closeFn();
  }

  /** @internal */
  deliver(m: Message): void {
    if (this.messageListeners.length === 0) this.pending.push(m);
    for (const fn of this.messageListeners) fn(m);
  }

  /** @internal */
  ended(info: CloseInfo): void {
    if (this.closed) return;
    this.closed = info;
    for (const fn of this.closeListeners.splice(0)) fn(info);
  }
}

function joinedOf(f: Frame, node: RouteNode): Joined {
  if (f.type === "joined") return { playerId: f.playerId, room: f.room, tickHz: f.tickHz };
  if (f.type === "refused") throw new JoinError({ code: f.code, name: codeName(f.code), reason: f.reason });
  throw new JoinError({ reason: `expected Joined from ${node.id}, got ${f.type}` });
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise((ok, fail) => {
    const t = setTimeout(() => fail(new JoinError({ reason: `${what}: no answer within ${ms} ms` })), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        ok(v);
      },
      (e) => {
        clearTimeout(t);
        fail(e);
      },
    );
  });
}

async function viaWebTransport(node: RouteNode, ticket: string, o: Required<ConnectOptions>): Promise<Player> {
  const ep = node.webtransport!;
  const wt = new WebTransport(ep.url, hashesFor(ep));
  // The close code and reason reach the page only through the session's close capsule.
  const closedInfo: Promise<CloseInfo> = wt.closed.then(
    (c) => fromWebTransport(c.closeCode, c.reason ?? ""),
    (e) => ({ reason: String(e?.message ?? e) }),
  );
  await withTimeout(wt.ready, o.webTransportTimeoutMs, "opening the WebTransport session");
  const bi = await wt.createBidirectionalStream();
  const writer = bi.writable.getWriter();
  const reader = bi.readable.getReader();
  await writer.write(encodeJoin(ticket));
  const dec = new FrameDecoder();
  const first = async (): Promise<Frame> => {
    for (;;) {
      const f = dec.next();
      if (f) return f;
      const { value, done } = await reader.read();
      if (done || !value) throw new JoinError(await closedInfo);
      dec.push(value);
    }
  };
  let joined: Joined;
  try {
    joined = joinedOf(await withTimeout(first().catch(async (e) => {
      throw e instanceof JoinError ? e : new JoinError(await closedInfo);
    }), o.timeoutMs, "joining"), node);
  } catch (e) {
    wt.close();
    throw e;
  }
  const dgWriter = wt.datagrams.writable.getWriter();
  const player = Player.create(
    "webtransport",
    joined,
    node,
    (b) => void writer.write(b).catch(() => {}),
    (b) => void dgWriter.write(b).catch(() => {}),
    () => wt.close({ closeCode: 0, reason: "bye" }),
  );
  void (async () => {
    try {
      for (;;) {
        let f: Frame | null;
        while ((f = dec.next())) if (f.type === "message") player.deliver({ from: f.peer, data: f.data, reliable: true });
        const { value, done } = await reader.read();
        if (done || !value) break;
        dec.push(value);
      }
    } catch {
      // the session's close says why
    }
  })();
  void (async () => {
    const dg = wt.datagrams.readable.getReader();
    try {
      for (;;) {
        const { value, done } = await dg.read();
        if (done || !value) break;
        try {
          const [from, data] = decodePeer(value);
          player.deliver({ from, data: data.slice(), reliable: false });
        } catch {
          // not a message: dropped, as the node drops malformed datagrams
        }
      }
    } catch {
      // closed
    }
  })();
  void closedInfo.then((info) => player.ended(info));
  return player;
}

async function viaWebSocket(node: RouteNode, ticket: string, o: Required<ConnectOptions>): Promise<Player> {
  const ws = new WebSocket(node.websocket!.url);
  ws.binaryType = "arraybuffer";
  let player: Player | undefined;
  return withTimeout(
    new Promise<Player>((ok, fail) => {
      let refused: CloseInfo | undefined;
      ws.onopen = () => ws.send(encodeJoin(ticket));
      ws.onmessage = (ev) => {
        let f: Frame;
        try {
          f = decodeWhole(new Uint8Array(ev.data as ArrayBuffer));
        } catch (e) {
          ws.close(1002, "not a frame");
          return;
        }
        if (player) {
          if (f.type === "message") player.deliver({ from: f.peer, data: f.data, reliable: true });
          return;
        }
        if (f.type === "refused") {
          refused = { code: f.code, name: codeName(f.code), reason: f.reason };
          return; // the close follows
        }
        try {
          const joined = joinedOf(f, node);
          player = Player.create("websocket", joined, node, (b) => ws.send(b), null, () => ws.close(1000, "bye"));
          ok(player);
        } catch (e) {
          fail(e);
        }
      };
      ws.onclose = (ev) => {
        const info = fromWebSocketClose(ev.code, ev.reason);
        if (player) player.ended(info);
        else fail(new JoinError(refused ?? info));
      };
    }),
    o.timeoutMs,
    "joining over WebSocket",
  );
}

/**
 * Joins the node a route chose with its ticket. With `transport: "auto"`, WebTransport is tried
 * first when the browser and the node have it; a session that cannot be opened falls back to
 * WebSocket (the ticket is only spent once a `Join` reaches the node).
 */
export async function connect(route: Pick<Route, "node" | "ticket">, opts: ConnectOptions = {}): Promise<Player> {
  const o: Required<ConnectOptions> = { transport: "auto", webTransportTimeoutMs: 3000, timeoutMs: 10000, ...opts };
  const { node, ticket } = route;
  const canWt = typeof WebTransport !== "undefined" && !!node.webtransport;
  if (o.transport === "webtransport" || (o.transport === "auto" && canWt)) {
    if (!canWt) throw new JoinError({ reason: "WebTransport is not available here or on the node" });
    try {
      return await viaWebTransport(node, ticket, o);
    } catch (e) {
      // A refusal is the node's answer; only a session that never opened falls back.
      if (o.transport === "webtransport" || (e instanceof JoinError && e.close.code !== undefined)) throw e;
      if (!node.websocket) throw e;
    }
  }
  if (!node.websocket) throw new JoinError({ reason: `node ${node.id} has no WebSocket endpoint` });
  return viaWebSocket(node, ticket, o);
}
