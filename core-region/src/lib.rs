//! `core-region`: durable authoritative state from the edges.
//!
//! # Layout
//! - [`store`]: the one storage trait, its embedded implementation (redb, one file under the data
//!   dir) and the conformance suite every implementation must pass.
//!
//! The QUIC ingest, the HTTP reads and the PostgreSQL store come next (issue 5); the store's
//! contract (idempotent, ordered, durable before it returns) is what they build on.

pub mod store;
