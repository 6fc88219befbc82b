//! The `hotspot` scenario's measurements: from `at_s` on, a share of all
//! operations goes to one (formerly cold) merchant; a watcher follows, through
//! the rebalancer's admin API, what the autonomous policy does about it: its
//! first taken decision, the moves it plans and when they finish, and when the
//! hot merchant is served by another shard. Per-shard load before, during and
//! after comes from the routers' load samples ([`crate::shard_load`]).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use shardline_core::MerchantId;

use crate::http::Client;
use crate::shard_load::ShardPoint;

/// `[hotspot]` in a scenario file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hotspot {
    /// Seconds after the load starts when the merchant turns hot.
    pub at_s: u64,
    /// Share of all operations sent to the hot merchant from then on (0..1).
    pub share: f64,
    /// Popularity rank of the merchant that turns hot (0 = most popular);
    /// default: a third of the way down the ranking (a cold merchant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank: Option<usize>,
}

impl Hotspot {
    /// The field that is wrong and why.
    pub fn validate(&self, merchants: u32, duration_s: u64) -> Result<(), (&'static str, String)> {
        if self.at_s >= duration_s {
            return Err((
                "hotspot.at_s",
                format!(
                    "{} is not before the end of the run ({duration_s} s)",
                    self.at_s
                ),
            ));
        }
        if !(self.share > 0.0 && self.share < 1.0) {
            return Err((
                "hotspot.share",
                format!("{} must be within (0, 1)", self.share),
            ));
        }
        if let Some(r) = self.rank
            && r >= merchants as usize
        {
            return Err((
                "hotspot.rank",
                format!("{r} is not below merchants = {merchants}"),
            ));
        }
        Ok(())
    }

    /// The hot merchant's index in the popularity ranking.
    #[must_use]
    pub fn rank_of(&self, merchants: usize) -> usize {
        self.rank
            .unwrap_or(merchants / 3)
            .min(merchants.saturating_sub(1))
    }
}

/// A move the policy planned after the onset.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyMove {
    pub id: String,
    pub reason: String,
    pub range_id: i64,
    pub keys: [i64; 2],
    pub source: String,
    pub target: String,
    pub state: String,
    /// Seconds after the onset.
    pub created_s: f64,
    pub finished_s: Option<f64>,
    /// Writes held at cutover (ms), from the move's phase timings.
    pub pause_ms: Option<f64>,
}

/// max/mean of the shards' request rates over a window of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Spread {
    /// Seconds after the load started.
    pub from_s: f64,
    pub to_s: f64,
    pub per_shard: Vec<(String, f64)>,
    pub max_over_mean: f64,
}

/// What the policy did about the hot spot.
#[derive(Debug, Clone, Serialize)]
pub struct HotspotOutcome {
    pub merchant: String,
    pub shard_key: u32,
    pub onset_s: f64,
    pub share: f64,
    /// The hot merchant's shard at the onset, and at the end.
    pub initial_owner: String,
    pub final_owner: String,
    /// Seconds after the onset of the first taken policy decision, and it.
    pub first_decision_s: Option<f64>,
    pub first_decision: Option<String>,
    pub moves: Vec<PolicyMove>,
    /// Seconds after the onset when the first policy move finished (`done`).
    pub relieved_s: Option<f64>,
    /// Seconds after the onset when the hot merchant's key was owned by
    /// another shard (isolated and moved).
    pub merchant_moved_s: Option<f64>,
    /// Shard load spread before the onset, while hot (before any relief) and
    /// at the end of the run.
    pub before: Option<Spread>,
    pub during: Option<Spread>,
    pub after: Option<Spread>,
    /// Every policy decision after the onset (taken or declined), oldest
    /// first: seconds after the onset, kind, reason code, explanation.
    pub decisions: Vec<(f64, String, String, String)>,
    /// What the watcher could not read (the admin API down, say).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

fn list(v: &Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

fn unix(s: &str) -> Option<f64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis() as f64 / 1000.0)
}

async fn owner_of(admin: &Client, key: i64) -> Result<String, String> {
    let r = admin.get("/v1/ranges").await.map_err(|e| e.to_string())?;
    crate::events::range_owner(&r.body, key)
        .map(str::to_owned)
        .ok_or_else(|| format!("no range holds key {key} (http {})", r.status))
}

