#!/usr/bin/env bash
# The browser issue's WebSocket scenario: the node's CPU per arena player-tick with WebSocket bots
# (every message a reliable frame, as a browser without WebTransport sends it) against the same
# bots as native QUIC players, on the same node, rounds alternated; first, memory per idle
# player for each.
# Usage: scripts/bench-websocket.sh [bots] [seconds] [rounds]
set -euo pipefail
# Every edge on loopback gets its own WebTransport port (the default is UDP 7704); old binaries
# in A/B runs ignore the variable.
export OUTPOST_LISTEN_WEBTRANSPORT=${OUTPOST_LISTEN_WEBTRANSPORT:-127.0.0.1:0}
cd "$(dirname "$0")/.."
. scripts/bench-edge.sh
bots=${1:-500}; secs=${2:-10}; rounds=${3:-3}
flags=(--listen-websocket 127.0.0.1:0 --max-joining-per-ip 100000 --max-connections 100000)
fresh() { # a new node, for a memory measurement no earlier run has touched
  if [ -n "$pid" ]; then kill "$pid"; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work/edge" "$work/edge.json"
  start_bench_edge "${flags[@]}"
}
run() { # carrier extra...
  local c=$1; shift
  $bin/outpost-bench players --json --edge-ready "$work/edge.json" --key "$work/ticket.key" --module arena \
    --bots "$bots" --rate 20 --duration "$secs" --room-size 8 --carrier "$c" "$@"
}
# Idle players, each carrier on a fresh node: after other runs the allocator reuses freed memory
# and the resident growth per player reads low.
fresh; run quic --idle > "$work/quic-idle.json"
fresh; run websocket --idle > "$work/websocket-idle.json"
fresh
for r in $(seq 1 "$rounds"); do
  if [ $((r % 2)) = 1 ]; then order="quic websocket"; else order="websocket quic"; fi
  for c in $order; do run "$c" > "$work/$c-$r.json"; done
done
python3 - "$work" "$rounds" "$bots" <<'PY'
import json, sys, statistics as st
work, rounds, bots = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def load(name):
    v = json.load(open(f"{work}/{name}.json"))
    return v.get("node", v)
q = [load(f"quic-{r}") for r in range(1, rounds + 1)]
w = [load(f"websocket-{r}") for r in range(1, rounds + 1)]
for name, xs in (("quic", q), ("websocket", w)):
    print(f"{name}: µs per player-tick {[round(x['cpu_us_per_player_tick'], 1) for x in xs]}, "
          f"joined {[x['bots_joined'] for x in xs]}, disconnects {[x['disconnects'] for x in xs]}, "
          f"rtt p50 {[round(x['rtt_p50_ms'], 2) for x in xs]}")
ratios = [b["cpu_us_per_player_tick"] / a["cpu_us_per_player_tick"] for a, b in zip(q, w)]
iq, iw = load("quic-idle"), load("websocket-idle")
print(json.dumps({"bots": bots, "quic_us": round(st.median(x["cpu_us_per_player_tick"] for x in q), 2),
                  "websocket_us": round(st.median(x["cpu_us_per_player_tick"] for x in w), 2),
                  "ratio_rounds": [round(r, 3) for r in ratios], "ratio": round(st.median(ratios), 3),
                  "idle_kib_quic": iq.get("memory_kib_per_player"), "idle_kib_websocket": iw.get("memory_kib_per_player")}))
PY
