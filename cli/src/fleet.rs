//! What the operator commands share: where the router is and which token to send, from flags,
//! env or `~/.config/outpost/config.toml` (in that order), and one JSON-over-HTTP call with
//! precise errors.

use anyhow::{Context as _, bail};
use clap::Args;
use outpost_net::tls::HttpsTrust;
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How long a router has to accept a connection when there is another to try.
const ROUTER_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// `--router` and `--token`, shared by the fleet commands.
#[derive(Args, Debug, Clone)]
pub struct RouterOpts {
    /// The region routers' URLs (e.g. `http://127.0.0.1:7700`), comma-separated: a router that
    /// cannot be reached is skipped for the next.
    #[arg(long, env = "OUTPOST_ROUTER")]
    pub router: Option<String>,
    /// Admin token for the router (registry, naming client addresses).
    #[arg(long, env = "OUTPOST_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Config file (default `~/.config/outpost/config.toml`, keys `router`, `admin_token`,
    /// `node_token`).
    #[arg(long, env = "OUTPOST_CLI_CONFIG")]
    pub config: Option<PathBuf>,
    /// Token for the nodes' admin APIs (default: the router's admin token).
    #[arg(long, env = "OUTPOST_NODE_TOKEN", hide_env_values = true)]
    pub node_token: Option<String>,
    /// PEM file of the CA that signed the router's and nodes' HTTPS certificates (default: the
    /// public web's roots).
    #[arg(long, env = "OUTPOST_CA")]
    pub ca: Option<PathBuf>,
    /// Accept only HTTPS certificates with these SHA-256s (comma-separated; self-signed servers).
    #[arg(long, env = "OUTPOST_PIN_SHA256", value_delimiter = ',')]
    pub pin_sha256: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    router: Option<String>,
    admin_token: Option<String>,
    node_token: Option<String>,
    ca: Option<PathBuf>,
    pin_sha256: Option<Vec<String>>,
}

/// What each node answered (or the error text), in fleet order, and the nodes that failed.
pub struct PerNode<T> {
    /// `(node id, answer)`.
    pub answers: Vec<(String, Result<T, String>)>,
    /// Ids of the nodes that could not be read.
    pub failed: Vec<String>,
}

/// An HTTP API (the router's, or a node's admin API) and the token to send it.
#[derive(Debug, Clone)]
pub struct Api {
    /// Base URL without a trailing slash.
    pub base: String,
    /// Further routers of the fleet, tried in order when `base` cannot be reached.
    pub fallbacks: Vec<String>,
    /// Bearer token, if any.
    pub token: Option<String>,
    /// The token for nodes' admin APIs (only set on the router's).
    pub node_token: Option<String>,
    /// Who is trusted for `https://` URLs.
    pub tls: Arc<rustls::ClientConfig>,
}

impl RouterOpts {
    /// Flags and env win; the config file fills what they leave unset.
    pub fn resolve(&self) -> anyhow::Result<Api> {
        let path = self
            .config
            .clone()
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/outpost/config.toml")));
        let file = match path {
            Some(p) if p.exists() => {
                let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
                toml::from_str::<FileConfig>(&text).with_context(|| format!("{}", p.display()))?
            }
            Some(p) if self.config.is_some() => bail!("config file {} does not exist", p.display()),
            _ => FileConfig::default(),
        };
        let base =
            self.router.clone().or(file.router).context(
                "no router: pass --router URL, set OUTPOST_ROUTER, or put router = \"...\" in the config file",
            )?;
        let mut bases = Vec::new();
        for b in base.split(',').map(str::trim).filter(|b| !b.is_empty()) {
            if !b.starts_with("http://") && !b.starts_with("https://") {
                bail!("router {b:?} is not an http:// or https:// URL");
            }
            bases.push(b.trim_end_matches('/').to_string());
        }
        if bases.is_empty() {
            bail!("router {base:?} names no URL");
        }
        let base = bases.remove(0);
        let token = self.token.clone().or(file.admin_token);
        let node_token = self.node_token.clone().or(file.node_token).or_else(|| token.clone());
        let pins =
            if self.pin_sha256.is_empty() { file.pin_sha256.unwrap_or_default() } else { self.pin_sha256.clone() };
        let trust = match (self.ca.clone().or(file.ca), pins.is_empty()) {
            (Some(_), false) => bail!("give --ca or --pin-sha256, not both"),
            (Some(ca), true) => HttpsTrust::CaFile(ca),
            (None, false) => HttpsTrust::Pins(pins),
            (None, true) => HttpsTrust::PublicRoots,
        };
        let tls = outpost_net::tls::https_client_config(&trust)?;
        Ok(Api { base, fallbacks: bases, token, node_token, tls })
    }
}

