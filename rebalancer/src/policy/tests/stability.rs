//! Stability scenarios: oscillating, alternating, idle and spiky load must not
//! make the policy move data back and forth (or at all).

use shardline_core::RangeMap;

use super::super::sim::merchants;
use super::super::{PolicyConfig, Reason, sim::Sim};
use super::scenarios::{assert_no_back_and_forth, moves, overlaps, skewed_starts, taken_moves};
use super::shard_ids;

fn oscillating(period: u64, cfg: PolicyConfig) -> Sim {
    let sh = shard_ids(2);
    let map = RangeMap::even(&sh, 4, 1).unwrap();
    let ms = merchants(200, 7, 1 << 20);
    let a = ms
        .iter()
        .position(|m| map.lookup(m.key).shard == sh[0])
        .unwrap();
    let b = ms
        .iter()
        .position(|m| map.lookup(m.key).shard == sh[1])
        .unwrap();
    let mut sim = Sim::new(
        cfg,
        &sh,
        map,
        ms,
        Box::new(move |t, i| {
            let a_hot = (t / period).is_multiple_of(2);
            if (i == a && a_hot) || (i == b && !a_hot) {
                200.0
            } else {
                0.0
            }
        }),
    );
    sim.uniform_rate = 160.0;
    sim.run(150);
    sim
}

#[test]
fn oscillating_load_moves_nothing_back_and_forth() {
    for period in [4, 6, 10, 20] {
        let sim = oscillating(period, PolicyConfig::default());
        assert_no_back_and_forth(&sim);
        // It may react while the history is too short to show the
        // oscillation, but no key moves twice within the oscillation window
        // (120 intervals), whatever the direction, and churn stays bounded.
        let ms = moves(&sim);
        for (i, a) in ms.iter().enumerate() {
            for b in &ms[i + 1..] {
                assert!(
                    !overlaps(a.1, b.1) || b.0 - a.0 > 120,
                    "period {period}: {} moved at ticks {} and {}",
                    a.1,
                    a.0,
                    b.0
                );
            }
        }
        assert!(ms.len() <= 12, "period {period}: {ms:?}");
    }
    // Control: without cooldown and anti-oscillation the same load does make
    // the policy move data back and forth, so the test above can fail.
    let off = PolicyConfig {
        range_cooldown: std::time::Duration::ZERO,
        oscillation_window: std::time::Duration::ZERO,
        ..PolicyConfig::default()
    };
    let sim = oscillating(10, off);
    let ms = moves(&sim);
    let back = ms.iter().enumerate().any(|(i, a)| {
        ms[i + 1..]
            .iter()
            .any(|b| overlaps(a.1, b.1) && b.3 == a.2 && b.0 - a.0 <= 120)
    });
    assert!(back, "control run did not oscillate: {ms:?}");
}

#[test]
fn load_alternating_faster_than_sustained_moves_nothing() {
    let sim = oscillating(2, PolicyConfig::default());
    assert_eq!(taken_moves(&sim), 0, "{:?}", moves(&sim));
    assert!(
        sim.decisions()
            .any(|(_, d)| d.reason == Reason::NotSustained)
    );
}

#[test]
fn idle_cluster_moves_nothing() {
    let s = &skewed_starts()[0];
    let sh = shard_ids(s.shards);
    let mut sim = Sim::new(
        PolicyConfig::default(),
        &sh,
        (s.map)(&sh),
        Vec::new(),
        Box::new(|_, _| 0.0),
    );
    sim.uniform_rate = 20.0;
    sim.run(40);
    assert_eq!(taken_moves(&sim), 0);
    for t in &sim.trace[3..] {
        assert!(
            t.decisions.iter().any(|d| d.reason == Reason::BelowFloor),
            "tick {}: {:?}",
            t.tick,
            t.decisions
        );
    }
}

#[test]
fn single_spike_moves_nothing() {
    let sh = shard_ids(4);
    let map = RangeMap::even(&sh, 4, 1).unwrap();
    let ms = merchants(50, 3, 1 << 20);
    let mut sim = Sim::new(
        PolicyConfig::default(),
        &sh,
        map,
        ms,
        Box::new(|t, i| if i == 0 && t == 10 { 2000.0 } else { 0.0 }),
    );
    sim.uniform_rate = 400.0;
    sim.run(40);
    assert_eq!(taken_moves(&sim), 0, "{:?}", moves(&sim));
    let spike = &sim.trace[10];
    let d = spike
        .decisions
        .iter()
        .find(|d| d.reason == Reason::NotSustained)
        .unwrap_or_else(|| panic!("{:?}", spike.decisions));
    assert_eq!(d.inputs.intervals_hot, Some(1));
}
