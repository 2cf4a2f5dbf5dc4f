#!/usr/bin/env bash
# Soak: a core region and an edge node forwarding to it, on loopback, under everything at once for
# a bounded time: arena bots (outpost-bench players), a stream of operator signals each committing
# 100 keys, and hostile rooms (spin, hog, trap, flood guests) made and provoked again and again.
# Every 10 s it samples each process's resident memory, open descriptors and threads. At the end
# it checks that no bot was disconnected and that every commit the node answered reached the core,
# and writes the table and the verdicts between the soak markers of RELIABILITY.md.
# Usage: scripts/soak.sh [--minutes N (10)] [--bots N (300)] [--no-write]
set -euo pipefail
# Every edge on loopback gets its own WebTransport port (the default is UDP 7704); old binaries
# in A/B runs ignore the variable.
export OUTPOST_LISTEN_WEBTRANSPORT=${OUTPOST_LISTEN_WEBTRANSPORT:-127.0.0.1:0}
cd "$(dirname "$0")/.."
minutes=10; bots=300; write=1
while [ $# -gt 0 ]; do
  case $1 in
    --minutes) minutes=$2; shift 2 ;;
    --bots) bots=$2; shift 2 ;;
    --no-write) write=0; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ $minutes =~ ^[0-9]+$ ]] && [ "$minutes" -ge 1 ] && [ "$minutes" -le 1440 ] || { echo "--minutes must be 1..1440" >&2; exit 2; }
bin=target/release
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
wait_file() { for _ in $(seq 1 500); do [ -s "$1" ] && return 0; sleep 0.02; done; echo "no $1" >&2; exit 1; }
json() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }
export OUTPOST_CLUSTER_TOKEN=soak-cluster OUTPOST_ADMIN_TOKEN=soak-admin
seconds=$((minutes * 60))

RUST_LOG=warn $bin/core-region --data-dir "$work/core" --listen-quic 127.0.0.1:0 --listen-http 127.0.0.1:0 \
  --ready-file "$work/core.json" 2> "$work/core.log" &
core_pid=$!; pids+=($core_pid)
wait_file "$work/core.json"
pub=$($bin/outpost ticket keygen --key "$work/ticket.key")
RUST_LOG=warn $bin/edge-node --data-dir "$work/edge" --listen-quic 127.0.0.1:0 --listen-probe 127.0.0.1:0 \
  --listen-admin 127.0.0.1:0 --ready-file "$work/edge.json" --ticket-pubkey="$pub" --max-rooms 2000 \
  --player-rate 1000 --player-burst 2000 --call-budget 50ms \
  --core "$(json "$work/core.json" quic)" --core-cert-sha256 "$(json "$work/core.json" cert_sha256)" \
  2> "$work/edge.log" &
edge_pid=$!; pids+=($edge_pid)
wait_file "$work/edge.json"
admin="http://$(json "$work/edge.json" admin)"
core_http="http://$(json "$work/core.json" http)"
api() { curl -sS -H "Authorization: Bearer $OUTPOST_ADMIN_TOKEN" "$@"; }
api -f -X PUT --data-binary @target/guests/arena.wasm "$admin/v1/modules/arena?max_players=8" > /dev/null
api -f -X PUT --data-binary @target/guests/echo.wasm "$admin/v1/modules/echo" > /dev/null
for kind in spin hog trap flood; do
  api -f -X PUT --data-binary "@target/guests/$kind.wasm" "$admin/v1/modules/$kind" > /dev/null
done
api -f -X POST -d '{"module":"echo","room":"ledger"}' "$admin/v1/rooms" > /dev/null
started=$(date +%s)
deadline=$((started + seconds))

# The bots, for the whole run.
$bin/outpost-bench players --json --edge-ready "$work/edge.json" --key "$work/ticket.key" --module arena \
  --bots "$bots" --rate 20 --room-size 8 --duration "$seconds" > "$work/bots.json" 2> "$work/bots.log" &
bots_pid=$!; pids+=($bots_pid)

# Commits: one signal of 100 keys at a time, the keys cycling through 50 × 100 as a game's
# players' do (so the store stays the size of the game, not of the run); a call counts once its
# reply says so.
( n=0
  while [ "$(date +%s)" -lt "$deadline" ]; do
    reply=$(api -s -X POST --data-binary "commit-bulk s$((n % 50))/ 100 16" "$admin/v1/rooms/ledger/signal" || true)
    [ "$reply" = "committed 100" ] && echo "$n" >> "$work/answered"
    n=$((n + 1)); sleep 0.2
  done ) &
committer=$!; pids+=($committer)

# Hostile rooms: made, provoked (each faults), closed, every 5 s.
( i=0
  while [ "$(date +%s)" -lt "$deadline" ]; do
    for kind in spin hog trap flood; do
      room="$kind-$((i % 4))"
      api -s -X DELETE "$admin/v1/rooms/$room" > /dev/null || true
      api -s -X POST -d "{\"module\":\"$kind\",\"room\":\"$room\"}" "$admin/v1/rooms" > /dev/null || true
      api -s -X POST --data-binary "go" "$admin/v1/rooms/$room/signal" > /dev/null || true
    done
    i=$((i + 1)); sleep 5
  done ) &
