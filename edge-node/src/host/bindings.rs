//! The one `bindgen!` over `wit/`: the host side of the `outpost:room` world.
//!
//! Imports are trappable so that a guest flooding the host with effects can be stopped mid-call.

wasmtime::component::bindgen!({
    world: "room",
    path: "../wit",
    imports: { default: trappable },
});

pub use outpost::room::types::{Delivery, LogLevel, Saved};
