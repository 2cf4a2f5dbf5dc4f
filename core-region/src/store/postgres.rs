//! The PostgreSQL store (`--store postgres://...`), for games that outgrow one core machine:
//! several core-region processes can share it, and CockroachDB speaks the same protocol.
//!
//! Each `apply` is one transaction: lock the stream's high-water row (`FOR UPDATE`, so two cores
//! given the same stream serialize), check the batch, upsert the data with each key's room epoch
//! (a key whose last writer is a later epoch of the same room keeps its value), move the mark,
//! commit.
//! PostgreSQL's default `synchronous_commit` makes the commit durable before it returns.

use super::{Applied, RoomEpoch, Store, StoreError, Update, check_batch, fresh_writes};
use std::collections::HashMap;
use std::sync::Mutex;

/// A PostgreSQL-backed [`Store`] (one connection; the ingest calls it from blocking threads).
pub struct PostgresStore {
    client: Mutex<postgres::Client>,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS outpost_state (
        key TEXT COLLATE \"C\" PRIMARY KEY,
        value BYTEA NOT NULL,
        room TEXT NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
    );
    CREATE TABLE IF NOT EXISTS outpost_high_water (
        stream TEXT PRIMARY KEY,
        seq BIGINT NOT NULL
    );
    ALTER TABLE outpost_state ADD COLUMN IF NOT EXISTS lineage BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE outpost_state ADD COLUMN IF NOT EXISTS moves BIGINT NOT NULL DEFAULT 0;";

impl PostgresStore {
    /// Connects (a `postgres://` URL or a libpq `key=value` string) and creates the tables.
    pub fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        let mut client = postgres::Client::connect(url, postgres::NoTls)
            .map_err(|e| StoreError::Backend(format!("connecting to PostgreSQL: {e}")))?;
        client.batch_execute(SCHEMA).map_err(backend)?;
        Ok(PostgresStore { client: Mutex::new(client) })
    }

