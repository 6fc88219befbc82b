//! Edge replication and reads (issue 6), each beside a baseline of the same run:
//!
//! 1. **commit -> edge applied** under open-loop router writes (authorize), on the
//!    whole local system (`LocalStack` + `Services`, the edge started here so its
//!    commit->apply samples can be read in process): PostgreSQL commit timestamp
//!    to the edge's redb commit, per transaction (same clock). Beside it the
//!    client-side router ack -> the edge returns the payment to a read with the
//!    write's `Shardline-Min-Token`. Baseline: a JetStream publish + ack of a
//!    small message to a file-backed stream on the same NATS (fsync per message,
//!    as the replicator's), at the same rate: the floor of one hop.
//! 2. **Store::get in process**, without and with the read cache, vs raw redb
//!    reads of the same file (`edge_store`).
//! 3. **edge HTTP point reads** (GET payment) at an open-loop rate vs the same
//!    requests against the router (which reads the shard): the read path the edge
//!    takes off the shards.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream;
use clap::{Args, ValueEnum};
use rand::Rng;
use serde_json::{Value, json};
use shardline_edge::Shared;
use shardline_loadtest::http::Client;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{AbResult, Tally, alternate, percentile};
use crate::config::{ConfigError, in_range};
use crate::up::{LocalStack, Services, UpConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Part {
    /// commit -> edge applied under router writes vs JetStream publish+ack.
    Latency,
    /// Store::get in process (no cache, cached) vs raw redb.
    Store,
    /// Edge HTTP point reads vs the router's.
    Http,
}

#[derive(Debug, Args)]
pub struct EdgeBenchArgs {
    /// Seconds per round and variant.
    #[arg(long, default_value_t = 5)]
    pub seconds: u32,
    /// Measured rounds (after one warm-up round of 1 s per variant).
    #[arg(long, default_value_t = 2)]
    pub rounds: u32,
    /// Shards of the local system.
    #[arg(long, default_value_t = 2)]
    pub shards: u32,
    /// Router writes (authorize) per second, open loop, for the latency part.
    #[arg(long, default_value_t = 300)]
    pub write_rate: u32,
    /// Point reads per second, open loop, for the HTTP part.
    #[arg(long, default_value_t = 2000)]
    pub read_rate: u32,
    /// Payment rows in the store of the in-process read part.
    #[arg(long, default_value_t = 100_000)]
    pub rows: u32,
    /// Run only these parts (comma-separated; default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Part>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone)]
pub struct EdgeBenchConfig {
    pub seconds: u32,
    pub rounds: u32,
    pub shards: u32,
    pub write_rate: u32,
    pub read_rate: u32,
    pub rows: u32,
    pub parts: Vec<Part>,
    pub json: bool,
}

impl EdgeBenchConfig {
    pub fn from_args(a: EdgeBenchArgs) -> Result<Self, ConfigError> {
        let parts = if a.only.is_empty() {
            vec![Part::Latency, Part::Store, Part::Http]
        } else {
            a.only
        };
        Ok(EdgeBenchConfig {
            seconds: in_range("seconds", a.seconds, 1..=600)?,
            rounds: in_range("rounds", a.rounds, 1..=100)?,
            shards: in_range("shards", a.shards, 1..=8)?,
            write_rate: in_range("write_rate", a.write_rate, 1..=5_000)?,
            read_rate: in_range("read_rate", a.read_rate, 1..=50_000)?,
            rows: in_range("rows", a.rows, 1_000..=10_000_000)?,
            parts,
            json: a.json,
        })
    }

    fn has(&self, p: Part) -> bool {
        self.parts.contains(&p)
    }
}

/// Open-loop: `rate` operations per second for `seconds`, each spawned at its
/// scheduled time whether or not earlier ones finished (tokio's timer has 1 ms
/// resolution: at rates above 1000/s operations start in bursts per ms).
/// Latencies are what each operation returns (µs); failures are counted.
async fn open_loop<F, Fut>(rate: u32, seconds: u32, mut op: F) -> (Tally, u64, Option<String>)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<u64>> + Send + 'static,
{
    let total = u64::from(rate) * u64::from(seconds);
    let period = Duration::from_secs(1).div_f64(f64::from(rate));
    let start = tokio::time::Instant::now();
    let mut set = JoinSet::new();
    let mut tally = Tally::default();
    let (mut errors, mut first) = (0u64, None);
    let mut take = |r: Result<anyhow::Result<u64>, tokio::task::JoinError>, t: &mut Tally| match r {
        Ok(Ok(us)) => {
            t.ops += 1;
            t.latencies_us.push(us);
        }
        Ok(Err(e)) => {
            errors += 1;
            first.get_or_insert_with(|| format!("{e:#}"));
        }
        Err(e) => {
            errors += 1;
            first.get_or_insert_with(|| e.to_string());
        }
    };
    for i in 0..total {
        tokio::time::sleep_until(start + period.mul_f64(i as f64)).await;
        set.spawn(op());
        while let Some(r) = set.try_join_next() {
            take(r, &mut tally);
        }
    }
    while let Some(r) = set.join_next().await {
        take(r, &mut tally);
    }
    tally.elapsed = start.elapsed();
    (tally, errors, first)
}

/// The running system and what the parts share.
struct Sys {
    router: Client,
    edge: Client,
    js: jetstream::Context,
    shared: Arc<Shared>,
    merchants: Vec<String>,
    /// (merchant, payment) written so far (read by the HTTP part).
    payments: Mutex<Vec<(String, String)>>,
    /// Router ack -> visible on the edge, µs, of the measured latency rounds.
    visible_us: Mutex<Vec<u64>>,
    errors: AtomicU64,
    seq: AtomicU64,
    stamp: u32,
}

const FLOOR_STREAM: &str = "SHARDLINE_BENCH_FLOOR";
const FLOOR_SUBJECT: &str = "shardline_bench.floor";

impl Sys {
    /// Authorize a payment through the router; return the time from the router's
    /// answer until the edge serves it with the write's token (µs).
    async fn write(self: Arc<Self>) -> anyhow::Result<u64> {
        let (m, amount) = {
            let mut rng = rand::rng();
            let m = self.merchants[rng.random_range(0..self.merchants.len())].clone();
            let amount = format!(
                "{}.{:02}",
                rng.random_range(1..1000),
                rng.random_range(0..100)
            );
            (m, amount)
        };
        let idem = format!(
            "edgebench-{}-{}",
            self.stamp,
            self.seq.fetch_add(1, Ordering::Relaxed)
        );
        let body = json!({"amount": amount, "currency": "USD"});
        let r = self
            .router
            .post(&format!("/v1/merchants/{m}/payments"), Some(&idem), &body)
            .await?;
        let acked = Instant::now();
        anyhow::ensure!(
            r.status.as_u16() == 201,
            "router answered {}: {}",
            r.status,
            r.body
        );
        let token = r.token.context("no Shardline-Token on the write")?;
        let pid = r.body["id"].as_str().context("no payment id")?.to_owned();
        let read = self
            .edge
            .get_with(
                &format!("/v1/merchants/{m}/payments/{pid}"),
                &[("shardline-min-token", &token)],
            )
            .await?;
        let visible = acked.elapsed().as_micros() as u64;
        anyhow::ensure!(
            read.status.as_u16() == 200,
            "edge answered {}: {}",
            read.status,
            read.body
        );
        self.payments
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .push((m, pid));
        Ok(visible)
    }

    /// One JetStream publish awaiting its ack (µs).
    async fn publish(self: Arc<Self>) -> anyhow::Result<u64> {
        let payload = vec![b'x'; 512];
        let t0 = Instant::now();
        self.js
            .publish(FLOOR_SUBJECT, payload.into())
            .await?
            .await
            .context("JetStream ack")?;
        Ok(t0.elapsed().as_micros() as u64)
    }

    /// One GET of a random written payment from `client` (µs).
    async fn read(self: Arc<Self>, edge: bool) -> anyhow::Result<u64> {
        let (m, p) = {
            let ps = self
                .payments
                .lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?;
            ps[rand::rng().random_range(0..ps.len())].clone()
        };
        let client = if edge { &self.edge } else { &self.router };
        let t0 = Instant::now();
        let r = client
            .get(&format!("/v1/merchants/{m}/payments/{p}"))
            .await?;
        let us = t0.elapsed().as_micros() as u64;
        anyhow::ensure!(
            r.status.as_u16() == 200,
            "{} answered {}",
            client.base(),
            r.status
        );
        Ok(us)
    }

    fn note_errors(&self, what: &str, errors: u64, first: Option<String>) {
        if errors > 0 {
            self.errors.fetch_add(errors, Ordering::Relaxed);
            eprintln!(
                "  {what}: {errors} failed, first: {}",
                first.unwrap_or_default()
            );
        }
    }
}

/// A latency round of the system: writes at `rate`; the tally holds the edge's
/// commit -> apply samples of the round.
async fn latency_round(
    sys: &Arc<Sys>,
    rate: u32,
    secs: u32,
    measured: bool,
) -> anyhow::Result<Tally> {
    let samples = Arc::new(Mutex::new(Vec::<u64>::new()));
    let drain = {
        let shared = sys.shared.clone();
        let samples = samples.clone();
        move || {
            if let (Ok(mut q), Ok(mut s)) = (shared.apply_lags_micros.lock(), samples.lock()) {
                s.extend(q.drain(..).map(|v| v.max(0) as u64));
            }
        }
    };
    drain();
    if let Ok(mut s) = samples.lock() {
        s.clear();
    }
    let stop = CancellationToken::new();
    let drainer = {
        let (stop, drain) = (stop.clone(), drain.clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                drain();
            }
        })
    };
    let (t, errors, first) = open_loop(rate, secs, || sys.clone().write()).await;
    stop.cancel();
    drainer.await.ok();
    drain();
    sys.note_errors("writes", errors, first);
    if measured && let Ok(mut v) = sys.visible_us.lock() {
        v.extend(&t.latencies_us);
    }
    let lat = samples.lock().map(|s| s.clone()).unwrap_or_default();
    Ok(Tally {
        ops: t.ops,
        elapsed: t.elapsed,
        latencies_us: lat,
    })
}

