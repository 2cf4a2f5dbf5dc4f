#!/usr/bin/env bash
# Where an edge node's CPU goes, thread by thread, and what an idle node costs.
#
# Starts one edge node on loopback (release build) and
#   1. samples its CPU for IDLE seconds with a module loaded and no rooms (an idle node should
#      take none: the epoch ticker sleeps while no room exists);
#   2. runs `outpost-bench players` with 1,000 arena bots at 20 Hz in rooms of 8 and, over a window in the
#      middle of the run, reads each thread's scheduler figures from /proc: CPU time, time waiting
#      for a core, and voluntary / involuntary context switches, each per player-tick.
# Usage: scripts/bench-threads.sh   (env: IDLE=10 WARM=8 WINDOW=8 BOTS=1000 DURATION=20)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-edge.sh
idle=${IDLE:-10}; warm=${WARM:-8}; window=${WINDOW:-8}; bots=${BOTS:-1000}; duration=${DURATION:-20}

start_bench_edge

# One line per thread: tid, name, voluntary and involuntary switches, then /proc schedstat (CPU ns,
# wait ns, time slices).
snap() {
  for t in /proc/$pid/task/*; do
    printf '%s %s %s %s\n' "${t##*/}" "$(tr ' ' _ < "$t/comm")" \
      "$(awk '/^(voluntary|nonvoluntary)_ctxt_switches/ {printf "%s ", $2}' "$t/status")" "$(cat "$t/schedstat")"
  done
}
report() { # before, after, seconds, unit count, unit name
  python3 - "$@" <<'PY'
import collections, sys
def load(p):
    return {(f[0], f[1]): [int(v) for v in f[2:7]] for f in (line.split() for line in open(p))}
a, b, secs, units, unit = load(sys.argv[1]), load(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
# Threads that lived through the whole window, summed by name (short-lived blocking-pool threads
# are left out: their figures cannot be split at the window's edges).
by_name = collections.defaultdict(lambda: [0] * 5)
for key in a.keys() & b.keys():
    for i in range(5):
        by_name[key[1]][i] += b[key][i] - a[key][i]
print(f"   over {secs:.1f} s, {units:.0f} {unit}s:")
for name in sorted(by_name):
    d = by_name[name]
    print(f"   {name:18s} CPU {d[2] / 1e3 / units:7.2f} µs  waiting {d[3] / 1e3 / units:7.2f} µs  "
          f"switches {d[0] / units:.3f} voluntary, {d[1] / units:.3f} involuntary  (per {unit})")
total = sum(d[2] for d in by_name.values())
print(f"   {'all threads':18s} CPU {total / 1e3 / units:7.2f} µs  (per {unit})")
PY
}

echo "== idle: a module loaded, no rooms, ${idle} s"
snap > "$work/i0"; t0=$(date +%s.%N); sleep "$idle"; snap > "$work/i1"; t1=$(date +%s.%N)
report "$work/i0" "$work/i1" "$(echo "$t1 - $t0" | bc)" "$(echo "$t1 - $t0" | bc)" second

echo "== load: outpost-bench players --module arena --bots $bots --rate 20 --duration $duration --room-size 8"
$bin/outpost-bench players --json --edge-ready "$work/edge.json" --key "$work/ticket.key" \
  --module arena --bots "$bots" --rate 20 --duration "$duration" --room-size 8 > "$work/bench.json" &
bench=$!
# The bots join first (about 5 s for 1,000); sample a window well inside the sending phase.
sleep "$warm"; snap > "$work/l0"; t0=$(date +%s.%N); sleep "$window"; snap > "$work/l1"; t1=$(date +%s.%N)
wait $bench
secs=$(echo "$t1 - $t0" | bc)
report "$work/l0" "$work/l1" "$secs" "$(echo "$bots * 20 * $secs" | bc)" player-tick
python3 - "$work/bench.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"   whole run: {r['cpu_us_per_player_tick']:.1f} µs per player-tick, "
      f"disconnects {r['disconnects'] or 'none'}")
PY
