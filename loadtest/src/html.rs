//! `report.html`: one self-contained page (inline SVG, no scripts) rendered from
//! the run report: summary and verdict, per-operation table, throughput, p99
//! latency and errors over time with the scenario's events marked on the time
//! axis, the events' move phases, and the verifier's findings.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::run::RunReport;
use crate::stats::Point;
use crate::workload::OpKind;

const W: f64 = 860.0;
const H: f64 = 220.0;
const PAD_L: f64 = 56.0;
const PAD_R: f64 = 16.0;
const PAD_T: f64 = 24.0;
const PAD_B: f64 = 30.0;

pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn color(op: OpKind) -> &'static str {
    match op {
        OpKind::Onboard => "#8c564b",
        OpKind::Authorize => "#1f77b4",
        OpKind::Capture => "#2ca02c",
        OpKind::Refund => "#ff7f0e",
        OpKind::Void => "#9467bd",
        OpKind::ReadRouter => "#17becf",
        OpKind::ReadEdge => "#e377c2",
    }
}

/// A "nice" upper bound for an axis (1, 2, 5 x 10^n).
fn nice(max: f64) -> f64 {
    if max <= 0.0 {
        return 1.0;
    }
    let e = 10f64.powf(max.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if max <= m * e {
            return m * e;
        }
    }
    10.0 * e
}

struct Series<'a> {
    name: &'a str,
    color: &'a str,
    points: Vec<(f64, f64)>,
}

/// A line chart of `series` over `[0, x_max]` seconds with vertical event markers.
fn chart(
    title: &str,
    unit: &str,
    series: &[Series<'_>],
    x_max: f64,
    markers: &[(f64, String)],
) -> String {
    let y_max = nice(
        series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .fold(0.0, f64::max),
    );
    let x_max = x_max.max(1.0);
    let px = |x: f64| PAD_L + (W - PAD_L - PAD_R) * x / x_max;
    let py = |y: f64| H - PAD_B - (H - PAD_T - PAD_B) * (y / y_max).min(1.0);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{t}"><text x="{PAD_L}" y="16" class="t">{t} ({u})</text>"#,
        t = esc(title),
        u = esc(unit)
    );
    for i in 0..=4 {
        let y = y_max * f64::from(i) / 4.0;
        let _ = write!(
            svg,
            r##"<line x1="{PAD_L}" x2="{x2}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{tx}" y="{ty:.1}" class="a" text-anchor="end">{y}</text>"##,
            x2 = W - PAD_R,
            yy = py(y),
            tx = PAD_L - 4.0,
            ty = py(y) + 4.0,
            y = fmt_num(y)
        );
    }
    let step = nice(x_max / 8.0);
    let mut x = 0.0;
    while x <= x_max + 1e-9 {
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{}" class="a" text-anchor="middle">{}s</text>"#,
            px(x),
            H - 10.0,
            fmt_num(x)
        );
        x += step;
    }
    for (at, label) in markers {
        let _ = write!(
            svg,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{PAD_T}" y2="{b}" stroke="#d62728" stroke-dasharray="4 3"/><text x="{tx:.1}" y="{ty}" class="m">{l}</text>"##,
            x = px(*at),
            b = H - PAD_B,
            tx = px(*at) + 3.0,
            ty = PAD_T + 10.0,
            l = esc(label)
        );
    }
    for s in series {
        let pts: Vec<String> = s
            .points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{}" stroke-width="1.5" points="{}"><title>{}</title></polyline>"#,
            s.color,
            pts.join(" "),
            esc(s.name)
        );
    }
    svg.push_str("</svg>");
    svg
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn by_op(timeline: &[Point]) -> BTreeMap<OpKind, Vec<&Point>> {
    let mut m: BTreeMap<OpKind, Vec<&Point>> = BTreeMap::new();
    for p in timeline {
        m.entry(p.op).or_default().push(p);
    }
    m
}

fn legend(ops: &[OpKind]) -> String {
    let mut s = String::from(r#"<p class="legend">"#);
    for op in ops {
        let _ = write!(
            s,
            r#"<span style="color:{}">&#9632;</span> {} "#,
            color(*op),
            op.name()
        );
    }
    s.push_str("</p>");
    s
}

const SHARD_COLORS: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
];

