//! Support for the cross-process tests: start the real binaries on port 0, wait for their ready
//! files (polling with a deadline, never a fixed sleep), and talk to them over real sockets.
//!
//! Binaries come from `target/release` (built by `make build`) and guests from `target/guests`
//! (built by `make guests`); `make test` builds both first.

use anyhow::{Context, Result, bail};
pub mod mmdb;
pub mod pg;
pub mod relay;

use outpost_proto::api::{EdgeReady, RouterReady};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The token every test node is started with.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
/// The cluster token test edges heartbeat with and test routers take.
pub const CLUSTER_TOKEN: &str = "test-cluster-token-9876543210";

/// The workspace's target directory.
pub fn target_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target")
}

/// Path of a release binary; fails with the command that builds it. `OUTPOST_TEST_BIN_DIR`
/// points the tests at other builds of the servers, e.g. to show that a new test fails on an
/// older build.
pub fn bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("OUTPOST_TEST_BIN_DIR")
        .map(PathBuf::from)
        .filter(|d| d.join(name).exists())
        .unwrap_or_else(|| target_dir().join("release"));
    let p = dir.join(name);
    assert!(p.exists(), "{} is missing: run `make build`", p.display());
    p
}

/// Gives an `outpost` command the router, the admin token and an empty home (so no user config
/// file is read).
pub fn cli_env<'a>(cmd: &'a mut Command, router: &str) -> &'a mut Command {
    cmd.env("OUTPOST_ROUTER", router)
        .env("OUTPOST_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("HOME", std::env::temp_dir().join("outpost-no-home"))
}

/// Bytes of a built guest module.
pub fn guest(name: &str) -> Vec<u8> {
    let p = target_dir().join("guests").join(format!("{name}.wasm"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}: run `make guests`", p.display()))
}

/// The most memory a process has had resident (`VmHWM`), KiB: what an attack cost at its
/// worst, since allocators keep freed memory and the current size hides nothing.
pub fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM for process {pid}"))
}

/// Polls `f` until it returns `Some`, or fails after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A ticket signing key for a test: the router's role.
pub struct TicketKey {
    /// The signing key.
    pub key: outpost_proto::keys::Ed25519SigningKey,
    /// Its public text form, for `--ticket-pubkey`.
    pub public: String,
}

impl TicketKey {
    /// A fresh key.
    pub fn new() -> Self {
        let key = outpost_proto::keys::generate_signing_key();
        let public = outpost_proto::keys::public_key_to_text(&key.verifying_key());
        TicketKey { key, public }
    }

    /// A ticket for `edge`, valid for a minute.
    pub fn ticket(&self, edge: &Edge, module: &str, room: Option<&str>, player: u64, name: &str) -> String {
        let exp = now_unix() + 60;
        outpost_proto::ticket::TicketPayload::new(player, name, &edge.ready.id, module, room, exp).sign(&self.key)
    }
}

impl Default for TicketKey {
    fn default() -> Self {
        Self::new()
    }
}

