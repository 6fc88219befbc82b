//! The admin API (`admin::app`, driven with `oneshot`) against real shards and a
//! running engine: map reads, isolate + move by merchant with phase timings and
//! events, abort before and after the flip, split and merge, and problem+json
//! with stable codes for every bad request.

mod common;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::{Cluster, assert_ledger_consistent, assert_no_move_objects};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use shardline_core::api_keys::{self, Scope};
use shardline_rebalancer::admin::{AdminState, app};
use shardline_rebalancer::{Engine, MoveState};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

struct Api {
    app: axum::Router,
    key: String,
}

#[derive(Debug)]
struct Resp {
    status: StatusCode,
    content_type: String,
    location: Option<String>,
    body: Value,
}

impl Resp {
    fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }
    fn assert_problem(&self, status: StatusCode, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.content_type, "application/problem+json", "{self:?}");
        assert_eq!(self.code(), code, "{self:?}");
        assert_eq!(self.body["status"], status.as_u16(), "{self:?}");
    }
}

impl Api {
    async fn call(&self, method: Method, uri: &str, key: Option<&str>, body: Option<&str>) -> Resp {
        let mut b = Request::builder().method(method).uri(uri);
        if let Some(k) = key {
            b = b.header("authorization", format!("Bearer {k}"));
        }
        if body.is_some() {
            b = b.header("content-type", "application/json");
        }
        let req = b
            .body(Body::from(body.unwrap_or_default().to_owned()))
            .unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let header = |h: &str| {
            resp.headers()
                .get(h)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        let content_type = header("content-type").unwrap_or_default();
        let location = header("location");
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Resp {
            status,
            content_type,
            location,
            body,
        }
    }
    async fn get(&self, uri: &str) -> Resp {
        self.call(Method::GET, uri, Some(&self.key), None).await
    }
    async fn post(&self, uri: &str, body: Value) -> Resp {
        self.call(Method::POST, uri, Some(&self.key), Some(&body.to_string()))
            .await
    }
    async fn wait_terminal(&self, id: &str) -> Resp {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let r = self.get(&format!("/v1/moves/{id}")).await;
            assert_eq!(r.status, StatusCode::OK, "{r:?}");
            let st: MoveState = r.body["state"].as_str().unwrap().parse().unwrap();
            if st.is_terminal() {
                return r;
            }
            assert!(Instant::now() < deadline, "move stuck: {r:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_moves_splits_merges_and_rejects_bad_requests() {
    let c = Cluster::start(2).await;
    let stop = CancellationToken::new();
    let r = c.router(c.config(), &stop).await;
    let m = r.merchant("USD").await;
    for i in 0..25 {
        let a = r.authorize(&m, "4.00", "USD", &format!("p{i}")).await;
        assert!(a.status.is_success(), "{a:?}");
    }
    let api = Api {
        app: app(AdminState::new(c.catalog_pool.clone())),
        key: c.admin_key.clone(),
    };

    // auth: none, garbage, a payments key
    api.call(Method::GET, "/v1/ranges", None, None)
        .await
        .assert_problem(StatusCode::UNAUTHORIZED, "unauthorized");
    api.call(Method::GET, "/v1/ranges", Some("sl_nope"), None)
        .await
        .assert_problem(StatusCode::UNAUTHORIZED, "unauthorized");
    let pay = api_keys::create(
        &c.catalog_pool,
        "payments",
        &Scope::Payments { merchant_id: None },
    )
    .await
    .unwrap();
    api.call(Method::GET, "/v1/ranges", Some(&pay.token), None)
        .await
        .assert_problem(StatusCode::FORBIDDEN, "admin_required");

    // the map
    let shards = api.get("/v1/shards").await;
    assert_eq!(shards.status, StatusCode::OK, "{shards:?}");
    let list = shards.body.as_array().unwrap();
    assert_eq!(list.len(), 2);
    let keys: i64 = list.iter().map(|s| s["keys"].as_i64().unwrap()).sum();
    assert_eq!(keys, 1 << 32);
    assert!(
        list.iter().all(|s| s.get("dsn").is_none()),
        "no DSNs exposed"
    );
    let ranges = api.get("/v1/ranges").await;
    let rs = ranges.body.as_array().unwrap();
    assert_eq!(rs[0]["start_key"], 0);
    assert_eq!(rs.last().unwrap()["end_key"], 1i64 << 32);
    let on_s1 = api.get("/v1/ranges?shard=s1").await;
    assert!(
        on_s1
            .body
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["shard_id"] == "s1"),
        "{on_s1:?}"
    );

    // bad requests
    let (source, _) = c.owner(&m).await;
    let target = if source == "s1" { "s2" } else { "s1" };
    api.post("/v1/moves", json!({"to": target}))
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "invalid_body");
    api.post(
        "/v1/moves",
        json!({"merchant_id": m, "range_id": 1, "to": target}),
    )
    .await
    .assert_problem(StatusCode::BAD_REQUEST, "invalid_body");
    api.post("/v1/moves", json!({"merchant_id": "nope", "to": target}))
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "invalid_id");
    api.post("/v1/moves", json!({"merchant_id": m, "to": "s9"}))
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "unknown_shard");
    api.post("/v1/moves", json!({"merchant_id": m, "to": source}))
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    api.post("/v1/moves", json!({"range_id": 999_999, "to": target}))
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    api.call(Method::POST, "/v1/moves", Some(&api.key), Some("{not json"))
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "invalid_body");
    let no_ct = Request::builder()
        .method(Method::POST)
        .uri("/v1/moves")
        .header("authorization", format!("Bearer {}", api.key))
        .body(Body::from("{}"))
        .unwrap();
    let resp = api.app.clone().oneshot(no_ct).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    api.get("/v1/moves/not-a-uuid")
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "invalid_id");
    api.get(&format!("/v1/moves/{}", uuid::Uuid::now_v7()))
        .await
        .assert_problem(StatusCode::NOT_FOUND, "move_not_found");
    api.get("/v1/moves?state=bogus")
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "invalid_query");
    api.get("/v1/moves?limit=0")
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "invalid_query");
    api.post(
        "/v1/ranges/split",
        json!({"range_id": rs[0]["id"], "at": 0}),
    )
    .await
    .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    api.post("/v1/ranges/split", json!({"range_id": 999_999, "at": 5}))
        .await
        .assert_problem(StatusCode::NOT_FOUND, "range_not_found");
    api.get("/v1/nothing")
        .await
        .assert_problem(StatusCode::NOT_FOUND, "not_found");

    // a planned move aborted before any engine runs it ends aborted, source intact
    let planned = api
        .post("/v1/moves", json!({"merchant_id": m, "to": target}))
        .await;
    assert_eq!(planned.status, StatusCode::ACCEPTED, "{planned:?}");
    let id = planned.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        planned.location.as_deref(),
        Some(&*format!("/v1/moves/{id}"))
    );
    assert_eq!(planned.body["state"], "planned");
    let dup = api
        .post("/v1/moves", json!({"merchant_id": m, "to": target}))
        .await;
    dup.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    let ab = api.post(&format!("/v1/moves/{id}/abort"), json!({})).await;
    assert_eq!(ab.status, StatusCode::ACCEPTED, "{ab:?}");
    assert_eq!(ab.body["abort_requested"], true);
    {
        let e = Engine::new(c.catalog_pool.clone(), common::engine_config(&c))
            .await
            .unwrap();
        let end = e.run_move(id.parse().unwrap()).await.unwrap();
        assert_eq!(end, MoveState::Aborted);
    }
    assert_eq!(c.owner(&m).await.0, source);

    // isolate the merchant, then move its one-key range with a running engine
    let iso = api
        .post("/v1/ranges/isolate", json!({"merchant_id": m}))
        .await;
    assert_eq!(iso.status, StatusCode::OK, "{iso:?}");
    let range = &iso.body["range"];
    assert_eq!(
        range["end_key"].as_i64().unwrap() - range["start_key"].as_i64().unwrap(),
        1
    );
    let mut cfg = common::engine_config(&c);
    cfg.poll_interval = Duration::from_millis(100);
    let engine_stop = CancellationToken::new();
    let service = tokio::spawn(shardline_rebalancer::run(cfg, engine_stop.clone()));
    let mv = api
        .post(
            "/v1/moves",
            json!({"range_id": range["id"], "to": target, "reason": "test: hot merchant"}),
        )
        .await;
    assert_eq!(mv.status, StatusCode::ACCEPTED, "{mv:?}");
    let id = mv.body["id"].as_str().unwrap().to_owned();
    let done = api.wait_terminal(&id).await;
    assert_eq!(done.body["state"], "done", "{done:?}");
    assert_eq!(done.body["reason"], "test: hot merchant");
    for phase in ["copy_ms", "catch_up_ms", "verify_ms", "cleanup_ms"] {
        assert!(
            done.body["phase_ms"][phase].is_number(),
            "{phase}: {done:?}"
        );
    }
    let states: Vec<&str> = done.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["to_state"].as_str().unwrap())
        .collect();
    for st in [
        "planned",
        "copying",
        "verifying",
        "cutover",
        "switched",
        "done",
    ] {
        assert!(states.contains(&st), "{st} missing from {states:?}");
    }
    assert_eq!(c.owner(&m).await.0, target);
    api.post(&format!("/v1/moves/{id}/abort"), json!({}))
        .await
        .assert_problem(StatusCode::CONFLICT, "move_not_abortable");
    let listed = api.get("/v1/moves?state=done").await;
    assert!(
        listed
            .body
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["id"] == id.as_str()),
        "{listed:?}"
    );
    assert_eq!(api.get("/v1/moves?state=unfinished").await.body, json!([]));
    engine_stop.cancel();
    service.await.unwrap().unwrap();

    // split a range in two and merge it back
    let big = api.get("/v1/ranges").await.body.as_array().unwrap()[0].clone();
    let (s, e) = (
        big["start_key"].as_i64().unwrap(),
        big["end_key"].as_i64().unwrap(),
    );
    let sp = api
        .post(
            "/v1/ranges/split",
            json!({"range_id": big["id"], "at": s + (e - s) / 2}),
        )
        .await;
    assert_eq!(sp.status, StatusCode::CREATED, "{sp:?}");
    assert_eq!(sp.body["left"]["end_key"], sp.body["right"]["start_key"]);
    let mg = api
        .post(
            "/v1/ranges/merge",
            json!({"left": sp.body["right"]["id"], "right": big["id"]}),
        )
        .await;
    mg.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    let mg = api
        .post(
            "/v1/ranges/merge",
            json!({"left": big["id"], "right": sp.body["right"]["id"]}),
        )
        .await;
    assert_eq!(mg.status, StatusCode::OK, "{mg:?}");
    assert_eq!(mg.body["range"]["end_key"], e);

    // the merchant keeps working on its new owner
    let a = r.authorize(&m, "1.00", "USD", "after-move").await;
    assert!(a.status.is_success(), "{a:?}");
    assert_ledger_consistent(&c).await;
    assert_no_move_objects(&c).await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_the_catalog() {
    let c = Cluster::start(1).await;
    let up = Api {
        app: app(AdminState::new(c.catalog_pool.clone())),
        key: String::new(),
    };
    let r = up.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["status"], "ok");
    // A catalog nobody listens on: unready (problem+json), never a hang or a 500.
    let dead = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy("postgres://postgres@127.0.0.1:1/catalog")
        .unwrap();
    let down = Api {
        app: app(AdminState::new(dead)),
        key: String::new(),
    };
    let r = down.call(Method::GET, "/readyz", None, None).await;
    r.assert_problem(StatusCode::SERVICE_UNAVAILABLE, "not_ready");
    let r = down.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
}