/// Requests per second and mean router -> shard latency, one line per shard,
/// from the routers' load samples.
fn shard_charts(r: &RunReport, x_max: f64, markers: &[(f64, String)]) -> String {
    let mut h = String::from("<h2>Per shard</h2>");
    if r.shard_load.is_empty() {
        let _ = write!(
            h,
            "<p>No load samples{}.</p>",
            r.shard_load_error
                .as_deref()
                .map(|e| format!(": {}", esc(e)))
                .unwrap_or_default()
        );
        return h;
    }
    let groups = crate::shard_load::series(&r.shard_load);
    let names: Vec<(String, &str)> = groups
        .iter()
        .enumerate()
        .map(|(i, (n, _))| (n.clone(), SHARD_COLORS[i % SHARD_COLORS.len()]))
        .collect();
    let lines = |f: &dyn Fn(&crate::shard_load::ShardPoint) -> f64| -> Vec<Series<'_>> {
        groups
            .iter()
            .zip(&names)
            .map(|((_, pts), (name, color))| Series {
                name,
                color,
                points: pts.iter().map(|p| (p.at_s, f(p))).collect(),
            })
            .collect()
    };
    h.push_str(r#"<p class="legend">"#);
    for (name, color) in &names {
        let _ = write!(
            h,
            r#"<span style="color:{color}">&#9632;</span> {} "#,
            esc(name)
        );
    }
    h.push_str("</p>");
    h.push_str(&chart(
        "router requests per shard",
        "req/s",
        &lines(&|p| p.requests_per_s),
        x_max,
        markers,
    ));
    h.push_str(&chart(
        "mean router to shard latency",
        "ms",
        &lines(&|p| p.mean_latency_ms),
        x_max,
        markers,
    ));
    h.push_str("<p>From the catalog's <code>load_samples</code>: what the routers sent each shard per flush interval (edge reads are not included).</p>");
    h
}

