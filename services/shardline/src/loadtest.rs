//! `shardline loadtest`: run a scenario against a running system (URLs + key, or
//! the local cluster described in `--dir`), or against a throwaway local system
//! (`--local`: booted like `shardline up` in a temporary directory, torn down at
//! the end). Writes `<out>/<run>/report.json`; exits 1 when the verifier found a
//! violation.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use shardline_loadtest::events::{Action, Fault, Injector};
use shardline_loadtest::proxy::DelayProxy;
use shardline_loadtest::run::{self, Endpoints};
use shardline_loadtest::scenario::Scenario;
use tokio_util::sync::CancellationToken;

use crate::config::ConfigError;
use crate::local::{LocalCluster, admin_key_path};
use crate::up::{LocalStack, Services, UpConfig, spawn_signal_handler};

#[derive(Debug, Args)]
pub struct LoadtestArgs {
    /// A preset (steady) or a scenario TOML file.
    #[arg(long, default_value = "steady")]
    pub scenario: String,
    /// Boot a throwaway local system (3 shards, NATS, every service) for the run.
    #[arg(long)]
    pub local: bool,
    /// Router URL (default: the local cluster's in --dir).
    #[arg(long, env = "SHARDLINE_ROUTER_URL")]
    pub router: Option<String>,
    /// Edge URL, repeatable (default: the local cluster's edges).
    #[arg(long = "edge")]
    pub edges: Vec<String>,
    /// Catalog URL, for the verifier (default: the local cluster's).
    #[arg(long, env = "SHARDLINE_CATALOG_URL")]
    pub catalog: Option<String>,
    /// Rebalancer admin API URL, for scenarios with moves (default: the local
    /// cluster's).
    #[arg(long, env = "SHARDLINE_REBALANCER_URL")]
    pub rebalancer: Option<String>,
    /// API key with admin scope (default: the local cluster's admin key).
    #[arg(long, env = "SHARDLINE_API_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// The local cluster's directory (read when URLs are not given).
    #[arg(long, default_value = ".shardline")]
    pub dir: PathBuf,
    /// Override the scenario's duration (seconds).
    #[arg(long)]
    pub duration: Option<u64>,
    /// Override the scenario's arrival rate (operations per second).
    #[arg(long)]
    pub rate: Option<u32>,
    /// Override the scenario's merchant count.
    #[arg(long)]
    pub merchants: Option<u32>,
    /// Random seed (default: from the clock; printed and stored in the report).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Reports go to <out>/<scenario>-<unix time>/.
    #[arg(long, default_value = "target/loadtest")]
    pub out: PathBuf,
    /// No live progress line.
    #[arg(long)]
    pub quiet: bool,
    /// An earlier report.json to compare with: regressions are flagged.
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// Relative change that counts as a regression (0.2 = 20 %).
    #[arg(long, default_value_t = 0.2)]
    pub tolerance: f64,
}

fn scenario(a: &LoadtestArgs) -> Result<Scenario, ConfigError> {
    let mut s =
        Scenario::load(&a.scenario).map_err(|e| ConfigError::new("scenario", e.to_string()))?;
    if let Some(d) = a.duration {
        s.duration_s = d;
    }
    if let Some(r) = a.rate {
        s.rate = r;
    }
    if let Some(m) = a.merchants {
        s.merchants = m;
    }
    s.validate()
        .map_err(|e| ConfigError::new("scenario", e.to_string()))?;
    Ok(s)
}

/// Endpoints from flags, falling back to the local cluster in `--dir`.
fn endpoints(a: &LoadtestArgs) -> Result<Endpoints, ConfigError> {
    let local = LocalCluster::load(&a.dir)?;
    let missing = |what: &str| {
        ConfigError::new(
            what,
            format!(
                "not given and no running local cluster in {} (start one with `shardline up`, or use --local)",
                a.dir.display()
            ),
        )
    };
    let router_url = match (&a.router, &local) {
        (Some(r), _) => r.clone(),
        (None, Some(l)) => l.router_url.clone().ok_or_else(|| missing("router"))?,
        (None, None) => return Err(missing("router")),
    };
    let catalog_url = match (&a.catalog, &local) {
        (Some(c), _) => c.clone(),
        (None, Some(l)) => l.catalog_url.clone(),
        (None, None) => return Err(missing("catalog")),
    };
    let edge_urls = match (&a.edges, &local) {
        (e, _) if !e.is_empty() => e.clone(),
        (_, Some(l)) if a.router.is_none() => l.edge_urls.clone(),
        _ => Vec::new(),
    };
    let api_key = match &a.key {
        Some(k) => k.clone(),
        None => std::fs::read_to_string(admin_key_path(&a.dir))
            .map(|k| k.trim().to_owned())
            .map_err(|_| missing("key"))?,
    };
    for (setting, url) in [("router", &router_url)]
        .into_iter()
        .chain(edge_urls.iter().map(|u| ("edge", u)))
    {
        if !url.starts_with("http://") {
            return Err(ConfigError::new(
                setting,
                format!("{url:?} must be an http:// URL"),
            ));
        }
    }
    let rebalancer_url = a
        .rebalancer
        .clone()
        .or_else(|| local.as_ref().and_then(|l| l.rebalancer_url.clone()));
    Ok(Endpoints {
        router_url,
        edge_urls,
        catalog_url,
        rebalancer_url,
        api_key,
    })
}

