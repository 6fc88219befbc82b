//! Fixture: a catalog and N shards (real PostgreSQL), a real nats-server, one
//! replicator task per shard, an edge and an in-process router.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use shardline_core::api_keys::{self, Scope};
use shardline_core::migrations::{self, Schema};
use shardline_core::{ShardId, catalog, shard};
use shardline_devkit::{NatsOptions, NatsServer, PgCluster, PgOptions};
use shardline_edge::Edge;
use shardline_edge::store::{SEP, primary_key, row_key};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgPool, Row};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

pub const TABLES: [&str; 7] = shardline_replicator::TABLES;

pub struct Fixture {
    pub catalog: PgCluster,
    pub catalog_url: String,
    pub shards: Vec<(String, PgCluster, PgPool)>,
    pub nats: NatsServer,
    pub key: String,
    pub replicators: Vec<(CancellationToken, JoinHandle<()>)>,
    pub edge: Option<(CancellationToken, Edge)>,
    pub store_dir: tempfile::TempDir,
    pub router: axum::Router,
    pub router_shutdown: CancellationToken,
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl std::fmt::Debug for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?} {}", self.status, self.headers, self.body)
    }
}

pub async fn call(
    app: &axum::Router,
    method: Method,
    uri: &str,
    headers: &[(&str, String)],
    body: Option<Value>,
) -> Resp {
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, v);
    }
    if body.is_some() {
        b = b.header("content-type", "application/json");
    }
    let req = b
        .body(Body::from(
            body.map(|v| serde_json::to_vec(&v).unwrap())
                .unwrap_or_default(),
        ))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(30), app.clone().oneshot(req))
        .await
        .expect("request timed out")
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Resp {
        status,
        headers,
        body,
    }
}

impl Fixture {
    pub async fn start(n: usize) -> Fixture {
        let starts = (0..=n).map(|_| PgCluster::start_temp(PgOptions::default()));
        let mut clusters = futures_util::future::try_join_all(starts)
            .await
            .expect("start postgres");
        let catalog = clusters.remove(0);
        catalog.create_database("catalog").await.unwrap();
        let catalog_url = catalog.url("catalog");
        let catalog_pool = PgPoolOptions::new()
            .max_connections(2)
            .connect(&catalog_url)
            .await
            .unwrap();
        migrations::run(&catalog_pool, Schema::Catalog)
            .await
            .unwrap();
        let mut shards = Vec::new();
        for (i, c) in clusters.into_iter().enumerate() {
            c.create_database("shard").await.unwrap();
            let url = c.url("shard");
            let p = PgPoolOptions::new()
                .max_connections(2)
                .connect(&url)
                .await
                .unwrap();
            migrations::run(&p, Schema::Shard).await.unwrap();
            let id: ShardId = format!("s{}", i + 1).parse().unwrap();
            catalog::upsert_shard(&catalog_pool, &id, &url)
                .await
                .unwrap();
            shards.push((id.to_string(), c, p));
        }
        let ids: Vec<ShardId> = shards
            .iter()
            .map(|(id, _, _)| id.parse().unwrap())
            .collect();
        catalog::seed_even(&catalog_pool, &ids, 2).await.unwrap();
        let ranges = catalog::list_ranges(&catalog_pool).await.unwrap();
        for (id, _, p) in &shards {
            shard::seed_owned_ranges(p, id, &ranges).await.unwrap();
        }
        let key = api_keys::create(&catalog_pool, "edge-test", &Scope::Admin)
            .await
            .unwrap()
            .token;
        let nats = NatsServer::start_temp(NatsOptions::default())
            .await
            .unwrap();
        let mut config = shardline_router::Config::new(catalog_url.clone());
        config.shard_pool_size = 4;
        let router_shutdown = CancellationToken::new();
        let state = shardline_router::AppState::new(config).await.unwrap();
        state.spawn_background(&router_shutdown);
        let router = shardline_router::app(state);
        let mut f = Fixture {
            catalog,
            catalog_url,
            shards,
            nats,
            key,
            replicators: Vec::new(),
            edge: None,
            store_dir: tempfile::tempdir().unwrap(),
            router,
            router_shutdown,
        };
        for i in 0..n {
            let r = f.spawn_replicator(i);
            f.replicators.push(r);
        }
        // Slots must exist before the first write we expect to see.
        for (id, _, p) in &f.shards {
            wait_until(Duration::from_secs(30), || async {
                let (n,): (i64,) = sqlx::query_as(
                    "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1",
                )
                .bind(format!("shardline_cdc_{id}"))
                .fetch_one(p)
                .await
                .unwrap();
                n == 1
            })
            .await;
        }
        f.start_edge().await;
        f
    }

