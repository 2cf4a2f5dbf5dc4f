//! Asking the region routers for a place to play: candidates to measure, then a route made
//! from this player's own measurements ([`Routers::route_probed`]), with failover across the
//! fleet's routers in the order given.
//!
//! Failover happens only when a router cannot be reached (connect refused or timed out, TLS
//! failed, no answer in time); an answer, even an error status, is the fleet's word and is
//! returned. The connect timeout is short ([`RouterOptions::connect_timeout`]) so that a dead
//! first router does not eat the probing budget.

use crate::probe::{probe_one, summarize};
use hyper::{Method, StatusCode};
use outpost_proto::api::{CandidateList, ErrorBody, ProbeResult, Route};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a router call failed.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// A URL is not `http://host:port` or `https://host:port`.
    #[error("router URL {0:?} is not an http:// or https:// URL like http://host:7700")]
    Url(String),
    /// No router could be reached; each one's error, in order.
    #[error("no router reachable: {}", .0.join("; "))]
    Unreachable(Vec<String>),
    /// A router answered with an error status.
    #[error("{status}: {code}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The stable error code (`no-module`, `rate-limited`, ...).
        code: String,
        /// The router's message.
        message: String,
    },
    /// A router's reply did not parse.
    #[error("malformed reply from {0}: {1}")]
    Malformed(String, String),
}

/// Timeouts and probing settings.
#[derive(Debug, Clone)]
pub struct RouterOptions {
    /// How long a router has to accept the connection before the next one is tried.
    pub connect_timeout: Duration,
    /// How long one request may take once connected.
    pub request_timeout: Duration,
    /// Probes sent to each candidate.
    pub probes: u32,
    /// Time between probes to one candidate.
    pub probe_interval: Duration,
    /// Longest the whole probing may take; candidates that have not answered by then count as
    /// lost.
    pub probe_budget: Duration,
}

impl Default for RouterOptions {
    fn default() -> Self {
        RouterOptions {
            connect_timeout: Duration::from_millis(300),
            request_timeout: Duration::from_secs(5),
            // Three probes each stay far inside a beacon's default limit (20/s, burst 40 per
            // source address) and give a median that one late reply does not move.
            probes: 3,
            probe_interval: Duration::from_millis(5),
            probe_budget: Duration::from_millis(250),
        }
    }
}

