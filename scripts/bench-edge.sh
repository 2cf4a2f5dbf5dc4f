# Sourced by the player benchmarks from the repository root. Sets $bin (the release binaries)
# and $work (a scratch directory), and a trap that stops the node and removes $work on exit.
# `start_bench_edge` starts one release edge node on loopback in $work, with a fresh ticket key,
# player limits high enough that the load is not rate-limited, and `arena` uploaded with
# max_players=8; it sets $pid (the node) and $admin (its admin address). Arguments are extra
# edge-node flags.
bin=target/release
# Each node gets its own WebTransport port; a base build in A/B runs ignores the variable.
export OUTPOST_LISTEN_WEBTRANSPORT=${OUTPOST_LISTEN_WEBTRANSPORT:-127.0.0.1:0}
# The servers under test; `scripts/bench-ab.sh` points this at another build to compare two.
srv=${OUTPOST_SERVER_BIN:-$bin}
work=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

start_bench_edge() {
  local pub
  pub=$($bin/outpost ticket keygen --key "$work/ticket.key")
  OUTPOST_ADMIN_TOKEN=bench $srv/edge-node --data-dir "$work/edge" --listen-quic 127.0.0.1:0 \
    --listen-probe 127.0.0.1:0 --listen-admin 127.0.0.1:0 --ready-file "$work/edge.json" \
    --ticket-pubkey="$pub" --max-rooms 2000 --player-rate 1000 --player-burst 2000 "$@" 2> "$work/edge.log" &
  pid=$!
  for _ in $(seq 1 500); do [ -s "$work/edge.json" ] && break; sleep 0.02; done
  admin=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['admin'])" "$work/edge.json")
  curl -sS -X PUT -H "Authorization: Bearer bench" --data-binary @target/guests/arena.wasm \
    "http://$admin/v1/modules/arena?max_players=8" > /dev/null
}
