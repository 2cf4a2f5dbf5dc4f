//! `outpost bench`: N bots join rooms of a module on one node, send at R Hz for T seconds, and the
//! run reports what was sent, received and dropped, RTT percentiles (bots time echoes: relay bots
//! ping themselves through the node, arena bots ping the guest), disconnects by reason, and the
//! edge's CPU per player-tick and per message from its `/metrics`.
//!
//! With `--baseline`, the same bots then run against a raw quinn datagram echo server in its own
//! process (`outpost echo-server`), and the report gives the ratios.

use crate::echo_server::ALPN_ECHO;
use anyhow::{Context as _, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use outpost_client::webtransport::WtClient;
use outpost_client::{Client, ConnectOptions, Event};
use outpost_net::tls;
use outpost_proto::api::EdgeReady;
use outpost_proto::keys;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// `outpost bench`.
#[derive(Args, Debug, Clone)]
pub struct Bench {
    /// The edge node's ready file (its id, QUIC address, admin address and certificate hash).
    #[arg(long)]
    edge_ready: PathBuf,
    /// Ticket signing key file (the key whose public half the edge has as --ticket-pubkey).
    #[arg(long)]
    key: PathBuf,
    /// Module the bots join: `relay` or a module on the node (e.g. `arena`).
    #[arg(long, default_value = "relay")]
    module: String,
    /// Number of bots.
    #[arg(long, default_value_t = 10)]
    bots: usize,
    /// Messages per second per bot.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Bots per room.
    #[arg(long, default_value_t = 8)]
    room_size: usize,
    /// Payload bytes of relay messages.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// One message in this many is a timed ping.
    #[arg(long, default_value_t = 10)]
    ping_every: u64,
    /// Bots sharing one UDP socket.
    #[arg(long, default_value_t = 250)]
    bots_per_socket: usize,
    /// Hold every datagram the bots send for this long (0 to 1000 ms), so the node and the
    /// baseline both serve players over a path with this round-trip time instead of loopback's.
    #[arg(long, default_value_t = 0)]
    path_delay_ms: u64,
    /// Also run a raw quinn datagram echo baseline with the same bots and rate.
    #[arg(long)]
    baseline: bool,
    /// The echo baseline's async runtime threads (1 to 256); unset, tokio's default of one per
    /// core. The node runs its transport on fewer threads than that by default, so a fair
    /// comparison may want the echo on the same count; the report says which was used.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    baseline_threads: Option<u16>,
    /// What drives the echo baseline's QUIC: `quinn` (raw quinn, the baseline) or
    /// `proto` (quinn-proto's state machines from one thread, no async runtime): the second
    /// shows how much of a quinn server's CPU is quinn's and tokio's driving, not QUIC itself.
    #[arg(long, value_enum, default_value_t = crate::echo_server::Driver::Quinn)]
    baseline_driver: crate::echo_server::Driver,
    /// Spread the bots' sends evenly over each period instead of sending in step. Real players
    /// are not in step, but with the bots on the node's own cores the spread costs the bots
    /// (and so the node, which shares the cores) a timer wake-up per send instead of one per
    /// period.
    #[arg(long)]
    stagger: bool,
    /// Alternate node and baseline runs this many times (1 to 20) and report the median ratios:
    /// on a shared machine the speed drifts between two back-to-back runs by more than the
    /// difference being measured.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Bots join and stay connected for the duration without sending (memory per idle player).
    #[arg(long)]
    idle: bool,
    /// How the bots reach the node: `quic` (native players) or `websocket` (the node's
    /// `--listen-websocket` endpoint; every message goes reliably, as a browser's would).
    #[arg(long, value_enum, default_value_t = Carrier::Quic)]
    carrier: Carrier,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// How the bots reach the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Carrier {
    /// Native QUIC players (datagrams for unreliable messages).
    Quic,
    /// WebSocket players (one binary message per frame, all reliable).
    Websocket,
    /// WebTransport players, as a browser speaks it (HTTP/3 sessions on the node's
    /// `--listen-webtransport` port; datagrams for unreliable messages).
    Webtransport,
}

/// What a bot needs from its connection: native QUIC and WebTransport players behave alike.
trait BotConn: Send {
    fn recv(&mut self) -> impl std::future::Future<Output = Option<Event>> + Send;
    fn send_datagram(&self, to: u64, data: &[u8]) -> Result<(), outpost_client::ClientError>;
    fn player_id(&self) -> u64;
    fn connection(&self) -> quinn::Connection;
    fn close(&self);
}

impl BotConn for Client {
    fn recv(&mut self) -> impl std::future::Future<Output = Option<Event>> + Send {
        Client::recv(self)
    }
    fn send_datagram(&self, to: u64, data: &[u8]) -> Result<(), outpost_client::ClientError> {
        Client::send_datagram(self, to, data)
    }
    fn player_id(&self) -> u64 {
        self.joined.player_id
    }
    fn connection(&self) -> quinn::Connection {
        Client::connection(self)
    }
    fn close(&self) {
        Client::close(self)
    }
}

impl BotConn for WtClient {
    fn recv(&mut self) -> impl std::future::Future<Output = Option<Event>> + Send {
        WtClient::recv(self)
    }
    fn send_datagram(&self, to: u64, data: &[u8]) -> Result<(), outpost_client::ClientError> {
        WtClient::send_datagram(self, to, data)
    }
    fn player_id(&self) -> u64 {
        self.joined.player_id
    }
    fn connection(&self) -> quinn::Connection {
        WtClient::connection(self).clone()
    }
    fn close(&self) {
        WtClient::close(self)
    }
}

/// What one run measured.
#[derive(Debug, Default, Serialize)]
pub struct RunReport {
    /// What ran: a module name, `raw-quinn-echo`, or `quinn-proto-echo` (`--baseline-driver
    /// proto`).
    pub target: String,
    /// Bots that joined.
    pub bots_joined: usize,
    /// Bots that could not join, by reason.
    pub join_failures: BTreeMap<String, u64>,
    /// Messages the bots sent.
    pub sent: u64,
    /// Messages the bots received.
    pub received: u64,
    /// Messages lost: dropped by the node for congestion, failed local sends, unanswered pings.
    pub dropped: u64,
    /// Pings sent.
    pub pings: u64,
    /// Pings answered.
    pub pongs: u64,
    /// Median RTT, ms.
    pub rtt_p50_ms: f64,
    /// 99th percentile RTT, ms.
    pub rtt_p99_ms: f64,
    /// Bots disconnected before the end, by reason.
    pub disconnects: BTreeMap<String, u64>,
    /// Moves the bots followed (their room moved to another node).
    #[serde(default)]
    pub moves: u64,
    /// The bots' gap at a move, median, ms: the last message from the old node to the first
    /// from the new one.
    #[serde(default)]
    pub move_gap_p50_ms: f64,
    /// The same, 99th percentile, ms.
    #[serde(default)]
    pub move_gap_p99_ms: f64,
    /// Received messages per second.
    pub received_per_sec: f64,
    /// Server CPU seconds during the run.
    pub server_cpu_s: f64,
    /// Server CPU per player-tick, µs (guest rooms).
    pub cpu_us_per_player_tick: Option<f64>,
    /// CPU of the node's room worker threads during the run (guest calls and their effects).
    pub guest_cpu_s: Option<f64>,
    /// Node CPU per player-tick outside the room workers, µs: the transport's share, the part
    /// that compares like for like with the raw quinn echo.
    pub transport_cpu_us_per_player_tick: Option<f64>,
    /// Server CPU per message through it, µs: per player message received (node) or per
    /// datagram echoed (baseline).
    pub cpu_us_per_message: Option<f64>,
    /// Growth of the server's resident memory per joined bot, KiB (measured once all joined).
    pub memory_kib_per_player: Option<f64>,
    /// UDP datagrams the bots sent and received from their first message to the end of the
    /// drain (QUIC packets, ACK-only ones included; handshakes and joins are not).
    pub udp_datagrams: u64,
    /// Of those, the ones the bots sent (what the server received).
    pub udp_datagrams_to_server: u64,
    /// Of those, the ones the bots received: what the server sent, and so paid for in full on
    /// loopback, where the sender's system call also runs the receiver's network stack.
    pub udp_datagrams_from_server: u64,
    /// Datagrams the echo server sent back (baseline only).
    pub echoed: Option<u64>,
    /// The echo server's async runtime threads, as its runtime reported them (baseline only).
    pub runtime_threads: Option<u64>,
}

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Module.
    pub module: String,
    /// Bots.
    pub bots: usize,
    /// Messages per second per bot.
    pub rate_hz: f64,
    /// Seconds.
    pub duration_s: f64,
    /// Sent by bots.
    pub sent: u64,
    /// Received by bots.
    pub received: u64,
    /// Dropped.
    pub dropped: u64,
    /// RTT p50, ms.
    pub rtt_p50_ms: f64,
    /// RTT p99, ms.
    pub rtt_p99_ms: f64,
    /// Disconnects by reason.
    pub disconnects: BTreeMap<String, u64>,
    /// Edge CPU per player-tick, µs.
    pub cpu_us_per_player_tick: Option<f64>,
    /// The node run in full.
    pub node: RunReport,
    /// The raw quinn echo baseline, when asked for.
    pub baseline: Option<RunReport>,
    /// node received/s ÷ baseline received/s.
    pub throughput_ratio: Option<f64>,
    /// node CPU per message ÷ baseline CPU per echoed datagram.
    pub cpu_per_message_ratio: Option<f64>,
    /// node CPU per player-tick ÷ baseline CPU per echoed datagram.
    pub cpu_per_player_tick_ratio: Option<f64>,
    /// node CPU per player-tick outside the room workers ÷ baseline CPU per echoed datagram.
    pub transport_cpu_per_player_tick_ratio: Option<f64>,
    /// Each round's figures when `--rounds` > 1; the ratios above are then their medians,
    /// the counts above their sums, `rtt_p50_ms` the median round's and `rtt_p99_ms` the worst.
    pub rounds: Vec<Round>,
}

