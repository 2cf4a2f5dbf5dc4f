#!/usr/bin/env bash
# Where the node's CPU per player-tick goes, next to the raw quinn echo's CPU per datagram, in one
# run: `outpost-bench players --module arena --bots 1000 --rate 20 --duration 20 --room-size 8 --baseline`
# against a release node started as in bench-edge.sh, with `perf record` (DWARF call graphs) on
# the node's whole process in the middle of its run and on the echo server's in the middle of its
# own. Each sample goes to the first category whose frame it has on its stack (the room worker's
# thread first, then the kernel's send and receive calls, then quinn's receive and transmit paths,
# ...), and each category's share of the samples is scaled to µs with the run's own CPU figures.
# Needs `perf` (Debian's linux-perf) and a build from `make build-all guests`. Not part of `make
# bench`: a profile perturbs the timing it reports, so its µs are for comparing categories, and
# the ratios to report are the benchmark's own (BENCHMARKS.md). Arguments go to `outpost-bench players`:
# `scripts/profile-arena.sh --baseline-driver proto` profiles the quinn-proto echo instead.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v perf > /dev/null || { echo "profile-arena: needs perf (apt-get install linux-perf)" >&2; exit 2; }
source scripts/bench-edge.sh
start_bench_edge
$bin/outpost-bench players --json --edge-ready "$work/edge.json" --key "$work/ticket.key" --module arena \
  --bots 1000 --rate 20 --duration 20 --room-size 8 --baseline "$@" > "$work/run.json" 2> "$work/bench.log" &
bench=$!
# The node's run lasts 20 s after the joins; 9 s in, the load is steady.
sleep 9
perf record -q -F 1000 -p "$pid" --call-graph dwarf,32768 -o "$work/node.data" -- sleep 5 2> /dev/null
echo_pid=""
for _ in $(seq 1 600); do
  echo_pid=$(pgrep -f "outpost-bench echo-server" | head -1 || true)
  [ -n "$echo_pid" ] && break
  sleep 0.1
done
[ -n "$echo_pid" ] || { echo "profile-arena: the echo baseline never started" >&2; exit 1; }
sleep 9
perf record -q -F 1000 -p "$echo_pid" --call-graph dwarf,32768 -o "$work/echo.data" -- sleep 5 2> /dev/null
wait $bench
perf script -i "$work/node.data" 2> /dev/null > "$work/node.txt"
perf script -i "$work/echo.data" 2> /dev/null > "$work/echo.txt"
python3 - "$work/run.json" "$work/node.txt" "$work/echo.txt" <<'EOF'
import collections, json, sys

# First match wins; the room worker is matched on the thread name in the sample's header line.
CATEGORIES = [
    ("room worker (guest calls, effects, sends to the transport)", "room-worker"),
    ("kernel: sendmmsg / sendmsg (on loopback, with the receiver's side)", "sys_sendm"),
    ("kernel: recvmmsg", "__x64_sys_recvmmsg"),
    ("kernel: other system calls (futex, epoll)", "do_syscall_64"),
    ("quinn-proto: build and encrypt packets (poll_transmit)", "Connection::poll_transmit"),
    ("quinn-proto: decrypt and process packets (handle_event)", "Connection::handle_event"),
    ("quinn-proto: endpoint demultiplexing", "quinn_proto::endpoint::Endpoint::handle"),
    ("application loop: node transport / echo loop", "edge_node::quic::driver"),
    ("application loop: node transport / echo loop", "edge_node::quic::carrier"),
    ("application loop: node transport / echo loop", "edge_node::session"),
    ("application loop: node transport / echo loop", "echo_server"),
    ("application loop: node transport / echo loop", "echo_direct"),
    ("quinn: connection driver, the rest", "ConnectionDriver"),
    ("quinn: endpoint driver, the rest", "EndpointDriver"),
    ("node: batched send, the rest", "outpost_net::udp::batch"),
]
OTHER = "the rest (tokio's scheduler and timers, allocator, epoch ticker)"


def categorize(path):
    counts, total, head, stack = collections.Counter(), 0, "", []

    def flush():
        nonlocal total
        if not stack:
            return
        total += 1
        text = head + "\n" + "\n".join(stack)
        counts[next((name for name, pat in CATEGORIES if pat in text), OTHER)] += 1

    for line in open(path, errors="replace"):
        if not line.strip():
            flush()
            stack = []
        elif not line[0].isspace():
            flush()
            stack, head = [], line
        else:
            stack.append(line.strip())
    flush()
    return counts, total


run = json.load(open(sys.argv[1]))
node_us = run["cpu_us_per_player_tick"]
echo_us = node_us / run["cpu_per_player_tick_ratio"]
node, node_n = categorize(sys.argv[2])
echo, echo_n = categorize(sys.argv[3])
print(f"node {node_us:.2f} µs per player-tick, echo {echo_us:.2f} µs per datagram, ratio "
      f"{run['cpu_per_player_tick_ratio']:.3f} (transport share {run['transport_cpu_per_player_tick_ratio']:.3f}); "
      f"{node_n} and {echo_n} samples")
names = sorted(set(node) | set(echo), key=lambda k: -node[k] / max(node_n, 1))
print(f"| {'category':<68} | node µs | echo µs | ratio |")
for name in names:
    a = node[name] / max(node_n, 1) * node_us
    b = echo[name] / max(echo_n, 1) * echo_us
    ratio = f"{a / b:.2f}" if b >= 0.05 else "-"
    print(f"| {name:<68} | {a:7.2f} | {b:7.2f} | {ratio:>5} |")
EOF
