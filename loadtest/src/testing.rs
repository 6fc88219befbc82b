//! Test support: a small but complete run report.

use crate::run::RunReport;
use crate::workload::OpKind;

pub(crate) fn report(passed: bool) -> RunReport {
    use crate::events::{Action, EventOutcome};
    use crate::scenario::Scenario;
    use crate::stats::Stats;
    use crate::verify::{Checked, Report, Violation};
    let mut stats = Stats::new();
    for sec in 0..10u64 {
        for i in 0..5u64 {
            let ms = std::time::Duration::from_millis(2 + i + sec);
            stats.record(OpKind::Authorize, sec, ms, None);
            stats.record(
                OpKind::ReadEdge,
                sec,
                ms,
                (i == 0 && sec == 4).then(|| (true, "timeout".into())),
            );
        }
    }
    let elapsed = std::time::Duration::from_secs(10);
    let mut scenario = Scenario::load("move-under-load").unwrap();
    scenario.duration_s = 10;
    RunReport {
        scenario,
        router_url: "http://127.0.0.1:8080".into(),
        edge_urls: vec!["http://127.0.0.1:8090".into()],
        seed: 7,
        started_at: "2026-11-29T20:00:00Z".into(),
        elapsed_s: 10.0,
        operations: 100,
        errors: 1,
        ops: stats.summaries(elapsed),
        timeline: stats.timeline(),
        shard_load: (0..10)
            .flat_map(|sec| {
                ["s1", "s2"].map(|shard| crate::shard_load::ShardPoint {
                    shard: shard.into(),
                    router: "r".into(),
                    at_s: f64::from(sec) + 0.5,
                    interval_s: 1.0,
                    requests: 4,
                    requests_per_s: 4.0,
                    mean_latency_ms: if shard == "s2" { 40.0 } else { 2.0 },
                })
            })
            .collect(),
        shard_load_error: None,
        retry_mismatches: Vec::new(),
        events: vec![EventOutcome {
            at_s: 3,
            action: Action::MoveHottest,
            fault_at_s: None,
            finished_s: 4.5,
            move_id: Some("m1".into()),
            result: "done".into(),
            phase_ms: serde_json::json!({"pause_ms": 40.0}),
            ok: true,
        }],
        hotspot: None,
        settled: true,
        resolved_unknown: 0,
        unresolved_unknown: Vec::new(),
        verifier: Report {
            violations: if passed {
                Vec::new()
            } else {
                vec![Violation::Orphan {
                    shard: "s1".into(),
                    object: "slot".into(),
                    name: "<evil>".into(),
                }]
            },
            checked: Checked::default(),
            unacked: Vec::new(),
        },
        passed,
        baseline: None,
    }
}
