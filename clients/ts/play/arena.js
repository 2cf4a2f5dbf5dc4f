// The arena page: route through the routers in /config.json (measuring the candidates first),
// join over WebTransport (or WebSocket), draw every player from the room's state broadcasts,
// and steer with the arrow keys or WASD. Query parameters: name, transport
// (auto|webtransport|websocket), probe (0 to skip measuring), router (routers to ask instead of
// the configured ones), ticket (join with a ticket a matchmaker handed out instead of the
// route's).
import {
  ARENA_HEIGHT, ARENA_RADIUS, ARENA_WIDTH, Routers, arenaInput, connect, decodeArenaState, probe,
} from "../dist/src/index.js";

const params = new URLSearchParams(location.search);
const canvas = document.getElementById("arena");
const g = canvas.getContext("2d");
const el = (id) => document.getElementById(id);

// What the tests read: the phase, the player, the last state, the close.
const outpost = (window.outpost = { phase: "starting", carrier: null, playerId: null, state: null, close: null, rttMs: null });

function status(text, error = false) {
  el("status").textContent = text;
  el("status").className = error ? "error" : "";
}

function setPhase(p) {
  outpost.phase = p;
  document.body.dataset.phase = p;
}

/** Player colours: the page's own player blue, everyone else red; "it" gets a yellow ring. */
export const ME = "#2060ff";
export const OTHER = "#e04040";

function draw(state) {
  const sx = canvas.width / ARENA_WIDTH;
  const sy = canvas.height / ARENA_HEIGHT;
  g.fillStyle = "#1d2a1d";
  g.fillRect(0, 0, canvas.width, canvas.height);
  for (const p of state.players) {
    const mine = p.id === outpost.playerId;
    g.beginPath();
    g.arc(p.x * sx, p.y * sy, ARENA_RADIUS * sx, 0, Math.PI * 2);
    g.fillStyle = mine ? ME : OTHER;
    g.fill();
    if (p.it) {
      g.lineWidth = 3;
      g.strokeStyle = "#ffd000";
      g.stroke();
    }
  }
  const rows = [...state.players]
    .sort((a, b) => b.score - a.score)
    .map((p) => `<tr class="${p.id === outpost.playerId ? "me" : ""}"><td>${p.id}${p.it ? " (it)" : ""}</td><td>${p.score}</td></tr>`);
  el("scores").innerHTML = rows.join("");
}

async function main() {
  const config = await (await fetch("/config.json")).json();
  const routers = new Routers(params.get("router") ?? config.routers);
  outpost.routers = routers;
  const module = config.module ?? "arena";
  const name = params.get("name") ?? `web${Math.floor(Math.random() * 1000)}`;
  const transport = params.get("transport") ?? "auto";
  status("finding a node…");
  let route;
  if (params.get("probe") === "0") {
    route = await routers.route({ module, name });
  } else {
    const candidates = await routers.candidates(module);
    const results = await probe(candidates);
    outpost.probed = results;
    const reachable = results.filter((r) => r.loss < 1);
    route = reachable.length ? await routers.routeMeasured({ module, name }, results) : await routers.route({ module, name });
  }
  const ticket = params.get("ticket") ?? route.ticket;
  el("node").textContent = route.node.id;
  status(`joining ${route.node.id}…`);
  const player = await connect({ node: route.node, ticket }, { transport });
  outpost.carrier = player.carrier;
  outpost.playerId = player.joined.playerId;
  outpost.room = player.joined.room;
  outpost.node = route.node.id;
  el("carrier").textContent = player.carrier;
  status(`playing in ${player.joined.room} as ${name} (player ${player.joined.playerId})`);
  setPhase("playing");
  player.onMove((node) => {
    // The room moved to another node and the player followed it there.
    outpost.node = node;
    outpost.moves = (outpost.moves ?? 0) + 1;
    outpost.carrier = player.carrier;
    el("node").textContent = node;
    el("carrier").textContent = player.carrier;
  });

  player.onMessage((m) => {
    if (m.data[0] === 0x70 && m.data.length === 9) {
      // b'p' + the send time we put in the ping.
      const sent = new DataView(m.data.buffer, m.data.byteOffset + 1, 8).getFloat64(0);
      outpost.rttMs = performance.now() - sent;
      el("rtt").textContent = `${outpost.rttMs.toFixed(1)} ms`;
      return;
    }
    const state = decodeArenaState(m.data);
    if (state) {
      outpost.state = state;
      outpost.states = (outpost.states ?? 0) + 1;
      draw(state);
    }
  });
  player.onClose((info) => {
    outpost.close = info;
    setPhase("closed");
    status(info.name ? `closed: ${info.name} (0x${info.code.toString(16)}): ${info.reason}` : `closed: ${info.reason}`, !!info.name);
  });

  // Steering: the held keys' direction, sent when it changes.
  const held = new Set();
  const keys = { ArrowLeft: [-1, 0], a: [-1, 0], ArrowRight: [1, 0], d: [1, 0], ArrowUp: [0, -1], w: [0, -1], ArrowDown: [0, 1], s: [0, 1] };
  let last = "0,0";
  const steer = () => {
    let dx = 0, dy = 0;
    for (const k of held) { dx += keys[k][0]; dy += keys[k][1]; }
    const now = `${dx},${dy}`;
    if (now !== last) {
      last = now;
      player.send(arenaInput(dx * 127, dy * 127), { reliable: true });
    }
  };
  addEventListener("keydown", (e) => { if (keys[e.key]) { held.add(e.key); steer(); e.preventDefault(); } });
  addEventListener("keyup", (e) => { if (keys[e.key]) { held.delete(e.key); steer(); } });
  outpost.steer = (dx, dy) => player.send(arenaInput(dx * 127, dy * 127), { reliable: true });
  outpost.leave = () => player.leave();
  setInterval(() => {
    const ping = new Uint8Array(9);
    ping[0] = 0x50;
    new DataView(ping.buffer).setFloat64(1, performance.now());
    try { player.send(ping, { reliable: false }); } catch { /* closed */ }
  }, 1000);
}

main().catch((e) => {
  outpost.close = e.close ?? { reason: String(e.message ?? e) };
  setPhase("error");
  const c = outpost.close;
  status(c.name ? `refused: ${c.name} (0x${c.code.toString(16)}): ${c.reason}` : `error: ${c.reason}`, true);
});
