//! Pure builders for the dashboard's inline SVG (no IO, no clock): the range map
//! bar per shard, the per-shard load line chart and a move's phase-duration bar.
//! Coordinates are in a fixed `viewBox`; the page scales them with CSS.

use std::fmt::Write as _;

use super::esc;

/// Keys in the key space `[0, 2^32)`.
pub const KEY_SPACE: f64 = 4_294_967_296.0;

/// Tableau 10: distinct, readable on white; shard `i` gets `PALETTE[i % 10]`.
const PALETTE: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac",
];

/// The colour of the shard at `index` in the page's sorted shard list.
pub fn shard_color(index: usize) -> &'static str {
    PALETTE[index % PALETTE.len()]
}

/// A key as the page shows it: `0x` and 8 hex digits (`0x100000000` for 2^32).
pub fn hex_key(k: i64) -> String {
    format!("0x{k:08x}")
}

// Range map geometry.
const MAP_W: f64 = 1000.0;
const MAP_LABEL: f64 = 70.0;
/// Width of the bar that stands for the whole key space.
pub const BAR_W: f64 = MAP_W - MAP_LABEL - 20.0;
const ROW_H: f64 = 28.0;
const BAR_H: f64 = 18.0;

/// One range as the range map draws it.
#[derive(Debug, Clone)]
pub struct BarRange<'a> {
    pub id: i64,
    pub start: i64,
    pub end: i64,
    pub shard: &'a str,
    pub epoch: i64,
    pub moving: bool,
}

/// Offset and width on the bar of `[start, end)`: proportional to the keys.
pub fn bar_span(start: i64, end: i64) -> (f64, f64) {
    let x = start as f64 / KEY_SPACE * BAR_W;
    let w = (end - start) as f64 / KEY_SPACE * BAR_W;
    (x, w)
}

/// One row per shard (in `shards` order, coloured by position): the key space
/// `[0, 2^32)` as a bar, the shard's ranges filled in, ranges in state `moving`
/// hatched with a dark outline. Ranges of shards not listed are skipped.
pub fn range_map(shards: &[&str], ranges: &[BarRange<'_>]) -> String {
    let height = ROW_H * shards.len() as f64 + 30.0;
    let mut s = String::with_capacity(512 + ranges.len() * 200);
    let _ = write!(
        s,
        r##"<svg class="range-map" viewBox="0 0 {MAP_W} {height}" width="100%" role="img" aria-label="key ranges owned by each shard" xmlns="http://www.w3.org/2000/svg"><defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="3" height="6" fill="#ffffff" opacity="0.75"/></pattern></defs>"##
    );
    for (row, shard) in shards.iter().enumerate() {
        let y = row as f64 * ROW_H + 4.0;
        let color = shard_color(row);
        let _ = write!(
            s,
            r##"<g class="shard-row" data-shard="{sh}"><text x="{lx}" y="{ty:.1}" text-anchor="end" class="label">{sh}</text><rect class="keyspace" x="{MAP_LABEL}" y="{y:.1}" width="{BAR_W}" height="{BAR_H}" fill="#eef0f3"/>"##,
            sh = esc(shard),
            lx = MAP_LABEL - 8.0,
            ty = y + BAR_H - 4.0,
        );
        for r in ranges.iter().filter(|r| r.shard == *shard) {
            let (x, w) = bar_span(r.start, r.end);
            let x = MAP_LABEL + x;
            // A one-key range is real but would be invisible: draw it 1 unit wide.
            let drawn = w.max(1.0);
            let state = if r.moving { "moving" } else { "active" };
            let _ = write!(
                s,
                r##"<rect class="range {state}" data-range="{id}" x="{x:.2}" y="{y:.1}" width="{drawn:.2}" height="{BAR_H}" fill="{color}" stroke="#ffffff" stroke-width="0.5"><title>range {id} [{a}, {b}) on {sh}, epoch {ep}, {state}</title></rect>"##,
                id = r.id,
                a = hex_key(r.start),
                b = hex_key(r.end),
                sh = esc(shard),
                ep = r.epoch,
            );
            if r.moving {
                let _ = write!(
                    s,
                    r##"<rect class="moving-mark" x="{x:.2}" y="{y:.1}" width="{drawn:.2}" height="{BAR_H}" fill="url(#hatch)" stroke="#222222" stroke-width="1.5"/>"##
                );
            }
        }
        s.push_str("</g>");
    }
    // key axis: quarters of the key space
    let axis_y = ROW_H * shards.len() as f64 + 4.0;
    for q in 0..=4i64 {
        let key = q << 30;
        let x = MAP_LABEL + bar_span(0, key).1;
        let anchor = match q {
            0 => "start",
            4 => "end",
            _ => "middle",
        };
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" y1="{y0:.1}" x2="{x:.1}" y2="{y1:.1}" stroke="#999999"/><text x="{x:.1}" y="{ty:.1}" text-anchor="{anchor}" class="tick">{k}</text>"##,
            y0 = axis_y - 2.0,
            y1 = axis_y + 4.0,
            ty = axis_y + 16.0,
            k = hex_key(key),
        );
    }
    s.push_str("</svg>");
    s
}

