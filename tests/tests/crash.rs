//! Crash points: the edge and the core killed (SIGKILL, through `OUTPOST_FAILPOINTS`) inside their
//! write paths: between the outbox's write and its fsync, after the fsync, between the acked mark
//! and the deletion of segments, inside a store batch before its commit, after the commit before
//! the ack; and an outbox whose last segment ends in a torn record the test wrote itself. After
//! each, the process comes back on its data, and the core holds exactly what was answered: every
//! signal that answered `committed` whole, the one cut by the kill a prefix or nothing, each
//! commit applied once.

use outpost_tests::{ADMIN_TOKEN, Core, Edge, guest, held, signal_raw, wait_for, with_env};
use std::time::Duration;

const PER_CALL: usize = 50;

/// Segments of 64 KiB (an outbox of at most 1 MiB), so a run rolls over several and acks
/// delete some.
const EDGE_ARGS: [&str; 4] = ["--outbox-max-bytes", "1048576", "--call-budget", "250ms"];

fn edge_for(core: &Core) -> Edge {
    let mut args = vec!["--core", &core.ready.quic, "--core-cert-sha256", &core.ready.cert_sha256];
    args.extend_from_slice(&EDGE_ARGS);
    let e = Edge::start(&args).unwrap();
    assert_eq!(e.upload("echo", &guest("echo")).status, 201);
    e.create_room("echo", "ledger");
    e
}

/// Signals calls `from..` one after another until one fails or `max` are made; returns the calls
/// that answered and the one that did not (if any).
fn drive(edge: &Edge, from: usize, max: usize) -> (Vec<usize>, Option<usize>) {
    let mut answered = Vec::new();
    for call in from..from + max {
        match signal_raw(&edge.ready.admin, "ledger", &format!("commit-bulk c{call}/ {PER_CALL} 8")) {
            Some((200, text)) if text == format!("committed {PER_CALL}") => answered.push(call),
            _ => return (answered, Some(call)),
        }
    }
    (answered, None)
}

fn drained(edge: &Edge) {
    wait_for("the outbox acked", Duration::from_secs(30), || {
        let (durable, acked) = (edge.metric("outpost_outbox_durable_seq"), edge.metric("outpost_outbox_acked_seq"));
        (durable > 0.0 && acked == durable).then_some(())
    })
    .unwrap();
}

/// The core holds every answered call whole, each cut call as a prefix, nothing past `next`, and
/// (when it ran throughout, so its counter saw everything) applied each commit once.
fn exact(core: &Core, answered: &[usize], cut: &[usize], next: usize) {
    exact_keys(core, answered, cut, next, true)
}

fn exact_keys(core: &Core, answered: &[usize], cut: &[usize], next: usize, count_applied: bool) {
    let mut total = 0;
    for &call in answered {
        assert_eq!(held(core, call).len(), PER_CALL, "call {call} answered but is not whole at the core");
        total += PER_CALL;
    }
    for &call in cut {
        let got = held(core, call);
        assert!(got.iter().enumerate().all(|(i, k)| i == *k), "call {call} left a gap: {got:?}");
        total += got.len();
    }
    assert!(held(core, next).is_empty(), "nothing past the last call");
    if count_applied {
        assert_eq!(core.metric("outpost_core_updates_applied_total"), total as f64, "each commit applied once");
    }
}

#[test]
fn an_edge_killed_inside_its_outbox_loses_nothing_it_answered_for() {
    for (point, at) in [
        ("outbox.before_fsync", 3),
        ("outbox.before_fsync", 40),
        ("outbox.after_fsync", 7),
        ("outbox.before_delete", 1),
        ("outbox.before_delete", 3),
    ] {
        let core = Core::start(&[]).unwrap();
        let mut edge = with_env(&[("OUTPOST_FAILPOINTS", &format!("{point}={at}"))], || edge_for(&core));
        let (answered, cut) = drive(&edge, 0, 400);
        let cut = cut.unwrap_or_else(|| panic!("{point}={at} was never reached in 400 calls"));
        assert!(edge.exited(Duration::from_secs(10)), "{point}={at}: the edge should have died");
        assert!(edge.log_text().contains(&format!("failpoint {point}: hit {at}")), "{}", edge.log_text());
        let edge = edge.restart().unwrap();
        drained(&edge);
        exact(&core, &answered, &[cut], cut + 1);
        eprintln!(
            "{point}={at}: {} calls answered, call {cut} cut with {} kept",
            answered.len(),
            held(&core, cut).len()
        );
    }
}