pub async fn run(a: LoadtestArgs) -> anyhow::Result<()> {
    let sc = scenario(&a)?;
    if !(0.0..=10.0).contains(&a.tolerance) {
        return Err(ConfigError::new("tolerance", "must be within 0..=10").into());
    }
    let baseline = match &a.baseline {
        Some(p) => Some(
            shardline_loadtest::baseline::load(p)
                .map_err(|e| ConfigError::new("baseline", e.to_string()))?,
        ),
        None => None,
    };
    let seed = a.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let cancel = CancellationToken::new();
    spawn_signal_handler(cancel.clone());
    let run_name = format!(
        "{}-{}",
        sc.name,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    );
    let mut report = if a.local {
        let tmp = tempfile::tempdir().context("creating a temporary directory")?;
        let cfg = UpConfig {
            dir: tmp.path().join("cluster"),
            shards: Some(3),
            ranges_per_shard: 4,
            catalog_port: None,
            nats_port: None,
            fresh: true,
            edges: 1,
        };
        check_fault_targets(&sc, cfg.shards.unwrap_or(3) as usize, cfg.edges as usize)?;
        eprintln!("loadtest: booting a local system in {}", cfg.dir.display());
        let stack = LocalStack::boot(&cfg).await?;
        let proxies = Arc::new(slow_shard_proxies(&sc, &stack).await?);
        let services_stop = CancellationToken::new();
        // Load samples every second: the report's per-shard chart.
        let services = Arc::new(
            Services::start_with(
                &stack,
                cfg.edges,
                Some(Duration::from_secs(1)),
                &services_stop,
            )
            .await?,
        );
        let admin_key = stack.admin_key.clone();
        let catalog_url = stack.description.catalog_url.clone();
        let stack = Arc::new(tokio::sync::Mutex::new(stack));
        let inject = injector(stack.clone(), services.clone(), proxies.clone());
        let ep = Endpoints {
            router_url: services.router_url.clone(),
            edge_urls: services.edge_urls.clone(),
            catalog_url,
            rebalancer_url: Some(services.rebalancer_url.clone()),
            api_key: admin_key,
        };
        eprintln!(
            "loadtest: {} for {} s at {}/s (seed {seed}); router {}",
            sc.name, sc.duration_s, sc.rate, ep.router_url
        );
        let r = run::run(&sc, &ep, Some(inject), seed, !a.quiet, &cancel).await;
        services_stop.cancel();
        match Arc::try_unwrap(services) {
            Ok(s) => s.join().await,
            Err(_) => tracing::warn!("services still referenced at the end; not waiting for them"),
        }
        drop(proxies);
        match Arc::try_unwrap(stack) {
            Ok(s) => s.into_inner().shutdown().await,
            // Still shared (a fault in progress): dropping stops every server.
            Err(s) => drop(s),
        }
        r?
    } else {
        let ep = endpoints(&a)?;
        eprintln!(
            "loadtest: {} for {} s at {}/s (seed {seed}); router {}",
            sc.name, sc.duration_s, sc.rate, ep.router_url
        );
        run::run(&sc, &ep, None, seed, !a.quiet, &cancel).await?
    };
    if let (Some(b), Some(p)) = (&baseline, &a.baseline) {
        report.baseline = Some(shardline_loadtest::baseline::compare(
            &p.display().to_string(),
            b,
            &report,
            a.tolerance,
        ));
    }
    let path = run::write_report(&a.out.join(&run_name), &report)?;
    print_summary(&report);
    println!("report: {} (and report.html beside it)", path.display());
    if report.passed {
        Ok(())
    } else {
        anyhow::bail!(
            "verifier found {} violation(s), {} idempotent replay mismatch(es)",
            report.verifier.violations.len(),
            report.retry_mismatches.len()
        )
    }
}