/// One shard's requests per second, one value per bucket (oldest first).
#[derive(Debug, Clone)]
pub struct Series<'a> {
    pub shard: &'a str,
    pub color: &'static str,
    pub points: Vec<f64>,
}

// Load chart geometry.
const CH_W: f64 = 1000.0;
const CH_H: f64 = 270.0;
const CH_LEFT: f64 = 70.0;
const CH_RIGHT: f64 = 20.0;
const CH_TOP: f64 = 40.0;
const CH_BOTTOM: f64 = 50.0;

/// The smallest 1, 2 or 5 times a power of ten that is >= `v` (1 for `v <= 0`).
pub fn nice_ceil(v: f64) -> f64 {
    if !v.is_finite() || v <= 0.0 {
        return 1.0;
    }
    let exp = 10f64.powf(v.log10().floor());
    let f = v / exp;
    let n = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    n * exp
}

/// A number for a label: no decimals when whole, else up to two.
pub fn fmt_num(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

fn clock(unix_secs: i64) -> String {
    chrono::DateTime::from_timestamp(unix_secs, 0)
        .map(|t| t.format("%H:%M:%S").to_string())
        .unwrap_or_default()
}

/// A line per shard of requests per second over `buckets` buckets of
/// `bucket_secs` seconds starting at unix time `first_bucket_start`, with axes,
/// axis labels and a legend (each shard with its latest value).
pub fn load_chart(series: &[Series<'_>], first_bucket_start: i64, bucket_secs: i64) -> String {
    let n = series.iter().map(|s| s.points.len()).max().unwrap_or(0);
    let pw = CH_W - CH_LEFT - CH_RIGHT;
    let ph = CH_H - CH_TOP - CH_BOTTOM;
    let max = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .fold(0.0, f64::max);
    let ymax = nice_ceil(max);
    let x_of = |i: usize| {
        if n <= 1 {
            CH_LEFT
        } else {
            CH_LEFT + pw * i as f64 / (n - 1) as f64
        }
    };
    let y_of = |v: f64| CH_TOP + ph * (1.0 - v / ymax);
    let mut s = String::with_capacity(2048 + n * series.len() * 16);
    let _ = write!(
        s,
        r##"<svg class="load-chart" viewBox="0 0 {CH_W} {CH_H}" width="100%" role="img" aria-label="requests per second per shard" xmlns="http://www.w3.org/2000/svg">"##
    );
    // y grid and ticks
    for t in 0..=4 {
        let v = ymax * f64::from(t) / 4.0;
        let y = y_of(v);
        let _ = write!(
            s,
            r##"<line class="grid" x1="{CH_LEFT}" y1="{y:.1}" x2="{x2}" y2="{y:.1}" stroke="#e3e6ea"/><text x="{tx}" y="{ty:.1}" text-anchor="end" class="tick">{label}</text>"##,
            x2 = CH_W - CH_RIGHT,
            tx = CH_LEFT - 6.0,
            ty = y + 4.0,
            label = fmt_num(v),
        );
    }
    // x ticks: every 3 minutes' worth of buckets, and the last bucket
    if n > 0 {
        let step = ((180 / bucket_secs.max(1)) as usize).max(1);
        let mut ticks: Vec<usize> = (0..n).step_by(step).collect();
        if ticks.last() != Some(&(n - 1)) {
            // a tick too close to the end makes way for the end's
            let crowded = ticks.len() > 1 && ticks.last().is_some_and(|l| n - 1 - l < step / 2);
            if crowded {
                ticks.pop();
            }
            ticks.push(n - 1);
        }
        for i in ticks {
            let x = x_of(i);
            let t = first_bucket_start + i as i64 * bucket_secs;
            let anchor = match i {
                0 => "start",
                i if i == n - 1 => "end",
                _ => "middle",
            };
            let _ = write!(
                s,
                r##"<line x1="{x:.1}" y1="{y0:.1}" x2="{x:.1}" y2="{y1:.1}" stroke="#999999"/><text x="{x:.1}" y="{ty:.1}" text-anchor="{anchor}" class="tick">{c}</text>"##,
                y0 = CH_TOP + ph,
                y1 = CH_TOP + ph + 5.0,
                ty = CH_TOP + ph + 18.0,
                c = clock(t),
            );
        }
    }
    // axes and axis labels
    let _ = write!(
        s,
        r##"<line class="axis" x1="{CH_LEFT}" y1="{CH_TOP}" x2="{CH_LEFT}" y2="{yb}" stroke="#555555"/><line class="axis" x1="{CH_LEFT}" y1="{yb}" x2="{xr}" y2="{yb}" stroke="#555555"/><text class="axis-label" x="{xm}" y="{ly}" text-anchor="middle">time (UTC), {bucket_secs} s buckets</text><text class="axis-label" transform="translate(16 {ym}) rotate(-90)" text-anchor="middle">requests / s</text>"##,
        yb = CH_TOP + ph,
        xr = CH_W - CH_RIGHT,
        xm = CH_LEFT + pw / 2.0,
        ly = CH_H - 8.0,
        ym = CH_TOP + ph / 2.0,
    );
    if n == 0 || max <= 0.0 {
        let _ = write!(
            s,
            r##"<text class="empty" x="{x}" y="{y}" text-anchor="middle">no load samples in this window</text>"##,
            x = CH_LEFT + pw / 2.0,
            y = CH_TOP + ph / 2.0,
        );
    }
    for sr in series {
        if sr.points.is_empty() {
            continue;
        }
        let mut pts = String::with_capacity(sr.points.len() * 14);
        for (i, v) in sr.points.iter().enumerate() {
            let _ = write!(pts, "{:.1},{:.1} ", x_of(i), y_of(*v));
        }
        let _ = write!(
            s,
            r##"<polyline class="series" data-shard="{sh}" fill="none" stroke="{c}" stroke-width="2" stroke-linejoin="round" points="{p}"/>"##,
            sh = esc(sr.shard),
            c = sr.color,
            p = pts.trim_end(),
        );
    }
    // legend, left to right above the plot
    let mut x = CH_LEFT;
    for sr in series {
        let last = sr.points.last().copied().unwrap_or(0.0);
        let label = format!("{} ({}/s)", sr.shard, fmt_num((last * 10.0).round() / 10.0));
        let _ = write!(
            s,
            r##"<g class="legend-item"><rect x="{x:.1}" y="12" width="14" height="14" fill="{c}"/><text x="{tx:.1}" y="24" class="legend">{l}</text></g>"##,
            c = sr.color,
            tx = x + 20.0,
            l = esc(&label),
        );
        x += 40.0 + 7.5 * label.chars().count() as f64;
    }
    s.push_str("</svg>");
    s
}

/// Colours of the engine's phase timings (`moves.phase_ms` keys).
fn phase_color(key: &str) -> &'static str {
    match key {
        "copy_ms" => "#4e79a7",
        "catch_up_ms" => "#76b7b2",
        "verify_ms" => "#59a14f",
        "pause_ms" => "#e15759",
        "flip_ms" => "#f28e2b",
        "cleanup_ms" => "#b07aa1",
        _ => "#bab0ac",
    }
}

/// The phases that follow one another (the rest, e.g. `freeze_ms`, are parts of
/// `pause_ms` and would count twice).
pub const SEQUENTIAL_PHASES: [&str; 6] = [
    "copy_ms",
    "catch_up_ms",
    "verify_ms",
    "pause_ms",
    "flip_ms",
    "cleanup_ms",
];

/// A small stacked bar of a move's sequential phase durations, proportional to
/// their total.
pub fn phase_bar(phases: &[(&str, f64)]) -> String {
    const W: f64 = 200.0;
    let total: f64 = phases
        .iter()
        .filter(|(k, v)| SEQUENTIAL_PHASES.contains(k) && *v > 0.0)
        .map(|(_, v)| v)
        .sum();
    let mut s = format!(
        r##"<svg class="phase-bar" viewBox="0 0 {W} 12" width="{W}" height="12" xmlns="http://www.w3.org/2000/svg"><rect width="{W}" height="12" fill="#eef0f3"/>"##
    );
    if total > 0.0 {
        let mut x = 0.0;
        for key in SEQUENTIAL_PHASES {
            let Some((_, v)) = phases.iter().find(|(k, v)| *k == key && *v > 0.0) else {
                continue;
            };
            let w = v / total * W;
            let _ = write!(
                s,
                r##"<rect x="{x:.2}" width="{w:.2}" height="12" fill="{c}"><title>{key} {v:.0}</title></rect>"##,
                c = phase_color(key),
            );
            x += w;
        }
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges() -> Vec<BarRange<'static>> {
        vec![
            BarRange {
                id: 1,
                start: 0,
                end: 1 << 31,
                shard: "s1",
                epoch: 3,
                moving: false,
            },
            BarRange {
                id: 2,
                start: 1 << 31,
                end: 3 << 30,
                shard: "s2",
                epoch: 4,
                moving: true,
            },
            BarRange {
                id: 3,
                start: 3 << 30,
                end: 1 << 32,
                shard: "s2",
                epoch: 5,
                moving: false,
            },
        ]
    }

    #[test]
    fn bar_spans_are_proportional_to_keys() {
        assert_eq!(bar_span(0, 1 << 31), (0.0, BAR_W / 2.0));
        assert_eq!(bar_span(1 << 31, 1 << 32), (BAR_W / 2.0, BAR_W / 2.0));
        assert_eq!(bar_span(0, 1 << 32), (0.0, BAR_W));
        let (x, w) = bar_span(3 << 30, 1 << 32);
        assert_eq!((x, w), (BAR_W * 0.75, BAR_W * 0.25));
    }

    #[test]
    fn range_map_draws_a_row_per_shard_and_highlights_moving_ranges() {
        let svg = range_map(&["s1", "s2", "s3"], &ranges());
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches(r#"class="shard-row""#).count(), 3);
        // half the key space is half the bar
        let half = format!(
            r#"data-range="1" x="{MAP_LABEL:.2}" y="4.0" width="{:.2}""#,
            BAR_W / 2.0
        );
        assert!(svg.contains(&half), "{svg}");
        let quarter = format!(r#"width="{:.2}""#, BAR_W / 4.0);
        assert_eq!(
            svg.matches(&quarter).count(),
            3,
            "2 ranges + 1 hatch: {svg}"
        );
        assert_eq!(svg.matches(r#"class="range moving""#).count(), 1);
        assert_eq!(svg.matches(r#"class="moving-mark""#).count(), 1);
        assert_eq!(svg.matches(r#"class="range active""#).count(), 2);
        // s1 is drawn in the first colour, s2 in the second
        assert!(svg.contains(&format!(
            r#"data-range="1" x="70.00" y="4.0" width="{:.2}" height="18" fill="{}""#,
            BAR_W / 2.0,
            shard_color(0)
        )));
        assert!(svg.contains(r#"data-range="2""#) && svg.contains(shard_color(1)));
        assert!(svg.contains("range 2 [0x80000000, 0xc0000000) on s2, epoch 4, moving"));
        assert!(svg.contains(">0x100000000<"), "axis ends at 2^32");
    }

    #[test]
    fn range_map_escapes_and_keeps_tiny_ranges_visible() {
        let r = [BarRange {
            id: 9,
            start: 5,
            end: 6,
            shard: "<x>",
            epoch: 1,
            moving: false,
        }];
        let svg = range_map(&["<x>"], &r);
        assert!(!svg.contains("<x>"));
        assert!(svg.contains("&lt;x&gt;"));
        assert!(svg.contains(r#"width="1.00""#), "{svg}");
    }

    #[test]
    fn nice_ceilings_and_numbers() {
        assert_eq!(nice_ceil(0.0), 1.0);
        assert_eq!(nice_ceil(-3.0), 1.0);
        assert_eq!(nice_ceil(1.0), 1.0);
        assert_eq!(nice_ceil(1.2), 2.0);
        assert_eq!(nice_ceil(3.0), 5.0);
        assert_eq!(nice_ceil(7.0), 10.0);
        assert_eq!(nice_ceil(263.4), 500.0);
        assert_eq!(nice_ceil(0.03), 0.05);
        assert_eq!(fmt_num(125.0), "125");
        assert_eq!(fmt_num(0.25), "0.25");
        assert_eq!(fmt_num(2.5), "2.5");
    }

    #[test]
    fn load_chart_scales_lines_to_the_maximum() {
        let series = [
            Series {
                shard: "s1",
                color: shard_color(0),
                points: vec![0.0, 50.0, 100.0],
            },
            Series {
                shard: "s2",
                color: shard_color(1),
                points: vec![100.0, 100.0, 0.0],
            },
        ];
        let svg = load_chart(&series, 1_700_000_000, 10);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        // x from 70 to 980, y: 100 req/s (the nice maximum) at the top (40), 0 at 220
        assert!(
            svg.contains(r#"points="70.0,220.0 525.0,130.0 980.0,40.0""#),
            "{svg}"
        );
        assert!(svg.contains(r#"points="70.0,40.0 525.0,40.0 980.0,220.0""#));
        assert!(svg.contains("requests / s") && svg.contains("time (UTC)"));
        assert!(
            svg.contains(">s1 (100/s)<") && svg.contains(">s2 (0/s)<"),
            "legend"
        );
        assert!(
            svg.contains(">22:13:20<"),
            "clock tick of the first bucket: {svg}"
        );
        assert!(svg.contains(">22:13:40<"), "and of the last");
        assert!(!svg.contains("no load samples"));
    }

    #[test]
    fn load_chart_without_load_says_so() {
        let series = [Series {
            shard: "s1",
            color: shard_color(0),
            points: vec![0.0; 90],
        }];
        let svg = load_chart(&series, 0, 10);
        assert!(svg.contains("no load samples in this window"));
        assert!(load_chart(&[], 0, 10).contains("no load samples"));
    }

    #[test]
    fn phase_bar_is_proportional_and_skips_overlapping_parts() {
        let svg = phase_bar(&[("copy_ms", 300.0), ("freeze_ms", 50.0), ("pause_ms", 100.0)]);
        assert!(svg.contains(r#"<rect x="0.00" width="150.00""#), "{svg}");
        assert!(svg.contains(r#"<rect x="150.00" width="50.00""#), "{svg}");
        assert!(!svg.contains("freeze_ms"));
        assert!(!phase_bar(&[]).contains("<title>"));
    }
}
