//! Every metric each service exposes on `GET /metrics`, pinned by name, type and label names:
//! dashboards, alerts, the benchmarks and the README read them, so a rename or a changed type
//! must be a decision, not an accident. The text is the Prometheus format 0.0.4 (no `# EOF`).

use outpost_tests::{Core, Edge, Router, http};
use std::collections::BTreeSet;

/// `name type` for each `# TYPE` line, and `sample{label,names}` for each sample line (values
/// and label values left out), sorted.
fn shape(text: &str) -> (Vec<String>, BTreeSet<String>) {
    let mut types = Vec::new();
    let mut samples = BTreeSet::new();
    for line in text.lines() {
        if let Some(t) = line.strip_prefix("# TYPE ") {
            types.push(t.to_string());
        } else if !line.starts_with('#') && !line.is_empty() {
            let series = line.rsplit_once(' ').map_or(line, |(s, _)| s);
            let shape = match series.split_once('{') {
                None => series.to_string(),
                Some((name, labels)) => {
                    let names: Vec<&str> = labels
                        .trim_end_matches('}')
                        .split(',')
                        .filter_map(|kv| kv.split_once('='))
                        .map(|(k, _)| k)
                        .collect();
                    format!("{name}{{{}}}", names.join(","))
                }
            };
            samples.insert(shape);
        }
    }
    types.sort();
    (types, samples)
}

fn check(service: &str, text: &str, types: &[&str], labelled: &[&str]) {
    assert!(!text.contains("# EOF"), "{service}: Prometheus 0.0.4 text, not OpenMetrics");
    let (got_types, samples) = shape(text);
    let mut want: Vec<String> = types.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(got_types, want, "{service}: metric names and types");
    for l in labelled {
        assert!(samples.contains(*l), "{service}: no series {l} in {samples:?}");
    }
    // Every sample belongs to a declared metric (a histogram's _bucket, _sum and _count included).
    for s in &samples {
        let name = s.split('{').next().unwrap_or_default();
        let declared = got_types.iter().any(|t| {
            let base = t.split(' ').next().unwrap_or_default();
            name == base
                || [base, "_bucket"].concat() == name
                || [base, "_sum"].concat() == name
                || [base, "_count"].concat() == name
        });
        assert!(declared, "{service}: sample {s} has no # TYPE line");
    }
}

const EDGE: &[&str] = &[
    "outpost_admin_unauthorized_total counter",
    "outpost_bytes_in_total counter",
    "outpost_bytes_out_total counter",
    "outpost_commit_holds_expired_total counter",
    "outpost_commit_holds_total counter",
    "outpost_core_link_failures_total counter",
    "outpost_epoch_ticks_total counter",
    "outpost_guest_commits_total counter",
    "outpost_guest_faults_cpu_total counter",
    "outpost_guest_faults_memory_total counter",
    "outpost_guest_faults_output_total counter",
    "outpost_guest_faults_total counter",
    "outpost_guest_faults_trap_total counter",
    "outpost_guest_oversized_datagrams_total counter",
    "outpost_guest_preemptions_forgiven_total counter",
    "outpost_heartbeat_failures_total counter",
    "outpost_heartbeats_sent_total counter",
    "outpost_messages_in_total counter",
    "outpost_messages_out_total counter",
    "outpost_module_cache_loads_total counter",
    "outpost_module_compiles_total counter",
    "outpost_module_uploads_total counter",
    "outpost_modules gauge",
    "outpost_moved_messages_dropped_total counter",
    "outpost_outbox_acked_seq gauge",
    "outpost_outbox_bytes gauge",
    "outpost_outbox_commit_to_ack_seconds histogram",
    "outpost_outbox_durable_seq gauge",
    "outpost_outbox_forwarded_batches_total counter",
    "outpost_outbox_full_total counter",
    "outpost_outbox_group_commit_seconds histogram",
    "outpost_player_connections_refused_total counter",
    "outpost_player_connections_retried_total counter",
    "outpost_player_datagrams_dropped_total counter",
    "outpost_player_datagrams_in_dropped_total counter",
    "outpost_player_datagrams_in_unread_total counter",
    "outpost_player_ticks_total counter",
    "outpost_player_unreliable_as_reliable_total counter",
    "outpost_players gauge",
    "outpost_players_closed_protocol_total counter",
    "outpost_players_joined_total counter",
    "outpost_players_moved_in_total counter",
    "outpost_players_refused_total counter",
    "outpost_players_replaced_total counter",
    "outpost_players_slow_consumer_total counter",
    "outpost_probe_malformed_total counter",
    "outpost_probe_rate_limited_total counter",
    "outpost_probe_replies_total counter",
    "outpost_process_cpu_seconds gauge",
    "outpost_process_resident_bytes gauge",
    "outpost_room_upgrades_failed_total counter",
    "outpost_room_upgrades_total counter",
    "outpost_room_workers_cpu_seconds gauge",
    "outpost_rooms gauge",
    "outpost_rooms_created_total counter",
    "outpost_rooms_moved_in_total counter",
    "outpost_rooms_moved_out_total counter",
    "outpost_signals_total counter",
    "outpost_tick_seconds histogram",
    "outpost_tickets_redeemed_total counter",
    "outpost_udp_packets_sent_total counter",
    "outpost_udp_send_batches_total counter",
    "outpost_udp_send_errors_total counter",
    "outpost_udp_send_kernel_full_total counter",
    "outpost_udp_send_queue_full_total counter",
];

