// Drives Debian's Chromium (headless, through playwright-core) for tests/tests/browser.rs.
// Usage: node drive.mjs SCENARIO JSON_ARGS. The Rust test owns the processes (router, edges,
// `outpost play`, native bots); this script owns the pages. They talk in lines: this script
// prints `STEP name {json}` and waits for a `GO ...` line on stdin where the test has work to
// do in between. Any failed expectation exits non-zero with the page's status text.
import { chromium } from "playwright-core";
import { createInterface } from "node:readline";

const [scenario, rawArgs] = process.argv.slice(2);
const args = JSON.parse(rawArgs ?? "{}");
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const WAIT = 20_000;

function step(name, value = {}) {
  console.log(`STEP ${name} ${JSON.stringify(value, (_, v) => (typeof v === "bigint" ? v.toString() : v))}`);
}
async function go() {
  const { value, done } = await lines.next();
  if (done || !value.startsWith("GO")) throw new Error(`the test said ${JSON.stringify(value)}`);
  return value.slice(2).trim();
}
function check(cond, what) {
  if (!cond) throw new Error(`expected ${what}`);
}

async function open(browser, query, { noWebTransport = false } = {}) {
  const page = await browser.newPage();
  page.on("console", (m) => console.error(`[page ${query}] ${m.text()}`));
  if (noWebTransport) await page.addInitScript(() => delete window.WebTransport);
  await page.goto(`${args.play}?router=${encodeURIComponent(args.router)}&${query}`);
  return page;
}

async function playing(page) {
  try {
    await page.waitForFunction(() => window.outpost?.phase === "playing", null, { timeout: WAIT });
  } catch (e) {
    const text = await page.locator("#status").textContent();
    throw new Error(`the page did not start playing: ${text}`);
  }
  return page.evaluate(() => ({
    carrier: window.outpost.carrier,
    room: window.outpost.room,
    node: window.outpost.node,
    playerId: String(window.outpost.playerId),
  }));
}

/** Waits until the page's last state satisfies `fn(state, me)`, evaluated in the page. */
async function until(page, fn, what, arg = null) {
  try {
    await page.waitForFunction(
      ([src, a]) => {
        const s = window.outpost.state;
        return !!s && new Function("s", "me", "a", `return (${src})(s, me, a)`)(s, window.outpost.playerId, a);
      },
      [fn.toString(), arg],
      { timeout: WAIT, polling: 50 },
    );
  } catch {
    throw new Error(`timed out waiting for ${what}`);
  }
}

/**
 * The colours drawn where the guest's state puts each player (sprite centres), read in the same
 * turn as the state so no frame is drawn in between, and one background pixel.
 */
async function pixels(page) {
  return page.evaluate(() => {
    const c = document.getElementById("arena");
    const g = c.getContext("2d");
    const s = window.outpost.state;
    const at = (x, y) => Array.from(g.getImageData(Math.round(x), Math.round(y), 1, 1).data.slice(0, 3));
    const sx = c.width / 1000;
    return {
      players: s.players.map((p) => ({ id: String(p.id), mine: p.id === window.outpost.playerId, rgb: at(p.x * sx, p.y * sx) })),
      corner: at(1, 1),
    };
  });
}

const BLUE = [0x20, 0x60, 0xff];
const RED = [0xe0, 0x40, 0x40];
const same = (a, b) => a.every((v, i) => Math.abs(v - b[i]) <= 8);

async function twoPages(browser) {
  const a = await open(browser, "name=ada");
  const ia = await playing(a);
  const b = await open(browser, "name=bob");
  const ib = await playing(b);
  check(ia.carrier === "webtransport" && ib.carrier === "webtransport", `both on WebTransport, got ${ia.carrier}/${ib.carrier}`);
  check(ia.room === ib.room, `one room, got ${ia.room} and ${ib.room}`);
  // The page measured its candidates over WebTransport before routing, and can report them.
  const probed = await a.evaluate(() => window.outpost.probed);
  check(probed?.length >= 1 && probed.every((r) => r.loss < 1 && r.rtt_ms > 0), `measured candidates, got ${JSON.stringify(probed)}`);
  const ack = await a.evaluate(() => window.outpost.routers.report(window.outpost.probed));
  check(ack.accepted === probed.length, `the router took the page's report, got ${JSON.stringify(ack)}`);
  await until(a, (s) => s.players.length === 2, "page A to see two players");
  await until(b, (s) => s.players.length === 2, "page B to see two players");

  // A native bot joins the same room (the test starts it) and both pages see it.
  step("ready", { room: ia.room, node: ia.node });
  const bot = await go();
  for (const p of [a, b]) await until(p, (s, me, id) => s.players.some((q) => String(q.id) === id), "the bot on the page", bot);

  // Each page steers its player; the other page sees it move (the guest's positions).
  const xOf = async (page, id) => page.evaluate((id) => window.outpost.state.players.find((p) => String(p.id) === id).x, id);
  const yOf = async (page, id) => page.evaluate((id) => window.outpost.state.players.find((p) => String(p.id) === id).y, id);
  const ax0 = await xOf(b, ia.playerId);
  await a.evaluate((right) => window.outpost.steer(right ? 1 : -1, 0), ax0 <= 500);
  await until(b, (s, me, [id, x0]) => Math.abs(s.players.find((p) => String(p.id) === id).x - x0) > 60, "page B to see A move", [ia.playerId, ax0]);
  await a.evaluate(() => window.outpost.steer(0, 0));
  const by0 = await yOf(a, ib.playerId);
  await b.evaluate((down) => window.outpost.steer(0, down ? 1 : -1), by0 <= 500);
  await until(a, (s, me, [id, y0]) => Math.abs(s.players.find((p) => String(p.id) === id).y - y0) > 60, "page A to see B move", [ib.playerId, by0]);
  await b.evaluate(() => window.outpost.steer(0, 0));

  // The sprites are drawn where the guest's state says: own player blue, the others red.
  for (const page of [a, b]) {
    const px = await pixels(page);
    for (const p of px.players) check(same(p.rgb, p.mine ? BLUE : RED), `${p.mine ? "blue" : "red"} at player ${p.id}, got ${p.rgb}`);
    check(!same(px.corner, BLUE) && !same(px.corner, RED), `background in the corner, got ${px.corner}`);
    check(px.players.filter((p) => p.mine).length === 1, "exactly one own sprite");
  }
  await a.screenshot({ path: args.screenshot });
  step("webtransport-checked", { a: ia, b: ib });
  await go();

  // Without WebTransport in the page, the client falls back to WebSocket into the same room.
  const c = await open(browser, "name=cat", { noWebTransport: true });
  const ic = await playing(c);
  check(ic.carrier === "websocket", `the fallback page on WebSocket, got ${ic.carrier}`);
  check(ic.room === ia.room, "the fallback page in the same room");
  await until(a, (s) => s.players.length === 4, "page A to see the WebSocket page");
  const cx0 = await xOf(a, ic.playerId);
  await c.evaluate((right) => window.outpost.steer(right ? 1 : -1, 0), cx0 <= 500);
  await until(a, (s, me, [id, x0]) => Math.abs(s.players.find((p) => String(p.id) === id).x - x0) > 60, "page A to see the WebSocket page move", [ic.playerId, cx0]);
  await until(c, (s) => s.players.length === 4, "the WebSocket page to see everyone");

  // A forged ticket: the page shows the code and the reason.
  const d = await open(browser, `name=eve&ticket=${encodeURIComponent(args.forged)}`);
  await d.waitForFunction(() => window.outpost?.phase === "error", null, { timeout: WAIT });
  const text = await d.locator("#status").textContent();
  check(/bad-ticket \(0x101\)/.test(text) && /signature/.test(text), `the refusal on the page, got ${JSON.stringify(text)}`);
  step("done", { c: ic, refused: text });
}

