//! Forwarding committed state to the core region: the durable [`outbox::Outbox`] and the link
//! task that drains it.
//!
//! The forwarder connects to the first reachable core (`--core A,B` fails over in order, each
//! address with its pinned certificate), learns from `Welcome` where the core's copy of this
//! outbox's stream ends, and streams everything after it in order, dropping what each `Ack`
//! covers. When no core answers it retries with backoff; the outbox meanwhile grows, bounded.
//! Records of a room that moved here wait while the room's [`holds`] say the core lacks what it
//! committed on its earlier nodes.

pub mod holds;
pub mod loader;
pub mod outbox;

use crate::telemetry::Metrics;
use holds::{Holds, Verdict};
use outbox::Outbox;
use outpost_proto::api::StreamMark;
use outpost_proto::link::RoomEpoch;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Where the core regions are.
#[derive(Debug, Clone)]
pub struct CoreTarget {
    /// QUIC address.
    pub addr: SocketAddr,
    /// Its certificate's SHA-256.
    pub cert_sha256: String,
}

/// Where committed state goes and how much of it may wait.
#[derive(Debug, Clone)]
pub struct ForwardSettings {
    /// The cores, tried in order.
    pub cores: Vec<CoreTarget>,
    /// The outbox's limits.
    pub outbox: outbox::OutboxLimits,
    /// How long a join waits for the player's saved state.
    pub load_timeout: Duration,
    /// How long a moved room's commits wait for its earlier nodes' ([`holds`]).
    pub commit_hold: Duration,
}

/// Updates per batch sent to the core.
const BATCH: usize = 1000;
/// How long a batch may wait for its ack before the link is taken for dead (a core killed
/// without closing its connections would otherwise hold the link until the QUIC idle timeout).
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a held record's marks are asked about again.
const HOLD_POLL: Duration = Duration::from_millis(20);

/// The first of `epochs` (a batch's, in order) that a hold keeps back: its index, its epoch and
/// the marks it waits for. A hold past its deadline lapses here, counted and logged.
fn first_held(
    holds: &Holds,
    epochs: impl Iterator<Item = RoomEpoch>,
    metrics: &Metrics,
) -> Option<(usize, RoomEpoch, Vec<StreamMark>)> {
    if holds.is_empty() {
        return None;
    }
    let now = std::time::Instant::now();
    let expired = |after: &[StreamMark]| {
        metrics.commit_holds_expired_total.inc();
        tracing::warn!(
            ?after,
            "a moved room's commits go without its earlier nodes' (the hold's deadline passed); the core's room epochs keep those from overwriting them"
        );
    };
    epochs.enumerate().find_map(|(i, epoch)| match holds.check(&epoch, now, expired) {
        Verdict::Wait(after) => Some((i, epoch, after)),
        Verdict::Go => None,
    })
}

/// Asks the core how far each mark's stream is, and strikes the marks it has reached.
async fn ask_positions(link: &outpost_net::link::CoreLink, holds: &Holds, after: &[StreamMark]) -> Result<(), String> {
    for m in after {
        let at = tokio::time::timeout(ACK_TIMEOUT, link.position(&m.stream))
            .await
            .map_err(|_| format!("no position for {} within {ACK_TIMEOUT:?}", m.stream))?
            .map_err(|e| e.to_string())?;
        holds.reached(&m.stream, at);
    }
    Ok(())
}

/// Drains the outbox into the cores until the task is dropped.
pub async fn run(
    outbox: Arc<Outbox>,
    holds: Arc<Holds>,
    cores: Vec<CoreTarget>,
    node_id: String,
    token: String,
    metrics: Arc<Metrics>,
) {
    let mut backoff = Duration::from_millis(100);
    let mut failing = false;
    loop {
        for core in &cores {
            let link = outpost_net::link::CoreLink::connect(
                core.addr,
                &core.cert_sha256,
                &token,
                &node_id,
                outbox.stream(),
                Duration::from_secs(3),
            )
            .await;
            let mut link = match link {
                Ok(l) => l,
                Err(e) => {
                    metrics.core_link_failures_total.inc();
                    if !failing {
                        tracing::warn!(core = %core.addr, error = %e, "core unreachable; the outbox keeps commits until it is back");
                        failing = true;
                    }
                    continue;
                }
            };
            if failing {
                tracing::info!(core = %core.addr, "core link up again");
                failing = false;
            }
            backoff = Duration::from_millis(100);
            outbox.ack(link.high_water);
            let mut next = link.high_water + 1;
            let result: Result<(), String> = async {
                loop {
                    let notified = outbox.notified();
                    if outbox.durable() < next {
                        // Wake on new durable commits, and now and then regardless.
                        let _ = tokio::time::timeout(Duration::from_secs(1), notified).await;
                        continue;
                    }
                    let outbox2 = outbox.clone();
                    let mut batch = tokio::task::spawn_blocking(move || outbox2.read(next, BATCH))
                        .await
                        .map_err(|e| e.to_string())?
                        .map_err(|e| e.to_string())?;
                    let Some(&(first, _)) = batch.first() else {
                        return Err(format!("outbox has nothing at {next} though {} is durable", outbox.durable()));
                    };
                    if first != next {
                        return Err(format!("outbox resumes at {first}, expected {next}"));
                    }
                    if let Some((held, epoch, after)) = first_held(&holds, batch.iter().map(|(_, u)| u.epoch), &metrics)
                    {
                        batch.truncate(held);
                        if batch.is_empty() {
                            // Ask how far the marks' streams are, then look again.
                            ask_positions(&link, &holds, &after).await?;
                            if first_held(&holds, std::iter::once(epoch), &metrics).is_some() {
                                tokio::time::sleep(HOLD_POLL).await;
                            }
                            continue;
                        }
                    }
                    let updates = batch.into_iter().map(|(_, u)| u).collect();
                    let up_to = tokio::time::timeout(ACK_TIMEOUT, link.send_batch(first, updates))
                        .await
                        .map_err(|_| format!("no ack within {ACK_TIMEOUT:?}"))?
                        .map_err(|e| e.to_string())?;
                    outbox.ack(up_to);
                    metrics.outbox_forwarded_batches_total.inc();
                    next = up_to + 1;
                }
            }
            .await;
            if let Err(e) = result {
                metrics.core_link_failures_total.inc();
                tracing::warn!(core = %core.addr, error = %e, "core link lost; reconnecting");
                failing = true;
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
