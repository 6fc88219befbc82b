//! The catalog schema against a real PostgreSQL: the range map is kept gap- and
//! overlap-free by the database, epochs only grow, changes are notified.

mod common;

use common::{Db, sqlstate};
use futures_util::StreamExt;
use shardline_core::catalog;
use shardline_core::fence;
use shardline_core::migrations::Schema;
use shardline_core::{ShardId, shard_key};

async fn seeded() -> Db {
    let db = Db::new(Schema::Catalog).await;
    let ids: Vec<ShardId> = ["s1", "s2", "s3"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    for id in &ids {
        catalog::upsert_shard(&db.pool, id, "postgres://x@127.0.0.1/x")
            .await
            .unwrap();
    }
    assert!(catalog::seed_even(&db.pool, &ids, 2).await.unwrap());
    db
}

#[tokio::test]
async fn seeding_covers_the_key_space_once_and_is_idempotent() {
    let db = seeded().await;
    let ids: Vec<ShardId> = ["s1", "s2", "s3"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert!(
        !catalog::seed_even(&db.pool, &ids, 2).await.unwrap(),
        "second seed is a no-op"
    );
    let map = catalog::load_range_map(&db.pool).await.unwrap();
    assert_eq!(map.len(), 6);
    let m = shardline_core::MerchantId::new();
    let owner = map.lookup(shard_key(&m));
    assert!(owner.range.contains(shard_key(&m)));
    // Epochs are distinct and increasing along insertion.
    let rows = catalog::list_ranges(&db.pool).await.unwrap();
    let mut epochs: Vec<i64> = rows.iter().map(|r| r.epoch).collect();
    epochs.sort_unstable();
    epochs.dedup();
    assert_eq!(epochs.len(), 6);
}

#[tokio::test]
async fn gaps_and_overlaps_are_rejected_by_the_database() {
    let db = seeded().await;
    let c = db.client().await;
    let first: (i64, i64) = {
        let r = c
            .query_one(
                "SELECT id, end_key FROM ranges ORDER BY start_key LIMIT 1",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    // Shrinking a range leaves a gap: rejected at commit.
    let err = c
        .batch_execute(&format!(
            "UPDATE ranges SET end_key = end_key - 1 WHERE id = {}",
            first.0
        ))
        .await
        .expect_err("gap");
    assert_eq!(sqlstate(&err), fence::MAP_NOT_COVERING, "{err}");
    // Growing it overlaps its neighbour: rejected at once (exclusion constraint).
    let err = c
        .batch_execute(&format!(
            "UPDATE ranges SET end_key = end_key + 1 WHERE id = {}",
            first.0
        ))
        .await
        .expect_err("overlap");
    assert_eq!(sqlstate(&err), "23P01", "{err}");
    // Deleting a range leaves a gap.
    let err = c
        .batch_execute(&format!("DELETE FROM ranges WHERE id = {}", first.0))
        .await
        .expect_err("gap by delete");
    assert_eq!(sqlstate(&err), fence::MAP_NOT_COVERING, "{err}");
    // A split done right (shrink + insert in one transaction) commits.
    let mid = first.1 / 2;
    c.batch_execute(&format!(
        "BEGIN;
         UPDATE ranges SET end_key = {mid} WHERE id = {id};
         INSERT INTO ranges (start_key, end_key, shard_id, epoch) VALUES ({mid}, {end}, 's2', 0);
         COMMIT;",
        id = first.0,
        end = first.1
    ))
    .await
    .unwrap();
    assert_eq!(catalog::load_range_map(&db.pool).await.unwrap().len(), 7);
}

#[tokio::test]
async fn range_changes_take_new_epochs_and_notify_listeners() {
    let db = seeded().await;
    let (listener, mut conn) =
        tokio_postgres::connect(&db.cluster.conninfo(&db.name), tokio_postgres::NoTls)
            .await
            .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(msg)) = stream.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = msg {
                let _ = tx.send((n.channel().to_owned(), n.payload().to_owned()));
            }
        }
    });
    listener
        .batch_execute("LISTEN shardline_map")
        .await
        .unwrap();
    let before = catalog::load_range_map(&db.pool).await.unwrap().epoch();
    let c = db.client().await;
    // Reassign: the epoch passed in is ignored; the database stamps a new one.
    let new_epoch: i64 = c
        .query_one(
            "UPDATE ranges SET shard_id = 's3', epoch = 0 WHERE start_key = 0 RETURNING epoch",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(new_epoch > before);
    let (channel, payload) = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
        .await
        .expect("notification")
        .unwrap();
    assert_eq!(channel, "shardline_map");
    assert_eq!(payload, new_epoch.to_string());
}

#[tokio::test]
async fn move_events_are_append_only_and_catalog_migrations_idempotent() {
    let db = seeded().await;
    let c = db.client().await;
    c.batch_execute(
        "INSERT INTO moves (id, range_id, start_key, end_key, source_shard, target_shard, publication, slot, subscription)
         VALUES ('0190a0a0-0000-7000-8000-000000000001', 1, 0, 10, 's1', 's2', 'p', 's', 'u');
         INSERT INTO move_events (move_id, to_state) VALUES ('0190a0a0-0000-7000-8000-000000000001', 'planned');",
    )
    .await
    .unwrap();
    let err = c
        .batch_execute("UPDATE move_events SET to_state = 'done'")
        .await
        .expect_err("update");
    assert_eq!(sqlstate(&err), fence::APPEND_ONLY);
    let err = c
        .batch_execute("DELETE FROM move_events")
        .await
        .expect_err("delete");
    assert_eq!(sqlstate(&err), fence::APPEND_ONLY);
    // Two unfinished moves of one range are refused.
    let err = c
        .batch_execute(
            "INSERT INTO moves (id, range_id, start_key, end_key, source_shard, target_shard, publication, slot, subscription)
             VALUES ('0190a0a0-0000-7000-8000-000000000002', 1, 0, 10, 's1', 's3', 'p', 's', 'u')",
        )
        .await
        .expect_err("second active move");
    assert_eq!(sqlstate(&err), "23505");

    shardline_core::migrations::run(&db.pool, Schema::Catalog)
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        n as usize,
        shardline_core::migrations::CATALOG.iter().count()
    );
}

#[tokio::test]
async fn api_keys_are_stored_hashed_and_verify() {
    use shardline_core::api_keys::{self, Scope};
    let db = Db::new(Schema::Catalog).await;
    let key = api_keys::create(&db.pool, "test", &Scope::Admin)
        .await
        .unwrap();
    let stored: Vec<u8> = sqlx::query_scalar("SELECT secret_hash FROM api_keys")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(
        !key.token
            .as_bytes()
            .windows(stored.len())
            .any(|w| w == stored.as_slice())
    );
    assert!(
        !format!("{key:?}").contains(&key.token),
        "Debug must not print the secret"
    );
    assert_eq!(
        api_keys::verify(&db.pool, &key.token)
            .await
            .unwrap()
            .map(|v| v.1),
        Some(Scope::Admin)
    );
    let mut wrong = key.token.clone();
    wrong.pop();
    wrong.push(if key.token.ends_with('0') { '1' } else { '0' });
    assert!(api_keys::verify(&db.pool, &wrong).await.unwrap().is_none());
    api_keys::revoke(&db.pool, key.id).await.unwrap();
    assert!(
        api_keys::verify(&db.pool, &key.token)
            .await
            .unwrap()
            .is_none()
    );
}
