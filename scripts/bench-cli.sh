#!/usr/bin/env bash
# The CLI issue's measurements: probe accuracy (`outpost-bench probe`: a node's beacon against a
# bare UDP echo, same probe code, same run) and `outpost deploy` of arena to three nodes (wall time,
# cold compiles, then with --canary).
# Usage: scripts/bench-cli.sh
set -euo pipefail
# Every edge on loopback gets its own WebTransport port (the default is UDP 7704); old binaries
# in A/B runs ignore the variable.
export OUTPOST_LISTEN_WEBTRANSPORT=${OUTPOST_LISTEN_WEBTRANSPORT:-127.0.0.1:0}
cd "$(dirname "$0")/.."
bin=target/release
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
wait_file() { for _ in $(seq 1 500); do [ -s "$1" ] && return 0; sleep 0.02; done; echo "no $1" >&2; exit 1; }
field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }
export OUTPOST_ADMIN_TOKEN=bench-admin OUTPOST_CLUSTER_TOKEN=bench-cluster

RUST_LOG=warn $bin/region-router --data-dir "$work/router" --listen-http 127.0.0.1:0 --ready-file "$work/router.json" \
  2> "$work/router.log" &
pids+=($!)
wait_file "$work/router.json"
export OUTPOST_ROUTER="http://$(field "$work/router.json" http)"
for n in a b c; do
  # The beacon's per-source rate limit is raised: the benchmark sends 500 probes a second from one address.
  RUST_LOG=warn $bin/edge-node --id "node-$n" --data-dir "$work/$n" --listen-quic 127.0.0.1:0 --listen-probe 127.0.0.1:0 \
    --listen-admin 127.0.0.1:0 --router "$OUTPOST_ROUTER" --lat 10 --lon 10 --heartbeat-interval 200ms \
    --probe-rate 5000 --probe-burst 5000 --ready-file "$work/$n.json" 2> "$work/$n.log" &
  pids+=($!)
done
for n in a b c; do wait_file "$work/$n.json"; done
for _ in $(seq 1 100); do
  [ "$($bin/outpost nodes --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["nodes"]))')" = 3 ] && break
  sleep 0.05
done

echo "== probe accuracy: beacon vs bare UDP echo, 5 rounds × 200 probes each, 2 ms apart" >&2
$bin/outpost-bench probe --json --node "$(field "$work/a.json" probe)"

echo "== outpost deploy arena to 3 nodes (the first compiles on each node; later names reuse the compiled code of the same bytes)" >&2
for i in 1 2 3; do
  $bin/outpost deploy target/guests/arena.wasm --name "arena$i" --json \
    | python3 -c 'import json,sys; r=json.load(sys.stdin); print(json.dumps({"total_ms": round(r["total_ms"]), "per_node_ms": [round(x["ms"]) for x in r["results"]]}))'
done
echo "== the same with --canary (one node, a room created and signalled, then the other two)" >&2
for i in 4 5 6; do
  $bin/outpost deploy target/guests/arena.wasm --name "arena$i" --canary --json \
    | python3 -c 'import json,sys; r=json.load(sys.stdin); print(json.dumps({"total_ms": round(r["total_ms"]), "per_node_ms": [round(x["ms"]) for x in r["results"]]}))'
done
