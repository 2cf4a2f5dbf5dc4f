/**
 * A browser player: joins an edge node with a route's ticket over WebTransport (reliable frames
 * on one bidirectional stream, unreliable messages as datagrams), or over WebSocket when the
 * browser has no WebTransport, the session cannot be opened, or the caller asks for it. The
 * same ticket, frames and close codes either way. A player follows its room when it moves to
 * another node (a `Moved` frame): it ends its old stream, joins the target with the move
 * credential and goes on there, keeping its player id and room.
 */
import { type CloseInfo, codeName, fromWebSocketClose, fromWebTransport } from "./codes.js";
import { FrameDecoder, decodePeer, decodeWhole, encodeJoin, encodeMessage, encodePeer, type Frame, type MoveTarget } from "./frames.js";
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

/** One connection to one node, as the player uses it; a room that moves swaps it for another. */
interface Link {
  readonly carrier: Carrier;
  readonly node: RouteNode;
  reliable(bytes: Uint8Array): void;
  unreliable: ((bytes: Uint8Array) => void) | null;
  /** Ends the reliable stream (the node forwards what it read up to there), then closes. */
  finish(): void;
  close(): void;
}

/** Where a link delivers what it receives after the join. */
interface Sink {
  frame(f: Frame): void;
  datagram(m: Message): void;
  closed(info: CloseInfo): void;
}

/** A joined player. */
export class Player {
  private messageListeners: Listener<Message>[] = [];
  private closeListeners: Listener<CloseInfo>[] = [];
  private moveListeners: Listener<string>[] = [];
  private closed?: CloseInfo;
  private pending: Message[] = [];
  private link!: Link;
  /** Which link is current: what an earlier one still delivers or says is ignored. */
  private generation = 0;
  /** Reliable frames sent while the player follows its room, for the new node. */
  private queued: Uint8Array[] | null = null;

  private constructor(
    readonly joined: Joined,
    private readonly opts: Required<ConnectOptions>,
  ) {}

  /** The carrier the player is on now. */
  get carrier(): Carrier {
    return this.link.carrier;
  }

  /** The node the player is on now (another one after its room moved). */
  get node(): RouteNode {
    return this.link.node;
  }

  /** @internal Joins `node` with `ticket` and returns the player on it. */
  static async join(node: RouteNode, ticket: string, opts: Required<ConnectOptions>): Promise<Player> {
    // What the link delivers before the player exists (frames that came with `Joined`) waits.
    let player: Player | undefined;
    const early: (() => void)[] = [];
    const sink: Sink = {
      frame: (f) => (player ? player.frame(f, 1) : early.push(() => player?.frame(f, 1))),
      datagram: (m) => (player ? player.datagram(m, 1) : early.push(() => player?.datagram(m, 1))),
      closed: (info) => (player ? player.linkClosed(info, 1) : early.push(() => player?.linkClosed(info, 1))),
    };
    const [link, joined] = await openLink(node, ticket, opts, sink);
    player = new Player(joined, opts);
    player.link = link;
    player.generation = 1;
    for (const f of early) f();
    return player;
  }

