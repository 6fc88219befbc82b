//! Edge point reads in process: the edge's [`Store`] filled with payment rows
//! through its normal apply path (CDC transactions of 1000 inserts each), then
//! `Store::get` of random existing keys on one thread, versus the raw redb read
//! (read transaction + table + get, no decoding) of the same keys from the same
//! file, alternating rounds.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::{Rng, SeedableRng};
use redb::{ReadableDatabase, TableDefinition};
use serde_json::json;
use shardline_edge::store::{Store, row_key};
use shardline_replicator::wire::{Op, RowChange, Transaction, Value};

use super::{AbResult, Tally, alternate};

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

/// One round on one thread: random existing keys until `seconds` have passed.
fn read_round(
    path: &Path,
    keys: &[String],
    via_store: bool,
    seconds: u32,
) -> anyhow::Result<Tally> {
    let mut rng = rand::rngs::StdRng::from_os_rng();
    let budget = Duration::from_secs(seconds.into());
    let mut ops = 0u64;
    let start;
    if via_store {
        let store = Store::open(path)?;
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
    } else {
        let db = redb::Database::open(path)?;
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
    }
    Ok(Tally {
        ops,
        elapsed: start.elapsed(),
        latencies_us: Vec::new(),
    })
}

/// Fill a store in `dir`, then alternate raw redb and `Store::get` rounds.
pub async fn run(dir: &Path, rows: usize, rounds: u32, seconds: u32) -> anyhow::Result<AbResult> {
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
    alternate(
        ["raw redb get", "Store::get"],
        "reads/s",
        rounds,
        seconds,
        |via_store, secs| {
            let (path, keys) = (path.clone(), keys.clone());
            async move {
                tokio::task::spawn_blocking(move || read_round(&path, &keys, via_store, secs))
                    .await
                    .context("read round panicked")?
            }
        },
    )
    .await
}

/// `{"<baseline>": {per_s}, "<candidate>": {per_s}, "ratio", "rows"}` (one
/// thread, no per-read timing: only the rates mean something).
pub fn report(res: &AbResult, rows: u32) -> serde_json::Value {
    json!({
        res.names[0]: {"per_s": res.baseline.per_sec()},
        res.names[1]: {"per_s": res.candidate.per_sec()},
        "ratio": res.ratio(),
        "rows": rows,
    })
}

pub fn print(res: &AbResult, rows: u32) {
    println!("edge store point reads in process ({rows} rows, one thread; goal >= 1M reads/s)");
    println!("  {:<34} {:>12}", "variant", "reads/s");
    println!(
        "  {:<34} {:>12.0}",
        format!("{} (baseline)", res.names[0]),
        res.baseline.per_sec()
    );
    println!("  {:<34} {:>12.0}", res.names[1], res.candidate.per_sec());
    println!(
        "  ratio {}/{}: {:.3}x",
        res.names[1],
        res.names[0],
        res.ratio()
    );
}
