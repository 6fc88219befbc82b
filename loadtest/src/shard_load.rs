//! Per-shard load over the run, as the routers saw it: the catalog's
//! `load_samples` (each router writes, every flush interval, per range it
//! touched: the serving shard, requests, and the summed router -> shard
//! latency). Read once after the load; rows are summed per router, flush and
//! shard, and placed at the middle of their interval on the run's time axis.
//! Resolution is the routers' flush interval (1 s under `--local`, 10 s by
//! default). Edge reads never reach a router and are not in it.

use serde::Serialize;
use sqlx::Row;
use sqlx::postgres::PgPoolOptions;

#[derive(Debug, thiserror::Error)]
pub enum ShardLoadError {
    #[error("reading load_samples from the catalog: {0}")]
    Catalog(#[from] sqlx::Error),
}

/// One router's flush interval, one shard.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShardPoint {
    pub shard: String,
    pub router: String,
    /// Middle of the interval, seconds after the load started.
    pub at_s: f64,
    pub interval_s: f64,
    pub requests: i64,
    pub requests_per_s: f64,
    /// Mean router -> shard latency over the interval's requests.
    pub mean_latency_ms: f64,
}

/// Samples whose interval ended within `[from, to]` (Unix seconds); `from` is
/// the load's start, the time axis' zero.
pub async fn read(
    catalog_url: &str,
    from: f64,
    to: f64,
) -> Result<Vec<ShardPoint>, ShardLoadError> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(catalog_url)
        .await?;
    let rows = sqlx::query(
        "SELECT shard_id, router_id, extract(epoch FROM at)::float8 AS at,
                max(interval_ms)::float8 / 1000 AS interval_s,
                sum(requests)::bigint AS requests, sum(latency_us_sum)::float8 AS latency_us
         FROM load_samples
         WHERE at >= to_timestamp($1) AND at <= to_timestamp($2)
         GROUP BY shard_id, router_id, at
         ORDER BY at, shard_id, router_id",
    )
    .bind(from)
    .bind(to)
    .fetch_all(&pool)
    .await;
    pool.close().await;
    let mut out = Vec::new();
    for r in rows? {
        let at: f64 = r.try_get("at")?;
        let interval_s: f64 = r.try_get::<f64, _>("interval_s")?.max(1e-3);
        let requests: i64 = r.try_get("requests")?;
        let latency_us: f64 = r.try_get("latency_us")?;
        out.push(ShardPoint {
            shard: r.try_get("shard_id")?,
            router: r.try_get("router_id")?,
            at_s: (at - interval_s / 2.0 - from).max(0.0),
            interval_s,
            requests,
            requests_per_s: requests as f64 / interval_s,
            mean_latency_ms: if requests > 0 {
                latency_us / requests as f64 / 1000.0
            } else {
                0.0
            },
        });
    }
    Ok(out)
}

/// Series for the charts: one per shard (and router, when several reported).
pub fn series(points: &[ShardPoint]) -> Vec<(String, Vec<&ShardPoint>)> {
    let routers: std::collections::BTreeSet<&str> =
        points.iter().map(|p| p.router.as_str()).collect();
    let mut m: std::collections::BTreeMap<String, Vec<&ShardPoint>> = Default::default();
    for p in points {
        let name = if routers.len() > 1 {
            format!("{} ({})", p.shard, p.router)
        } else {
            p.shard.clone()
        };
        m.entry(name).or_default().push(p);
    }
    m.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(shard: &str, router: &str, at_s: f64) -> ShardPoint {
        ShardPoint {
            shard: shard.into(),
            router: router.into(),
            at_s,
            interval_s: 1.0,
            requests: 10,
            requests_per_s: 10.0,
            mean_latency_ms: 2.0,
        }
    }

    #[test]
    fn one_series_per_shard_or_per_shard_and_router() {
        let one = [p("s1", "r", 0.5), p("s2", "r", 0.5), p("s1", "r", 1.5)];
        let s = series(&one);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].0.as_str(), s[0].1.len()), ("s1", 2));
        let two = [p("s1", "a", 0.5), p("s1", "b", 0.5)];
        let names: Vec<String> = series(&two).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["s1 (a)", "s1 (b)"]);
    }
}
