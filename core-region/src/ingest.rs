//! The edge link, server side: authenticate, then apply each batch to the store and ack it once
//! it is durable; answer player-state loads and stream positions on their own streams.
//!
//! A link that sends a wrong token, a malformed frame, or a batch with a gap is told why
//! (`Refused`) and closed; nothing it sent after the last ack was applied. Store calls run on
//! blocking threads so the async runtime keeps serving other links.
//!
//! Until its hello is accepted, a connection is a stranger: it may open one stream and send
//! [`HELLO_WINDOW`] bytes, and must be done by the hello deadline; only then do its windows and
//! stream count grow to what a link needs ([`transport`], [`LOAD_STREAMS`]). With quinn's
//! defaults (100 streams each way, 1.25 MB per stream, no connection-wide bound), eight
//! connections that never said hello made the core buffer half a gigabyte.

use crate::store::{Store, StoreError, Update};
use crate::telemetry::Metrics;
use outpost_net::link::{FrameError, FrameStream};
use outpost_proto::link::{CoreFrame, WireUpdate};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Bytes a connection may send before its hello is accepted: a hello is a token, an edge id and
/// a stream name, a few hundred bytes.
pub const HELLO_WINDOW: u32 = 4096;

/// Player-state loads an edge may have in flight on one link, each on a stream of its own.
pub const LOAD_STREAMS: u32 = 64;

/// The edge link's transport as a stranger gets it: one stream, a hello's worth of window. The
/// stream window is sized to the largest frame, so a whole batch can be in flight once the
/// connection's window is raised.
pub fn transport(idle: Duration, max_frame: usize) -> quinn::TransportConfig {
    let mut t = outpost_net::tls::transport(idle);
    t.max_concurrent_bidi_streams(1u32.into());
    t.max_concurrent_uni_streams(0u32.into());
    t.stream_receive_window(quinn::VarInt::from_u32(u32::try_from(max_frame + 64).unwrap_or(u32::MAX)));
    t.receive_window(HELLO_WINDOW.into());
    t
}

/// What every link handler shares.
pub struct IngestCtx {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The cluster token edges must present.
    pub cluster: outpost_net::service::TokenHash,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Largest frame.
    pub max_frame: usize,
    /// How long a link has to say hello, from its handshake on.
    pub hello_timeout: Duration,
    /// Most links at once.
    pub max_links: usize,
    /// Most links at once that have not said a valid hello.
    pub max_pending: usize,
    /// Links open now, and those of them not yet welcomed.
    pub open: AtomicUsize,
    /// See [`IngestCtx::open`].
    pub pending: AtomicUsize,
}

/// Counts a link in [`IngestCtx::open`] and, until it is welcomed, in [`IngestCtx::pending`].
struct Slot<'a> {
    ctx: &'a IngestCtx,
    pending: bool,
}

impl Slot<'_> {
    fn welcomed(&mut self) {
        if std::mem::take(&mut self.pending) {
            self.ctx.pending.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.welcomed();
        self.ctx.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Takes a place for a new connection, or says which limit is reached.
fn admit(ctx: &IngestCtx) -> Result<Slot<'_>, &'static str> {
    if ctx.open.fetch_add(1, Ordering::Relaxed) >= ctx.max_links {
        ctx.open.fetch_sub(1, Ordering::Relaxed);
        return Err("max_links");
    }
    if ctx.pending.fetch_add(1, Ordering::Relaxed) >= ctx.max_pending {
        ctx.pending.fetch_sub(1, Ordering::Relaxed);
        ctx.open.fetch_sub(1, Ordering::Relaxed);
        return Err("max_pending_links");
    }
    Ok(Slot { ctx, pending: true })
}

/// QUIC application code the core closes a refused link with.
const CLOSE_REFUSED: u32 = 1;

/// Accepts links until the endpoint closes.
pub async fn serve(endpoint: quinn::Endpoint, ctx: Arc<IngestCtx>) {
    while let Some(incoming) = endpoint.accept().await {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let mut slot = match admit(&ctx) {
                Ok(slot) => slot,
                Err(limit) => {
                    ctx.metrics.links_refused.inc();
                    tracing::warn!(remote = %incoming.remote_address(), limit, "edge link refused at the handshake: too many links");
                    incoming.refuse();
                    return;
                }
            };
            let Ok(conn) = incoming.await else { return };
            ctx.metrics.links_active.inc();
            let remote = conn.remote_address();
            // A refusal is counted where it is made, before the edge can read it.
            if let Err(reason) = link(&conn, &ctx, &mut slot).await {
                tracing::warn!(%remote, %reason, "edge link refused");
                // Closing at once would discard the unsent `Refused`: give the edge a moment to
                // read it and hang up itself.
                let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
                conn.close(CLOSE_REFUSED.into(), reason.as_bytes());
            }
            ctx.metrics.links_active.dec();
        });
    }
}

