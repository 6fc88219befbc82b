//! Idempotent setup: the shard's publication and slot, and the JetStream stream.

use std::time::Duration;

use async_nats::jetstream::{self, stream::LastRawMessageErrorKind, stream::StorageType};
use tokio_postgres::NoTls;
use tracing::{info, warn};

use crate::wire::Transaction;
use crate::{PUBLICATION, ReplicatorError, STREAM, SUBJECT_PREFIX, TABLES};

/// Create the publication (adding any missing table) and the logical slot.
pub async fn ensure_shard(dsn: &str, slot: &str) -> Result<(), ReplicatorError> {
    let (client, conn) = tokio_postgres::connect(dsn, NoTls).await?;
    let conn = tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "setup connection closed");
        }
    });
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&PUBLICATION],
        )
        .await?
        .is_some();
    if exists {
        let rows = client
            .query(
                "SELECT tablename::text FROM pg_publication_tables WHERE pubname = $1",
                &[&PUBLICATION],
            )
            .await?;
        let have: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        for t in TABLES.iter().filter(|t| !have.iter().any(|h| h == *t)) {
            warn!(table = t, "publication lacks a table; adding it");
            client
                .batch_execute(&format!("ALTER PUBLICATION {PUBLICATION} ADD TABLE {t}"))
                .await?;
        }
    } else {
        info!("creating publication {PUBLICATION}");
        let sql = format!(
            "CREATE PUBLICATION {PUBLICATION} FOR TABLE {}",
            TABLES.join(", ")
        );
        if let Err(e) = client.batch_execute(&sql).await {
            // A concurrent replicator may have won the race.
            if e.code() != Some(&tokio_postgres::error::SqlState::DUPLICATE_OBJECT) {
                return Err(e.into());
            }
        }
    }
    let slot_exists = client
        .query_opt(
            "SELECT plugin FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await?;
    match slot_exists {
        Some(row) => {
            let plugin: Option<String> = row.get(0);
            if plugin.as_deref() != Some("pgoutput") {
                return Err(ReplicatorError::Dsn(format!(
                    "slot {slot} exists with plugin {plugin:?}, expected pgoutput"
                )));
            }
        }
        None => {
            info!(slot, "creating logical replication slot");
            client
                .query_one(
                    "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')",
                    &[&slot],
                )
                .await?;
        }
    }
    drop(client);
    let _ = conn.await;
    Ok(())
}

/// Most replicas JetStream keeps of a stream.
pub const MAX_REPLICAS: usize = 5;

/// The operator's settings of the stream: replication and retention. The rest of
/// its shape (subjects, file storage, duplicate window) is fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Copies of every message in a clustered JetStream (1 to [`MAX_REPLICAS`]).
    pub replicas: usize,
    /// Messages older than this are removed (`None`: kept forever).
    pub max_age: Option<Duration>,
    /// The oldest messages are removed above this many bytes (`None`: no limit).
    pub max_bytes: Option<u64>,
}

impl Default for StreamLimits {
    /// One replica, nothing ever removed.
    fn default() -> Self {
        StreamLimits {
            replicas: 1,
            max_age: None,
            max_bytes: None,
        }
    }
}

impl StreamLimits {
    fn check(&self) -> Result<(), ReplicatorError> {
        let bad = |detail: String| {
            Err(ReplicatorError::StreamConfig {
                name: STREAM.into(),
                detail,
            })
        };
        if !(1..=MAX_REPLICAS).contains(&self.replicas) {
            return bad(format!(
                "{} replicas configured (allowed 1..={MAX_REPLICAS})",
                self.replicas
            ));
        }
        if self.max_age == Some(Duration::ZERO) || self.max_bytes == Some(0) {
            return bad("a zero max_age or max_bytes (leave it unset for no limit)".into());
        }
        if self.max_bytes.is_some_and(|b| i64::try_from(b).is_err()) {
            return bad("max_bytes is too large".into());
        }
        Ok(())
    }

    /// JetStream's encoding: 0 is no age limit.
    fn nats_max_age(&self) -> Duration {
        self.max_age.unwrap_or(Duration::ZERO)
    }

    /// JetStream's encoding: -1 is no size limit.
    fn nats_max_bytes(&self) -> i64 {
        self.max_bytes
            .and_then(|b| i64::try_from(b).ok())
            .unwrap_or(-1)
    }
}

