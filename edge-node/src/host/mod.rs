//! The WebAssembly host: one `Engine`, one compiled `Component` + `InstancePre` per module version,
//! one `Store` per room.
//!
//! # Layout
//! - [`bindings`]: the `bindgen!` over `wit/`.
//! - [`guest`]: a room's store and budgeted calls ([`GuestInstance`]).
//! - [`output`]: bounded capture of guest stdout/stderr and logs.
//! - [`limits`]: sandbox limits from config.
//!
//! This module compiles and validates; it does not know about HTTP, players or scheduling.

pub mod bindings;
pub mod guest;
pub mod limits;
pub mod output;

use anyhow::Context as _;
use bindings::RoomPre;
use guest::RoomState;
use limits::SandboxLimits;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use guest::{Effect, FaultKind, GuestFault, GuestInstance};

/// How often the epoch advances; the CPU budget is counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Keeps the epoch ticker asleep while no guest instance exists.
///
/// The ticker wakes a thousand times a second, which costs an idle node about 1 % of a core
/// (measured: 23 of 2,000 CPU ticks in 20 s, all of them the ticker's). On a cheap or burstable
/// VPS that is wasted credit, so the ticker parks while there is nothing to interrupt. A guest
/// only runs inside a [`GuestInstance`], and each one holds a [`LiveInstance`] from before its
/// instantiation until it is dropped, so the ticker is running whenever a call could be.
pub struct EpochGate {
    live: AtomicUsize,
    ticks: AtomicU64,
    stop: AtomicBool,
    ticker: std::sync::OnceLock<std::thread::Thread>,
}

impl EpochGate {
    fn new() -> Arc<Self> {
        Arc::new(EpochGate {
            live: AtomicUsize::new(0),
            ticks: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            ticker: std::sync::OnceLock::new(),
        })
    }

    /// Registers a live instance, waking the ticker if it was the first.
    pub fn enter(self: &Arc<Self>) -> LiveInstance {
        if self.live.fetch_add(1, Ordering::SeqCst) == 0
            && let Some(t) = self.ticker.get()
        {
            t.unpark();
        }
        LiveInstance(self.clone())
    }

    /// Epoch increments since start: lets tests and operators see the ticker idle.
    pub fn ticks(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
    }

    fn run(&self, engine: &Engine) {
        while !self.stop.load(Ordering::Relaxed) {
            if self.live.load(Ordering::SeqCst) == 0 {
                // An `enter` between the load and here leaves an unpark token, so this returns
                // at once and the loop sees the new instance: no wake-up is lost.
                std::thread::park();
                continue;
            }
            std::thread::sleep(EPOCH_TICK);
            engine.increment_epoch();
            self.ticks.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.get() {
            t.unpark();
        }
    }
}

/// A guest instance's registration with the [`EpochGate`]; dropping it unregisters.
pub struct LiveInstance(Arc<EpochGate>);

impl Drop for LiveInstance {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A module version ready to instantiate.
pub struct Compiled {
    /// sha256 of the component bytes.
    pub version: String,
    /// Pre-instantiated against the linker, so a room costs one `instantiate`.
    pub pre: RoomPre<RoomState>,
    /// Component size in bytes.
    pub size: u64,
    /// How long it took to make live (compile or load).
    pub load_ms: f64,
    /// The host's epoch gate, which every instance of this module registers with.
    pub epoch: Arc<EpochGate>,
}

/// Why an upload was refused: each maps to 422 with this message.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ModuleError {
    /// Does not start with the wasm magic.
    #[error("not a WebAssembly binary (missing the \\0asm header)")]
    NotWasm,
    /// A core module, not a component.
    #[error(
        "this is a core WebAssembly module, not a component: build the guest for wasm32-wasip2 (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule,
    /// Fails to parse or validate as a component.
    #[error("invalid component: {0}")]
    Invalid(String),
    /// A component, but not of the `outpost:room` world.
    #[error("component does not fit the outpost:room world: {0}")]
    WrongWorld(String),
}

/// The engine, linker and compile counters shared by every room.
pub struct WasmHost {
    engine: Engine,
    linker: Linker<RoomState>,
    /// Sandbox limits every room gets.
    pub limits: Arc<SandboxLimits>,
    cache_dir: PathBuf,
    engine_tag: String,
    /// Cold compiles since start.
    pub compiles: AtomicU64,
    /// Loads from the on-disk artifact cache since start.
    pub disk_loads: AtomicU64,
    /// The epoch ticker's gate: it ticks only while guest instances exist.
    pub epoch: Arc<EpochGate>,
}

/// Which instance allocator to use. Pooling is the default; on-demand exists for platforms without
/// the virtual address space for the pool, and as the benchmark baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocator {
    /// Pre-reserved slots, sized from the limits.
    Pooling,
    /// mmap per instance.
    OnDemand,
}

