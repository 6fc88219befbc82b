use super::*;

fn shard(s: &str) -> ShardId {
    s.parse().unwrap()
}

fn kr(start: u64, end: u64) -> KeyRange {
    KeyRange::new(start, end).unwrap()
}

fn range(id: i64, start: u64, end: u64, s: &str, epoch: i64) -> Range {
    Range {
        id,
        range: kr(start, end),
        shard: shard(s),
        epoch,
    }
}

const HALF: u64 = 1 << 31;
const END: u64 = KEY_SPACE_END;

/// Two ranges: #1 [0, 2^31) on a (epoch 1), #2 [2^31, 2^32) on b (epoch 2).
fn two() -> RangeMap {
    RangeMap::new(vec![range(2, HALF, END, "b", 2), range(1, 0, HALF, "a", 1)]).unwrap()
}

/// Independent check of every invariant, written differently from `validate`.
fn assert_valid(map: &RangeMap) {
    let mut next = 0_u64;
    let mut ids = std::collections::BTreeSet::new();
    for r in map.ranges() {
        assert_eq!(r.range.start(), next, "gap or overlap at {next} in\n{map}");
        assert!(r.range.end() > r.range.start(), "empty range in\n{map}");
        assert!(ids.insert(r.id), "duplicate id {} in\n{map}", r.id);
        next = r.range.end();
    }
    assert_eq!(next, END, "map does not end at 2^32\n{map}");
    assert_eq!(
        map.epoch(),
        map.ranges().iter().map(|r| r.epoch).max().unwrap()
    );
    assert!(!map.is_empty());
}

fn linear_lookup(map: &RangeMap, key: u32) -> &Range {
    let hits: Vec<&Range> = map
        .ranges()
        .iter()
        .filter(|r| r.range.contains(key))
        .collect();
    assert_eq!(hits.len(), 1, "key {key} is in {} ranges", hits.len());
    hits[0]
}

#[test]
fn key_range_basics() {
    assert_eq!(KeyRange::FULL.len(), END);
    assert!(KeyRange::FULL.contains(0) && KeyRange::FULL.contains(u32::MAX));
    let r = kr(10, 20);
    assert!(!r.contains(9) && r.contains(10) && r.contains(19) && !r.contains(20));
    assert_eq!(r.len(), 10);
    assert!(!r.is_empty());
    assert_eq!(KeyRange::single(u32::MAX), kr(u64::from(u32::MAX), END));
    assert_eq!(KeyRange::single(7).len(), 1);
    for (start, end) in [(5, 5), (6, 5), (0, END + 1), (END, END + 1)] {
        assert_eq!(
            KeyRange::new(start, end),
            Err(RangeMapError::InvalidKeyRange { start, end })
        );
    }
    assert_eq!(kr(0, END).to_string(), "[0x00000000, 0x100000000)");
}