async function portClosed(browser) {
  const page = await open(browser, "name=dan");
  const info = await playing(page);
  check(info.carrier === "websocket", `the WebSocket fallback with the WebTransport port closed, got ${info.carrier}`);
  step("ready", { room: info.room, node: info.node });
  const bot = await go();
  await until(page, (s, me, id) => s.players.some((q) => String(q.id) === id), "the bot on the page", bot);
  const x0 = await page.evaluate((id) => window.outpost.state.players.find((p) => String(p.id) === id).x, bot);
  // The test steers the bot toward the open side: one spawned by a wall could not move 30 the
  // other way.
  step("bot-seen", { x: x0 });
  await go();
  await until(page, (s, me, [id, x0]) => Math.abs(s.players.find((p) => String(p.id) === id).x - x0) > 30, "the bot to move", [bot, x0]);
  const ux0 = await page.evaluate((me) => window.outpost.state.players.find((p) => p.id === window.outpost.playerId).y, null);
  await page.evaluate((down) => window.outpost.steer(0, down ? 1 : -1), ux0 <= 500);
  await until(page, (s, me, y0) => Math.abs(s.players.find((p) => p.id === me).y - y0) > 60, "the page's own player to move", ux0);
  step("done", info);
}

/** Two pages, one on WebTransport and one on WebSocket, follow their room to another node. */
async function follow(browser) {
  const a = await open(browser, "name=wes&probe=0");
  const ia = await playing(a);
  const c = await open(browser, "name=sam&probe=0", { noWebTransport: true });
  const ic = await playing(c);
  check(ia.carrier === "webtransport" && ic.carrier === "websocket", `one page per carrier, got ${ia.carrier}/${ic.carrier}`);
  check(ia.room === ic.room, `one room, got ${ia.room} and ${ic.room}`);
  await until(a, (s) => s.players.length === 2, "page A to see both players");
  step("ready", { room: ia.room, node: ia.node });
  const target = await go();
  for (const [page, carrier] of [[a, "webtransport"], [c, "websocket"]]) {
    try {
      await page.waitForFunction((t) => window.outpost.node === t && window.outpost.moves === 1, target, { timeout: WAIT });
    } catch {
      throw new Error(`the ${carrier} page did not follow its room to ${target}: ${await page.locator("#status").textContent()}`);
    }
    const now = await page.evaluate(() => ({ carrier: window.outpost.carrier, phase: window.outpost.phase, states: window.outpost.states }));
    check(now.carrier === carrier && now.phase === "playing", `still playing on ${carrier}, got ${JSON.stringify(now)}`);
    await page.waitForFunction((n) => window.outpost.states > n + 20, now.states, { timeout: WAIT });
  }
  // Steering works on the new node: page C sees page A's player move there.
  const ax0 = await c.evaluate((id) => window.outpost.state.players.find((p) => String(p.id) === id).x, ia.playerId);
  await a.evaluate((right) => window.outpost.steer(right ? 1 : -1, 0), ax0 <= 500);
  await until(c, (s, me, [id, x0]) => Math.abs(s.players.find((p) => String(p.id) === id).x - x0) > 60, "page C to see A move on the new node", [ia.playerId, ax0]);
  step("done", { a: ia, c: ic });
}

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
let code = 0;
try {
  if (scenario === "two-pages") await twoPages(browser);
  else if (scenario === "port-closed") await portClosed(browser);
  else if (scenario === "follow") await follow(browser);
  else throw new Error(`unknown scenario ${scenario}`);
} catch (e) {
  console.log(`FAIL ${e.message}`);
  code = 1;
} finally {
  await browser.close();
}
process.exit(code);