/// Unix seconds now.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A running `edge-node` process, killed on drop.
pub struct Edge {
    child: Child,
    /// Its ready file contents.
    pub ready: EdgeReady,
    /// Its data dir (kept across restarts by [`Edge::restart`]).
    pub data_dir: PathBuf,
    extra: Vec<String>,
    log: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Edge {
    /// Starts a node in a fresh data dir with extra flags.
    pub fn start(extra: &[&str]) -> Result<Edge> {
        let tmp = tempfile::tempdir()?;
        let data = tmp.path().join("data");
        let mut e = Self::spawn(&data, extra.iter().map(|s| s.to_string()).collect())?;
        e._tmp = Some(tmp);
        Ok(e)
    }

    /// Starts a node on `data`, a data dir the caller keeps (and may have prepared or damaged).
    pub fn start_in(data: &Path, extra: &[&str]) -> Result<Edge> {
        Self::spawn(data, extra.iter().map(|s| s.to_string()).collect())
    }

    fn spawn(data: &Path, extra: Vec<String>) -> Result<Edge> {
        // Loopback on port 0 for each listener the caller does not place itself.
        let mut args: Vec<String> = Vec::new();
        for flag in ["--listen-probe", "--listen-admin", "--listen-quic", "--listen-webtransport"] {
            if !extra.iter().any(|a| a == flag || a.starts_with(&format!("{flag}="))) {
                args.extend([flag.to_string(), "127.0.0.1:0".to_string()]);
            }
        }
        args.extend(extra.iter().cloned());
        let (child, ready, log) = spawn_ready::<EdgeReady>("edge-node", data, &args)?;
        Ok(Edge { child, ready, data_dir: data.to_path_buf(), extra, log, _tmp: None })
    }

    /// A node that heartbeats into `router` every 200 ms from (`lat`, `lon`) with its ticket
    /// key, and `extra` flags, with the `echo` guest uploaded.
    pub fn routed(router: &Router, id: &str, lat: &str, lon: &str, extra: &[&str]) -> Edge {
        let (url, pubkey) = (router.url(), format!("--ticket-pubkey={}", router.ready.pubkey));
        let mut args = vec!["--id", id, "--router", &url, "--lat", lat, "--lon", lon, "--heartbeat-interval", "200ms"];
        args.push(&pubkey);
        args.extend_from_slice(extra);
        let e = Edge::start(&args).unwrap_or_else(|e| panic!("starting edge {id}: {e:#}"));
        let up = e.upload("echo", &guest("echo"));
        assert_eq!(up.status, 201, "uploading echo to {id}: {}", up.text());
        e
    }

    /// Whether the process exited by itself within `timeout`.
    pub fn exited(&mut self, timeout: Duration) -> bool {
        exited(&mut self.child, timeout)
    }

    /// Kills the process (SIGKILL) and starts it again on the same data dir.
    pub fn restart(mut self) -> Result<Edge> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let tmp = self._tmp.take();
        let mut e = Self::spawn(&self.data_dir.clone(), self.extra.clone())?;
        e._tmp = tmp;
        Ok(e)
    }

    /// What the node logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `http://admin-addr`.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.ready.admin)
    }

    /// An admin request with the right token.
    pub fn admin(&self, method: &str, path: &str, body: &[u8]) -> Reply {
        http(method, &format!("{}{path}", self.admin_url()), Some(ADMIN_TOKEN), body)
    }

    /// A request with the given token (or none).
    pub fn admin_with(&self, token: Option<&str>, method: &str, path: &str, body: &[u8]) -> Reply {
        http(method, &format!("{}{path}", self.admin_url()), token, body)
    }

    /// The value of one metric line in `/metrics`.
    pub fn metric(&self, name: &str) -> f64 {
        metric_in(&self.admin_with(None, "GET", "/metrics", b"").text(), name)
    }

    /// Uploads a module; returns the reply.
    pub fn upload(&self, name: &str, bytes: &[u8]) -> Reply {
        self.admin("PUT", &format!("/v1/modules/{name}"), bytes)
    }

    /// Creates a room of `module` with id `room`; panics unless 201.
    pub fn create_room(&self, module: &str, room: &str) -> serde_json::Value {
        let body = serde_json::json!({"module": module, "room": room}).to_string();
        let r = self.admin("POST", "/v1/rooms", body.as_bytes());
        assert_eq!(r.status, 201, "create room: {}", r.text());
        r.json()
    }

    /// Signals a room and returns (status, body text).
    pub fn signal(&self, room: &str, body: &str) -> Reply {
        self.admin("POST", &format!("/v1/rooms/{room}/signal"), body.as_bytes())
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits (bounded) for the process to exit; returns how long it took.
    pub fn terminate(&mut self, timeout: Duration) -> Result<Duration> {
        let started = Instant::now();
        // SAFETY: kill(2) on our own child's pid; no memory is touched.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        wait_for("edge-node to exit after SIGTERM", timeout, || self.child.try_wait().ok().flatten())?;
        Ok(started.elapsed())
    }

    /// Connects a player with a ticket for `module` (and `room`).
    pub async fn player(
        &self,
        key: &TicketKey,
        module: &str,
        room: Option<&str>,
        id: u64,
        name: &str,
    ) -> Result<outpost_client::Client, outpost_client::ClientError> {
        let ticket = key.ticket(self, module, room, id, name);
        self.connect(&ticket, &outpost_client::ConnectOptions::default()).await
    }

    /// Connects with a given ticket and options.
    pub async fn connect(
        &self,
        ticket: &str,
        opts: &outpost_client::ConnectOptions,
    ) -> Result<outpost_client::Client, outpost_client::ClientError> {
        let endpoint = outpost_client::client_endpoint("127.0.0.1:0".parse().expect("addr"))?;
        let addr = self.ready.quic.parse().expect("quic addr");
        outpost_client::Client::connect(&endpoint, addr, &self.ready.cert_sha256, ticket, opts).await
    }
}

