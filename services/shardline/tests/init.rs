//! `shardline init` as a deploy runs it, against real PostgreSQL databases: a fresh
//! catalog and two shards get an even map, owned ranges and the imported admin key;
//! a second run changes nothing; a third shard added later is registered with no
//! ranges; bad settings exit 2 naming the setting, without echoing secrets.

use std::process::{Command, Output};

use shardline_core::api_keys::{self, ApiKeyError, Scope};
use shardline_core::{catalog, shard};
use shardline_devkit::{PgCluster, PgOptions};
use sqlx::PgPool;

const BIN: &str = env!("CARGO_BIN_EXE_shardline");
const KEY_VAR: &str = "SHARDLINE_TEST_BOOTSTRAP_KEY";

fn token(prefix: char, secret: char) -> String {
    format!(
        "sl_{}_{}",
        prefix.to_string().repeat(12),
        secret.to_string().repeat(64)
    )
}

fn init(args: &[String], key: Option<&str>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("init")
        .args(args)
        .env_remove("SHARDLINE_CATALOG_URL")
        .env_remove("SHARDLINE_INIT_SHARDS")
        .env_remove("SHARDLINE_INIT_ADMIN_KEY_ENV")
        .env_remove("SHARDLINE_RANGES_PER_SHARD")
        .env_remove(KEY_VAR);
    if let Some(k) = key {
        cmd.env(KEY_VAR, k);
    }
    cmd.output().expect("run shardline init")
}

fn json_of(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "init failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("init --json prints JSON")
}

fn args(catalog: &str, shards: &[(&str, &str)], extra: &[&str]) -> Vec<String> {
    let mut v = vec!["--catalog".to_owned(), catalog.to_owned()];
    for (id, url) in shards {
        v.push("--shard".into());
        v.push(format!("{id}={url}"));
    }
    v.extend(extra.iter().map(|s| (*s).to_owned()));
    v
}

fn shard_json<'a>(summary: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    summary["shards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no shard {id} in {summary}"))
}

/// (id, start, end, shard, epoch) of every catalog range.
async fn ranges(pool: &PgPool) -> Vec<(i64, i64, i64, String, i64)> {
    catalog::list_ranges(pool)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.id, r.start_key, r.end_key, r.shard_id, r.epoch))
        .collect()
}