fn print_summary(r: &run::RunReport) {
    println!(
        "{}: {} operations in {:.1} s ({:.0}/s), {} errors",
        r.scenario.name,
        r.operations,
        r.elapsed_s,
        r.operations as f64 / r.elapsed_s.max(1e-9),
        r.errors
    );
    println!(
        "{:<12} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "op", "count", "errors", "ops/s", "p50 ms", "p99 ms", "p999 ms", "max ms"
    );
    for o in &r.ops {
        let errors: u64 = o.failed.values().sum::<u64>() + o.unknown.values().sum::<u64>();
        println!(
            "{:<12} {:>8} {:>8} {:>8.1} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            o.op.name(),
            o.count,
            errors,
            o.throughput,
            o.p50_ms,
            o.p99_ms,
            o.p999_ms,
            o.max_ms
        );
    }
    let c = &r.verifier.checked;
    println!(
        "verifier: {} ({} acknowledged writes, {} journals, {} edge reads, {} moves in flight, {} unknown outcomes resolved, {} unresolved)",
        if r.verifier.passed() {
            "passed"
        } else {
            "FAILED"
        },
        c.acked,
        c.journals,
        c.edge_reads,
        c.moves_in_flight,
        r.resolved_unknown,
        r.unresolved_unknown.len()
    );
    for e in &r.events {
        println!(
            "event at {} s: {:?} -> {}{} (move {}, {}finished at {:.1} s, phases {})",
            e.at_s,
            e.action,
            e.result,
            if e.ok { "" } else { " FAILED" },
            e.move_id.as_deref().unwrap_or("-"),
            e.fault_at_s
                .map(|t| format!("injected at {t:.1} s, "))
                .unwrap_or_default(),
            e.finished_s,
            e.phase_ms
        );
    }
    print_shard_load(r);
    if !r.settled {
        println!("  moves did not settle within {} s", r.scenario.settle_s);
    }
    if let Some(c) = &r.baseline {
        let regressions: Vec<_> = c.regressions().collect();
        println!(
            "against {}: {} regression(s) beyond {:.0} %",
            c.baseline,
            regressions.len(),
            c.tolerance * 100.0
        );
        for g in regressions {
            println!(
                "  REGRESSION {} {}: {:.2} -> {:.2}",
                g.op, g.metric, g.baseline, g.now
            );
        }
    }
    for v in &r.verifier.violations {
        println!(
            "  violation: {}",
            serde_json::to_string(v).unwrap_or_default()
        );
    }
    for m in &r.retry_mismatches {
        println!("  replay mismatch: {m}");
    }
}

/// Per shard: requests and request-weighted mean router -> shard latency over
/// the run, and the slowest interval.
fn print_shard_load(r: &run::RunReport) {
    for (name, pts) in shardline_loadtest::shard_load::series(&r.shard_load) {
        let req: i64 = pts.iter().map(|p| p.requests).sum();
        let lat: f64 = pts
            .iter()
            .map(|p| p.mean_latency_ms * p.requests as f64)
            .sum::<f64>()
            / (req.max(1) as f64);
        let worst = pts.iter().map(|p| p.mean_latency_ms).fold(0.0, f64::max);
        println!(
            "shard {name}: {req} router requests, mean {lat:.2} ms to the shard (worst interval {worst:.2} ms)"
        );
    }
    if let Some(e) = &r.shard_load_error {
        println!("per-shard load: {e}");
    }
}

/// Every fault event must name a shard or edge the local system has (exit 2
/// before any load otherwise).
fn check_fault_targets(sc: &Scenario, shards: usize, edges: usize) -> Result<(), ConfigError> {
    for (i, e) in sc.events.iter().enumerate() {
        let (what, n, have) = match e.action {
            Action::KillShard | Action::SlowShard => ("shard", e.shard.unwrap_or(1), shards),
            Action::KillEdge => ("edge", e.edge.unwrap_or(1), edges),
            _ => continue,
        };
        if n == 0 || n > have {
            return Err(ConfigError::new(
                "scenario",
                format!(
                    "event {} ({} at {} s): {what} = {n}, but the local system has {have} {what}(s)",
                    i + 1,
                    shardline_loadtest::events::action_name(e.action),
                    e.at_s
                ),
            ));
        }
    }
    Ok(())
}