thread_local! {
    static CHILD_ENV: std::cell::RefCell<Vec<(String, String)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with `env` set for every process it starts (on this thread): the crash tests switch
/// failpoints on this way, for one start and not for the restart after it.
pub fn with_env<T>(env: &[(&str, &str)], f: impl FnOnce() -> T) -> T {
    CHILD_ENV.with(|e| *e.borrow_mut() = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
    let out = f();
    CHILD_ENV.with(|e| e.borrow_mut().clear());
    out
}

/// Waits until `child` exits by itself (a failpoint killed it); whether it did within `timeout`.
fn exited(child: &mut Child, timeout: Duration) -> bool {
    wait_for("the process to exit", timeout, || child.try_wait().ok().flatten().map(|_| ())).is_ok()
}

/// Starts `binary` with `--data-dir data --ready-file ...` and the test tokens, logging to a file
/// beside the data dir, and waits for its ready file (or its early exit, with the log).
fn spawn_ready<T: serde::de::DeserializeOwned>(
    binary: &str,
    data: &Path,
    args: &[String],
) -> Result<(Child, T, PathBuf)> {
    std::fs::create_dir_all(data)?;
    let ready_path = data.join("../ready.json");
    let _ = std::fs::remove_file(&ready_path);
    let log = data.join(format!("../{binary}.log"));
    let log_file = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
    let mut child = Command::new(bin(binary))
        .arg("--data-dir")
        .arg(data)
        .arg("--ready-file")
        .arg(&ready_path)
        .args(args)
        .env("OUTPOST_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("OUTPOST_CLUSTER_TOKEN", CLUSTER_TOKEN)
        .env("RUST_LOG", std::env::var("OUTPOST_TEST_LOG").unwrap_or_else(|_| "info".into()))
        .envs(CHILD_ENV.with(|e| e.borrow().clone()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .with_context(|| format!("spawning {binary}"))?;
    let ready = wait_for(&format!("the {binary} ready file"), Duration::from_secs(60), || {
        if let Ok(Some(status)) = child.try_wait() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            return Some(Err(anyhow::anyhow!("{binary} exited early with {status}: {text}")));
        }
        let text = std::fs::read(&ready_path).ok()?;
        Some(serde_json::from_slice::<T>(&text).context("parsing the ready file"))
    })??;
    Ok((child, ready, log))
}

/// A running `region-router` in a temp data dir.
pub struct Router {
    child: Child,
    /// Its ready file.
    pub ready: RouterReady,
    log: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Router {
    /// Starts a router on 127.0.0.1:0 (unless `extra` has `--listen-http`) with extra flags.
    pub fn start(extra: &[&str]) -> Result<Router> {
        let tmp = tempfile::tempdir()?;
        let mut args: Vec<String> = Vec::new();
        if !extra.contains(&"--listen-http") {
            args.extend(["--listen-http".to_string(), "127.0.0.1:0".to_string()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let (child, ready, log) = spawn_ready::<RouterReady>("region-router", &tmp.path().join("data"), &args)?;
        Ok(Router { child, ready, log, _tmp: tmp })
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.ready.http)
    }

    /// Kills the process (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A request with a token (or none) and extra headers.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        http_with(method, &format!("{}{path}", self.url()), token, headers, body)
    }

    /// A GET of `path` with the admin token.
    pub fn admin_get(&self, path: &str) -> Reply {
        self.request("GET", path, Some(ADMIN_TOKEN), &[], b"")
    }

    /// Sends one heartbeat with the cluster token.
    pub fn heartbeat(&self, hb: &outpost_proto::api::Heartbeat) -> Reply {
        self.request("POST", "/v1/nodes/heartbeat", Some(CLUSTER_TOKEN), &[], &serde_json::to_vec(hb).expect("json"))
    }

    /// The value of one metric line in `/metrics`.
    pub fn metric(&self, name: &str) -> f64 {
        metric_in(&self.request("GET", "/metrics", None, &[], b"").text(), name)
    }

    /// What the router logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A heartbeat for a made-up node at (`lat`, `lon`) with `modules`, loopback addresses, 100
/// players of capacity, and a one-minute interval (so it stays healthy through a test).
pub fn heartbeat(id: &str, lat: f64, lon: f64, modules: &[&str]) -> outpost_proto::api::Heartbeat {
    outpost_proto::api::Heartbeat {
        id: id.into(),
        region: format!("region-{id}"),
        lat,
        lon,
        quic_addr: "127.0.0.1:7701".into(),
        probe_addr: "127.0.0.1:7702".into(),
        admin_url: "http://127.0.0.1:7703".into(),
        admin_tls_sha256: None,
        cert_sha256: "ab".repeat(32),
        capacity: 100,
        players: 0,
        rooms: 0,
        modules: modules
            .iter()
            .map(|m| outpost_proto::api::NodeModule { name: m.to_string(), version: "v1".into() })
            .collect(),
        cpu: 0.1,
        interval_ms: 60_000,
        accepting: true,
        boot_id: None,
        version: None,
        redeemed: None,
        features: Vec::new(),
        websocket: None,
        webtransport: None,
    }
}

/// Edge flags for slow-consumer tests: a small backlog, a short grace, and no rate limit on the
/// player who floods the slow one.
pub const SLOW_READER_FLAGS: [&str; 8] = [
    "--player-backlog-bytes",
    "8192",
    "--slow-consumer-grace",
    "300ms",
    "--player-rate",
    "100000",
    "--player-burst",
    "100000",
];

/// A running `core-region` whose data dir outlives restarts.
pub struct Core {
    child: Child,
    /// Its ready file.
    pub ready: outpost_proto::api::CoreReady,
    data: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Core {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts a core on loopback port 0 in a fresh data dir with extra flags.
    pub fn start(extra: &[&str]) -> Result<Core> {
        let tmp = tempfile::tempdir()?;
        let mut args: Vec<String> =
            ["--listen-quic", "127.0.0.1:0", "--listen-http", "127.0.0.1:0"].map(String::from).to_vec();
        args.extend(extra.iter().map(|s| s.to_string()));
        let data = tmp.path().join("data");
        let (child, ready, log) = spawn_ready("core-region", &data, &args)?;
        Ok(Core { child, ready, data, args, log, _tmp: Some(tmp) })
    }

    /// Whether the process exited by itself within `timeout`.
    pub fn exited(&mut self, timeout: Duration) -> bool {
        exited(&mut self.child, timeout)
    }

    /// SIGKILLs the process and starts it again on the same data dir (new ports).
    pub fn kill9_and_restart(mut self) -> Result<Core> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (child, ready, log) = spawn_ready("core-region", &self.data, &self.args)?;
        Ok(Core { child, ready, data: self.data.clone(), args: self.args.clone(), log, _tmp: self._tmp.take() })
    }

    /// SIGKILLs the process and starts it again on the same data dir and the same QUIC address
    /// (edges are configured with it).
    pub fn kill9_and_restart_same_address(mut self) -> Result<Core> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.restart_on(&self.ready.quic.clone())
    }

    /// Stops the process (SIGKILL) without restarting; [`Core::start_again`] brings it back.
    pub fn stop(mut self) -> StoppedCore {
        let _ = self.child.kill();
        let _ = self.child.wait();
        StoppedCore {
            quic: self.ready.quic.clone(),
            data: self.data.clone(),
            args: self.args.clone(),
            tmp: self._tmp.take(),
        }
    }

    fn restart_on(&mut self, quic: &str) -> Result<Core> {
        let mut args = self.args.clone();
        if let Some(i) = args.iter().position(|a| a == "--listen-quic") {
            args[i + 1] = quic.to_string();
        }
        let (child, ready, log) = spawn_ready("core-region", &self.data, &args)?;
        Ok(Core { child, ready, data: self.data.clone(), args: self.args.clone(), log, _tmp: self._tmp.take() })
    }

    /// A GET on the core's HTTP API with a token (or none).
    pub fn get(&self, path: &str, token: Option<&str>) -> Reply {
        http("GET", &format!("http://{}{path}", self.ready.http), token, b"")
    }

    /// The value of one metric line.
    pub fn metric(&self, name: &str) -> f64 {
        metric_in(&self.get("/metrics", None).text(), name)
    }

    /// What the core logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Opens an edge link with the test cluster token.
    pub async fn link(
        &self,
        edge: &str,
        stream: &str,
    ) -> Result<outpost_net::link::CoreLink, outpost_net::link::LinkError> {
        self.link_with(CLUSTER_TOKEN, edge, stream).await
    }

    /// Opens an edge link with a given token.
    pub async fn link_with(
        &self,
        token: &str,
        edge: &str,
        stream: &str,
    ) -> Result<outpost_net::link::CoreLink, outpost_net::link::LinkError> {
        let addr = self.ready.quic.parse().expect("quic addr");
        outpost_net::link::CoreLink::connect(
            addr,
            &self.ready.cert_sha256,
            token,
            edge,
            stream,
            Duration::from_secs(10),
        )
        .await
    }
}

/// A core that was stopped, with what it needs to come back on the same address and data.
pub struct StoppedCore {
    quic: String,
    data: PathBuf,
    args: Vec<String>,
    tmp: Option<tempfile::TempDir>,
}

impl StoppedCore {
    /// Starts the core again on its old QUIC address and data dir.
    pub fn start_again(self) -> Result<Core> {
        let mut args = self.args.clone();
        if let Some(i) = args.iter().position(|a| a == "--listen-quic") {
            args[i + 1] = self.quic.clone();
        }
        let (child, ready, log) = spawn_ready("core-region", &self.data, &args)?;
        Ok(Core { child, ready, data: self.data, args: self.args, log, _tmp: self.tmp })
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Finds `name value` in Prometheus text.
pub fn metric_in(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("metric {name} not found in:\n{text}"))
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP reply.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Body.
    pub body: Vec<u8>,
    /// Headers, names lowercase.
    pub headers: Vec<(String, String)>,
}

impl Reply {
    /// The value of header `name` (lowercase), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// Body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// One HTTP request over a fresh connection.
pub fn http(method: &str, url: &str, token: Option<&str>, body: &[u8]) -> Reply {
    http_with(method, url, token, &[], body)
}

/// One HTTPS request, trusting only the CA in `ca` (a PEM file).
pub fn https(method: &str, url: &str, token: Option<&str>, body: &[u8], ca: &Path) -> Reply {
    let trust = outpost_net::tls::HttpsTrust::CaFile(ca.to_path_buf());
    let tls = outpost_net::tls::https_client_config(&trust).expect("the test CA loads");
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(30)).tls_config(tls).build();
    send(agent, method, url, token, &[], body)
}

/// One HTTP request with extra headers.
pub fn http_with(method: &str, url: &str, token: Option<&str>, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(30)).build();
    send(agent, method, url, token, headers, body)
}

fn send(
    agent: ureq::Agent,
    method: &str,
    url: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut req = agent.request(method, url);
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let resp = match req.send_bytes(body) {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = resp.status();
    let headers = resp
        .headers_names()
        .into_iter()
        .filter_map(|n| Some((n.to_ascii_lowercase(), resp.header(&n)?.to_string())))
        .collect();
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut resp.into_reader(), &mut out).expect("reading the reply");
    Reply { status, body: out, headers }
}

/// One signal over a fresh connection; `None` when the connection broke before a whole reply
/// (the node was killed under it).
pub fn signal_raw(admin: &str, room: &str, body: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(admin).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let head = format!(
        "POST /v1/rooms/{room}/signal HTTP/1.1\r\nHost: e\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.get(9..12)?.parse().ok()?;
    let (_, text) = out.split_once("\r\n\r\n")?;
    Some((status, text.to_string()))
}

/// Which of `c{call}/0..per_call` the core holds, as indices.
pub fn held(core: &Core, call: usize) -> Vec<usize> {
    let r = core.get(&format!("/v1/state?prefix=c{call}/&limit=1000"), Some(ADMIN_TOKEN));
    assert_eq!(r.status, 200, "{}", r.text());
    let mut got: Vec<usize> = r.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["key"].as_str().unwrap().rsplit('/').next().unwrap().parse().unwrap())
        .collect();
    got.sort();
    got
}

/// Waits until `router` lists every node of `ids` as healthy.
pub fn registered(router: &Router, ids: &[&str]) {
    wait_for("the nodes in the registry", Duration::from_secs(60), || {
        let r = router.admin_get("/v1/nodes");
        let nodes = r.json()["nodes"].as_array().cloned().unwrap_or_default();
        ids.iter().all(|id| nodes.iter().any(|n| n["id"] == *id && n["health"] == "healthy")).then_some(())
    })
    .unwrap();
}

/// Issues `name.pem`/`name.key` for 127.0.0.1 from the CA in `dir/ca`; returns the cert's SHA-256.
pub fn issue_cert(dir: &Path, name: &str) -> String {
    let out = Command::new(bin("outpost"))
        .args(["cert", "--json", "--ca-dir"])
        .arg(dir.join("ca"))
        .arg("--out-dir")
        .arg(dir)
        .args(["--name", name, "--san", "127.0.0.1,localhost"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["sha256"].as_str().unwrap().to_string()
}
