//! Replicator heartbeats (core NATS `shardline.hb.<shard>`, see
//! `shardline_replicator::wire::Heartbeat`): "the shard's WAL is read up to
//! `position`; the last published transaction is `prev_commit_lsn`".
//!
//! A router's `Shardline-Token` is the shard's flush LSN right after its commit,
//! which can lie beyond the commit record (other WAL: unpublished tables, move
//! cleanup under a replication origin, checkpoints). Without heartbeats an edge
//! only learns positions from the next published transaction, so on a quiet
//! shard a `Shardline-Min-Token` read would wait for the next write or time out.
//! Once the edge has applied `prev_commit_lsn`, it has everything up to
//! `position` and its cursor's end LSN (what Min-Token waits for) moves there.
//! A heartbeat heard before the edge caught up is kept and used when it does.
//! The advanced end LSN lives in memory only: the next applied transaction ends
//! beyond it, and after a restart the replicator's next heartbeat repeats it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use shardline_replicator::HEARTBEAT_PREFIX;
use shardline_replicator::wire::Heartbeat;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::Shared;
use crate::store::Cursor;

/// The latest heartbeat heard per shard.
#[derive(Debug, Default)]
pub struct Heard(Mutex<HashMap<String, Heartbeat>>);

impl Shared {
    /// Remember `hb` (if newer than the one held) and advance its shard's cursor.
    pub fn hear(&self, hb: Heartbeat) {
        let shard = hb.shard.clone();
        if let Ok(mut m) = self.heard.0.lock() {
            match m.get(&shard) {
                Some(old)
                    if old.position >= hb.position && old.prev_commit_lsn >= hb.prev_commit_lsn => {
                }
                _ => {
                    m.insert(shard.clone(), hb);
                }
            }
        }
        self.advance_to_heartbeat(&shard);
    }

    /// Move `shard`'s end LSN to its heartbeat's position when the edge has
    /// applied the heartbeat's previous commit (called after every apply too).
    pub fn advance_to_heartbeat(&self, shard: &str) {
        let Some(hb) = self.heard.0.lock().ok().and_then(|m| m.get(shard).cloned()) else {
            return;
        };
        self.cursors.send_if_modified(|m| {
            let applied = m.get(shard).map_or(0, |c| c.commit_lsn);
            if applied != hb.prev_commit_lsn {
                return false;
            }
            let c = m.entry(shard.to_owned()).or_insert_with(Cursor::default);
            if hb.position <= c.end_lsn {
                return false;
            }
            c.end_lsn = hb.position;
            true
        });
    }
}

/// Listen to every shard's heartbeats until `shutdown` (resubscribing after a
/// failure; the client reconnects by itself).
pub async fn listen(shared: Arc<Shared>, client: async_nats::Client, shutdown: CancellationToken) {
    loop {
        match client.subscribe(format!("{HEARTBEAT_PREFIX}.>")).await {
            Ok(mut sub) => loop {
                let msg = tokio::select! {
                    () = shutdown.cancelled() => return,
                    m = sub.next() => m,
                };
                let Some(msg) = msg else { break };
                match Heartbeat::decode(&msg.payload) {
                    Ok(hb) => {
                        debug!(shard = %hb.shard, position = hb.position, "heartbeat");
                        shared.hear(hb);
                    }
                    Err(e) => {
                        warn!(subject = %msg.subject, error = %e, "undecodable heartbeat ignored")
                    }
                }
            },
            Err(e) => warn!(error = %e, "heartbeat subscription failed"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
        }
    }
}
