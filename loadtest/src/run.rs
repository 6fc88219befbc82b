//! The open-loop runner: operations are sent on a fixed schedule (`rate` per
//! second) whatever the system's latency, and each latency is measured from the
//! operation's intended send time, so a stall shows up in the percentiles instead
//! of silently lowering the offered load (no coordinated omission). At the end,
//! writes whose outcome was unknown are resolved by replaying their
//! Idempotency-Keys, the system settles, and the verifier runs.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Serialize;
use serde_json::Value;
use shardline_core::{Currency, MerchantId};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::events::{self, EventOutcome};
use crate::http::Client;
use crate::scenario::Scenario;
use crate::stats::{OpSummary, Point, Stats};
use crate::verify::{self, EdgeTarget, Report, Target, Write};
use crate::workload::{MerchantState, OpChooser, Outcome, run_op};
use crate::zipf::Zipf;

/// Where the system under test listens.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub router_url: String,
    pub edge_urls: Vec<String>,
    pub catalog_url: String,
    /// The rebalancer's admin API (needed by scenarios with events).
    pub rebalancer_url: Option<String>,
    pub api_key: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("setting up merchants: {0}")]
    Setup(String),
    #[error("scenario {0} has move events but no rebalancer URL was given")]
    NoRebalancer(String),
    #[error(
        "scenario {0} injects faults: run it with --local (the loadtest must control the system)"
    )]
    NoInjector(String),
    #[error("verifier: {0}")]
    Verify(#[from] verify::VerifyError),
    #[error("writing the report to {path}: {source}")]
    Report {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub scenario: Scenario,
    pub router_url: String,
    pub edge_urls: Vec<String>,
    pub seed: u64,
    pub started_at: String,
    pub elapsed_s: f64,
    pub operations: u64,
    pub errors: u64,
    pub ops: Vec<OpSummary>,
    pub timeline: Vec<Point>,
    /// Requests per shard over time, from the routers' `load_samples`
    /// ([`crate::shard_load`]).
    pub shard_load: Vec<crate::shard_load::ShardPoint>,
    /// Why `shard_load` is empty, when reading it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard_load_error: Option<String>,
    pub retry_mismatches: Vec<String>,
    /// Scheduled moves and faults; one that failed (`ok` false) fails the run.
    pub events: Vec<EventOutcome>,
    /// What the autonomous policy did about the scenario's hot spot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hotspot: Option<crate::hotspot::HotspotOutcome>,
    /// Whether every move finished within `settle_s` after the load.
    pub settled: bool,
    /// Unknown outcomes resolved by replaying their Idempotency-Key.
    pub resolved_unknown: usize,
    /// Unknown outcomes still unresolved (listed, not failures by themselves).
    pub unresolved_unknown: Vec<Value>,
    pub verifier: Report,
    pub passed: bool,
    /// Against `--baseline` (set by the caller after the run).
    pub baseline: Option<crate::baseline::Comparison>,
}

/// Create the merchant population (before the clock starts).
async fn onboard(
    router: &Client,
    sc: &Scenario,
    seed: u64,
) -> Result<(Vec<Arc<MerchantState>>, Vec<Write>), RunError> {
    let currencies: Vec<Currency> = sc
        .currencies
        .iter()
        .map(|c| c.parse().map_err(|e| RunError::Setup(format!("{c}: {e}"))))
        .collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    let mut acked = Vec::new();
    let sem = Arc::new(Semaphore::new(16));
    let mut tasks = Vec::new();
    for i in 0..sc.merchants {
        let cur = currencies[(i as usize + seed as usize) % currencies.len()];
        let router = router.clone();
        let sem = sem.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await;
            let body = serde_json::json!({"name": format!("lt merchant {i}"), "default_currency": cur.code()});
            let mut last = String::new();
            for _ in 0..5 {
                match router.post("/v1/merchants", None, &body).await {
                    Ok(r) if r.status.as_u16() == 201 => {
                        let id: Option<MerchantId> = r.body["id"].as_str().and_then(|s| s.parse().ok());
                        if let Some(id) = id {
                            return Ok((id, cur));
                        }
                        last = format!("no id in {}", r.body);
                    }
                    Ok(r) => last = format!("http {}: {}", r.status, r.body),
                    Err(e) => last = e.to_string(),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(last)
        }));
    }
    for t in tasks {
        let (id, cur) = t
            .await
            .map_err(|e| RunError::Setup(e.to_string()))?
            .map_err(RunError::Setup)?;
        acked.push(Write::Merchant { merchant: id });
        out.push(Arc::new(MerchantState::new(id, cur)));
    }
    Ok((out, acked))
}

