//! The edge link, server side: authenticate, then apply each batch to the store and ack it once
//! it is durable; answer player-state loads on their own streams.
//!
//! A link that sends a wrong token, a malformed frame, or a batch with a gap is told why
//! (`Refused`) and closed; nothing it sent after the last ack was applied. Store calls run on
//! blocking threads so the async runtime keeps serving other links.

use crate::store::{Store, StoreError, Update};
use crate::telemetry::Metrics;
use outpost_net::link::{FrameError, FrameStream};
use outpost_proto::link::{CoreFrame, WireUpdate};
use std::sync::Arc;
use std::time::Duration;

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
    /// How long a link has to say hello.
    pub hello_timeout: Duration,
}

/// QUIC application code the core closes a refused link with.
const CLOSE_REFUSED: u32 = 1;

/// Accepts links until the endpoint closes.
pub async fn serve(endpoint: quinn::Endpoint, ctx: Arc<IngestCtx>) {
    while let Some(incoming) = endpoint.accept().await {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            ctx.metrics.links_active.inc();
            let remote = conn.remote_address();
            // A refusal is counted where it is made, before the edge can read it.
            if let Err(reason) = link(&conn, &ctx).await {
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
async fn link(conn: &quinn::Connection, ctx: &Arc<IngestCtx>) -> Result<(), String> {
    let opened = match tokio::time::timeout(ctx.hello_timeout, conn.accept_bi()).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(format!("connection: {e}")),
        Err(_) => Err("no update stream before the hello timeout".to_string()),
    };
    let (send, recv) = opened.inspect_err(|_| {
        ctx.metrics.links_refused.inc();
    })?;
    let mut s = Stream::new(send, recv, ctx.max_frame, Some(ctx.clone()));
    let (token, edge, stream) = match tokio::time::timeout(ctx.hello_timeout, s.read()).await {
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
                .map(|(i, WireUpdate { room, key, value })| Update { seq: first_seq + i as u64, room, key, value })
                .collect();
            store.apply(&name, &batch)
        })
        .await;
        match applied {
            Ok(a) => {
                ctx.metrics.updates_applied.inc_by(a.applied);
                ctx.metrics.updates_replayed.inc_by(a.replayed);
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
            let key = match s.read().await {
                Ok(Some(CoreFrame::Load { key })) => key,
                Ok(other) => {
                    s.refuse(format!("expected Load, got {other:?}")).await;
                    return;
                }
                Err(e) => {
                    s.refuse(e.to_string()).await;
                    return;
                }
            };
            let store = ctx.store.clone();
            match blocking(move || store.get(&key)).await {
                Ok(value) => {
                    ctx.metrics.loads.inc();
                    let _ = s.write(&CoreFrame::Value { value }).await;
                    s.frames.finish();
                }
                Err(e) => {
                    s.refuse(e.to_string()).await;
                }
            }
        });
    }
}