/// One node run and its baseline, as ratios.
#[derive(Debug, Serialize)]
pub struct Round {
    /// Node CPU per player-tick, µs.
    pub cpu_us_per_player_tick: Option<f64>,
    /// Baseline CPU per echoed datagram, µs.
    pub baseline_cpu_us_per_message: Option<f64>,
    /// The two above divided.
    pub cpu_per_player_tick_ratio: Option<f64>,
    /// Node CPU per player-tick outside the room workers, µs.
    pub transport_cpu_us_per_player_tick: Option<f64>,
    /// That ÷ the baseline's CPU per echoed datagram.
    pub transport_cpu_per_player_tick_ratio: Option<f64>,
    /// Node received/s ÷ baseline received/s.
    pub throughput_ratio: Option<f64>,
    /// Node CPU per message ÷ baseline CPU per echoed datagram.
    pub cpu_per_message_ratio: Option<f64>,
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// The median of the values present (the upper one of the middle two for an even count).
fn median(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let mut v: Vec<f64> = values.flatten().collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

impl Report {
    /// Folds the rounds (at least one) into one report; the last round's runs are kept whole.
    fn new(bench: &Bench, mut runs: Vec<(RunReport, Option<RunReport>)>) -> Report {
        let rounds: Vec<Round> = runs
            .iter()
            .map(|(node, base)| {
                let base_cpu = base.as_ref().and_then(|b| b.cpu_us_per_message);
                Round {
                    cpu_us_per_player_tick: node.cpu_us_per_player_tick,
                    baseline_cpu_us_per_message: base_cpu,
                    cpu_per_player_tick_ratio: ratio(node.cpu_us_per_player_tick, base_cpu),
                    transport_cpu_us_per_player_tick: node.transport_cpu_us_per_player_tick,
                    transport_cpu_per_player_tick_ratio: ratio(node.transport_cpu_us_per_player_tick, base_cpu),
                    throughput_ratio: ratio(Some(node.received_per_sec), base.as_ref().map(|b| b.received_per_sec)),
                    cpu_per_message_ratio: ratio(node.cpu_us_per_message, base_cpu),
                }
            })
            .collect();
        let (mut sent, mut received, mut dropped) = (0, 0, 0);
        let mut disconnects = BTreeMap::new();
        for (node, _) in &runs {
            sent += node.sent;
            received += node.received;
            dropped += node.dropped;
            for (reason, n) in &node.disconnects {
                *disconnects.entry(reason.clone()).or_insert(0) += n;
            }
        }
        let rtt_p50_ms = median(runs.iter().map(|(n, _)| Some(n.rtt_p50_ms))).unwrap_or(0.0);
        let rtt_p99_ms = runs.iter().map(|(n, _)| n.rtt_p99_ms).fold(0.0, f64::max);
        let (node, baseline) = runs.pop().unwrap_or_default();
        Report {
            module: bench.module.clone(),
            bots: bench.bots,
            rate_hz: bench.rate,
            duration_s: bench.duration,
            sent,
            received,
            dropped,
            rtt_p50_ms,
            rtt_p99_ms,
            disconnects,
            cpu_us_per_player_tick: median(rounds.iter().map(|r| r.cpu_us_per_player_tick)),
            throughput_ratio: median(rounds.iter().map(|r| r.throughput_ratio)),
            cpu_per_message_ratio: median(rounds.iter().map(|r| r.cpu_per_message_ratio)),
            cpu_per_player_tick_ratio: median(rounds.iter().map(|r| r.cpu_per_player_tick_ratio)),
            transport_cpu_per_player_tick_ratio: median(rounds.iter().map(|r| r.transport_cpu_per_player_tick_ratio)),
            node,
            baseline,
            rounds: if rounds.len() > 1 { rounds } else { Vec::new() },
        }
    }
}

#[derive(Debug, Default)]
struct BotStats {
    joined: bool,
    join_failure: Option<String>,
    sent: u64,
    received: u64,
    send_failures: u64,
    pings: u64,
    pongs: u64,
    rtts_us: Vec<u32>,
    disconnect: Option<String>,
    udp: UdpCount,
    /// When the last message came, and, after a `Moved`, the last one from the old node.
    last_msg: Option<Instant>,
    moved_after: Option<Instant>,
    /// Each move's gap: the last message from the old node to the first from the new one.
    move_gaps_us: Vec<u32>,
}

/// UDP datagrams one bot's connection sent and received.
#[derive(Debug, Default, Clone, Copy)]
struct UdpCount {
    sent: u64,
    received: u64,
}

impl std::ops::Sub for UdpCount {
    type Output = UdpCount;
    fn sub(self, earlier: UdpCount) -> UdpCount {
        UdpCount {
            sent: self.sent.saturating_sub(earlier.sent),
            received: self.received.saturating_sub(earlier.received),
        }
    }
}

impl BotStats {
    /// Counts a received message; a pong (relay: our own ping back; arena: the guest's `p`) adds
    /// an RTT sample.
    fn on_message(&mut self, relay: bool, me: u64, from: u64, data: &[u8], t0: Instant) {
        self.received += 1;
        let now = Instant::now();
        if let Some(last) = self.moved_after.take() {
            self.move_gaps_us.push(now.saturating_duration_since(last).as_micros().min(u32::MAX as u128) as u32);
        }
        self.last_msg = Some(now);
        let pong = if relay { from == me && data.first() == Some(&b'P') } else { data.first() == Some(&b'p') };
        if pong {
            self.pongs += 1;
            if let Some(rtt) = rtt_of(t0, data) {
                self.rtts_us.push(rtt);
            }
        }
    }
}

fn udp_datagrams(c: &quinn::Connection) -> UdpCount {
    let st = c.stats();
    UdpCount { sent: st.udp_tx.datagrams, received: st.udp_rx.datagrams }
}

fn percentile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0
}

fn micros_since(t0: Instant) -> u64 {
    t0.elapsed().as_micros() as u64
}

fn ping_payload(t0: Instant, tag: u8, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len.max(9));
    v.push(tag);
    v.extend_from_slice(&micros_since(t0).to_be_bytes());
    v.resize(len.max(9), 0);
    v
}

