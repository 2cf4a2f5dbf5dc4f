/**
 * Measuring nodes from a browser, which cannot send the UDP beacon's datagrams: the same beacon
 * probe (`magic | seq u32 | time u64 | padding`) goes as a WebTransport datagram to the node's
 * probe session, or as a WebSocket message to its probe path. The node answers within its
 * per-source rate and never with more bytes than it got.
 */
import type { Candidate, ProbeResult } from "./router.js";
import { hashesFor } from "./client.js";

const REQUEST = [0x4f, 0x50, 0x71, 0x31]; // "OPq1"
const REPLY = [0x4f, 0x50, 0x72, 0x31]; // "OPr1"

/** A probe request padded to `len` bytes (16..1200). */
export function encodeProbe(seq: number, sentUs: bigint, len = 64): Uint8Array {
  const out = new Uint8Array(Math.min(Math.max(len, 16), 1200));
  out.set(REQUEST, 0);
  const view = new DataView(out.buffer);
  view.setUint32(4, seq);
  view.setBigUint64(8, sentUs);
  return out;
}

/** The sequence number of a reply, or `undefined` for anything that is not one. */
export function parseReply(bytes: Uint8Array): number | undefined {
  if (bytes.length < 16 || REPLY.some((b, i) => bytes[i] !== b)) return undefined;
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(4);
}

export interface ProbeOptions {
  /** Probes per node (default 3). */
  count?: number;
  /** Gap between probes, ms (default 5). */
  gapMs?: number;
  /** The whole measurement's budget, ms (default 250 plus the session set-up). */
  budgetMs?: number;
}

/** Median RTT over the replies; `loss` 1 when none came back. */
function summarize(node: string, rtts: number[], sent: number): ProbeResult {
  if (rtts.length === 0) return { node, rtt_ms: 0, loss: 1 };
  const s = [...rtts].sort((a, b) => a - b);
  return { node, rtt_ms: s[Math.floor(s.length / 2)], loss: 1 - rtts.length / sent };
}

async function probeWebTransport(c: Candidate, o: Required<ProbeOptions>): Promise<number[]> {
  const wt = new WebTransport(c.webtransport!.probe_url!, hashesFor(c.webtransport!));
  const rtts: number[] = [];
  try {
    await wt.ready;
    const sentAt = new Map<number, number>();
    const reader = wt.datagrams.readable.getReader();
    const writer = wt.datagrams.writable.getWriter();
    const done = (async () => {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || !value) return;
        const seq = parseReply(value);
        const t = seq === undefined ? undefined : sentAt.get(seq);
        if (t !== undefined) rtts.push(performance.now() - t);
        if (rtts.length === o.count) return;
      }
    })();
    for (let seq = 0; seq < o.count; seq++) {
      sentAt.set(seq, performance.now());
      await writer.write(encodeProbe(seq, BigInt(Math.round(performance.now() * 1000))));
      await new Promise((r) => setTimeout(r, o.gapMs));
    }
    await Promise.race([done, new Promise((r) => setTimeout(r, o.budgetMs))]);
  } finally {
    wt.close();
  }
  return rtts;
}

async function probeWebSocket(url: string, o: Required<ProbeOptions>): Promise<number[]> {
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  const rtts: number[] = [];
  const sentAt = new Map<number, number>();
  try {
    await new Promise<void>((ok, fail) => {
      ws.onopen = () => ok();
      ws.onerror = () => fail(new Error(`probe socket ${url} failed`));
    });
    const done = new Promise<void>((ok) => {
      ws.onmessage = (ev) => {
        const seq = parseReply(new Uint8Array(ev.data as ArrayBuffer));
        const t = seq === undefined ? undefined : sentAt.get(seq);
        if (t !== undefined) rtts.push(performance.now() - t);
        if (rtts.length === o.count) ok();
      };
      ws.onclose = () => ok();
    });
    for (let seq = 0; seq < o.count; seq++) {
      sentAt.set(seq, performance.now());
      ws.send(encodeProbe(seq, BigInt(Math.round(performance.now() * 1000))));
      await new Promise((r) => setTimeout(r, o.gapMs));
    }
    await Promise.race([done, new Promise((r) => setTimeout(r, o.budgetMs))]);
  } finally {
    ws.close();
  }
  return rtts;
}

/**
 * Measures each candidate in parallel over WebTransport (where the browser has it and the node
 * serves it) or WebSocket; a node that cannot be reached is reported with loss 1.
 */
export async function probe(candidates: Candidate[], opts: ProbeOptions = {}): Promise<ProbeResult[]> {
  const o = { count: 3, gapMs: 5, budgetMs: 250, ...opts };
  const haveWt = typeof WebTransport !== "undefined";
  return Promise.all(
    candidates.map(async (c) => {
      try {
        if (haveWt && c.webtransport?.probe_url) return summarize(c.node, await probeWebTransport(c, o), o.count);
        if (c.websocket_probe) return summarize(c.node, await probeWebSocket(c.websocket_probe, o), o.count);
      } catch {
        // fall through: unreachable
      }
      return summarize(c.node, [], o.count);
    }),
  );
}
