//! Edge point reads in process: the edge's [`Store`] filled with payment rows
//! through its normal apply path (CDC transactions of 1000 inserts each), then
//! random existing keys on one thread, three variants in rotating order:
//!
//! 1. raw redb read (read transaction + table + get, no decoding) of the same
//!    keys from the same file: the baseline;
//! 2. `Store::get` with the read cache disabled (read transaction + get + JSON
//!    decode, what every read cost before the cache);
//! 3. `Store::get` with the read cache (default bound), warmed by reading every
//!    key once before the clock starts.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::{Rng, SeedableRng};
use redb::{ReadableDatabase, TableDefinition};
use serde_json::json;
use shardline_edge::cache::DEFAULT_ENTRIES;
use shardline_edge::store::{Store, row_key};
use shardline_replicator::wire::{Op, RowChange, Transaction, Value};

use super::Tally;

/// The edge store's row table (`services/edge/src/store.rs`).
const ROWS: TableDefinition<&str, &[u8]> = TableDefinition::new("rows");
const BATCH: usize = 1000;

/// A payment row as the replicator publishes it (every column, text format).
fn payment_change(i: usize) -> (String, RowChange) {
    let sk = (i as u64 * 2_654_435_761 % 4_294_967_296).to_string();
    let mid = uuid::Uuid::now_v7().to_string();
    let pid = uuid::Uuid::now_v7().to_string();
    let key = row_key("payments", &[&sk, &mid, &pid]);
    let text = |s: &str| Value::Text(s.to_owned());
    let columns = vec![
        ("shard_key".to_owned(), text(&sk)),
        ("merchant_id".to_owned(), text(&mid)),
        ("payment_id".to_owned(), text(&pid)),
        ("currency".to_owned(), text("USD")),
        (
            "amount".to_owned(),
            text(&format!("{}.{:02}", i % 1000, i % 100)),
        ),
        ("captured_amount".to_owned(), text("0")),
        ("refunded_amount".to_owned(), text("0")),
        ("status".to_owned(), text("authorized")),
        ("reference".to_owned(), Value::Null),
        (
            "created_at".to_owned(),
            text("2026-11-29 20:00:00.123456+00"),
        ),
        (
            "updated_at".to_owned(),
            text("2026-11-29 20:00:00.123456+00"),
        ),
        ("version".to_owned(), text("1")),
    ];
    let change = RowChange {
        table: "payments".to_owned(),
        op: Op::Insert,
        columns,
    };
    (key, change)
}

/// Fill a new store at `path` with `rows` payments; returns their keys.
pub fn fill(path: &Path, rows: usize) -> anyhow::Result<Vec<String>> {
    let store = Store::open(path)?;
    let mut keys = Vec::with_capacity(rows);
    let mut prev = 0u64;
    let mut seq = 0u64;
    let mut i = 0;
    while i < rows {
        let n = BATCH.min(rows - i);
        let mut changes = Vec::with_capacity(n);
        for j in i..i + n {
            let (k, c) = payment_change(j);
            keys.push(k);
            changes.push(c);
        }
        seq += 1;
        let lsn = seq * 1000;
        let txn = Transaction {
            shard: "s1".to_owned(),
            commit_lsn: lsn,
            end_lsn: lsn + 1,
            commit_time_micros: 0,
            prev_commit_lsn: prev,
            changes,
        };
        prev = lsn;
        store.apply(seq, &txn, 0)?;
        i += n;
    }
    // Every key reads back through the store.
    for k in keys.iter().step_by(997) {
        store
            .get(k)?
            .with_context(|| format!("row {k:?} missing"))?;
    }
    Ok(keys)
}

/// What one round reads through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Raw,
    NoCache,
    Cached,
}

const VARIANTS: [Variant; 3] = [Variant::Raw, Variant::NoCache, Variant::Cached];
/// Names, in [`VARIANTS`] order (the first is the baseline).
pub const NAMES: [&str; 3] = ["raw redb get", "Store::get, no cache", "Store::get, cached"];

/// The three variants' rates and the cached rounds' hit ratio.
#[derive(Debug, Default)]
pub struct StoreReads {
    pub tallies: [Tally; 3],
    /// CPU time the reading thread got in the timed loops (ns; 0 where
    /// `/proc/thread-self/schedstat` is unreadable).
    pub cpu_ns: [u64; 3],
    pub hits: u64,
    pub lookups: u64,
}

impl StoreReads {
    pub fn per_sec(&self, i: usize) -> f64 {
        self.tallies[i].per_sec()
    }

    /// Reads per second of CPU the thread actually got: on a shared machine
    /// the rate per core, less what preemption by other processes took.
    pub fn per_cpu_sec(&self, i: usize) -> Option<f64> {
        (self.cpu_ns[i] > 0).then(|| self.tallies[i].ops as f64 * 1e9 / self.cpu_ns[i] as f64)
    }

    /// Rate of variant `a` over variant `b`.
    pub fn ratio(&self, a: usize, b: usize) -> f64 {
        self.per_sec(a) / self.per_sec(b).max(1e-9)
    }

    pub fn hit_ratio(&self) -> f64 {
        self.hits as f64 / (self.lookups as f64).max(1.0)
    }
}

/// CPU time of the calling thread (ns), from `/proc/thread-self/schedstat`.
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// One round's results: reads, CPU time (ns), cache (hits, lookups).
type Round = (Tally, u64, (u64, u64));

