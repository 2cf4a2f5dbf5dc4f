//! What every Outpost service (edge-node, region-router, core-region) does the same way at
//! start-up: logging, flags + env + TOML config, and secret tokens.

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};
use std::path::{Path, PathBuf};

/// Starts `tracing` output on stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// Arguments that may name a TOML config file under them.
pub trait Layered: CommandFactory + FromArgMatches + serde::Serialize + serde::de::DeserializeOwned {
    /// The `--config` file, if given.
    fn config_file(&self) -> Option<PathBuf>;
    /// Remembers which file was read.
    fn set_config_file(&mut self, path: PathBuf);
}

/// Parses `argv` (flags, then env), then fills what the user left unset from the `--config`
/// TOML file (see `outpost_proto::config::layered`).
pub fn load_args<A, I, T>(argv: I) -> anyhow::Result<A>
where
    A: Layered,
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = A::command().try_get_matches_from(argv)?;
    let args = A::from_arg_matches(&matches)?;
    let Some(path) = args.config_file() else { return Ok(args) };
    let set_by_user =
        |key: &str| matches!(matches.value_source(key), Some(ValueSource::CommandLine | ValueSource::EnvVariable));
    let mut out = outpost_proto::config::layered(&args, &path, set_by_user)?;
    out.set_config_file(path);
    Ok(out)
}

/// A secret token (from `file`, else env `env`, else generated once into `data_dir/name`), logged
/// only by where it was generated, never by value.
pub fn token(field: &str, file: Option<&Path>, env: &str, data_dir: &Path, name: &str) -> anyhow::Result<String> {
    let path = data_dir.join(name);
    let (t, generated) = outpost_proto::config::load_token(field, file, std::env::var(env).ok(), &path)?;
    if generated {
        tracing::info!(path = %path.display(), "generated {field}");
    }
    Ok(t)
}

/// The hashes of the admin and cluster tokens a service checks requests against (each from its
/// file, else its env var, else generated into `data_dir`).
pub fn token_hashes(
    admin_file: Option<&Path>,
    cluster_file: Option<&Path>,
    data_dir: &Path,
) -> anyhow::Result<([u8; 32], [u8; 32])> {
    let admin = token("admin_token_file", admin_file, "OUTPOST_ADMIN_TOKEN", data_dir, "admin-token")?;
    let cluster = token("cluster_token_file", cluster_file, "OUTPOST_CLUSTER_TOKEN", data_dir, "cluster-token")?;
    Ok((token_hash(&admin), token_hash(&cluster)))
}

/// The SHA-256 of a token, which the HTTP APIs compare in constant time.
pub fn token_hash(token: &str) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// The HTTPS server config from `--tls-cert`/`--tls-key` (PEM): both or neither. Without them
/// the API speaks plain HTTP, which is only fit for loopback or a private network.
pub fn https_config(
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<Option<std::sync::Arc<rustls::ServerConfig>>, outpost_proto::config::ConfigError> {
    use outpost_proto::config::bad;
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => {
            crate::tls::https_server_config(cert, key).map(Some).map_err(|e| bad("tls_cert", e.to_string()))
        }
        (Some(_), None) => Err(bad("tls_key", "--tls-cert needs --tls-key")),
        (None, Some(_)) => Err(bad("tls_cert", "--tls-key needs --tls-cert")),
    }
}
