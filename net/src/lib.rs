//! What Outpost's three servers (`edge-node`, `region-router`, `core-region`) share, so each does
//! it one way: how a service starts and stops, how it checks tokens, serves HTTP, sets up TLS,
//! binds and batches UDP, and speaks the edge ↔ core link.
//!
//! # Layout
//! - [`service`]: start-up: the common flags, layered config (flags, env, TOML), logging, the
//!   ready file, the shutdown signal, secret tokens and the one bearer-token check.
//! - [`http`]: the HTTP/1.1 accept loop (plain or TLS), the JSON error body, reply helpers.
//! - [`tls`]: node certificates, pinned-certificate verifiers, HTTPS and QUIC configs, a private CA.
//! - [`udp`]: sockets with large kernel buffers, `sendmmsg` batching and the pieces of a
//!   `quinn-proto` loop.
//! - [`link`]: the edge → core link: frames on a QUIC stream, for both ends.
//! - [`metrics`]: Prometheus metrics through `prometheus-client`, served as text 0.0.4.
//! - [`files`]: atomic writes and key files.
//!
//! What it does not do: decide anything about games, rooms or routing. Formats live in
//! `outpost-proto`; what a player needs to connect lives in `outpost-client`.

pub mod failpoint;
pub mod files;
pub mod http;
pub mod link;
pub mod metrics;
pub mod service;
pub mod tls;
pub mod udp;