hostile=$!; pids+=($hostile)

# Samples: seconds since start, then RSS KiB, fds and threads of the edge and of the core.
sample() {
  local out=$1
  for p in $edge_pid $core_pid; do
    out="$out,$(awk '/VmRSS/ {print $2}' /proc/$p/status),$(ls /proc/$p/fd | wc -l),$(awk '/Threads/ {print $2}' /proc/$p/status)"
  done
  echo "$out" >> "$work/samples.csv"
}
while [ "$(date +%s)" -lt "$deadline" ]; do
  sample $(( $(date +%s) - started ))
  sleep 10
done
wait $committer $hostile || true
wait $bots_pid || true
sample $(( $(date +%s) - started ))

# Everything the node answered for reaches the core: wait for the outbox to drain, then count.
for _ in $(seq 1 600); do
  m=$(curl -sS "$admin/metrics")
  durable=$(awk '/^outpost_outbox_durable_seq / {print $2}' <<< "$m")
  acked=$(awk '/^outpost_outbox_acked_seq / {print $2}' <<< "$m")
  [ -n "$durable" ] && [ "$durable" = "$acked" ] && break
  sleep 0.1
done
# The core ran throughout, so its counter saw every update it applied: it must be exactly what
# the guests committed on the edge (the ledger's signals and the arena rooms' scores), and the
# answered signals are among them.
calls=$(wc -l < "$work/answered" 2>/dev/null || echo 0)
applied=$(curl -sS "$core_http/metrics" | awk '/^outpost_core_updates_applied_total / {print $2}')
committed=$(curl -sS "$admin/metrics" | awk '/^outpost_guest_commits_total / {print $2}')
missing=$(( ${committed%.*} - ${applied%.*} ))
[ $(( calls * 100 )) -le "${committed%.*}" ] || missing=$(( missing + calls * 100 - ${committed%.*} ))

python3 - "$work" "$minutes" "$bots" "$calls" "$missing" "$write" "${committed%.*}" "${applied%.*}" <<'PY'
import json, sys, datetime, platform, os
work, minutes, bots, calls, missing, write = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6] == "1"
committed, applied = int(sys.argv[7]), int(sys.argv[8])
rows = [list(map(int, l.split(","))) for l in open(f"{work}/samples.csv") if l.strip()]
try:
    b = json.load(open(f"{work}/bots.json"))
except Exception:
    b = {"disconnects": {"bench failed": 1}}
disconnects = sum(b.get("disconnects", {}).values())
warm = [r for r in rows if r[0] >= 60] or rows
def change(i):
    first, last = warm[0][i], rows[-1][i]
    return (last - first) / first * 100 if first else 0.0
lines = [
    f"Command: `scripts/soak.sh --minutes {minutes} --bots {bots}` ({datetime.date.today()}, {os.cpu_count()} cores, "
    f"{platform.machine()}): arena bots at 20 Hz in rooms of 8, an operator signal committing 100 keys every "
    "0.2 s, and spin, hog, trap and flood rooms made and provoked every 5 s, on one edge forwarding to one core.",
    "",
    f"- Bots: {bots - sum(b.get('join_failures', {}).values())} of {bots} joined, {b.get('received')} messages received, disconnects: {disconnects} "
    f"({json.dumps(b.get('disconnects', {}))}).",
    f"- Commits: the guests committed {committed} updates on the edge ({calls} signals answered "
    f"`committed 100`, the rest the arena rooms' scores); the core applied {applied}: {missing} lost.",
    f"- Memory after warm-up (from {warm[0][0]} s to the end): edge {change(1):+.1f} %, core {change(4):+.1f} %.",
    "",
    "| s | edge RSS MiB | edge fds | edge threads | core RSS MiB | core fds | core threads |",
    "|---|---|---|---|---|---|---|",
]
for r in rows:
    lines.append(f"| {r[0]} | {r[1]/1024:.1f} | {r[2]} | {r[3]} | {r[4]/1024:.1f} | {r[5]} | {r[6]} |")
text = "\n".join(lines)
print(text)
if write:
    path = "RELIABILITY.md"
    doc = open(path).read() if os.path.exists(path) else "# Reliability\n\n## Soak\n\n<!-- soak:start -->\n<!-- soak:end -->\n"
    start, end = "<!-- soak:start -->", "<!-- soak:end -->"
    a, z = doc.index(start) + len(start), doc.index(end)
    open(path, "w").write(doc[:a] + "\n" + text + "\n" + doc[z:])
# Flat means no growth past 10 %; memory handed back to the system is not a leak.
ok = disconnects == 0 and missing == 0 and calls > 0 and change(1) <= 10 and change(4) <= 10
sys.exit(0 if ok else 1)
PY
