//! JSON types of the HTTP APIs and the ready files. Field names here are the public contract.

use serde::{Deserialize, Serialize};

/// Every error reply: `{"error": "...", "code": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Human-readable, precise reason.
    pub error: String,
    /// Stable machine-readable code (e.g. `not-a-component`, `unauthorized`).
    pub code: String,
}

/// The edge node's ready file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeReady {
    /// Node id.
    pub id: String,
    /// Player QUIC address.
    pub quic: String,
    /// Probe beacon address.
    pub probe: String,
    /// Admin HTTP address.
    pub admin: String,
    /// Lowercase hex SHA-256 of the node's QUIC certificate (DER).
    pub cert_sha256: String,
}

/// A module as the admin API reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModuleInfo {
    /// Module name.
    pub name: String,
    /// SHA-256 of the component bytes.
    pub version: String,
    /// Size of the component in bytes.
    pub size: u64,
    /// Time to make it live: compile, or load from the disk cache.
    pub compile_ms: f64,
    /// Default tick rate for new rooms.
    pub tick_hz: u32,
    /// Default player cap for new rooms.
    pub max_players: u32,
    /// Rooms currently on any version of this module.
    #[serde(default)]
    pub rooms: u32,
}

/// `POST /v1/rooms` body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRoom {
    /// Module name.
    pub module: String,
    /// Room id; generated when absent.
    #[serde(default)]
    pub room: Option<String>,
    /// Opaque guest config: a JSON string is passed as its UTF-8 bytes, any other JSON value as
    /// its serialized text.
    #[serde(default)]
    pub config: Option<serde_json::Value>,
    /// Tick rate, overriding the module default.
    #[serde(default)]
    pub tick_hz: Option<u32>,
    /// Player cap, overriding the module default.
    #[serde(default)]
    pub max_players: Option<u32>,
}

impl CreateRoom {
    /// The config bytes handed to the guest's `init`.
    pub fn config_bytes(&self) -> Vec<u8> {
        match &self.config {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(serde_json::Value::String(s)) => s.as_bytes().to_vec(),
            Some(v) => v.to_string().into_bytes(),
        }
    }
}

/// `POST /v1/rooms` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomCreated {
    /// Room id.
    pub room: String,
    /// Module name.
    pub module: String,
    /// Module version the room runs.
    pub version: String,
}

/// Why a room stopped running its guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// `cpu-budget`, `memory-limit`, `trap`, `bad-output` or `outbox-full`.
    pub kind: String,
    /// Detail, e.g. the guest's panic message.
    pub message: String,
}

/// `GET /v1/rooms/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomInfo {
    /// Room id.
    pub room: String,
    /// Module name.
    pub module: String,
    /// Module version the room runs.
    pub version: String,
    /// `running`, `faulted` or `closed`.
    pub state: String,
    /// Players in the room.
    pub players: u32,
    /// Tick rate.
    pub tick_hz: u32,
    /// Player cap.
    pub max_players: u32,
    /// Ticks run so far.
    pub ticks: u64,
    /// Median tick duration, microseconds.
    pub tick_p50_us: f64,
    /// 99th percentile tick duration, microseconds.
    pub tick_p99_us: f64,
    /// Guest calls made so far (all exports).
    pub calls: u64,
    /// Wall time spent inside guest calls, microseconds.
    pub guest_us: u64,
    /// Epoch deadlines hit that were forgiven because the thread had not really used its budget.
    pub epoch_preemptions_forgiven: u64,
    /// Guest linear memory in bytes.
    pub memory_bytes: u64,
    /// Why the room faulted, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
    /// The newest lines the guest logged or printed.
    #[serde(default)]
    pub log: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_room_config_is_opaque_bytes() {
        let c: CreateRoom = serde_json::from_str(r#"{"module":"m","config":"hi"}"#).unwrap();
        assert_eq!(c.config_bytes(), b"hi");
        let c: CreateRoom = serde_json::from_str(r#"{"module":"m","config":{"a":1}}"#).unwrap();
        assert_eq!(c.config_bytes(), br#"{"a":1}"#);
        let c: CreateRoom = serde_json::from_str(r#"{"module":"m"}"#).unwrap();
        assert!(c.config_bytes().is_empty());
        assert!(serde_json::from_str::<CreateRoom>(r#"{"module":"m","bogus":1}"#).is_err());
    }
}
