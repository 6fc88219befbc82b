//! Move-specific checks on top of the shared fixture (`shardline-testkit`: real
//! catalog + shard clusters and an in-process router).

#![allow(dead_code)]

pub use shardline_testkit::*;

use std::collections::HashMap;

use sqlx::PgPool;

/// Rows of `[start, end)` on a shard, all data tables.
pub async fn range_rows(p: &PgPool, start: i64, end: i64) -> i64 {
    shardline_rebalancer::repl::range_row_count(p, start, end)
        .await
        .unwrap()
}

/// The catalog and `owner` hold range `range_id` active; `other` holds nothing
/// of it (no owned range, no rows); no move object is left on any shard and the
/// ledger balances everywhere.
pub async fn assert_owned_only_by(c: &Cluster, range_id: i64, owner: &str, other: &str) {
    let (start, end, cat_owner, state) = range(c, range_id).await;
    assert_eq!((cat_owner.as_str(), state.as_str()), (owner, "active"));
    assert_eq!(
        owned_state(c.shard(owner), range_id).await.as_deref(),
        Some("active")
    );
    assert_eq!(owned_state(c.shard(other), range_id).await, None);
    assert_eq!(range_rows(c.shard(other), start, end).await, 0);
    assert_no_move_objects(c).await;
    assert_ledger_consistent(c).await;
}

/// A move of `range_id` to `target`, planned and driven by a fresh engine with
/// `cfg` on a task: (engine, move id, the task's outcome).
pub async fn spawn_move(
    c: &Cluster,
    cfg: shardline_rebalancer::Config,
    range_id: i64,
    target: &str,
) -> (
    std::sync::Arc<shardline_rebalancer::Engine>,
    uuid::Uuid,
    tokio::task::JoinHandle<shardline_rebalancer::Result<shardline_rebalancer::MoveState>>,
) {
    let engine = std::sync::Arc::new(
        shardline_rebalancer::Engine::new(c.catalog_pool.clone(), cfg)
            .await
            .unwrap(),
    );
    let id = engine
        .plan_move(
            shardline_rebalancer::Subject::Range(range_id),
            target,
            "test",
        )
        .await
        .unwrap();
    let run = tokio::spawn({
        let engine = engine.clone();
        async move { engine.run_move(id).await }
    });
    (engine, id, run)
}

/// The `to_state` of every event of move `id`, in order.
pub async fn move_states(c: &Cluster, id: uuid::Uuid) -> Vec<String> {
    sqlx::query_scalar("SELECT to_state FROM move_events WHERE move_id = $1 ORDER BY id")
        .bind(id)
        .fetch_all(&c.catalog_pool)
        .await
        .unwrap()
}

/// No `sl_mv_%` publication, slot, subscription or origin (nor a table-sync slot)
/// is left on any shard.
pub async fn assert_no_move_objects(c: &Cluster) {
    for (id, p) in &c.shard_pools {
        let (pubs, slots, subs, origins) = shardline_rebalancer::repl::list_move_objects(p)
            .await
            .unwrap();
        assert!(
            pubs.is_empty() && slots.is_empty() && subs.is_empty() && origins.is_empty(),
            "leftover move objects on {id}: {pubs:?} {slots:?} {subs:?} {origins:?}"
        );
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM pg_replication_slots")
            .fetch_one(p)
            .await
            .unwrap();
        assert_eq!(n, 0, "leftover replication slots on {id}");
        let logs = shardline_rebalancer::repl::list_change_logs(p)
            .await
            .unwrap();
        assert!(
            logs.is_empty(),
            "leftover move change logs on {id}: {logs:?}"
        );
    }
}

/// (start, end, owner) of a catalog range.
pub async fn range(c: &Cluster, id: i64) -> (i64, i64, String, String) {
    sqlx::query_as("SELECT start_key, end_key, shard_id, state FROM ranges WHERE id = $1")
        .bind(id)
        .fetch_one(&c.catalog_pool)
        .await
        .unwrap()
}