/// The core's end of a link stream.
struct Stream {
    frames: FrameStream,
    /// Set on a link's update stream, whose refusal refuses the link: counted in
    /// `links_refused` before the `Refused` frame goes out, so anyone who has read the refusal
    /// also sees it counted. A load stream's refusals are not link refusals.
    refusals: Option<Arc<IngestCtx>>,
}

impl Stream {
    fn new(
        send: quinn::SendStream,
        recv: quinn::RecvStream,
        max_frame: usize,
        refusals: Option<Arc<IngestCtx>>,
    ) -> Self {
        Stream { frames: FrameStream::new(send, recv, max_frame), refusals }
    }

    async fn read(&mut self) -> Result<Option<CoreFrame>, FrameError> {
        self.frames.read().await
    }

    async fn write(&mut self, f: &CoreFrame) -> Result<(), FrameError> {
        self.frames.write(f).await
    }

    async fn refuse(&mut self, reason: String) -> String {
        if let Some(ctx) = self.refusals.take() {
            ctx.metrics.links_refused.inc();
        }
        let _ = self.write(&CoreFrame::Refused { reason: reason.clone() }).await;
        self.frames.finish();
        reason
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| Err(StoreError::Backend(format!("store task: {e}"))))
}

/// One link: hello, then batches until the edge goes away. `Err` is the refusal reason, already
/// counted; an edge that goes away (its stream or connection lost) is not a refusal.
async fn link(conn: &quinn::Connection, ctx: &Arc<IngestCtx>, slot: &mut Slot<'_>) -> Result<(), String> {
    // One deadline for the stream and the hello on it.
    let deadline = tokio::time::Instant::now() + ctx.hello_timeout;
    let opened = match tokio::time::timeout_at(deadline, conn.accept_bi()).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(format!("connection: {e}")),
        Err(_) => Err("no update stream before the hello timeout".to_string()),
    };
    let (send, recv) = opened.inspect_err(|_| {
        ctx.metrics.links_refused.inc();
    })?;
    let mut s = Stream::new(send, recv, ctx.max_frame, Some(ctx.clone()));
    let (token, edge, stream) = match tokio::time::timeout_at(deadline, s.read()).await {
        Ok(Ok(Some(CoreFrame::Hello { token, edge, stream }))) => (token, edge, stream),
        Ok(Ok(other)) => return Err(s.refuse(format!("expected Hello, got {other:?}")).await),
        Ok(Err(e)) => return Err(s.refuse(e.to_string()).await),
        Err(_) => return Err(s.refuse("no hello in time".into()).await),
    };
    if !ctx.cluster.matches(&token) {
        return Err(s.refuse("wrong cluster token".into()).await);
    }
    if outpost_proto::ids::check_name("edge", &edge).is_err() || stream.is_empty() {
        return Err(s.refuse(format!("bad edge id {edge:?} or empty stream name")).await);
    }
    let store = ctx.store.clone();
    let name = stream.clone();
    let high_water = match blocking(move || store.high_water(&name)).await {
        Ok(h) => h,
        Err(e) => return Err(s.refuse(e.to_string()).await),
    };
    // A known edge: room for a whole batch in flight and its player-state loads.
    slot.welcomed();
    conn.set_receive_window(quinn::VarInt::from_u32(u32::try_from(2 * ctx.max_frame).unwrap_or(u32::MAX)));
    conn.set_max_concurrent_bi_streams((1 + LOAD_STREAMS).into());
    if s.write(&CoreFrame::Welcome { high_water }).await.is_err() {
        return Ok(()); // The edge went away before it was welcomed.
    }
    tracing::info!(%edge, %stream, high_water, remote = %conn.remote_address(), "edge link open");

    // Player-state loads arrive on streams of their own.
    let loads = tokio::spawn(serve_loads(conn.clone(), ctx.clone()));
    let result = updates(&mut s, ctx, &stream).await;
    loads.abort();
    result
}

