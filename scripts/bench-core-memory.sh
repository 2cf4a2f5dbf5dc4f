#!/usr/bin/env bash
# The core's memory against its store cache: a real core (embedded store) ingests N updates of
# 256 bytes, each to a new key so the store file grows, through `outpost-bench core`; then its
# peak RSS is read. Run for each cache size given, alternated A B B A so drift hits both.
# Usage: scripts/bench-core-memory.sh [updates (1000000)] [cache MiB A (64)] [cache MiB B (1024)]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release
n=${1:-1000000}; a=${2:-64}; b=${3:-1024}
export OUTPOST_CLUSTER_TOKEN=bench-cluster OUTPOST_ADMIN_TOKEN=bench-admin
one() {
  local mib=$1 work pid rate peak
  work=$(mktemp -d)
  RUST_LOG=warn $bin/core-region --data-dir "$work/core" --listen-quic 127.0.0.1:0 --listen-http 127.0.0.1:0 \
    --ready-file "$work/core.json" --store-cache-mib "$mib" 2> "$work/core.log" &
  pid=$!
  for _ in $(seq 1 500); do [ -s "$work/core.json" ] && break; sleep 0.02; done
  rate=$($bin/outpost-bench core --json --core-ready "$work/core.json" --updates "$n" --batch 1000 --keys "$n" \
    --value-bytes 256 | python3 -c "import json,sys; print(round(json.load(sys.stdin)['updates_per_s']))")
  peak=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  printf '{"store_cache_mib": %s, "updates": %s, "updates_per_s": %s, "peak_rss_kib": %s, "store_bytes": %s}\n' \
    "$mib" "$n" "$rate" "$peak" "$(stat -c %s "$work/core/state.redb")"
  kill "$pid"; wait "$pid" 2>/dev/null || true; rm -rf "$work"
}
for mib in "$a" "$b" "$b" "$a"; do one "$mib"; done
