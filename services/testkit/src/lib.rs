//! Test support shared by the service crates' integration tests: a catalog cluster
//! and N shard clusters (real PostgreSQL via devkit), migrated and seeded with an
//! even map and an admin key; an in-process router and helpers to call it; ledger
//! invariant checks. Never used by production code.

// Fixtures hold handles (routers, pools) that are not all Debug; nothing here is
// printed.
#![allow(missing_debug_implementations)]

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use shardline_core::api_keys::{self, Scope};
use shardline_core::migrations::{self, Schema};
use shardline_core::{ShardId, catalog, shard};
use shardline_devkit::{PgCluster, PgOptions};
use shardline_router::{AppState, Config};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

pub struct Cluster {
    pub catalog: PgCluster,
    pub catalog_url: String,
    pub catalog_pool: PgPool,
    pub shards: Vec<PgCluster>,
    pub shard_pools: Vec<(ShardId, PgPool)>,
    pub admin_key: String,
}

async fn pool(url: &str) -> PgPool {
    PgPoolOptions::new()
        .max_connections(4)
        .connect(url)
        .await
        .expect("connect")
}

impl Cluster {
    pub async fn start(n: usize) -> Cluster {
        let starts = (0..=n).map(|_| PgCluster::start_temp(PgOptions::default()));
        let mut clusters = futures_util::future::try_join_all(starts)
            .await
            .expect("start postgres");
        let catalog = clusters.remove(0);
        catalog.create_database("catalog").await.expect("db");
        let catalog_url = catalog.url("catalog");
        let catalog_pool = pool(&catalog_url).await;
        migrations::run(&catalog_pool, Schema::Catalog)
            .await
            .expect("migrate catalog");
        let mut shard_pools = Vec::new();
        for (i, c) in clusters.iter().enumerate() {
            c.create_database("shard").await.expect("db");
            let url = c.url("shard");
            let p = pool(&url).await;
            migrations::run(&p, Schema::Shard)
                .await
                .expect("migrate shard");
            let id: ShardId = format!("s{}", i + 1).parse().unwrap();
            catalog::upsert_shard(&catalog_pool, &id, &url)
                .await
                .expect("register");
            shard_pools.push((id, p));
        }
        let ids: Vec<ShardId> = shard_pools.iter().map(|(id, _)| id.clone()).collect();
        catalog::seed_even(&catalog_pool, &ids, 2)
            .await
            .expect("seed");
        let ranges = catalog::list_ranges(&catalog_pool).await.expect("ranges");
        for (id, p) in &shard_pools {
            shard::seed_owned_ranges(p, id.as_str(), &ranges)
                .await
                .expect("owned");
        }
        let admin_key = api_keys::create(&catalog_pool, "test-admin", &Scope::Admin)
            .await
            .expect("key")
            .token;
        Cluster {
            catalog,
            catalog_url,
            catalog_pool,
            shards: clusters,
            shard_pools,
            admin_key,
        }
    }

    pub fn config(&self) -> Config {
        let mut c = Config::new(self.catalog_url.clone());
        c.shard_pool_size = 8;
        c
    }

    /// A router (state + app) with its background tasks running until `shutdown`.
    pub async fn router(&self, config: Config, shutdown: &CancellationToken) -> Router {
        let state = AppState::new(config).await.expect("router state");
        state.spawn_background(shutdown);
        Router {
            app: shardline_router::app(state.clone()),
            state,
            key: self.admin_key.clone(),
        }
    }

    pub fn shard(&self, id: &str) -> &PgPool {
        &self
            .shard_pools
            .iter()
            .find(|(s, _)| s.as_str() == id)
            .expect("shard")
            .1
    }

    /// The shard owning `merchant` according to the catalog, and the range id.
    pub async fn owner(&self, merchant: &str) -> (String, i64) {
        let map = catalog::load_range_map(&self.catalog_pool).await.unwrap();
        let r = map.lookup_merchant(&merchant.parse().unwrap());
        (r.shard.to_string(), r.id)
    }

