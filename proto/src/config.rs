//! What every binary's configuration shares: the error that names a field, durations like `200ms`,
//! and the TOML overlay under flags and env. Pure: the caller (`outpost-net`'s start-up) reads the
//! file and tells which fields the user set on the command line or in the environment.

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
}
