//! Close and refuse codes: one enum shared by QUIC close frames, `Refused` replies and JSON.
//!
//! The numeric values are QUIC application error codes and are part of the wire contract: never
//! renumber a variant, only append.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

macro_rules! close_codes {
    ($( $(#[$doc:meta])* $variant:ident = $num:literal, $text:literal; )*) => {
        /// Why a player was refused or disconnected.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "kebab-case")]
        pub enum CloseCode {
            $( $(#[$doc])* $variant, )*
        }

        impl CloseCode {
            /// Every code, in wire order.
            pub const ALL: &'static [CloseCode] = &[$(CloseCode::$variant,)*];

            /// The QUIC application error code.
            pub fn to_u32(self) -> u32 {
                match self { $(CloseCode::$variant => $num,)* }
            }

            /// The code for a QUIC application error number, if it is one of ours.
            pub fn from_u32(n: u32) -> Option<Self> {
                match n { $($num => Some(CloseCode::$variant),)* _ => None }
            }

            /// The kebab-case text used in JSON and logs.
            pub fn as_str(self) -> &'static str {
                match self { $(CloseCode::$variant => $text,)* }
            }
        }

        impl FromStr for CloseCode {
            type Err = UnknownCode;
            fn from_str(s: &str) -> Result<Self, UnknownCode> {
                match s { $($text => Ok(CloseCode::$variant),)* _ => Err(UnknownCode(s.to_owned())) }
            }
        }
    };
}

close_codes! {
    /// The ticket does not parse or its signature is wrong.
    BadTicket = 0x101, "bad-ticket";
    /// The ticket's `exp` is in the past.
    TicketExpired = 0x102, "ticket-expired";
    /// The ticket's nonce was already used on this node.
    TicketReplayed = 0x103, "ticket-replayed";
    /// The ticket names another node.
    WrongNode = 0x104, "wrong-node";
    /// No module of that name is loaded on this node.
    UnknownModule = 0x105, "unknown-module";
    /// The named room is at `max_players`.
    RoomFull = 0x106, "room-full";
    /// The guest's `join` returned an error.
    JoinRefused = 0x107, "join-refused";
    /// The node is not taking joins (draining, outbox over its soft limit).
    NodeNotAccepting = 0x108, "node-not-accepting";
    /// A frame did not parse.
    FrameMalformed = 0x109, "frame-malformed";
    /// A message was over the per-message size limit.
    MessageTooLarge = 0x10a, "message-too-large";
    /// The player sent faster than the per-player rate limit.
    RateLimited = 0x10b, "rate-limited";
    /// The player's reliable backlog stayed over its limit.
    SlowConsumer = 0x10c, "slow-consumer";
    /// The room's guest faulted (trap, CPU budget, memory limit).
    ModuleFault = 0x10d, "module-fault";
    /// The guest kicked the player.
    Kicked = 0x10e, "kicked";
    /// The node is shutting down.
    NodeShutdown = 0x10f, "node-shutdown";
    /// The same player joined again on another connection (a reconnect); the newer one stays.
    Replaced = 0x110, "replaced";
    /// A move credential was not accepted (unknown, used, expired, or for another node, room or
    /// player); also the close of a player whose room could not follow it.
    MoveRefused = 0x111, "move-refused";
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// WebSocket close codes 4000–4999 are for applications; ours (0x101–0x1ff) map to
/// `4000 + (code − 0x100)`.
pub const WEBSOCKET_BASE: u16 = 4000;
/// The longest close reason a WebSocket close frame carries (125 bytes of payload less the
/// 2-byte code).
pub const WEBSOCKET_REASON_BYTES: usize = 123;

impl CloseCode {
    /// The WebSocket close code: `4000 + (code − 0x100)`.
    pub fn to_websocket(self) -> u16 {
        WEBSOCKET_BASE + (self.to_u32() - 0x100) as u16
    }

    /// The code for a WebSocket close code, if it is one of ours.
    pub fn from_websocket(n: u16) -> Option<Self> {
        let n = n.checked_sub(WEBSOCKET_BASE)?;
        CloseCode::from_u32(0x100 + u32::from(n))
    }
}

/// A close reason cut to what a WebSocket close frame carries, on a character boundary.
pub fn websocket_reason(reason: &str) -> &str {
    let mut end = reason.len().min(WEBSOCKET_REASON_BYTES);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// A code string that is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown close code {0:?}")]
pub struct UnknownCode(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_number_text_and_json() {
        for &c in CloseCode::ALL {
            assert_eq!(CloseCode::from_u32(c.to_u32()), Some(c));
            assert_eq!(c.as_str().parse::<CloseCode>(), Ok(c));
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{}\"", c.as_str()));
        }
        assert_eq!(CloseCode::ALL.len(), 17);
    }

    #[test]
    fn websocket_codes_are_4000_plus_and_reasons_fit_a_close_frame() {
        assert_eq!(CloseCode::BadTicket.to_websocket(), 4001);
        assert_eq!(CloseCode::Replaced.to_websocket(), 4016);
        for &c in CloseCode::ALL {
            assert_eq!(CloseCode::from_websocket(c.to_websocket()), Some(c));
        }
        assert_eq!(CloseCode::from_websocket(1000), None);
        assert_eq!(CloseCode::from_websocket(4999), None);
        let long = "é".repeat(100);
        let cut = websocket_reason(&long);
        assert!(cut.len() <= 123 && cut.len() >= 122 && long.starts_with(cut));
        assert_eq!(websocket_reason("short"), "short");
    }

    #[test]
    fn unknown_codes_are_rejected() {
        assert_eq!(CloseCode::from_u32(0), None);
        assert!("nope".parse::<CloseCode>().is_err());
    }
}