/// The stream's configuration.
pub fn stream_config(
    duplicate_window: Duration,
    limits: &StreamLimits,
) -> jetstream::stream::Config {
    jetstream::stream::Config {
        name: STREAM.to_owned(),
        subjects: vec![format!("{SUBJECT_PREFIX}.>")],
        storage: StorageType::File,
        duplicate_window,
        num_replicas: limits.replicas,
        max_age: limits.nats_max_age(),
        max_bytes: limits.nats_max_bytes(),
        ..Default::default()
    }
}

/// Create the stream, or check that the existing one has the right shape and
/// bring its replicas and limits to `limits` (JetStream updates the limits in
/// place; a replica change is only possible on a cluster, and a refused one is a
/// [`ReplicatorError::StreamConfig`]). Returns the stream's configuration.
pub async fn ensure_stream(
    js: &jetstream::Context,
    duplicate_window: Duration,
    limits: &StreamLimits,
) -> Result<jetstream::stream::Config, ReplicatorError> {
    limits.check()?;
    if limits.max_age.is_some_and(|a| a < duplicate_window) {
        return Err(ReplicatorError::StreamConfig {
            name: STREAM.into(),
            detail: format!(
                "max_age {:?} is shorter than the duplicate window {duplicate_window:?}",
                limits.max_age.unwrap_or_default()
            ),
        });
    }
    let mut stream = js
        .get_or_create_stream(stream_config(duplicate_window, limits))
        .await
        .map_err(|e| ReplicatorError::Nats(format!("creating stream {STREAM}: {e}")))?;
    let info = stream
        .info()
        .await
        .map_err(|e| ReplicatorError::Nats(format!("stream info: {e}")))?;
    let want = format!("{SUBJECT_PREFIX}.>");
    if !info.config.subjects.contains(&want) {
        return Err(ReplicatorError::StreamConfig {
            name: STREAM.into(),
            detail: format!("subjects {:?} lack {want}", info.config.subjects),
        });
    }
    if info.config.storage != StorageType::File {
        return Err(ReplicatorError::StreamConfig {
            name: STREAM.into(),
            detail: "storage is not file".into(),
        });
    }
    if info.config.duplicate_window < duplicate_window {
        warn!(
            have = ?info.config.duplicate_window,
            want = ?duplicate_window,
            "stream duplicate window is shorter than configured"
        );
    }
    let have = &info.config;
    let have_replicas = have.num_replicas.max(1);
    let have_bytes = if have.max_bytes <= 0 {
        -1
    } else {
        have.max_bytes
    };
    if have_replicas == limits.replicas
        && have.max_age == limits.nats_max_age()
        && have_bytes == limits.nats_max_bytes()
    {
        return Ok(info.config.clone());
    }
    let mut updated = have.clone();
    updated.num_replicas = limits.replicas;
    updated.max_age = limits.nats_max_age();
    updated.max_bytes = limits.nats_max_bytes();
    match js.update_stream(&updated).await {
        Ok(new) => {
            info!(
                replicas = new.config.num_replicas,
                max_age = ?new.config.max_age,
                max_bytes = new.config.max_bytes,
                "updated the stream's replicas and limits"
            );
            Ok(new.config)
        }
        Err(e) if have_replicas != limits.replicas => Err(ReplicatorError::StreamConfig {
            name: STREAM.into(),
            detail: format!(
                "it has {have_replicas} replica(s), {} configured, and JetStream refused the \
                 change ({e}); a replica count above 1 needs a NATS cluster",
                limits.replicas
            ),
        }),
        Err(e) => Err(ReplicatorError::Nats(format!(
            "updating the limits of stream {STREAM}: {e}"
        ))),
    }
}

/// The commit LSN of the last message published for `subject` (0: none).
pub async fn last_published_lsn(
    js: &jetstream::Context,
    subject: &str,
) -> Result<u64, ReplicatorError> {
    let stream = js
        .get_stream(STREAM)
        .await
        .map_err(|e| ReplicatorError::Nats(format!("get stream: {e}")))?;
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(m) => Ok(Transaction::decode(&m.payload)?.commit_lsn),
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(0),
        Err(e) => Err(ReplicatorError::Nats(format!(
            "last message on {subject}: {e}"
        ))),
    }
}
