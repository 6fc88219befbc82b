//! Fencing overhead: the same payment-shaped write transaction (1 payment + 2
//! balanced ledger rows) against two databases of one PostgreSQL cluster, one with
//! the fencing triggers and one with them disabled, at the same concurrency,
//! alternating rounds so both see the same machine conditions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use shardline_core::fence::{self, FenceMode};
use shardline_core::migrations;
use shardline_core::{MerchantId, shard_key};
use shardline_devkit::{PgCluster, PgOptions};
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

use super::{AbArgs, AbShape, Tally, alternate};
use crate::config::ConfigError;

/// Tables with their own fence triggers (ledger_entries is fenced by its balance
/// trigger, see migrations/shard/0003).
const FENCED_TABLES: [&str; 5] = [
    "merchants",
    "payments",
    "refunds",
    "balances",
    "idempotency_keys",
];

#[derive(Debug, Args)]
pub struct FencingArgs {
    #[command(flatten)]
    pub run: AbArgs,
    /// Run PostgreSQL with fsync on (default off, which makes the triggers' share
    /// of each transaction larger: the harder case).
    #[arg(long)]
    pub fsync: bool,
    /// Fence of the fenced variant: auto (native when the server has the
    /// shardline_fence extension), native or plpgsql.
    #[arg(long, default_value = "auto", env = "SHARDLINE_FENCE")]
    pub fence: String,
}

#[derive(Debug, Clone)]
pub struct FencingConfig {
    pub run: AbShape,
    pub fsync: bool,
    pub fence: FenceMode,
}

impl FencingConfig {
    pub fn from_args(a: FencingArgs) -> Result<Self, ConfigError> {
        Ok(FencingConfig {
            run: AbShape::from_args(a.run)?,
            fsync: a.fsync,
            fence: a
                .fence
                .parse()
                .map_err(|e: fence::FenceError| ConfigError::new("fence", e.to_string()))?,
        })
    }
}

/// Returns the conninfo and the fence kind the database reports.
async fn prepare_db(
    cluster: &PgCluster,
    db: &str,
    fenced: bool,
    mode: FenceMode,
) -> anyhow::Result<(String, String)> {
    cluster.create_database(db).await?;
    let url = cluster.url(db);
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await?;
    migrations::run_shard(&pool, mode).await?;
    sqlx::query(
        "INSERT INTO owned_ranges (id, start_key, end_key, epoch, state)
         VALUES (1, 0, 4294967296, 1, 'active') ON CONFLICT DO NOTHING",
    )
    .execute(&pool)
    .await?;
    if !fenced {
        // Every fence trigger (insert/update/delete) of every data table.
        let triggers: Vec<(String, String)> = sqlx::query_as(
            "SELECT c.relname::text, t.tgname::text FROM pg_trigger t
               JOIN pg_class c ON c.oid = t.tgrelid
              WHERE NOT t.tgisinternal AND t.tgname ~ '_fence_(insert|update|delete)$'",
        )
        .fetch_all(&pool)
        .await?;
        anyhow::ensure!(
            triggers.len() >= FENCED_TABLES.len(),
            "fence triggers not found"
        );
        for (table, trigger) in triggers {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "ALTER TABLE {table} DISABLE TRIGGER {trigger}"
            )))
            .execute(&pool)
            .await?;
        }
        // ledger_entries is fenced inside its deferred balance trigger; the
        // baseline keeps the balance check and drops only the fence part.
        sqlx::raw_sql(
            "DROP TRIGGER ledger_balanced ON ledger_entries;
             CREATE CONSTRAINT TRIGGER ledger_balanced AFTER INSERT ON ledger_entries
                 DEFERRABLE INITIALLY DEFERRED
                 FOR EACH ROW EXECUTE FUNCTION ledger_check_balanced('unfenced')",
        )
        .execute(&pool)
        .await?;
    }
    let kind = fence::active_kind(&pool).await?;
    pool.close().await;
    Ok((cluster.conninfo(db), kind))
}

