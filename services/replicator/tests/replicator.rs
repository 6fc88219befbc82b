//! The replicator against a real PostgreSQL shard and a real nats-server.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use shardline_core::migrations::{self, Schema};
use shardline_devkit::{NatsOptions, NatsServer, PgCluster, PgOptions};
use shardline_replicator::wire::{Op, Transaction};
use shardline_replicator::{Config, STREAM, Stats};
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;

async fn messages(js: &jetstream::Context) -> Vec<Transaction> {
    let stream = js.get_stream(STREAM).await.expect("stream");
    let info = stream.get_info().await.expect("info");
    let mut out = Vec::new();
    for seq in info.state.first_sequence..=info.state.last_sequence {
        if seq == 0 {
            continue;
        }
        let m = stream.get_raw_message(seq).await.expect("message");
        out.push(Transaction::decode(&m.payload).expect("decode"));
    }
    out
}

async fn wait_for(js: &jetstream::Context, n: usize) -> Vec<Transaction> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if js.get_stream(STREAM).await.is_ok() {
            let m = messages(js).await;
            if m.len() >= n || Instant::now() > deadline {
                return m;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_commits_skips_origin_transactions_and_resumes() {
    let pg = PgCluster::start_temp(PgOptions::default()).await.unwrap();
    pg.create_database("shard").await.unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&pg.url("shard"))
        .await
        .unwrap();
    migrations::run(&pool, Schema::Shard).await.unwrap();
    sqlx::query("INSERT INTO owned_ranges (id, start_key, end_key, epoch, state) VALUES (1, 0, 4294967296, 0, 'active')")
        .execute(&pool)
        .await
        .unwrap();
    let nats = NatsServer::start_temp(NatsOptions::default())
        .await
        .unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(client);

    let config = Config::new("s1", pg.url("shard"), nats.url());
    let stats = Arc::new(Stats::default());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(shardline_replicator::run_with_stats(
        config.clone(),
        shutdown.clone(),
        stats.clone(),
    ));

    // Wait until the slot exists, so the first write is captured.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'shardline_cdc_s1'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if n == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "slot not created");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    sqlx::query("INSERT INTO merchants (shard_key, merchant_id, name, default_currency) VALUES (7, '00000000-0000-7000-8000-000000000001', 'one', 'USD')")
        .execute(&pool).await.unwrap();
    // A transaction under a replication origin (a move copy / cleanup): skipped.
    sqlx::query("SELECT pg_replication_origin_create('x')")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("SELECT pg_replication_origin_session_setup('x')")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("SET session_replication_role = replica")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO merchants (shard_key, merchant_id, name, default_currency) VALUES (7, '00000000-0000-7000-8000-000000000002', 'copy', 'USD')")
        .execute(&pool).await.unwrap();
    sqlx::query("SELECT pg_replication_origin_session_reset()")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("SET session_replication_role = origin")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE merchants SET name = 'uno' WHERE merchant_id = '00000000-0000-7000-8000-000000000001'")
        .execute(&pool).await.unwrap();

    let msgs = wait_for(&js, 2).await;
    assert_eq!(msgs.len(), 2, "{msgs:#?}");
    assert_eq!(msgs[0].changes[0].op, Op::Insert);
    assert_eq!(msgs[0].changes[0].text("name"), Some("one"));
    assert_eq!(msgs[1].changes[0].op, Op::Update);
    assert_eq!(msgs[1].changes[0].text("name"), Some("uno"));
    assert_eq!(msgs[1].changes[0].text("version"), Some("2"));
    assert_eq!(msgs[1].prev_commit_lsn, msgs[0].commit_lsn);
    assert!(msgs[0].commit_lsn < msgs[1].commit_lsn);
    assert_eq!(msgs[0].shard, "s1");
    assert_eq!(stats.skipped_origin.load(Ordering::Relaxed), 1);

    // Restart: nothing is published twice; new commits continue the chain.
    shutdown.cancel();
    task.await.unwrap().unwrap();
    sqlx::query("DELETE FROM merchants WHERE merchant_id = '00000000-0000-7000-8000-000000000001'")
        .execute(&pool)
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(shardline_replicator::run(config, shutdown.clone()));
    let msgs = wait_for(&js, 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let msgs2 = messages(&js).await;
    assert_eq!(msgs.len(), 3);
    assert_eq!(msgs2.len(), 3, "no duplicates after restart");
    assert_eq!(msgs[2].changes[0].op, Op::Delete);
    assert_eq!(msgs[2].prev_commit_lsn, msgs[1].commit_lsn);
    assert!(msgs[2].changes[0].text("merchant_id").is_some());
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_postgres_crash_without_loss_or_duplicates() {
    let mut pg = PgCluster::start_temp(PgOptions::default()).await.unwrap();
    pg.create_database("shard").await.unwrap();
    let url = pg.url("shard");
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    migrations::run(&pool, Schema::Shard).await.unwrap();
    sqlx::query("INSERT INTO owned_ranges (id, start_key, end_key, epoch, state) VALUES (1, 0, 4294967296, 0, 'active')")
        .execute(&pool)
        .await
        .unwrap();
    let nats = NatsServer::start_temp(NatsOptions::default())
        .await
        .unwrap();
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let mut config = Config::new("s9", url.clone(), nats.url());
    config.retry_backoff = Duration::from_millis(100);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(shardline_replicator::run(config, shutdown.clone()));
    let insert = |n: u32| {
        format!(
            "INSERT INTO merchants (shard_key, merchant_id, name, default_currency)
             VALUES ({n}, '00000000-0000-7000-8000-{n:012}', 'm{n}', 'USD')"
        )
    };
    // Wait for the slot, then write, crash PostgreSQL, restart it, write more.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM pg_replication_slots")
            .fetch_one(&pool)
            .await
            .unwrap();
        if n == 1 {
            break;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for n in 0..5 {
        sqlx::query(sqlx::AssertSqlSafe(insert(n)))
            .execute(&pool)
            .await
            .unwrap();
    }
    wait_for(&js, 5).await;
    pool.close().await;
    pg.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    pg.restart().await.unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    for n in 5..10 {
        sqlx::query(sqlx::AssertSqlSafe(insert(n)))
            .execute(&pool)
            .await
            .unwrap();
    }
    let msgs = wait_for(&js, 10).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let again = messages(&js).await;
    assert_eq!(msgs.len(), 10, "{msgs:#?}");
    assert_eq!(again.len(), 10, "no duplicates after the crash");
    for (i, m) in again.iter().enumerate() {
        assert_eq!(m.changes[0].text("name"), Some(format!("m{i}").as_str()));
        if i > 0 {
            assert_eq!(m.prev_commit_lsn, again[i - 1].commit_lsn);
        }
    }
    shutdown.cancel();
    task.await.unwrap().unwrap();
}