#[test]
fn a_core_killed_inside_a_batch_applies_everything_once_when_back() {
    for (point, at) in [("store.before_commit", 2), ("store.before_commit", 9), ("core.before_ack", 4)] {
        let mut core = with_env(&[("OUTPOST_FAILPOINTS", &format!("{point}={at}"))], || Core::start(&[]).unwrap());
        let edge = edge_for(&core);
        // The edge answers from its own outbox whether or not the core is up.
        let (answered, cut) = drive(&edge, 0, 120);
        assert_eq!(cut, None, "{point}={at}: the edge kept answering");
        assert!(core.exited(Duration::from_secs(30)), "{point}={at}: the core should have died");
        let core = core.kill9_and_restart_same_address().unwrap();
        drained(&edge);
        // The restarted core's counter starts at zero; what it shows is that the stream's
        // high-water mark is exactly the edge's last sequence number, and replays were skipped.
        exact_keys(&core, &answered, &[], answered.len(), false);
        let total = (answered.len() * PER_CALL) as f64;
        assert_eq!(edge.metric("outpost_outbox_acked_seq"), total, "the core's mark is the last commit");
        assert!(
            core.metric("outpost_core_updates_applied_total") + core.metric("outpost_core_updates_replayed_total")
                <= total,
            "the restarted core saw no more than the edge resent"
        );
        eprintln!(
            "{point}={at}: {} commits once, {} replays skipped",
            answered.len() * PER_CALL,
            core.metric("outpost_core_updates_replayed_total")
        );
    }
}

#[test]
fn a_torn_outbox_tail_is_cut_and_everything_answered_still_arrives() {
    let core = Core::start(&[]).unwrap();
    let (quic, cert) = (core.ready.quic.clone(), core.ready.cert_sha256.clone());
    let stopped = core.stop();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("edge");
    let mut args = vec!["--core", quic.as_str(), "--core-cert-sha256", cert.as_str()];
    args.extend_from_slice(&EDGE_ARGS);
    let edge = Edge::start_in(&data, &args).unwrap();
    assert_eq!(edge.upload("echo", &guest("echo")).status, 201);
    edge.create_room("echo", "ledger");
    let (answered, cut) = drive(&edge, 0, 30);
    assert_eq!(cut, None);
    // Kill the edge (the core is down, so everything is still in the outbox), then tear its
    // newest segment: a record header promising more than follows.
    drop(edge);
    let newest = std::fs::read_dir(data.join("outbox"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("seg-")))
        .max()
        .unwrap();
    let mut bytes = std::fs::read(&newest).unwrap();
    bytes.extend_from_slice(&[0, 0, 1, 0, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3]);
    std::fs::write(&newest, bytes).unwrap();
    let core = stopped.start_again().unwrap();
    let edge = Edge::start_in(&data, &args).unwrap();
    assert!(edge.log_text().contains("cutting a torn tail"), "{}", edge.log_text());
    drained(&edge);
    exact(&core, &answered, &[], answered.len());
}

#[test]
fn failpoints_unset_cost_nothing_visible() {
    // A node without OUTPOST_FAILPOINTS runs the same paths and never dies there.
    let core = Core::start(&[]).unwrap();
    let edge = edge_for(&core);
    let (answered, cut) = drive(&edge, 0, 20);
    assert_eq!((answered.len(), cut), (20, None));
    drained(&edge);
    exact(&core, &answered, &[], 20);
    assert_eq!(core.get("/v1/state/c0/0", Some(ADMIN_TOKEN)).status, 200);
}
