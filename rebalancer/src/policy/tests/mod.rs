//! Policy tests: hand-built inputs for single rounds (this file) and simulated
//! runs (`scenarios`, `properties`).

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use shardline_core::{KeyRange, MerchantId, Range, RangeMap, ShardId};

use super::sim::merchants;
use super::*;

mod properties;
mod scenarios;
mod stability;

pub(super) fn sid(s: &str) -> ShardId {
    s.parse().unwrap()
}

pub(super) fn shard_ids(n: usize) -> Vec<ShardId> {
    (1..=n).map(|i| sid(&format!("s{i}"))).collect()
}

/// A map of `owners.len()` equal ranges with ids 1.., owner i for range i.
pub(super) fn map_of(owners: &[&ShardId]) -> RangeMap {
    let n = owners.len() as u64;
    let b = |i: u64| i * KeyRange::FULL.end() / n;
    RangeMap::new(
        owners
            .iter()
            .enumerate()
            .map(|(i, s)| Range {
                id: i as i64 + 1,
                range: KeyRange::new(b(i as u64), b(i as u64 + 1)).unwrap(),
                shard: (*s).clone(),
                epoch: 1,
            })
            .collect(),
    )
    .unwrap()
}

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

/// `now` just after `intervals` complete 60 s intervals.
fn now_after(intervals: i64) -> DateTime<Utc> {
    t0() + ChronoDuration::seconds(60 * intervals) + ChronoDuration::milliseconds(1)
}

/// A range's steady rate: (range id, req/s, dominant merchant with its key and req/s).
type RangeRate = (i64, f64, Option<(MerchantId, u32, f64)>);

/// Input with `intervals` intervals of steady load: `rates` = (range id, req/s,
/// optional dominant merchant with its req/s).
fn steady(map: RangeMap, shards: &[ShardId], rates: &[RangeRate], intervals: i64) -> PolicyInput {
    let mut samples = Vec::new();
    for j in 0..intervals {
        for (id, rate, hitter) in rates {
            let r = map.get(*id).unwrap();
            let requests = (rate * 60.0) as u64;
            samples.push(LoadSample {
                router_id: "r".into(),
                at: t0() + ChronoDuration::seconds(60 * (j + 1)) - ChronoDuration::milliseconds(2),
                range_id: *id,
                keys: r.range,
                shard: r.shard.clone(),
                requests,
                writes: 0,
                rows_touched: 0,
                bytes: 0,
                latency_us_sum: requests * 100,
                latency_us_max: 900,
                heavy_hitters: hitter
                    .iter()
                    .map(|(m, k, rate)| HeavyHitter {
                        merchant_id: *m,
                        shard_key: *k,
                        count: (rate * 60.0) as u64,
                        error: 0,
                    })
                    .collect(),
            });
        }
    }
    PolicyInput {
        now: now_after(intervals),
        sizes: map
            .ranges()
            .iter()
            .map(|r| SizeEstimate {
                keys: r.range,
                bytes: 1 << 30,
            })
            .collect(),
        map,
        shards: shards
            .iter()
            .map(|s| ShardInfo::active(s.clone()))
            .collect(),
        samples,
        in_flight: Vec::new(),
        history: Vec::new(),
    }
}

/// Request-only load units: weights 1/0/0/0 so a rate is its load; 60 s
/// intervals (the hand-built inputs here are per minute).
fn plain() -> PolicyConfig {
    PolicyConfig {
        interval: std::time::Duration::from_secs(60),
        write_weight: 0.0,
        row_weight: 0.0,
        kib_weight: 0.0,
        ..PolicyConfig::default()
    }
}

/// Two shards, four ranges: s1 owns 1..=3 at 100/s each, s2 owns 4 at 10/s.
/// Moving one s1 range to s2 lowers the max from 300 to 200.
fn lopsided() -> (PolicyInput, Vec<ShardId>) {
    let sh = shard_ids(2);
    let map = map_of(&[&sh[0], &sh[0], &sh[0], &sh[1]]);
    let rates = [
        (1, 100.0, None),
        (2, 100.0, None),
        (3, 100.0, None),
        (4, 10.0, None),
    ];
    (steady(map, &sh, &rates, 5), sh)
}

fn reasons(ds: &[Decision]) -> Vec<(Reason, bool)> {
    ds.iter().map(|d| (d.reason, d.taken)).collect()
}

#[test]
fn lopsided_cluster_moves_a_range_to_the_cool_shard() {
    let (input, sh) = lopsided();
    let ds = decide(&input, &plain()).unwrap();
    let moves: Vec<&Decision> = ds.iter().filter(|d| d.taken).collect();
    assert_eq!(moves.len(), 1, "{ds:#?}");
    let d = moves[0];
    assert_eq!(d.reason, Reason::RebalanceHotShard);
    match d.action.as_ref().unwrap() {
        Action::Move { source, target, .. } => {
            assert_eq!((source, target), (&sh[0], &sh[1]));
        }
        a => panic!("{a:?}"),
    }
    assert!((d.inputs.max_load - 300.0).abs() < 1e-6, "{:?}", d.inputs);
    assert!((d.inputs.predicted_max.unwrap() - 200.0).abs() < 1e-6);
    // Determinism: same input, same decisions.
    assert_eq!(ds, decide(&input, &plain()).unwrap());
}