/// The state of owned range `id` on a shard (None: not owned).
pub async fn owned_state(p: &PgPool, id: i64) -> Option<String> {
    sqlx::query_scalar("SELECT state FROM owned_ranges WHERE id = $1")
        .bind(id)
        .fetch_optional(p)
        .await
        .unwrap()
}

pub fn engine_config(c: &Cluster) -> shardline_rebalancer::Config {
    shardline_rebalancer::Config::new(c.catalog_url.clone())
}

/// A fail point (`fail::cfg_callback`) that holds the engine the first time it is
/// reached, until the test releases it (or drops the gate). The engine evaluates
/// fail points on a blocking thread, so only the move waits.
pub struct Gate {
    name: &'static str,
    reached: tokio::sync::mpsc::UnboundedReceiver<()>,
    release: Option<std::sync::mpsc::Sender<()>>,
}

impl Gate {
    pub fn new(name: &'static str) -> Gate {
        let (reached_tx, reached) = tokio::sync::mpsc::unbounded_channel();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = std::sync::Mutex::new(release_rx);
        let first = std::sync::atomic::AtomicBool::new(true);
        fail::cfg_callback(name, move || {
            if first.swap(false, std::sync::atomic::Ordering::SeqCst) {
                let _ = reached_tx.send(());
                let _ = release_rx.lock().unwrap().recv();
            }
        })
        .unwrap();
        Gate {
            name,
            reached,
            release: Some(release),
        }
    }

    /// Wait (bounded) until the engine is held at the fail point.
    pub async fn reached(&mut self) {
        tokio::time::timeout(std::time::Duration::from_secs(120), self.reached.recv())
            .await
            .unwrap_or_else(|_| panic!("fail point {} not reached", self.name));
    }

    /// Let the engine go on; the fail point is removed.
    pub fn release(&mut self) {
        fail::remove(self.name);
        self.release.take();
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.release();
    }
}

/// What a client was told about a payment it created.
#[derive(Debug, Clone)]
pub struct Acked {
    pub merchant: String,
    pub captured: bool,
    pub refunds: u32,
}

/// Every acknowledged payment exists exactly once among the payments of
/// `[start, end)` on `p`, as acknowledged (merchant, status, refund count), and
/// nothing else does.
pub async fn assert_payments_as_acked(
    p: &PgPool,
    start: i64,
    end: i64,
    acked: &HashMap<String, Acked>,
    owner: &str,
) {
    let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
        "SELECT p.payment_id::text, p.merchant_id::text, p.status,
                (SELECT count(*) FROM refunds f WHERE f.shard_key = p.shard_key
                    AND f.merchant_id = p.merchant_id AND f.payment_id = p.payment_id)
           FROM payments p WHERE p.shard_key >= $1 AND p.shard_key < $2",
    )
    .bind(start)
    .bind(end)
    .fetch_all(p)
    .await
    .unwrap();
    let mut seen: HashMap<String, (String, String, i64)> = HashMap::new();
    for (pid, m, status, refunds) in rows {
        assert!(
            seen.insert(pid.clone(), (m, status, refunds)).is_none(),
            "duplicate {pid}"
        );
    }
    assert_eq!(
        seen.len(),
        acked.len(),
        "payments on {owner} vs acknowledged"
    );
    for (pid, a) in acked {
        let (m, status, refunds) = seen
            .get(pid)
            .unwrap_or_else(|| panic!("lost payment {pid}"));
        assert_eq!(m, &a.merchant);
        assert_eq!(*refunds, i64::from(a.refunds), "refunds of {pid}");
        let want = match (a.captured, a.refunds) {
            (false, _) => "authorized",
            (true, 0) => "captured",
            (true, _) => "partially_refunded",
        };
        assert_eq!(status, want, "status of {pid}");
    }
}