/// A delay proxy in front of each shard a `slow_shard` event names, registered
/// as that shard's DSN in the catalog before the services start: the router,
/// the move engine and the verifier reach the shard through it (the replicator,
/// started from the local description, does not). Indexed by shard.
async fn slow_shard_proxies(
    sc: &Scenario,
    stack: &LocalStack,
) -> anyhow::Result<Vec<Option<DelayProxy>>> {
    let mut proxies: Vec<Option<DelayProxy>> = stack.shards.iter().map(|_| None).collect();
    for e in sc.events.iter().filter(|e| e.action == Action::SlowShard) {
        let i = e.shard.unwrap_or(1).saturating_sub(1);
        let (Some(slot), Some(shard)) = (proxies.get_mut(i), stack.description.shards.get(i))
        else {
            continue;
        };
        if slot.is_some() {
            continue;
        }
        let upstream = std::net::SocketAddr::from(([127, 0, 0, 1], shard.port));
        let proxy =
            DelayProxy::start(std::net::SocketAddr::from(([127, 0, 0, 1], 0)), upstream).await?;
        let url = shard.url.replace(
            &format!(":{}/", shard.port),
            &format!(":{}/", proxy.local_addr().port()),
        );
        anyhow::ensure!(url != shard.url, "cannot point {} at a proxy", shard.url);
        let id: shardline_core::ShardId = shard.id.parse()?;
        shardline_core::catalog::upsert_shard(&stack.catalog_pool, &id, &url).await?;
        eprintln!(
            "loadtest: shard {} reached through a delay proxy on {}",
            shard.id,
            proxy.local_addr()
        );
        *slot = Some(proxy);
    }
    Ok(proxies)
}

/// Faults on the local system: SIGKILL a shard's PostgreSQL or NATS, wait, and
/// restart it on its data (crash recovery); slow a shard through its proxy;
/// crash the edge or the rebalancer and start it again in place.
fn injector(
    stack: Arc<tokio::sync::Mutex<LocalStack>>,
    services: Arc<Services>,
    proxies: Arc<Vec<Option<DelayProxy>>>,
) -> Injector {
    Arc::new(move |fault: Fault| {
        let (stack, services, proxies) = (stack.clone(), services.clone(), proxies.clone());
        Box::pin(async move {
            match fault {
                Fault::KillShard { index, down } => {
                    let mut st = stack.lock().await;
                    let n = st.shards.len();
                    let pg = st
                        .shards
                        .get_mut(index)
                        .ok_or_else(|| format!("no shard {} (the system has {n})", index + 1))?;
                    pg.kill();
                    tokio::time::sleep(down).await;
                    pg.restart().await.map_err(|e| e.to_string())?;
                    Ok("restarted".to_owned())
                }
                Fault::KillNats { down } => {
                    let mut st = stack.lock().await;
                    st.nats.kill();
                    tokio::time::sleep(down).await;
                    st.nats.restart().await.map_err(|e| e.to_string())?;
                    Ok("restarted".to_owned())
                }
                Fault::SlowShard {
                    index,
                    delay,
                    duration,
                } => {
                    let proxy = proxies
                        .get(index)
                        .and_then(Option::as_ref)
                        .ok_or_else(|| format!("shard {} has no delay proxy", index + 1))?;
                    proxy.set_delay(delay);
                    tokio::time::sleep(duration).await;
                    proxy.set_delay(Duration::ZERO);
                    Ok("restored".to_owned())
                }
                Fault::KillEdge { index, down } => {
                    let n = services.edges.len();
                    let edge = services
                        .edges
                        .get(index)
                        .ok_or_else(|| format!("no edge {} (the system has {n})", index + 1))?;
                    edge.kill().await;
                    tokio::time::sleep(down).await;
                    edge.restart().await.map_err(|e| format!("{e:#}"))?;
                    Ok("restarted".to_owned())
                }
                Fault::KillRebalancer { down } => {
                    services.rebalancer.kill().await;
                    tokio::time::sleep(down).await;
                    services
                        .rebalancer
                        .restart()
                        .await
                        .map_err(|e| format!("{e:#}"))?;
                    Ok("restarted".to_owned())
                }
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_events_must_name_a_shard_or_edge_the_local_system_has() {
        let sc = Scenario::load("slow-shard").unwrap();
        assert!(check_fault_targets(&sc, 3, 1).is_ok());
        let e = check_fault_targets(&sc, 1, 1).unwrap_err().to_string();
        assert!(
            e.contains("event 1 (slow_shard at 15 s): shard = 2") && e.contains("has 1 shard"),
            "{e}"
        );
        let mut sc = Scenario::load("edge-restart").unwrap();
        sc.events[0].edge = Some(2);
        let e = check_fault_targets(&sc, 3, 1).unwrap_err().to_string();
        assert!(e.contains("edge = 2"), "{e}");
        assert!(check_fault_targets(&Scenario::load("rebalancer-crash").unwrap(), 3, 1).is_ok());
    }
}
