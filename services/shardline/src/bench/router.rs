//! Router overhead: payments create + capture (two shard transactions, each with
//! its ledger journal, balances and idempotency key) through the router over HTTP
//! (in-process server on port 0, one keep-alive connection per client) versus the
//! very same shard transactions issued directly on tokio-postgres connections
//! (the router's own `payments::execute`, no HTTP, no routing), at the same
//! concurrency, on the same clusters, alternating rounds.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use rand::{Rng, SeedableRng};
use shardline_core::money::{Currency, Money};
use shardline_core::{MerchantId, RangeMap, ShardId, catalog};
use shardline_router::idempotency::IdemKey;
use shardline_router::payments::{self, Op, Target};

use super::cluster::BenchCluster;
use super::{AbArgs, AbShape, Tally, alternate};
use crate::config::{ConfigError, in_range};

#[derive(Debug, Args)]
pub struct RouterBenchArgs {
    #[command(flatten)]
    pub run: AbArgs,
    /// Shard clusters.
    #[arg(long, default_value_t = 2)]
    pub shards: u32,
}

#[derive(Debug, Clone)]
pub struct RouterBenchConfig {
    pub run: AbShape,
    pub shards: u32,
}

impl RouterBenchConfig {
    pub fn from_args(a: RouterBenchArgs) -> Result<Self, ConfigError> {
        Ok(RouterBenchConfig {
            run: AbShape::from_args(a.run)?,
            shards: in_range("shards", a.shards, 1..=8)?,
        })
    }
}

struct Bench {
    addr: SocketAddr,
    key: String,
    merchants: Vec<MerchantId>,
    map: RangeMap,
    pools: Vec<(ShardId, deadpool_postgres::Pool)>,
}

