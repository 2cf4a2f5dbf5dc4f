//! How every Outpost server (edge-node, region-router, core-region) starts and stops, one way:
//! the flags they all take ([`CommonArgs`]), flags + env + TOML config, validation before
//! anything binds, logging, the ready file, the shutdown signal, secret tokens and the one
//! bearer-token check.
//!
//! A binary's `main` is [`start`] (parse, validate, or exit 2 naming the field), then [`run`] on
//! a runtime of its choosing. The edge keeps its own allocator and runtime size; nothing here
//! chooses them.

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};
use outpost_proto::config::{ConfigError, bad};
use std::future::Future;
use std::path::{Path, PathBuf};
use subtle::ConstantTimeEq as _;

/// Flags every server takes, with the same names, env variables and meaning. A binary flattens
/// them into its own `Args` (`#[command(flatten)]` and `#[serde(flatten)]`, so TOML keys stay
/// flat); its `--data-dir` default comes from [`Service::DATA_DIR`].
#[derive(clap::Args, Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CommonArgs {
    /// TOML file with any of these settings (snake_case keys); flags and env win over it.
    #[arg(long, env = "OUTPOST_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Where state lives (certificates, keys, stores, generated tokens). Kept across restarts.
    #[arg(long, env = "OUTPOST_DATA_DIR", required = false)]
    pub data_dir: PathBuf,
    /// Write the bound addresses here as JSON once serving (written whole, never half).
    #[arg(long, env = "OUTPOST_READY_FILE")]
    pub ready_file: Option<PathBuf>,
    /// PEM certificate chain for the HTTP API: with `--tls-key`, it serves HTTPS (TLS 1.3) so
    /// tokens never cross a network in clear.
    #[arg(long, env = "OUTPOST_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `--tls-cert`.
    #[arg(long, env = "OUTPOST_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// File holding the admin token (operators and tools). Else env OUTPOST_ADMIN_TOKEN; else
    /// generated into the data dir.
    #[arg(long, env = "OUTPOST_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// File holding the cluster token (edges, cores and routers among themselves). Else env
    /// OUTPOST_CLUSTER_TOKEN; else generated into the data dir.
    #[arg(long, env = "OUTPOST_CLUSTER_TOKEN_FILE")]
    pub cluster_token_file: Option<PathBuf>,
    /// Longest a client may take to send a request body once the server asks for it (50ms to
    /// 5m); a slower one gets 408 and the connection closes.
    #[arg(long, env = "OUTPOST_BODY_READ_TIMEOUT", default_value = "10s")]
    #[serde(default = "default_body_read_timeout")]
    pub body_read_timeout: String,
}

fn default_body_read_timeout() -> String {
    "10s".into()
}

impl CommonArgs {
    /// The HTTP API's time limits: `header` is the binary's, the body's is `--body-read-timeout`.
    pub fn http_timeouts(&self, header: std::time::Duration) -> Result<crate::http::Timeouts, ConfigError> {
        let body = outpost_proto::config::parse_duration("body_read_timeout", &self.body_read_timeout)?;
        if !(std::time::Duration::from_millis(50)..=std::time::Duration::from_secs(300)).contains(&body) {
            return Err(bad("body_read_timeout", "must be between 50ms and 5m"));
        }
        Ok(crate::http::Timeouts { header, body })
    }

    /// The HTTPS server config from `--tls-cert`/`--tls-key`, checked.
    pub fn https(&self) -> Result<Option<std::sync::Arc<rustls::ServerConfig>>, ConfigError> {
        https_config(self.tls_cert.as_deref(), self.tls_key.as_deref())
    }

    /// The admin token (file, env, or generated into the data dir).
    pub fn admin_token(&self) -> anyhow::Result<String> {
        token(
            "admin_token_file",
            self.admin_token_file.as_deref(),
            "OUTPOST_ADMIN_TOKEN",
            &self.data_dir,
            "admin-token",
        )
    }

    /// The cluster token (file, env, or generated into the data dir).
    pub fn cluster_token(&self) -> anyhow::Result<String> {
        token(
            "cluster_token_file",
            self.cluster_token_file.as_deref(),
            "OUTPOST_CLUSTER_TOKEN",
            &self.data_dir,
            "cluster-token",
        )
    }

    /// The admin and cluster tokens as the HTTP APIs check them.
    pub fn tokens(&self) -> anyhow::Result<Tokens> {
        Ok(Tokens { admin: TokenHash::of(&self.admin_token()?), cluster: TokenHash::of(&self.cluster_token()?) })
    }

    /// Writes the ready file, if one was asked for.
    pub fn write_ready(&self, value: &impl serde::Serialize) -> anyhow::Result<()> {
        let Some(path) = &self.ready_file else { return Ok(()) };
        let bytes = serde_json::to_vec(value)?;
        crate::files::write_atomic(path, &bytes)
            .map_err(|e| anyhow::anyhow!("ready_file: writing {}: {e}", path.display()))
    }
}