struct Target {
    url: String,
    host: String,
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// The fleet's routers, tried in order.
pub struct Routers {
    targets: Vec<Target>,
    /// Timeouts and probing.
    pub options: RouterOptions,
}

/// What [`Routers::route_probed`] measured on the way.
#[derive(Debug, Clone, Default)]
pub struct Probed {
    /// The candidates' results as sent to the router.
    pub results: Vec<ProbeResult>,
    /// Time spent fetching candidates.
    pub candidates_time: Duration,
    /// Time spent probing them.
    pub probe_time: Duration,
}

impl Routers {
    /// Routers at `urls` (comma-separated lists are split); `tls` is used for `https://` ones.
    pub fn new(
        urls: &[String],
        tls: Arc<rustls::ClientConfig>,
        options: RouterOptions,
    ) -> Result<Routers, RouterError> {
        let mut targets = Vec::new();
        for url in urls.iter().flat_map(|u| u.split(',')).map(str::trim).filter(|u| !u.is_empty()) {
            let (https, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
                (Some(r), _) => (true, r),
                (None, Some(r)) => (false, r),
                _ => return Err(RouterError::Url(url.into())),
            };
            let host = rest.trim_end_matches('/');
            if host.is_empty() || host.contains('/') {
                return Err(RouterError::Url(url.into()));
            }
            targets.push(Target {
                url: url.trim_end_matches('/').to_string(),
                host: host.to_string(),
                tls: https.then(|| tls.clone()),
            });
        }
        if targets.is_empty() {
            return Err(RouterError::Url(String::new()));
        }
        Ok(Routers { targets, options })
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, RouterError> {
        let mut errors = Vec::new();
        for t in &self.targets {
            let call = outpost_net::http::Call {
                method: method.clone(),
                path,
                token: None,
                body: body.clone(),
                limit: 1 << 20,
                timeout: self.options.request_timeout,
            };
            let (status, bytes) =
                match outpost_net::http::request(&t.host, t.tls.as_ref(), self.options.connect_timeout, call).await {
                    Ok(r) => r,
                    Err(e) => {
                        errors.push(format!("{}: {e}", t.url));
                        continue;
                    }
                };
            if status != StatusCode::OK {
                let e = serde_json::from_slice::<ErrorBody>(&bytes).unwrap_or_else(|_| ErrorBody {
                    error: String::from_utf8_lossy(&bytes).chars().take(300).collect(),
                    code: String::new(),
                });
                return Err(RouterError::Status { status: status.as_u16(), code: e.code, message: e.error });
            }
            return serde_json::from_slice(&bytes).map_err(|e| RouterError::Malformed(t.url.clone(), e.to_string()));
        }
        Err(RouterError::Unreachable(errors))
    }

    /// `GET /v1/candidates`: the nodes to measure for `module`.
    pub async fn candidates(&self, module: &str) -> Result<CandidateList, RouterError> {
        let qs = form_urlencoded::Serializer::new(String::new()).append_pair("module", module).finish();
        self.call(Method::GET, &format!("/v1/candidates?{qs}"), None).await
    }

    /// A route: `GET /v1/route` without results, `POST /v1/route` with them. `query` holds
    /// `module` and, as the router needs them, `player`, `auth` and `name`.
    pub async fn route(&self, query: &[(&str, &str)], results: &[ProbeResult]) -> Result<Route, RouterError> {
        let qs = form_urlencoded::Serializer::new(String::new()).extend_pairs(query).finish();
        let path = format!("/v1/route?{qs}");
        if results.is_empty() {
            return self.call(Method::GET, &path, None).await;
        }
        let body = serde_json::to_vec(&serde_json::json!({ "results": results }))
            .map_err(|e| RouterError::Malformed(String::new(), e.to_string()))?;
        self.call(Method::POST, &path, Some(body)).await
    }

    /// Measures the candidates for `module` in parallel within the probing budget, then routes
    /// with the results. A candidate that did not answer is reported lost (loss 1 at the
    /// budget's RTT), so the router learns that path is bad. When no candidate list can be had
    /// or nothing answered, routes without results.
    pub async fn route_probed(&self, module: &str, query: &[(&str, &str)]) -> Result<(Route, Probed), RouterError> {
        let started = Instant::now();
        let list = match self.candidates(module).await {
            Ok(l) => l,
            // Unreachable is final; anything else (no candidates yet) still gets a plain route.
            Err(e @ RouterError::Unreachable(_)) => return Err(e),
            Err(_) => CandidateList { candidates: Vec::new() },
        };
        let candidates_time = started.elapsed();
        let results = self.probe_candidates(&list).await;
        let probe_time = started.elapsed() - candidates_time;
        let measured: Vec<ProbeResult> = results.iter().filter(|r| r.loss < 1.0).cloned().collect();
        let send = if measured.is_empty() { &[][..] } else { &results[..] };
        let route = self.route(query, send).await?;
        Ok((route, Probed { results, candidates_time, probe_time }))
    }

    /// Probes every candidate at once; the whole set is done within the probing budget.
    pub async fn probe_candidates(&self, list: &CandidateList) -> Vec<ProbeResult> {
        let o = &self.options;
        let budget = o.probe_budget;
        let wait = budget.saturating_sub(o.probe_interval * o.probes.saturating_sub(1));
        let mut tasks = tokio::task::JoinSet::new();
        for (i, c) in list.candidates.iter().enumerate() {
            let Ok(addr) = c.probe_addr.parse::<std::net::SocketAddr>() else { continue };
            let (count, interval) = (o.probes, o.probe_interval);
            tasks.spawn(async move { (i, probe_one(addr, count, interval, wait, 64).await) });
        }
        let mut by_index: Vec<Option<Vec<f64>>> = vec![None; list.candidates.len()];
        let deadline = tokio::time::Instant::now() + budget;
        while let Ok(Some(Ok((i, rtts)))) = tokio::time::timeout_at(deadline, tasks.join_next()).await {
            by_index[i] = Some(rtts);
        }
        tasks.abort_all();
        list.candidates
            .iter()
            .zip(by_index)
            .map(|(c, rtts)| {
                let rtts = rtts.unwrap_or_default();
                let s = summarize(&c.node, &c.probe_addr, &rtts, o.probes);
                match s.median_ms {
                    Some(m) => ProbeResult { node: c.node.clone(), rtt_ms: m.max(0.001), loss: s.loss },
                    None => ProbeResult { node: c.node.clone(), rtt_ms: budget.as_secs_f64() * 1000.0, loss: 1.0 },
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls() -> Arc<rustls::ClientConfig> {
        outpost_net::tls::https_client_config(&outpost_net::tls::HttpsTrust::PublicRoots).unwrap()
    }

    #[test]
    fn urls_are_checked_and_lists_split() {
        let r =
            Routers::new(&["http://a:1,https://b:2/".into(), "http://c:3".into()], tls(), Default::default()).unwrap();
        let hosts: Vec<&str> = r.targets.iter().map(|t| t.host.as_str()).collect();
        assert_eq!(hosts, ["a:1", "b:2", "c:3"]);
        assert!(r.targets[1].tls.is_some() && r.targets[0].tls.is_none());
        for bad in ["ftp://a:1", "http://", "http://a:1/path", ""] {
            assert!(Routers::new(&[bad.into()], tls(), Default::default()).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn when_no_router_answers_the_error_names_each_one_tried() {
        // A port nobody listens on stands in for a dead router; the error names each one tried.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let r =
            Routers::new(&[format!("http://{closed}"), format!("http://{closed}")], tls(), Default::default()).unwrap();
        match r.candidates("m").await {
            Err(RouterError::Unreachable(errors)) => assert_eq!(errors.len(), 2, "{errors:?}"),
            other => panic!("{other:?}"),
        }
    }
}
