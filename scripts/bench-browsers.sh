#!/usr/bin/env bash
# The browser issue's scenario: the node's CPU per arena player-tick with WebTransport bots
# (HTTP/3 sessions, datagrams for unreliable messages, as a browser sends them) and WebSocket bots
# (every message a reliable frame) against the same bots as native QUIC players, on the same
# node, carriers alternated in each round; first, memory per idle player for each, on a fresh node.
# Usage: scripts/bench-browsers.sh [bots] [seconds] [rounds]
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
carriers=(quic webtransport websocket)
for c in "${carriers[@]}"; do fresh; run "$c" --idle > "$work/$c-idle.json"; done
fresh
for r in $(seq 1 "$rounds"); do
  # Each round starts with another carrier, so none always runs on the warmest node.
  for i in 0 1 2; do
    c=${carriers[$(( (i + r) % 3 ))]}
    run "$c" > "$work/$c-$r.json"
  done
done
python3 - "$work" "$rounds" "$bots" <<'PY'
import json, sys, statistics as st
work, rounds, bots = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def load(name):
    v = json.load(open(f"{work}/{name}.json"))
    return v.get("node", v)
runs = {c: [load(f"{c}-{r}") for r in range(1, rounds + 1)] for c in ("quic", "webtransport", "websocket")}
for name, xs in runs.items():
    print(f"{name}: µs per player-tick {[round(x['cpu_us_per_player_tick'], 1) for x in xs]}, "
          f"joined {[x['bots_joined'] for x in xs]}, disconnects {[x['disconnects'] for x in xs]}, "
          f"rtt p50 {[round(x['rtt_p50_ms'], 2) for x in xs]}")
out = {"bots": bots}
for c in ("quic", "webtransport", "websocket"):
    out[f"{c}_us"] = round(st.median(x["cpu_us_per_player_tick"] for x in runs[c]), 2)
    out[f"idle_kib_{c}"] = load(f"{c}-idle").get("memory_kib_per_player")
for c in ("webtransport", "websocket"):
    ratios = [b["cpu_us_per_player_tick"] / a["cpu_us_per_player_tick"] for a, b in zip(runs["quic"], runs[c])]
    out[f"{c}_ratio_rounds"] = [round(r, 3) for r in ratios]
    out[f"{c}_ratio"] = round(st.median(ratios), 3)
print(json.dumps(out))
PY