#[test]
fn key_range_serde_validates() {
    let json = serde_json::to_string(&kr(1, 2)).unwrap();
    assert_eq!(json, r#"{"start":1,"end":2}"#);
    assert_eq!(serde_json::from_str::<KeyRange>(&json).unwrap(), kr(1, 2));
    assert!(serde_json::from_str::<KeyRange>(r#"{"start":2,"end":2}"#).is_err());
    assert!(serde_json::from_str::<KeyRange>(r#"{"start":0,"end":4294967297}"#).is_err());
    assert!(serde_json::from_str::<KeyRange>(r#"{"start":-1,"end":2}"#).is_err());
}

#[test]
fn new_validates_coverage() {
    let map = two();
    assert_valid(&map);
    assert_eq!(map.len(), 2);
    assert_eq!(map.epoch(), 2);
    assert_eq!(map.ranges()[0].id, 1);

    assert_eq!(RangeMap::new(vec![]), Err(RangeMapError::Empty));
    assert_eq!(
        RangeMap::new(vec![range(1, 1, END, "a", 1)]),
        Err(RangeMapError::FirstStart { start: 1 })
    );
    assert_eq!(
        RangeMap::new(vec![range(1, 0, 10, "a", 1), range(2, 11, END, "a", 1)]),
        Err(RangeMapError::Gap { start: 10, end: 11 })
    );
    assert_eq!(
        RangeMap::new(vec![range(1, 0, 12, "a", 1), range(2, 10, END, "a", 1)]),
        Err(RangeMapError::Overlap {
            left: 1,
            right: 2,
            start: 10,
            end: 12
        })
    );
    assert_eq!(
        RangeMap::new(vec![range(1, 0, END, "a", 1), range(2, 0, END, "a", 1)]),
        Err(RangeMapError::Overlap {
            left: 1,
            right: 2,
            start: 0,
            end: END
        })
    );
    assert_eq!(
        RangeMap::new(vec![range(1, 0, 10, "a", 1)]),
        Err(RangeMapError::LastEnd { end: 10 })
    );
    assert_eq!(
        RangeMap::new(vec![range(1, 0, 10, "a", 1), range(1, 10, END, "a", 1)]),
        Err(RangeMapError::DuplicateId { id: 1 })
    );
}

#[test]
fn serde_round_trip_and_validation() {
    let map = two();
    let json = serde_json::to_string(&map).unwrap();
    assert!(
        json.starts_with(r#"[{"id":1,"range":{"start":0,"end":2147483648},"shard":"a","epoch":1}"#)
    );
    assert_eq!(serde_json::from_str::<RangeMap>(&json).unwrap(), map);
    let gap = r#"[{"id":1,"range":{"start":0,"end":5},"shard":"a","epoch":1}]"#;
    assert!(serde_json::from_str::<RangeMap>(gap).is_err());
    let bad_shard = json.replace("\"a\"", "\"A\"");
    assert!(serde_json::from_str::<RangeMap>(&bad_shard).is_err());
}

#[test]
fn even_seeds_round_robin() {
    let shards = [shard("s1"), shard("s2"), shard("s3")];
    let map = RangeMap::even(&shards, 2, 100).unwrap();
    assert_valid(&map);
    assert_eq!(map.len(), 6);
    assert_eq!(map.epoch(), RangeMap::SEED_EPOCH);
    for (i, r) in map.ranges().iter().enumerate() {
        assert_eq!(r.id, 100 + i as i64);
        assert_eq!(r.shard, shards[i % 3]);
        assert!(r.range.len().abs_diff(END / 6) <= 1);
    }
    assert_eq!(map.ranges_of(&shards[1]).count(), 2);

    let one = RangeMap::even(&shards[..1], 1, 1).unwrap();
    assert_eq!(one.ranges(), &[range(1, 0, END, "s1", 1)]);

    assert_eq!(RangeMap::even(&[], 4, 1), Err(RangeMapError::NoShards));
    assert_eq!(
        RangeMap::even(&shards, 0, 1),
        Err(RangeMapError::BadRangeCount { count: 0 })
    );
    assert_eq!(
        RangeMap::even(&shards, u32::MAX, 1),
        Err(RangeMapError::BadRangeCount {
            count: 3 * u64::from(u32::MAX)
        })
    );
    assert_eq!(
        RangeMap::even(&[shard("a"), shard("b"), shard("a")], 1, 1),
        Err(RangeMapError::DuplicateShard { shard: shard("a") })
    );
    assert_eq!(
        RangeMap::even(&shards, 1, i64::MAX - 1),
        Err(RangeMapError::IdOverflow)
    );
    let top = RangeMap::even(&shards, 1, i64::MAX - 2).unwrap();
    assert_eq!(top.ranges()[2].id, i64::MAX);
}

#[test]
fn lookup_finds_owner() {
    let map = RangeMap::even(&[shard("a"), shard("b")], 8, 1).unwrap();
    for r in map.ranges() {
        let start = u32::try_from(r.range.start()).unwrap();
        let last = u32::try_from(r.range.end() - 1).unwrap();
        assert_eq!(map.lookup(start), r);
        assert_eq!(map.lookup(last), r);
    }
    assert_eq!(map.lookup(0).id, 1);
    assert_eq!(map.lookup(u32::MAX).id, 16);
    let merchant: MerchantId = "0193b5e4-7a3c-7d2e-9f10-1234567890ab".parse().unwrap();
    assert!(
        map.lookup_merchant(&merchant)
            .range
            .contains(shard_key(&merchant))
    );
    assert_eq!(map.get(3).unwrap().id, 3);
    assert!(map.get(99).is_none());
}

#[test]
fn split_and_errors() {
    let mut map = two();
    map.split(1, 100, 3, 3).unwrap();
    assert_valid(&map);
    assert_eq!(map.get(1).unwrap(), &range(1, 0, 100, "a", 3));
    assert_eq!(map.get(3).unwrap(), &range(3, 100, HALF, "a", 3));
    assert_eq!(map.epoch(), 3);

    let before = map.clone();
    assert_eq!(
        map.split(1, 50, 4, 3),
        Err(RangeMapError::StaleEpoch {
            epoch: 3,
            current: 3
        })
    );
    assert_eq!(
        map.split(9, 50, 4, 4),
        Err(RangeMapError::UnknownId { id: 9 })
    );
    assert_eq!(
        map.split(1, 50, 2, 4),
        Err(RangeMapError::IdInUse { id: 2 })
    );
    assert_eq!(
        map.split(1, 50, 1, 4),
        Err(RangeMapError::IdInUse { id: 1 })
    );
    for at in [0, 100, 101, END] {
        assert_eq!(
            map.split(1, at, 4, 4),
            Err(RangeMapError::SplitOutside {
                id: 1,
                at,
                start: 0,
                end: 100
            })
        );
    }
    assert_eq!(map, before);
}

#[test]
fn merge_and_errors() {
    let mut map = two();
    map.split(1, 100, 3, 3).unwrap();
    let before = map.clone();
    assert_eq!(
        map.merge(3, 1, 4),
        Err(RangeMapError::NotAdjacent { left: 3, right: 1 })
    );
    assert_eq!(
        map.merge(1, 2, 4),
        Err(RangeMapError::NotAdjacent { left: 1, right: 2 })
    );
    assert_eq!(
        map.merge(1, 1, 4),
        Err(RangeMapError::NotAdjacent { left: 1, right: 1 })
    );
    assert_eq!(map.merge(1, 7, 4), Err(RangeMapError::UnknownId { id: 7 }));
    assert_eq!(
        map.merge(1, 3, 2),
        Err(RangeMapError::StaleEpoch {
            epoch: 2,
            current: 3
        })
    );
    assert_eq!(
        map.merge(3, 2, 4),
        Err(RangeMapError::DifferentShards {
            left: 3,
            right: 2,
            left_shard: shard("a"),
            right_shard: shard("b")
        })
    );
    assert_eq!(map, before);

    map.merge(1, 3, 4).unwrap();
    assert_valid(&map);
    assert_eq!(
        map.ranges(),
        &[range(1, 0, HALF, "a", 4), range(2, HALF, END, "b", 2)]
    );
    assert_eq!(map.epoch(), 4);
}

#[test]
fn reassign_and_errors() {
    let mut map = two();
    let before = map.clone();
    assert_eq!(
        map.reassign(1, shard("a"), 3),
        Err(RangeMapError::AlreadyOwned {
            id: 1,
            shard: shard("a")
        })
    );
    assert_eq!(
        map.reassign(5, shard("c"), 3),
        Err(RangeMapError::UnknownId { id: 5 })
    );
    assert_eq!(
        map.reassign(1, shard("c"), 2),
        Err(RangeMapError::StaleEpoch {
            epoch: 2,
            current: 2
        })
    );
    assert_eq!(map, before);
    map.reassign(1, shard("c"), 3).unwrap();
    assert_eq!(map.get(1).unwrap(), &range(1, 0, HALF, "c", 3));
    assert_eq!(map.epoch(), 3);
}

#[test]
fn isolate_key_cases() {
    let mut map = two();
    let mut next = 10;

    // In the middle: two splits, the key gets the first new id.
    assert_eq!(map.isolate_key(500, &mut next, 3), Ok(10));
    assert_eq!(next, 12);
    assert_valid(&map);
    assert_eq!(map.get(1).unwrap(), &range(1, 0, 500, "a", 3));
    assert_eq!(map.get(10).unwrap(), &range(10, 500, 501, "a", 3));
    assert_eq!(map.get(11).unwrap(), &range(11, 501, HALF, "a", 3));

    // Already isolated: no-op, epoch not checked, ids not consumed.
    assert_eq!(map.isolate_key(500, &mut next, 0), Ok(10));
    assert_eq!(next, 12);
    assert_eq!(map.epoch(), 3);

    // At a range start: one split, the key keeps the old id.
    assert_eq!(map.isolate_key(501, &mut next, 4), Ok(11));
    assert_eq!(next, 13);
    assert_eq!(map.get(11).unwrap(), &range(11, 501, 502, "a", 4));
    assert_eq!(map.get(12).unwrap(), &range(12, 502, HALF, "a", 4));

    // At a range's last key: one split, the key gets a new id.
    let last = u32::MAX;
    assert_eq!(map.isolate_key(last, &mut next, 5), Ok(13));
    assert_eq!(next, 14);
    assert_eq!(map.get(2).unwrap(), &range(2, HALF, END - 1, "b", 5));
    assert_eq!(map.get(13).unwrap(), &range(13, END - 1, END, "b", 5));
    assert_eq!(map.lookup(last).id, 13);
    assert_valid(&map);

    // Failures leave map and counter alone.
    let before = map.clone();
    assert_eq!(
        map.isolate_key(0, &mut next, 5),
        Err(RangeMapError::StaleEpoch {
            epoch: 5,
            current: 5
        })
    );
    let mut taken = 2;
    assert_eq!(
        map.isolate_key(0, &mut taken, 6),
        Err(RangeMapError::IdInUse { id: 2 })
    );
    assert_eq!(taken, 2);
    let mut overflow = i64::MAX;
    assert_eq!(
        map.isolate_key(1000, &mut overflow, 6),
        Err(RangeMapError::IdOverflow)
    );
    assert_eq!(overflow, i64::MAX);
    assert_eq!(map, before);
    assert_eq!(next, 14);
}

#[test]
fn display_summary() {
    let map = two();
    assert_eq!(
        map.to_string(),
        "range map epoch 2, 2 ranges\n  #1 [0x00000000, 0x80000000) -> a (epoch 1)\n  \
         #2 [0x80000000, 0x100000000) -> b (epoch 2)"
    );
}

mod properties;
