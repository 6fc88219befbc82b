//! The range-map cache: the catalog's map in an `ArcSwap`, refreshed by a task that
//! LISTENs on `shardline_map` (reconnecting with backoff), periodically, and on
//! demand after fencing errors. A `watch` channel publishes the map epoch so held
//! requests wake up the moment the map flips. While the catalog is down the last
//! map keeps serving.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use futures_util::StreamExt;
use shardline_core::RangeMap;
use shardline_core::catalog;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::pools::ShardPools;

#[derive(Debug, thiserror::Error)]
pub enum MapError {
    #[error("loading the range map from the catalog failed: {0}")]
    Catalog(#[from] catalog::CatalogError),
}

/// The cached map plus what is needed to refresh it.
#[derive(Debug)]
pub struct MapCache {
    current: ArcSwapOption<RangeMap>,
    epoch_tx: watch::Sender<i64>,
    catalog: PgPool,
    pools: Arc<ShardPools>,
    refresh_lock: tokio::sync::Mutex<()>,
    /// Bumped by every completed refresh (coalesces concurrent refreshes).
    generation: AtomicU64,
}

impl MapCache {
    pub fn new(catalog: PgPool, pools: Arc<ShardPools>) -> Self {
        let (epoch_tx, _) = watch::channel(0);
        MapCache {
            current: ArcSwapOption::empty(),
            epoch_tx,
            catalog,
            pools,
            refresh_lock: tokio::sync::Mutex::new(()),
            generation: AtomicU64::new(0),
        }
    }

    /// The current map, if one was ever loaded.
    pub fn current(&self) -> Option<Arc<RangeMap>> {
        self.current.load_full()
    }

    pub fn epoch(&self) -> i64 {
        self.current.load().as_ref().map_or(0, |m| m.epoch())
    }

    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.epoch_tx.subscribe()
    }

    /// Reload shards and ranges from the catalog. Concurrent callers share one
    /// reload: a caller that waited for a reload that started after it asked returns
    /// that reload's result without querying again.
    pub async fn refresh(&self) -> Result<Arc<RangeMap>, MapError> {
        let asked_at = self.generation.load(Ordering::Acquire);
        let _guard = self.refresh_lock.lock().await;
        if self.generation.load(Ordering::Acquire) != asked_at
            && let Some(map) = self.current()
        {
            return Ok(map);
        }
        let started = Instant::now();
        let result = self.load().await;
        self.generation.fetch_add(1, Ordering::AcqRel);
        metrics::histogram!("shardline_router_map_refresh_seconds")
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(map) => {
                metrics::counter!("shardline_router_map_refreshes_total", "result" => "ok")
                    .increment(1);
                Ok(map)
            }
            Err(e) => {
                metrics::counter!("shardline_router_map_refreshes_total", "result" => "error")
                    .increment(1);
                Err(e)
            }
        }
    }

    async fn load(&self) -> Result<Arc<RangeMap>, MapError> {
        let shards = catalog::list_shards(&self.catalog).await?;
        for e in self.pools.sync(&shards) {
            tracing::error!(error = %e, "shard pool not built");
        }
        let map = Arc::new(catalog::load_range_map(&self.catalog).await?);
        let installed = match self.current() {
            // Never go back to an older map (a slow reload racing a newer one).
            Some(old) if old.epoch() > map.epoch() => old,
            _ => {
                self.current.store(Some(map.clone()));
                map
            }
        };
        let epoch = installed.epoch();
        metrics::gauge!("shardline_router_map_epoch").set(epoch as f64);
        self.epoch_tx.send_if_modified(|e| {
            let changed = *e != epoch;
            *e = epoch;
            changed
        });
        Ok(installed)
    }

    /// Wait until the map epoch differs from `epoch` or `deadline` passes; returns
    /// whether it changed.
    pub async fn wait_for_change(&self, epoch: i64, deadline: Instant) -> bool {
        let mut rx = self.subscribe();
        let wait = rx.wait_for(|e| *e != epoch);
        matches!(
            tokio::time::timeout_at(deadline.into(), wait).await,
            Ok(Ok(_))
        )
    }
}

/// Periodic refresh until shutdown.
pub async fn refresh_periodically(
    cache: Arc<MapCache>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = cache.refresh().await {
            tracing::warn!(error = %e, "periodic map refresh failed; serving the cached map");
        }
    }
}

/// LISTEN `shardline_map` on a dedicated catalog connection and refresh on every
/// notification; reconnect with exponential backoff (100 ms .. 5 s). Each
/// (re)connection refreshes once, to catch changes missed while disconnected.
pub async fn listen(cache: Arc<MapCache>, catalog_url: String, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let started = Instant::now();
        tokio::select! {
            () = shutdown.cancelled() => return,
            r = listen_once(&cache, &catalog_url) => {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "map listener disconnected");
                }
            }
        }
        if started.elapsed() > Duration::from_secs(30) {
            backoff = Duration::from_millis(100);
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn listen_once(cache: &MapCache, url: &str) -> Result<(), tokio_postgres::Error> {
    let (client, mut conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(msg) = messages.next().await {
            match msg {
                Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                    if tx.send(n.payload().to_owned()).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    });
    client.batch_execute("LISTEN shardline_map").await?;
    tracing::debug!("listening for range map changes");
    if let Err(e) = cache.refresh().await {
        tracing::warn!(error = %e, "map refresh after LISTEN failed");
    }
    while let Some(payload) = rx.recv().await {
        let announced: i64 = payload.parse().unwrap_or(i64::MAX);
        if announced <= cache.epoch() {
            continue;
        }
        if let Err(e) = cache.refresh().await {
            tracing::warn!(error = %e, "map refresh after notification failed");
        }
    }
    drop(client);
    match driver.await {
        Ok(r) => r,
        Err(_) => Ok(()),
    }
}
