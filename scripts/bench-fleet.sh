#!/usr/bin/env bash
# The fleet-scale router issue's probing scenario: how long a client spends probing the router's
# candidates before it has a route (`outpost-bench route-probed`, the client library's own
# route_probed), over loopback and over a 60 ms path, alternating rounds in one run.
# Five real edge-nodes serve module `near` with their beacons on loopback; five serve `far`
# behind `outpost-bench udp-relay`, which holds each probe 60 ms on its way to the beacon.
# Usage: scripts/bench-fleet.sh [rounds] [runs-per-round]
set -euo pipefail
# Every edge on loopback gets its own WebTransport port (the default is UDP 7704); old binaries
# in A/B runs ignore the variable.
export OUTPOST_LISTEN_WEBTRANSPORT=${OUTPOST_LISTEN_WEBTRANSPORT:-127.0.0.1:0}
cd "$(dirname "$0")/.."
bin=target/release
rounds=${1:-3}; runs=${2:-40}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
wait_file() { for _ in $(seq 1 1500); do [ -s "$1" ] && return 0; sleep 0.02; done; echo "no $1" >&2; exit 1; }
field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }
export OUTPOST_ADMIN_TOKEN=bench-admin OUTPOST_CLUSTER_TOKEN=bench-cluster RUST_LOG=warn

# Routes from loopback are one client address: lift its rate limit so the bench measures time.
$bin/region-router --data-dir "$work/router" --listen-http 127.0.0.1:0 --ready-file "$work/router.json" \
  --client-rate 1000 --client-burst 1000 --prefix-rate 1000 --prefix-burst 1000 2> "$work/router.log" &
pids+=($!)
wait_file "$work/router.json"
router="http://$(field "$work/router.json" http)"

edge() { # name module [relay-ready-file]
  local name=$1 module=$2 advertise=()
  if [ -n "${3:-}" ]; then advertise=(--advertise-probe "$(field "$3" addr)"); fi
  $bin/edge-node --data-dir "$work/$name" --listen-quic 127.0.0.1:0 --listen-probe 127.0.0.1:0 \
    --listen-admin 127.0.0.1:0 --ready-file "$work/$name.json" --id "$name" --router "$router" \
    --lat "$((RANDOM % 120 - 60))" --lon "$((RANDOM % 300 - 150))" --region "r-$name" \
    --heartbeat-interval 500ms "${advertise[@]}" 2> "$work/$name.log" &
  pids+=($!)
  wait_file "$work/$name.json"
  curl -sS -f -X PUT -H "Authorization: Bearer $OUTPOST_ADMIN_TOKEN" --data-binary @target/guests/echo.wasm \
    "http://$(field "$work/$name.json" admin)/v1/modules/$module" > /dev/null
}
for i in 1 2 3 4 5; do edge "near-$i" near; done
for i in 1 2 3 4 5; do
  $bin/outpost-bench udp-relay --delay-ms 60 --ready-file "$work/relay-$i.json" --to-ready-file "$work/far-$i.json" &
  pids+=($!)
  wait_file "$work/relay-$i.json"
  edge "far-$i" far "$work/relay-$i.json"
done
# Every node registered with its module before timing starts.
for _ in $(seq 1 200); do
  n=$(curl -sS -H "Authorization: Bearer $OUTPOST_ADMIN_TOKEN" "$router/v1/nodes" |
    python3 -c "import json,sys; print(sum(1 for n in json.load(sys.stdin)['nodes'] if n['modules']))")
  [ "$n" = 10 ] && break; sleep 0.1
done
[ "$n" = 10 ] || { echo "only $n nodes registered" >&2; exit 1; }

for r in $(seq 1 "$rounds"); do
  for m in near far; do
    $bin/outpost-bench route-probed --json --router "$router" --module "$m" --runs "$runs" > "$work/$m-$r.json"
  done
done
python3 - "$work" "$rounds" <<'PY'
import json, sys, statistics as st
work, rounds = sys.argv[1], int(sys.argv[2])
out = {}
for m in ("near", "far"):
    xs = [json.load(open(f"{work}/{m}-{r}.json")) for r in range(1, rounds + 1)]
    assert all(x["measured_self"] == x["runs"] for x in xs), f"{m}: some routes were not measured-self: {xs}"
    print(f"{m}: probe p50 {[round(x['probe_p50_ms'], 1) for x in xs]} p99 {[round(x['probe_p99_ms'], 1) for x in xs]}"
          f" total p50 {[round(x['total_p50_ms'], 1) for x in xs]}")
    out[m] = {k: round(st.median(x[k] for x in xs), 2) for k in
              ("candidates_p50_ms", "probe_p50_ms", "probe_p99_ms", "total_p50_ms", "total_p99_ms")}
    out[m]["candidates"] = xs[0]["candidates"]
print(json.dumps(out))
PY