    pub fn spawn_replicator(&self, i: usize) -> (CancellationToken, JoinHandle<()>) {
        let (id, c, _) = &self.shards[i];
        let config = shardline_replicator::Config::new(id.clone(), c.url("shard"), self.nats.url());
        let token = CancellationToken::new();
        let t = token.clone();
        let h = tokio::spawn(async move {
            if let Err(e) = shardline_replicator::run(config, t).await {
                panic!("replicator failed: {e}");
            }
        });
        (token, h)
    }

    /// Kill (abort) replicator `i` and start a new one.
    pub async fn restart_replicator(&mut self, i: usize, down_for: Duration) {
        let (_, h) = &self.replicators[i];
        h.abort();
        tokio::time::sleep(down_for).await;
        let r = self.spawn_replicator(i);
        self.replicators[i] = r;
    }

    /// Unique per fixture: tests of one binary share the process metrics registry.
    pub fn edge_name(&self) -> String {
        let dir = self.store_dir.path().file_name().unwrap_or_default();
        format!("edge-{}", dir.to_string_lossy())
    }

    pub fn store_path(&self) -> PathBuf {
        self.store_dir.path().join("edge.redb")
    }

    pub async fn start_edge(&mut self) {
        let mut config = shardline_edge::Config::new(
            self.nats.url(),
            self.store_path(),
            self.catalog_url.clone(),
        );
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.name = self.edge_name();
        let token = CancellationToken::new();
        let edge = Edge::start(config, token.clone()).await.expect("edge");
        self.edge = Some((token, edge));
    }

    pub async fn stop_edge(&mut self) {
        if let Some((token, edge)) = self.edge.take() {
            token.cancel();
            edge.join().await.expect("edge ended with an error");
        }
    }

    /// Crash the edge (tasks aborted mid-flight, no graceful shutdown).
    pub async fn kill_edge(&mut self) {
        if let Some((_token, edge)) = self.edge.take() {
            edge.kill().await;
        }
    }

    /// Stop the edge, the replicators and the router before the servers go (a
    /// connected walsender makes PostgreSQL's shutdown slow).
    pub async fn close(mut self) {
        self.stop_edge().await;
        for (token, h) in self.replicators.drain(..) {
            token.cancel();
            let _ = h.await;
        }
        self.router_shutdown.cancel();
    }

    pub fn edge(&self) -> &Edge {
        &self.edge.as_ref().expect("edge running").1
    }

    pub fn auth(&self) -> (&'static str, String) {
        ("authorization", format!("Bearer {}", self.key))
    }

    pub async fn router_post(&self, uri: &str, idem: &str, body: Value) -> Resp {
        call(
            &self.router,
            Method::POST,
            uri,
            &[self.auth(), ("idempotency-key", idem.to_owned())],
            Some(body),
        )
        .await
    }

    pub async fn router_get(&self, uri: &str) -> Resp {
        call(&self.router, Method::GET, uri, &[self.auth()], None).await
    }

    pub async fn edge_get(&self, uri: &str, min_token: Option<&str>) -> Resp {
        let mut h = vec![self.auth()];
        if let Some(t) = min_token {
            h.push(("shardline-min-token", t.to_owned()));
        }
        call(&self.edge().app, Method::GET, uri, &h, None).await
    }