/// Replay unknown writes with their Idempotency-Key: the router returns the
/// stored response if the first attempt committed, or runs it now.
async fn resolve(
    router: &Client,
    unknown: Vec<(String, String, Value)>,
) -> (Vec<Write>, Vec<Value>) {
    let mut acked = Vec::new();
    let mut unresolved = Vec::new();
    for (idem, path, body) in unknown {
        match router.post(&path, Some(&idem), &body).await {
            Ok(r) if r.status.is_success() => {
                if let Some(w) = write_of(&path, &r.body) {
                    acked.push(w);
                }
            }
            other => unresolved.push(serde_json::json!({
                "idempotency_key": idem,
                "path": path,
                "last": match other {
                    Ok(r) => format!("http {}", r.status),
                    Err(e) => e.to_string(),
                },
            })),
        }
    }
    (acked, unresolved)
}

/// The write a successful response acknowledges, from its path and body.
fn write_of(path: &str, body: &Value) -> Option<Write> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let raw = body["id"].as_str()?;
    let id: uuid::Uuid = raw.parse().ok()?;
    match parts.as_slice() {
        ["v1", "merchants"] => Some(Write::Merchant {
            merchant: raw.parse().ok()?,
        }),
        ["v1", "merchants", m, "payments"] => Some(Write::Payment {
            merchant: m.parse().ok()?,
            payment: id,
        }),
        ["v1", "merchants", m, "payments", p, "refunds"] => Some(Write::Refund {
            merchant: m.parse().ok()?,
            payment: p.parse().ok()?,
            refund: id,
        }),
        _ => None,
    }
}

