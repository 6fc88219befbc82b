//! Seeded random clusters: the invariants every run must keep, whatever the
//! load. Deterministic (fixed seeds).

use shardline_core::RangeMap;

use super::super::sim::{Rng, Sim, merchants};
use super::super::{PolicyConfig, Reason, ShardState};
use super::scenarios::{assert_budget, assert_no_back_and_forth, moves};
use super::shard_ids;

/// A hot spell: merchant, first tick, length, extra req/s.
type Spell = (usize, u64, u64, f64);

#[test]
fn random_clusters_keep_the_invariants() {
    let mut total_moves = 0;
    for seed in 0..16u64 {
        let mut rng = Rng::new(seed);
        let n = 2 + rng.below(4) as usize;
        let per = 2 + u32::try_from(rng.below(4)).unwrap();
        let sh = shard_ids(n);
        let map = RangeMap::even(&sh, per, 1).unwrap();
        let ms = merchants(300, seed + 100, 16 << 20);
        let base: Vec<f64> = (0..ms.len())
            .map(|_| rng.below(100) as f64 / 100.0)
            .collect();
        let spells: Vec<Spell> = (0..rng.below(4))
            .map(|_| {
                (
                    rng.below(300) as usize,
                    rng.below(60),
                    1 + rng.below(60),
                    50.0 + rng.below(300) as f64,
                )
            })
            .collect();
        let cfg = PolicyConfig {
            max_concurrent_moves: 1 + u32::try_from(rng.below(3)).unwrap(),
            byte_budget_per_hour: [1u64 << 30, 4 << 30][rng.below(2) as usize],
            ..PolicyConfig::default()
        };
        let drain = (rng.below(4) == 0)
            .then(|| (sh[rng.below(n as u64) as usize].clone(), 20 + rng.below(40)));
        let mut sim = Sim::new(
            cfg,
            &sh,
            map,
            ms,
            Box::new(move |t, i| {
                base[i]
                    + spells
                        .iter()
                        .filter(|(m, from, len, _)| *m == i && (*from..from + len).contains(&t))
                        .map(|s| s.3)
                        .sum::<f64>()
            }),
        );
        sim.uniform_rate = rng.below(400) as f64;
        sim.uniform_bytes = (n as u64 * u64::from(per)) << 28;
        for t in 0..150 {
            if let Some((s, at)) = &drain
                && *at == t
            {
                sim.set_state(s, ShardState::Draining);
            }
            let tick = sim.step();
            assert!(
                !tick.decisions.is_empty(),
                "seed {seed} tick {t}: no decision"
            );
            for d in &tick.decisions {
                assert!(d.inputs.mean_load.is_finite() && d.inputs.max_load.is_finite());
                assert!(d.to_json()["reason"].is_string());
                if d.taken
                    && matches!(
                        d.reason,
                        Reason::RebalanceHotShard | Reason::IsolateDominantMerchant
                    )
                {
                    let p = d.inputs.predicted_max.unwrap();
                    assert!(p <= d.inputs.max_load + 1e-9, "seed {seed} tick {t}: {d}");
                }
            }
        }
        if let Some((s, at)) = &drain {
            assert!(
                moves(&sim).iter().all(|m| m.0 < *at || &m.3 != s),
                "seed {seed}: a move targeted draining {s}"
            );
        }
        assert_no_back_and_forth(&sim);
        assert_budget(&sim);
        total_moves += moves(&sim).len();
    }
    // The seeds do exercise the policy.
    assert!(total_moves >= 20, "{total_moves} moves over all seeds");
}
