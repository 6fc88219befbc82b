//! A real PostgreSQL cluster as a child process.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::{Gid, Uid, User, chown};
use tokio_postgres::NoTls;

use crate::binaries::PgBinaries;
use crate::process::{run, spawn_logged, stop, wait_ready};
use crate::{DevkitError, free_port};

/// Bumped whenever the template's `initdb` arguments change.
const TEMPLATE_VERSION: u32 = 1;

/// How to start a cluster.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Fixed port; `None` picks a free one.
    pub port: Option<u16>,
    /// `fsync` (off for tests: a crash of the machine is not a test case; a crash
    /// of the server process is, and loses nothing either way).
    pub fsync: bool,
    /// Extra `-c name=value` settings.
    pub settings: Vec<(String, String)>,
    pub ready_timeout: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            port: None,
            fsync: false,
            settings: Vec::new(),
            ready_timeout: Duration::from_secs(30),
        }
    }
}

/// A running (or stopped) PostgreSQL cluster owned by this process. Dropping it
/// stops the server (fast shutdown) and, for temporary clusters, removes its files.
#[derive(Debug)]
pub struct PgCluster {
    bins: PgBinaries,
    root: PathBuf,
    port: u16,
    opts: PgOptions,
    child: Option<Child>,
    run_as: Option<(Uid, Gid)>,
    _temp: Option<tempfile::TempDir>,
}

impl PgCluster {
    /// A throw-away cluster in a temporary directory, removed on drop.
    pub async fn start_temp(opts: PgOptions) -> Result<Self, DevkitError> {
        let temp = tempfile::Builder::new()
            .prefix("shardline-pg-")
            .tempdir()
            .map_err(DevkitError::io(std::env::temp_dir()))?;
        let root = temp.path().to_path_buf();
        let mut cluster = Self::prepare(&root, opts).await?;
        cluster._temp = Some(temp);
        cluster.boot().await?;
        Ok(cluster)
    }

    /// A persistent cluster under `root` (data in `root/data`, log in
    /// `root/postgres.log`), initialised on first use and kept across restarts.
    pub async fn open(root: &Path, opts: PgOptions) -> Result<Self, DevkitError> {
        std::fs::create_dir_all(root).map_err(DevkitError::io(root))?;
        let root = root.canonicalize().map_err(DevkitError::io(root))?;
        let mut cluster = Self::prepare(&root, opts).await?;
        cluster.boot().await?;
        Ok(cluster)
    }

