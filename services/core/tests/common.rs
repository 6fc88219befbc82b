//! Shared fixture: a real PostgreSQL cluster per test, one database per schema.

#![allow(dead_code)]

use shardline_core::fence::{self, FenceMode};
use shardline_core::migrations::{self, Schema};
use shardline_devkit::{PgCluster, PgOptions};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio_postgres::Client;

#[derive(Debug)]
pub struct Db {
    pub cluster: PgCluster,
    pub name: String,
    pub pool: PgPool,
}

impl Db {
    pub async fn new(schema: Schema) -> Db {
        let cluster = PgCluster::start_temp(PgOptions::default())
            .await
            .expect("start postgres");
        Self::on(cluster, schema).await
    }

    pub async fn on(cluster: PgCluster, schema: Schema) -> Db {
        let (name, pool) = database(&cluster, schema).await;
        migrations::run(&pool, schema).await.expect("migrate");
        Db {
            cluster,
            name,
            pool,
        }
    }

    /// A shard database with the fence `mode` asks for; `None` (and a note on
    /// stderr) when `mode` is native and this server lacks the extension.
    pub async fn shard(mode: FenceMode) -> Option<Db> {
        let cluster = PgCluster::start_temp(PgOptions::default())
            .await
            .expect("start postgres");
        let (name, pool) = database(&cluster, Schema::Shard).await;
        if mode == FenceMode::Native && !fence::native_available(&pool).await.expect("query") {
            eprintln!(
                "SKIPPED: the shardline_fence extension is not installed (./dev setup builds it)"
            );
            return None;
        }
        let kind = migrations::run_shard(&pool, mode).await.expect("migrate");
        if mode != FenceMode::Auto {
            assert_eq!(format!("{mode:?}").to_lowercase(), kind.as_str());
        }
        Some(Db {
            cluster,
            name,
            pool,
        })
    }

    pub async fn client(&self) -> Client {
        self.cluster.connect(&self.name).await.expect("connect")
    }
}

/// Create `schema`'s database on `cluster` (not migrated) and a pool to it.
async fn database(cluster: &PgCluster, schema: Schema) -> (String, PgPool) {
    let name = schema.name().to_owned();
    cluster.create_database(&name).await.expect("create db");
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&cluster.url(&name))
        .await
        .expect("connect");
    (name, pool)
}

/// Wait until backend `pid` is blocked on a lock (observed via pg_stat_activity).
pub async fn wait_until_blocked(observer: &Client, pid: i32) {
    for _ in 0..500 {
        let waiting: bool = observer
            .query_one(
                "SELECT coalesce(wait_event_type = 'Lock', false) FROM pg_stat_activity WHERE pid = $1",
                &[&pid],
            )
            .await
            .unwrap()
            .get(0);
        if waiting {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("backend {pid} never blocked on a lock");
}

/// `both_fences!(test_fn, ...)`: for each `async fn test_fn(mode: FenceMode)`, a
/// module `test_fn` with the tests `native` and `plpgsql`.
#[macro_export]
macro_rules! both_fences {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use shardline_core::fence::FenceMode;
            #[tokio::test]
            async fn native() {
                super::$name(FenceMode::Native).await
            }
            #[tokio::test]
            async fn plpgsql() {
                super::$name(FenceMode::Plpgsql).await
            }
        }
    )*};
}

/// The SQLSTATE of a failed tokio-postgres call.
pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_owned())
        .unwrap_or_else(|| format!("no sqlstate: {e}"))
}
