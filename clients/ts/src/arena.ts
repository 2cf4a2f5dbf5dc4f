/**
 * The `arena` example game's messages (`guest-modules/arena`): what a page sends and draws.
 * The room broadcasts `b'S', version, ticks u32, count u8`, then per player `id u64, x u16,
 * y u16, score u16, flags u8` (little-endian, flags bit 0 = "it") on every tick.
 */
export const ARENA_WIDTH = 1000;
export const ARENA_HEIGHT = 1000;
export const ARENA_RADIUS = 20;

export interface ArenaPlayer {
  id: bigint;
  x: number;
  y: number;
  score: number;
  it: boolean;
}

export interface ArenaState {
  version: number;
  ticks: number;
  players: ArenaPlayer[];
}

/** The input that moves in direction (`dx`, `dy`), each -127..127 (0, 0 stops). */
export function arenaInput(dx: number, dy: number): Uint8Array {
  const clamp = (v: number) => Math.max(-127, Math.min(127, Math.round(v)));
  return new Uint8Array([0x4d, clamp(dx) & 0xff, clamp(dy) & 0xff]);
}

/** A state broadcast, or `undefined` for any other message. */
export function decodeArenaState(bytes: Uint8Array): ArenaState | undefined {
  if (bytes.length < 7 || bytes[0] !== 0x53) return undefined;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const count = bytes[6];
  if (bytes.length < 7 + count * 15) return undefined;
  const players: ArenaPlayer[] = [];
  for (let i = 0; i < count; i++) {
    const o = 7 + i * 15;
    players.push({
      id: view.getBigUint64(o, true),
      x: view.getUint16(o + 8, true),
      y: view.getUint16(o + 10, true),
      score: view.getUint16(o + 12, true),
      it: (bytes[o + 14] & 1) === 1,
    });
  }
  return { version: bytes[1], ticks: view.getUint32(2, true), players };
}
