//! A throwaway cluster for benchmarks: catalog + N shard clusters (devkit, temp
//! directories), migrated, registered, an even range map seeded on both sides, an
//! admin key, and the router serving on a free port.

use std::net::SocketAddr;

use shardline_core::api_keys::{self, Scope};
use shardline_core::migrations::{self, Schema};
use shardline_core::money::Currency;
use shardline_core::{MerchantId, ShardId, catalog, shard};
use shardline_devkit::{PgCluster, PgOptions};
use shardline_router::payments::Op;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The clusters (stopped on drop) and a running router.
#[derive(Debug)]
pub struct BenchCluster {
    pub catalog_url: String,
    pub catalog: PgPool,
    /// (id, url) per shard.
    pub shards: Vec<(ShardId, String)>,
    pub key: String,
    pub router_addr: SocketAddr,
    pub router_state: shardline_router::AppState,
    shutdown: CancellationToken,
    serving: Option<JoinHandle<Result<(), shardline_router::RouterError>>>,
    _clusters: Vec<PgCluster>,
}

impl BenchCluster {
    pub async fn start(
        shards: u32,
        ranges_per_shard: u32,
        router_pool_size: usize,
    ) -> anyhow::Result<Self> {
        let starts = (0..=shards).map(|_| PgCluster::start_temp(PgOptions::default()));
        let mut clusters = futures_util::future::try_join_all(starts).await?;
        let catalog_cluster = clusters.remove(0);
        catalog_cluster.create_database("catalog").await?;
        let catalog_url = catalog_cluster.url("catalog");
        let cat = PgPoolOptions::new()
            .max_connections(4)
            .connect(&catalog_url)
            .await?;
        migrations::run(&cat, Schema::Catalog).await?;
        let mut ids = Vec::new();
        let mut pools = Vec::new();
        for (i, c) in clusters.iter().enumerate() {
            c.create_database("shard").await?;
            let url = c.url("shard");
            let p = PgPoolOptions::new()
                .max_connections(1)
                .connect(&url)
                .await?;
            migrations::run(&p, Schema::Shard).await?;
            let id: ShardId = format!("s{}", i + 1).parse()?;
            catalog::upsert_shard(&cat, &id, &url).await?;
            ids.push((id, url));
            pools.push(p);
        }
        let shard_ids: Vec<ShardId> = ids.iter().map(|(id, _)| id.clone()).collect();
        catalog::seed_even(&cat, &shard_ids, ranges_per_shard).await?;
        let ranges = catalog::list_ranges(&cat).await?;
        for ((id, _), p) in ids.iter().zip(&pools) {
            shard::seed_owned_ranges(p, id.as_str(), &ranges).await?;
            p.close().await;
        }
        let key = api_keys::create(&cat, "bench", &Scope::Admin).await?.token;

        let mut config = shardline_router::Config::new(catalog_url.clone());
        config.listen = "127.0.0.1:0".parse()?;
        config.shard_pool_size = router_pool_size;
        config.router_id = "bench-router".into();
        let server = shardline_router::Server::bind(config).await?;
        let router_addr = server.local_addr();
        let router_state = server.state().clone();
        let shutdown = CancellationToken::new();
        let serving = tokio::spawn(server.serve(shutdown.clone()));
        clusters.insert(0, catalog_cluster);
        Ok(BenchCluster {
            catalog_url,
            catalog: cat,
            shards: ids,
            key,
            router_addr,
            router_state,
            shutdown,
            serving: Some(serving),
            _clusters: clusters,
        })
    }

    /// `n` merchants created through the router's own routing (no HTTP).
    pub async fn merchants(&self, n: usize) -> anyhow::Result<Vec<MerchantId>> {
        let mut merchants = Vec::with_capacity(n);
        for i in 0..n {
            let m = MerchantId::new();
            let op = Op::CreateMerchant {
                name: format!("bench merchant {i}"),
                currency: Currency::USD,
            };
            shardline_router::routing::route(&self.router_state, m, &op, 0)
                .await
                .map_err(|e| anyhow::anyhow!("creating merchants: {e}"))?;
            merchants.push(m);
        }
        Ok(merchants)
    }

    /// Stop the router, then the clusters.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(s) = self.serving.take() {
            let _ = s.await;
        }
        self.catalog.close().await;
    }
}
