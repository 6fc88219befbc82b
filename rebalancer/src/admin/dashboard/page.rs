//! The dashboard's HTML, a pure function of a [`Snapshot`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::svg::{self, BarRange, Series};
use super::{BUCKET_SECS, Snapshot, WINDOW_SECS, esc};

/// The move states a move passes on its way to `done`, in order.
pub const PHASES: [&str; 8] = [
    "planned",
    "copying",
    "catching_up",
    "verifying",
    "cutover",
    "switched",
    "cleaning",
    "done",
];
/// Range table rows shown (the bar shows every range read).
const RANGE_TABLE_ROWS: usize = 200;

/// Inlined into the page (the CSP allows inline styles only).
const CSS: &str = include_str!("style.css");

/// `2026-01-02 03:04:05 UTC`.
fn fmt_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// An age or duration in seconds: `45s`, `4m 05s`, `2h 03m`, `3d 04h`.
pub fn fmt_age(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// Milliseconds: `850 ms`, `12.3 s`, then as [`fmt_age`].
pub fn fmt_ms(ms: f64) -> String {
    if !ms.is_finite() || ms < 0.0 {
        return "?".to_owned();
    }
    if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else if ms < 60_000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else {
        fmt_age((ms / 1000.0) as i64)
    }
}

fn ago(now: DateTime<Utc>, t: DateTime<Utc>) -> String {
    format!("{} ago", fmt_age((now - t).num_seconds()))
}

fn short_id(id: &uuid::Uuid) -> String {
    let s = id.to_string();
    format!(
        r#"<span class="mono" title="{s}">{}</span>"#,
        &s[s.len() - 8..]
    )
}

fn keys_cell(start: i64, end: i64) -> String {
    format!(
        r#"<span class="mono">[{}, {})</span>"#,
        svg::hex_key(start),
        svg::hex_key(end)
    )
}

fn yes_no(b: bool) -> &'static str {
    if b {
        r#"<span class="yes">yes</span>"#
    } else {
        r#"<span class="no">no</span>"#
    }
}

/// The phase progression of a move as a step bar: states before the current
/// one `past`, the current one `current`. An aborting or aborted move shows no
/// current step (it is rolling back).
pub fn step_bar(state: &str) -> String {
    let at = PHASES.iter().position(|p| *p == state);
    let class = if at.is_none() {
        "steps aborting"
    } else {
        "steps"
    };
    let mut s = format!(r#"<ol class="{class}" data-state="{}">"#, esc(state));
    for (i, p) in PHASES.iter().enumerate() {
        let c = match at {
            Some(a) if i < a => "past",
            Some(a) if i == a => "current",
            _ => "future",
        };
        let _ = write!(s, r#"<li class="{c}">{}</li>"#, p.replace('_', " "));
    }
    s.push_str("</ol>");
    s
}

/// Phase timings of `moves.phase_ms`, engine order first, numbers only.
fn phases_of(v: &serde_json::Value) -> Vec<(&str, f64)> {
    let Some(map) = v.as_object() else {
        return Vec::new();
    };
    let mut out: Vec<(&str, f64)> = svg::SEQUENTIAL_PHASES
        .iter()
        .filter_map(|k| map.get(*k).and_then(|v| v.as_f64()).map(|v| (*k, v)))
        .collect();
    for (k, v) in map {
        if !svg::SEQUENTIAL_PHASES.contains(&k.as_str())
            && let Some(v) = v.as_f64()
        {
            out.push((k.as_str(), v));
        }
    }
    out
}

/// Every shard the page shows: the registered ones, then any other named by a
/// range or a load sample, each group sorted. Colours follow this order.
fn shard_ids(snap: &Snapshot) -> Vec<String> {
    let mut ids: Vec<String> = snap.shards.iter().map(|s| s.id.clone()).collect();
    let known: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    let extra: BTreeSet<String> = snap
        .ranges
        .iter()
        .map(|r| r.shard_id.as_str())
        .chain(snap.load.iter().map(|l| l.shard_id.as_str()))
        .filter(|s| !known.contains(s))
        .map(str::to_owned)
        .collect();
    ids.sort();
    ids.extend(extra);
    ids
}

/// Requests per second per shard for each complete bucket of the window
/// (the bucket holding `now` is still filling and is left out).
pub fn load_series(snap: &Snapshot, shards: &[String]) -> (i64, Vec<Vec<f64>>) {
    let n = (WINDOW_SECS / BUCKET_SECS) as usize;
    let now_bucket = snap.now.timestamp().div_euclid(BUCKET_SECS);
    let first = now_bucket - n as i64;
    let index: BTreeMap<&str, usize> = shards
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), i))
        .collect();
    let mut out = vec![vec![0.0; n]; shards.len()];
    for l in &snap.load {
        let (Some(&si), Ok(bi)) = (
            index.get(l.shard_id.as_str()),
            usize::try_from(l.bucket - first),
        ) else {
            continue;
        };
        if bi < n {
            out[si][bi] += l.requests as f64 / BUCKET_SECS as f64;
        }
    }
    (first * BUCKET_SECS, out)
}

