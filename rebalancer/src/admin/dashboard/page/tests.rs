//! Rendering tests of the dashboard page (no database: hand-built snapshots).

use super::super::{DecisionItem, LoadBucket, MoveItem, RangeItem, ShardRow};
use super::*;
use crate::autopilot::state::{PolicyMode, PolicyState};
use serde_json::json;

fn snapshot() -> Snapshot {
    let now = DateTime::from_timestamp(1_700_000_005, 0).unwrap();
    let mv = |state: &str, finished: bool| MoveItem {
        id: uuid::Uuid::now_v7(),
        range_id: 2,
        start_key: 1 << 31,
        end_key: 1 << 32,
        source_shard: "s2".into(),
        target_shard: "s1".into(),
        state: state.into(),
        reason: "rebalance_hot_shard".into(),
        abort_requested: false,
        error: None,
        phase_ms: json!({"copy_ms": 1200.0, "pause_ms": 40.0, "freeze_ms": 3.0}),
        created_at: now - chrono::Duration::seconds(125),
        finished_at: finished.then_some(now - chrono::Duration::seconds(5)),
    };
    Snapshot {
        now,
        policy: Some(PolicyState {
            mode: PolicyMode::DryRun,
            changed_by: Some("ops <alice>".into()),
            changed_at: now - chrono::Duration::seconds(600),
            leader: Some("rb-1".into()),
            last_round_at: Some(now - chrono::Duration::seconds(30)),
            last_round_ms: Some(12),
            last_error: Some("catalog <timeout>".into()),
            config: json!({}),
        }),
        shards: vec![
            ShardRow {
                id: "s2".into(),
                state: "active".into(),
            },
            ShardRow {
                id: "s1".into(),
                state: "draining".into(),
            },
        ],
        ranges: vec![
            RangeItem {
                id: 1,
                start_key: 0,
                end_key: 1 << 31,
                shard_id: "s1".into(),
                epoch: 7,
                state: "active".into(),
            },
            RangeItem {
                id: 2,
                start_key: 1 << 31,
                end_key: 1 << 32,
                shard_id: "s2".into(),
                epoch: 8,
                state: "moving".into(),
            },
        ],
        range_count: 2,
        map_epoch: 8,
        in_flight: vec![mv("verifying", false)],
        in_flight_count: 1,
        finished: vec![mv("done", true)],
        load: vec![
            // now is in bucket 170000000; the last complete one is 169999999
            LoadBucket {
                shard_id: "s1".into(),
                bucket: 169_999_999,
                requests: 500,
            },
            LoadBucket {
                shard_id: "s1".into(),
                bucket: 170_000_000,
                requests: 999,
            },
            LoadBucket {
                shard_id: "s9".into(),
                bucket: 169_999_910,
                requests: 20,
            },
        ],
        decisions: vec![
            DecisionItem {
                id: 1,
                at: now,
                kind: "move".into(),
                taken: true,
                dry_run: true,
                reason: "rebalance_hot_shard".into(),
                range_id: Some(2),
                move_id: None,
                text: Some("shard s2 is hot <263/s> & rising".into()),
            },
            DecisionItem {
                id: 2,
                at: now,
                kind: "decline".into(),
                taken: false,
                dry_run: false,
                reason: "within_tolerance".into(),
                range_id: None,
                move_id: None,
                text: None,
            },
        ],
    }
}

