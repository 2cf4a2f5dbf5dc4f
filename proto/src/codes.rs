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
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
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
        assert_eq!(CloseCode::ALL.len(), 16);
    }

    #[test]
    fn unknown_codes_are_rejected() {
        assert_eq!(CloseCode::from_u32(0), None);
        assert!("nope".parse::<CloseCode>().is_err());
    }
}