impl Api {
    /// A plain-HTTP API (benchmarks against a local node).
    pub fn plain(base: &str, token: Option<String>) -> anyhow::Result<Api> {
        let tls = outpost_net::tls::https_client_config(&HttpsTrust::PublicRoots)?;
        Ok(Api { base: base.trim_end_matches('/').to_string(), fallbacks: Vec::new(), token, node_token: None, tls })
    }

    fn agent(&self, timeout: Duration) -> ureq::Agent {
        // A short connect timeout when there is another router to try: a dead one costs that.
        let connect = if self.fallbacks.is_empty() { timeout } else { ROUTER_CONNECT_TIMEOUT };
        ureq::AgentBuilder::new().timeout(timeout).timeout_connect(connect).tls_config(self.tls.clone()).build()
    }

    /// This API's URL, then its fallbacks.
    pub fn bases(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.base.as_str()).chain(self.fallbacks.iter().map(String::as_str))
    }

    /// The player-side client for these routers (candidates, probing, routes), with the same
    /// HTTPS trust.
    pub fn routers(&self) -> anyhow::Result<outpost_client::router::Routers> {
        let urls: Vec<String> = self.bases().map(str::to_string).collect();
        Ok(outpost_client::router::Routers::new(&urls, self.tls.clone(), Default::default())?)
    }

    /// A node's admin API, reached with the fleet's node token.
    pub fn node(&self, admin_url: &str) -> Api {
        Api {
            base: admin_url.trim_end_matches('/').to_string(),
            fallbacks: Vec::new(),
            token: self.node_token.clone(),
            node_token: None,
            tls: self.tls.clone(),
        }
    }

    /// The router's nodes, all or those named (an unknown name is an error).
    pub fn fleet(&self, only: &[String]) -> anyhow::Result<Vec<outpost_proto::api::NodeStatus>> {
        let list: outpost_proto::api::NodeList = self.get("/v1/nodes")?;
        let mut nodes = list.nodes;
        nodes.sort_by(|a, b| a.heartbeat.id.cmp(&b.heartbeat.id));
        if only.is_empty() || only.iter().any(|o| o == "all") {
            return Ok(nodes);
        }
        for want in only {
            if !nodes.iter().any(|n| &n.heartbeat.id == want) {
                bail!("node {want:?} is not registered with the router");
            }
        }
        Ok(nodes.into_iter().filter(|n| only.contains(&n.heartbeat.id)).collect())
    }

    /// GETs `path` from each selected node's admin API, in order. Returns each node's answer or
    /// error text, and the ids of the nodes that failed.
    pub fn per_node<T: serde::de::DeserializeOwned>(&self, only: &[String], path: &str) -> anyhow::Result<PerNode<T>> {
        let mut out = Vec::new();
        let mut failed = Vec::new();
        for n in self.fleet(only)? {
            let r = self.node(&n.heartbeat.admin_url).get::<T>(path).map_err(|e| format!("{e:#}"));
            if r.is_err() {
                failed.push(n.heartbeat.id.clone());
            }
            out.push((n.heartbeat.id, r));
        }
        Ok(PerNode { answers: out, failed })
    }

    /// A PUT of raw bytes returning JSON.
    pub fn put_bytes<T: serde::de::DeserializeOwned>(&self, path: &str, body: &[u8]) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.base);
        let agent = self.agent(Duration::from_secs(120));
        let mut req = agent.request("PUT", &url);
        if let Some(t) = &self.token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        Self::reply("PUT", &url, req.send_bytes(body))
    }

    /// A POST of JSON returning JSON, for a call that may take `timeout` (a drain).
    pub fn post_waiting<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
        timeout: Duration,
    ) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.base);
        let mut req = self.agent(timeout).request("POST", &url);
        if let Some(t) = &self.token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        Self::reply("POST", &url, req.send_json(body.clone()))
    }

    /// A POST of raw bytes returning the reply body.
    pub fn post_bytes(&self, path: &str, body: &[u8]) -> anyhow::Result<Vec<u8>> {
        let url = format!("{}{path}", self.base);
        let agent = self.agent(Duration::from_secs(30));
        let mut req = agent.request("POST", &url);
        if let Some(t) = &self.token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        let resp = Self::check("POST", &url, req.send_bytes(body))?;
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(resp.into_reader(), 16 << 20), &mut out)?;
        Ok(out)
    }

    /// A DELETE; the reply body is ignored.
    pub fn delete(&self, path: &str) -> anyhow::Result<()> {
        let url = format!("{}{path}", self.base);
        let agent = self.agent(Duration::from_secs(30));
        let mut req = agent.request("DELETE", &url);
        if let Some(t) = &self.token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        Self::check("DELETE", &url, req.call()).map(|_| ())
    }

    fn check(method: &str, url: &str, result: Result<ureq::Response, ureq::Error>) -> anyhow::Result<ureq::Response> {
        match result {
            Ok(resp) => Ok(resp),
            Err(ureq::Error::Status(code, resp)) => {
                let text = resp.into_string().unwrap_or_default();
                let msg = serde_json::from_str::<outpost_proto::api::ErrorBody>(&text).map_or(text, |e| e.error);
                bail!("{method} {url}: {code}: {msg}")
            }
            Err(e) => bail!("{method} {url}: {e}"),
        }
    }

    fn reply<T: serde::de::DeserializeOwned>(
        method: &str,
        url: &str,
        result: Result<ureq::Response, ureq::Error>,
    ) -> anyhow::Result<T> {
        Self::check(method, url, result)?.into_json::<T>().with_context(|| format!("{method} {url}: malformed reply"))
    }

    /// A GET returning JSON; an error status becomes an error with the server's message.
    pub fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call("GET", path, None)
    }

    /// A POST of JSON returning JSON.
    pub fn post<T: serde::de::DeserializeOwned>(&self, path: &str, body: &serde_json::Value) -> anyhow::Result<T> {
        self.call("POST", path, Some(body))
    }

    fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> anyhow::Result<T> {
        let agent = self.agent(Duration::from_secs(10));
        let mut unreachable = Vec::new();
        for base in self.bases() {
            let url = format!("{base}{path}");
            let mut req = agent.request(method, &url);
            if let Some(t) = &self.token {
                req = req.set("Authorization", &format!("Bearer {t}"));
            }
            let result = match body {
                Some(b) => req.send_json(b.clone()),
                None => req.call(),
            };
            // Only a router that cannot be reached is skipped; an answer is the fleet's word.
            match result {
                Err(ureq::Error::Transport(t)) if !self.fallbacks.is_empty() => unreachable.push(format!("{url}: {t}")),
                result => return Self::reply(method, &url, result),
            }
        }
        bail!("no router reachable: {}", unreachable.join("; "))
    }
}

