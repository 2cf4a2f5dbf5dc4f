//! Uploaded modules: their bytes and defaults on disk, their compiled versions in memory.
//!
//! Layout under the data dir: `modules/<name>/<sha256>.wasm` and `modules/<name>/module.json`
//! (the live version and room defaults). Compiled artifacts live in `cache/` (see
//! [`crate::host`]); a restart reloads from there without compiling.

use crate::host::{Compiled, ModuleError, WasmHost};
use outpost_net::files::write_atomic;
use outpost_proto::api::ModuleInfo;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// What `module.json` records.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModuleRecord {
    /// Module name.
    pub name: String,
    /// Live version (sha256).
    pub version: String,
    /// Size of the live version.
    pub size: u64,
    /// Default tick rate of new rooms.
    pub tick_hz: u32,
    /// Default player cap of new rooms.
    pub max_players: u32,
    /// Time the live version took to become live, ms.
    #[serde(default)]
    pub compile_ms: f64,
}

impl ModuleRecord {
    /// The admin API view.
    pub fn info(&self, rooms: u32) -> ModuleInfo {
        ModuleInfo {
            name: self.name.clone(),
            version: self.version.clone(),
            size: self.size,
            compile_ms: self.compile_ms,
            tick_hz: self.tick_hz,
            max_players: self.max_players,
            rooms,
        }
    }
}

