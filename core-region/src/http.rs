//! Reads over HTTP: `GET /v1/state/{key}` (the key as committed, `/` included; the raw value as
//! the body) and `GET /v1/state?prefix=P[&limit=N]` (JSON), both needing the admin or cluster
//! token; `GET /healthz` and `GET /metrics` open.

use crate::store::Store;
use crate::telemetry::Metrics;
use hyper::{Method, StatusCode};
use outpost_net::http::{HttpError, Reply, Req, body, json};
use outpost_net::service::Tokens;
use std::sync::Arc;

/// What the handlers share.
pub struct HttpCtx {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The admin and cluster tokens (either may read).
    pub tokens: Tokens,
    /// Most keys one prefix read returns.
    pub max_scan: usize,
}

fn error(status: StatusCode, code: &'static str, message: impl Into<String>) -> Reply {
    HttpError::new(status, code, message).reply()
}

fn authorized(ctx: &HttpCtx, req: &Req) -> bool {
    ctx.tokens.role(req.headers().get(hyper::header::AUTHORIZATION).map(|v| v.as_bytes())).is_some()
}

/// One JSON item of a prefix read: the value as text when it is UTF-8, and always as base64.
#[derive(serde::Serialize)]
struct Item {
    key: String,
    value: Option<String>,
    value_b64: String,
}

/// Handles one request.
pub async fn handle(ctx: Arc<HttpCtx>, req: Req) -> Reply {
    let path = req.uri().path().to_string();
    if req.method() != Method::GET {
        return error(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", format!("{} {path}", req.method()));
    }
    match path.as_str() {
        "/healthz" => return json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
        "/metrics" => {
            return body(StatusCode::OK, outpost_net::metrics::CONTENT_TYPE, ctx.metrics.render().into_bytes());
        }
        _ => {}
    }
    let Some(rest) = path.strip_prefix("/v1/state") else {
        return error(StatusCode::NOT_FOUND, "not-found", format!("no route {path}"));
    };
    if !authorized(&ctx, &req) {
        return error(StatusCode::UNAUTHORIZED, "unauthorized", "reads need the admin or cluster token");
    }
    let store = ctx.store.clone();
    if let Some(raw) = rest.strip_prefix('/') {
        let key: String = percent_decode(raw);
        return match tokio::task::spawn_blocking(move || store.get(&key)).await {
            Ok(Ok(Some(v))) => body(StatusCode::OK, "application/octet-stream", v),
            Ok(Ok(None)) => error(StatusCode::NOT_FOUND, "not-found", "no such key"),
            Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, "store", e.to_string()),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
        };
    }
    if !rest.is_empty() {
        return error(StatusCode::NOT_FOUND, "not-found", format!("no route {path}"));
    }
    let q: Vec<(String, String)> =
        form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()).into_owned().collect();
    let get = |k: &str| q.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    let Some(prefix) = get("prefix") else {
        return error(StatusCode::BAD_REQUEST, "bad-request", "prefix is required (GET /v1/state?prefix=P)");
    };
    let limit = match get("limit").map(|l| l.parse::<usize>()) {
        None => ctx.max_scan,
        Some(Ok(n)) if (1..=ctx.max_scan).contains(&n) => n,
        Some(_) => {
            return error(StatusCode::BAD_REQUEST, "bad-request", format!("limit must be 1..={}", ctx.max_scan));
        }
    };
    match tokio::task::spawn_blocking(move || store.scan(&prefix, limit)).await {
        Ok(Ok(rows)) => {
            use base64::Engine as _;
            let items: Vec<Item> = rows
                .into_iter()
                .map(|(key, v)| Item {
                    key,
                    value_b64: base64::engine::general_purpose::STANDARD.encode(&v),
                    value: String::from_utf8(v).ok(),
                })
                .collect();
            json(StatusCode::OK, &serde_json::json!({ "items": items }))
        }
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, "store", e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

/// `%2F` and friends back to bytes; invalid escapes stay as they are.
fn percent_decode(s: &str) -> String {
    let bytes: Vec<u8> = form_urlencoded::parse(format!("k={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned().into_bytes())
        .unwrap_or_default();
    String::from_utf8(bytes).unwrap_or_else(|_| s.to_string())
}