const ROUTER: &[&str] = &[
    "outpost_router_candidate_lists_total counter",
    "outpost_router_heartbeats_rejected_total counter",
    "outpost_router_heartbeats_total counter",
    "outpost_router_matches_placed_total counter",
    "outpost_router_matches_refused_total counter",
    "outpost_router_nodes gauge",
    "outpost_router_peer_dropped_total counter",
    "outpost_router_peer_forwarded_total counter",
    "outpost_router_peer_received_total counter",
    "outpost_router_probe_rejected_total counter",
    "outpost_router_probe_reports_total counter",
    "outpost_router_probe_results_total counter",
    "outpost_router_rate_limited_total counter",
    "outpost_router_routes_total counter",
    "outpost_router_routes_unavailable_total counter",
    "outpost_router_unauthorized_total counter",
];

const CORE: &[&str] = &[
    "outpost_core_batches_total counter",
    "outpost_core_links_active gauge",
    "outpost_core_links_refused_total counter",
    "outpost_core_loads_total counter",
    "outpost_core_positions_total counter",
    "outpost_core_store_errors_total counter",
    "outpost_core_updates_applied_total counter",
    "outpost_core_updates_replayed_total counter",
    "outpost_core_updates_stale_total counter",
];

#[test]
fn every_service_exposes_its_documented_metrics_by_name_type_and_labels() {
    let core = Core::start(&[]).unwrap();
    let edge = Edge::start(&["--core", &core.ready.quic, "--core-cert-sha256", &core.ready.cert_sha256]).unwrap();
    let text = edge.admin("GET", "/metrics", b"").text();
    check(
        "edge-node",
        &text,
        EDGE,
        &[
            "outpost_tick_seconds_bucket{le}",
            "outpost_outbox_commit_to_ack_seconds_bucket{le}",
            "outpost_outbox_group_commit_seconds_bucket{le}",
        ],
    );
    // Without a core there is no outbox, and so no outbox histograms.
    let alone = Edge::start(&[]).unwrap();
    let text = alone.admin("GET", "/metrics", b"").text();
    let without: Vec<&str> = EDGE
        .iter()
        .copied()
        .filter(|t| !t.starts_with("outpost_outbox_commit_to_ack") && !t.starts_with("outpost_outbox_group_commit"))
        .collect();
    check("edge-node without a core", &text, &without, &[]);

    let router = Router::start(&[]).unwrap();
    let text = http("GET", &format!("{}/metrics", router.url()), None, b"").text();
    check("region-router", &text, ROUTER, &["outpost_router_routes_total{method}", "outpost_router_nodes{health}"]);

    let text = core.get("/metrics", None).text();
    check("core-region", &text, CORE, &[]);
}
