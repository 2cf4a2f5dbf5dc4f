//! A throw-away PostgreSQL cluster for tests: `initdb` into a temp dir, `postgres` listening on a
//! unix socket only (no TCP port to collide on), stopped and deleted on drop. Runs as the
//! `postgres` user when the tests run as root (initdb and postgres refuse root).

use anyhow::{Context, Result, bail};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running cluster.
pub struct PgCluster {
    child: Child,
    dir: tempfile::TempDir,
}

/// The newest installed server's bin dir (`/usr/lib/postgresql/<v>/bin`).
fn server_bin() -> Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("no PostgreSQL server under /usr/lib/postgresql (make test installs it)")?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().map(|v| v.1).context("no PostgreSQL server with initdb installed")
}

/// `(uid, gid)` of the `postgres` user when we are root, else `None` (run as ourselves).
fn run_as() -> Result<Option<(u32, u32)>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let id = |flag: &str| -> Result<u32> {
        let out = Command::new("id").args([flag, "postgres"]).output().context("id postgres")?;
        String::from_utf8_lossy(&out.stdout).trim().parse().context("no postgres user")
    };
    Ok(Some((id("-u")?, id("-g")?)))
}

fn command(bin: &Path, who: Option<(u32, u32)>) -> Command {
    let mut c = Command::new(bin);
    if let Some((uid, gid)) = who {
        c.uid(uid).gid(gid);
    }
    c
}

impl PgCluster {
    /// Creates and starts a cluster; returns once it accepts connections.
    pub fn start() -> Result<PgCluster> {
        let bin = server_bin()?;
        let who = run_as()?;
        let dir = tempfile::Builder::new().prefix("outpost-pg-").tempdir()?;
        if let Some((uid, gid)) = who {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))?;
        }
        let data = dir.path().join("data");
        let out = command(&bin.join("initdb"), who)
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"])
            .output()
            .context("running initdb")?;
        if !out.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let log = std::fs::File::create(dir.path().join("postgres.log"))?;
        if let Some((uid, gid)) = who {
            std::os::unix::fs::chown(dir.path().join("postgres.log"), Some(uid), Some(gid))?;
        }
        let child = command(&bin.join("postgres"), who)
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(dir.path())
            .args(["-c", "listen_addresses=", "-p", "5432"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting postgres")?;
        let mut pg = PgCluster { child, dir };
        let ready = bin.join("pg_isready");
        crate::wait_for("postgres to accept connections", Duration::from_secs(60), || {
            if let Ok(Some(status)) = pg.child.try_wait() {
                return Some(Err(anyhow::anyhow!("postgres exited with {status}: {}", pg.log())));
            }
            let ok = Command::new(&ready).arg("-h").arg(pg.dir.path()).args(["-p", "5432", "-q"]).status().ok()?;
            ok.success().then_some(Ok(()))
        })??;
        Ok(pg)
    }

    /// A libpq connection string for the `postgres` database.
    pub fn url(&self) -> String {
        format!("host={} port=5432 user=postgres dbname=postgres", self.dir.path().display())
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // SIGINT: PostgreSQL's fast shutdown.
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
