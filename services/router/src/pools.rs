//! One deadpool-postgres pool per shard, keyed by shard id, built from the catalog's
//! `shards.dsn` and rebuilt when a DSN changes. Statements are prepared per
//! connection and cached (`prepare_cached`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use shardline_core::ShardId;
use shardline_core::catalog::ShardRow;
use tokio_postgres::NoTls;

/// A shard's pool and the DSN it was built from.
#[derive(Clone)]
pub struct ShardPool {
    pub dsn: String,
    pub pool: Pool,
}

impl std::fmt::Debug for ShardPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The DSN may hold a password: never print it.
        f.debug_struct("ShardPool")
            .field("status", &self.pool.status())
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("shard {shard} has an invalid DSN: {message}")]
    BadDsn { shard: String, message: String },
    #[error("cannot build the pool of shard {shard}: {message}")]
    Build { shard: String, message: String },
}

/// The pools of every shard the catalog lists.
#[derive(Debug)]
pub struct ShardPools {
    pools: ArcSwap<HashMap<ShardId, ShardPool>>,
    size: usize,
    update: std::sync::Mutex<()>,
}

impl ShardPools {
    pub fn new(size: usize) -> Self {
        ShardPools {
            pools: ArcSwap::from_pointee(HashMap::new()),
            size,
            update: std::sync::Mutex::new(()),
        }
    }

    pub fn get(&self, shard: &ShardId) -> Option<Pool> {
        self.pools.load().get(shard).map(|p| p.pool.clone())
    }

    pub fn snapshot(&self) -> Arc<HashMap<ShardId, ShardPool>> {
        self.pools.load_full()
    }

    /// Make the pools match the catalog's shard list: build pools for new shards or
    /// changed DSNs, drop pools of shards that disappeared. Bad rows are skipped (and
    /// reported) so one broken DSN cannot take the others down.
    pub fn sync(&self, shards: &[ShardRow]) -> Vec<PoolError> {
        let _guard = self.update.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.pools.load_full();
        let mut next = HashMap::with_capacity(shards.len());
        let mut errors = Vec::new();
        let mut changed = current.len() != shards.len();
        for row in shards {
            let Ok(id) = row.id.parse::<ShardId>() else {
                errors.push(PoolError::BadDsn {
                    shard: row.id.clone(),
                    message: "invalid shard id".into(),
                });
                continue;
            };
            if let Some(existing) = current.get(&id)
                && existing.dsn == row.dsn
            {
                next.insert(id, existing.clone());
                continue;
            }
            changed = true;
            match build_pool(&row.id, &row.dsn, self.size) {
                Ok(pool) => {
                    next.insert(
                        id,
                        ShardPool {
                            dsn: row.dsn.clone(),
                            pool,
                        },
                    );
                }
                Err(e) => errors.push(e),
            }
        }
        if changed {
            self.pools.store(Arc::new(next));
        }
        errors
    }

    /// Close every pool (shutdown).
    pub fn close(&self) {
        for p in self.pools.load().values() {
            p.pool.close();
        }
    }
}

/// A pool for one shard: connections are made lazily, fail fast when the shard is
/// down (so callers get 503 quickly) and are checked with `is_closed` on reuse.
pub fn build_pool(shard: &str, dsn: &str, size: usize) -> Result<Pool, PoolError> {
    let mut pg: tokio_postgres::Config =
        dsn.parse()
            .map_err(|e: tokio_postgres::Error| PoolError::BadDsn {
                shard: shard.to_owned(),
                message: e.to_string(),
            })?;
    pg.application_name("shardline-router");
    pg.connect_timeout(Duration::from_secs(3));
    let mgr = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(mgr)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(5)))
        .create_timeout(Some(Duration::from_secs(3)))
        .recycle_timeout(Some(Duration::from_secs(3)))
        .build()
        .map_err(|e| PoolError::Build {
            shard: shard.to_owned(),
            message: e.to_string(),
        })
}