fn rtt_of(t0: Instant, data: &[u8]) -> Option<u32> {
    let sent = u64::from_be_bytes(data.get(1..9)?.try_into().ok()?);
    Some(micros_since(t0).saturating_sub(sent).min(u32::MAX as u64) as u32)
}

/// A Prometheus text page as `series → value` (labels kept in the series name).
pub fn scrape_url(base: &str) -> anyhow::Result<BTreeMap<String, f64>> {
    let text = ureq::get(&format!("{}/metrics", base.trim_end_matches('/'))).call()?.into_string()?;
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect())
}

fn scrape(admin: &str) -> anyhow::Result<BTreeMap<String, f64>> {
    scrape_url(&format!("http://{admin}"))
}

/// CPU seconds of a process from /proc.
fn process_cpu_s(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    outpost_proto::procstat::ticks_to_seconds(outpost_proto::procstat::cpu_ticks(&stat).map_or(0, |(_, t)| t))
}

fn wait_file(path: &Path, timeout: Duration) -> anyhow::Result<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(b) = std::fs::read(path)
            && !b.is_empty()
        {
            return Ok(b);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {}", path.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Bench {
    /// Runs the benchmark and prints the report.
    pub fn run(self) -> anyhow::Result<()> {
        if self.bots == 0 || self.rate <= 0.0 || self.duration <= 0.0 || self.room_size == 0 || self.ping_every == 0 {
            bail!("--bots, --rate, --duration, --room-size and --ping-every must be positive");
        }
        if self.bots > 20_000 || self.duration > 3600.0 || self.rate > 10_000.0 {
            bail!("bounded runs only: at most 20000 bots, 10000 Hz and 3600 s");
        }
        if !(1..=20).contains(&self.rounds) {
            bail!("--rounds must be 1 to 20");
        }
        if self.path_delay_ms > 1000 {
            bail!("--path-delay-ms is at most 1000");
        }
        if self.baseline_driver == crate::echo_server::Driver::Proto && self.baseline_threads.is_some() {
            bail!("--baseline-threads applies to --baseline-driver quinn; the proto echo runs on one thread");
        }
        let ready: EdgeReady = serde_json::from_slice(&std::fs::read(&self.edge_ready).context("--edge-ready")?)
            .context("parsing the edge ready file")?;
        let key_text = std::fs::read_to_string(&self.key).with_context(|| format!("reading {}", self.key.display()))?;
        let key = keys::signing_key_from_text(&key_text).context("--key")?;
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;

        let mut runs = Vec::new();
        for _ in 0..self.rounds {
            let before = scrape(&ready.admin)?;
            let node = rt.block_on(self.run_node(&ready, &key))?;
            // A node that stopped during the run (a drain) reports no server figures.
            let after = scrape(&ready.admin).unwrap_or_else(|e| {
                eprintln!("outpost-bench: the node is gone ({e:#}); the run has no server figures");
                before.clone()
            });
            let node = self.node_report(node, &before, &after);
            let baseline = if self.baseline { Some(rt.block_on(self.run_baseline())?) } else { None };
            runs.push((node, baseline));
        }
        let report = Report::new(&self, runs);
        if self.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print_report(&report);
        }
        Ok(())
    }

    fn node_report(
        &self,
        mut r: RunReport,
        before: &BTreeMap<String, f64>,
        after: &BTreeMap<String, f64>,
    ) -> RunReport {
        let d = |k: &str| after.get(k).copied().unwrap_or(0.0) - before.get(k).copied().unwrap_or(0.0);
        r.server_cpu_s = d("outpost_process_cpu_seconds");
        let player_ticks = d("outpost_player_ticks_total");
        let messages = d("outpost_messages_in_total");
        r.dropped += d("outpost_player_datagrams_dropped_total").max(0.0) as u64;
        r.cpu_us_per_player_tick = (player_ticks > 0.0).then(|| r.server_cpu_s * 1e6 / player_ticks);
        // Nodes from before the metric existed do not report it: then there is no split.
        if after.contains_key("outpost_room_workers_cpu_seconds") {
            let guest = d("outpost_room_workers_cpu_seconds");
            r.guest_cpu_s = Some(guest);
            r.transport_cpu_us_per_player_tick =
                (player_ticks > 0.0).then(|| (r.server_cpu_s - guest).max(0.0) * 1e6 / player_ticks);
        }
        r.cpu_us_per_message = (messages > 0.0).then(|| r.server_cpu_s * 1e6 / messages);
        r
    }

    fn endpoints(&self, target: SocketAddr) -> anyhow::Result<Vec<quinn::Endpoint>> {
        let bind: SocketAddr = if target.is_ipv4() { "0.0.0.0:0".parse()? } else { "[::]:0".parse()? };
        let n = self.bots.div_ceil(self.bots_per_socket.max(1));
        let delay = Duration::from_millis(self.path_delay_ms);
        (0..n)
            .map(|_| {
                if delay.is_zero() {
                    outpost_client::client_endpoint(bind).map_err(Into::into)
                } else {
                    crate::wan::delayed_client_endpoint(bind, delay).context("binding a delayed bot socket")
                }
            })
            .collect()
    }

    /// Where bot `i` sends within each period: at the start, or spread with `--stagger`.
    fn phase(&self, i: usize) -> Duration {
        if !self.stagger {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(i as f64 / self.bots as f64 / self.rate)
    }

    fn progress(&self, what: &str) -> ProgressBar {
        if self.json {
            return ProgressBar::hidden();
        }
        let pb = ProgressBar::new((self.duration * 10.0) as u64);
        pb.set_style(
            ProgressStyle::with_template("{prefix:>12} [{bar:30}] {elapsed}/{duration} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        pb.set_prefix(what.to_string());
        pb
    }

    async fn run_node(&self, ready: &EdgeReady, key: &keys::Ed25519SigningKey) -> anyhow::Result<RunReport> {
        let rss_baseline = scrape(&ready.admin).ok().and_then(|m| m.get("outpost_process_resident_bytes").copied());
        let addr: SocketAddr = ready.quic.parse().context("edge quic address")?;
        let endpoints = self.endpoints(addr)?;
        let connects = Arc::new(Semaphore::new(64));
        let t0 = Instant::now();
        let run_id = hex::encode(rand::random::<[u8; 3]>());
        let pb = self.progress(&self.module);
        let (go_tx, go) = tokio::sync::watch::channel(None::<Instant>);
        let settled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        let key = Arc::new(key.clone());
        for i in 0..self.bots {
            let room = format!("bench-{run_id}-{}", i / self.room_size);
            // Minted when the bot connects, not now: joining thousands of bots can outlast a TTL.
            let (key, node, module) = (key.clone(), ready.id.clone(), self.module.clone());
            let ticket = move || {
                let name = format!("bot{i}");
                let ttl = Duration::from_secs(60);
                outpost_cli::ticket::mint(&key, &node, &module, Some(&room), 1_000_000 + i as u64, &name, ttl)
            };
            let endpoint = endpoints[i % endpoints.len()].clone();
            let (pin, me, connects) = (ready.cert_sha256.clone(), self.clone(), connects.clone());
            let gate = Gate { go: go.clone(), settled: settled.clone() };
            let phase = self.phase(i);
            let ws_url = ready.websocket.clone();
            let wt = ready.webtransport.clone();
            tasks.push(tokio::spawn(async move {
                let opts = ConnectOptions { timeout: Duration::from_secs(30), ..ConnectOptions::default() };
                match (me.carrier, ws_url, wt) {
                    (Carrier::Websocket, Some(url), _) => me.ws_bot(url, ticket, connects, t0, gate, phase).await,
                    (Carrier::Webtransport, _, Some(wt)) => {
                        let join = async move {
                            let _permit = connects.acquire().await;
                            WtClient::connect(&endpoint, &wt.url, &wt.cert_sha256, &ticket(), &opts).await
                        };
                        me.node_bot(join, t0, gate, phase).await
                    }
                    (Carrier::Websocket | Carrier::Webtransport, _, _) => {
                        let _ = gate.wait().await;
                        BotStats {
                            join_failure: Some(format!("the node has no {:?} endpoint", me.carrier)),
                            ..BotStats::default()
                        }
                    }
                    (Carrier::Quic, _, _) => {
                        let join = async move {
                            let _permit = connects.acquire().await;
                            Client::connect(&endpoint, addr, &pin, &ticket(), &opts).await
                        };
                        me.node_bot(join, t0, gate, phase).await
                    }
                }
            }));
        }
        // Every bot has joined (or failed) before anyone sends, so the node's memory per player
        // is read with all of them connected and idle.
        let deadline = Instant::now() + Duration::from_secs(120);
        while settled.load(std::sync::atomic::Ordering::Relaxed) < self.bots && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let rss_joined = scrape(&ready.admin).ok().and_then(|m| m.get("outpost_process_resident_bytes").copied());
        let start_at = Instant::now() + Duration::from_millis(50);
        let _ = go_tx.send(Some(start_at));
        let stats = self.collect(tasks, &pb, start_at).await;
        pb.finish_and_clear();
        let mut r = self.summarize(&self.module, stats);
        if let (Some(a), Some(b)) = (rss_baseline, rss_joined)
            && r.bots_joined > 0
        {
            r.memory_kib_per_player = Some((b - a) / 1024.0 / r.bots_joined as f64);
        }
        Ok(r)
    }

    #[allow(clippy::too_many_arguments)]
    /// A bot on a QUIC carrier (native or WebTransport): joins through `join`, then sends its
    /// messages as datagrams and times the pings.
    async fn node_bot<C: BotConn>(
        self,
        join: impl std::future::Future<Output = Result<C, outpost_client::ClientError>>,
        t0: Instant,
        gate: Gate,
        phase: Duration,
    ) -> BotStats {
        let mut s = BotStats::default();
        let client = join.await;
        let start_at = gate.wait().await;
        let mut client = match client {
            Ok(c) => c,
            Err(e) => {
                s.join_failure = Some(match e {
                    outpost_client::ClientError::Refused { code, .. } => code.to_string(),
                    other => other.to_string().chars().take(60).collect(),
                });
                return s;
            }
        };
        s.joined = true;
        let me = client.player_id();
        let relay = self.module == "relay";
        tokio::time::sleep_until(start_at.into()).await;
        if self.idle {
            let end = start_at + Duration::from_secs_f64(self.duration);
            loop {
                match tokio::time::timeout_at(end.into(), client.recv()).await {
                    Ok(Some(Event::Message { .. })) => s.received += 1,
                    // The room moved and the bot followed it: it goes on.
                    Ok(Some(Event::Moved { .. })) => {}
                    Ok(Some(Event::Closed(r))) => {
                        s.disconnect = Some(reason_name(&r));
                        break;
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            s.udp = udp_datagrams(&client.connection());
            client.close();
            return s;
        }
        let mut tick = tokio::time::interval_at((start_at + phase).into(), Duration::from_secs_f64(1.0 / self.rate));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let end = start_at + Duration::from_secs_f64(self.duration);
        let udp0 = udp_datagrams(&client.connection());
        let mut seq: u64 = rand::random::<u8>() as u64;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if Instant::now() >= end { break; }
                    seq += 1;
                    let (to, data, ping) = self.message(relay, me, seq, t0);
                    s.pings += ping as u64;
                    match client.send_datagram(to, &data) {
                        Ok(()) => s.sent += 1,
                        Err(outpost_client::ClientError::Closed(r)) => { s.disconnect = Some(reason_name(&r)); break; }
                        Err(_) => s.send_failures += 1,
                    }
                }
                ev = client.recv() => match ev {
                    Some(Event::Message { from, data, .. }) => s.on_message(relay, me, from, &data, t0),
                    Some(Event::Moved { .. }) => s.moved_after = Some(s.last_msg.unwrap_or_else(Instant::now)),
                    Some(Event::Closed(r)) => { s.disconnect = Some(reason_name(&r)); break; }
                    None => break,
                }
            }
        }
        // Let in-flight replies land before closing.
        let drain_until = Instant::now() + Duration::from_millis(300);
        while s.disconnect.is_none() {
            match tokio::time::timeout_at(drain_until.into(), client.recv()).await {
                Ok(Some(Event::Message { from, data, .. })) => s.on_message(relay, me, from, &data, t0),
                Ok(Some(Event::Closed(r))) => s.disconnect = Some(reason_name(&r)),
                _ => break,
            }
        }
        // Saturating: a bot whose room moved is on another connection now.
        s.udp = udp_datagrams(&client.connection()) - udp0;
        client.close();
        s
    }

    /// A bot's `seq`th message: to whom, what, and whether it is a timed ping. Relay bots ping
    /// themselves through the node and send the rest to the room; arena bots ping the guest.
    fn message(&self, relay: bool, me: u64, seq: u64, t0: Instant) -> (u64, Vec<u8>, bool) {
        let ping = seq.is_multiple_of(self.ping_every);
        let (to, data) = match (relay, ping) {
            (true, true) => (me, ping_payload(t0, b'P', self.payload)),
            (true, false) => (0, ping_payload(t0, b'D', self.payload)),
            (false, true) => (0, ping_payload(t0, b'P', 9)),
            (false, false) => (0, vec![b'M', (seq as u8).wrapping_mul(37), (seq as u8).wrapping_mul(91)]),
        };
        (to, data, ping)
    }

    /// A bot on the node's WebSocket endpoint: the same messages as [`Bench::node_bot`], each a
    /// reliable frame in its own binary message.
    async fn ws_bot(
        self,
        url: String,
        ticket: impl FnOnce() -> String,
        connects: Arc<Semaphore>,
        t0: Instant,
        gate: Gate,
        phase: Duration,
    ) -> BotStats {
        use futures_util::{SinkExt as _, StreamExt as _};
        use outpost_proto::frame::{Frame, FrameDecoder};
        use tokio_tungstenite::tungstenite::Message;
        let mut s = BotStats::default();
        let joined = {
            let _permit = connects.acquire().await;
            ws_join(&url, &ticket()).await
        };
        let start_at = gate.wait().await;
        let (mut ws, me) = match joined {
            Ok(v) => v,
            Err(e) => {
                s.join_failure = Some(e.chars().take(60).collect());
                return s;
            }
        };
        s.joined = true;
        let relay = self.module == "relay";
        let frame_of = |b: &[u8]| {
            let mut d = FrameDecoder::new(1 << 20);
            d.push(b);
            d.next_frame().ok().flatten()
        };
        let on = |s: &mut BotStats, m: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>| match m {
            Some(Ok(Message::Binary(b))) => {
                if let Some(Frame::Message { peer, data }) = frame_of(&b) {
                    s.on_message(relay, me, peer, &data, t0);
                }
                true
            }
            Some(Ok(Message::Close(c))) => {
                s.disconnect = Some(c.map_or("closed".into(), |c| {
                    outpost_proto::CloseCode::from_websocket(c.code.into())
                        .map_or(c.code.to_string(), |k| k.to_string())
                }));
                false
            }
            Some(Ok(_)) => true,
            Some(Err(e)) => {
                s.disconnect = Some(e.to_string().chars().take(40).collect());
                false
            }
            None => false,
        };
        let end = start_at + Duration::from_secs_f64(self.duration);
        tokio::time::sleep_until(start_at.into()).await;
        if self.idle {
            while let Ok(m) = tokio::time::timeout_at(end.into(), ws.next()).await {
                if !on(&mut s, m) {
                    break;
                }
            }
            let _ = ws.close(None).await;
            return s;
        }
        let mut tick = tokio::time::interval_at((start_at + phase).into(), Duration::from_secs_f64(1.0 / self.rate));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut seq: u64 = rand::random::<u8>() as u64;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if Instant::now() >= end { break; }
                    seq += 1;
                    let (to, data, ping) = self.message(relay, me, seq, t0);
                    s.pings += ping as u64;
                    let f = Frame::Message { peer: to, data }.encode();
                    match ws.send(Message::Binary(bytes::Bytes::from(f))).await {
                        Ok(()) => s.sent += 1,
                        Err(_) => { s.send_failures += 1; break; }
                    }
                }
                m = ws.next() => if !on(&mut s, m) { break },
            }
        }
        let drain_until = Instant::now() + Duration::from_millis(300);
        while s.disconnect.is_none() {
            match tokio::time::timeout_at(drain_until.into(), ws.next()).await {
                Ok(m) => {
                    if !on(&mut s, m) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        let _ = ws.close(None).await;
        s
    }

    async fn collect(
        &self,
        tasks: Vec<tokio::task::JoinHandle<BotStats>>,
        pb: &ProgressBar,
        start_at: Instant,
    ) -> Vec<BotStats> {
        let total = Duration::from_secs_f64(self.duration);
        let mut all = Vec::with_capacity(tasks.len());
        let mut pending = tasks;
        while !pending.is_empty() {
            let done = pending.iter().filter(|t| t.is_finished()).count();
            let elapsed = Instant::now().saturating_duration_since(start_at).min(total);
            pb.set_position((elapsed.as_secs_f64() * 10.0) as u64);
            pb.set_message(format!("{} bots, {done} finished", self.bots));
            if done == pending.len() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for t in pending.drain(..) {
            all.push(t.await.unwrap_or_default());
        }
        all
    }

    fn summarize(&self, target: &str, stats: Vec<BotStats>) -> RunReport {
        let mut r = RunReport { target: target.to_string(), ..RunReport::default() };
        let mut rtts = Vec::new();
        let mut gaps = Vec::new();
        for s in stats {
            r.moves += s.move_gaps_us.len() as u64;
            gaps.extend(s.move_gaps_us);
            r.bots_joined += s.joined as usize;
            if let Some(f) = s.join_failure {
                *r.join_failures.entry(f).or_default() += 1;
            }
            r.sent += s.sent;
            r.received += s.received;
            r.pings += s.pings;
            r.pongs += s.pongs;
            r.dropped += s.send_failures;
            if let Some(d) = s.disconnect {
                *r.disconnects.entry(d).or_default() += 1;
            }
            rtts.extend(s.rtts_us);
            r.udp_datagrams_to_server += s.udp.sent;
            r.udp_datagrams_from_server += s.udp.received;
            r.udp_datagrams += s.udp.sent + s.udp.received;
        }
        r.dropped += r.pings.saturating_sub(r.pongs);
        rtts.sort_unstable();
        r.rtt_p50_ms = percentile(&rtts, 0.5);
        r.rtt_p99_ms = percentile(&rtts, 0.99);
        gaps.sort_unstable();
        r.move_gap_p50_ms = percentile(&gaps, 0.5);
        r.move_gap_p99_ms = percentile(&gaps, 0.99);
        r.received_per_sec = r.received as f64 / self.duration;
        r
    }

    async fn run_baseline(&self) -> anyhow::Result<RunReport> {
        let dir = std::env::temp_dir().join(format!("outpost-echo-{}-{}", std::process::id(), rand::random::<u32>()));
        std::fs::create_dir_all(&dir)?;
        let ready_path = dir.join("ready.json");
        let mut child = std::process::Command::new(std::env::current_exe()?)
            .args(["echo-server", "--listen", "127.0.0.1:0", "--ready-file"])
            .arg(&ready_path)
            .arg("--data-dir")
            .arg(&dir)
            .args(self.baseline_threads.map(|n| format!("--threads={n}")))
            .args((self.baseline_driver == crate::echo_server::Driver::Proto).then_some("--driver=proto"))
            .stdin(std::process::Stdio::null())
            .spawn()
            .context("starting the echo baseline")?;
        let result = async {
            let ready: serde_json::Value = serde_json::from_slice(&wait_file(&ready_path, Duration::from_secs(20))?)?;
            let addr: SocketAddr = ready["quic"].as_str().unwrap_or_default().parse().context("echo address")?;
            let pin = ready["cert_sha256"].as_str().unwrap_or_default().to_string();
            let endpoints = self.endpoints(addr)?;
            let t0 = Instant::now();
            let pb = self.progress("raw echo");
            let start_at = Instant::now() + Duration::from_millis(200 + self.bots as u64 * 2);
            let connects = Arc::new(Semaphore::new(64));
            let mut tasks = Vec::new();
            for i in 0..self.bots {
                let (endpoint, pin, me, connects) =
                    (endpoints[i % endpoints.len()].clone(), pin.clone(), self.clone(), connects.clone());
                let phase = self.phase(i);
                tasks.push(tokio::spawn(async move {
                    me.echo_bot(endpoint, addr, pin, connects, t0, start_at, phase).await
                }));
            }
            let stats_path = ready_path.with_extension("stats");
            let echoed = || -> f64 {
                std::fs::read(&stats_path)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                    .and_then(|v| v["echoed"].as_f64())
                    .unwrap_or(0.0)
            };
            let (cpu0, echoed0) = (process_cpu_s(child.id()), echoed());
            let stats = self.collect(tasks, &pb, start_at).await;
            // Let the server's stats file catch up with its last echoes.
            tokio::time::sleep(Duration::from_millis(250)).await;
            let cpu = process_cpu_s(child.id()) - cpu0;
            let handled = echoed() - echoed0;
            pb.finish_and_clear();
            let target = match self.baseline_driver {
                crate::echo_server::Driver::Quinn => "raw-quinn-echo",
                crate::echo_server::Driver::Proto => "quinn-proto-echo",
            };
            let mut r = self.summarize(target, stats);
            r.server_cpu_s = cpu;
            r.echoed = Some(handled as u64);
            r.runtime_threads = ready["runtime_threads"].as_u64();
            // Per datagram the server echoed (one in, one out), whether or not the bots, busy on
            // the same cores, managed to read it.
            r.cpu_us_per_message = (handled > 0.0).then(|| cpu * 1e6 / handled);
            Ok::<_, anyhow::Error>(r)
        }
        .await;
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&dir);
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn echo_bot(
        self,
        endpoint: quinn::Endpoint,
        addr: SocketAddr,
        pin: String,
        connects: Arc<Semaphore>,
        t0: Instant,
        start_at: Instant,
        phase: Duration,
    ) -> BotStats {
        let mut s = BotStats::default();
        let conn = {
            let _permit = connects.acquire().await;
            let cfg = match tls::pinned_client_config(&pin, ALPN_ECHO, quinn::TransportConfig::default()) {
                Ok(c) => c,
                Err(e) => {
                    s.join_failure = Some(e.to_string());
                    return s;
                }
            };
            match endpoint.connect_with(cfg, addr, "outpost.invalid") {
                Ok(c) => c.await,
                Err(e) => {
                    s.join_failure = Some(e.to_string());
                    return s;
                }
            }
        };
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                s.join_failure = Some(e.to_string());
                return s;
            }
        };
        s.joined = true;
        let mut tick = tokio::time::interval_at((start_at + phase).into(), Duration::from_secs_f64(1.0 / self.rate));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let end = start_at + Duration::from_secs_f64(self.duration);
        let drain_end = end + Duration::from_millis(300);
        let udp0 = udp_datagrams(&conn);
        let mut seq = 0u64;
        loop {
            tokio::select! {
                _ = tick.tick(), if Instant::now() < end => {
                    seq += 1;
                    let ping = seq.is_multiple_of(self.ping_every);
                    s.pings += ping as u64;
                    let data = ping_payload(t0, if ping { b'P' } else { b'D' }, self.payload + 8);
                    if conn.datagram_send_buffer_space() < data.len() || conn.send_datagram(data.into()).is_err() {
                        s.send_failures += 1;
                    } else {
                        s.sent += 1;
                    }
                }
                d = conn.read_datagram() => match d {
                    Ok(d) => {
                        s.received += 1;
                        if d.first() == Some(&b'P') {
                            s.pongs += 1;
                            if let Some(rtt) = rtt_of(t0, &d) { s.rtts_us.push(rtt); }
                        }
                    }
                    Err(e) => { s.disconnect = Some(e.to_string()); break; }
                },
                _ = tokio::time::sleep_until(drain_end.into()) => break,
            }
        }
        s.udp = udp_datagrams(&conn) - udp0;
        conn.close(0u32.into(), b"done");
        s
    }
}

/// Holds bots until all have joined, then releases them with a common start time.
struct Gate {
    go: tokio::sync::watch::Receiver<Option<Instant>>,
    settled: Arc<std::sync::atomic::AtomicUsize>,
}

impl Gate {
    async fn wait(mut self) -> Instant {
        self.settled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        loop {
            if let Some(t) = *self.go.borrow() {
                return t;
            }
            if self.go.changed().await.is_err() {
                return Instant::now();
            }
        }
    }
}

fn reason_name(r: &outpost_client::CloseReason) -> String {
    match r.code {
        Some(c) => c.to_string(),
        None => r.reason.chars().take(60).collect(),
    }
}

fn print_report(r: &Report) {
    let line = |name: &str, x: &RunReport| {
        println!(
            "{name:>16}: joined {:>5}  sent {:>9}  received {:>9} ({:>9.0}/s)  dropped {:>6}  rtt p50 {:>7.2} ms  p99 {:>7.2} ms  cpu {:>6.2} s{}{}",
            x.bots_joined,
            x.sent,
            x.received,
            x.received_per_sec,
            x.dropped,
            x.rtt_p50_ms,
            x.rtt_p99_ms,
            x.server_cpu_s,
            x.cpu_us_per_message.map_or(String::new(), |v| format!("  {v:.2} µs/msg")),
            x.cpu_us_per_player_tick.map_or(String::new(), |v| format!("  {v:.2} µs/player-tick")),
        );
        if let (Some(g), Some(t)) = (x.guest_cpu_s, x.transport_cpu_us_per_player_tick) {
            println!("{:>16}  of the cpu: room workers (guests) {g:.2} s; the rest {t:.2} µs/player-tick", "");
        }
        if x.sent > 0 {
            let per = |n: u64| n as f64 / x.sent as f64;
            println!(
                "{:>16}  UDP datagrams per bot message: {:.2} ({:.2} to the server, {:.2} from it)",
                "",
                per(x.udp_datagrams),
                per(x.udp_datagrams_to_server),
                per(x.udp_datagrams_from_server)
            );
        }
        if let Some(m) = x.memory_kib_per_player {
            println!("{:>16}  server memory per connected player: {m:.1} KiB", "");
        }
        for (reason, n) in &x.join_failures {
            println!("{:>16}  join failed: {reason} × {n}", "");
        }
        for (reason, n) in &x.disconnects {
            println!("{:>16}  disconnected: {reason} × {n}", "");
        }
    };
    println!("bench: {} bots in `{}` rooms, {} Hz each, {} s", r.bots, r.module, r.rate_hz, r.duration_s);
    line(&r.module, &r.node);
    if let Some(b) = &r.baseline {
        line("raw quinn echo", b);
        if let Some(n) = b.runtime_threads {
            println!("{:>16}  on {n} async runtime thread(s)", "");
        }
    }
    for (i, round) in r.rounds.iter().enumerate() {
        let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
        println!(
            "round {}: node {} µs/player-tick ({} outside room workers), raw echo {} µs/datagram, ratio {} ({}), throughput ratio {}",
            i + 1,
            f(round.cpu_us_per_player_tick),
            f(round.transport_cpu_us_per_player_tick),
            f(round.baseline_cpu_us_per_message),
            f(round.cpu_per_player_tick_ratio),
            f(round.transport_cpu_per_player_tick_ratio),
            f(round.throughput_ratio),
        );
    }
    let median = if r.rounds.is_empty() { "" } else { " (median of rounds)" };
    if let Some(x) = r.throughput_ratio {
        println!("throughput ratio (node / raw echo, received per second){median}: {x:.2}");
    }
    if let Some(x) = r.cpu_per_message_ratio {
        println!("CPU per message ratio (node / raw echo datagram){median}: {x:.2}");
    }
    if let Some(x) = r.cpu_per_player_tick_ratio {
        println!("CPU per player-tick / raw echo CPU per datagram{median}: {x:.2}");
    }
    if let Some(x) = r.transport_cpu_per_player_tick_ratio {
        println!("  of which outside the room workers (the transport) / raw echo{median}: {x:.2}");
    }
}

type WsStream = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Opens `url` (`ws://host:port/path`), sends the `Join` and waits for `Joined`: the socket and
/// the player id, or why not.
async fn ws_join(url: &str, ticket: &str) -> Result<(WsStream, u64), String> {
    use futures_util::{SinkExt as _, StreamExt as _};
    use outpost_proto::frame::{Frame, FrameDecoder};
    use tokio_tungstenite::tungstenite::Message;
    let host = url.strip_prefix("ws://").and_then(|r| r.split('/').next()).ok_or("not a ws:// URL")?;
    let tcp = tokio::net::TcpStream::connect(host).await.map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    let (mut ws, _) = tokio_tungstenite::client_async(url, tcp).await.map_err(|e| e.to_string())?;
    let join = Frame::Join { ticket: ticket.to_string() }.encode();
    ws.send(Message::Binary(bytes::Bytes::from(join))).await.map_err(|e| e.to_string())?;
    let answer = tokio::time::timeout(Duration::from_secs(30), ws.next()).await.map_err(|_| "join timed out")?;
    let Some(Ok(Message::Binary(b))) = answer else { return Err(format!("no Joined: {answer:?}")) };
    let mut d = FrameDecoder::new(1 << 20);
    d.push(&b);
    match d.next_frame() {
        Ok(Some(Frame::Joined { player_id, .. })) => Ok((ws, player_id)),
        Ok(Some(Frame::Refused { code, .. })) => Err(code.to_string()),
        other => Err(format!("unexpected {other:?}")),
    }
}