/// A server binary's arguments.
pub trait Service: CommandFactory + FromArgMatches + serde::Serialize + serde::de::DeserializeOwned {
    /// The binary's name, which starts its error lines.
    const NAME: &'static str;
    /// `--data-dir` when none is given.
    const DATA_DIR: &'static str;
    /// What [`Service::check`] makes of the arguments.
    type Config;
    /// The flags every server shares.
    fn common(&mut self) -> &mut CommonArgs;
    /// Checks every field; the error names the one that is wrong.
    fn check(self) -> Result<Self::Config, ConfigError>;
}

/// Parses `argv` (flags, then env), then fills what the user left unset from the `--config`
/// TOML file.
pub fn load_args<A, I, T>(argv: I) -> anyhow::Result<A>
where
    A: Service,
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let command = A::command().mut_arg("data_dir", |a| a.default_value(A::DATA_DIR).required(false));
    let matches = command.try_get_matches_from(argv)?;
    let mut args = A::from_arg_matches(&matches)?;
    let Some(path) = args.common().config.clone() else { return Ok(args) };
    let set_by_user =
        |key: &str| matches!(matches.value_source(key), Some(ValueSource::CommandLine | ValueSource::EnvVariable));
    let mut out: A = layered(&args, &path, set_by_user)?;
    out.common().config = Some(path);
    Ok(out)
}

/// The start of every server's `main`: logging, then the process's arguments parsed and checked.
/// `--help` and `--version` print and exit 0; a bad flag or value prints one message naming it
/// and exits 2, before anything is bound.
pub fn start<A: Service>() -> A::Config {
    init_logging();
    let loaded = load_args::<A, _, _>(std::env::args_os());
    match loaded.and_then(|a| Ok(a.check()?)) {
        Ok(c) => c,
        Err(e) => {
            if let Some(clap_err) = e.downcast_ref::<clap::Error>() {
                clap_err.exit();
            }
            eprintln!("{}: {}", A::NAME, e.to_string().trim_end());
            std::process::exit(2);
        }
    }
}

/// A multi-thread tokio runtime (`threads` workers, else one per core), or exit 1 saying why.
pub fn runtime(name: &str, threads: Option<usize>) -> tokio::runtime::Runtime {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads {
        builder.worker_threads(n);
    }
    match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    }
}

/// Runs a server until it returns (it stops on [`shutdown_signal`]); an error exits 1 with its
/// whole chain on one line.
pub fn run<F>(name: &str, runtime: tokio::runtime::Runtime, server: F)
where
    F: Future<Output = anyhow::Result<()>>,
{
    if let Err(e) = runtime.block_on(server) {
        eprintln!("{name}: {e:#}");
        std::process::exit(1);
    }
}

/// Resolves on SIGTERM or Ctrl-C (Ctrl-C only where no SIGTERM handler can be set).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "no SIGTERM handler; Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutdown signal received");
}

/// Starts `tracing` output on stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,web_transport_quinn=error"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// A secret token (from `file`, else env `env`, else generated once into `data_dir/name`), logged
/// only by where it was generated, never by value.
pub fn token(field: &str, file: Option<&Path>, env: &str, data_dir: &Path, name: &str) -> anyhow::Result<String> {
    let path = data_dir.join(name);
    let (t, generated) = load_token(field, file, std::env::var(env).ok(), &path)?;
    if generated {
        tracing::info!(path = %path.display(), "generated {field}");
    }
    Ok(t)
}

/// The SHA-256 of a token: what a server keeps and compares, in constant time, instead of the
/// token itself.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenHash([u8; 32]);

impl std::fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenHash(..)")
    }
}

impl TokenHash {
    /// The hash of `token`, trimmed as every token source is.
    pub fn of(token: &str) -> TokenHash {
        use sha2::Digest as _;
        TokenHash(sha2::Sha256::digest(token.trim().as_bytes()).into())
    }

    /// Whether `token` is the one hashed, in constant time.
    pub fn matches(&self, token: &str) -> bool {
        TokenHash::of(token).0.ct_eq(&self.0).into()
    }
}

/// Who a bearer token says the caller is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// An operator or a tool holding the admin token.
    Admin,
    /// A member of the fleet holding the cluster token.
    Cluster,
}

/// The two tokens a server checks requests against.
#[derive(Debug, Clone, Copy)]
pub struct Tokens {
    /// The admin token's hash.
    pub admin: TokenHash,
    /// The cluster token's hash.
    pub cluster: TokenHash,
}

