//! `outpost play`: serves the browser arena page and the built TypeScript client to
//! `http://127.0.0.1` (a secure context, so the page may use WebTransport), with the routers the
//! page should ask in `/config.json`. Only files under the page's and the bundle's folders are
//! served, read-only; anything else is 404.

use bytes::Bytes;
use hyper::StatusCode;
use outpost_net::http::{Reply, Req, Timeouts};
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};

/// The folders under `--dir` a page may load from: the page, and the compiled client.
const SERVED: [&str; 2] = ["play", "dist/src"];

#[derive(clap::Args, Debug)]
pub struct Play {
    /// The TypeScript client's folder (with `play/` and the built `dist/`).
    #[arg(long, default_value = "clients/ts")]
    dir: PathBuf,
    /// The routers the page asks, comma-separated (a page's `?router=` overrides them).
    #[arg(long, env = "OUTPOST_ROUTER", value_delimiter = ',')]
    router: Vec<String>,
    /// The module the page plays.
    #[arg(long, default_value = "arena")]
    module: String,
    /// Where to serve the page (port 0 picks one).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Write `{"url": ...}` here once serving.
    #[arg(long)]
    ready_file: Option<PathBuf>,
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

/// The file a request path names, if it is one a page may load: under one of [`SERVED`], with
/// no `..`, no absolute part and no hidden component.
pub fn resolve(dir: &Path, path: &str) -> Option<PathBuf> {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let path = if path == "/" { "/play/index.html" } else { path };
    let rel = Path::new(path.trim_start_matches('/'));
    if !rel.components().all(|c| matches!(c, Component::Normal(s) if !s.to_string_lossy().starts_with('.'))) {
        return None;
    }
    SERVED.iter().any(|s| rel.starts_with(s)).then(|| dir.join(rel))
}

fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Reply {
    let mut r = outpost_net::http::body(status, content_type, body);
    r.headers_mut().insert("cache-control", hyper::header::HeaderValue::from_static("no-store"));
    r
}

async fn handle(req: Req, dir: PathBuf, config: Bytes) -> Reply {
    if req.method() != hyper::Method::GET {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", b"GET only\n".to_vec());
    }
    let path = req.uri().path();
    if path == "/config.json" {
        return reply(StatusCode::OK, "application/json", config.to_vec());
    }
    let Some(file) = resolve(&dir, path) else {
        return reply(StatusCode::NOT_FOUND, "text/plain", format!("no page at {path}\n").into_bytes());
    };
    match tokio::fs::read(&file).await {
        Ok(bytes) => reply(StatusCode::OK, content_type(&file), bytes),
        Err(_) => reply(StatusCode::NOT_FOUND, "text/plain", format!("no page at {path}\n").into_bytes()),
    }
}

impl Play {
    /// Serves until Ctrl-C (or SIGTERM).
    pub fn run(self) -> anyhow::Result<()> {
        let index = self.dir.join("play/index.html");
        let bundle = self.dir.join("dist/src/index.js");
        for need in [&index, &bundle] {
            if !need.is_file() {
                anyhow::bail!("{} is missing: build the client first (make play builds it)", need.display());
            }
        }
        for r in &self.router {
            if !(r.starts_with("http://") || r.starts_with("https://")) {
                anyhow::bail!("router: {r:?} is not an http:// or https:// URL");
            }
        }
        let config = serde_json::json!({ "routers": self.router, "module": self.module });
        let config = Bytes::from(serde_json::to_vec(&config)?);
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind(self.listen)
                .await
                .map_err(|e| anyhow::anyhow!("listen: binding {}: {e}", self.listen))?;
            let addr = listener.local_addr()?;
            let url = format!("http://{addr}/");
            println!("{url}");
            if let Some(f) = &self.ready_file {
                outpost_net::files::write_atomic(f, serde_json::json!({ "url": url }).to_string().as_bytes())?;
            }
            let timeouts = Timeouts { header: std::time::Duration::from_secs(10), body: std::time::Duration::from_secs(10) };
            let dir = self.dir.clone();
            let stop = async {
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
                }
            };
            outpost_net::http::serve(listener, timeouts, None, move |req| handle(req, dir.clone(), config.clone()), stop)
                .await;
            anyhow::Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_page_and_the_bundle_are_served() {
        let d = Path::new("/srv/ts");
        assert_eq!(resolve(d, "/"), Some(d.join("play/index.html")));
        assert_eq!(resolve(d, "/dist/src/index.js?v=1"), Some(d.join("dist/src/index.js")));
        assert_eq!(resolve(d, "/play/../../etc/passwd"), None);
        assert_eq!(resolve(d, "/package.json"), None);
        assert_eq!(resolve(d, "/dist/test/frames.test.js"), None);
        assert_eq!(resolve(d, "/play/.secret"), None);
        assert_eq!(resolve(d, "//etc/passwd"), None);
    }
}