fn assert_config_error(out: &Output, setting: &str, secret: Option<&str>) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains(&format!("invalid setting `{setting}`")),
        "stderr: {stderr}"
    );
    if let Some(s) = secret {
        assert!(!stderr.contains(s), "the error echoes a secret: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_bootstraps_existing_databases_idempotently() {
    let pg = PgCluster::start_temp(PgOptions::default()).await.unwrap();
    for db in ["catalog", "s1", "s2", "s3"] {
        pg.create_database(db).await.unwrap();
    }
    let (cat, s1, s2, s3) = (pg.url("catalog"), pg.url("s1"), pg.url("s2"), pg.url("s3"));
    let key = token('a', 'b');
    let two = [("s1", s1.as_str()), ("s2", s2.as_str())];

    // A fresh catalog and two shards.
    let flags = ["--admin-key-env", KEY_VAR, "--json"];
    let first = json_of(&init(&args(&cat, &two, &flags), Some(&key)));
    assert_eq!(first["seeded_map"], true, "{first}");
    assert_eq!(first["moves_happened"], false);
    assert_eq!(first["ranges"], 8);
    assert_eq!(first["admin_key"], "created");
    for id in ["s1", "s2"] {
        assert_eq!(shard_json(&first, id)["ranges"], 4, "{first}");
        assert_eq!(shard_json(&first, id)["owned_ranges_added"], 4, "{first}");
    }
    let catalog_pool = PgPool::connect(&cat).await.unwrap();
    let map = ranges(&catalog_pool).await;
    assert_eq!(map.len(), 8);
    for (id, url) in two {
        let p = PgPool::connect(url).await.unwrap();
        let owned = shard::owned_ranges(&p).await.unwrap();
        let want: Vec<i64> = map.iter().filter(|r| r.3 == id).map(|r| r.0).collect();
        assert_eq!(owned.iter().map(|o| o.id).collect::<Vec<_>>(), want);
        assert!(owned.iter().all(|o| o.state == "active"));
        p.close().await;
    }
    let (_, scope) = api_keys::verify(&catalog_pool, &key)
        .await
        .unwrap()
        .expect("the imported key verifies");
    assert_eq!(scope, Scope::Admin);
    let listed = api_keys::list(&catalog_pool).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, shardline::init::IMPORTED_KEY_NAME);

    // Again, as every deploy does: nothing changes.
    let second = json_of(&init(&args(&cat, &two, &flags), Some(&key)));
    assert_eq!(second["seeded_map"], false, "{second}");
    assert_eq!(second["admin_key"], "already_present");
    for id in ["s1", "s2"] {
        assert_eq!(shard_json(&second, id)["ranges"], 4);
        assert_eq!(shard_json(&second, id)["owned_ranges_added"], 0);
    }
    assert_eq!(ranges(&catalog_pool).await, map);
    assert_eq!(api_keys::list(&catalog_pool).await.unwrap().len(), 1);

    // A third shard joins the existing map with no ranges (the rebalancer moves
    // ranges onto it); without --admin-key-env no key is touched.
    let three = [
        ("s1", s1.as_str()),
        ("s2", s2.as_str()),
        ("s3", s3.as_str()),
    ];
    let out = init(&args(&cat, &three, &[]), None);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("shard s3: migrated and registered with 0 ranges"),
        "{text}"
    );
    assert!(
        text.contains("range map: already present (8 ranges)"),
        "{text}"
    );
    assert!(text.contains("shardline keys create"), "{text}");
    assert_eq!(ranges(&catalog_pool).await, map);
    let shards = catalog::list_shards(&catalog_pool).await.unwrap();
    assert_eq!(
        shards.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["s1", "s2", "s3"]
    );
    let p3 = PgPool::connect(&s3).await.unwrap();
    assert!(shard::owned_ranges(&p3).await.unwrap().is_empty());
    p3.close().await;

    // Listing only some shards leaves the others as they are.
    let partial = json_of(&init(&args(&cat, &two[..1], &["--json"]), None));
    let s3_json = shard_json(&partial, "s3");
    assert_eq!(s3_json["given"], false, "{partial}");
    assert_eq!(partial["admin_key"], serde_json::Value::Null);

    // Bad settings: exit 2, naming the setting, never echoing the secret.
    let bad = "sl_not_a_key_at_all";
    let out = init(&args(&cat, &two, &["--admin-key-env", KEY_VAR]), Some(bad));
    assert_config_error(&out, "admin_key_env", Some(bad));
    let out = init(&args(&cat, &two, &["--admin-key-env", KEY_VAR]), None);
    assert_config_error(&out, "admin_key_env", None);
    let out = init(&args(&cat, &[("s1", "mysql://u:hunter2@h/db")], &[]), None);
    assert_config_error(&out, "shard", Some("hunter2"));
    let out = init(&args(&cat, &[("s1", &s1), ("s1", &s2)], &[]), None);
    assert_config_error(&out, "shard", None);
    let out = init(&args(&cat, &[("s1", &s1), ("s2", &s1)], &[]), None);
    assert_config_error(&out, "shard", None);
    let out = init(&args(&cat, &[("Shard_1", &s1)], &[]), None);
    assert_config_error(&out, "shard", None);
    let out = init(&args(&cat, &[("s1", "no-equals-sign")], &[]), None);
    assert_config_error(&out, "shard", None);
    let out = init(&args(&cat, &[], &[]), None);
    assert_config_error(&out, "shard", None);
    let out = init(&["--shard".to_owned(), format!("s1={s1}")], None);
    assert_config_error(&out, "catalog", None);
    let out = init(&args(&cat, &two, &["--ranges-per-shard", "0"]), None);
    assert_config_error(&out, "ranges_per_shard", None);
    // s3's database under another id would own its ranges twice.
    let out = init(&args(&cat, &[("s4", &s3)], &[]), None);
    assert_config_error(&out, "shard", None);
    assert_eq!(catalog::list_shards(&catalog_pool).await.unwrap().len(), 3);

    // The library: importing another secret under a taken prefix, or a revoked
    // key, fails; a malformed token is rejected before any query.
    let other = token('a', 'c');
    assert!(matches!(
        api_keys::import(&catalog_pool, "x", &other, &Scope::Admin).await,
        Err(ApiKeyError::PrefixTaken(_))
    ));
    assert!(matches!(
        api_keys::import(&catalog_pool, "x", "sl_nope", &Scope::Admin).await,
        Err(ApiKeyError::Malformed)
    ));
    api_keys::revoke(&catalog_pool, listed[0].id).await.unwrap();
    assert!(matches!(
        api_keys::import(&catalog_pool, "x", &key, &Scope::Admin).await,
        Err(ApiKeyError::Revoked(_))
    ));
    let out = init(&args(&cat, &two, &["--admin-key-env", KEY_VAR]), Some(&key));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("revoked"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    catalog_pool.close().await;
}