/// One HTTP client: create + capture per iteration on a keep-alive connection.
async fn http_client(b: Arc<Bench>, id: u32, until: Instant) -> anyhow::Result<Tally> {
    let stream = tokio::net::TcpStream::connect(b.addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut rng = rand::rngs::StdRng::from_os_rng();
    let mut tally = Tally::default();
    let start = Instant::now();
    let mut i = 0u64;
    while Instant::now() < until {
        let m = b.merchants[rng.random_range(0..b.merchants.len())];
        let t0 = Instant::now();
        let body = format!(
            "{{\"amount\":\"{}.{:02}\",\"currency\":\"USD\"}}",
            rng.random_range(1..1000),
            rng.random_range(0..100)
        );
        let created = post(
            &mut sender,
            &b,
            &format!("/v1/merchants/{m}/payments"),
            &format!("bench-{id}-{i}-a"),
            body,
        )
        .await?;
        let pid = serde_json::from_slice::<serde_json::Value>(&created)?["id"]
            .as_str()
            .context("no payment id")?
            .to_owned();
        post(
            &mut sender,
            &b,
            &format!("/v1/merchants/{m}/payments/{pid}/capture"),
            &format!("bench-{id}-{i}-c"),
            "{}".into(),
        )
        .await?;
        tally.latencies_us.push(t0.elapsed().as_micros() as u64);
        tally.ops += 1;
        i += 1;
    }
    tally.elapsed = start.elapsed();
    Ok(tally)
}

async fn post(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    b: &Bench,
    path: &str,
    idem: &str,
    body: String,
) -> anyhow::Result<Bytes> {
    let req = hyper::Request::post(path)
        .header("host", b.addr.to_string())
        .header("authorization", format!("Bearer {}", b.key))
        .header("content-type", "application/json")
        .header("idempotency-key", idem)
        .body(Full::new(Bytes::from(body)))?;
    sender.ready().await?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    anyhow::ensure!(
        status.is_success(),
        "router answered {status}: {}",
        String::from_utf8_lossy(&bytes)
    );
    Ok(bytes)
}

/// One direct client: the same two transactions via `payments::execute`.
async fn direct_client(b: Arc<Bench>, id: u32, until: Instant) -> anyhow::Result<Tally> {
    let mut rng = rand::rngs::StdRng::from_os_rng();
    let mut tally = Tally::default();
    let start = Instant::now();
    let mut i = 0u64;
    let ttl = Duration::from_secs(86400);
    while Instant::now() < until {
        let m = b.merchants[rng.random_range(0..b.merchants.len())];
        let target = Target::new(m);
        let shard = &b.map.lookup_merchant(&m).shard;
        let pool = &b
            .pools
            .iter()
            .find(|(s, _)| s == shard)
            .context("no pool")?
            .1;
        let amount = format!(
            "{}.{:02}",
            rng.random_range(1..1000),
            rng.random_range(0..100)
        );
        let t0 = Instant::now();
        let client = pool.get().await?;
        let money = Money::parse_positive(&amount, Currency::USD)?;
        let path = format!("/v1/merchants/{m}/payments");
        let key = IdemKey::from_headers(
            &idem_header(&format!("direct-{id}-{i}-a"))?,
            &m,
            "POST",
            &path,
            amount.as_bytes(),
            ttl,
        )?;
        let op = Op::Authorize {
            amount: money,
            reference: None,
            idem: key,
        };
        let out = payments::execute(&client, &target, &op)
            .await
            .map_err(|e| anyhow::anyhow!("authorize: {e}"))?;
        let pid: shardline_core::ids::PaymentId =
            out.body["id"].as_str().context("no payment id")?.parse()?;
        let path = format!("/v1/merchants/{m}/payments/{pid}/capture");
        let key = IdemKey::from_headers(
            &idem_header(&format!("direct-{id}-{i}-c"))?,
            &m,
            "POST",
            &path,
            b"{}",
            ttl,
        )?;
        let op = Op::Capture {
            payment: pid,
            amount: None,
            idem: key,
        };
        payments::execute(&client, &target, &op)
            .await
            .map_err(|e| anyhow::anyhow!("capture: {e}"))?;
        drop(client);
        tally.latencies_us.push(t0.elapsed().as_micros() as u64);
        tally.ops += 1;
        i += 1;
    }
    tally.elapsed = start.elapsed();
    Ok(tally)
}

fn idem_header(key: &str) -> anyhow::Result<hyper::HeaderMap> {
    let mut h = hyper::HeaderMap::new();
    h.insert("idempotency-key", key.parse()?);
    Ok(h)
}

async fn round(b: &Arc<Bench>, http: bool, clients: u32, seconds: u32) -> anyhow::Result<Tally> {
    let until = Instant::now() + Duration::from_secs(seconds.into());
    let stamp = rand::rng().random::<u32>();
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let id = stamp.wrapping_add(c);
            if http {
                tokio::spawn(http_client(b.clone(), id, until))
            } else {
                tokio::spawn(direct_client(b.clone(), id, until))
            }
        })
        .collect();
    let mut total = Tally::default();
    for h in handles {
        total.add_concurrent(h.await.context("bench client panicked")??);
    }
    Ok(total)
}

pub async fn run(cfg: RouterBenchConfig) -> anyhow::Result<()> {
    let cluster = BenchCluster::start(cfg.shards, 4, cfg.run.clients as usize).await?;
    let map = catalog::load_range_map(&cluster.catalog).await?;
    let merchants = cluster.merchants(200).await?;
    let (addr, key) = (cluster.router_addr, cluster.key.clone());
    let mut pools = Vec::new();
    for (id, url) in &cluster.shards {
        pools.push((
            id.clone(),
            shardline_router::pools::build_pool(id.as_str(), url, cfg.run.clients as usize)?,
        ));
    }
    let b = Arc::new(Bench {
        addr,
        key,
        merchants,
        map,
        pools,
    });

    eprintln!(
        "bench router: {} clients, {} shards, {} s x {} rounds per variant (+1 warm-up), create+capture per op",
        cfg.run.clients, cfg.shards, cfg.run.seconds, cfg.run.rounds
    );
    let res = alternate(
        ["direct SQL", "router"],
        "ops/s",
        cfg.run.rounds,
        cfg.run.seconds,
        |http, secs| round(&b, http, cfg.run.clients, secs),
    )
    .await?;
    if cfg.run.json {
        let mut report = res.json();
        report["benchmark"] = "router".into();
        report["op"] = "create+capture".into();
        report["shards"] = cfg.shards.into();
        cfg.run.describe(&mut report);
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        res.print("variant (create+capture)", "ops/s");
    }
    for (_, p) in &b.pools {
        p.close();
    }
    cluster.stop().await;
    Ok(())
}
