//! Online moves under load: one range (holding a seeded bulk of payments plus
//! live traffic) is moved between three shards again and again while an
//! open-loop client drives authorize + capture through the router at a fixed
//! rate, half of it at the moving range's merchants. Reports the write pause
//! (freeze -> catalog flip, from the engine) over all moves, client latency
//! outside moves, during moves and overlapping a cutover (measured from each
//! request's intended send time, so queueing behind a hold counts), client
//! errors, and the copy phase's throughput next to a plain
//! `COPY ... TO STDOUT | COPY ... FROM STDIN` of the same rows in the same run.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use rand::{Rng, SeedableRng};
use serde_json::json;
use shardline_core::{MerchantId, shard_key};
use shardline_rebalancer::MoveState;
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;

use super::cluster::BenchCluster;
use super::move_data::{plain_copy, range_bytes, seed};
use super::move_engine::EngineThread;
use super::percentile;
use crate::config::{ConfigError, in_range};

#[derive(Debug, Args)]
pub struct MoveBenchArgs {
    /// Moves to run (the range goes round the three shards).
    #[arg(long, default_value_t = 20)]
    pub moves: u32,
    /// Client operations per second (open loop; authorize and capture alternate).
    #[arg(long, default_value_t = 300)]
    pub rate: u32,
    /// Client connections (keep-alive) the rate is spread over.
    #[arg(long, default_value_t = 16)]
    pub connections: u32,
    /// Payments seeded into the moving range before the load starts (each with a
    /// two-line ledger journal).
    #[arg(long, default_value_t = 20_000)]
    pub seed_payments: u32,
    /// Quiet seconds between moves (latency "outside moves" is measured there).
    #[arg(long, default_value_t = 2)]
    pub gap: u32,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone)]
pub struct MoveBenchConfig {
    pub moves: u32,
    pub rate: u32,
    pub connections: u32,
    pub seed_payments: u32,
    pub gap: Duration,
    pub json: bool,
}

impl MoveBenchConfig {
    pub fn from_args(a: MoveBenchArgs) -> Result<Self, ConfigError> {
        Ok(MoveBenchConfig {
            moves: in_range("moves", a.moves, 1..=500)?,
            rate: in_range("rate", a.rate, 1..=20_000)?,
            connections: in_range("connections", a.connections, 1..=512)?,
            seed_payments: in_range("seed-payments", a.seed_payments, 0..=5_000_000)?,
            gap: Duration::from_secs(in_range("gap", a.gap, 0..=600)?.into()),
            json: a.json,
        })
    }
}

/// One client request.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Intended send time and completion, as offsets from the bench's start.
    sent: Duration,
    done: Duration,
    ok: bool,
}

/// The open-loop client: connection `k` of `n` sends op `i` at
/// `(i * n + k) / rate` seconds; latency counts from that intended time.
async fn client(
    addr: std::net::SocketAddr,
    key: Arc<str>,
    hot: Arc<Vec<MerchantId>>,
    cold: Arc<Vec<MerchantId>>,
    (k, n, rate): (u32, u32, u32),
    start: Instant,
    stop: CancellationToken,
) -> Vec<Sample> {
    let mut rng = rand::rngs::StdRng::from_os_rng();
    let mut samples = Vec::new();
    let mut sender = None;
    let mut last: Option<(MerchantId, String)> = None;
    let period = Duration::from_secs_f64(f64::from(n) / f64::from(rate));
    let mut next = start + Duration::from_secs_f64(f64::from(k) / f64::from(rate));
    let mut i = 0u64;
    while !stop.is_cancelled() {
        tokio::time::sleep_until(next.into()).await;
        let sent = next;
        next += period;
        if sender.is_none() {
            sender = connect(addr).await.ok();
        }
        let Some(s) = sender.as_mut() else {
            samples.push(Sample {
                sent: sent - start,
                done: start.elapsed(),
                ok: false,
            });
            continue;
        };
        let (path, body, m) = match last.take() {
            Some((m, pid)) => (
                format!("/v1/merchants/{m}/payments/{pid}/capture"),
                "{}".to_owned(),
                None,
            ),
            None => {
                let pool = if rng.random_bool(0.5) && !hot.is_empty() {
                    &hot
                } else {
                    &cold
                };
                let m = pool[rng.random_range(0..pool.len())];
                let body = json!({"amount": format!("{}.{:02}", rng.random_range(1..500), rng.random_range(0..100)),
                                  "currency": "USD"}).to_string();
                (format!("/v1/merchants/{m}/payments"), body, Some(m))
            }
        };
        let req = hyper::Request::post(path)
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .header("idempotency-key", format!("mb-{k}-{i}"))
            .body(Full::new(Bytes::from(body)));
        i += 1;
        let ok = match req {
            Ok(req) => match s.send_request(req).await {
                Ok(resp) => {
                    let status = resp.status();
                    let bytes = resp.into_body().collect().await.map(|b| b.to_bytes());
                    if let (Some(m), Ok(b)) = (m, &bytes)
                        && status.is_success()
                        && let Ok(v) = serde_json::from_slice::<serde_json::Value>(b)
                        && let Some(pid) = v["id"].as_str()
                    {
                        last = Some((m, pid.to_owned()));
                    }
                    if !status.is_success() {
                        tracing::warn!(%status, body = ?bytes.ok(), "bench request failed");
                    }
                    status.is_success()
                }
                Err(e) => {
                    tracing::warn!(error = %e, "bench connection failed");
                    sender = None;
                    false
                }
            },
            Err(_) => false,
        };
        samples.push(Sample {
            sent: sent - start,
            done: start.elapsed(),
            ok,
        });
    }
    samples
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: std::net::SocketAddr) -> anyhow::Result<Sender> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

