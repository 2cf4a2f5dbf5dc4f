//! The node's Prometheus metrics, served on `GET /metrics` (through `outpost_net::metrics`).
//!
//! A counter is one atomic: cheap to bump from room worker threads, no registry lock on the
//! hot path (the registry is locked only at start and per scrape).

use outpost_net::metrics::{Counter, FloatGauge, Histogram, MetricSet};

/// Upper bounds (seconds) of the tick-duration histogram buckets.
pub const TICK_BUCKETS: [f64; 10] = [0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025];

/// Upper bounds (seconds) of the commit-to-core-ack histogram: fsyncs on two machines and a
/// network hop, so milliseconds to seconds (a core outage shows as the long tail).
pub const ACK_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 4.096, 16.384];
/// Bounds of `outpost_outbox_group_commit_seconds`, s: an fsync takes from tens of µs to a busy
/// disk's hundreds of ms.
pub const GROUP_COMMIT_BUCKETS: [f64; 12] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.512];

macro_rules! counters {
    ($( $(#[doc = $doc:literal])* $field:ident ),* $(,)?) => {
        /// Every metric the node exports. Counters are bumped where things happen; the gauges
        /// in [`Scraped`] are read when `/metrics` is scraped.
        #[derive(Debug)]
        pub struct Metrics {
            set: MetricSet,
            $( $(#[doc = $doc])* pub $field: Counter, )*
            /// Guest tick durations.
            pub tick_seconds: Histogram,
            /// What is measured at each scrape.
            pub scraped: Scraped,
        }

        impl Default for Metrics {
            fn default() -> Self {
                let set = MetricSet::default();
                Metrics {
                    $( $field: set.counter(concat!("outpost_", stringify!($field)), concat!($($doc),*)), )*
                    tick_seconds: set.histogram("outpost_tick_seconds", "Guest tick duration.", &TICK_BUCKETS),
                    scraped: Scraped::new(&set),
                    set,
                }
            }
        }
    };
}

/// Gauges the admin API sets when `/metrics` is scraped, from the rooms, the outbox, the modules
/// and the process.
#[derive(Debug)]
pub struct Scraped {
    /// Rooms on the node.
    pub rooms: FloatGauge,
    /// Highest commit sequence number fsynced in the outbox.
    pub outbox_durable_seq: FloatGauge,
    /// Highest commit sequence number the core region acked.
    pub outbox_acked_seq: FloatGauge,
    /// Bytes of outbox segments on disk.
    pub outbox_bytes: FloatGauge,
    /// Modules on the node.
    pub modules: FloatGauge,
    /// Connected players.
    pub players: FloatGauge,
    /// CPU time of the node process.
    pub process_cpu_seconds: FloatGauge,
    /// CPU time of the room worker threads.
    pub room_workers_cpu_seconds: FloatGauge,
    /// Resident memory of the node process.
    pub process_resident_bytes: FloatGauge,
}

impl Scraped {
    fn new(set: &MetricSet) -> Scraped {
        Scraped {
            rooms: set.float_gauge("outpost_rooms", "Rooms on the node."),
            outbox_durable_seq: set
                .float_gauge("outpost_outbox_durable_seq", "Highest commit sequence number fsynced in the outbox."),
            outbox_acked_seq: set
                .float_gauge("outpost_outbox_acked_seq", "Highest commit sequence number the core region acked."),
            outbox_bytes: set.float_gauge("outpost_outbox_bytes", "Bytes of outbox segments on disk."),
            modules: set.float_gauge("outpost_modules", "Modules on the node."),
            players: set.float_gauge("outpost_players", "Connected players."),
            process_cpu_seconds: set.float_gauge("outpost_process_cpu_seconds", "CPU time of the node process."),
            room_workers_cpu_seconds: set.float_gauge(
                "outpost_room_workers_cpu_seconds",
                "CPU time of the room worker threads (guest calls and their effects); the rest of the process CPU is the transport, HTTP and bookkeeping.",
            ),
            process_resident_bytes: set.float_gauge("outpost_process_resident_bytes", "Resident memory of the node process."),
        }
    }
}

impl Metrics {
    /// Prometheus text (0.0.4) of every metric.
    pub fn render(&self) -> String {
        self.set.render()
    }

    /// Exposes the outbox's histograms (a node that forwards to a core has an outbox).
    pub fn expose_outbox(&self, commit_to_ack: Histogram, group_commit: Histogram) {
        self.set.add_histogram(
            "outpost_outbox_commit_to_ack_seconds",
            "Time from a guest's commit to the core region's ack of it (durable on both sides).",
            commit_to_ack,
        );
        self.set.add_histogram(
            "outpost_outbox_group_commit_seconds",
            "Time the oldest commit of each outbox group waited for its fsync: how long players may see a call's effects before its commits are durable.",
            group_commit,
        );
    }
}

counters! {
    /// Modules compiled from bytes (cold compiles).
    module_compiles_total,
    /// Modules loaded from the on-disk compiled cache.
    module_cache_loads_total,
    /// Epoch ticks (1 ms each) that bound guest calls; flat while the node has no rooms.
    epoch_ticks_total,
    /// Modules uploaded (new versions).
    module_uploads_total,
    /// Rooms created.
    rooms_created_total,
    /// Guest faults of every kind.
    guest_faults_total,
    /// Guest faults from the CPU budget.
    guest_faults_cpu_total,
    /// Guest faults from the memory limit.
    guest_faults_memory_total,
    /// Guest faults from traps.
    guest_faults_trap_total,
    /// Guest faults from output over the per-call limit.
    guest_faults_output_total,
    /// Epoch deadlines forgiven because the worker thread was preempted.
    guest_preemptions_forgiven_total,
    /// Messages into guests.
    messages_in_total,
    /// Messages out of guests (per addressed delivery).
    messages_out_total,
    /// Payload bytes into guests.
    bytes_in_total,
    /// Payload bytes out of guests.
    bytes_out_total,
    /// Unreliable guest sends over the datagram cap.
    guest_oversized_datagrams_total,
    /// Commits made by guests.
    guest_commits_total,
    /// Operator signals delivered to guests.
    signals_total,
    /// Hot upgrades that succeeded.
    room_upgrades_total,
    /// Hot upgrades that failed and left the room on its old version.
    room_upgrades_failed_total,
    /// Rooms handed to another node (past the point of no return).
    rooms_moved_out_total,
    /// Rooms restored here from another node.
    rooms_moved_in_total,
    /// Players that followed their room here with a move credential.
    players_moved_in_total,
    /// Player messages a moving room could not keep: unreliable ones while it moved, or
    /// reliable ones past its bound.
    moved_messages_dropped_total,
    /// Moved rooms whose commits this node held until the core had their earlier nodes'.
    commit_holds_total,
    /// Holds given up at `--commit-hold`: the earlier node's commits had not reached the core.
    commit_holds_expired_total,
    /// Probe beacon replies sent.
    probe_replies_total,
    /// Probe datagrams dropped as malformed.
    probe_malformed_total,
    /// Probe datagrams dropped by the per-source rate limit.
    probe_rate_limited_total,
    /// Admin requests refused for a missing or wrong token.
    admin_unauthorized_total,
    /// Players that joined a room.
    players_joined_total,
    /// Tickets spent by joins (reported to the router as `redeemed`, so it releases the place
    /// it reserved for each).
    tickets_redeemed_total,
    /// Batches the core region acked.
    outbox_forwarded_batches_total,
    /// Failed or lost links to the core region.
    core_link_failures_total,
    /// Commits refused because the outbox was full (the room faulted with `outbox-full`).
    outbox_full_total,
    /// Heartbeats the router took.
    heartbeats_sent_total,
    /// Heartbeats that failed (router unreachable or refusing).
    heartbeat_failures_total,
    /// Joins refused, any reason.
    players_refused_total,
    /// Player connections closed by the node for misbehaving (malformed, too large, rate).
    players_closed_protocol_total,
    /// Player connections closed with `replaced` because the same player joined again.
    players_replaced_total,
    /// Players closed with `slow-consumer`: their reliable backlog stayed over its limit.
    players_slow_consumer_total,
    /// Incoming player connections refused at a connection cap, before any handshake work.
    player_connections_refused_total,
    /// Incoming player connections asked to prove their address first (past half the cap).
    player_connections_retried_total,
    /// Unreliable messages to players dropped because the player was congested.
    player_datagrams_dropped_total,
    /// Unreliable messages sent reliably and in order, to players whose carrier has no
    /// unreliable channel (WebSocket).
    player_unreliable_as_reliable_total,
    /// Incoming datagrams dropped (oversized or malformed).
    player_datagrams_in_dropped_total,
    /// Incoming player datagrams quinn received and dropped before the node read them: the
    /// player's receive queue was full, or the player left with some still queued.
    player_datagrams_in_unread_total,
    /// Player-ticks run (sum over ticks of the players in the room).
    player_ticks_total,
    /// Player UDP packets handed to the kernel.
    udp_packets_sent_total,
    /// `sendmmsg` calls of the player transport; packets over batches is the batch size.
    udp_send_batches_total,
    /// Player UDP packets the kernel refused to send (each is lost, as UDP may lose it).
    udp_send_errors_total,
    /// Player packets dropped because the send batch was full while the kernel's buffer was.
    udp_send_queue_full_total,
    /// Flushes of the send batch that found the kernel's send buffer full (the rest waited).
    udp_send_kernel_full_total,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.module_compiles_total.inc_by(2);
        m.tick_seconds.observe(30e-6);
        m.scraped.rooms.set(3.0);
        let text = m.render();
        assert!(text.contains("outpost_module_compiles_total 2\n"), "{text}");
        assert!(
            text.contains("# HELP outpost_module_compiles_total Modules compiled from bytes (cold compiles).\n"),
            "{text}"
        );
        assert!(text.contains("outpost_rooms 3.0\n"), "{text}");
        // Bounds are written as Rust prints floats; Prometheus reads `5e-05` as 0.00005.
        assert!(text.contains("outpost_tick_seconds_bucket{le=\"5e-05\"} 1\n"), "{text}");
        assert!(text.contains("outpost_tick_seconds_count 1\n"), "{text}");
    }
}