#[test]
fn decisions_serialize_with_codes_and_inputs() {
    let (input, _) = lopsided();
    let ds = decide(&input, &plain()).unwrap();
    let d = ds.iter().find(|d| d.taken).unwrap();
    let v = d.to_json();
    assert_eq!(v["action"], "move");
    assert_eq!(v["reason"], "rebalance_hot_shard");
    assert_eq!(v["taken"], true);
    assert_eq!(v["source"], "s1");
    assert_eq!(v["inputs"]["shard_loads"]["s1"], 300.0);
    assert!(v["explanation"].as_str().unwrap().contains("move range"));
    assert_eq!(d.kind(), "move");
    let codes: std::collections::BTreeSet<&str> = Reason::ALL.iter().map(|r| r.code()).collect();
    assert_eq!(codes.len(), Reason::ALL.len());
    for r in Reason::ALL {
        assert_eq!(serde_json::to_value(r).unwrap(), r.code());
    }
}

#[test]
fn insufficient_history_declines() {
    let (mut input, _) = lopsided();
    input.samples.retain(|s| s.at > now_after(3));
    input.now = now_after(5);
    let ds = decide(&input, &plain()).unwrap();
    assert_eq!(reasons(&ds), vec![(Reason::InsufficientHistory, false)]);
}

#[test]
fn cooldown_declines_a_recently_moved_range() {
    let (mut input, sh) = lopsided();
    let now = input.now;
    for id in 1..=3 {
        input.history.push(MoveRecord {
            keys: input.map.get(id).unwrap().range,
            source: sh[1].clone(),
            target: sh[0].clone(),
            started_at: now - ChronoDuration::minutes(10),
            finished_at: now - ChronoDuration::minutes(8),
            bytes: 1,
            completed: true,
        });
    }
    let ds = decide(&input, &plain()).unwrap();
    assert!(ds.iter().all(|d| !d.taken), "{ds:#?}");
    assert!(
        ds.iter().any(|d| d.reason == Reason::RangeCooldown
            && d.inputs.blocked_by_move_at == Some(now - ChronoDuration::minutes(10))),
        "{ds:#?}"
    );
    // After the cooldown (15 min) the same record blocks only the way back: it
    // moved s2 -> s1 and going back to s2 is oscillation.
    for h in &mut input.history {
        h.started_at = now - ChronoDuration::minutes(20);
    }
    let ds = decide(&input, &plain()).unwrap();
    assert!(ds.iter().all(|d| !d.taken));
    assert!(
        ds.iter().any(|d| d.reason == Reason::Oscillation),
        "{ds:#?}"
    );
    // And after the oscillation window it moves.
    for h in &mut input.history {
        h.started_at = now - ChronoDuration::hours(3);
        h.finished_at = now - ChronoDuration::hours(3);
    }
    let ds = decide(&input, &plain()).unwrap();
    assert!(
        ds.iter()
            .any(|d| d.taken && d.reason == Reason::RebalanceHotShard)
    );
}

#[test]
fn concurrency_limit_declines() {
    let (mut input, sh) = lopsided();
    let mut cfg = plain();
    cfg.max_concurrent_moves = 1;
    // Some other range of some other cluster part is already moving: use a
    // move of range 4 (s2 -> s1) in flight.
    input.in_flight.push(MoveInFlight {
        move_id: uuid::Uuid::from_u128(7),
        range_id: 4,
        keys: input.map.get(4).unwrap().range,
        source: sh[1].clone(),
        target: sh[0].clone(),
        started_at: input.now - ChronoDuration::minutes(1),
        bytes: 10,
    });
    let ds = decide(&input, &cfg).unwrap();
    assert!(ds.iter().all(|d| !d.taken), "{ds:#?}");
    assert_eq!(
        ds.iter()
            .filter(|d| d.reason == Reason::MaxConcurrentMoves)
            .count(),
        1
    );
    let d = ds
        .iter()
        .find(|d| d.reason == Reason::MaxConcurrentMoves)
        .unwrap();
    assert_eq!(d.inputs.moves_in_flight, 1);
    // With room for one more: exactly one move is taken even though more ranges
    // could go.
    cfg.max_concurrent_moves = 2;
    let ds = decide(&input, &cfg).unwrap();
    assert_eq!(
        ds.iter()
            .filter(|d| d.taken && d.action.as_ref().is_some_and(|a| a.kind() == "move"))
            .count(),
        1,
        "{ds:#?}"
    );
}

