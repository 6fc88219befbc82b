//! A real `nats-server -js` as a child process, fsyncing every message.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::binaries::NatsBinary;
use crate::process::{spawn_logged, stop, wait_ready};
use crate::{DevkitError, free_port};

#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// Fixed client port; `None` picks a free one.
    pub port: Option<u16>,
    /// `sync_interval: always` (fsync each message). On by default: Jepsen showed
    /// acknowledged JetStream writes lost on power failure without it.
    pub sync_always: bool,
    pub ready_timeout: Duration,
}

impl Default for NatsOptions {
    fn default() -> Self {
        NatsOptions {
            port: None,
            sync_always: true,
            ready_timeout: Duration::from_secs(20),
        }
    }
}

/// A running JetStream server. Dropping it stops the server (and removes a
/// temporary store).
#[derive(Debug)]
pub struct NatsServer {
    bin: NatsBinary,
    root: PathBuf,
    port: u16,
    opts: NatsOptions,
    child: Option<Child>,
    _temp: Option<tempfile::TempDir>,
}

impl NatsServer {
    /// A server with its store in a temporary directory.
    pub async fn start_temp(opts: NatsOptions) -> Result<Self, DevkitError> {
        let temp = tempfile::Builder::new()
            .prefix("shardline-nats-")
            .tempdir()
            .map_err(DevkitError::io(std::env::temp_dir()))?;
        let mut server = Self::new(temp.path(), opts)?;
        server._temp = Some(temp);
        server.boot().await?;
        Ok(server)
    }

    /// A server whose store lives in `root/jetstream` and persists across restarts.
    pub async fn open(root: &Path, opts: NatsOptions) -> Result<Self, DevkitError> {
        std::fs::create_dir_all(root).map_err(DevkitError::io(root))?;
        let root = root.canonicalize().map_err(DevkitError::io(root))?;
        let mut server = Self::new(&root, opts)?;
        server.boot().await?;
        Ok(server)
    }

    fn new(root: &Path, opts: NatsOptions) -> Result<Self, DevkitError> {
        let bin = NatsBinary::locate()?;
        let port = match opts.port {
            Some(p) => p,
            None => free_port().map_err(DevkitError::io(root))?,
        };
        Ok(NatsServer {
            bin,
            root: root.to_path_buf(),
            port,
            opts,
            child: None,
            _temp: None,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `nats://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn log_path(&self) -> PathBuf {
        self.root.join("nats-server.log")
    }

    pub fn binary(&self) -> &NatsBinary {
        &self.bin
    }

    /// SIGKILL the server (fault tests); `restart` brings it back with its store.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Graceful stop (SIGTERM), SIGKILL after 10 s.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop(&mut child, Signal::SIGTERM, Duration::from_secs(10));
        }
    }

    pub async fn restart(&mut self) -> Result<(), DevkitError> {
        self.stop();
        self.boot().await
    }

    fn write_config(&self) -> Result<PathBuf, DevkitError> {
        let store = self.root.join("jetstream");
        std::fs::create_dir_all(&store).map_err(DevkitError::io(&store))?;
        let sync = if self.opts.sync_always {
            "\n    sync_interval: always"
        } else {
            ""
        };
        let conf = format!(
            "listen: \"127.0.0.1:{port}\"\nserver_name: \"shardline-dev-{port}\"\n\
             max_payload: 8MB\njetstream {{\n    store_dir: \"{store}\"{sync}\n}}\n",
            port = self.port,
            store = store.display(),
        );
        let path = self.root.join("nats-server.conf");
        std::fs::write(&path, conf).map_err(DevkitError::io(&path))?;
        Ok(path)
    }

    async fn boot(&mut self) -> Result<(), DevkitError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.spawn_and_wait().await {
                Err(DevkitError::Exited { ref log, .. })
                    if self.opts.port.is_none() && attempts < 5 && log.contains("in use") =>
                {
                    self.port = free_port().map_err(DevkitError::io(&self.root))?;
                }
                other => return other,
            }
        }
    }

    async fn spawn_and_wait(&mut self) -> Result<(), DevkitError> {
        let conf = self.write_config()?;
        let log_path = self.log_path();
        let mut cmd = Command::new(&self.bin.path);
        cmd.arg("-c").arg(&conf).current_dir(&self.root);
        self.child = Some(spawn_logged(&mut cmd, &log_path)?);
        let port = self.port;
        wait_ready(
            &mut self.child,
            format!("nats-server on port {port}"),
            &log_path,
            self.opts.ready_timeout,
            || async move { greets(port) },
        )
        .await
    }
}

/// The server accepts a client connection and sends its INFO line (JetStream is
/// initialised before the client listener opens).
fn greets(port: u16) -> bool {
    let Ok(stream) = TcpStream::connect_timeout(
        &(Ipv4Addr::LOCALHOST, port).into(),
        Duration::from_millis(200),
    ) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).is_ok() && line.starts_with("INFO")
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}