/// The whole page.
pub fn render(r: &RunReport) -> String {
    let x_max = r.scenario.duration_s as f64;
    let mut markers: Vec<(f64, String)> = r
        .events
        .iter()
        .flat_map(|e| {
            let name = format!("{:?}", e.action);
            [
                (
                    e.fault_at_s.unwrap_or(e.at_s as f64),
                    format!("{name} start"),
                ),
                (e.finished_s, format!("{name} {}", e.result)),
            ]
        })
        .collect();
    if let Some(hs) = &r.hotspot {
        markers.extend(crate::hotspot::markers(hs));
    }
    let ops = by_op(&r.timeline);
    let kinds: Vec<OpKind> = ops.keys().copied().collect();
    let series = |f: &dyn Fn(&Point) -> f64| -> Vec<Series<'static>> {
        ops.iter()
            .map(|(op, pts)| Series {
                name: op.name(),
                color: color(*op),
                points: pts.iter().map(|p| (p.second as f64, f(p))).collect(),
            })
            .collect()
    };
    let mut errors_total: BTreeMap<u64, f64> = BTreeMap::new();
    for p in &r.timeline {
        *errors_total.entry(p.second).or_default() += p.errors as f64;
    }
    let errors = [Series {
        name: "errors",
        color: "#d62728",
        points: errors_total
            .into_iter()
            .map(|(s, e)| (s as f64, e))
            .collect(),
    }];
    let verdict = if r.passed { "PASSED" } else { "FAILED" };
    let mut h = String::new();
    let _ = write!(
        h,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>loadtest {name} {verdict}</title>
<style>body{{font:14px system-ui,sans-serif;margin:24px;color:#222}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}th{{background:#f4f4f4}}td.l{{text-align:left}}.t{{font:600 13px sans-serif}}.a{{font:11px sans-serif;fill:#555}}.m{{font:11px sans-serif;fill:#d62728}}.pass{{color:#2ca02c}}.fail{{color:#d62728}}.legend{{margin:2px 0 14px}}code{{font-size:12px}}</style></head><body>
<h1>loadtest: {name} <span class="{cls}">{verdict}</span></h1>
<p>{desc}</p><p>started {started}, {elapsed:.1} s, seed {seed}, router {router}, edges {edges}; {ops} operations, {errs} errors</p>"#,
        name = esc(&r.scenario.name),
        cls = if r.passed { "pass" } else { "fail" },
        desc = esc(&r.scenario.description),
        started = esc(&r.started_at),
        elapsed = r.elapsed_s,
        seed = r.seed,
        router = esc(&r.router_url),
        edges = esc(&r.edge_urls.join(", ")),
        ops = r.operations,
        errs = r.errors,
    );
    h.push_str("<h2>Operations</h2><table><tr><th>op</th><th>count</th><th>ok</th><th>failed</th><th>unknown</th><th>ops/s</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>p999 ms</th><th>max ms</th></tr>");
    for o in &r.ops {
        let list = |m: &BTreeMap<String, u64>| {
            m.iter()
                .map(|(k, v)| format!("{} {v}", esc(k)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = write!(
            h,
            r#"<tr><td class="l">{}</td><td>{}</td><td>{}</td><td class="l">{}</td><td class="l">{}</td><td>{:.1}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td></tr>"#,
            o.op.name(),
            o.count,
            o.ok,
            list(&o.failed),
            list(&o.unknown),
            o.throughput,
            o.p50_ms,
            o.p90_ms,
            o.p99_ms,
            o.p999_ms,
            o.max_ms
        );
    }
    h.push_str(
        "</table><p>Latency is measured from each operation's intended send time (open loop).</p>",
    );
    h.push_str("<h2>Over time</h2>");
    h.push_str(&legend(&kinds));
    h.push_str(&chart(
        "throughput",
        "ops/s",
        &series(&|p| p.count as f64),
        x_max,
        &markers,
    ));
    h.push_str(&chart(
        "p99 latency",
        "ms",
        &series(&|p| p.p99_ms),
        x_max,
        &markers,
    ));
    h.push_str(&chart(
        "p50 latency",
        "ms",
        &series(&|p| p.p50_ms),
        x_max,
        &markers,
    ));
    h.push_str(&chart("errors", "per s", &errors, x_max, &markers));
    h.push_str(&shard_charts(r, x_max, &markers));
    if !r.events.is_empty() {
        h.push_str("<h2>Events</h2><table><tr><th>at s</th><th>action</th><th>result</th><th>finished s</th><th>move</th><th>phases (ms)</th></tr>");
        for e in &r.events {
            let _ = write!(
                h,
                r#"<tr><td>{}</td><td class="l">{:?}</td><td class="l">{}</td><td>{:.1}</td><td class="l"><code>{}</code></td><td class="l"><code>{}</code></td></tr>"#,
                e.at_s,
                e.action,
                esc(&e.result),
                e.finished_s,
                esc(e.move_id.as_deref().unwrap_or("-")),
                esc(&e.phase_ms.to_string())
            );
        }
        h.push_str("</table>");
        if !r.settled {
            h.push_str(r#"<p class="fail">Moves did not settle within settle_s.</p>"#);
        }
    }
    if let Some(hs) = &r.hotspot {
        h.push_str(&crate::hotspot::html(hs));
    }
    if let Some(b) = &r.baseline {
        let _ = write!(
            h,
            "<h2>Against baseline</h2><p>{} (tolerance {:.0} %)</p><table><tr><th>op</th><th>metric</th><th>baseline</th><th>now</th><th></th></tr>",
            esc(&b.baseline),
            b.tolerance * 100.0
        );
        for c in &b.changes {
            let _ = write!(
                h,
                r#"<tr><td class="l">{}</td><td class="l">{}</td><td>{:.2}</td><td>{:.2}</td><td class="l{}">{}</td></tr>"#,
                esc(&c.op),
                c.metric,
                c.baseline,
                c.now,
                if c.regression { " fail" } else { "" },
                if c.regression { "REGRESSION" } else { "" }
            );
        }
        h.push_str("</table>");
    }
    let c = &r.verifier.checked;
    let _ = write!(
        h,
        r#"<h2>Verifier: <span class="{cls}">{v}</span></h2><p>{acked} acknowledged writes checked on {shards} shards; {journals} journals; {edge} edge reads; {mif} moves in flight; {res} unknown outcomes resolved by replay, {unres} unresolved; {rm} replay mismatches.</p><p>rows: {rows}</p>"#,
        cls = if r.verifier.passed() { "pass" } else { "fail" },
        v = if r.verifier.passed() {
            "no violations"
        } else {
            "violations"
        },
        acked = c.acked,
        shards = c.shards,
        journals = c.journals,
        edge = c.edge_reads,
        mif = c.moves_in_flight,
        res = r.resolved_unknown,
        unres = r.unresolved_unknown.len(),
        rm = r.retry_mismatches.len(),
        rows = esc(&c
            .rows_by_table
            .iter()
            .map(|(t, n)| format!("{t} {n}"))
            .collect::<Vec<_>>()
            .join(", ")),
    );
    if !r.verifier.violations.is_empty() || !r.retry_mismatches.is_empty() {
        h.push_str("<ul>");
        for v in &r.verifier.violations {
            let _ = write!(
                h,
                "<li><code>{}</code></li>",
                esc(&serde_json::to_string(v).unwrap_or_default())
            );
        }
        for m in &r.retry_mismatches {
            let _ = write!(h, "<li>replay mismatch: <code>{}</code></li>", esc(m));
        }
        h.push_str("</ul>");
    }
    h.push_str("</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_bounds() {
        assert_eq!(nice(0.0), 1.0);
        assert_eq!(nice(7.0), 10.0);
        assert_eq!(nice(12.0), 20.0);
        assert_eq!(nice(0.3), 0.5);
        assert_eq!(nice(500.0), 500.0);
    }

    use crate::testing::report;

    #[test]
    fn the_page_has_charts_events_and_the_verdict() {
        let page = render(&report(true));
        assert!(page.contains(r#"<span class="pass">PASSED</span>"#));
        assert_eq!(page.matches("<svg ").count(), 6);
        // One line per operation in each per-operation chart, ten points each.
        let line = page
            .split("<polyline")
            .nth(1)
            .and_then(|l| l.split("points=\"").nth(1))
            .and_then(|l| l.split('"').next())
            .unwrap();
        assert_eq!(line.split(' ').count(), 10, "{line}");
        // The event: start and finish marked on each of the six charts.
        assert_eq!(page.matches("MoveHottest start").count(), 6);
        assert_eq!(page.matches("MoveHottest done").count(), 6);
        assert!(page.contains("pause_ms"));
        assert!(page.contains("timeout 1"));
    }

    #[test]
    fn per_shard_charts_have_a_line_per_shard_and_fault_markers() {
        let mut r = report(true);
        r.events.push(crate::events::EventOutcome {
            at_s: 5,
            action: crate::events::Action::KillRebalancer,
            fault_at_s: Some(6.25),
            finished_s: 9.0,
            move_id: None,
            result: "restarted".into(),
            phase_ms: serde_json::Value::Null,
            ok: true,
        });
        let page = render(&r);
        let shard_part = page.split("<h2>Per shard</h2>").nth(1).unwrap();
        let shard_part = shard_part.split("<h2>").next().unwrap();
        assert_eq!(shard_part.matches("<svg ").count(), 2);
        // Two shards in each of the two charts, ten points each.
        assert_eq!(shard_part.matches("<polyline").count(), 4);
        assert!(shard_part.contains("<title>s2</title>"));
        // The fault is marked where it was injected (6.25 s), not at at_s.
        assert_eq!(shard_part.matches("KillRebalancer start").count(), 2);
        assert_eq!(shard_part.matches("KillRebalancer restarted").count(), 2);
        let x = PAD_L + (W - PAD_L - PAD_R) * 6.25 / 10.0;
        assert!(shard_part.contains(&format!("x1=\"{x:.1}\"")), "{x}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["shard_load"].as_array().unwrap().len(), 20);
        assert_eq!(json["shard_load"][1]["mean_latency_ms"], 40.0);

        r.shard_load.clear();
        r.shard_load_error = Some("catalog <down>".into());
        let page = render(&r);
        assert!(page.contains("No load samples: catalog &lt;down&gt;"));
    }

    #[test]
    fn violations_are_listed_escaped() {
        let page = render(&report(false));
        assert!(page.contains(r#"<span class="fail">FAILED</span>"#));
        assert!(page.contains("&lt;evil&gt;") && !page.contains("<evil>"));
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc("<a href=\"x\">&</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;"
        );
    }
}
