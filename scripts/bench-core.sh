#!/usr/bin/env bash
# The core region's ingest rate: a real core (embedded store, then PostgreSQL when a server is
# installed) on loopback, `outpost-bench core` streaming updates over a real edge link, against an
# append-and-fsync loop of the same bytes and batch size on the same disk, in the same run. Then the
# whole path: an edge whose `echo` room commits in bulk, its outbox, the link, the core's store
# (`outpost-bench forward`), for each store.
# Usage: scripts/bench-core.sh [updates] [batch]
set -euo pipefail
# Every edge on loopback gets its own WebTransport port (the default is UDP 7704); old binaries
# in A/B runs ignore the variable.
export OUTPOST_LISTEN_WEBTRANSPORT=${OUTPOST_LISTEN_WEBTRANSPORT:-127.0.0.1:0}
cd "$(dirname "$0")/.."
bin=target/release
# The servers under test; `scripts/bench-ab.sh` points this at another build to compare two.
srv=${OUTPOST_SERVER_BIN:-$bin}
updates=${1:-200000}; batch=${2:-500}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
wait_file() { for _ in $(seq 1 500); do [ -s "$1" ] && return 0; sleep 0.02; done; echo "no $1" >&2; exit 1; }
export OUTPOST_CLUSTER_TOKEN=bench-cluster OUTPOST_ADMIN_TOKEN=bench-admin

RUST_LOG=warn $srv/core-region --data-dir "$work/core" --listen-quic 127.0.0.1:0 --listen-http 127.0.0.1:0 \
  --ready-file "$work/core.json" 2> "$work/core.log" &
pids+=($!)
wait_file "$work/core.json"
echo "== embedded store" >&2
$bin/outpost-bench core --json --core-ready "$work/core.json" --updates "$updates" --batch "$batch" \
  --baseline-dir "$work/core"

# An edge forwarding to the core whose ready file is $1; runs `outpost-bench forward` through it.
forward() {
  local ready=$1 name=$2; shift 2
  local quic cert http
  read -r quic cert http < <(python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(r['quic'], r['cert_sha256'], r['http'])" "$ready")
  RUST_LOG=warn $srv/edge-node --data-dir "$work/edge-$name" --listen-quic 127.0.0.1:0 --listen-probe 127.0.0.1:0 \
    --listen-admin 127.0.0.1:0 --ready-file "$work/edge-$name.json" --id "bench-$name" \
    --core "$quic" --core-cert-sha256 "$cert" 2> "$work/edge-$name.log" &
  pids+=($!)
  wait_file "$work/edge-$name.json"
  local admin
  admin=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['admin'])" "$work/edge-$name.json")
  curl -sS -f -X PUT -H "Authorization: Bearer $OUTPOST_ADMIN_TOKEN" --data-binary @target/guests/echo.wasm \
    "http://$admin/v1/modules/echo" > /dev/null
  echo "== edge → core, $name store" >&2
  $bin/outpost-bench forward --json --edge "http://$admin" --core "http://$http" --updates "$updates" "$@"
}
forward "$work/core.json" embedded --baseline-dir "$work/edge-embedded"

pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -n "$pgbin" ] && [ "$(id -u)" = 0 ] && [ "${OUTPOST_BENCH_PG:-1}" = 1 ]; then
  echo "== PostgreSQL store (throw-away cluster on a unix socket)" >&2
  chmod 755 "$work" && mkdir -p "$work/pg" && chown postgres "$work/pg"
  runuser -u postgres -- "$pgbin/initdb" -D "$work/pg/data" -A trust -U postgres > /dev/null
  runuser -u postgres -- "$pgbin/postgres" -D "$work/pg/data" -k "$work/pg" -c listen_addresses= -p 5432 \
    2> "$work/pg.log" &
  pids+=($!)
  for _ in $(seq 1 500); do "$pgbin/pg_isready" -q -h "$work/pg" -p 5432 && break; sleep 0.02; done
  RUST_LOG=warn $srv/core-region --data-dir "$work/core-pg" --listen-quic 127.0.0.1:0 --listen-http 127.0.0.1:0 \
    --store "host=$work/pg port=5432 user=postgres dbname=postgres" --ready-file "$work/core-pg.json" \
    2> "$work/core-pg.log" &
  pids+=($!)
  wait_file "$work/core-pg.json"
  $bin/outpost-bench core --json --core-ready "$work/core-pg.json" --updates "$updates" --batch "$batch"
  forward "$work/core-pg.json" postgres
fi
