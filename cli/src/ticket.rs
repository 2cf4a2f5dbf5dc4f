//! `outpost ticket`: signing keys and tickets, with the same code the router and edges use.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use outpost_proto::keys;
use outpost_proto::ticket::TicketPayload;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Ticket subcommands.
#[derive(Subcommand, Debug)]
pub enum TicketCmd {
    /// Create a signing key file (mode 0600) if missing, and print its public key text.
    Keygen(Keygen),
    /// Sign a join ticket and print it.
    Mint(Mint),
}

impl TicketCmd {
    /// Runs the subcommand.
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            TicketCmd::Keygen(k) => k.run(),
            TicketCmd::Mint(m) => m.run(),
        }
    }
}

/// `outpost ticket keygen`.
#[derive(Args, Debug)]
pub struct Keygen {
    /// Where the key file goes.
    #[arg(long)]
    key: PathBuf,
    /// Print `{"pubkey"}`.
    #[arg(long)]
    json: bool,
}

impl Keygen {
    fn run(self) -> anyhow::Result<()> {
        let k = outpost_net::files::load_or_generate_signing_key(&self.key)?;
        let pubkey = keys::public_key_to_text(&k.verifying_key());
        if self.json {
            println!("{}", serde_json::json!({ "pubkey": pubkey }));
        } else {
            println!("{pubkey}");
        }
        Ok(())
    }
}

/// `outpost ticket mint`.
#[derive(Args, Debug)]
pub struct Mint {
    /// Signing key file (32-byte seed, base64url).
    #[arg(long)]
    key: PathBuf,
    /// Node id the ticket is valid on.
    #[arg(long)]
    node: String,
    /// Module to join (`relay` for the built-in relay).
    #[arg(long)]
    module: String,
    /// A specific room.
    #[arg(long)]
    room: Option<String>,
    /// Player id.
    #[arg(long, default_value_t = 1)]
    player: u64,
    /// Player name.
    #[arg(long, default_value = "player")]
    name: String,
    /// Lifetime, like `60s`.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// Print `{"ticket","node","module","player","ttl_s"}`.
    #[arg(long)]
    json: bool,
}

/// Mints a ticket: the one helper the CLI's bots share.
pub fn mint(
    key: &keys::Ed25519SigningKey,
    node: &str,
    module: &str,
    room: Option<&str>,
    player: u64,
    name: &str,
    ttl: Duration,
) -> String {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) + ttl.as_secs().max(1);
    TicketPayload::new(player, name, node, module, room, exp).sign(key)
}

impl Mint {
    fn run(self) -> anyhow::Result<()> {
        let text = std::fs::read_to_string(&self.key).with_context(|| format!("reading {}", self.key.display()))?;
        let key = keys::signing_key_from_text(&text).with_context(|| format!("{}", self.key.display()))?;
        let most = outpost_proto::ticket::DEFAULT_MAX_TICKET_LIFETIME_S;
        if self.ttl.as_secs() > most {
            anyhow::bail!(
                "--ttl is at most {most} s (24 h): nodes refuse tickets valid for longer, unless \
                 started with a larger --max-ticket-lifetime"
            );
        }
        let ticket = mint(&key, &self.node, &self.module, self.room.as_deref(), self.player, &self.name, self.ttl);
        if self.json {
            println!(
                "{}",
                serde_json::json!({"ticket": ticket, "node": self.node, "module": self.module,
                    "player": self.player, "ttl_s": self.ttl.as_secs()})
            );
        } else {
            println!("{ticket}");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tickets_verify_with_the_shared_code() {
        let k = keys::generate_signing_key();
        let t = mint(&k, "node-a", "relay", Some("r1"), 5, "ada", Duration::from_secs(60));
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let p = outpost_proto::ticket::verify(&t, &k.verifying_key(), "node-a", now).unwrap();
        assert_eq!((p.player, p.room.as_deref(), p.module.as_str()), (5, Some("r1"), "relay"));
    }
}
