//! `outpost bench-http`: a closed-loop HTTP/1.1 load generator. Each of `--connections` keep-alive
//! connections sends a GET (or, with `--body`, a POST of that JSON), waits for the reply, and
//! sends the next, for `--duration`. Reports
//! requests per second and latency percentiles. The same generator loads the router and the
//! hello baseline, so their ratio compares the servers, not the tools.

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full};
use std::time::{Duration, Instant};

/// Latency samples kept per connection; later ones overwrite at random, so memory is bounded.
const MAX_SAMPLES_PER_CONNECTION: usize = 200_000;

/// `outpost bench-http`.
#[derive(Args, Debug)]
pub struct BenchHttp {
    /// Full URL to GET (http only), e.g. `http://127.0.0.1:7700/v1/route?module=arena`.
    #[arg(long)]
    url: String,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// How long to load.
    #[arg(long, default_value = "5s")]
    duration: String,
    /// POST this JSON body instead of a GET (e.g. a measured route's results).
    #[arg(long)]
    body: Option<String>,
    /// Bearer token to send.
    #[arg(long, env = "OUTPOST_BENCH_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Runtime worker threads of the generator.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

struct ConnResult {
    ok: u64,
    errors: u64,
    samples_us: Vec<u32>,
}

impl BenchHttp {
    /// Runs the load and prints the result.
    pub fn run(self) -> anyhow::Result<()> {
        let duration = humantime::parse_duration(&self.duration).context("--duration")?;
        if duration > Duration::from_secs(600) || self.connections == 0 || self.connections > 4096 {
            bail!("--duration must be at most 10m and --connections 1..=4096");
        }
        let uri: hyper::Uri = self.url.parse().context("--url")?;
        if uri.scheme_str() != Some("http") {
            bail!("--url must be an http:// URL");
        }
        let authority = uri.authority().context("--url has no host")?.to_string();
        let path = uri.path_and_query().map_or("/".to_string(), |p| p.to_string());
        let rt =
            tokio::runtime::Builder::new_multi_thread().worker_threads(self.threads.max(1)).enable_all().build()?;
        let started = Instant::now();
        let bar = outpost_cli::fleet::spinner(duration, "loading");
        let results: Vec<ConnResult> = rt.block_on(async {
            let deadline = tokio::time::Instant::now() + duration;
            let tasks: Vec<_> = (0..self.connections)
                .map(|_| {
                    let (authority, path, token) = (authority.clone(), path.clone(), self.token.clone());
                    let body = self.body.clone().map(Bytes::from);
                    tokio::spawn(
                        async move { one_connection(&authority, &path, token.as_deref(), body, deadline).await },
                    )
                })
                .collect();
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.context("a load task panicked")??);
            }
            anyhow::Ok(out)
        })?;
        bar.finish_and_clear();
        let elapsed = started.elapsed().as_secs_f64();
        let ok: u64 = results.iter().map(|r| r.ok).sum();
        let errors: u64 = results.iter().map(|r| r.errors).sum();
        let mut all: Vec<u32> = results.into_iter().flat_map(|r| r.samples_us).collect();
        all.sort_unstable();
        let pct = |p: f64| all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1))).copied();
        let rps = ok as f64 / elapsed;
        let (p50, p99) = (pct(0.50).unwrap_or(0) as f64 / 1000.0, pct(0.99).unwrap_or(0) as f64 / 1000.0);
        if self.json {
            println!(
                "{}",
                serde_json::json!({"url": self.url, "requests": ok, "errors": errors, "seconds": elapsed,
                    "rps": rps, "p50_ms": p50, "p99_ms": p99, "connections": self.connections})
            );
        } else {
            println!("{}: {rps:.0} req/s, p50 {p50:.3} ms, p99 {p99:.3} ms, {ok} ok, {errors} errors", self.url);
        }
        if ok == 0 {
            bail!("no request succeeded ({errors} errors)");
        }
        Ok(())
    }
}

async fn one_connection(
    authority: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Bytes>,
    deadline: tokio::time::Instant,
) -> anyhow::Result<ConnResult> {
    let stream = tokio::net::TcpStream::connect(authority).await.with_context(|| format!("connecting {authority}"))?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    let driver = tokio::spawn(conn);
    let mut r = ConnResult { ok: 0, errors: 0, samples_us: Vec::new() };
    let mut seen = 0u64;
    while tokio::time::Instant::now() < deadline {
        let method = if body.is_some() { hyper::Method::POST } else { hyper::Method::GET };
        let mut req = hyper::Request::builder().method(method).uri(path).header(hyper::header::HOST, authority);
        if let Some(t) = token {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if body.is_some() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let req = req.body(Full::new(body.clone().unwrap_or_default()))?;
        let t0 = Instant::now();
        sender.ready().await?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        resp.into_body().collect().await?;
        let us = t0.elapsed().as_micros().min(u32::MAX as u128) as u32;
        if status.is_success() {
            r.ok += 1;
        } else {
            r.errors += 1;
        }
        seen += 1;
        if r.samples_us.len() < MAX_SAMPLES_PER_CONNECTION {
            r.samples_us.push(us);
        } else {
            // Reservoir sampling keeps the kept samples uniform over the whole run.
            let j = rand::random::<u64>() % seen;
            if (j as usize) < MAX_SAMPLES_PER_CONNECTION {
                r.samples_us[j as usize] = us;
            }
        }
    }
    driver.abort();
    Ok(r)
}
