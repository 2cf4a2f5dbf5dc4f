//! The embedded store: one redb file under the data dir. Every `apply` is one write transaction
//! holding the data, each written key's room epoch and the stream's high-water mark, committed with redb's default (immediate)
//! durability, i.e. fsync before it returns.

use super::{Applied, RoomEpoch, Store, StoreError, Update, check_batch, fresh_writes};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;

const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");
const HIGH_WATER: TableDefinition<&str, u64> = TableDefinition::new("high_water");
/// The room epoch `(lineage, moves)` recorded for keys a moved room wrote (a file from before
/// room epochs simply has none yet).
const EPOCHS: TableDefinition<&str, (u64, u32)> = TableDefinition::new("epochs");

/// A redb-backed [`Store`].
pub struct EmbeddedStore {
    db: Database,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl EmbeddedStore {
    /// Opens (or creates) the store file at `path`, caching at most `cache_bytes` of it in memory
    /// (redb's own default is 1 GiB, which a core filled after ingesting a few hundred MB).
    pub fn open(path: &Path, cache_bytes: usize) -> Result<EmbeddedStore, StoreError> {
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(|e| StoreError::Backend(format!("{}: {e}", path.display())))?;
        // Create both tables up front, so reads never meet a missing table.
        let tx = db.begin_write().map_err(backend)?;
        tx.open_table(STATE).map_err(backend)?;
        tx.open_table(HIGH_WATER).map_err(backend)?;
        tx.open_table(EPOCHS).map_err(backend)?;
        tx.commit().map_err(backend)?;
        Ok(EmbeddedStore { db })
    }
}

impl Store for EmbeddedStore {
    fn apply(&self, stream: &str, batch: &[Update<'_>]) -> Result<Applied, StoreError> {
        let tx = self.db.begin_write().map_err(backend)?;
        let applied = {
            let mut marks = tx.open_table(HIGH_WATER).map_err(backend)?;
            let high_water = marks.get(stream).map_err(backend)?.map_or(0, |v| v.value());
            let replayed = check_batch(stream, high_water, batch)?;
            let fresh = &batch[replayed..];
            let mut state = tx.open_table(STATE).map_err(backend)?;
            let mut epochs = tx.open_table(EPOCHS).map_err(backend)?;
            let writes = fresh_writes(fresh, |key| {
                let got = epochs.get(key).map_err(backend)?;
                Ok(got.map(|v| {
                    let (lineage, moves) = v.value();
                    RoomEpoch { lineage, moves }
                }))
            })?;
            for w in &writes {
                state.insert(w.update.key, w.update.value).map_err(backend)?;
                if w.record {
                    epochs.insert(w.update.key, (w.update.epoch.lineage, w.update.epoch.moves)).map_err(backend)?;
                }
            }
            let high_water = fresh.last().map_or(high_water, |u| u.seq);
            marks.insert(stream, high_water).map_err(backend)?;
            let applied = writes.len() as u64;
            Applied { applied, replayed: replayed as u64, stale: fresh.len() as u64 - applied, high_water }
        };
        outpost_net::failpoint::hit("store.before_commit");
        tx.commit().map_err(backend)?;
        Ok(applied)
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read().map_err(backend)?;
        let t = tx.open_table(STATE).map_err(backend)?;
        Ok(t.get(key).map_err(backend)?.map(|v| v.value().to_vec()))
    }

    fn scan(&self, prefix: &str, limit: usize) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let tx = self.db.begin_read().map_err(backend)?;
        let t = tx.open_table(STATE).map_err(backend)?;
        let mut out = Vec::new();
        for item in t.range(prefix..).map_err(backend)? {
            let (k, v) = item.map_err(backend)?;
            if !k.value().starts_with(prefix) || out.len() >= limit {
                break;
            }
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    fn high_water(&self, stream: &str) -> Result<u64, StoreError> {
        let tx = self.db.begin_read().map_err(backend)?;
        let t = tx.open_table(HIGH_WATER).map_err(backend)?;
        Ok(t.get(stream).map_err(backend)?.map_or(0, |v| v.value()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_store_keeps_the_store_contract() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        super::super::conformance(&|| Box::new(EmbeddedStore::open(&path, 64 << 20).unwrap()));
    }

    #[test]
    fn a_file_that_is_not_a_store_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk.redb");
        std::fs::write(&path, b"this is not a database").unwrap();
        let e = EmbeddedStore::open(&path, 64 << 20).err().expect("junk refused").to_string();
        assert!(e.contains("junk.redb"), "{e}");
    }
}