#[test]
fn byte_budget_declines() {
    let (mut input, sh) = lopsided();
    let mut cfg = plain();
    cfg.byte_budget_per_hour = 3 << 30;
    input.history.push(MoveRecord {
        keys: KeyRange::single(7),
        source: sh[0].clone(),
        target: sh[1].clone(),
        started_at: input.now - ChronoDuration::minutes(40),
        finished_at: input.now - ChronoDuration::minutes(30),
        bytes: 5 << 29,
        completed: true,
    });
    // 2.5 GiB spent + a 1 GiB range > 3 GiB.
    let ds = decide(&input, &cfg).unwrap();
    assert!(ds.iter().all(|d| !d.taken), "{ds:#?}");
    let d = ds.iter().find(|d| d.reason == Reason::ByteBudget).unwrap();
    assert_eq!(d.inputs.bytes_last_hour, 5 << 29);
    assert_eq!(d.inputs.candidate_bytes, Some(1 << 30));
    // An hour later the budget is free again.
    input.history[0].started_at = input.now - ChronoDuration::minutes(61);
    let ds = decide(&input, &cfg).unwrap();
    assert!(ds.iter().any(|d| d.taken));
}

#[test]
fn floor_and_tolerance_decline() {
    let sh = shard_ids(2);
    let map = map_of(&[&sh[0], &sh[0], &sh[0], &sh[1]]);
    // Very lopsided but tiny: below the 50/s floor.
    let input = steady(
        map.clone(),
        &sh,
        &[(1, 15.0, None), (2, 15.0, None), (3, 15.0, None)],
        5,
    );
    let ds = decide(&input, &plain()).unwrap();
    assert_eq!(reasons(&ds), vec![(Reason::BelowFloor, false)]);
    // Big but within 10 % of the mean.
    let input = steady(
        map,
        &sh,
        &[
            (1, 40.0, None),
            (2, 40.0, None),
            (3, 25.0, None),
            (4, 100.0, None),
        ],
        5,
    );
    let ds = decide(&input, &plain()).unwrap();
    assert_eq!(reasons(&ds), vec![(Reason::WithinTolerance, false)]);
}

#[test]
fn moves_that_do_not_lower_the_max_are_refused() {
    let sh = shard_ids(2);
    let map = map_of(&[&sh[0], &sh[1]]);
    // One range carries everything and no merchant dominates it.
    let input = steady(map, &sh, &[(1, 300.0, None), (2, 20.0, None)], 5);
    let ds = decide(&input, &plain()).unwrap();
    assert_eq!(
        reasons(&ds),
        vec![(Reason::NoImprovement, false)],
        "{ds:#?}"
    );
    let d = &ds[0];
    assert!(d.inputs.predicted_max.unwrap() >= d.inputs.max_load);
}

#[test]
fn dominant_merchant_is_isolated_not_its_range() {
    let sh = shard_ids(3);
    let map = map_of(&[&sh[0], &sh[1], &sh[2], &sh[0]]);
    let m = merchants(2000, 11, 1)
        .into_iter()
        .find(|m| map.lookup(m.key).id == 1)
        .unwrap();
    let rates = [
        (1, 400.0, Some((m.id, m.key, 320.0))),
        (2, 100.0, None),
        (3, 60.0, None),
        (4, 100.0, None),
    ];
    let input = steady(map, &sh, &rates, 5);
    let ds = decide(&input, &plain()).unwrap();
    let d = ds
        .iter()
        .find(|d| d.taken)
        .unwrap_or_else(|| panic!("{ds:#?}"));
    assert_eq!(d.reason, Reason::IsolateDominantMerchant);
    assert_eq!(
        d.action,
        Some(Action::Isolate {
            merchant: m.id,
            key: m.key,
            range_id: 1,
            source: sh[0].clone(),
            target: sh[2].clone(),
        })
    );
    assert!((d.inputs.merchant_share.unwrap() - 0.8).abs() < 1e-9);
    assert_eq!(d.inputs.candidate_bytes, Some(858_993_459)); // 0.8 GiB
}

#[test]
fn not_sustained_spike_declines() {
    let (mut input, _) = lopsided();
    // Only the newest interval is lopsided; before it both shards carried 60/s.
    for s in &mut input.samples {
        if s.at < input.now - ChronoDuration::seconds(60) {
            s.requests = if s.range_id == 4 { 3600 } else { 1200 };
        }
    }
    let ds = decide(&input, &plain()).unwrap();
    assert!(ds.iter().all(|d| !d.taken), "{ds:#?}");
    let d = ds
        .iter()
        .find(|d| d.reason == Reason::NotSustained)
        .unwrap();
    assert_eq!(d.inputs.intervals_hot, Some(1));
}

#[test]
fn invalid_config_is_an_error() {
    let (input, _) = lopsided();
    let mut cfg = plain();
    cfg.ewma_alpha = 2.0;
    assert_eq!(decide(&input, &cfg).unwrap_err().knob, "ewma_alpha");
}
