//! Loading a joining player's saved state (`player/{id}`) from the core region, so the guest's
//! `join` gets it in `player.saved`. Answers are cached briefly (moka), and a core that does not
//! answer within the timeout gives `Unavailable`, never `None`: a guest must not take a slow core
//! for a new player and overwrite real progress, and a player is never stuck on a slow core.

use super::CoreTarget;
use outpost_net::link::CoreLink;
use outpost_proto::frame::SavedState;
use std::time::Duration;

/// Loads saved state over its own link (not the update stream's, which a large backlog can hold).
pub struct StateLoader {
    cores: Vec<CoreTarget>,
    token: String,
    node_id: String,
    timeout: Duration,
    link: tokio::sync::Mutex<Option<CoreLink>>,
    cache: moka::sync::Cache<u64, Option<Vec<u8>>>,
}

impl StateLoader {
    /// A loader for `cores` (tried in order), answering within `timeout`.
    pub fn new(cores: Vec<CoreTarget>, token: String, node_id: String, timeout: Duration) -> StateLoader {
        let cache = moka::sync::Cache::builder().max_capacity(100_000).time_to_live(Duration::from_secs(10)).build();
        StateLoader { cores, token, node_id, timeout, link: tokio::sync::Mutex::new(None), cache }
    }

    /// The saved state of `player`.
    pub async fn load(&self, player: u64) -> SavedState {
        if let Some(hit) = self.cache.get(&player) {
            return hit.map_or(SavedState::None, SavedState::Found);
        }
        match tokio::time::timeout(self.timeout, self.fetch(player)).await {
            Ok(Some(v)) => {
                self.cache.insert(player, v.clone());
                v.map_or(SavedState::None, SavedState::Found)
            }
            _ => {
                tracing::debug!(player, "saved state unavailable: the core did not answer in time");
                SavedState::Unavailable
            }
        }
    }

    /// This node just committed `player`'s state: later joins here get it, even before the
    /// core has it.
    pub fn committed(&self, player: u64, value: &[u8]) {
        self.cache.insert(player, Some(value.to_vec()));
    }

    async fn fetch(&self, player: u64) -> Option<Option<Vec<u8>>> {
        let mut guard = self.link.lock().await;
        if guard.is_none() {
            for core in &self.cores {
                let stream = format!("{}/loads", self.node_id);
                if let Ok(l) =
                    CoreLink::connect(core.addr, &core.cert_sha256, &self.token, &self.node_id, &stream, self.timeout)
                        .await
                {
                    *guard = Some(l);
                    break;
                }
            }
        }
        let link = guard.as_ref()?;
        match link.load(&format!("player/{player}")).await {
            Ok(v) => Some(v),
            Err(_) => {
                *guard = None;
                None
            }
        }
    }
}