/// Run a scenario against `ep`; stops at the scenario's end or on `cancel`.
pub async fn run(
    sc: &Scenario,
    ep: &Endpoints,
    inject: Option<events::Injector>,
    seed: u64,
    progress: bool,
    cancel: &CancellationToken,
) -> Result<RunReport, RunError> {
    let started_at = chrono_now();
    let timeout = sc.request_timeout();
    let moves = sc.events.iter().any(events::Event::needs_admin) || sc.hotspot.is_some();
    let admin = match (&ep.rebalancer_url, moves) {
        (Some(u), _) => Some(Client::new(u, &ep.api_key, Duration::from_secs(30))),
        (None, false) => None,
        (None, true) => return Err(RunError::NoRebalancer(sc.name.clone())),
    };
    if inject.is_none() && sc.events.iter().any(events::Event::is_fault) {
        return Err(RunError::NoInjector(sc.name.clone()));
    }
    let router = Client::new(&ep.router_url, &ep.api_key, timeout);
    let edges: Vec<Client> = ep
        .edge_urls
        .iter()
        .map(|u| Client::new(u, &ep.api_key, timeout))
        .collect();
    let (merchants, mut acked) = onboard(&router, sc, seed).await?;
    let previous_policy = match (&admin, &sc.policy) {
        (Some(a), Some(mode)) => set_policy(a, mode).await?,
        (None, Some(mode)) => {
            tracing::warn!(mode, "no rebalancer URL: the policy mode is left as it is");
            None
        }
        _ => None,
    };
    let hot = sc
        .hotspot
        .as_ref()
        .map(|h| (h.clone(), h.rank_of(merchants.len())));
    let zipf = Zipf::new(merchants.len(), sc.zipf_s);
    let chooser = OpChooser::new(&sc.mix, !edges.is_empty());
    let stats = Arc::new(Mutex::new(Stats::new()));
    let acked_live = Arc::new(Mutex::new(Vec::new()));
    let unknown = Arc::new(Mutex::new(Vec::new()));
    let sem = Arc::new(Semaphore::new(sc.max_in_flight as usize));
    let mut rng = StdRng::seed_from_u64(seed);
    let start = Instant::now();
    let start_unix = unix_now();
    // The most popular merchant (Zipf rank 0) is the subject of move events.
    let event_task = (!sc.events.is_empty()).then(|| {
        let mut evs = sc.events.clone();
        evs.sort_by_key(|e| e.at_s);
        tokio::spawn(events::run(
            admin.clone(),
            inject.clone(),
            evs,
            merchants[0].id,
            start,
        ))
    });
    let hotspot_task = match (&hot, &admin) {
        (Some((h, rank)), Some(a)) => Some(tokio::spawn(crate::hotspot::watch(
            a.clone(),
            merchants[*rank].id,
            h.clone(),
            start,
            start_unix + h.at_s as f64,
            start + sc.duration(),
        ))),
        _ => None,
    };
    let hot_from = hot.as_ref().map(|(h, rank)| {
        (
            start + Duration::from_secs(h.at_s),
            h.share,
            merchants[*rank].clone(),
        )
    });
    let interval = Duration::from_secs_f64(1.0 / f64::from(sc.rate));
    let total = u64::from(sc.rate) * sc.duration_s;
    let mut tasks = tokio::task::JoinSet::new();
    let mut last_print = 0;
    for i in 0..total {
        let intended = start + interval.mul_f64(i as f64);
        tokio::select! {
            () = tokio::time::sleep_until(intended.into()) => {}
            () = cancel.cancelled() => break,
        }
        let kind = chooser.choose(&mut rng);
        let m = match &hot_from {
            Some((at, share, m))
                if intended >= *at && rand::Rng::random::<f64>(&mut rng) < *share =>
            {
                m.clone()
            }
            _ => merchants[zipf.sample(&mut rng)].clone(),
        };
        let edge = (!edges.is_empty()).then(|| edges[i as usize % edges.len()].clone());
        let (router, stats_t, acked_live, unknown, sem_t) = (
            router.clone(),
            stats.clone(),
            acked_live.clone(),
            unknown.clone(),
            sem.clone(),
        );
        let op_seed: u64 = rand::Rng::random(&mut rng);
        let retry = sc.retry_fraction;
        tasks.spawn(async move {
            let _permit = sem_t.acquire_owned().await;
            let mut rng = StdRng::seed_from_u64(op_seed);
            let done = run_op(kind, &m, &router, edge.as_ref(), retry, &mut rng).await;
            let latency = intended.elapsed();
            let second = intended.duration_since(start).as_secs();
            let error = match done.outcome {
                Some(Outcome::Ok) => None,
                Some(Outcome::Failed(w)) => Some((false, w)),
                Some(Outcome::Unknown(w)) => Some((true, w)),
                None => Some((false, "no outcome".to_owned())),
            };
            let ran = done.ran.unwrap_or(kind);
            let mut s = stats_t.lock().unwrap_or_else(|p| p.into_inner());
            s.record(ran, second, latency, error);
            if let Some(mm) = done.retry_mismatch {
                s.retry_mismatches.push(mm);
            }
            drop(s);
            acked_live
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(done.acked);
            unknown
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(done.unknown);
        });
        while tasks.try_join_next().is_some() {}
        let now_s = start.elapsed().as_secs();
        if progress && now_s > last_print {
            last_print = now_s;
            let s = stats.lock().unwrap_or_else(|p| p.into_inner());
            let (n, e, p99) = s.second(now_s - 1);
            let (tn, te) = s.totals();
            eprint!(
                "\r[{now_s:>4}/{}s] last second: {n} ops, {e} errors, p99 {p99:.1} ms | total {tn} ops, {te} errors, {} in flight   ",
                sc.duration_s,
                sc.max_in_flight as usize - sem.available_permits()
            );
        }
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = start.elapsed();
    if progress {
        eprintln!();
    }
    acked.extend(std::mem::take(
        &mut *acked_live.lock().unwrap_or_else(|p| p.into_inner()),
    ));
    let unknown = std::mem::take(&mut *unknown.lock().unwrap_or_else(|p| p.into_inner()));
    let (resolved, unresolved_unknown) = resolve(&router, unknown).await;
    let event_outcomes = match event_task {
        Some(t) => t.await.unwrap_or_default(),
        None => Vec::new(),
    };
    let settled = match &admin {
        Some(a) => events::settle(a, Duration::from_secs(sc.settle_s)).await,
        None => true,
    };
    let resolved_unknown = resolved.len();
    acked.extend(resolved);
    let target = Target {
        catalog_url: ep.catalog_url.clone(),
        edges: ep
            .edge_urls
            .iter()
            .map(|u| EdgeTarget {
                url: u.clone(),
                api_key: ep.api_key.clone(),
            })
            .collect(),
        edge_wait: Duration::from_secs(sc.settle_s.max(1)),
    };
    // Hot spot: stop the policy before the verifier reads the map (a move
    // started after that read would make rows look missing on their owner).
    if let (Some(a), true) = (&admin, sc.hotspot.is_some()) {
        if let Err(e) = set_policy(a, "paused").await {
            tracing::warn!(error = %e, "pausing the policy for the verifier failed");
        }
        events::settle(a, Duration::from_secs(sc.settle_s)).await;
    }
    let verified = verify::verify(&target, &acked, &[]).await;
    // The previous mode comes back only after the verifier (see above).
    if let (Some(a), Some(mode)) = (&admin, previous_policy)
        && let Err(e) = set_policy(a, &mode).await
    {
        tracing::warn!(error = %e, mode, "restoring the policy mode failed");
    }
    let verifier = verified?;
    let (shard_load, shard_load_error) =
        match crate::shard_load::read(&ep.catalog_url, start_unix, unix_now()).await {
            Ok(points) => (points, None),
            Err(e) => {
                tracing::warn!(error = %e, "no per-shard load for the report");
                (Vec::new(), Some(e.to_string()))
            }
        };
    let hotspot = match hotspot_task {
        Some(t) => match t.await {
            Ok(mut h) => {
                crate::hotspot::add_spreads(&mut h, &shard_load, elapsed.as_secs_f64());
                Some(h)
            }
            Err(e) => {
                tracing::warn!(error = %e, "hotspot watcher failed");
                None
            }
        },
        None => None,
    };
    let events_ok = event_outcomes.iter().all(|e| e.ok);
    let stats = stats.lock().unwrap_or_else(|p| p.into_inner());
    let (operations, errors) = stats.totals();
    let passed = verifier.passed() && stats.retry_mismatches.is_empty() && settled && events_ok;
    Ok(RunReport {
        scenario: sc.clone(),
        router_url: ep.router_url.clone(),
        edge_urls: ep.edge_urls.clone(),
        seed,
        started_at,
        elapsed_s: elapsed.as_secs_f64(),
        operations,
        errors,
        ops: stats.summaries(elapsed),
        timeline: stats.timeline(),
        shard_load,
        shard_load_error,
        retry_mismatches: stats.retry_mismatches.clone(),
        events: event_outcomes,
        hotspot,
        settled,
        resolved_unknown,
        unresolved_unknown,
        verifier,
        passed,
        baseline: None,
    })
}

/// Set the rebalancer's policy mode; returns the mode it had (to restore).
async fn set_policy(admin: &Client, mode: &str) -> Result<Option<String>, RunError> {
    let before = admin
        .get("/v1/policy")
        .await
        .map_err(|e| RunError::Setup(format!("reading the policy mode: {e}")))?;
    if !before.status.is_success() {
        return Err(RunError::Setup(format!(
            "reading the policy mode: http {}: {}",
            before.status, before.body
        )));
    }
    let verb = match mode {
        "active" => "resume",
        "dry_run" => "dry-run",
        _ => "pause",
    };
    let r = admin
        .post(&format!("/v1/policy/{verb}"), None, &serde_json::json!({}))
        .await
        .map_err(|e| RunError::Setup(format!("setting the policy mode: {e}")))?;
    if !r.status.is_success() {
        return Err(RunError::Setup(format!(
            "setting the policy mode {mode}: http {}: {}",
            r.status, r.body
        )));
    }
    Ok(before.body["mode"].as_str().map(str::to_owned))
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn chrono_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Write `report.json` and `report.html` into `dir` (created).
pub fn write_report(dir: &Path, report: &RunReport) -> Result<PathBuf, RunError> {
    let err = |path: &Path| {
        let path = path.to_owned();
        move |source| RunError::Report { path, source }
    };
    std::fs::create_dir_all(dir).map_err(err(dir))?;
    let path = dir.join("report.json");
    let json = serde_json::to_vec_pretty(report)
        .map_err(|e| std::io::Error::other(e.to_string()))
        .map_err(err(&path))?;
    std::fs::write(&path, json).map_err(err(&path))?;
    let html = dir.join("report.html");
    std::fs::write(&html, crate::html::render(report)).map_err(err(&html))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fault_scenarios_need_an_injector_and_move_scenarios_a_rebalancer() {
        let ep = Endpoints {
            router_url: "http://127.0.0.1:9".into(),
            edge_urls: Vec::new(),
            catalog_url: "postgres://127.0.0.1:9/x".into(),
            rebalancer_url: None,
            api_key: "k".into(),
        };
        let cancel = CancellationToken::new();
        for (name, want) in [
            ("failover", "--local"),
            ("nats-restart", "--local"),
            ("slow-shard", "--local"),
            ("edge-restart", "--local"),
            ("rebalancer-crash", "rebalancer"),
            ("move-under-load", "rebalancer"),
        ] {
            let sc = Scenario::load(name).unwrap();
            let e = run(&sc, &ep, None, 1, false, &cancel)
                .await
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{name}: {e}");
        }
    }
}
