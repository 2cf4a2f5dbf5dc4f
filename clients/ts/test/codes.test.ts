import { test } from "node:test";
import assert from "node:assert/strict";
import { CLOSE_CODES, codeName, fromWebSocket, fromWebSocketClose, fromWebTransport, toWebSocket } from "../src/codes.js";

test("websocket close codes are 4000 + (code - 0x100) and map back", () => {
  assert.equal(toWebSocket(CLOSE_CODES["bad-ticket"]), 4001);
  assert.equal(toWebSocket(CLOSE_CODES.replaced), 4016);
  assert.equal(toWebSocket(CLOSE_CODES["move-refused"]), 4017);
  for (const code of Object.values(CLOSE_CODES)) assert.equal(fromWebSocket(toWebSocket(code)), code);
  assert.equal(fromWebSocket(1000), undefined);
  assert.equal(fromWebSocket(4999), undefined);
  assert.deepEqual(fromWebSocketClose(4011, "too fast"), { code: 0x10b, name: "rate-limited", reason: "too fast" });
  assert.deepEqual(fromWebSocketClose(1006, ""), { reason: "closed (1006)" });
});

test("webtransport carries the code as it is", () => {
  assert.deepEqual(fromWebTransport(0x101, "ticket signature does not verify"), {
    code: 0x101,
    name: "bad-ticket",
    reason: "ticket signature does not verify",
  });
  assert.equal(codeName(0x10f), "node-shutdown");
  assert.deepEqual(fromWebTransport(0, "bye"), { reason: "bye" });
});
