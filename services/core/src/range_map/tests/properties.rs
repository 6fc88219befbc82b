//! Property tests: random sequences of split, merge, reassign and isolate never
//! leave a gap or an overlap, and `new` accepts any order of a valid map.

use proptest::prelude::*;

use super::super::*;
use super::{END, assert_valid, linear_lookup, shard};

#[derive(Debug, Clone)]
enum Op {
    Split {
        pick: usize,
        at: u64,
        new_id: i64,
        epoch_delta: i64,
    },
    Merge {
        pick: usize,
        other: usize,
        epoch_delta: i64,
    },
    Reassign {
        pick: usize,
        shard: usize,
        epoch_delta: i64,
    },
    Isolate {
        key: u32,
        id_base: i64,
        epoch_delta: i64,
    },
}

const SHARDS: [&str; 3] = ["s0", "s1", "s2"];

fn op() -> impl Strategy<Value = Op> {
    // Mostly fresh epochs, sometimes stale ones; ids mostly fresh, sometimes taken;
    // split points and keys near existing boundaries as well as anywhere.
    let epoch_delta = prop_oneof![8 => 1_i64..3, 1 => -2_i64..=0];
    let new_id = prop_oneof![4 => 1000_i64..100_000, 1 => 0_i64..30];
    prop_oneof![
        3 => (any::<usize>(), 0..=END, new_id.clone(), epoch_delta.clone())
            .prop_map(|(pick, at, new_id, epoch_delta)| Op::Split { pick, at, new_id, epoch_delta }),
        3 => (any::<usize>(), prop_oneof![3 => Just(1_usize), 1 => 0_usize..8], epoch_delta.clone())
            .prop_map(|(pick, other, epoch_delta)| Op::Merge { pick, other, epoch_delta }),
        2 => (any::<usize>(), 0..SHARDS.len(), epoch_delta.clone())
            .prop_map(|(pick, shard, epoch_delta)| Op::Reassign { pick, shard, epoch_delta }),
        2 => (any::<u32>(), new_id, epoch_delta)
            .prop_map(|(key, id_base, epoch_delta)| Op::Isolate { key, id_base, epoch_delta }),
    ]
}

/// Turns a random `at` into a point near the picked range (often inside it).
fn split_point(r: &Range, at: u64) -> u64 {
    match at % 4 {
        0 => at,
        1 => r.range.start() + at % (r.range.len() + 1),
        2 => r.range.start() + 1 + at % 3,
        _ => r.range.end().saturating_sub(at % 3),
    }
}

