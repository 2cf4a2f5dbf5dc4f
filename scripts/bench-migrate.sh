#!/usr/bin/env bash
# The rooms-that-move scenario (issue 26): ROOMS arena rooms of 8 bots at 20 Hz (`outpost-bench
# players`, real QUIC, the bots follow each move on their own) moved back and forth between two
# real edge nodes MOVES times, all rooms at once, one round every 200 ms. Reports the room's pause
# as the source measures it (from its snapshot to the target's acceptance: the source's last tick
# is just before it, the target's first tick at most one tick phase after it), the operator's
# call time, the players' gap (the last state a bot got from the old node to the first from the
# new one, as the bots measure it), and the bots' disconnects over the whole run.
# With DRAIN=1 the rooms are not moved round by round: node A is drained once (`POST /v1/drain`,
# every room to B, four at a time) while the bots play, and the drain's time is reported.
# Usage: scripts/bench-migrate.sh [moves] [rooms];  DRAIN=1 scripts/bench-migrate.sh 0 [rooms]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release
moves=${1:-100}; nrooms=${2:-1}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; [ -n "${KEEP:-}" ] && cp -r "$work" "$KEEP"; rm -rf "$work"; }
trap cleanup EXIT
wait_file() { for _ in $(seq 1 1500); do [ -s "$1" ] && return 0; sleep 0.02; done; echo "no $1" >&2; exit 1; }
field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }
export OUTPOST_ADMIN_TOKEN=bench-admin OUTPOST_CLUSTER_TOKEN=bench-cluster RUST_LOG=${RUST_LOG:-warn}

$bin/region-router --data-dir "$work/router" --listen-http 127.0.0.1:0 --ready-file "$work/router.json" \
  2> "$work/router.log" &
pids+=($!)
wait_file "$work/router.json"
router="http://$(field "$work/router.json" http)"
pub=$($bin/outpost ticket keygen --key "$work/ticket.key")
for name in a b; do
  $bin/edge-node --data-dir "$work/$name" --listen-quic 127.0.0.1:0 --listen-probe 127.0.0.1:0 \
    --listen-admin 127.0.0.1:0 --listen-webtransport off --ready-file "$work/$name.json" --id "edge-$name" \
    --router "$router" --lat 51.5 --lon -0.1 --heartbeat-interval 200ms --ticket-pubkey="$pub" \
    --player-rate 1000 --player-burst 2000 --max-joining-per-ip 100000 2> "$work/$name.log" &
  pids+=($!)
  wait_file "$work/$name.json"
done
declare -A admin=([a]="http://$(field "$work/a.json" admin)" [b]="http://$(field "$work/b.json" admin)")
# Both nodes have the module, as after `outpost deploy`; with FETCH=1 only A has it and the
# first move fetches and compiles it on B.
for n in a ${FETCH:+_}b; do
  [ "$n" = _b ] && continue
  curl -sS -f -X PUT -H "Authorization: Bearer $OUTPOST_ADMIN_TOKEN" --data-binary @target/guests/arena.wasm \
    "${admin[$n]}/v1/modules/arena?max_players=8" > /dev/null
done
for _ in $(seq 1 100); do
  n=$(curl -sS -H "Authorization: Bearer $OUTPOST_ADMIN_TOKEN" "$router/v1/nodes" |
    python3 -c "import json,sys; print(sum(1 for n in json.load(sys.stdin)['nodes'] if n['health'] == 'healthy'))")
  [ "$n" = 2 ] && break; sleep 0.1
done
secs=$(python3 -c "print(int($moves * (0.3 + 0.12 * $nrooms) + 12 + (0.3 * $nrooms + 20 if '${DRAIN:-}' else 0)))")
$bin/outpost-bench players --json --edge-ready "$work/a.json" --key "$work/ticket.key" --module arena \
  --bots $((8 * nrooms)) --rate 20 --duration "$secs" --room-size 8 > "$work/bots.json" &
