//! `outpost connect`: a real player through the router. Measures the router's candidate nodes
//! (unless `--no-probe`), gets a route and ticket made from those measurements, joins the node
//! over QUIC, prints what arrives (one line per message), and sends each stdin line as a reliable
//! message to the room. Ends at stdin EOF (closing politely) or when the node closes.

use crate::fleet::RouterOpts;
use anyhow::Context as _;
use clap::Args;
use outpost_client::router::Probed;
use outpost_client::{Client, ConnectOptions, Event};
use outpost_proto::api::Route;
use tokio::io::AsyncBufReadExt as _;

/// `outpost connect`.
#[derive(Args, Debug)]
pub struct Connect {
    #[command(flatten)]
    router: RouterOpts,
    /// Module to join.
    #[arg(long)]
    module: String,
    /// Display name.
    #[arg(long)]
    name: Option<String>,
    /// Player id (from the game's login service, with --auth when the router requires it).
    #[arg(long)]
    player: Option<u64>,
    /// hex(HMAC-SHA256(secret, player)).
    #[arg(long)]
    auth: Option<String>,
    /// Route without measuring the candidate nodes first (geography and what others measured).
    #[arg(long)]
    no_probe: bool,
    /// Largest stdin line sent, bytes.
    #[arg(long, default_value_t = 16 << 10)]
    max_line: usize,
    /// One JSON object per line on stdout (`joined`, `message` with `from`, `text` and
    /// `data_b64`, `closed` with `reason`), for programs driving the session.
    #[arg(long)]
    json: bool,
}

impl Connect {
    /// Runs the session.
    pub fn run(self) -> anyhow::Result<()> {
        let routers = self.router.resolve()?.routers()?;
        let player = self.player.map(|p| p.to_string());
        let mut query: Vec<(&str, &str)> = vec![("module", &self.module)];
        if let Some(n) = &self.name {
            query.push(("name", n));
        }
        if let Some(p) = &player {
            query.push(("player", p));
        }
        if let Some(a) = &self.auth {
            query.push(("auth", a));
        }
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        rt.block_on(async {
            let (route, probed) = if self.no_probe {
                (routers.route(&query, &[]).await?, None)
            } else {
                let (route, probed) = routers.route_probed(&self.module, &query).await?;
                (route, Some(probed))
            };
            self.session(route, probed).await
        })
    }

    async fn session(&self, route: Route, probed: Option<Probed>) -> anyhow::Result<()> {
        let addr: std::net::SocketAddr = route.node.quic_addr.parse().context("the route's quic_addr")?;
        let bind = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
        let endpoint = outpost_client::client_endpoint(bind.parse()?)?;
        let mut client =
            Client::connect(&endpoint, addr, &route.node.cert_sha256, &route.ticket, &ConnectOptions::default())
                .await
                .with_context(|| format!("joining {} at {addr}", route.node.id))?;
        if self.json {
            println!(
                "{}",
                serde_json::json!({"event": "joined", "room": client.joined.room, "node": route.node.id,
                    "region": route.node.region, "player": client.joined.player_id,
                    "method": route.estimate.method, "rtt_ms": route.estimate.rtt_ms,
                    "probed": probed.as_ref().map(|p| serde_json::json!({
                        "results": p.results, "probe_ms": p.probe_time.as_secs_f64() * 1000.0}))})
            );
        } else {
            if let Some(p) = &probed {
                eprintln!(
                    "measured {} candidate nodes in {:.0} ms; routed by {}",
                    p.results.len(),
                    p.probe_time.as_secs_f64() * 1000.0,
                    route.estimate.method
                );
            }
            eprintln!(
                "joined room {} on {} ({}) as player {}; type lines to send, Ctrl-D to leave",
                client.joined.room, route.node.id, route.node.region, client.joined.player_id
            );
        }
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        loop {
            tokio::select! {
                line = lines.next_line() => match line {
                    Ok(Some(line)) => {
                        if line.len() > self.max_line {
                            eprintln!("line of {} bytes not sent (over --max-line {})", line.len(), self.max_line);
                            continue;
                        }
                        client.send(0, line.as_bytes()).await.context("sending")?;
                    }
                    Ok(None) | Err(_) => {
                        client.close();
                        break;
                    }
                },
                event = client.recv() => match event {
                    Some(Event::Message { from, data, .. }) => {
                        let text = String::from_utf8_lossy(&data);
                        if self.json {
                            use base64::Engine as _;
                            let b64 = base64::engine::general_purpose::STANDARD.encode(&data);
                            println!("{}", serde_json::json!({"event": "message", "from": from, "text": text, "data_b64": b64}));
                        } else if from == 0 {
                            println!("{text}")
                        } else {
                            println!("[{from}] {text}")
                        }
                    }
                    Some(Event::Moved { node }) => {
                        if self.json {
                            println!("{}", serde_json::json!({"event": "moved", "node": node}));
                        } else {
                            eprintln!("the room moved to node {node}; followed it");
                        }
                    }
                    Some(Event::Closed(reason)) => {
                        if self.json {
                            println!("{}", serde_json::json!({"event": "closed", "reason": reason.to_string()}));
                        } else {
                            eprintln!("the node closed the connection: {reason}");
                        }
                        break;
                    }
                    None => break,
                },
            }
        }
        tokio::time::timeout(std::time::Duration::from_secs(2), endpoint.wait_idle()).await.ok();
        Ok(())
    }
}
