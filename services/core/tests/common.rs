//! Shared fixture: a real PostgreSQL cluster per test, one database per schema.

#![allow(dead_code)]

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
        let name = schema.name().to_owned();
        cluster.create_database(&name).await.expect("create db");
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(&cluster.url(&name))
            .await
            .expect("connect");
        migrations::run(&pool, schema).await.expect("migrate");
        Db {
            cluster,
            name,
            pool,
        }
    }

    pub async fn client(&self) -> Client {
        self.cluster.connect(&self.name).await.expect("connect")
    }
}

/// The SQLSTATE of a failed tokio-postgres call.
pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_owned())
        .unwrap_or_else(|| format!("no sqlstate: {e}"))
}