bots=$!
rooms=()
for _ in $(seq 1 2000); do
  mapfile -t rooms < <(curl -sS -H "Authorization: Bearer $OUTPOST_ADMIN_TOKEN" "${admin[a]}/v1/rooms" |
    python3 -c "import json,sys; [print(x['room']) for x in json.load(sys.stdin) if x['players'] == 8]")
  [ "${#rooms[@]}" -ge "$nrooms" ] && break; sleep 0.05
done
[ "${#rooms[@]}" -ge "$nrooms" ] || { echo "the bots filled ${#rooms[@]} of $nrooms rooms" >&2; exit 1; }
: > "$work/moves.txt"
move() { # from to room
  local start end reply
  start=$(date +%s.%N)
  reply=$(curl -sS -H "Authorization: Bearer $OUTPOST_ADMIN_TOKEN" -X POST -d "{\"to\":\"$2\"}" \
    "${admin[$1]}/v1/rooms/$3/migrate")
  end=$(date +%s.%N)
  echo "$reply $start $end" >> "$work/moves.txt"
}
if [ -n "${DRAIN:-}" ]; then
  start=$(date +%s.%N)
  curl -sS -H "Authorization: Bearer $OUTPOST_ADMIN_TOKEN" -X POST -d '{"deadline_ms":300000}' \
    "${admin[a]}/v1/drain" > "$work/drain.json"
  end=$(date +%s.%N)
  wait "$bots"
  python3 - "$work" "$start" "$end" <<'PY'
import json, sys
work, start, end = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
d = json.load(open(f"{work}/drain.json"))
node = json.load(open(f"{work}/bots.json")).get("node", {})
print(json.dumps({
    "rooms": len(d["rooms"]), "moved": d["moved"], "failed": d["failed"], "acked": d["acked"],
    "drain_ms": round(d["took_ms"], 1), "call_ms": round((end - start) * 1e3, 1),
    "bots_joined": node.get("bots_joined"), "disconnects": node.get("disconnects"), "bot_moves": node.get("moves"),
    "gap_p50_ms": node.get("move_gap_p50_ms"), "gap_p99_ms": node.get("move_gap_p99_ms"),
}))
PY
  exit 0
fi
for i in $(seq 1 "$moves"); do
  if [ $((i % 2)) = 1 ]; then from=a; to=edge-b; else from=b; to=edge-a; fi
  movers=()
  for r in "${rooms[@]:0:$nrooms}"; do move "$from" "$to" "$r" & movers+=($!); done
  wait "${movers[@]}"
  # Each room's players finish following before it moves again (a room still taking in its
  # last move's players answers 409).
  sleep "$(python3 -c "print(0.2 + 0.1 * ($nrooms - 1))")"
done
wait "$bots"
python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
moves = []
for line in open(f"{work}/moves.txt"):
    reply, start, end = line.rsplit(" ", 2)
    m = json.loads(reply)
    assert "paused_ms" in m, m
    m["call_ms"] = (float(end) - float(start)) * 1e3
    moves.append(m)
bots = json.load(open(f"{work}/bots.json"))
node = bots.get("node", bots)
def pct(xs, q):
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(round((len(xs) - 1) * q)))], 2)
# The first round also fetches and compiles the module on B: reported on its own.
first = [m for m in moves if m["from"] == "edge-a"][:1]
rest = moves[1:] if len(moves) > 1 else moves
paused = [m["paused_ms"] for m in rest]
call = [m["call_ms"] for m in rest]
out = {
    "moves": len(moves), "players_per_room": moves[0]["players"],
    "pause_p50_ms": pct(paused, 0.5), "pause_p99_ms": pct(paused, 0.99), "pause_max_ms": round(max(paused), 2),
    "first_move_pause_ms": round(moves[0]["paused_ms"], 2),
    "call_p50_ms": pct(call, 0.5), "call_p99_ms": pct(call, 0.99),
    "bots_joined": node["bots_joined"], "disconnects": node["disconnects"],
    "bot_moves": node.get("moves"), "gap_p50_ms": node.get("move_gap_p50_ms"), "gap_p99_ms": node.get("move_gap_p99_ms"),
    "rtt_p50_ms": node.get("rtt_p50_ms"), "rtt_p99_ms": node.get("rtt_p99_ms"),
}
print(json.dumps(out))
PY
