//! What the `outpost` CLI's commands share with `outpost-bench`: the fleet's HTTP APIs
//! ([`fleet`]), beacon probing ([`probe`]) and tickets ([`ticket`]). The binary (`main.rs`) holds
//! the operator and player commands, one file each.

pub mod fleet;
pub mod probe;
pub mod ticket;
