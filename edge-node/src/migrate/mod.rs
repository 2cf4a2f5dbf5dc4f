//! Rooms that move between nodes (issue 26): what a target node keeps for players who follow
//! their room ([`credentials`]).

pub mod credentials;
