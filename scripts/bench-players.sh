#!/usr/bin/env bash
# The players issue's performance scenarios, each with its baseline in the same run. Starts one edge
# node on loopback (release build), runs `outpost-bench players` scenarios against it, prints JSON summaries.
# Usage: scripts/bench-players.sh [quick]   (quick: smaller and shorter, for a smoke check)
set -euo pipefail
# Every edge on loopback gets its own WebTransport port (the default is UDP 7704); old binaries
# in A/B runs ignore the variable.
export OUTPOST_LISTEN_WEBTRANSPORT=${OUTPOST_LISTEN_WEBTRANSPORT:-127.0.0.1:0}
cd "$(dirname "$0")/.."
. scripts/bench-edge.sh

start_bench_edge

scale=1; dur=60; [ "${1:-}" = quick ] && { scale=10; dur=5; }
run() { # name, args...
  local name=$1; shift
  echo "== $name: outpost-bench players $*" >&2
  $bin/outpost-bench players --json --edge-ready "$work/edge.json" --key "$work/ticket.key" "$@" > "$work/$name.json"
  python3 - "$work/$name.json" "$name" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); n = r["node"]; b = r.get("baseline") or {}
keys = ["sent", "received", "dropped", "rtt_p50_ms", "rtt_p99_ms", "disconnects", "cpu_us_per_player_tick",
        "throughput_ratio", "cpu_per_message_ratio", "cpu_per_player_tick_ratio"]
out = {k: r.get(k) for k in keys}
out.update(bots_joined=n["bots_joined"], join_failures=n["join_failures"], received_per_sec=round(n["received_per_sec"]),
           node_cpu_us_per_message=n.get("cpu_us_per_message"), memory_kib_per_player=n.get("memory_kib_per_player"))
# QUIC packets (ACK-only ones included) per message sent, on the bots' side of the last round.
per_msg = lambda x, k="udp_datagrams": round(x[k] / x["sent"], 2) if x["sent"] else None
out["udp_datagrams_per_message"] = per_msg(n)
# Split by direction: on loopback a sender pays for the whole trip of what it sends.
out["udp_datagrams_per_message_from_node"] = per_msg(n, "udp_datagrams_from_server")
if r.get("rounds"):
    out["rounds"] = [{k: v and round(v, 3) for k, v in x.items()} for x in r["rounds"]]
if b:
    out["baseline_udp_datagrams_per_message"] = per_msg(b)
    out["baseline_udp_datagrams_per_message_from_echo"] = per_msg(b, "udp_datagrams_from_server")
    out["baseline"] = {k: b.get(k) for k in ["received", "received_per_sec", "rtt_p50_ms", "rtt_p99_ms", "cpu_us_per_message"]}
print(sys.argv[2], json.dumps(out))
PY
}
# First, while the node is fresh: later runs leave memory the allocator reuses for these players.
run idle-memory --module relay --bots $((1000 / scale)) --rate 1 --duration 5 --room-size 8 --idle
run relay-throughput --module relay --bots $((200 / scale)) --rate 500 --duration 10 --room-size 2 --baseline
rounds=3; [ "${1:-}" = quick ] && rounds=2
run arena-cpu --module arena --bots $((1000 / scale)) --rate 20 --duration 20 --room-size 8 --baseline --rounds $rounds
# The same over a 60 ms round trip, where the node's ACK-frequency request takes effect (on
# loopback quinn caps the requested ACK delay at 25 ms, shorter than the 50 ms between messages).
run arena-cpu-60ms --module arena --bots $((1000 / scale)) --rate 20 --duration 20 --room-size 8 --baseline \
  --rounds $rounds --path-delay-ms 60
run arena-2000 --module arena --bots $((2000 / scale)) --rate 20 --duration $dur --room-size 8