/// The ids of the ranges holding `keys`, and their owners.
fn owners(map: &RangeMap, keys: &[u32]) -> Vec<ShardId> {
    keys.iter().map(|k| map.lookup(*k).shard.clone()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_keep_the_map_valid(
        shards_n in 1_usize..=3,
        per_shard in 1_u32..4,
        ops in prop::collection::vec(op(), 1..60),
        keys in prop::collection::vec(any::<u32>(), 16),
    ) {
        let shards: Vec<ShardId> = SHARDS[..shards_n].iter().map(|s| shard(s)).collect();
        let mut map = RangeMap::even(&shards, per_shard, 1).unwrap();
        assert_valid(&map);
        for op in ops {
            let before = map.clone();
            let epoch = before.epoch() + match op {
                Op::Split { epoch_delta, .. }
                | Op::Merge { epoch_delta, .. }
                | Op::Reassign { epoch_delta, .. }
                | Op::Isolate { epoch_delta, .. } => epoch_delta,
            };
            let n = before.len();
            let owners_before = owners(&before, &keys);
            let result: Result<(), RangeMapError> = match op.clone() {
                Op::Split { pick, at, new_id, .. } => {
                    let r = before.ranges()[pick % n].clone();
                    let at = split_point(&r, at);
                    let res = map.split(r.id, at, new_id, epoch);
                    if res.is_ok() {
                        prop_assert_eq!(map.len(), n + 1);
                        prop_assert_eq!(map.get(r.id).unwrap().range, KeyRange::new(r.range.start(), at).unwrap());
                        prop_assert_eq!(map.get(new_id).unwrap().range, KeyRange::new(at, r.range.end()).unwrap());
                    }
                    res
                }
                Op::Merge { pick, other, .. } => {
                    let left = before.ranges()[pick % n].clone();
                    let right = before.ranges()[(pick + other) % n].clone();
                    let res = map.merge(left.id, right.id, epoch);
                    if res.is_ok() {
                        prop_assert_eq!(map.len(), n - 1);
                        prop_assert!(map.get(right.id).is_none());
                        prop_assert_eq!(
                            map.get(left.id).unwrap().range,
                            KeyRange::new(left.range.start(), right.range.end()).unwrap()
                        );
                    }
                    res
                }
                Op::Reassign { pick, shard: s, .. } => {
                    let r = before.ranges()[pick % n].clone();
                    let res = map.reassign(r.id, shards[s % shards.len()].clone(), epoch);
                    if res.is_ok() {
                        prop_assert_eq!(map.len(), n);
                        prop_assert_eq!(&map.get(r.id).unwrap().shard, &shards[s % shards.len()]);
                    }
                    res
                }
                Op::Isolate { key, id_base, .. } => {
                    // Half the time pick a key next to an existing boundary.
                    let key = if key % 2 == 0 {
                        let r = &before.ranges()[key as usize % n];
                        u32::try_from(r.range.start()).unwrap().saturating_add(key % 3)
                    } else {
                        key
                    };
                    let mut next_id = id_base;
                    let was_isolated = before.lookup(key).range.len() == 1;
                    let res = map.isolate_key(key, &mut next_id, epoch);
                    match &res {
                        Ok(id) => {
                            prop_assert_eq!(map.lookup(key).id, *id);
                            prop_assert_eq!(map.lookup(key).range, KeyRange::single(key));
                            let used = usize::try_from(next_id - id_base).unwrap();
                            prop_assert!(used <= 2);
                            prop_assert_eq!(map.len(), n + used);
                            if was_isolated {
                                prop_assert_eq!(&map, &before);
                            }
                        }
                        Err(_) => prop_assert_eq!(next_id, id_base),
                    }
                    res.map(|_| ())
                }
            };

            match result {
                Ok(()) => {
                    assert_valid(&map);
                    if map != before {
                        prop_assert_eq!(map.epoch(), epoch);
                        prop_assert!(map.epoch() > before.epoch());
                    }
                    // Only a reassignment changes who owns a key.
                    if !matches!(op, Op::Reassign { .. }) {
                        prop_assert_eq!(owners(&map, &keys), owners_before);
                    }
                }
                Err(e) => {
                    prop_assert_eq!(&map, &before, "failed {:?} ({}) changed the map", op, e);
                    if epoch <= before.epoch() && !matches!(op, Op::Isolate { .. }) {
                        prop_assert!(
                            matches!(e, RangeMapError::StaleEpoch { .. }),
                            "stale epoch not reported first: {:?}", e
                        );
                    }
                }
            }

            for &key in &keys {
                prop_assert_eq!(map.lookup(key), linear_lookup(&map, key));
            }
            for r in map.ranges() {
                let first = u32::try_from(r.range.start()).unwrap();
                let last = u32::try_from(r.range.end() - 1).unwrap();
                prop_assert_eq!(map.lookup(first).id, r.id);
                prop_assert_eq!(map.lookup(last).id, r.id);
            }
        }
    }

    #[test]
    fn new_accepts_any_order_and_rejects_damage(
        shards_n in 1_usize..=3,
        per_shard in 1_u32..5,
        seed in any::<u64>(),
        damage in 0_u8..4,
    ) {
        let shards: Vec<ShardId> = SHARDS[..shards_n].iter().map(|s| shard(s)).collect();
        let map = RangeMap::even(&shards, per_shard, 1).unwrap();
        let mut ranges = map.ranges().to_vec();
        // A deterministic shuffle from the seed.
        let len = ranges.len();
        for i in (1..len).rev() {
            let j = usize::try_from((seed.rotate_left(i as u32) ^ i as u64) % (i as u64 + 1)).unwrap();
            ranges.swap(i, j);
        }
        prop_assert_eq!(&RangeMap::new(ranges.clone()).unwrap(), &map);

        let victim = usize::try_from(seed % len as u64).unwrap();
        match damage {
            0 => { ranges.remove(victim); }
            1 => {
                let dup = ranges[victim].clone();
                ranges.push(Range { id: 9999, ..dup });
            }
            2 => {
                let other = (victim + 1) % len;
                let id = ranges[other].id;
                ranges[victim].id = id;
            }
            _ => {
                let r = ranges[victim].range;
                ranges[victim].range = if r.len() > 1 {
                    KeyRange::new(r.start(), r.end() - 1).unwrap()
                } else {
                    KeyRange::new(r.start(), r.end() + 1).unwrap()
                };
            }
        }
        // Removing the only range, or re-using its own id, are not damage.
        if !(len == 1 && damage == 2) {
            prop_assert!(RangeMap::new(ranges).is_err());
        }
    }
}
