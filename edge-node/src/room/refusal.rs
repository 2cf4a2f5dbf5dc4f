//! Why a player could not join, or was closed, and whose fault it was: the one error type of
//! admission (ticket checks, in the player carriers) and placement ([`crate::room::Rooms`]). The close code the client
//! sees, the HTTP status an API would answer and the log level all follow from it here, so no
//! caller pairs a code with a reason by hand.

use hyper::StatusCode;
use outpost_proto::CloseCode;

/// Who caused a refusal. As pingora's errors record upstream or downstream, a relay needs to say
/// whether the player, the room's guest or the node itself is to blame: a player's bad ticket is
/// routine, a guest's refusal is the game's decision, a node at its limits is an operator's
/// business.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The player (a bad, expired or replayed ticket; a bad room name; a broken frame).
    Player,
    /// The room's guest (it refused the join, or it faulted).
    Guest,
    /// The node (full, draining, missing the module, shutting down).
    Node,
}

/// A refused join: whose fault, the code the client gets, and a reason for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {reason}")]
pub struct Refusal {
    /// Who caused it.
    pub blame: Blame,
    /// The close code the client sees.
    pub code: CloseCode,
    /// What happened, for the client and the log.
    pub reason: String,
}

impl Refusal {
    /// The player is at fault.
    pub fn player(code: CloseCode, reason: impl Into<String>) -> Self {
        Refusal { blame: Blame::Player, code, reason: reason.into() }
    }
    /// The room's guest refused or faulted.
    pub fn guest(code: CloseCode, reason: impl Into<String>) -> Self {
        Refusal { blame: Blame::Guest, code, reason: reason.into() }
    }
    /// The node cannot take the player.
    pub fn node(code: CloseCode, reason: impl Into<String>) -> Self {
        Refusal { blame: Blame::Node, code, reason: reason.into() }
    }

    /// The status an HTTP API answers with for this refusal: the player's fault is a 4xx, a
    /// guest's refusal a 409, the node's a 503.
    pub fn http_status(&self) -> StatusCode {
        match (self.blame, self.code) {
            (Blame::Player, CloseCode::BadTicket | CloseCode::TicketExpired | CloseCode::TicketReplayed) => {
                StatusCode::UNAUTHORIZED
            }
            (Blame::Player, CloseCode::WrongNode) => StatusCode::MISDIRECTED_REQUEST,
            (Blame::Player, _) => StatusCode::BAD_REQUEST,
            (Blame::Guest, _) => StatusCode::CONFLICT,
            (Blame::Node, CloseCode::UnknownModule) => StatusCode::NOT_FOUND,
            (Blame::Node, _) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Whether an operator should hear of it: a node that turns players away is worth a warning,
    /// a player's bad ticket or a game's refusal is not.
    pub fn is_operators_business(&self) -> bool {
        self.blame == Blame::Node && self.code != CloseCode::NodeShutdown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whose_fault_decides_the_status() {
        assert_eq!(Refusal::player(CloseCode::TicketExpired, "x").http_status(), StatusCode::UNAUTHORIZED);
        assert_eq!(Refusal::player(CloseCode::WrongNode, "x").http_status(), StatusCode::MISDIRECTED_REQUEST);
        assert_eq!(Refusal::player(CloseCode::JoinRefused, "bad room").http_status(), StatusCode::BAD_REQUEST);
        assert_eq!(Refusal::guest(CloseCode::JoinRefused, "no").http_status(), StatusCode::CONFLICT);
        assert_eq!(Refusal::node(CloseCode::UnknownModule, "x").http_status(), StatusCode::NOT_FOUND);
        assert_eq!(Refusal::node(CloseCode::RoomFull, "x").http_status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(Refusal::node(CloseCode::RoomFull, "x").is_operators_business());
        assert!(!Refusal::node(CloseCode::NodeShutdown, "x").is_operators_business());
        assert!(!Refusal::player(CloseCode::BadTicket, "x").is_operators_business());
        assert_eq!(Refusal::guest(CloseCode::JoinRefused, "full of bots").to_string(), "join-refused: full of bots");
    }
}
