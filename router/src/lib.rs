//! `region-router`: sends each player to the healthy node with the lowest latency.
//!
//! # Layout (so far)
//! - [`estimate`]: the pure RTT model: great-circle distance at fibre speed, path inflation and a
//!   fixed overhead, for when no measurement is known.
//! - [`select`]: the pure placement decision over candidate nodes and their estimates.
//!
//! Still to come (issue 4): the registry and heartbeats, GeoIP lookups, learning from client probe
//! reports, ticket signing and the HTTP API. The decisions above are plain functions over data, so
//! those drivers stay thin.

pub mod estimate;
pub mod select;