/// One round on one thread: random existing keys until `seconds` have passed.
fn read_round(
    path: &Path,
    keys: &[String],
    variant: Variant,
    seconds: u32,
) -> anyhow::Result<Round> {
    let mut rng = rand::rngs::StdRng::from_os_rng();
    let budget = Duration::from_secs(seconds.into());
    let mut ops = 0u64;
    let start;
    let mut hits = (0, 0);
    let cpu0;
    if variant == Variant::Raw {
        let db = redb::Database::open(path)?;
        cpu0 = thread_cpu_ns();
        start = Instant::now();
        while start.elapsed() < budget {
            for _ in 0..1024 {
                let k = &keys[rng.random_range(0..keys.len())];
                let r = db.begin_read()?;
                let t = r.open_table(ROWS)?;
                let v = t
                    .get(k.as_str())?
                    .with_context(|| format!("row {k:?} missing"))?;
                black_box(v.value());
            }
            ops += 1024;
        }
    } else {
        let entries = if variant == Variant::Cached {
            DEFAULT_ENTRIES
        } else {
            0
        };
        let store = Store::open_with_cache(path, entries)?;
        if variant == Variant::Cached {
            for k in keys {
                black_box(store.get(k)?);
            }
        }
        let before = store.cache_stats();
        cpu0 = thread_cpu_ns();
        start = Instant::now();
        while start.elapsed() < budget {
            for _ in 0..1024 {
                let k = &keys[rng.random_range(0..keys.len())];
                let row = store.get(k)?;
                anyhow::ensure!(row.is_some(), "row {k:?} missing");
                black_box(row);
            }
            ops += 1024;
        }
        let after = store.cache_stats();
        hits = (
            after.hits - before.hits,
            after.hits + after.misses - before.hits - before.misses,
        );
    }
    let tally = Tally {
        ops,
        elapsed: start.elapsed(),
        latencies_us: Vec::new(),
    };
    let cpu = match (cpu0, thread_cpu_ns()) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => 0,
    };
    Ok((tally, cpu, hits))
}

/// Fill a store in `dir`; one warm-up round (1 s) of each variant, then
/// `rounds` rounds of all three, rotating which runs first.
pub async fn run(dir: &Path, rows: usize, rounds: u32, seconds: u32) -> anyhow::Result<StoreReads> {
    let path: PathBuf = dir.join("bench-edge.redb");
    let t0 = Instant::now();
    let keys = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || fill(&path, rows)).await??
    };
    let size = std::fs::metadata(&path).map_or(0, |m| m.len());
    eprintln!(
        "  store: {rows} payment rows applied in {:.1} s ({:.1} MB file)",
        t0.elapsed().as_secs_f64(),
        size as f64 / 1e6
    );
    let keys = Arc::new(keys);
    let round = |variant: Variant, secs: u32| {
        let (path, keys) = (path.clone(), keys.clone());
        async move {
            tokio::task::spawn_blocking(move || read_round(&path, &keys, variant, secs))
                .await
                .context("read round panicked")?
        }
    };
    for v in VARIANTS {
        round(v, 1).await?;
    }
    let mut out = StoreReads::default();
    for r in 0..rounds as usize {
        for j in 0..VARIANTS.len() {
            let i = (r + j) % VARIANTS.len();
            let (t, cpu, (hits, lookups)) = round(VARIANTS[i], seconds).await?;
            eprintln!(
                "  round {} {:<22} {:>11.0} reads/s, {:>4.0}% of a core",
                r + 1,
                NAMES[i],
                t.per_sec(),
                cpu as f64 / 1e7 / t.elapsed.as_secs_f64().max(1e-9)
            );
            out.tallies[i].add_round(t);
            out.cpu_ns[i] += cpu;
            if VARIANTS[i] == Variant::Cached {
                out.hits += hits;
                out.lookups += lookups;
            }
        }
    }
    Ok(out)
}

/// Rates of the three variants (one thread; only the rates mean something),
/// the ratios to the raw baseline and of cached to uncached, the hit ratio.
pub fn report(res: &StoreReads, rows: u32) -> serde_json::Value {
    json!({
        NAMES[0]: {"per_s": res.per_sec(0), "per_cpu_s": res.per_cpu_sec(0)},
        NAMES[1]: {"per_s": res.per_sec(1), "per_cpu_s": res.per_cpu_sec(1)},
        NAMES[2]: {"per_s": res.per_sec(2), "per_cpu_s": res.per_cpu_sec(2), "hit_ratio": res.hit_ratio()},
        "ratio_no_cache_to_raw": res.ratio(1, 0),
        "ratio_cached_to_raw": res.ratio(2, 0),
        "ratio_cached_to_no_cache": res.ratio(2, 1),
        "rows": rows,
    })
}

pub fn print(res: &StoreReads, rows: u32) {
    println!("edge store point reads in process ({rows} rows, one thread; goal >= 1M reads/s)");
    println!(
        "  {:<34} {:>12} {:>14}",
        "variant", "reads/s", "reads/CPU-s"
    );
    for (i, name) in NAMES.iter().enumerate() {
        let name = if i == 0 {
            format!("{name} (baseline)")
        } else {
            (*name).to_owned()
        };
        let cpu = res
            .per_cpu_sec(i)
            .map_or_else(|| "-".to_owned(), |r| format!("{r:.0}"));
        println!("  {name:<34} {:>12.0} {cpu:>14}", res.per_sec(i));
    }
    println!("  ratio {}/{}: {:.3}x", NAMES[1], NAMES[0], res.ratio(1, 0));
    println!("  ratio {}/{}: {:.3}x", NAMES[2], NAMES[0], res.ratio(2, 0));
    println!("  ratio {}/{}: {:.3}x", NAMES[2], NAMES[1], res.ratio(2, 1));
    println!("  cache hit ratio (cached rounds): {:.4}", res.hit_ratio());
}
