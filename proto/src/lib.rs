//! Outpost's shared formats: everything two processes must agree on, in one place.
//!
//! # Layout
//! - [`codes`]: the close/refuse code enum (QUIC application codes and JSON strings).
//! - [`config`]: config errors, durations and the TOML overlay every binary uses.
//! - [`keys`]: Ed25519 key text forms and key files.
//! - [`ticket`]: signed join tickets (mint and verify).
//! - [`beacon`]: the latency-probe datagram format.
//! - [`frame`]: player frames on QUIC streams and datagrams.
//! - [`link`]: the edge → core link's frames.
//! - [`outbox`]: the edge outbox's record format on disk.
//! - [`api`]: JSON types of the HTTP APIs and ready files.
//! - [`admin`]: the edge admin API's routes.
//! - [`ids`]: node ids and certificate fingerprints.
//! - [`rate`]: the token bucket every rate limit uses.
//! - [`procstat`]: CPU time from `/proc` stat lines (handed in as text).
//!
//! This crate is sans-I/O: no sockets, no files (`outpost-net` reads and writes them), no async
//! runtime, and the clock is always an argument, so every decision here is a pure, testable function.

pub mod admin;
pub mod api;
pub mod beacon;
pub mod codes;
pub mod config;
pub mod frame;
pub mod ids;
pub mod keys;
pub mod link;
pub mod outbox;
pub mod procstat;
pub mod rate;
pub mod ticket;

pub use codes::CloseCode;