  /** Sends `data` to `to` (0n = the room). Unreliable messages go reliably over WebSocket. */
  send(data: Uint8Array, opts: { reliable?: boolean; to?: bigint } = {}): void {
    if (this.closed) throw new JoinError(this.closed);
    const to = opts.to ?? 0n;
    if (this.queued) {
      // Following the room: reliable messages go to the new node once joined, in order;
      // unreliable ones may be lost, as they may anyway.
      if (opts.reliable !== false) this.queued.push(encodeMessage(to, data));
      return;
    }
    if (opts.reliable === false && this.link.unreliable) this.link.unreliable(encodePeer(to, data));
    else this.link.reliable(encodeMessage(to, data));
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

  /** Calls `fn` with the new node's id each time the player has followed its room there. */
  onMove(fn: Listener<string>): void {
    this.moveListeners.push(fn);
  }

  /** Leaves the room. */
  leave(): void {
    this.link.close();
  }

  private deliver(m: Message): void {
    if (this.messageListeners.length === 0) this.pending.push(m);
    for (const fn of this.messageListeners) fn(m);
  }

  private frame(f: Frame, generation: number): void {
    if (generation !== this.generation) return;
    if (f.type === "message") this.deliver({ from: f.peer, data: f.data, reliable: true });
    else if (f.type === "moved") void this.follow(f.target);
  }

  private datagram(m: Message, generation: number): void {
    if (generation === this.generation) this.deliver(m);
  }

  private linkClosed(info: CloseInfo, generation: number): void {
    if (generation === this.generation) this.ended(info);
  }

  /**
   * The room moved: end the old stream (the old node forwards everything read up to that end,
   * and the new node delivers what this player sends there only after it), join the target
   * with the move credential, and go on there with the same player id and room.
   */
  private async follow(target: MoveTarget): Promise<void> {
    if (this.queued || this.closed) return;
    this.queued = [];
    const old = this.link;
    const generation = ++this.generation;
    old.finish();
    const node: RouteNode = {
      id: target.node,
      quic_addr: target.quic,
      cert_sha256: target.cert_sha256,
      region: old.node.region,
      probe_addr: "",
      webtransport: target.webtransport,
      websocket: target.websocket ? { url: target.websocket } : undefined,
    };
    const sink: Sink = {
      frame: (f) => this.frame(f, generation),
      datagram: (m) => this.datagram(m, generation),
      closed: (info) => this.linkClosed(info, generation),
    };
    try {
      let link: Link | undefined;
      // A whole room arrives at once; a node at its connection cap refuses before the join.
      for (let wait = 25; !link; wait *= 2) {
        try {
          [link] = await openLink(node, target.credential, this.opts, sink);
        } catch (e) {
          if (wait > 800 || !(e instanceof JoinError) || e.close.name !== "node-not-accepting") throw e;
          await new Promise((ok) => setTimeout(ok, wait));
        }
      }
      this.link = link;
      const queued = this.queued ?? [];
      this.queued = null;
      for (const b of queued) link.reliable(b);
      for (const fn of this.moveListeners) fn(target.node);
    } catch (e) {
      this.queued = null;
      const info = e instanceof JoinError ? e.close : { reason: String((e as Error)?.message ?? e) };
      this.ended({ code: 0x111, name: "move-refused", reason: `following the room to ${target.node}: ${info.reason}` });
    }
  }

  private ended(info: CloseInfo): void {
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

/** How long the old session of a moved player stays after its stream's end, for that end to arrive. */
const MOVE_FLUSH_MS = 1000;

async function viaWebTransport(node: RouteNode, ticket: string, o: Required<ConnectOptions>, sink: Sink): Promise<[Link, Joined]> {
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
  const link: Link = {
    carrier: "webtransport",
    node,
    reliable: (b) => void writer.write(b).catch(() => {}),
    unreliable: (b) => void dgWriter.write(b).catch(() => {}),
    finish: () =>
      void writer
        .close()
        .catch(() => {})
        .then(() => setTimeout(() => wt.close({ closeCode: 0, reason: "moved" }), MOVE_FLUSH_MS)),
    close: () => wt.close({ closeCode: 0, reason: "bye" }),
  };
  void (async () => {
    try {
      for (;;) {
        let f: Frame | null;
        while ((f = dec.next())) sink.frame(f);
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
          sink.datagram({ from, data: data.slice(), reliable: false });
        } catch {
          // not a message: dropped, as the node drops malformed datagrams
        }
      }
    } catch {
      // closed
    }
  })();
  void closedInfo.then((info) => sink.closed(info));
  return [link, joined];
}

async function viaWebSocket(node: RouteNode, ticket: string, o: Required<ConnectOptions>, sink: Sink): Promise<[Link, Joined]> {
  const ws = new WebSocket(node.websocket!.url);
  ws.binaryType = "arraybuffer";
  let joined: Joined | undefined;
  return withTimeout(
    new Promise<[Link, Joined]>((ok, fail) => {
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
        if (joined) {
          sink.frame(f);
          return;
        }
        if (f.type === "refused") {
          refused = { code: f.code, name: codeName(f.code), reason: f.reason };
          return; // the close follows
        }
        try {
          joined = joinedOf(f, node);
          const link: Link = {
            carrier: "websocket",
            node,
            reliable: (b) => ws.send(b),
            unreliable: null,
            // The socket is ordered: its close follows everything sent before it.
            finish: () => ws.close(1000, "moved"),
            close: () => ws.close(1000, "bye"),
          };
          ok([link, joined]);
        } catch (e) {
          fail(e);
        }
      };
      ws.onclose = (ev) => {
        const info = fromWebSocketClose(ev.code, ev.reason);
        if (joined) sink.closed(info);
        else fail(new JoinError(refused ?? info));
      };
    }),
    o.timeoutMs,
    "joining over WebSocket",
  );
}

/**
 * Opens a link to `node` and joins with `ticket`: WebTransport first when the options allow it
 * and both sides have it; a session that cannot be opened falls back to WebSocket (the ticket is
 * only spent once a `Join` reaches the node).
 */
async function openLink(node: RouteNode, ticket: string, o: Required<ConnectOptions>, sink: Sink): Promise<[Link, Joined]> {
  const canWt = typeof WebTransport !== "undefined" && !!node.webtransport;
  if (o.transport === "webtransport" || (o.transport === "auto" && canWt)) {
    if (!canWt) throw new JoinError({ reason: "WebTransport is not available here or on the node" });
    try {
      return await viaWebTransport(node, ticket, o, sink);
    } catch (e) {
      // A refusal is the node's answer; only a session that never opened falls back.
      if (o.transport === "webtransport" || (e instanceof JoinError && e.close.code !== undefined)) throw e;
      if (!node.websocket) throw e;
    }
  }
  if (!node.websocket) throw new JoinError({ reason: `node ${node.id} has no WebSocket endpoint` });
  return viaWebSocket(node, ticket, o, sink);
}

/**
 * Joins the node a route chose with its ticket. With `transport: "auto"`, WebTransport is tried
 * first when the browser and the node have it; a session that cannot be opened falls back to
 * WebSocket (the ticket is only spent once a `Join` reaches the node). When the player's room
 * moves to another node, the player follows it on its own ({@link Player.onMove}).
 */
export async function connect(route: Pick<Route, "node" | "ticket">, opts: ConnectOptions = {}): Promise<Player> {
  const o: Required<ConnectOptions> = { transport: "auto", webTransportTimeoutMs: 3000, timeoutMs: 10000, ...opts };
  return Player.join(route.node, route.ticket, o);
}