#[test]
fn step_bar_marks_past_current_and_future() {
    let s = step_bar("verifying");
    assert_eq!(s.matches(r#"class="past""#).count(), 3);
    assert_eq!(s.matches(r#"class="current""#).count(), 1);
    assert!(s.contains(r#"<li class="current">verifying</li>"#));
    assert!(s.contains(r#"<li class="past">catching up</li>"#));
    assert_eq!(s.matches(r#"class="future""#).count(), 4);
    let a = step_bar("aborting");
    assert!(a.contains("steps aborting") && !a.contains("current"));
    assert_eq!(step_bar("planned").matches("past").count(), 0);
    assert_eq!(step_bar("done").matches(r#"class="past""#).count(), 7);
}

#[test]
fn durations() {
    assert_eq!(fmt_age(-3), "0s");
    assert_eq!(fmt_age(45), "45s");
    assert_eq!(fmt_age(245), "4m 05s");
    assert_eq!(fmt_age(7380), "2h 03m");
    assert_eq!(fmt_age(273_600), "3d 04h");
    assert_eq!(fmt_ms(850.4), "850 ms");
    assert_eq!(fmt_ms(12_345.0), "12.3 s");
    assert_eq!(fmt_ms(125_000.0), "2m 05s");
    assert_eq!(fmt_ms(f64::NAN), "?");
}

#[test]
fn load_series_per_complete_bucket_and_shard() {
    let snap = snapshot();
    let shards = shard_ids(&snap);
    assert_eq!(shards, ["s1", "s2", "s9"], "registered sorted, then others");
    let (first, pts) = load_series(&snap, &shards);
    assert_eq!(first, (170_000_000 - 90) * 10);
    assert_eq!(pts.len(), 3);
    assert!(pts.iter().all(|p| p.len() == 90));
    assert_eq!(pts[0][89], 50.0, "500 requests in 10 s");
    assert_eq!(
        pts[0].iter().sum::<f64>(),
        50.0,
        "the filling bucket is left out"
    );
    assert_eq!(pts[1].iter().sum::<f64>(), 0.0);
    assert_eq!(pts[2][0], 2.0);
}

#[test]
fn page_has_every_panel_and_escapes_text() {
    let html = render(&snapshot(), Some(5));
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains(r#"<meta http-equiv="refresh" content="5">"#));
    assert!(!render(&snapshot(), None).contains("http-equiv"));
    for id in [
        r#"id="range-map""#,
        r#"id="load""#,
        r#"id="moves""#,
        r#"id="finished""#,
        r#"id="decisions""#,
    ] {
        assert!(html.contains(id), "{id}");
    }
    assert!(html.contains(r#"<span class="badge mode-dry_run" id="policy-mode">dry_run</span>"#));
    assert!(html.contains("catalog &lt;timeout&gt;"));
    assert!(html.contains("ops &lt;alice&gt;, 10m 00s ago"));
    assert!(html.contains("shard s2 is hot &lt;263/s&gt; &amp; rising"));
    assert!(!html.contains("<263/s>") && !html.contains("<alice>"));
    assert!(html.contains(r#"<code class="reason">within_tolerance</code>"#));
    assert!(html.contains(r#"<tr class="declined""#));
    assert!(html.contains(r#"<li class="current">verifying</li>"#));
    assert!(html.contains("age 2m 05s"));
    assert!(
        html.contains(r#"<td class="num">2m 00s</td><td class="num">40 ms</td>"#),
        "total and pause"
    );
    assert!(html.contains("copy 1.2 s · pause 40 ms"));
    assert!(html.contains("[0x80000000, 0x100000000)"));
    assert!(html.contains(r#"class="range moving""#));
    assert!(html.contains(r#"class="load-chart""#) && html.contains("<polyline"));
    assert!(html.contains("30s ago</span> (12 ms)"));
    assert_eq!(html.matches("<svg").count(), 3, "map, chart, one phase bar");
}

#[test]
fn empty_catalog_renders() {
    let mut snap = snapshot();
    snap.policy = None;
    snap.ranges.clear();
    snap.in_flight.clear();
    snap.in_flight_count = 0;
    snap.finished.clear();
    snap.load.clear();
    snap.decisions.clear();
    let html = render(&snap, None);
    assert!(html.contains("No move in flight."));
    assert!(html.contains("No finished move yet."));
    assert!(html.contains("No decision recorded yet."));
    assert!(html.contains("no load samples in this window"));
    assert!(html.contains("policy mode<b>unknown</b>"));
}
