/**
 * Outpost close codes (DESIGN.md, `proto/src/codes.rs`): the same numbers on every carrier.
 * WebTransport carries the u32 code as it is; WebSocket cannot carry 0x101–0x111 in a close
 * frame, so the node sends `4000 + (code − 0x100)` there and {@link fromWebSocket} maps it back.
 */
export const CLOSE_CODES = {
  "bad-ticket": 0x101,
  "ticket-expired": 0x102,
  "ticket-replayed": 0x103,
  "wrong-node": 0x104,
  "unknown-module": 0x105,
  "room-full": 0x106,
  "join-refused": 0x107,
  "node-not-accepting": 0x108,
  "frame-malformed": 0x109,
  "message-too-large": 0x10a,
  "rate-limited": 0x10b,
  "slow-consumer": 0x10c,
  "module-fault": 0x10d,
  kicked: 0x10e,
  "node-shutdown": 0x10f,
  replaced: 0x110,
  "move-refused": 0x111,
} as const;

export type CloseCodeName = keyof typeof CLOSE_CODES;

const BY_NUMBER = new Map<number, CloseCodeName>(
  Object.entries(CLOSE_CODES).map(([name, n]) => [n, name as CloseCodeName]),
);

/** The name of an Outpost code, or `undefined` for any other number. */
export function codeName(code: number): CloseCodeName | undefined {
  return BY_NUMBER.get(code);
}

/** The WebSocket close code the node uses for an Outpost code. */
export function toWebSocket(code: number): number {
  return 4000 + (code - 0x100);
}

/** The Outpost code behind a WebSocket close code, or `undefined` when it is not one. */
export function fromWebSocket(wsCode: number): number | undefined {
  if (wsCode < 4000 || wsCode > 4999) return undefined;
  const code = wsCode - 4000 + 0x100;
  return BY_NUMBER.has(code) ? code : undefined;
}

/** Why a connection ended, the same on WebTransport and WebSocket. */
export interface CloseInfo {
  /** The Outpost code, when the node closed with one. */
  code?: number;
  /** Its name (`bad-ticket`, ...). */
  name?: CloseCodeName;
  /** The node's reason, or what the browser said. */
  reason: string;
}

/** A close as the page sees it, from a WebTransport close code (the u32 as it is). */
export function fromWebTransport(closeCode: number | undefined, reason: string): CloseInfo {
  const name = closeCode === undefined ? undefined : codeName(closeCode);
  return name ? { code: closeCode, name, reason } : { reason: reason || `closed (${closeCode ?? "no code"})` };
}

/** A close as the page sees it, from a WebSocket close event. */
export function fromWebSocketClose(wsCode: number, reason: string): CloseInfo {
  const code = fromWebSocket(wsCode);
  return code === undefined ? { reason: reason || `closed (${wsCode})` } : { code, name: codeName(code), reason };
}