async fn updates(s: &mut Stream, ctx: &Arc<IngestCtx>, stream: &str) -> Result<(), String> {
    loop {
        let frame = match s.read().await {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(()),
            Err(FrameError::Stream(_)) => return Ok(()),
            Err(e) => return Err(s.refuse(e.to_string()).await),
        };
        let CoreFrame::Batch { first_seq, updates } = frame else {
            return Err(s.refuse(format!("expected Batch, got {frame:?}")).await);
        };
        let store = ctx.store.clone();
        let name = stream.to_string();
        let applied = blocking(move || {
            let batch: Vec<Update<'_>> = updates
                .iter()
                .enumerate()
                .map(|(i, WireUpdate { room, key, value, epoch })| Update {
                    seq: first_seq + i as u64,
                    room,
                    key,
                    value,
                    epoch: *epoch,
                })
                .collect();
            store.apply(&name, &batch)
        })
        .await;
        match applied {
            Ok(a) => {
                outpost_net::failpoint::hit("core.before_ack");
                ctx.metrics.updates_applied.inc_by(a.applied);
                ctx.metrics.updates_replayed.inc_by(a.replayed);
                ctx.metrics.updates_stale.inc_by(a.stale);
                ctx.metrics.batches.inc();
                if s.write(&CoreFrame::Ack { up_to: a.high_water }).await.is_err() {
                    return Ok(()); // The edge went away; it resends what was not acked.
                }
            }
            Err(e) => {
                if matches!(e, StoreError::Backend(_)) {
                    ctx.metrics.store_errors.inc();
                }
                return Err(s.refuse(e.to_string()).await);
            }
        }
    }
}

async fn serve_loads(conn: quinn::Connection, ctx: Arc<IngestCtx>) {
    while let Ok((send, recv)) = conn.accept_bi().await {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let mut s = Stream::new(send, recv, ctx.max_frame, None);
            let store = ctx.store.clone();
            let answer = match s.read().await {
                Ok(Some(CoreFrame::Load { key })) => blocking(move || store.get(&key)).await.map(|value| {
                    ctx.metrics.loads.inc();
                    CoreFrame::Value { value }
                }),
                // How far another edge's stream is: a node holding a moved room's commits asks.
                Ok(Some(CoreFrame::Position { stream })) => {
                    blocking(move || store.high_water(&stream)).await.map(|high_water| {
                        ctx.metrics.positions.inc();
                        CoreFrame::Positioned { high_water }
                    })
                }
                Ok(other) => {
                    s.refuse(format!("expected Load or Position, got {other:?}")).await;
                    return;
                }
                Err(e) => {
                    s.refuse(e.to_string()).await;
                    return;
                }
            };
            match answer {
                Ok(frame) => {
                    let _ = s.write(&frame).await;
                    s.frames.finish();
                }
                Err(e) => {
                    s.refuse(e.to_string()).await;
                }
            }
        });
    }
}