/// Why a module operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ModulesError {
    /// The bytes are not a usable component.
    #[error(transparent)]
    Invalid(#[from] ModuleError),
    /// No module by that name.
    #[error("no module named {0:?}")]
    NotFound(String),
    /// Disk trouble.
    #[error("module storage: {0}")]
    Io(#[from] std::io::Error),
}

/// Every module on the node.
pub struct ModuleStore {
    host: Arc<WasmHost>,
    dir: PathBuf,
    records: Mutex<BTreeMap<String, ModuleRecord>>,
    compiled: moka::sync::Cache<String, Arc<Compiled>>,
    /// Held while a module's files and record change (upload, delete), so that uploads of one
    /// name happen one after another: the record on disk and the one in memory then always name
    /// the version of the upload that finished last. Compiling happens before, outside it.
    changes: Mutex<()>,
}

impl ModuleStore {
    /// Opens `dir`, reloading every module recorded there (from the compiled cache when possible).
    pub fn open(host: Arc<WasmHost>, dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let store = ModuleStore {
            host,
            dir: dir.to_path_buf(),
            records: Mutex::new(BTreeMap::new()),
            compiled: moka::sync::Cache::new(256),
            changes: Mutex::new(()),
        };
        for entry in std::fs::read_dir(dir)? {
            let module_dir = entry?.path();
            // A crash mid-upload leaves a temporary file behind; nothing else reads it.
            if module_dir.is_dir() {
                outpost_net::files::sweep_temp(&module_dir);
            }
            let path = module_dir.join("module.json");
            let Ok(text) = std::fs::read(&path) else {
                continue;
            };
            match serde_json::from_slice::<ModuleRecord>(&text) {
                Ok(rec) => match store.compiled_version(&rec.name, &rec.version) {
                    Ok(_) => {
                        store.lock().insert(rec.name.clone(), rec);
                    }
                    Err(e) => {
                        tracing::error!(module = %rec.name, error = %e, "could not reload module; skipping it")
                    }
                },
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "unreadable module record; skipping it")
                }
            }
        }
        Ok(store)
    }

    /// The wasm host this store compiles with.
    pub fn host(&self) -> &WasmHost {
        &self.host
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ModuleRecord>> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Uploads a version. Returns the record and whether it was new (201) or already live (200).
    /// Blocking: compiles. Call from a blocking thread.
    pub fn put(
        &self,
        name: &str,
        bytes: &[u8],
        tick_hz: Option<u32>,
        max_players: Option<u32>,
        defaults: (u32, u32),
    ) -> Result<(ModuleRecord, bool), ModulesError> {
        let version = outpost_proto::ids::sha256_hex(bytes);
        // Concurrent uploads of the same bytes compile once; the others wait for that compile.
        let compiled = self
            .compiled
            .try_get_with(version.clone(), || self.host.load(bytes).map(Arc::new))
            .map_err(|e| ModulesError::Invalid((*e).clone()))?;
        let _changing = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        let previous = self.lock().get(name).cloned();
        if let Some(prev) = &previous
            && prev.version == version
            && tick_hz.is_none_or(|t| t == prev.tick_hz)
            && max_players.is_none_or(|m| m == prev.max_players)
        {
            return Ok((prev.clone(), false));
        }
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir)?;
        write_atomic(&dir.join(format!("{version}.wasm")), bytes)?;
        let (dt, dp) = previous.as_ref().map_or(defaults, |p| (p.tick_hz, p.max_players));
        let rec = ModuleRecord {
            name: name.to_string(),
            version: version.clone(),
            size: bytes.len() as u64,
            tick_hz: tick_hz.unwrap_or(dt),
            max_players: max_players.unwrap_or(dp),
            compile_ms: compiled.load_ms,
        };
        write_atomic(&dir.join("module.json"), &serde_json::to_vec_pretty(&rec).map_err(std::io::Error::other)?)?;
        let is_new = previous.is_none_or(|p| p.version != version);
        self.lock().insert(name.to_string(), rec.clone());
        Ok((rec, is_new))
    }

    /// The live record of a module.
    pub fn get(&self, name: &str) -> Option<ModuleRecord> {
        self.lock().get(name).cloned()
    }

    /// Every module's live record.
    pub fn list(&self) -> Vec<ModuleRecord> {
        self.lock().values().cloned().collect()
    }

    /// A compiled version: from memory, else from the disk cache, else compiled.
    pub fn compiled_version(&self, name: &str, version: &str) -> Result<Arc<Compiled>, ModulesError> {
        if let Some(c) = self.compiled.get(version) {
            return Ok(c);
        }
        let path = self.dir.join(name).join(format!("{version}.wasm"));
        let bytes = std::fs::read(&path).map_err(|_| ModulesError::NotFound(name.to_string()))?;
        let c = Arc::new(self.host.load(&bytes)?);
        self.compiled.insert(version.to_string(), c.clone());
        Ok(c)
    }

    /// Keeps a version of `name` that a room moving here runs, without making it the live one:
    /// `bytes` must hash to `version`. Blocking: compiles. Call from a blocking thread.
    pub fn add_version(&self, name: &str, version: &str, bytes: &[u8]) -> Result<Arc<Compiled>, ModulesError> {
        let got = outpost_proto::ids::sha256_hex(bytes);
        if got != version {
            return Err(ModulesError::Invalid(crate::host::ModuleError::Invalid(format!(
                "the module's bytes hash to {got}, not {version}"
            ))));
        }
        let compiled = self
            .compiled
            .try_get_with(version.to_string(), || self.host.load(bytes).map(Arc::new))
            .map_err(|e| ModulesError::Invalid((*e).clone()))?;
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir)?;
        write_atomic(&dir.join(format!("{version}.wasm")), bytes)?;
        Ok(compiled)
    }

    /// The bytes of a version of `name` this node has (a peer moving a room fetches them).
    pub fn version_bytes(&self, name: &str, version: &str) -> Result<Vec<u8>, ModulesError> {
        if !version.bytes().all(|b| b.is_ascii_hexdigit()) || version.len() != 64 {
            return Err(ModulesError::NotFound(format!("{name} version {version}")));
        }
        std::fs::read(self.dir.join(name).join(format!("{version}.wasm")))
            .map_err(|_| ModulesError::NotFound(format!("{name} version {version}")))
    }

    /// The live compiled version of `name`, with its record.
    pub fn live(&self, name: &str) -> Result<(ModuleRecord, Arc<Compiled>), ModulesError> {
        let rec = self.get(name).ok_or_else(|| ModulesError::NotFound(name.to_string()))?;
        let c = self.compiled_version(name, &rec.version)?;
        Ok((rec, c))
    }

    /// Removes a module and its files. Rooms still running keep their compiled instance.
    pub fn delete(&self, name: &str) -> Result<ModuleRecord, ModulesError> {
        let _changing = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        let rec = self.lock().remove(name).ok_or_else(|| ModulesError::NotFound(name.to_string()))?;
        std::fs::remove_dir_all(self.dir.join(name))?;
        Ok(rec)
    }
}