/// A spinner on stderr for work expected to take over a second (hidden otherwise, and hidden by
/// indicatif itself when stderr is not a terminal).
pub fn spinner(expected: Duration, what: &str) -> indicatif::ProgressBar {
    if expected <= Duration::from_secs(1) {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new_spinner();
    pb.set_message(what.to_string());
    pb.enable_steady_tick(Duration::from_millis(100));
    pb
}

/// Prints what [`Api::per_node`] gathered: JSON (`[{"node", key: ...} | {"node", "error"}]`) or a
/// table with one row per item (a node with none gets a `-` row, a failed node its error), and
/// fails naming the nodes that could not be read.
pub fn print_per_node<T: serde::Serialize>(
    gathered: PerNode<Vec<T>>,
    json: bool,
    key: &str,
    header: &[&str],
    row: impl Fn(&T) -> Vec<String>,
) -> anyhow::Result<()> {
    let PerNode { answers: out, failed } = gathered;
    if json {
        let v: Vec<serde_json::Value> = out
            .iter()
            .map(|(node, r)| match r {
                Ok(items) => serde_json::json!({"node": node, key: items}),
                Err(e) => serde_json::json!({"node": node, "error": e}),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let blank = |first: String| {
            let mut r = vec![String::new(); header.len()];
            r[1] = first;
            r
        };
        let mut rows = Vec::new();
        for (node, r) in &out {
            let start = rows.len();
            match r {
                Ok(items) if items.is_empty() => rows.push(blank("-".into())),
                Ok(items) => rows.extend(items.iter().map(|i| std::iter::once(String::new()).chain(row(i)).collect())),
                Err(e) => rows.push(blank(format!("error: {e}"))),
            }
            for r in &mut rows[start..] {
                r[0] = node.clone();
            }
        }
        println!("{}", table(header, &rows));
    }
    if !failed.is_empty() {
        bail!("could not read {}", failed.join(", "));
    }
    Ok(())
}

/// Formats rows as an aligned text table.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(c.chars().count());
            s.push_str(c);
            if i + 1 < cells.len() {
                s.push_str(&" ".repeat(pad + 2));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push('\n');
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = table(&["a", "long"], &[vec!["xyz".into(), "1".into()], vec!["q".into(), "22".into()]]);
        assert_eq!(t, "a    long\nxyz  1\nq    22");
    }

    fn from_file(path: &std::path::Path) -> RouterOpts {
        RouterOpts {
            router: None,
            token: None,
            config: Some(path.to_path_buf()),
            node_token: None,
            ca: None,
            pin_sha256: Vec::new(),
        }
    }

    #[test]
    fn flags_win_over_the_config_file_and_a_missing_router_is_explained() {
        let dir = std::env::temp_dir().join(format!("outpost-cli-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.toml");
        std::fs::write(&path, "router = \"http://file:7700/\"\nadmin_token = \"t\"\n").unwrap();
        let opts = from_file(&path);
        let api = opts.resolve().unwrap();
        assert_eq!((api.base.as_str(), api.token.as_deref()), ("http://file:7700", Some("t")));
        assert_eq!(api.node("http://n:1/").base, "http://n:1");
        assert_eq!(api.node("http://n:1").token.as_deref(), Some("t"), "the node token defaults to the admin token");
        let opts = RouterOpts { router: Some("http://flag:1".into()), ..opts };
        assert_eq!(opts.resolve().unwrap().base, "http://flag:1");
        std::fs::write(&path, "").unwrap();
        let e = from_file(&path).resolve().unwrap_err();
        assert!(e.to_string().contains("--router"), "{e}");
        std::fs::write(&path, "routr = 1").unwrap();
        assert!(from_file(&path).resolve().is_err());
        // HTTPS trust from the file: a bad pin and a missing CA file are errors, not silent defaults.
        std::fs::write(&path, "router = \"https://r:1\"\npin_sha256 = [\"zz\"]\n").unwrap();
        let e = from_file(&path).resolve().unwrap_err().to_string();
        assert!(e.contains("64 lowercase hex"), "{e}");
        std::fs::write(&path, "router = \"https://r:1\"\nca = \"/no/such/ca.pem\"\n").unwrap();
        let e = from_file(&path).resolve().unwrap_err().to_string();
        assert!(e.contains("/no/such/ca.pem"), "{e}");
        std::fs::write(&path, format!("router = \"https://r:1\"\npin_sha256 = [\"{}\"]\n", "ab".repeat(32))).unwrap();
        assert!(from_file(&path).resolve().is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