fn header(s: &mut String, snap: &Snapshot) {
    let _ = write!(s, "<header><h1>Shardline rebalancer</h1>");
    match &snap.policy {
        Some(p) => {
            let _ = write!(
                s,
                r#"<div class="kv">policy mode<b><span class="badge mode-{m}" id="policy-mode">{m}</span></b></div><div class="kv">leader<b>{leader}</b></div><div class="kv">last round<b>{round}</b></div>"#,
                m = p.mode.as_str(),
                leader = esc(p.leader.as_deref().unwrap_or("none")),
                round = match p.last_round_at {
                    Some(t) => format!(
                        r#"<span title="{}">{}</span>{}"#,
                        fmt_time(t),
                        ago(snap.now, t),
                        p.last_round_ms
                            .map(|ms| format!(" ({ms} ms)"))
                            .unwrap_or_default()
                    ),
                    None => "never".to_owned(),
                },
            );
        }
        None => s.push_str(r#"<div class="kv">policy mode<b>unknown</b></div>"#),
    }
    let active = snap.shards.iter().filter(|x| x.state == "active").count();
    let _ = write!(
        s,
        r#"<div class="kv">shards<b id="shard-count">{n}</b></div><div class="kv">active<b>{active}</b></div><div class="kv">ranges<b id="range-count">{r}</b></div><div class="kv">map epoch<b>{e}</b></div><div class="kv">moves in flight<b id="moves-in-flight">{m}</b></div><div class="kv">as of<b>{t}</b></div>"#,
        n = snap.shards.len(),
        r = snap.range_count,
        e = snap.map_epoch,
        m = snap.in_flight_count,
        t = fmt_time(snap.now),
    );
    if let Some(p) = &snap.policy {
        if let Some(e) = &p.last_error {
            let _ = write!(s, r#"<div class="err">last policy error: {}</div>"#, esc(e));
        }
        if let Some(by) = &p.changed_by {
            let _ = write!(
                s,
                r#"<div class="kv">mode set by<b title="{}">{}, {}</b></div>"#,
                fmt_time(p.changed_at),
                esc(by),
                ago(snap.now, p.changed_at)
            );
        }
    }
    s.push_str("</header>");
}

fn range_section(s: &mut String, snap: &Snapshot, shards: &[String]) {
    let refs: Vec<&str> = shards.iter().map(String::as_str).collect();
    let bars: Vec<BarRange<'_>> = snap
        .ranges
        .iter()
        .map(|r| BarRange {
            id: r.id,
            start: r.start_key,
            end: r.end_key,
            shard: &r.shard_id,
            epoch: r.epoch,
            moving: r.state == "moving",
        })
        .collect();
    let _ = write!(
        s,
        r#"<section id="range-map"><h2>Range map<small>key space [0x00000000, 0x100000000) per shard</small></h2><p class="legend-note"><span class="swatch hatched"></span>range in state <b>moving</b> (held by a move). Hover a range for its id, keys and epoch.</p>{}"#,
        svg::range_map(&refs, &bars)
    );
    let state_of: BTreeMap<&str, &str> = snap
        .shards
        .iter()
        .map(|x| (x.id.as_str(), x.state.as_str()))
        .collect();
    let color_of: BTreeMap<&str, &str> = shards
        .iter()
        .enumerate()
        .map(|(i, x)| (x.as_str(), svg::shard_color(i)))
        .collect();
    let shown = snap.ranges.len().min(RANGE_TABLE_ROWS);
    let _ = write!(
        s,
        r#"<details{open}><summary>{shown} of {total} ranges</summary><table class="ranges"><thead><tr><th>id</th><th>keys</th><th>shard</th><th>shard state</th><th class="num">epoch</th><th>state</th></tr></thead><tbody>"#,
        open = if shown <= 64 { " open" } else { "" },
        total = snap.range_count,
    );
    for r in &snap.ranges[..shown] {
        let _ = write!(
            s,
            r#"<tr data-range="{id}"><td>{id}</td><td>{keys}</td><td><span class="swatch" style="background:{c}"></span>{sh}</td><td>{st}</td><td class="num">{ep}</td><td>{state}</td></tr>"#,
            id = r.id,
            keys = keys_cell(r.start_key, r.end_key),
            c = color_of.get(r.shard_id.as_str()).unwrap_or(&"#999"),
            sh = esc(&r.shard_id),
            st = esc(state_of.get(r.shard_id.as_str()).unwrap_or(&"unregistered")),
            ep = r.epoch,
            state = if r.state == "moving" {
                r#"<span class="badge mode-dry_run">moving</span>"#.to_owned()
            } else {
                esc(&r.state)
            },
        );
    }
    s.push_str("</tbody></table></details></section>");
}

fn load_section(s: &mut String, snap: &Snapshot, shards: &[String]) {
    let (first, points) = load_series(snap, shards);
    let series: Vec<Series<'_>> = shards
        .iter()
        .zip(points)
        .enumerate()
        .map(|(i, (shard, points))| Series {
            shard,
            color: svg::shard_color(i),
            points,
        })
        .collect();
    let _ = write!(
        s,
        r#"<section id="load"><h2>Load per shard<small>requests/s reported by the routers, last 15 minutes, {BUCKET_SECS} s buckets</small></h2>{}</section>"#,
        svg::load_chart(&series, first, BUCKET_SECS)
    );
}

fn moves_section(s: &mut String, snap: &Snapshot) {
    let _ = write!(
        s,
        r#"<section id="moves"><h2>Moves in flight<small>{} unfinished</small></h2>"#,
        snap.in_flight_count
    );
    if snap.in_flight.is_empty() {
        s.push_str(r#"<p class="empty-note">No move in flight.</p>"#);
    }
    for m in &snap.in_flight {
        let _ = write!(
            s,
            r#"<div class="move" data-move="{id}"><div class="head"><span>move {sid}</span><span>range <b>{range}</b> {keys}</span><span><b>{src}</b> &#8594; <b>{dst}</b></span><span class="badge">{state}</span><span>age {age}</span><span>reason <code>{reason}</code></span>{abort}</div>{steps}{err}</div>"#,
            id = m.id,
            sid = short_id(&m.id),
            range = m.range_id,
            keys = keys_cell(m.start_key, m.end_key),
            src = esc(&m.source_shard),
            dst = esc(&m.target_shard),
            state = esc(&m.state),
            age = fmt_age((snap.now - m.created_at).num_seconds()),
            reason = esc(&m.reason),
            abort = if m.abort_requested {
                r#"<span class="badge mode-dry_run">abort requested</span>"#
            } else {
                ""
            },
            steps = step_bar(&m.state),
            err = m
                .error
                .as_deref()
                .map(|e| format!(r#"<div class="err">{}</div>"#, esc(e)))
                .unwrap_or_default(),
        );
    }
    if snap.in_flight_count > snap.in_flight.len() as i64 {
        let _ = write!(
            s,
            r#"<p class="legend-note">showing the oldest {} of {}</p>"#,
            snap.in_flight.len(),
            snap.in_flight_count
        );
    }
    s.push_str("</section>");

    s.push_str(r#"<section id="finished"><h2>Recently finished moves<small>last 10; phase timings from <code>moves.phase_ms</code></small></h2>"#);
    if snap.finished.is_empty() {
        s.push_str(r#"<p class="empty-note">No finished move yet.</p></section>"#);
        return;
    }
    s.push_str(r#"<p class="legend-note"><span class="swatch" style="background:#4e79a7"></span>copy <span class="swatch" style="background:#76b7b2"></span>catch-up <span class="swatch" style="background:#59a14f"></span>verify <span class="swatch" style="background:#e15759"></span>pause <span class="swatch" style="background:#f28e2b"></span>flip <span class="swatch" style="background:#b07aa1"></span>cleanup</p><table class="finished"><thead><tr><th>finished</th><th>move</th><th>range</th><th>keys</th><th>source &#8594; target</th><th>state</th><th class="num">total</th><th class="num">pause</th><th>phases</th></tr></thead><tbody>"#);
    for m in &snap.finished {
        let phases = phases_of(&m.phase_ms);
        let pause = phases
            .iter()
            .find(|(k, _)| *k == "pause_ms")
            .map(|(_, v)| fmt_ms(*v))
            .unwrap_or_else(|| "&#8212;".to_owned());
        let list: Vec<String> = phases
            .iter()
            .filter(|(k, _)| svg::SEQUENTIAL_PHASES.contains(k))
            .map(|(k, v)| format!("{} {}", esc(k.trim_end_matches("_ms")), fmt_ms(*v)))
            .collect();
        let _ = write!(
            s,
            r#"<tr data-move="{id}"><td>{fin}</td><td>{sid}</td><td>{range}</td><td>{keys}</td><td>{src} &#8594; {dst}</td><td><span class="badge{ab}">{state}</span></td><td class="num">{total}</td><td class="num">{pause}</td><td>{bar}<div class="legend-note">{list}</div></td></tr>"#,
            id = m.id,
            fin = m
                .finished_at
                .map(|t| format!(
                    r#"<span title="{}">{}</span>"#,
                    fmt_time(t),
                    ago(snap.now, t)
                ))
                .unwrap_or_default(),
            sid = short_id(&m.id),
            range = m.range_id,
            keys = keys_cell(m.start_key, m.end_key),
            src = esc(&m.source_shard),
            dst = esc(&m.target_shard),
            ab = if m.state == "aborted" {
                " mode-paused"
            } else {
                " mode-active"
            },
            state = esc(&m.state),
            total = m
                .finished_at
                .map(|t| fmt_ms((t - m.created_at).num_milliseconds() as f64))
                .unwrap_or_default(),
            bar = svg::phase_bar(&phases),
            list = list.join(" · "),
        );
    }
    s.push_str("</tbody></table></section>");
}

fn decisions_section(s: &mut String, snap: &Snapshot) {
    s.push_str(r#"<section id="decisions"><h2>Recent decisions<small>last 30 policy decisions, newest first</small></h2>"#);
    if snap.decisions.is_empty() {
        s.push_str(r#"<p class="empty-note">No decision recorded yet.</p></section>"#);
        return;
    }
    s.push_str(r#"<table class="decisions"><thead><tr><th>at</th><th>kind</th><th>taken</th><th>dry run</th><th>reason</th><th class="num">range</th><th>move</th><th>why</th></tr></thead><tbody>"#);
    for d in &snap.decisions {
        let _ = write!(
            s,
            r#"<tr class="{class}" data-decision="{id}"><td><span title="{full}">{clock}</span></td><td>{kind}</td><td>{taken}</td><td>{dry}</td><td><code class="reason">{reason}</code></td><td class="num">{range}</td><td>{mv}</td><td class="text">{text}</td></tr>"#,
            class = if d.taken { "taken" } else { "declined" },
            id = d.id,
            full = fmt_time(d.at),
            clock = d.at.format("%H:%M:%S"),
            kind = esc(&d.kind),
            taken = yes_no(d.taken),
            dry = yes_no(d.dry_run),
            reason = esc(&d.reason),
            range = d.range_id.map(|r| r.to_string()).unwrap_or_default(),
            mv = d.move_id.as_ref().map(short_id).unwrap_or_default(),
            text = d.text.as_deref().map(esc).unwrap_or_default(),
        );
    }
    s.push_str("</tbody></table></section>");
}

/// The whole page. `refresh`: seconds for a meta refresh.
pub fn render(snap: &Snapshot, refresh: Option<u32>) -> String {
    let shards = shard_ids(snap);
    let mut s = String::with_capacity(64 * 1024);
    s.push_str(r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">"#);
    if let Some(n) = refresh {
        let _ = write!(s, r#"<meta http-equiv="refresh" content="{n}">"#);
    }
    let _ = write!(
        s,
        "<title>Shardline rebalancer</title><style>{CSS}</style></head><body>"
    );
    header(&mut s, snap);
    s.push_str("<main>");
    range_section(&mut s, snap, &shards);
    load_section(&mut s, snap, &shards);
    moves_section(&mut s, snap);
    decisions_section(&mut s, snap);
    let _ = write!(
        s,
        "<footer>rendered from the catalog at {}{}</footer></main></body></html>",
        fmt_time(snap.now),
        refresh
            .map(|n| format!(", reloads every {n} s"))
            .unwrap_or_default()
    );
    s
}

#[cfg(test)]
mod tests;