fn overlaps(s: &Sample, w: (Duration, Duration)) -> bool {
    s.sent <= w.1 && s.done >= w.0
}

fn lat_stats(samples: &[&Sample]) -> serde_json::Value {
    let mut l: Vec<u64> = samples
        .iter()
        .map(|s| s.done.saturating_sub(s.sent).as_micros() as u64)
        .collect();
    l.sort_unstable();
    let ms = |us: u64| us as f64 / 1000.0;
    json!({
        "requests": l.len(),
        "errors": samples.iter().filter(|s| !s.ok).count(),
        "p50_ms": ms(percentile(&l, 50.0)),
        "p99_ms": ms(percentile(&l, 99.0)),
        "max_ms": ms(l.last().copied().unwrap_or(0)),
    })
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[rank.min(v.len() - 1)]
}

pub async fn run(cfg: MoveBenchConfig) -> anyhow::Result<()> {
    let cluster = BenchCluster::start(3, 2, 16).await?;
    let merchants = cluster.merchants(300).await?;
    let cat = cluster.catalog.clone();
    let probe = merchants[0];
    let (range_id, start_key, end_key, first_owner): (i64, i64, i64, String) = sqlx::query_as(
        "SELECT id, start_key, end_key, shard_id FROM ranges WHERE start_key <= $1 AND end_key > $1",
    )
    .bind(i64::from(shard_key(&probe)))
    .fetch_one(&cat)
    .await?;
    let (hot, cold): (Vec<MerchantId>, Vec<MerchantId>) = merchants.iter().partition(|m| {
        let k = i64::from(shard_key(m));
        k >= start_key && k < end_key
    });
    let url_of = |id: &str| {
        cluster
            .shards
            .iter()
            .find(|(s, _)| s.as_str() == id)
            .map(|(_, u)| u.clone())
            .context("unknown shard")
    };
    let owner_pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&url_of(&first_owner)?)
        .await?;
    seed(&owner_pool, &hot, cfg.seed_payments).await?;
    owner_pool.close().await;
    if !cfg.json {
        eprintln!(
            "bench move: range {range_id} [{start_key}, {end_key}) with {} merchants and {} seeded payments; \
             {} ops/s over {} connections, {} moves, {} s gaps",
            hot.len(),
            cfg.seed_payments,
            cfg.rate,
            cfg.connections,
            cfg.moves,
            cfg.gap.as_secs()
        );
    }
    let start = Instant::now();
    let wall0 = SystemTime::now();
    let engine = EngineThread::start(cluster.catalog_url.clone(), wall0).await?;
    let stop = CancellationToken::new();
    let (key, hot_a, cold_a): (Arc<str>, _, _) = (
        cluster.key.clone().into(),
        Arc::new(hot.clone()),
        Arc::new(cold),
    );
    let clients: Vec<_> = (0..cfg.connections)
        .map(|k| {
            tokio::spawn(client(
                cluster.router_addr,
                key.clone(),
                hot_a.clone(),
                cold_a.clone(),
                (k, cfg.connections, cfg.rate),
                start,
                stop.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(cfg.gap.max(Duration::from_secs(1))).await;
    let shard_ids: Vec<String> = cluster.shards.iter().map(|(s, _)| s.to_string()).collect();
    let mut owner = first_owner.clone();
    let mut outcomes = Vec::new();
    for i in 0..cfg.moves {
        let pos = shard_ids.iter().position(|s| *s == owner).unwrap_or(0);
        let to = shard_ids[(pos + 1) % shard_ids.len()].clone();
        let src = PgPoolOptions::new()
            .max_connections(1)
            .connect(&url_of(&owner)?)
            .await?;
        let bytes = range_bytes(&src, start_key, end_key).await?;
        src.close().await;
        let mut o = engine.run(range_id, &to).await?;
        o.bytes = bytes;
        if !cfg.json {
            eprintln!(
                "  move {:>2}: {owner} -> {to} {}  pause {:.1} ms  copy {:.0} ms ({:.1} MB)",
                i + 1,
                o.state,
                o.pause_ms,
                o.copy_ms,
                bytes as f64 / 1e6
            );
        }
        if o.state == MoveState::Done {
            owner = to;
        }
        outcomes.push(o);
        tokio::time::sleep(cfg.gap).await;
    }
    stop.cancel();
    engine.stop()?;
    let mut samples = Vec::new();
    for c in clients {
        samples.extend(c.await.context("bench client panicked")?);
    }

    // plain COPY of the same range, from its owner to the next shard's cluster
    let pos = shard_ids.iter().position(|s| *s == owner).unwrap_or(0);
    let other = &shard_ids[(pos + 1) % shard_ids.len()];
    let src = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url_of(&owner)?)
        .await?;
    let bytes_now = range_bytes(&src, start_key, end_key).await?;
    src.close().await;
    let copy_secs = plain_copy(&url_of(&owner)?, &url_of(other)?, start_key, end_key).await?;
    let plain_mbs = bytes_now as f64 / 1e6 / copy_secs;

    let pauses: Vec<f64> = outcomes.iter().map(|o| o.pause_ms).collect();
    // median of each pause component the engine records
    let parts: serde_json::Map<String, serde_json::Value> = [
        "freeze_ms",
        "marker_wait_ms",
        "source_scope_ms",
        "source_read_ms",
        "final_check_ms",
        "final_check_target_ms",
        "range_flip_ms",
        "activate_ms",
        "flip_ms",
    ]
    .iter()
    .map(|k| {
        let v: Vec<f64> = outcomes
            .iter()
            .filter_map(|o| o.phase_ms[*k].as_f64())
            .collect();
        ((*k).to_owned(), json!(pct(&v, 50.0)))
    })
    .collect();
    let copy_mbs: Vec<f64> = outcomes
        .iter()
        .map(|o| o.bytes as f64 / 1e6 / (o.copy_ms / 1000.0))
        .collect();
    let in_move = |s: &Sample| outcomes.iter().any(|o| overlaps(s, o.window));
    let in_cutover = |s: &Sample| outcomes.iter().any(|o| overlaps(s, o.cutover));
    let outside: Vec<&Sample> = samples.iter().filter(|s| !in_move(s)).collect();
    let during: Vec<&Sample> = samples.iter().filter(|s| in_move(s)).collect();
    let cutover: Vec<&Sample> = samples.iter().filter(|s| in_cutover(s)).collect();
    // client latency by the step the moves were in (the window of `cutover`
    // includes its preparation and last delta pass, before the pause)
    let by_step: serde_json::Map<String, serde_json::Value> = MoveState::ALL
        .iter()
        .map(|st| st.as_str())
        .filter(|st| !matches!(*st, "planned" | "done" | "aborting" | "aborted"))
        .map(|st| {
            let in_step: Vec<&Sample> = samples
                .iter()
                .filter(|s| {
                    outcomes.iter().any(|o| {
                        o.steps
                            .iter()
                            .any(|(name, w)| name.as_str() == st && overlaps(s, *w))
                    })
                })
                .collect();
            (st.to_owned(), lat_stats(&in_step))
        })
        .collect();
    let elapsed = start.elapsed().as_secs_f64();
    let report = json!({
        "benchmark": "move",
        "moves": outcomes.len(),
        "moves_done": outcomes.iter().filter(|o| o.state == MoveState::Done).count(),
        "rate_target": cfg.rate,
        "rate_achieved": samples.len() as f64 / elapsed,
        "seed_payments": cfg.seed_payments,
        "pause_ms": {"p50": pct(&pauses, 50.0), "p99": pct(&pauses, 99.0),
                     "max": pct(&pauses, 100.0), "all": pauses,
                     "parts_p50": parts,
                     "per_move": outcomes.iter().map(|o| &o.phase_ms).collect::<Vec<_>>()},
        "client": {"all": lat_stats(&samples.iter().collect::<Vec<_>>()),
                   "outside_moves": lat_stats(&outside), "during_moves": lat_stats(&during),
                   "overlapping_cutover": lat_stats(&cutover), "by_step": by_step},
        "copy": {"move_mb_per_s_p50": pct(&copy_mbs, 50.0), "plain_copy_mb_per_s": plain_mbs,
                 "ratio": pct(&copy_mbs, 50.0) / plain_mbs,
                 "range_mb": bytes_now as f64 / 1e6, "plain_copy_s": copy_secs},
    });
    if cfg.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    cluster.stop().await;
    let failed = outcomes
        .iter()
        .filter(|o| o.state != MoveState::Done)
        .count();
    anyhow::ensure!(
        failed == 0,
        "{failed} of {} moves did not end done",
        outcomes.len()
    );
    Ok(())
}

fn print_report(r: &serde_json::Value) {
    let p = &r["pause_ms"];
    println!(
        "moves: {} ({} done); client rate {:.0}/s (target {})",
        r["moves"],
        r["moves_done"],
        r["rate_achieved"].as_f64().unwrap_or(0.0),
        r["rate_target"]
    );
    println!(
        "write pause (fence -> flip): p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        p["p50"].as_f64().unwrap_or(f64::NAN),
        p["p99"].as_f64().unwrap_or(f64::NAN),
        p["max"].as_f64().unwrap_or(f64::NAN)
    );
    println!("  parts (p50 ms): {}", p["parts_p50"]);
    println!(
        "{:<22} {:>9} {:>7} {:>9} {:>9} {:>9}",
        "client latency", "requests", "errors", "p50 ms", "p99 ms", "max ms"
    );
    for (name, k) in [
        ("outside moves (base)", "outside_moves"),
        ("during moves", "during_moves"),
        ("overlapping cutover", "overlapping_cutover"),
        ("all", "all"),
    ] {
        let c = &r["client"][k];
        println!(
            "{name:<22} {:>9} {:>7} {:>9.2} {:>9.2} {:>9.2}",
            c["requests"].as_u64().unwrap_or(0),
            c["errors"].as_u64().unwrap_or(0),
            c["p50_ms"].as_f64().unwrap_or(f64::NAN),
            c["p99_ms"].as_f64().unwrap_or(f64::NAN),
            c["max_ms"].as_f64().unwrap_or(f64::NAN)
        );
    }
    for (name, c) in r["client"]["by_step"].as_object().into_iter().flatten() {
        println!(
            "  in step {name:<13} {:>9} {:>7} {:>9.2} {:>9.2} {:>9.2}",
            c["requests"].as_u64().unwrap_or(0),
            c["errors"].as_u64().unwrap_or(0),
            c["p50_ms"].as_f64().unwrap_or(f64::NAN),
            c["p99_ms"].as_f64().unwrap_or(f64::NAN),
            c["max_ms"].as_f64().unwrap_or(f64::NAN)
        );
    }
    let c = &r["copy"];
    println!(
        "copy: move {:.1} MB/s (median) vs plain COPY pipe {:.1} MB/s (baseline, {:.1} MB) = {:.2}x",
        c["move_mb_per_s_p50"].as_f64().unwrap_or(f64::NAN),
        c["plain_copy_mb_per_s"].as_f64().unwrap_or(f64::NAN),
        c["range_mb"].as_f64().unwrap_or(f64::NAN),
        c["ratio"].as_f64().unwrap_or(f64::NAN)
    );
}