async fn client_loop(
    conninfo: String,
    merchants: Arc<Vec<(Uuid, i64)>>,
    until: Instant,
) -> anyhow::Result<Tally> {
    let (client, conn) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let insert_payment = client
        .prepare(
            "INSERT INTO payments (shard_key, merchant_id, payment_id, currency, amount, status)
             VALUES ($1, $2, $3, 'USD', $4, 'authorized')",
        )
        .await?;
    let insert_ledger = client
        .prepare(
            "INSERT INTO ledger_entries
               (shard_key, merchant_id, journal_id, line, payment_id, account, currency, amount, kind)
             VALUES ($1, $2, $3, 0, $4, 'authorized', 'USD', $5, 'authorize'),
                    ($1, $2, $3, 1, $4, 'processor_hold', 'USD', -$5::numeric, 'authorize')",
        )
        .await?;
    let mut tally = Tally::default();
    let start = Instant::now();
    let mut rng = rand::rngs::StdRng::from_os_rng();
    while Instant::now() < until {
        let (merchant, key) = merchants[rng.random_range(0..merchants.len())];
        let amount = Decimal::new(rng.random_range(100..100_000), 2);
        let payment = Uuid::now_v7();
        let journal = Uuid::now_v7();
        let t0 = Instant::now();
        client.batch_execute("BEGIN").await?;
        client
            .execute(&insert_payment, &[&key, &merchant, &payment, &amount])
            .await?;
        client
            .execute(
                &insert_ledger,
                &[&key, &merchant, &journal, &payment, &amount],
            )
            .await?;
        client.batch_execute("COMMIT").await?;
        tally.latencies_us.push(t0.elapsed().as_micros() as u64);
        tally.ops += 1;
    }
    tally.elapsed = start.elapsed();
    Ok(tally)
}

async fn round(
    conninfo: &str,
    merchants: &Arc<Vec<(Uuid, i64)>>,
    clients: u32,
    seconds: u32,
) -> anyhow::Result<Tally> {
    let until = Instant::now() + Duration::from_secs(seconds.into());
    let mut handles = Vec::new();
    for _ in 0..clients {
        handles.push(tokio::spawn(client_loop(
            conninfo.to_owned(),
            merchants.clone(),
            until,
        )));
    }
    let mut total = Tally::default();
    for h in handles {
        total.add_concurrent(h.await.context("bench client panicked")??);
    }
    Ok(total)
}

pub async fn run(cfg: FencingConfig) -> anyhow::Result<()> {
    let cluster = PgCluster::start_temp(PgOptions {
        fsync: cfg.fsync,
        ..PgOptions::default()
    })
    .await?;
    let (fenced, kind) = prepare_db(&cluster, "fenced", true, cfg.fence).await?;
    // the baseline: the same migrations, every fence trigger disabled
    let (plain, _) = prepare_db(&cluster, "unfenced", false, FenceMode::Plpgsql).await?;
    let merchants: Arc<Vec<(Uuid, i64)>> = Arc::new(
        (0..1000)
            .map(|_| {
                let m = MerchantId::new();
                (*m.as_uuid(), i64::from(shard_key(&m)))
            })
            .collect(),
    );
    eprintln!(
        "bench fencing: {kind} fence, {} clients, {} s x {} rounds per variant (+1 warm-up), fsync {}",
        cfg.run.clients,
        cfg.run.seconds,
        cfg.run.rounds,
        if cfg.fsync { "on" } else { "off" }
    );
    let res = alternate(
        ["unfenced", "fenced"],
        "txn/s",
        cfg.run.rounds,
        cfg.run.seconds,
        |is_fenced, secs| {
            let conninfo = if is_fenced { &fenced } else { &plain };
            round(conninfo, &merchants, cfg.run.clients, secs)
        },
    )
    .await?;
    if cfg.run.json {
        let mut report = res.json();
        report["benchmark"] = "fencing".into();
        cfg.run.describe(&mut report);
        report["fsync"] = cfg.fsync.into();
        report["fence"] = kind.clone().into();
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        res.print("variant (1 payment + 2 ledger)", "txn/s");
        println!("fence kind measured: {kind}");
    }
    drop(cluster);
    Ok(())
}