fn lat_json(t: &Tally) -> Value {
    let s = &t.latencies_us;
    json!({
        "samples": s.len(),
        "per_s": t.per_sec(),
        "p50_us": percentile(s, 50.0),
        "p99_us": percentile(s, 99.0),
        "p999_us": percentile(s, 99.9),
        "max_us": s.last().copied().unwrap_or(0),
    })
}

/// A latency comparison: both variants' percentiles and the p50/p99 ratios.
fn lat_report(res: &AbResult) -> Value {
    let (b, c) = (&res.baseline.latencies_us, &res.candidate.latencies_us);
    let r = |q: f64| percentile(c, q) as f64 / (percentile(b, q) as f64).max(1.0);
    json!({
        res.names[0]: lat_json(&res.baseline),
        res.names[1]: lat_json(&res.candidate),
        "ratio_p50": r(50.0),
        "ratio_p99": r(99.0),
    })
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn print_lat(title: &str, names: [&str; 2], report: &Value, extra: Option<(&str, &Value)>) {
    println!("{title}");
    println!(
        "  {:<34} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "variant", "samples", "p50 us", "p99 us", "p999 us", "max us"
    );
    let mut rows = vec![
        (format!("{} (baseline)", names[0]), &report[names[0]]),
        (names[1].to_owned(), &report[names[1]]),
    ];
    if let Some((n, v)) = extra {
        rows.push((n.to_owned(), v));
    }
    for (n, v) in rows {
        println!(
            "  {n:<34} {:>8} {:>9} {:>9} {:>9} {:>9}",
            u(&v["samples"]),
            u(&v["p50_us"]),
            u(&v["p99_us"]),
            u(&v["p999_us"]),
            u(&v["max_us"])
        );
    }
    println!(
        "  ratio {}/{}: p50 {:.2}x, p99 {:.2}x",
        names[1],
        names[0],
        report["ratio_p50"].as_f64().unwrap_or(0.0),
        report["ratio_p99"].as_f64().unwrap_or(0.0)
    );
}

/// Boot the local system, start an edge, create merchants and seed payments.
async fn boot(
    cfg: &EdgeBenchConfig,
    dir: &std::path::Path,
    stop: &CancellationToken,
) -> anyhow::Result<(LocalStack, Services, shardline_edge::Edge, Arc<Sys>)> {
    let up = UpConfig {
        dir: dir.join("cluster"),
        shards: Some(cfg.shards),
        ranges_per_shard: 4,
        catalog_port: None,
        nats_port: None,
        edges: 1,
        fresh: true,
    };
    let stack = LocalStack::boot(&up).await?;
    // Replicators only: the edge is started here to read its samples in process.
    let services = Services::start(&stack, 0, stop).await?;
    let d = &stack.description;
    let mut ec = shardline_edge::Config::new(
        d.nats_url.clone(),
        dir.join("edge.redb"),
        d.catalog_url.clone(),
    );
    ec.name = "bench-edge".into();
    ec.listen = "127.0.0.1:0".parse()?;
    let edge = shardline_edge::Edge::start(ec, stop.clone()).await?;
    let timeout = Duration::from_secs(5);
    let router = Client::new(&services.router_url, &stack.admin_key, timeout);
    let edge_client = Client::new(&format!("http://{}", edge.addr), &stack.admin_key, timeout);
    let nats = async_nats::connect(&d.nats_url).await?;
    let js = jetstream::new(nats);
    js.get_or_create_stream(jetstream::stream::Config {
        name: FLOOR_STREAM.into(),
        subjects: vec![FLOOR_SUBJECT.into()],
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    let mut merchants = Vec::new();
    for i in 0..50 {
        let body = json!({"name": format!("edge bench {i}"), "default_currency": "USD"});
        let r = router.post("/v1/merchants", None, &body).await?;
        anyhow::ensure!(
            r.status.as_u16() == 201,
            "creating a merchant: {} {}",
            r.status,
            r.body
        );
        merchants.push(r.body["id"].as_str().context("no merchant id")?.to_owned());
    }
    let sys = Arc::new(Sys {
        router,
        edge: edge_client,
        js,
        shared: edge.shared.clone(),
        merchants,
        payments: Mutex::new(Vec::new()),
        visible_us: Mutex::new(Vec::new()),
        errors: AtomicU64::new(0),
        seq: AtomicU64::new(0),
        stamp: rand::rng().random(),
    });
    // Payments to read (each visible on the edge before it is counted).
    let mut set = JoinSet::new();
    for _ in 0..8 {
        let sys = sys.clone();
        set.spawn(async move {
            for _ in 0..64 {
                sys.clone().write().await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = set.join_next().await {
        r.context("seeding panicked")??;
    }
    Ok((stack, services, edge, sys))
}

pub async fn run(cfg: EdgeBenchConfig) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir().context("creating a temporary directory")?;
    let mut report = json!({
        "benchmark": "edge",
        "seconds_per_round": cfg.seconds,
        "rounds": cfg.rounds,
    });
    eprintln!(
        "bench edge: {} s x {} rounds per variant (+1 s warm-up), parts {:?}",
        cfg.seconds, cfg.rounds, cfg.parts
    );
    if cfg.has(Part::Store) {
        eprintln!("store reads: {} rows, one thread", cfg.rows);
        let res =
            super::edge_store::run(tmp.path(), cfg.rows as usize, cfg.rounds, cfg.seconds).await?;
        report["store_reads"] = super::edge_store::report(&res, cfg.rows);
        if !cfg.json {
            super::edge_store::print(&res, cfg.rows);
        }
    }
    if cfg.has(Part::Latency) || cfg.has(Part::Http) {
        system_parts(&cfg, tmp.path(), &mut report).await?;
    }
    if cfg.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

async fn system_parts(
    cfg: &EdgeBenchConfig,
    dir: &std::path::Path,
    report: &mut Value,
) -> anyhow::Result<()> {
    eprintln!(
        "booting the local system ({} shards, NATS, router, replicators, 1 edge)",
        cfg.shards
    );
    let stop = CancellationToken::new();
    let (stack, services, edge, sys) = boot(cfg, dir, &stop).await?;
    report["shards"] = cfg.shards.into();
    let outcome = async {
        if cfg.has(Part::Latency) {
            eprintln!("commit -> edge: {} writes/s open loop", cfg.write_rate);
            let names = ["JetStream publish+ack", "commit->edge applied"];
            let calls = AtomicU64::new(0);
            let res = alternate(names, "ops/s", cfg.rounds, cfg.seconds, |cand, secs| {
                let sys = sys.clone();
                let measured = calls.fetch_add(1, Ordering::Relaxed) >= 2;
                async move {
                    if cand {
                        latency_round(&sys, cfg.write_rate, secs, measured).await
                    } else {
                        let (t, e, f) =
                            open_loop(cfg.write_rate, secs, || sys.clone().publish()).await;
                        sys.note_errors("publishes", e, f);
                        Ok(t)
                    }
                }
            })
            .await?;
            let mut j = lat_report(&res);
            let mut visible = sys.visible_us.lock().map(|v| v.clone()).unwrap_or_default();
            visible.sort_unstable();
            let vt = Tally {
                ops: visible.len() as u64,
                elapsed: res.candidate.elapsed,
                latencies_us: visible,
            };
            let vj = lat_json(&vt);
            j["write_rate"] = cfg.write_rate.into();
            j["router_ack->edge_read"] = vj.clone();
            if !cfg.json {
                print_lat(
                    &format!(
                        "commit -> edge applied, {} router writes/s (goal p99 < 10 ms)",
                        cfg.write_rate
                    ),
                    names,
                    &j,
                    Some(("router ack->edge read (Min-Token)", &vj)),
                );
            }
            report["commit_to_edge"] = j;
        }
        if cfg.has(Part::Http) {
            let n = sys.payments.lock().map(|p| p.len()).unwrap_or(0);
            eprintln!(
                "HTTP point reads: {} GET/s open loop over {n} payments",
                cfg.read_rate
            );
            let names = ["router GET (shard)", "edge GET"];
            let res = alternate(names, "GET/s", cfg.rounds, cfg.seconds, |edge, secs| {
                let sys = sys.clone();
                async move {
                    let (t, e, f) = open_loop(cfg.read_rate, secs, || sys.clone().read(edge)).await;
                    sys.note_errors("reads", e, f);
                    Ok(t)
                }
            })
            .await?;
            let mut j = lat_report(&res);
            j["read_rate"] = cfg.read_rate.into();
            j["payments"] = n.into();
            if !cfg.json {
                print_lat(
                    &format!(
                        "HTTP point reads (GET payment), {} GET/s (goal edge p99 < 1 ms)",
                        cfg.read_rate
                    ),
                    names,
                    &j,
                    None,
                );
            }
            report["http_reads"] = j;
        }
        anyhow::Ok(())
    }
    .await;
    report["errors"] = sys.errors.load(Ordering::Relaxed).into();
    // Close the bench's own NATS connection before NATS stops.
    drop(sys);
    stop.cancel();
    edge.join().await.ok();
    services.join().await;
    stack.shutdown().await;
    outcome
}
