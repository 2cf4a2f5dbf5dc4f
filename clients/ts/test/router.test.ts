import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { RouterError, Routers } from "../src/router.js";
import { arenaInput, decodeArenaState } from "../src/arena.js";
import { encodeProbe, parseReply } from "../src/probe.js";

// A route reply as the router writes it (router/src/http.rs), served over real HTTP.
const ROUTE = {
  node: {
    id: "edge-a",
    quic_addr: "127.0.0.1:7701",
    cert_sha256: "ab".repeat(32),
    region: "eu",
    probe_addr: "127.0.0.1:7702",
    webtransport: { url: "https://127.0.0.1:7704/v1/wt", cert_sha256: ["cd".repeat(32), "ef".repeat(32)] },
  },
  alternates: [],
  ticket: "v1.payload.signature",
  expires_at: "2026-12-07T00:00:00Z",
  player: 42,
  estimate: { rtt_ms: 12.5, method: "geo" },
  client: { ip: "127.0.0.1" },
};

async function serve(handler: (path: string, body: string) => [number, unknown]): Promise<[string, () => void]> {
  const server = createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      const [status, reply] = handler(req.url ?? "", body);
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(reply));
    });
  });
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  const { port } = server.address() as AddressInfo;
  return [`http://127.0.0.1:${port}`, () => server.close()];
}

test("routes carry the ticket and the webtransport hashes; a dead router is skipped", async () => {
  const seen: string[] = [];
  const [url, stop] = await serve((path, body) => {
    seen.push(path + " " + body);
    return [200, ROUTE];
  });
  try {
    // Port 9 on loopback refuses the connection: the next router answers.
    const r = new Routers(["http://127.0.0.1:9", url]);
    const route = await r.route({ module: "arena", name: "Ada" });
    assert.equal(route.ticket, "v1.payload.signature");
    assert.deepEqual(route.node.webtransport?.cert_sha256, ["cd".repeat(32), "ef".repeat(32)]);
    await r.routeMeasured({ module: "arena" }, [{ node: "edge-a", rtt_ms: 3, loss: 0 }]);
    assert.deepEqual(seen, [
      "/v1/route?module=arena&name=Ada ",
      '/v1/route?module=arena {"results":[{"node":"edge-a","rtt_ms":3,"loss":0}]}',
    ]);
  } finally {
    stop();
  }
});

test("router errors keep their status and code", async () => {
  const [url, stop] = await serve(() => [503, { error: "no registered node has module \"x\"", code: "no-module" }]);
  try {
    await assert.rejects(new Routers(url).route({ module: "x" }), (e: RouterError) => e.status === 503 && e.code === "no-module");
  } finally {
    stop();
  }
  await assert.rejects(new Routers("http://127.0.0.1:9").candidates("x"), (e: RouterError) => e.code === "unreachable");
});

test("probes and arena messages", () => {
  const p = encodeProbe(7, 99n, 64);
  assert.equal(p.length, 64);
  assert.equal(parseReply(p), undefined, "a request is not a reply");
  p.set([0x4f, 0x50, 0x72, 0x31], 0);
  assert.equal(parseReply(p), 7);
  assert.deepEqual(arenaInput(200, -1), new Uint8Array([0x4d, 127, 255]));
  const state = new Uint8Array([0x53, 1, 5, 0, 0, 0, 1, 3, 0, 0, 0, 0, 0, 0, 0, 0xe8, 0x03, 0x14, 0, 2, 0, 1]);
  assert.deepEqual(decodeArenaState(state), { version: 1, ticks: 5, players: [{ id: 3n, x: 1000, y: 20, score: 2, it: true }] });
  assert.equal(decodeArenaState(new Uint8Array([0x53, 1])), undefined);
});
