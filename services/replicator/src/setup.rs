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

/// The stream's configuration.
pub fn stream_config(duplicate_window: Duration) -> jetstream::stream::Config {
    jetstream::stream::Config {
        name: STREAM.to_owned(),
        subjects: vec![format!("{SUBJECT_PREFIX}.>")],
        storage: StorageType::File,
        duplicate_window,
        ..Default::default()
    }
}

/// Create the stream, or check that the existing one has the right shape.
pub async fn ensure_stream(
    js: &jetstream::Context,
    duplicate_window: Duration,
) -> Result<(), ReplicatorError> {
    let mut stream = js
        .get_or_create_stream(stream_config(duplicate_window))
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
    Ok(())
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