    fn client(&self) -> std::sync::MutexGuard<'_, postgres::Client> {
        self.client.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Store for PostgresStore {
    fn apply(&self, stream: &str, batch: &[Update<'_>]) -> Result<Applied, StoreError> {
        let mut client = self.client();
        let mut tx = client.transaction().map_err(backend)?;
        tx.execute("INSERT INTO outpost_high_water (stream, seq) VALUES ($1, 0) ON CONFLICT DO NOTHING", &[&stream])
            .map_err(backend)?;
        let row = tx
            .query_one("SELECT seq FROM outpost_high_water WHERE stream = $1 FOR UPDATE", &[&stream])
            .map_err(backend)?;
        let high_water = row.get::<_, i64>(0) as u64;
        let replayed = check_batch(stream, high_water, batch)?;
        let fresh = &batch[replayed..];
        let mut applied = 0;
        if let Some(last) = fresh.last() {
            // The epochs recorded for the tagged keys, read under the row locks the upsert takes.
            let tagged: Vec<&str> = fresh.iter().filter(|u| u.epoch.lineage != 0).map(|u| u.key).collect();
            let mut stored: HashMap<String, RoomEpoch> = HashMap::new();
            if !tagged.is_empty() {
                let rows = tx
                    .query(
                        "SELECT key, lineage, moves FROM outpost_state WHERE key = ANY($1) AND moves > 0 FOR UPDATE",
                        &[&tagged],
                    )
                    .map_err(backend)?;
                for r in rows {
                    let epoch = RoomEpoch { lineage: r.get::<_, i64>(1) as u64, moves: r.get::<_, i64>(2) as u32 };
                    stored.insert(r.get(0), epoch);
                }
            }
            let writes = fresh_writes(fresh, |key| Ok(stored.get(key).copied()))?;
            applied = writes.len() as u64;
            // One row per key, its last value in the batch: a single upsert may not touch a row
            // twice. The key's epoch moves with the last write that records one.
            let mut latest: HashMap<&str, (&Update<'_>, Option<RoomEpoch>)> = HashMap::with_capacity(writes.len());
            for w in writes {
                let entry = latest.entry(w.update.key).or_insert((w.update, None));
                entry.0 = w.update;
                if w.record {
                    entry.1 = Some(w.update.epoch);
                }
            }
            let keys: Vec<&str> = latest.keys().copied().collect();
            let values: Vec<&[u8]> = keys.iter().map(|k| latest[k].0.value).collect();
            let rooms: Vec<&str> = keys.iter().map(|k| latest[k].0.room).collect();
            let lineages: Vec<i64> = keys.iter().map(|k| latest[k].1.map_or(0, |e| e.lineage as i64)).collect();
            let moves: Vec<i64> = keys.iter().map(|k| latest[k].1.map_or(0, |e| i64::from(e.moves))).collect();
            tx.execute(
                "INSERT INTO outpost_state (key, value, room, lineage, moves)
                 SELECT * FROM UNNEST($1::text[], $2::bytea[], $3::text[], $4::bigint[], $5::bigint[])
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, room = EXCLUDED.room,
                     lineage = CASE WHEN EXCLUDED.moves > 0 THEN EXCLUDED.lineage ELSE outpost_state.lineage END,
                     moves = CASE WHEN EXCLUDED.moves > 0 THEN EXCLUDED.moves ELSE outpost_state.moves END,
                     updated_at = now()",
                &[&keys, &values, &rooms, &lineages, &moves],
            )
            .map_err(backend)?;
            tx.execute("UPDATE outpost_high_water SET seq = $2 WHERE stream = $1", &[&stream, &(last.seq as i64)])
                .map_err(backend)?;
        }
        tx.commit().map_err(backend)?;
        let high_water = fresh.last().map_or(high_water, |u| u.seq);
        let stale = fresh.len() as u64 - applied;
        Ok(Applied { applied, replayed: replayed as u64, stale, high_water })
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let row =
            self.client().query_opt("SELECT value FROM outpost_state WHERE key = $1", &[&key]).map_err(backend)?;
        Ok(row.map(|r| r.get::<_, Vec<u8>>(0)))
    }

    fn scan(&self, prefix: &str, limit: usize) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .client()
            .query(
                "SELECT key, value FROM outpost_state WHERE starts_with(key, $1) ORDER BY key LIMIT $2",
                &[&prefix, &limit],
            )
            .map_err(backend)?;
        Ok(rows.into_iter().map(|r| (r.get::<_, String>(0), r.get::<_, Vec<u8>>(1))).collect())
    }

    fn high_water(&self, stream: &str) -> Result<u64, StoreError> {
        let row = self
            .client()
            .query_opt("SELECT seq FROM outpost_high_water WHERE stream = $1", &[&stream])
            .map_err(backend)?;
        Ok(row.map_or(0, |r| r.get::<_, i64>(0) as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same conformance suite as the embedded store, against a real PostgreSQL that the test
    /// starts (`make test` installs the server).
    #[test]
    fn the_postgres_store_keeps_the_store_contract() {
        let pg = outpost_tests::pg::PgCluster::start().unwrap();
        let url = pg.url();
        super::super::conformance(&|| Box::new(PostgresStore::connect(&url).unwrap()));
    }

    #[test]
    fn two_stores_on_one_database_see_one_state_and_one_high_water_mark() {
        let pg = outpost_tests::pg::PgCluster::start().unwrap();
        let (a, b) = (PostgresStore::connect(&pg.url()).unwrap(), PostgresStore::connect(&pg.url()).unwrap());
        let u = |seq, value: &'static [u8]| Update { seq, room: "r", key: "k", value, epoch: RoomEpoch::default() };
        assert_eq!(a.apply("s", &[u(1, b"1"), u(2, b"2")]).unwrap().applied, 2);
        // The second core gets the same stream replayed after a failover: nothing doubles.
        let again = b.apply("s", &[u(2, b"2"), u(3, b"3")]).unwrap();
        assert_eq!((again.applied, again.replayed, again.high_water), (1, 1, 3));
        assert_eq!(a.get("k").unwrap().as_deref(), Some(&b"3"[..]));
    }

    #[test]
    fn an_unreachable_database_is_a_clear_error() {
        let e = PostgresStore::connect("host=/nonexistent-socket-dir port=5432 user=postgres").err().unwrap();
        assert!(e.to_string().contains("connecting to PostgreSQL"), "{e}");
    }
}
