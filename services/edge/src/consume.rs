//! The consumer: an ordered pull consumer over `shardline.cdc.>` starting after
//! the last stream sequence the store recorded. Each message is applied with its
//! cursor atomically (the messages already received when one arrives, up to
//! [`MAX_BATCH`], share one redb commit); messages at or below a shard's cursor LSN are
//! skipped (redelivery, replicator restarts). Any consumer or connection error
//! recreates the consumer from the store's position.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull};
use futures_util::{FutureExt, StreamExt};
use shardline_replicator::setup::StreamLimits;
use shardline_replicator::wire::{Transaction, format_lsn};
use shardline_replicator::{STREAM, SUBJECT_PREFIX};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span, warn};

use crate::store::Applied;
use crate::{EdgeError, Shared, now_micros};

const IDLE: Duration = Duration::from_millis(200);
/// Most messages applied in one store commit.
const MAX_BATCH: usize = 256;

pub async fn run(
    shared: Arc<Shared>,
    nats_url: String,
    limits: StreamLimits,
    shutdown: CancellationToken,
) -> Result<(), EdgeError> {
    async move {
        let client = loop {
            match async_nats::ConnectOptions::new()
                .retry_on_initial_connect()
                .connect(&nats_url)
                .await
            {
                Ok(c) => break c,
                Err(e) => warn!(error = %e, "NATS connect failed"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        };
        let beats = tokio::spawn(crate::heartbeat::listen(
            shared.clone(),
            client.clone(),
            shutdown.child_token(),
        ));
        let _stop_beats = AbortOnDrop(beats);
        let js = jetstream::new(client);
        loop {
            if let Err(e) = session(&shared, &js, &limits, &shutdown).await {
                warn!(error = %e, "consumer session ended; recreating from the store's cursor");
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }
    .instrument(info_span!("edge_consumer"))
    .await
}

/// Aborts a task when dropped (the heartbeat listener ends with the consumer).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn session(
    shared: &Arc<Shared>,
    js: &jetstream::Context,
    limits: &StreamLimits,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let start = {
        let s = shared.clone();
        tokio::task::spawn_blocking(move || s.store.stream_seq())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
            + 1
    };
    // Create the stream if no replicator has yet (same shape as theirs), so an
    // edge started first waits for messages instead of failing.
    shardline_replicator::setup::ensure_stream(js, Duration::from_secs(120), limits)
        .await
        .map_err(|e| e.to_string())?;
    let stream = js.get_stream(STREAM).await.map_err(|e| e.to_string())?;
    let first = stream.cached_info().state.first_sequence;
    if start < first && stream.cached_info().state.messages > 0 {
        // Retention limits (max_age, max_bytes) removed messages this edge never
        // applied: its store lacks their changes. Say so loudly; it still
        // applies what follows.
        tracing::error!(
            from = start,
            to = first - 1,
            "the stream no longer holds messages this edge has not applied (removed by \
             its retention limits): rows they changed are missing or stale here"
        );
    }
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: format!("{SUBJECT_PREFIX}.>"),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    debug!(start, "consuming");
    // Nothing to replay: the store is at the stream's end already.
    let mut pending_zero = start > stream.cached_info().state.last_sequence;
    if pending_zero {
        shared.caught_up(now_micros());
    }
    loop {
        let next = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            n = tokio::time::timeout(IDLE, messages.next()) => n,
        };
        let msg = match next {
            Err(_idle) => {
                if pending_zero {
                    shared.caught_up(now_micros());
                }
                continue;
            }
            Ok(None) => return Err("consumer stream ended".into()),
            Ok(Some(Err(e))) => return Err(e.to_string()),
            Ok(Some(Ok(m))) => m,
        };
        // Whatever else is already here joins this message in one store commit.
        let mut msgs = vec![msg];
        let mut ended = None;
        while msgs.len() < MAX_BATCH {
            match messages.next().now_or_never() {
                None => break,
                Some(Some(Ok(m))) => msgs.push(m),
                Some(Some(Err(e))) => {
                    ended = Some(e.to_string());
                    break;
                }
                Some(None) => {
                    ended = Some("consumer stream ended".into());
                    break;
                }
            }
        }
        let mut batch = Vec::with_capacity(msgs.len());
        let mut pending = 0;
        for m in &msgs {
            let info = m.info().map_err(|e| e.to_string())?;
            let seq = info.stream_sequence;
            match Transaction::decode(&m.payload) {
                Ok(t) => {
                    pending = info.pending;
                    batch.push((seq, t));
                }
                Err(e) => {
                    // A message this edge cannot read is an operator problem: stop
                    // at it rather than skip it (the cursor stays before it).
                    ended = Some(format!("undecodable message at stream seq {seq}: {e}"));
                    break;
                }
            }
        }
        drop(msgs);
        if !batch.is_empty() {
            let s = shared.clone();
            let (results, batch) = tokio::task::spawn_blocking(move || {
                let refs: Vec<(u64, &Transaction)> = batch.iter().map(|(q, t)| (*q, t)).collect();
                s.store.apply_batch(&refs, now_micros()).map(|r| (r, batch))
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
            let done = now_micros();
            crate::metrics::batch(&shared.name, results.len());
            for ((applied, c), (seq, txn)) in results.into_iter().zip(batch) {
                debug!(seq, shard = %txn.shard, lsn = %format_lsn(txn.commit_lsn), ?applied, "applied");
                let lag = done - txn.commit_time_micros;
                crate::metrics::consumed(&shared.name, &txn.shard, &applied, lag);
                if let Applied::Applied { .. } = applied {
                    shared.record_lag(lag);
                    shared.cursors.send_modify(|m| {
                        m.insert(txn.shard.clone(), c);
                    });
                    shared.advance_to_heartbeat(&txn.shard);
                }
            }
        }
        if let Some(e) = ended {
            return Err(e);
        }
        pending_zero = pending == 0;
        if pending_zero {
            shared.caught_up(now_micros());
        }
    }
}
