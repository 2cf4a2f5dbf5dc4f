//! Host benchmarks (criterion), each against its baseline in the same run, printed as ratios:
//! - a guest `message` call with a 32-byte payload vs the same logic called natively;
//! - room instantiation with the pooling allocator vs the on-demand allocator;
//! - upload-to-live of `arena` from the disk cache (as after a restart) vs a cold compile;
//! - resident memory per idle `echo` room, over 10,000 rooms in one host;
//! - an `arena` tick with 64 players (its largest room), which has no baseline of its own: it
//!   keeps the shipped game's cost in view (BENCHMARKS.md has it before and after a change).
//!
//! Run with `make bench` (guests must be built: `make guests`).

use criterion::{BatchSize, Criterion, black_box};
use edge_node::host::limits::SandboxLimits;
use edge_node::host::output::RoomLog;
use edge_node::host::{Allocator, Effect, GuestInstance, WasmHost};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

fn guest(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/guests").join(format!("{name}.wasm"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}: run `make guests`", p.display()))
}

fn host(allocator: Allocator, max_rooms: u32, cache: &Path) -> Arc<WasmHost> {
    let limits = SandboxLimits { max_rooms, ..SandboxLimits::default() };
    WasmHost::new(limits, cache, allocator).expect("host")
}

fn room(host: &Arc<WasmHost>, compiled: &Arc<edge_node::host::Compiled>) -> GuestInstance {
    let mut g =
        GuestInstance::new(compiled.clone(), host.limits.clone(), RoomLog::new(16, 256), 7).expect("instantiate");
    g.init("bench", b"").expect("init call").expect("init ok");
    g
}

/// What the echo guest does, as plain Rust: the native baseline.
#[inline(never)]
fn native_echo(effects: &mut Vec<Effect>, sender: u64, data: &[u8]) {
    effects.push(Effect::Send { to: sender, data: data.to_vec(), reliable: true });
}

fn message_call(c: &mut Criterion, cache: &Path) {
    let h = host(Allocator::Pooling, 16, cache);
    let compiled = Arc::new(h.load(&guest("echo")).unwrap());
    let mut g = room(&h, &compiled);
    let payload = [7u8; 32];
    let mut group = c.benchmark_group("message_32B");
    group.bench_function("guest", |b| {
        b.iter(|| {
            g.message(1, black_box(&payload)).unwrap();
            black_box(g.take_effects());
        })
    });
    group.bench_function("native", |b| {
        b.iter(|| {
            let mut fx = Vec::new();
            native_echo(&mut fx, 1, black_box(&payload));
            black_box(fx);
        })
    });
    group.finish();
}

fn instantiate(c: &mut Criterion, cache: &Path) {
    let mut group = c.benchmark_group("instantiate_echo");
    for (name, alloc) in [("pooling", Allocator::Pooling), ("on_demand", Allocator::OnDemand)] {
        let h = host(alloc, 64, cache);
        let compiled = Arc::new(h.load(&guest("echo")).unwrap());
        group.bench_function(name, |b| {
            // Instantiate and drop: a pooled slot is reused, as when rooms come and go.
            b.iter(|| {
                drop(black_box(
                    GuestInstance::new(compiled.clone(), h.limits.clone(), RoomLog::new(16, 256), 7).unwrap(),
                ))
            })
        });
    }
    group.finish();
}

fn upload_to_live(c: &mut Criterion, cache: &Path) {
    let arena = guest("arena");
    let warm = host(Allocator::Pooling, 16, cache);
    warm.load(&arena).unwrap(); // leaves the artifact in the disk cache
    let mut group = c.benchmark_group("upload_to_live_arena");
    group.sample_size(10);
    group.bench_function("disk_cache", |b| b.iter(|| black_box(warm.load(&arena).unwrap())));
    group.bench_function("cold_compile", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().unwrap();
                (host(Allocator::Pooling, 16, dir.path()), dir)
            },
            |(h, _dir)| black_box(h.load(&arena).unwrap()),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

/// An `arena` room at its 64-player cap, spawned through the operator's signal (no network), so
/// the tick's pairwise push-apart runs over every pair.
fn arena_tick(c: &mut Criterion, cache: &Path) {
    let h = host(Allocator::Pooling, 16, cache);
    let compiled = Arc::new(h.load(&guest("arena")).unwrap());
    let mut g = room(&h, &compiled);
    for i in 0..64 {
        let id = g.signal(format!("spawn b{i}").as_bytes()).expect("spawn call");
        assert!(!id.starts_with(b"error"), "{}", String::from_utf8_lossy(&id));
    }
    g.take_effects();
    let mut now = 0u64;
    c.bench_function("arena_tick_64", |b| {
        b.iter(|| {
            now += 50;
            g.tick(now).unwrap();
            black_box(g.take_effects());
        })
    });
}

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = s.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    pages * 4096
}

/// 10,000 idle echo rooms in one host: resident memory per room.
fn idle_room_memory(cache: &Path, allocator: Allocator) -> (f64, f64) {
    const ROOMS: usize = 10_000;
    let h = host(allocator, ROOMS as u32, cache);
    let compiled = Arc::new(h.load(&guest("echo")).unwrap());
    let warm = room(&h, &compiled);
    drop(warm);
    let before = rss_bytes();
    let started = Instant::now();
    let rooms: Vec<GuestInstance> = (0..ROOMS).map(|_| room(&h, &compiled)).collect();
    let per_room_us = started.elapsed().as_secs_f64() * 1e6 / ROOMS as f64;
    let after = rss_bytes();
    black_box(&rooms);
    ((after.saturating_sub(before)) as f64 / ROOMS as f64 / 1024.0, per_room_us)
}

fn estimate_ns(group: &str, bench: &str) -> Option<f64> {
    let p: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/criterion")
        .join(group)
        .join(bench)
        .join("new/estimates.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).ok()?).ok()?;
    v["median"]["point_estimate"].as_f64()
}

fn main() {
    let cache = tempfile::tempdir().unwrap();
    let mut c = Criterion::default().configure_from_args();
    message_call(&mut c, cache.path());
    instantiate(&mut c, cache.path());
    upload_to_live(&mut c, cache.path());
    arena_tick(&mut c, cache.path());
    c.final_summary();
    let (pool_kib, pool_us) = idle_room_memory(cache.path(), Allocator::Pooling);
    let (od_kib, od_us) = idle_room_memory(cache.path(), Allocator::OnDemand);

    println!("\n== summary (medians; ratio = subject / baseline, same run)");
    let pair = |title: &str, group: &str, subject: &str, baseline: &str| {
        if let (Some(s), Some(b)) = (estimate_ns(group, subject), estimate_ns(group, baseline)) {
            println!(
                "{title}: {subject} {:.3} µs, {baseline} {:.3} µs, ratio {:.4} ({:.1}x)",
                s / 1e3,
                b / 1e3,
                s / b,
                if s > b { s / b } else { b / s }
            );
        }
    };
    pair("guest message (32 B)", "message_32B", "guest", "native");
    pair("room instantiation (echo)", "instantiate_echo", "pooling", "on_demand");
    pair("upload to live (arena)", "upload_to_live_arena", "disk_cache", "cold_compile");
    if let Some(t) = estimate_ns("arena_tick_64", "") {
        println!("arena tick, 64 players: {:.1} µs", t / 1e3);
    }
    println!(
        "10,000 idle echo rooms: pooling {pool_kib:.1} KiB RSS/room ({pool_us:.1} µs/room incl. init), \
         on-demand {od_kib:.1} KiB RSS/room ({od_us:.1} µs/room); ratio {:.2}",
        pool_kib / od_kib
    );
}