impl Tokens {
    /// The role an `Authorization` header value (`Bearer <token>`) proves, if any. The one
    /// bearer check of every server: the scheme is case-sensitive as sent by our tools, the
    /// token is trimmed, and both comparisons always run, in constant time.
    pub fn role(&self, authorization: Option<&[u8]>) -> Option<Role> {
        let token = bearer(authorization?)?;
        let admin = self.admin.matches(token);
        let cluster = self.cluster.matches(token);
        if admin {
            Some(Role::Admin)
        } else if cluster {
            Some(Role::Cluster)
        } else {
            None
        }
    }
}

/// The token of an `Authorization: Bearer <token>` value, trimmed.
pub fn bearer(value: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(value).ok()?;
    Some(value.strip_prefix("Bearer ")?.trim())
}

/// The HTTPS server config from `--tls-cert`/`--tls-key` (PEM): both or neither. Without them
/// the API speaks plain HTTP, which is only fit for loopback or a private network.
pub fn https_config(
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<Option<std::sync::Arc<rustls::ServerConfig>>, ConfigError> {
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => {
            crate::tls::https_server_config(cert, key).map(Some).map_err(|e| bad("tls_cert", e.to_string()))
        }
        (Some(_), None) => Err(bad("tls_key", "--tls-cert needs --tls-key")),
        (None, Some(_)) => Err(bad("tls_cert", "--tls-key needs --tls-cert")),
    }
}

/// A secret token: from `file` when given, else from the environment value, else read from (or
/// generated once into, mode 0600) `generated`. Returns the token and whether it was just made,
/// so the caller can say where to find it. Never logs the token.
pub fn load_token(
    field: &str,
    file: Option<&std::path::Path>,
    env_value: Option<String>,
    generated: &std::path::Path,
) -> Result<(String, bool), ConfigError> {
    if let Some(path) = file {
        let t = std::fs::read_to_string(path).map_err(|e| bad(field, format!("reading {}: {e}", path.display())))?;
        let t = t.trim();
        if t.is_empty() {
            return Err(bad(field, format!("{} is empty", path.display())));
        }
        return Ok((t.to_string(), false));
    }
    if let Some(t) = env_value.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        return Ok((t.to_string(), false));
    }
    if let Ok(t) = std::fs::read_to_string(generated)
        && !t.trim().is_empty()
    {
        return Ok((t.trim().to_string(), false));
    }
    let t = hex::encode(rand::random::<[u8; 24]>());
    crate::files::write_secret(generated, t.as_bytes())
        .map_err(|e| bad(field, format!("writing {}: {e}", generated.display())))?;
    Ok((t, true))
}

/// Loads `args` (parsed from flags and env) under the TOML file at `path`: the file fills only what
/// the user did not set. Every binary's `Args::load_from` is this plus clap's own parsing.
fn layered<A: serde::Serialize + serde::de::DeserializeOwned>(
    args: &A,
    path: &std::path::Path,
    set_by_user: impl Fn(&str) -> bool,
) -> Result<A, ConfigError> {
    let source = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| bad("config", format!("{source}: {e}")))?;
    let value = serde_json::to_value(args).map_err(|e| bad("config", e.to_string()))?;
    let merged = outpost_proto::config::overlay_toml(value, &text, &source, set_by_user)?;
    serde_json::from_value(merged).map_err(|e| bad("config", format!("{source}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_come_from_file_env_or_are_generated_once() {
        let dir = tempfile::tempdir().unwrap();
        let made = dir.path().join("token");
        let (t1, new) = load_token("admin_token", None, None, &made).unwrap();
        assert!(new);
        assert_eq!(load_token("admin_token", None, None, &made).unwrap(), (t1.clone(), false));
        assert_eq!(load_token("admin_token", None, Some(" env ".into()), &made).unwrap().0, "env");
        let file = dir.path().join("given");
        std::fs::write(&file, "from-file\n").unwrap();
        assert_eq!(load_token("admin_token", Some(&file), Some("env".into()), &made).unwrap().0, "from-file");
        std::fs::write(&file, "  ").unwrap();
        assert_eq!(load_token("admin_token", Some(&file), None, &made).unwrap_err().field, "admin_token");
    }

    #[test]
    fn bearer_tokens_say_who_the_caller_is() {
        let tokens = Tokens { admin: TokenHash::of("a-token"), cluster: TokenHash::of("c-token\n") };
        assert_eq!(tokens.role(Some(b"Bearer a-token")), Some(Role::Admin));
        assert_eq!(tokens.role(Some(b"Bearer  c-token ")), Some(Role::Cluster));
        for bad in [&b"Bearer x"[..], b"a-token", b"Basic a-token", b"Bearer ", b"\xff\xfe"] {
            assert_eq!(tokens.role(Some(bad)), None, "{bad:?}");
        }
        assert_eq!(tokens.role(None), None);
    }
}
