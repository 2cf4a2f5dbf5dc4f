#!/usr/bin/env bash
# `make demo`: a guided tour on the embedded defaults. Starts an edge node on loopback, uploads the
# arena guest with curl, creates a room, drives it with operator signals, hot-upgrades it, and stops.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
node_pid=""
cleanup() {
  if [ -n "$node_pid" ] && kill -0 "$node_pid" 2>/dev/null; then
    kill -TERM "$node_pid" 2>/dev/null || true
    wait "$node_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
wait_file() {
  for _ in $(seq 1 500); do [ -s "$1" ] && return 0; sleep 0.02; done
  echo "timed out waiting for $1" >&2; exit 1
}
json_field() { python3 -c "import json,sys; print(json.load(sys.stdin)[sys.argv[1]])" "$1"; }

token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
step "Making a ticket signing key (the router's role until it lands)"
pubkey=$(target/release/outpost ticket keygen --key "$work/ticket.key")
echo "public key: $pubkey"
step "Starting an edge node (data in $work/edge, admin token from env)"
OUTPOST_ADMIN_TOKEN=$token target/release/edge-node \
  --data-dir "$work/edge" --listen-quic 127.0.0.1:0 --listen-probe 127.0.0.1:0 --listen-admin 127.0.0.1:0 \
  --ticket-pubkey="$pubkey" --ready-file "$work/edge.ready" 2> "$work/edge.log" &
node_pid=$!
wait_file "$work/edge.ready"
admin="http://$(json_field admin < "$work/edge.ready")"
echo "ready file: $(cat "$work/edge.ready")"
auth=(-H "Authorization: Bearer $token")

step "Uploading the arena guest ($(stat -c %s target/guests/arena.wasm) bytes) with curl"
curl -sS -X PUT "${auth[@]}" --data-binary @target/guests/arena.wasm "$admin/v1/modules/arena?tick_hz=20"; echo

step "Creating a room"
curl -sS -X POST "${auth[@]}" -d '{"module":"arena","room":"demo-match"}' "$admin/v1/rooms"; echo

signal() { curl -sS -X POST "${auth[@]}" --data-binary "$1" "$admin/v1/rooms/demo-match/signal"; echo; }
step "Driving it with operator signals"
ada=$(signal "spawn ada"); echo "spawn ada -> $ada"
bob=$(signal "spawn bob"); echo "spawn bob -> $bob"
echo "move ada to the top-left corner -> $(signal "move $ada -2000 -2000")"
echo "move bob next to ada -> $(signal "move $bob -2000 -1960")"
echo "state -> $(signal state)"

step "Hot upgrade to a second build of arena; the state carries over"
curl -sS -X PUT "${auth[@]}" --data-binary @target/guests/arena-v2.wasm "$admin/v1/modules/arena" > /dev/null
curl -sS -X POST "${auth[@]}" "$admin/v1/rooms/demo-match/upgrade"; echo
echo "version -> $(signal version)"
echo "state -> $(signal state)"

step "Room details"
curl -sS "${auth[@]}" "$admin/v1/rooms/demo-match" | python3 -m json.tool | head -20

step "50 bots play arena over QUIC for 5 seconds (8 per room, 20 inputs/s each)"
target/release/outpost bench --edge-ready "$work/edge.ready" --key "$work/ticket.key" \
  --module arena --bots 50 --rate 20 --duration 5 --room-size 8

step "A few metrics"
curl -sS "$admin/metrics" | grep -E '^outpost_(rooms|players_joined_total|messages_in_total|messages_out_total|module_compiles_total|guest_commits_total|room_upgrades_total) '

step "Stopping the node (SIGTERM)"
kill -TERM "$node_pid"; wait "$node_pid" || true; node_pid=""
echo "done."