    /// Every row of every table of every shard, as the edge keys and stores them
    /// (column name, text value), via `col::text` in the server's default time zone.
    pub async fn shard_rows(&self) -> BTreeMap<String, Vec<(String, Option<String>)>> {
        let mut out = BTreeMap::new();
        for (_, c, _) in &self.shards {
            let mut conn = sqlx::PgConnection::connect(&c.url("shard")).await.unwrap();
            sqlx::query("SET TimeZone TO DEFAULT")
                .execute(&mut conn)
                .await
                .unwrap();
            for table in TABLES {
                let cols: Vec<(String,)> = sqlx::query_as(
                    "SELECT column_name::text FROM information_schema.columns
                     WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
                )
                .bind(table)
                .fetch_all(&mut conn)
                .await
                .unwrap();
                let select = cols
                    .iter()
                    .map(|(c,)| format!("{c}::text"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let q = format!("SELECT {select} FROM {table}");
                let rows = sqlx::query(sqlx::AssertSqlSafe(q))
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
                for r in rows {
                    let values: Vec<(String, Option<String>)> = cols
                        .iter()
                        .enumerate()
                        .map(|(i, (c,))| (c.clone(), r.get::<Option<String>, _>(i)))
                        .collect();
                    let pk: Vec<&str> = primary_key(table)
                        .unwrap()
                        .iter()
                        .map(|k| {
                            values
                                .iter()
                                .find(|(n, _)| n == k)
                                .and_then(|(_, v)| v.as_deref())
                                .unwrap()
                        })
                        .collect();
                    out.insert(row_key(table, &pk), values);
                }
            }
        }
        out
    }

    /// Every live row on the edge.
    pub fn edge_rows(&self) -> BTreeMap<String, Vec<(String, Option<String>)>> {
        let mut out = BTreeMap::new();
        for table in TABLES {
            for (k, r) in self
                .edge()
                .shared
                .store
                .scan(&format!("{table}{SEP}"))
                .unwrap()
            {
                if !r.deleted {
                    out.insert(k, r.columns);
                }
            }
        }
        out
    }

    /// Wait until the edge holds exactly the shards' rows; panics with a diff.
    pub async fn assert_converges(&self, within: Duration) {
        let deadline = std::time::Instant::now() + within;
        loop {
            let want = self.shard_rows().await;
            let have = self.edge_rows();
            assert!(!want.is_empty(), "the shards hold no rows");
            if want == have {
                return;
            }
            if std::time::Instant::now() > deadline {
                let missing: Vec<_> = want
                    .keys()
                    .filter(|k| !have.contains_key(*k))
                    .take(5)
                    .collect();
                let extra: Vec<_> = have
                    .keys()
                    .filter(|k| !want.contains_key(*k))
                    .take(5)
                    .collect();
                let differ: Vec<_> = want
                    .iter()
                    .filter(|(k, v)| have.get(*k).is_some_and(|h| h != *v))
                    .take(3)
                    .map(|(k, v)| (k, v, have.get(k)))
                    .collect();
                panic!(
                    "edge != shards: {} vs {} rows; missing {missing:?}; extra {extra:?}; differ {differ:?}",
                    want.len(),
                    have.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// `GET /metrics` of the edge, parsed: (series with labels as written, value).
pub async fn scrape(app: &axum::Router) -> Vec<(String, f64)> {
    let req = Request::builder()
        .uri("/metrics")
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// Sum of the series named `name` whose labels contain every `labels` pair.
pub fn metric(scraped: &[(String, f64)], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let hits: Vec<f64> = scraped
        .iter()
        .filter(|(series, _)| {
            let base = series.split('{').next().unwrap_or_default();
            base == name
                && labels
                    .iter()
                    .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, v)| *v)
        .collect();
    (!hits.is_empty()).then(|| hits.iter().sum())
}

pub async fn wait_until<F, Fut>(within: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + within;
    while !f().await {
        assert!(
            std::time::Instant::now() < deadline,
            "condition not met in {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
