//! What every binary's configuration shares: the error that names a field, durations like `200ms`,
//! and the TOML overlay under flags and env. Pure: the caller reads the file and tells which
//! fields the user set on the command line or in the environment.

use serde_json::Value;
use std::time::Duration;

/// A bad setting: names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config: {field}: {message}")]
pub struct ConfigError {
    /// The flag / TOML key (snake_case).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// A [`ConfigError`] for `field`.
pub fn bad(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError { field: field.to_string(), message: message.into() }
}

/// Parses a duration like `10ms` or `2s`.
pub fn parse_duration(field: &str, s: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(s).map_err(|e| bad(field, format!("{s:?} is not a duration like 200ms or 2s ({e})")))
}

/// Fills the fields of `args` (the parsed flags as a JSON object) that the user did not set from
/// the TOML text. An unknown key is an error naming it, so a typo never goes unnoticed.
pub fn overlay_toml(
    mut args: Value,
    toml_text: &str,
    source: &str,
    set_by_user: impl Fn(&str) -> bool,
) -> Result<Value, ConfigError> {
    let file: toml::Table = toml::from_str(toml_text).map_err(|e| bad("config", format!("{source}: {e}")))?;
    let obj = args.as_object_mut().ok_or_else(|| bad("config", "internal: args are not an object"))?;
    for (key, value) in file {
        if !obj.contains_key(&key) {
            return Err(bad(&key, format!("unknown setting in {source}")));
        }
        if !set_by_user(&key) {
            obj.insert(key.clone(), serde_json::to_value(value).map_err(|e| bad(&key, e.to_string()))?);
        }
    }
    Ok(args)
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
pub fn layered<A: serde::Serialize + serde::de::DeserializeOwned>(
    args: &A,
    path: &std::path::Path,
    set_by_user: impl Fn(&str) -> bool,
) -> Result<A, ConfigError> {
    let source = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| bad("config", format!("{source}: {e}")))?;
    let value = serde_json::to_value(args).map_err(|e| bad("config", e.to_string()))?;
    let merged = overlay_toml(value, &text, &source, set_by_user)?;
    serde_json::from_value(merged).map_err(|e| bad("config", format!("{source}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_fills_unset_and_names_unknown_keys() {
        let args = serde_json::json!({"a": 1, "b": "x"});
        let out = overlay_toml(args.clone(), "a = 5\nb = \"y\"", "f.toml", |k| k == "b").unwrap();
        assert_eq!(out, serde_json::json!({"a": 5, "b": "x"}));
        let e = overlay_toml(args.clone(), "zz = 1", "f.toml", |_| false).unwrap_err();
        assert_eq!(e.field, "zz");
        assert!(overlay_toml(args, "a = ", "f.toml", |_| false).unwrap_err().message.contains("f.toml"));
        assert!(parse_duration("d", "2s").is_ok());
        assert_eq!(parse_duration("d", "soon").unwrap_err().field, "d");
    }

    #[test]
    fn tokens_come_from_file_env_or_are_generated_once() {
        let dir = std::env::temp_dir().join(format!("load-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let made = dir.join("token");
        let (t1, new) = load_token("admin_token", None, None, &made).unwrap();
        assert!(new);
        assert_eq!(load_token("admin_token", None, None, &made).unwrap(), (t1.clone(), false));
        assert_eq!(load_token("admin_token", None, Some(" env ".into()), &made).unwrap().0, "env");
        let file = dir.join("given");
        std::fs::write(&file, "from-file\n").unwrap();
        assert_eq!(load_token("admin_token", Some(&file), Some("env".into()), &made).unwrap().0, "from-file");
        std::fs::write(&file, "  ").unwrap();
        assert_eq!(load_token("admin_token", Some(&file), None, &made).unwrap_err().field, "admin_token");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
