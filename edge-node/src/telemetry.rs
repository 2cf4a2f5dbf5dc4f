//! The node's Prometheus metrics.
//!
//! Metrics are plain atomics rendered as Prometheus text on `GET /metrics`: cheap to bump from
//! room worker threads, no registry locks on the hot path.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds (seconds) of the tick-duration histogram buckets.
pub const TICK_BUCKETS: [f64; 10] = [0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025];

/// Upper bounds (seconds) of the commit-to-core-ack histogram: fsyncs on two machines and a
/// network hop, so milliseconds to seconds (a core outage shows as the long tail).
pub const ACK_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 4.096, 16.384];

/// A fixed-bucket histogram of durations.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new(&TICK_BUCKETS)
    }
}

impl Histogram {
    /// A histogram with these bucket bounds (seconds, ascending).
    pub fn new(bounds: &'static [f64]) -> Histogram {
        let buckets = bounds.iter().map(|_| AtomicU64::new(0)).collect();
        Histogram { bounds, buckets, count: AtomicU64::new(0), sum_ns: AtomicU64::new(0) }
    }

    /// Records one observation.
    pub fn observe(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        for (i, bound) in self.bounds.iter().enumerate() {
            if secs <= *bound {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Appends the Prometheus text of this histogram.
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, bound) in self.bounds.iter().enumerate() {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", self.buckets[i].load(Ordering::Relaxed));
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

macro_rules! counters {
    ($( $(#[doc = $doc:literal])* $field:ident : $kind:literal ),* $(,)?) => {
        /// Every metric the node exports.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $( $(#[doc = $doc])* pub $field: AtomicU64, )*
            /// Guest tick durations.
            pub tick_seconds: Histogram,
        }

        impl Metrics {
            /// Prometheus text exposition, with `gauges` (name, help, value) computed by the caller.
            pub fn render(&self, gauges: &[(&str, &str, f64)]) -> String {
                let mut out = String::new();
                $(
                    let name = concat!("outpost_", stringify!($field));
                    let help = concat!($($doc),*).trim();
                    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {}\n{name} {}", $kind, self.$field.load(Ordering::Relaxed));
                )*
                for (name, help, value) in gauges {
                    let _ = writeln!(out, "# HELP outpost_{name} {help}\n# TYPE outpost_{name} gauge\noutpost_{name} {value}");
                }
                self.tick_seconds.render(&mut out, "outpost_tick_seconds", "Guest tick duration.");
                out
            }
        }
    };
}

counters! {
    /// Modules compiled from bytes (cold compiles).
    module_compiles_total: "counter",
    /// Modules loaded from the on-disk compiled cache.
    module_cache_loads_total: "counter",
    /// Epoch ticks (1 ms each) that bound guest calls; flat while the node has no rooms.
    epoch_ticks_total: "counter",
    /// Modules uploaded (new versions).
    module_uploads_total: "counter",
    /// Rooms created.
    rooms_created_total: "counter",
    /// Guest faults of every kind.
    guest_faults_total: "counter",
    /// Guest faults from the CPU budget.
    guest_faults_cpu_total: "counter",
    /// Guest faults from the memory limit.
    guest_faults_memory_total: "counter",
    /// Guest faults from traps.
    guest_faults_trap_total: "counter",
    /// Guest faults from output over the per-call limit.
    guest_faults_output_total: "counter",
    /// Epoch deadlines forgiven because the worker thread was preempted.
    guest_preemptions_forgiven_total: "counter",
    /// Messages into guests.
    messages_in_total: "counter",
    /// Messages out of guests (per addressed delivery).
    messages_out_total: "counter",
    /// Payload bytes into guests.
    bytes_in_total: "counter",
    /// Payload bytes out of guests.
    bytes_out_total: "counter",
    /// Unreliable guest sends over the datagram cap.
    guest_oversized_datagrams_total: "counter",
    /// Commits made by guests.
    guest_commits_total: "counter",
    /// Operator signals delivered to guests.
    signals_total: "counter",
    /// Hot upgrades that succeeded.
    room_upgrades_total: "counter",
    /// Hot upgrades that failed and left the room on its old version.
    room_upgrades_failed_total: "counter",
    /// Probe beacon replies sent.
    probe_replies_total: "counter",
    /// Probe datagrams dropped as malformed.
    probe_malformed_total: "counter",
    /// Probe datagrams dropped by the per-source rate limit.
    probe_rate_limited_total: "counter",
    /// Admin requests refused for a missing or wrong token.
    admin_unauthorized_total: "counter",
    /// Players that joined a room.
    players_joined_total: "counter",
    /// Batches the core region acked.
    outbox_forwarded_batches_total: "counter",
    /// Failed or lost links to the core region.
    core_link_failures_total: "counter",
    /// Commits refused because the outbox was full (the room faulted with `outbox-full`).
    outbox_full_total: "counter",
    /// Heartbeats the router took.
    heartbeats_sent_total: "counter",
    /// Heartbeats that failed (router unreachable or refusing).
    heartbeat_failures_total: "counter",
    /// Joins refused, any reason.
    players_refused_total: "counter",
    /// Player connections closed by the node for misbehaving (malformed, too large, rate).
    players_closed_protocol_total: "counter",
    /// Player connections closed with `replaced` because the same player joined again.
    players_replaced_total: "counter",
    /// Incoming player connections refused at a connection cap, before any handshake work.
    player_connections_refused_total: "counter",
    /// Incoming player connections asked to prove their address first (past half the cap).
    player_connections_retried_total: "counter",
    /// Unreliable messages to players dropped because the player was congested.
    player_datagrams_dropped_total: "counter",
    /// Incoming datagrams dropped (oversized or malformed).
    player_datagrams_in_dropped_total: "counter",
    /// Incoming player datagrams quinn received and dropped before the node read them: the
    /// player's receive queue was full, or the player left with some still queued.
    player_datagrams_in_unread_total: "counter",
    /// Player-ticks run (sum over ticks of the players in the room).
    player_ticks_total: "counter",
    /// Player UDP packets handed to the kernel.
    udp_packets_sent_total: "counter",
    /// `sendmmsg` calls of the player transport; packets over batches is the batch size.
    udp_send_batches_total: "counter",
    /// Player UDP packets the kernel refused to send (each is lost, as UDP may lose it).
    udp_send_errors_total: "counter",
    /// Player packets dropped because the send batch was full while the kernel's buffer was.
    udp_send_queue_full_total: "counter",
    /// Flushes of the send batch that found the kernel's send buffer full (the rest waited).
    udp_send_kernel_full_total: "counter",
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.module_compiles_total.fetch_add(2, Ordering::Relaxed);
        m.tick_seconds.observe(std::time::Duration::from_micros(30));
        let text = m.render(&[("rooms", "Rooms on the node.", 3.0)]);
        assert!(text.contains("outpost_module_compiles_total 2\n"), "{text}");
        assert!(
            text.contains("# HELP outpost_module_compiles_total Modules compiled from bytes (cold compiles).\n"),
            "{text}"
        );
        assert!(text.contains("outpost_rooms 3\n"));
        assert!(text.contains("outpost_tick_seconds_bucket{le=\"0.00005\"} 1\n"));
        assert!(text.contains("outpost_tick_seconds_count 1\n"));
    }
}
