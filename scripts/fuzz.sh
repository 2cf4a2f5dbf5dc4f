#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (FUZZ_SECONDS, 60 by default) with cargo-fuzz
# (libFuzzer, nightly), growing fuzz/corpus/<target>; a crash lands in fuzz/artifacts/<target>,
# where `make test` replays it. Prints one JSON line per target: executions per second, the
# coverage libFuzzer counted (edges) and the corpus size.
# Usage: scripts/fuzz.sh [target ...]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECONDS:-60}
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz > /dev/null || cargo install cargo-fuzz --locked
cargo run -q --release -p outpost-fuzz-targets --bin outpost-fuzz-seeds -- fuzz/corpus
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list --fuzz-dir fuzz)
for t in "${targets[@]}"; do
  log=$(mktemp)
  status=0
  cargo +nightly fuzz run --fuzz-dir fuzz "$t" "fuzz/corpus/$t" -- -max_total_time="$secs" \
    -print_final_stats=1 -rss_limit_mb=2048 -max_len=4096 > "$log" 2>&1 || status=$?
  python3 - "$t" "$log" "$status" "$secs" <<'PY'
import json, re, sys
name, log, status, secs = sys.argv[1], open(sys.argv[2], errors="replace").read(), int(sys.argv[3]), int(sys.argv[4])
def stat(key):
    m = re.findall(r"^stat::%s:\s+(\d+)" % key, log, re.M)
    return int(m[-1]) if m else None
cov = re.findall(r"cov: (\d+)", log)
corp = re.findall(r"corp: (\d+)", log)
print(json.dumps({"target": name, "seconds": secs, "runs": stat("number_of_executed_units"),
    "exec_per_s": stat("average_exec_per_sec"), "coverage_edges": int(cov[-1]) if cov else None,
    "corpus": int(corp[-1]) if corp else None, "peak_rss_mb": stat("peak_rss_mb"), "crashed": status != 0}))
PY
  if [ "$status" != 0 ]; then tail -40 "$log" >&2; fi
  rm -f "$log"
done