    /// Count rows of `table` for `merchant` on shard `id`.
    pub async fn count(&self, id: &str, table: &str, merchant: &str) -> i64 {
        let q = format!("SELECT count(*) FROM {table} WHERE merchant_id = $1::uuid");
        let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(q))
            .bind(merchant)
            .fetch_one(self.shard(id))
            .await
            .unwrap();
        n
    }
}

#[derive(Clone)]
pub struct Router {
    pub app: axum::Router,
    pub state: AppState,
    pub key: String,
}

#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Resp {
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }

    pub fn is_problem(&self) -> bool {
        self.headers
            .get("content-type")
            .is_some_and(|v| v == "application/problem+json")
            && self.body["status"].as_u64() == Some(u64::from(self.status.as_u16()))
            && self.body["type"].is_string()
            && self.body["title"].is_string()
            && self.body["detail"].is_string()
    }
}

/// A request built by the test.
pub struct Call<'a> {
    pub method: Method,
    pub uri: String,
    pub key: Option<&'a str>,
    pub idem: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub body: Option<Vec<u8>>,
}

impl Router {
    pub async fn send(&self, c: Call<'_>) -> Resp {
        let mut b = Request::builder().method(c.method).uri(c.uri);
        if let Some(k) = c.key {
            b = b.header("authorization", format!("Bearer {k}"));
        }
        if let Some(i) = c.idem {
            b = b.header("idempotency-key", i);
        }
        if let Some(ct) = c.content_type {
            b = b.header("content-type", ct);
        }
        let req = b.body(Body::from(c.body.unwrap_or_default())).unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(30), self.app.clone().oneshot(req))
            .await
            .expect("request timed out")
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Resp {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, uri: &str) -> Resp {
        self.send(Call {
            method: Method::GET,
            uri: uri.into(),
            key: Some(&self.key),
            idem: None,
            content_type: None,
            body: None,
        })
        .await
    }

    pub async fn post(&self, uri: &str, idem: Option<&str>, body: Value) -> Resp {
        self.send(Call {
            method: Method::POST,
            uri: uri.into(),
            key: Some(&self.key),
            idem,
            content_type: Some("application/json"),
            body: Some(serde_json::to_vec(&body).unwrap()),
        })
        .await
    }

    pub async fn merchant(&self, currency: &str) -> String {
        let r = self
            .post(
                "/v1/merchants",
                None,
                serde_json::json!({"name": "Acme", "default_currency": currency}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
        r.body["id"].as_str().unwrap().to_owned()
    }

    pub async fn authorize(&self, m: &str, amount: &str, currency: &str, idem: &str) -> Resp {
        self.post(
            &format!("/v1/merchants/{m}/payments"),
            Some(idem),
            serde_json::json!({"amount": amount, "currency": currency}),
        )
        .await
    }
}

/// Every journal sums to zero per currency, and balances equal the ledger sums per
/// (merchant, currency, account), on every shard.
pub async fn assert_ledger_consistent(c: &Cluster) {
    for (id, p) in &c.shard_pools {
        let (unbalanced,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM (SELECT journal_id, currency FROM ledger_entries
               GROUP BY journal_id, currency HAVING sum(amount) <> 0) x",
        )
        .fetch_one(p)
        .await
        .unwrap();
        assert_eq!(unbalanced, 0, "unbalanced journals on {id}");
        let (mismatched,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM (
               SELECT merchant_id, currency, account, sum(amount) AS s FROM ledger_entries
                GROUP BY 1, 2, 3) l
             FULL JOIN balances b USING (merchant_id, currency, account)
             WHERE coalesce(l.s, 0) <> coalesce(b.amount, 0)",
        )
        .fetch_one(p)
        .await
        .unwrap();
        assert_eq!(mismatched, 0, "balances differ from ledger sums on {id}");
    }
}