impl WasmHost {
    /// Builds the engine and linker, and starts the epoch ticker thread.
    pub fn new(limits: SandboxLimits, cache_dir: &Path, allocator: Allocator) -> anyhow::Result<Arc<Self>> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.parallel_compilation(true);
        if allocator == Allocator::Pooling {
            let mut pool = PoolingAllocationConfig::default();
            let rooms = limits.max_rooms.max(1);
            pool.total_component_instances(rooms);
            // A Rust guest has a handful of core instances and one memory; leave room for both.
            pool.total_core_instances(rooms.saturating_mul(4));
            pool.total_memories(rooms.saturating_mul(2));
            pool.total_tables(rooms.saturating_mul(4));
            pool.max_memory_size(limits.memory_bytes);
            pool.table_elements(limits.table_elements);
            pool.max_core_instances_per_component(limits.instances as u32);
            pool.max_memories_per_component(limits.memories as u32);
            pool.max_tables_per_component(limits.tables as u32);
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        // Small guests: no need to reserve 4 GiB of guard space per memory, which bounds the
        // pool's virtual reservation for 10,000 rooms.
        config.memory_reservation(limits.memory_bytes as u64);
        config.memory_guard_size(64 << 10);
        config.memory_reservation_for_growth(0);
        let engine = Engine::new(&config).map_err(|e| anyhow::anyhow!("creating the wasmtime engine: {e:#}"))?;

        let mut linker = Linker::<RoomState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| anyhow::anyhow!("linking WASI: {e:#}"))?;
        bindings::Room::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| anyhow::anyhow!("linking the outpost:room host: {e:#}"))?;

        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let engine_tag = format!("{:016x}", h.finish());
        std::fs::create_dir_all(cache_dir).with_context(|| format!("creating {}", cache_dir.display()))?;
        outpost_net::files::sweep_temp(cache_dir);

        let epoch = EpochGate::new();
        let gate = epoch.clone();
        let ticker_engine = engine.clone();
        let ticker = std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || gate.run(&ticker_engine))
            .context("starting the epoch ticker")?;
        // Set before any instance can exist, since this host is not shared yet.
        let _ = epoch.ticker.set(ticker.thread().clone());

        Ok(Arc::new(WasmHost {
            engine,
            linker,
            limits: Arc::new(limits),
            cache_dir: cache_dir.to_path_buf(),
            engine_tag,
            compiles: AtomicU64::new(0),
            disk_loads: AtomicU64::new(0),
            epoch,
        }))
    }

    /// Checks the bytes' header, so that the common mistakes get a precise message.
    pub fn sniff(bytes: &[u8]) -> Result<(), ModuleError> {
        if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
            return Err(ModuleError::NotWasm);
        }
        // Core modules are version 1 layer 0; components carry layer 1 in bytes 6..8.
        if bytes[4..8] == [1, 0, 0, 0] {
            return Err(ModuleError::CoreModule);
        }
        Ok(())
    }

    fn cache_path(&self, version: &str) -> PathBuf {
        self.cache_dir.join(format!("{version}-{}.cwasm", self.engine_tag))
    }

    /// Makes `bytes` live: from the on-disk artifact cache when this engine compiled it before,
    /// otherwise compiled and cached. Validates it against the world either way.
    pub fn load(&self, bytes: &[u8]) -> Result<Compiled, ModuleError> {
        let started = Instant::now();
        Self::sniff(bytes)?;
        let version = outpost_proto::ids::sha256_hex(bytes);
        let path = self.cache_path(&version);
        let component = match self.load_cached(&path) {
            Some(c) => {
                self.disk_loads.fetch_add(1, Ordering::Relaxed);
                c
            }
            None => {
                let c = Component::new(&self.engine, bytes).map_err(|e| ModuleError::Invalid(format!("{e:#}")))?;
                self.compiles.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = self.store_cached(&path, &c) {
                    tracing::warn!(error = %e, path = %path.display(), "could not write the compiled-module cache");
                }
                c
            }
        };
        let pre = self.linker.instantiate_pre(&component).map_err(|e| ModuleError::WrongWorld(format!("{e:#}")))?;
        let pre = RoomPre::new(pre).map_err(|e| ModuleError::WrongWorld(format!("{e:#}")))?;
        Ok(Compiled {
            version,
            pre,
            size: bytes.len() as u64,
            load_ms: started.elapsed().as_secs_f64() * 1000.0,
            epoch: self.epoch.clone(),
        })
    }

    fn load_cached(&self, path: &Path) -> Option<Component> {
        if !path.exists() {
            return None;
        }
        // SAFETY: the file was written by `Component::serialize` of an engine with the same
        // compatibility hash (it is in the file name), under our own data dir, and wasmtime
        // re-checks the header and engine settings before using it.
        match unsafe { Component::deserialize_file(&self.engine, path) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "ignoring an unusable compiled-module cache file");
                None
            }
        }
    }

    fn store_cached(&self, path: &Path, c: &Component) -> anyhow::Result<()> {
        let bytes = c.serialize().map_err(|e| anyhow::anyhow!("{e:#}"))?;
        outpost_net::files::write_atomic(path, &bytes)?;
        Ok(())
    }
}

impl Drop for WasmHost {
    fn drop(&mut self) {
        self.epoch.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniff_names_the_problem() {
        assert!(matches!(WasmHost::sniff(b"hello world"), Err(ModuleError::NotWasm)));
        assert!(matches!(WasmHost::sniff(b"\0asm\x01\0\0\0"), Err(ModuleError::CoreModule)));
        assert!(WasmHost::sniff(b"\0asm\x0d\0\x01\0").is_ok());
    }
}
