//! Per-room sandbox limits, all from config.

use std::time::Duration;

/// Limits applied to every room's store and calls.
#[derive(Debug, Clone)]
pub struct SandboxLimits {
    /// Linear memory per room, bytes.
    pub memory_bytes: usize,
    /// Table elements per table.
    pub table_elements: usize,
    /// Instances per room (a component instantiates a few core instances).
    pub instances: usize,
    /// Tables per room.
    pub tables: usize,
    /// Memories per room.
    pub memories: usize,
    /// CPU budget for one guest call.
    pub call_budget: Duration,
    /// CPU budget for one `message` call, smaller: a room gets one call per player message, and
    /// a room whose handler spins would otherwise take a whole `call_budget` of its worker's time
    /// per message, delaying every other room there (twenty spinning rooms held a relay room's
    /// messages back 113 ms per burst). A message handler of a real game takes microseconds.
    pub message_budget: Duration,
    /// Most effects (send, broadcast, commit, kick, log) one guest call may queue.
    pub max_effects_per_call: usize,
    /// Most payload bytes one guest call may queue.
    pub max_effect_bytes_per_call: usize,
    /// Largest single message a guest may send.
    pub max_message_bytes: usize,
    /// Largest unreliable payload; bigger ones are counted and logged.
    pub datagram_cap: usize,
    /// Lines of guest output kept per room.
    pub log_lines: usize,
    /// Maximum rooms on the node (sizes the pooling allocator).
    pub max_rooms: u32,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        SandboxLimits {
            memory_bytes: 64 << 20,
            table_elements: 20_000,
            instances: 32,
            tables: 32,
            memories: 8,
            call_budget: Duration::from_millis(10),
            message_budget: Duration::from_millis(2),
            max_effects_per_call: 4096,
            max_effect_bytes_per_call: 4 << 20,
            max_message_bytes: 1 << 20,
            datagram_cap: 1100,
            log_lines: 64,
            max_rooms: 1000,
        }
    }
}
