#!/usr/bin/env bash
# Compares two builds of the servers on the benchmarks that a refactoring must not slow down,
# alternating A B B A per benchmark so that the machine's drift hits both alike. The load tools
# (`outpost-bench`) are this tree's for both sides; only edge-node, region-router and core-region
# come from the two directories.
#   arena: 1,000 arena bots at 20 Hz in rooms of 8, against the raw quinn echo in the same run
#          (--rounds 3): node CPU per player-tick / echo CPU per datagram, median of the rounds
#   relay: 200 relay bots at 500 msg/s in pairs, with the echo: CPU per message ratio
#   route: GET /v1/route with 100 nodes against the hello server (scripts/bench-router.sh)
#   core:  updates/s into an embedded-store core, and through an edge (scripts/bench-core.sh)
# Usage: scripts/bench-ab.sh BEFORE_BIN_DIR [AFTER_BIN_DIR (default target/release)] > results.jsonl
set -euo pipefail
cd "$(dirname "$0")/.."
before=${1:?usage: scripts/bench-ab.sh BEFORE_BIN_DIR [AFTER_BIN_DIR]}; after=${2:-target/release}
for d in "$before" "$after"; do
  for b in edge-node region-router core-region; do [ -x "$d/$b" ] || { echo "$d/$b is missing" >&2; exit 1; }; done
done

one() { # side dir benchmark
  local side=$1 dir=$2 what=$3
  echo "== $what: $side ($dir)" >&2
  case $what in
    arena|relay) OUTPOST_SERVER_BIN=$dir bash -c '
        . scripts/bench-edge.sh; start_bench_edge
        if [ "$1" = arena ]; then args=(--module arena --bots 1000 --rate 20 --duration 20 --room-size 8 --rounds 3)
        else args=(--module relay --bots 200 --rate 500 --duration 10 --room-size 2); fi
        $bin/outpost-bench players --json --edge-ready "$work/edge.json" --key "$work/ticket.key" --baseline "${args[@]}" \
          > "$work/r.json"
        python3 -c "
import json, sys
r = json.load(open(sys.argv[1]))
print(json.dumps({k: r.get(k) for k in [\"cpu_per_player_tick_ratio\", \"cpu_per_message_ratio\", \"throughput_ratio\",
    \"cpu_us_per_player_tick\", \"disconnects\"]} | {\"rounds\": [x.get(\"cpu_per_player_tick_ratio\") for x in r.get(\"rounds\") or []]}))
" "$work/r.json"' _ "$what" ;;
    route) OUTPOST_SERVER_BIN=$dir bash scripts/bench-router.sh 3 5 16 | tail -1 ;;
    core) OUTPOST_SERVER_BIN=$dir OUTPOST_BENCH_PG=0 bash scripts/bench-core.sh 200000 500 \
            | python3 -c "
import json, sys
rs = [json.loads(l) for l in sys.stdin if l.startswith('{')]
print(json.dumps({'core_updates_per_s': rs[0].get('updates_per_s'), 'forward_updates_per_s': rs[1].get('updates_per_s')}))" ;;
  esac
}

for what in ${OUTPOST_AB_BENCHES:-arena relay route core}; do
  for side in A B B A; do
    dir=$before; [ "$side" = B ] && dir=$after
    # A run that failed (a bench's own hiccup, such as a bulk signal over its CPU budget) is
    # tried once more, so one bad run does not end the comparison.
    result=$(one "$side" "$dir" "$what" || true)
    [ -n "$result" ] || result=$(one "$side" "$dir" "$what")
    printf '{"bench": "%s", "side": "%s", "result": %s}\n' "$what" "$side" "$result"
  done
done