    async fn prepare(root: &Path, opts: PgOptions) -> Result<Self, DevkitError> {
        let bins = PgBinaries::locate()?;
        let run_as = postgres_user()?;
        let root_owned = root.to_path_buf();
        let bins2 = bins.clone();
        tokio::task::spawn_blocking(move || init_data_dir(&bins2, &root_owned, run_as))
            .await
            .map_err(|e| DevkitError::Command {
                what: "initialising the data directory".into(),
                detail: e.to_string(),
            })??;
        let port = match opts.port {
            Some(p) => p,
            None => free_port().map_err(DevkitError::io(root))?,
        };
        Ok(PgCluster {
            bins,
            root: root.to_path_buf(),
            port,
            opts,
            child: None,
            run_as,
            _temp: None,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.root.join("postgres.log")
    }

    /// `postgres://postgres@127.0.0.1:PORT/DB`
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// libpq key/value form, as `CREATE SUBSCRIPTION ... CONNECTION` wants it.
    pub fn conninfo(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={db}",
            self.port
        )
    }

    /// Connect with tokio-postgres; the connection runs on a spawned task.
    pub async fn connect(&self, db: &str) -> Result<tokio_postgres::Client, DevkitError> {
        let (client, conn) = tokio_postgres::connect(&self.conninfo(db), NoTls).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// `CREATE DATABASE name` unless it exists.
    pub async fn create_database(&self, name: &str) -> Result<(), DevkitError> {
        let client = self.connect("postgres").await?;
        let exists = client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .await?
            .is_some();
        if !exists {
            let quoted = format!("\"{}\"", name.replace('"', "\"\""));
            client
                .batch_execute(&format!("CREATE DATABASE {quoted}"))
                .await?;
        }
        Ok(())
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// SIGKILL the postmaster (a crash, for fault tests). `restart` brings it back
    /// through crash recovery.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Fast shutdown (SIGINT), waiting up to 20 s before SIGKILL.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop(&mut child, Signal::SIGINT, Duration::from_secs(20));
        }
    }

    /// Start the server again on the same port and data directory.
    pub async fn restart(&mut self) -> Result<(), DevkitError> {
        self.stop();
        // After a SIGKILL, orphaned backends may hold shared memory for a moment.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match self.boot().await {
                Ok(()) => return Ok(()),
                Err(DevkitError::Exited { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn boot(&mut self) -> Result<(), DevkitError> {
        stop_stale_postmaster(&self.data_dir());
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.spawn_and_wait().await {
                // Lost the race for an auto-picked port: pick another. (Not on
                // "shared memory block is still in use": backends of a killed
                // postmaster are still exiting, and the port must stay the same.)
                Err(DevkitError::Exited { ref log, .. })
                    if self.opts.port.is_none()
                        && attempts < 5
                        && (log.contains("could not bind")
                            || log.contains("Address already in use")) =>
                {
                    self.port = free_port().map_err(DevkitError::io(&self.root))?;
                }
                other => return other,
            }
        }
    }

    async fn spawn_and_wait(&mut self) -> Result<(), DevkitError> {
        let log_path = self.log_path();
        let mut cmd = Command::new(self.bins.postgres());
        cmd.arg("-D")
            .arg(self.data_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .current_dir("/");
        for (k, v) in self.settings() {
            cmd.arg("-c").arg(format!("{k}={v}"));
        }
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid.as_raw()).gid(gid.as_raw());
        }
        self.child = Some(spawn_logged(&mut cmd, &log_path)?);
        let conninfo = self.conninfo("postgres");
        wait_ready(
            &mut self.child,
            format!("postgres on port {}", self.port),
            &log_path,
            self.opts.ready_timeout,
            || async { tokio_postgres::connect(&conninfo, NoTls).await.is_ok() },
        )
        .await?;
        tracing::debug!(port = self.port, root = %self.root.display(), "postgres ready");
        Ok(())
    }

    fn settings(&self) -> Vec<(String, String)> {
        let fsync = if self.opts.fsync { "on" } else { "off" };
        let mut s: Vec<(String, String)> = [
            ("listen_addresses", "127.0.0.1"),
            // TCP only: no socket files to collide on, no path-length limits.
            ("unix_socket_directories", ""),
            ("wal_level", "logical"),
            ("max_wal_senders", "32"),
            ("max_replication_slots", "32"),
            ("max_logical_replication_workers", "16"),
            ("max_sync_workers_per_subscription", "4"),
            ("max_worker_processes", "40"),
            ("max_connections", "300"),
            ("shared_buffers", "128MB"),
            ("fsync", fsync),
            ("full_page_writes", fsync),
            // Walsenders only ship flushed WAL: keep commits synchronous so logical
            // replication lag stays sub-millisecond.
            ("synchronous_commit", "on"),
            ("wal_sender_timeout", "30s"),
            ("logging_collector", "off"),
            ("log_min_messages", "warning"),
            ("log_line_prefix", "%m [%p] "),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        s.extend(self.opts.settings.iter().cloned());
        s
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `Some((uid, gid))` of the `postgres` user when running as root (initdb and the
/// server refuse to run as root), `None` otherwise.
fn postgres_user() -> Result<Option<(Uid, Gid)>, DevkitError> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    match User::from_name("postgres") {
        Ok(Some(u)) => Ok(Some((u.uid, u.gid))),
        Ok(None) => Err(DevkitError::NoPostgresUser(
            "create it (`adduser --system postgres`) or run as an unprivileged user".into(),
        )),
        Err(e) => Err(DevkitError::NoPostgresUser(e.to_string())),
    }
}

fn chown_to(path: &Path, run_as: Option<(Uid, Gid)>) -> Result<(), DevkitError> {
    if let Some((uid, gid)) = run_as {
        chown(path, Some(uid), Some(gid)).map_err(|e| DevkitError::Io {
            path: path.to_path_buf(),
            source: e.into(),
        })?;
    }
    Ok(())
}

/// Make `root/data` a data directory: a copy of the cached template (one `initdb`
/// per machine and PostgreSQL major version), unless it already is one.
fn init_data_dir(
    bins: &PgBinaries,
    root: &Path,
    run_as: Option<(Uid, Gid)>,
) -> Result<(), DevkitError> {
    chown_to(root, run_as)?;
    let data = root.join("data");
    if data.join("PG_VERSION").is_file() {
        return Ok(());
    }
    if data.exists() {
        std::fs::remove_dir_all(&data).map_err(DevkitError::io(&data))?;
    }
    let template = ensure_template(bins, run_as)?;
    let mut cp = Command::new("cp");
    cp.arg("-a").arg(&template).arg(&data);
    run(cp, "copying the initdb template")?;
    chown_to(&data, run_as)?;
    Ok(())
}

fn ensure_template(bins: &PgBinaries, run_as: Option<(Uid, Gid)>) -> Result<PathBuf, DevkitError> {
    let base = std::env::temp_dir().join("shardline-devkit");
    std::fs::create_dir_all(&base).map_err(DevkitError::io(&base))?;
    // Readable by the postgres user (the directory may be created by root).
    chown_to(&base, run_as)?;
    let template = base.join(format!("pg{}-template-v{TEMPLATE_VERSION}", bins.major));
    if template.join("PG_VERSION").is_file() {
        return Ok(template);
    }
    let staging = base.join(format!("staging-{}-{}", std::process::id(), rand_suffix()));
    let mut initdb = Command::new(bins.initdb());
    initdb
        .arg("-D")
        .arg(&staging)
        .args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        ])
        .current_dir("/");
    if let Some((uid, gid)) = run_as {
        initdb.uid(uid.as_raw()).gid(gid.as_raw());
    }
    run(initdb, "initdb")?;
    // Atomic publish; if another process won the race, use theirs.
    if std::fs::rename(&staging, &template).is_err() {
        let _ = std::fs::remove_dir_all(&staging);
        if !template.join("PG_VERSION").is_file() {
            return Err(DevkitError::Command {
                what: "publishing the initdb template".into(),
                detail: format!("{} is not a data directory", template.display()),
            });
        }
    }
    Ok(template)
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos().into())
        .unwrap_or(0)
}

/// A postmaster left running by a process that was killed (its parent could not stop
/// it): stop it so the data directory can be used again.
fn stop_stale_postmaster(data: &Path) {
    let Ok(text) = std::fs::read_to_string(data.join("postmaster.pid")) else {
        return;
    };
    let Some(pid) = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<i32>().ok())
    else {
        return;
    };
    let pid = nix::unistd::Pid::from_raw(pid);
    let is_postgres = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim() == "postgres")
        .unwrap_or(false);
    if !is_postgres {
        return;
    }
    tracing::warn!(%pid, data = %data.display(), "stopping a stale postmaster");
    let _ = nix::sys::signal::kill(pid, Signal::SIGINT);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}
