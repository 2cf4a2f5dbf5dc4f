//! What the operator commands share: where the router is and which token to send, from flags,
//! env or `~/.config/outpost/config.toml` (in that order), and one JSON-over-HTTP call with
//! precise errors.

use anyhow::{Context as _, bail};
use clap::Args;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// `--router` and `--token`, shared by the fleet commands.
#[derive(Args, Debug, Clone)]
pub struct RouterOpts {
    /// The region router's URL (e.g. `http://127.0.0.1:7700`).
    #[arg(long, env = "OUTPOST_ROUTER")]
    pub router: Option<String>,
    /// Admin token for the router (registry, naming client addresses).
    #[arg(long, env = "OUTPOST_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Config file (default `~/.config/outpost/config.toml`, keys `router` and `admin_token`).
    #[arg(long, env = "OUTPOST_CLI_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    router: Option<String>,
    admin_token: Option<String>,
}

/// A resolved router endpoint.
#[derive(Debug, Clone)]
pub struct RouterApi {
    /// Base URL without a trailing slash.
    pub base: String,
    /// Admin token, if any.
    pub token: Option<String>,
}

impl RouterOpts {
    /// Flags and env win; the config file fills what they leave unset.
    pub fn resolve(&self) -> anyhow::Result<RouterApi> {
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
        if !base.starts_with("http://") && !base.starts_with("https://") {
            bail!("router {base:?} is not an http:// or https:// URL");
        }
        Ok(RouterApi { base: base.trim_end_matches('/').to_string(), token: self.token.clone().or(file.admin_token) })
    }
}

impl RouterApi {
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
        let url = format!("{}{path}", self.base);
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build();
        let mut req = agent.request(method, &url);
        if let Some(t) = &self.token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        let result = match body {
            Some(b) => req.send_json(b.clone()),
            None => req.call(),
        };
        match result {
            Ok(resp) => resp.into_json::<T>().with_context(|| format!("{method} {url}: malformed reply")),
            Err(ureq::Error::Status(code, resp)) => {
                let text = resp.into_string().unwrap_or_default();
                let msg = serde_json::from_str::<outpost_proto::api::ErrorBody>(&text).map_or(text, |e| e.error);
                bail!("{method} {url}: {code}: {msg}")
            }
            Err(e) => bail!("{method} {url}: {e}"),
        }
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

    #[test]
    fn flags_win_over_the_config_file_and_a_missing_router_is_explained() {
        let dir = std::env::temp_dir().join(format!("outpost-cli-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.toml");
        std::fs::write(&path, "router = \"http://file:7700/\"\nadmin_token = \"t\"\n").unwrap();
        let opts = RouterOpts { router: None, token: None, config: Some(path.clone()) };
        let api = opts.resolve().unwrap();
        assert_eq!((api.base.as_str(), api.token.as_deref()), ("http://file:7700", Some("t")));
        let opts = RouterOpts { router: Some("http://flag:1".into()), ..opts };
        assert_eq!(opts.resolve().unwrap().base, "http://flag:1");
        std::fs::write(&path, "").unwrap();
        let e = RouterOpts { router: None, token: None, config: Some(path.clone()) }.resolve().unwrap_err();
        assert!(e.to_string().contains("--router"), "{e}");
        std::fs::write(&path, "routr = 1").unwrap();
        assert!(RouterOpts { router: None, token: None, config: Some(path) }.resolve().is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