/// Follow the policy from the onset until `end` (Unix seconds of the onset:
/// `onset_unix`). `load_start` is the load's start (the time axis' zero).
pub async fn watch(
    admin: Client,
    merchant: MerchantId,
    hot: Hotspot,
    load_start: Instant,
    onset_unix: f64,
    end: Instant,
) -> HotspotOutcome {
    let key = shardline_core::shard_key(&merchant);
    tokio::time::sleep_until((load_start + Duration::from_secs(hot.at_s)).into()).await;
    let mut out = HotspotOutcome {
        merchant: merchant.to_string(),
        shard_key: key,
        onset_s: hot.at_s as f64,
        share: hot.share,
        initial_owner: String::new(),
        final_owner: String::new(),
        first_decision_s: None,
        first_decision: None,
        moves: Vec::new(),
        relieved_s: None,
        merchant_moved_s: None,
        before: None,
        during: None,
        after: None,
        decisions: Vec::new(),
        errors: Vec::new(),
    };
    let note = |out: &mut HotspotOutcome, e: String| {
        if out.errors.len() < 20 {
            out.errors.push(e);
        }
    };
    match owner_of(&admin, i64::from(key)).await {
        Ok(o) => out.initial_owner = o,
        Err(e) => note(&mut out, e),
    }
    let since = |t: f64| ((t - onset_unix) * 10.0).round() / 10.0;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let elapsed = now.duration_since(load_start).as_secs_f64() - out.onset_s;
        match owner_of(&admin, i64::from(key)).await {
            Ok(o) => {
                if out.merchant_moved_s.is_none()
                    && !out.initial_owner.is_empty()
                    && o != out.initial_owner
                {
                    out.merchant_moved_s = Some((elapsed * 10.0).round() / 10.0);
                }
                out.final_owner = o;
            }
            Err(e) => note(&mut out, e),
        }
        if out.first_decision.is_none() {
            match admin.get("/v1/decisions?taken=true&limit=20").await {
                Ok(r) => {
                    let first = list(&r.body)
                        .into_iter()
                        .filter(|d| d["dry_run"].as_bool() != Some(true))
                        .filter_map(|d| Some((unix(d["at"].as_str()?)?, d)))
                        .filter(|(t, _)| *t >= onset_unix)
                        .min_by(|a, b| a.0.total_cmp(&b.0));
                    if let Some((t, d)) = first {
                        out.first_decision_s = Some(since(t));
                        out.first_decision = Some(format!(
                            "{} [{}] {}",
                            d["kind"].as_str().unwrap_or("?"),
                            d["reason"].as_str().unwrap_or("?"),
                            d["decision"]["explanation"].as_str().unwrap_or("")
                        ));
                    }
                }
                Err(e) => note(&mut out, e.to_string()),
            }
        }
        match admin.get("/v1/moves?limit=100").await {
            Ok(r) => {
                out.moves = list(&r.body)
                    .into_iter()
                    .filter(|m| {
                        m["reason"]
                            .as_str()
                            .is_some_and(|x| x.starts_with("policy:"))
                    })
                    .filter_map(|m| {
                        let created = unix(m["created_at"].as_str()?)?;
                        (created >= onset_unix).then(|| PolicyMove {
                            id: m["id"].as_str().unwrap_or_default().to_owned(),
                            reason: m["reason"].as_str().unwrap_or_default().to_owned(),
                            range_id: m["range_id"].as_i64().unwrap_or_default(),
                            keys: [
                                m["start_key"].as_i64().unwrap_or_default(),
                                m["end_key"].as_i64().unwrap_or_default(),
                            ],
                            source: m["source_shard"].as_str().unwrap_or_default().to_owned(),
                            target: m["target_shard"].as_str().unwrap_or_default().to_owned(),
                            state: m["state"].as_str().unwrap_or_default().to_owned(),
                            created_s: since(created),
                            finished_s: m["finished_at"].as_str().and_then(unix).map(since),
                            pause_ms: m["phase_ms"]["pause_ms"].as_f64(),
                        })
                    })
                    .collect();
                out.moves
                    .sort_by(|a, b| a.created_s.total_cmp(&b.created_s));
                out.relieved_s = out
                    .moves
                    .iter()
                    .filter(|m| m.state == "done")
                    .filter_map(|m| m.finished_s)
                    .min_by(f64::total_cmp);
            }
            Err(e) => note(&mut out, e.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    match admin.get("/v1/decisions?limit=1000").await {
        Ok(r) => {
            let mut ds: Vec<(f64, String, String, String)> = list(&r.body)
                .into_iter()
                .filter_map(|d| {
                    let t = unix(d["at"].as_str()?)?;
                    (t >= onset_unix).then(|| {
                        (
                            since(t),
                            d["kind"].as_str().unwrap_or("?").to_owned(),
                            d["reason"].as_str().unwrap_or("?").to_owned(),
                            d["decision"]["explanation"]
                                .as_str()
                                .unwrap_or("")
                                .to_owned(),
                        )
                    })
                })
                .collect();
            ds.sort_by(|a, b| a.0.total_cmp(&b.0));
            out.decisions = ds;
        }
        Err(e) => note(&mut out, e.to_string()),
    }
    out
}

/// Shard load spread over `[from_s, to_s)` of the run (requests per second
/// per shard, every shard that appears anywhere in `points` counted).
#[must_use]
pub fn spread(points: &[ShardPoint], from_s: f64, to_s: f64) -> Option<Spread> {
    if to_s <= from_s {
        return None;
    }
    let mut shards: std::collections::BTreeMap<String, f64> =
        points.iter().map(|p| (p.shard.clone(), 0.0)).collect();
    let mut any = false;
    for p in points.iter().filter(|p| p.at_s >= from_s && p.at_s < to_s) {
        any = true;
        *shards.entry(p.shard.clone()).or_default() += p.requests as f64;
    }
    if !any || shards.is_empty() {
        return None;
    }
    let per_shard: Vec<(String, f64)> = shards
        .into_iter()
        .map(|(s, n)| (s, (n / (to_s - from_s) * 10.0).round() / 10.0))
        .collect();
    let mean = per_shard.iter().map(|p| p.1).sum::<f64>() / per_shard.len() as f64;
    let max = per_shard.iter().map(|p| p.1).fold(0.0, f64::max);
    Some(Spread {
        from_s,
        to_s,
        per_shard,
        max_over_mean: if mean > 0.0 {
            (max / mean * 100.0).round() / 100.0
        } else {
            0.0
        },
    })
}

/// Fill the before / during / after spreads from the run's per-shard load:
/// 20 s before the onset; from 5 s after the onset until the first relief (at
/// most 25 s); the last 20 s of the load.
pub fn add_spreads(out: &mut HotspotOutcome, points: &[ShardPoint], load_s: f64) {
    let t0 = out.onset_s;
    out.before = spread(points, (t0 - 20.0).max(0.0), t0);
    let hot_end = out.relieved_s.map_or(t0 + 30.0, |r| t0 + r).min(t0 + 30.0);
    out.during = spread(points, t0 + 5.0, hot_end);
    out.after = spread(points, (load_s - 20.0).max(t0), load_s);
}

fn secs(v: Option<f64>) -> String {
    v.map_or_else(|| "never".to_owned(), |s| format!("{s:.1} s"))
}

fn spread_row(name: &str, s: Option<&Spread>) -> String {
    match s {
        None => format!(
            "<tr><td class=\"l\">{name}</td><td class=\"l\" colspan=\"2\">no samples</td></tr>"
        ),
        Some(s) => {
            let shards: Vec<String> = s
                .per_shard
                .iter()
                .map(|(id, r)| format!("{} {r:.1}/s", crate::html::esc(id)))
                .collect();
            format!(
                "<tr><td class=\"l\">{name} ({:.0}-{:.0} s)</td><td>{:.2}</td><td class=\"l\">{}</td></tr>",
                s.from_s,
                s.to_s,
                s.max_over_mean,
                shards.join(", ")
            )
        }
    }
}

/// Time-axis markers (seconds after the load started): the onset, and each
/// policy move planned and finished.
#[must_use]
pub fn markers(h: &HotspotOutcome) -> Vec<(f64, String)> {
    let mut out = vec![(h.onset_s, "hot spot".to_owned())];
    for m in &h.moves {
        out.push((
            h.onset_s + m.created_s,
            format!("policy {} planned", m.reason),
        ));
        if let Some(f) = m.finished_s {
            out.push((h.onset_s + f, format!("policy move {}", m.state)));
        }
    }
    out
}

/// The report's hot spot section.
#[must_use]
pub fn html(h: &HotspotOutcome) -> String {
    use crate::html::esc;
    let mut out = format!(
        "<h2>Hot spot</h2><p>Merchant <code>{}</code> (key {}) took {:.0} % of the operations from {:.0} s on; it was on {} and ended on {}.</p>\
         <table><tr><th>from the onset to</th><th>seconds</th></tr>\
         <tr><td class=\"l\">first taken policy decision</td><td>{}</td></tr>\
         <tr><td class=\"l\">first policy move done</td><td>{}</td></tr>\
         <tr><td class=\"l\">hot merchant served by another shard</td><td>{}</td></tr></table>",
        esc(&h.merchant),
        h.shard_key,
        h.share * 100.0,
        h.onset_s,
        esc(&h.initial_owner),
        esc(&h.final_owner),
        secs(h.first_decision_s),
        secs(h.relieved_s),
        secs(h.merchant_moved_s),
    );
    if let Some(d) = &h.first_decision {
        out.push_str(&format!("<p>First decision: {}</p>", esc(d)));
    }
    out.push_str(
        "<table><tr><th>shard load</th><th>max/mean</th><th>requests/s per shard</th></tr>",
    );
    out.push_str(&spread_row("before", h.before.as_ref()));
    out.push_str(&spread_row("hot", h.during.as_ref()));
    out.push_str(&spread_row("after", h.after.as_ref()));
    out.push_str("</table>");
    if !h.moves.is_empty() {
        out.push_str("<table><tr><th>policy move</th><th>reason</th><th>range</th><th>from -> to</th><th>state</th><th>planned s</th><th>done s</th><th>pause ms</th></tr>");
        for m in &h.moves {
            out.push_str(&format!(
                "<tr><td class=\"l\"><code>{}</code></td><td class=\"l\">{}</td><td>{}</td><td class=\"l\">{} -> {}</td><td class=\"l\">{}</td><td>{:.1}</td><td>{}</td><td>{}</td></tr>",
                esc(&m.id),
                esc(&m.reason),
                m.range_id,
                esc(&m.source),
                esc(&m.target),
                esc(&m.state),
                m.created_s,
                m.finished_s.map_or("-".into(), |f| format!("{f:.1}")),
                m.pause_ms.map_or("-".into(), |p| format!("{p:.1}")),
            ));
        }
        out.push_str("</table>");
    }
    if !h.decisions.is_empty() {
        out.push_str("<details><summary>every policy decision after the onset</summary><table><tr><th>s</th><th>kind</th><th>reason</th><th>why</th></tr>");
        for (t, kind, reason, why) in &h.decisions {
            out.push_str(&format!(
                "<tr><td>{t:.1}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td></tr>",
                esc(kind),
                esc(reason),
                esc(why)
            ));
        }
        out.push_str("</table></details>");
    }
    for e in &h.errors {
        out.push_str(&format!("<p class=\"fail\">watcher: {}</p>", esc(e)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(shard: &str, at_s: f64, requests: i64) -> ShardPoint {
        ShardPoint {
            shard: shard.into(),
            router: "r".into(),
            at_s,
            interval_s: 1.0,
            requests,
            requests_per_s: requests as f64,
            mean_latency_ms: 1.0,
        }
    }

    #[test]
    fn spread_is_max_over_mean_of_every_shard() {
        let points = vec![
            pt("s1", 0.5, 30),
            pt("s2", 0.5, 10),
            pt("s1", 1.5, 30),
            pt("s3", 9.5, 5),
        ];
        let s = spread(&points, 0.0, 2.0).unwrap();
        // s1 30/s, s2 5/s, s3 0/s: mean 11.67, max 30
        assert_eq!(
            s.per_shard,
            vec![("s1".into(), 30.0), ("s2".into(), 5.0), ("s3".into(), 0.0)]
        );
        assert!((s.max_over_mean - 2.57).abs() < 0.01, "{}", s.max_over_mean);
        assert!(spread(&points, 3.0, 4.0).is_none());
        assert!(spread(&points, 2.0, 2.0).is_none());
    }

    #[test]
    fn validation_names_the_field() {
        let h = Hotspot {
            at_s: 10,
            share: 0.4,
            rank: None,
        };
        assert!(h.validate(100, 60).is_ok());
        assert_eq!(h.rank_of(100), 33);
        assert_eq!(
            Hotspot {
                at_s: 60,
                ..h.clone()
            }
            .validate(100, 60)
            .unwrap_err()
            .0,
            "hotspot.at_s"
        );
        assert_eq!(
            Hotspot {
                share: 1.0,
                ..h.clone()
            }
            .validate(100, 60)
            .unwrap_err()
            .0,
            "hotspot.share"
        );
        assert_eq!(
            Hotspot {
                rank: Some(100),
                ..h
            }
            .validate(100, 60)
            .unwrap_err()
            .0,
            "hotspot.rank"
        );
    }
}
