//! The router against real shards: placement, lifecycle + ledger, idempotency
//! and malformed input (auth scopes: `auth.rs`).

use axum::http::{Method, StatusCode};
use serde_json::json;
use shardline_core::MerchantId;
use shardline_testkit::{Call, Cluster, assert_ledger_consistent};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merchants_land_on_their_owners() {
    let c = Cluster::start(3).await;
    let stop = CancellationToken::new();
    let r = c.router(c.config(), &stop).await;
    let mut used = std::collections::HashSet::new();
    for _ in 0..12 {
        let m = r.merchant("USD").await;
        let (owner, _) = c.owner(&m).await;
        used.insert(owner.clone());
        for (id, _) in &c.shard_pools {
            let n = c.count(id.as_str(), "merchants", &m).await;
            assert_eq!(n, i64::from(id.as_str() == owner), "merchant {m} on {id}");
        }
        let got = r.get(&format!("/v1/merchants/{m}")).await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.body["id"], m.as_str());
        assert_eq!(got.body["default_currency"], "USD");
        let token = got.headers.get("shardline-token");
        assert!(token.is_none(), "reads carry no token");
    }
    assert!(used.len() >= 2, "12 merchants all on one shard: {used:?}");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_and_ledger() {
    let c = Cluster::start(2).await;
    let stop = CancellationToken::new();
    let r = c.router(c.config(), &stop).await;
    let m = r.merchant("USD").await;
    let (owner, _) = c.owner(&m).await;

    let a = r.authorize(&m, "100.00", "USD", "k1").await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
    assert_eq!(a.body["status"], "authorized");
    assert_eq!(a.body["amount"], "100.00");
    let token = a.headers["shardline-token"].to_str().unwrap().to_owned();
    assert!(token.starts_with(&format!("{owner}:")), "{token}");
    let p = a.body["id"].as_str().unwrap().to_owned();
    let base = format!("/v1/merchants/{m}/payments/{p}");

    let over = r
        .post(
            &format!("{base}/capture"),
            Some("c0"),
            json!({"amount": "100.01"}),
        )
        .await;
    assert_eq!(over.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(over.code(), "capture_exceeds_authorized");
    let precise = r
        .post(
            &format!("{base}/capture"),
            Some("c0b"),
            json!({"amount": "1.001"}),
        )
        .await;
    assert_eq!(precise.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(precise.code(), "amount_too_precise");

    let cap = r
        .post(
            &format!("{base}/capture"),
            Some("c1"),
            json!({"amount": "80"}),
        )
        .await;
    assert_eq!(cap.status, StatusCode::OK, "{cap:?}");
    assert_eq!(cap.body["status"], "captured");
    assert_eq!(cap.body["captured_amount"], "80.00");
    assert_eq!(cap.body["version"], 2);
    let again = r
        .post(&format!("{base}/capture"), Some("c2"), json!({}))
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.code(), "invalid_state");
    let void = r.post(&format!("{base}/void"), Some("v1"), json!({})).await;
    assert_eq!(void.code(), "invalid_state");

    let r1 = r
        .post(
            &format!("{base}/refunds"),
            Some("r1"),
            json!({"amount": "30.00"}),
        )
        .await;
    assert_eq!(r1.status, StatusCode::CREATED, "{r1:?}");
    assert_eq!(r1.body["payment"]["status"], "partially_refunded");
    let too_much = r
        .post(
            &format!("{base}/refunds"),
            Some("r2"),
            json!({"amount": "50.01"}),
        )
        .await;
    assert_eq!(too_much.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(too_much.code(), "refund_exceeds_captured");
    let r2 = r
        .post(
            &format!("{base}/refunds"),
            Some("r3"),
            json!({"amount": "20"}),
        )
        .await;
    assert_eq!(r2.body["payment"]["status"], "partially_refunded");
    let r3 = r
        .post(
            &format!("{base}/refunds"),
            Some("r4"),
            json!({"amount": "30.00"}),
        )
        .await;
    assert_eq!(r3.status, StatusCode::CREATED);
    assert_eq!(r3.body["payment"]["status"], "refunded");
    assert_eq!(r3.body["payment"]["refunded_amount"], "80.00");
    let after = r
        .post(
            &format!("{base}/refunds"),
            Some("r5"),
            json!({"amount": "0.01"}),
        )
        .await;
    assert_eq!(after.code(), "invalid_state");
    assert_eq!(c.count(&owner, "refunds", &m).await, 3);

    // authorize -> void
    let b = r.authorize(&m, "12.34", "USD", "k2").await;
    let pb = b.body["id"].as_str().unwrap().to_owned();
    let v = r
        .post(
            &format!("/v1/merchants/{m}/payments/{pb}/void"),
            Some("v2"),
            json!({}),
        )
        .await;
    assert_eq!(v.status, StatusCode::OK, "{v:?}");
    assert_eq!(v.body["status"], "voided");
    let cap_void = r
        .post(
            &format!("/v1/merchants/{m}/payments/{pb}/capture"),
            Some("c3"),
            json!({}),
        )
        .await;
    assert_eq!(cap_void.code(), "invalid_state");
    // a JPY payment, captured in full
    let j = r.authorize(&m, "500", "JPY", "k3").await;
    assert_eq!(j.body["amount"], "500");
    let pj = j.body["id"].as_str().unwrap().to_owned();
    let cj = r
        .send(Call {
            method: Method::POST,
            uri: format!("/v1/merchants/{m}/payments/{pj}/capture"),
            key: Some(&r.key),
            idem: Some("c4"),
            content_type: None,
            body: None,
        })
        .await;
    assert_eq!(cj.status, StatusCode::OK, "{cj:?}");
    assert_eq!(cj.body["captured_amount"], "500");

    let bal = r.get(&format!("/v1/merchants/{m}/balance")).await;
    assert_eq!(bal.status, StatusCode::OK);
    let usd = bal.body["balances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["currency"] == "USD")
        .unwrap()
        .clone();
    assert_eq!(
        usd,
        json!({"currency": "USD", "authorized": "0.00", "available": "0.00", "refunded": "80.00"})
    );
    let jpy = bal.body["balances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["currency"] == "JPY")
        .unwrap()
        .clone();
    assert_eq!(jpy["available"], "500");

    let got = r.get(&base).await;
    assert_eq!(got.body["status"], "refunded");
    let page = r.get(&format!("/v1/merchants/{m}/payments?limit=2")).await;
    assert_eq!(page.body["data"].as_array().unwrap().len(), 2);
    assert_eq!(page.body["has_more"], true);
    let next = page.body["next_after"].as_str().unwrap();
    let page2 = r
        .get(&format!("/v1/merchants/{m}/payments?limit=2&after={next}"))
        .await;
    assert_eq!(page2.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(page2.body["has_more"], false);
    assert_eq!(page2.body["data"][0]["id"], pj.as_str());

    assert_ledger_consistent(&c).await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency() {
    let c = Cluster::start(2).await;
    let stop = CancellationToken::new();
    let r = c.router(c.config(), &stop).await;
    let m = r.merchant("EUR").await;
    let (owner, _) = c.owner(&m).await;

    let missing = r
        .post(
            &format!("/v1/merchants/{m}/payments"),
            None,
            json!({"amount": "1.00", "currency": "EUR"}),
        )
        .await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(missing.code(), "idempotency_key_required");

    let first = r.authorize(&m, "10.50", "EUR", "same").await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(first.headers.get("idempotent-replayed").is_none());
    // "10.5" is the same amount: a replay, not a reuse.
    let again = r.authorize(&m, "10.5", "EUR", "same").await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.body, first.body);
    let reused = r.authorize(&m, "11.00", "EUR", "same").await;
    assert_eq!(reused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reused.code(), "idempotency_key_reused");
    assert_eq!(c.count(&owner, "payments", &m).await, 1);

    // Concurrent duplicates: exactly one effect; the others replay or get 409.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let r = r.clone();
            let m = m.clone();
            tokio::spawn(async move { r.authorize(&m, "7.00", "EUR", "concurrent").await })
        })
        .collect();
    let mut created = 0;
    let mut id = None;
    for t in tasks {
        let resp = t.await.unwrap();
        match resp.status {
            StatusCode::CREATED => {
                created += 1;
                let this = resp.body["id"].as_str().unwrap().to_owned();
                assert!(
                    id.get_or_insert(this.clone()) == &this,
                    "two different payments"
                );
            }
            StatusCode::CONFLICT => assert_eq!(resp.code(), "idempotency_in_flight"),
            other => panic!("unexpected {other}: {resp:?}"),
        }
    }
    assert!(created >= 1);
    assert_eq!(c.count(&owner, "payments", &m).await, 2);
    assert_eq!(c.count(&owner, "idempotency_keys", &m).await, 2);

    // Same key on a different endpoint is a different request.
    let p = first.body["id"].as_str().unwrap();
    let cap = r
        .post(
            &format!("/v1/merchants/{m}/payments/{p}/capture"),
            Some("same"),
            json!({}),
        )
        .await;
    assert_eq!(cap.code(), "idempotency_key_reused");
    assert_ledger_consistent(&c).await;
    stop.cancel();
}

/// (name, method, uri, content type, body, expected status, expected code)
type Case<'a> = (
    &'a str,
    Method,
    String,
    Option<&'a str>,
    Option<Vec<u8>>,
    StatusCode,
    &'a str,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_is_problem_json() {
    let c = Cluster::start(2).await;
    let stop = CancellationToken::new();
    let r = c.router(c.config(), &stop).await;
    let m = r.merchant("USD").await;
    let pay = format!("/v1/merchants/{m}/payments");
    let huge = format!(
        "{{\"amount\":\"1.00\",\"currency\":\"USD\",\"reference\":\"{}\"}}",
        "x".repeat(70_000)
    );
    let cases: Vec<Case> = vec![
        (
            "bad json",
            Method::POST,
            pay.clone(),
            Some("application/json"),
            Some(b"{\"amount\":".to_vec()),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "unknown field",
            Method::POST,
            pay.clone(),
            Some("application/json"),
            Some(br#"{"amount":"1.00","currency":"USD","x":1}"#.to_vec()),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "number amount",
            Method::POST,
            pay.clone(),
            Some("application/json"),
            Some(br#"{"amount":1.5,"currency":"USD"}"#.to_vec()),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "negative",
            Method::POST,
            pay.clone(),
            Some("application/json"),
            Some(br#"{"amount":"-1.00","currency":"USD"}"#.to_vec()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "amount_not_positive",
        ),
        (
            "zero",
            Method::POST,
            pay.clone(),
            Some("application/json"),
            Some(br#"{"amount":"0.00","currency":"USD"}"#.to_vec()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "amount_not_positive",
        ),
        (
            "too precise",
            Method::POST,
            pay.clone(),
            Some("application/json"),
            Some(br#"{"amount":"1.001","currency":"USD"}"#.to_vec()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "amount_too_precise",
        ),
        (
            "jpy fraction",
            Method::POST,
            pay.clone(),
            Some("application/json"),
            Some(br#"{"amount":"1.5","currency":"JPY"}"#.to_vec()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "amount_too_precise",
        ),
        (
            "unknown currency",
            Method::POST,
            pay.clone(),
            Some("application/json"),
            Some(br#"{"amount":"1.00","currency":"XXY"}"#.to_vec()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "currency_unknown",
        ),
        (
            "bad currency",
            Method::POST,
            pay.clone(),
            Some("application/json"),
            Some(br#"{"amount":"1.00","currency":"usd"}"#.to_vec()),
            StatusCode::BAD_REQUEST,
            "currency_invalid",
        ),
        (
            "huge body",
            Method::POST,
            pay.clone(),
            Some("application/json"),
            Some(huge.into_bytes()),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            "wrong content type",
            Method::POST,
            pay.clone(),
            Some("text/plain"),
            Some(br#"{"amount":"1.00","currency":"USD"}"#.to_vec()),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "no content type",
            Method::POST,
            pay.clone(),
            None,
            Some(br#"{"amount":"1.00","currency":"USD"}"#.to_vec()),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "bad merchant uuid",
            Method::GET,
            "/v1/merchants/not-a-uuid".into(),
            None,
            None,
            StatusCode::BAD_REQUEST,
            "invalid_id",
        ),
        (
            "nil uuid",
            Method::GET,
            "/v1/merchants/00000000-0000-0000-0000-000000000000".into(),
            None,
            None,
            StatusCode::BAD_REQUEST,
            "invalid_id",
        ),
        (
            "bad payment uuid",
            Method::GET,
            format!("{pay}/123"),
            None,
            None,
            StatusCode::BAD_REQUEST,
            "invalid_id",
        ),
        (
            "bad limit",
            Method::GET,
            format!("{pay}?limit=0"),
            None,
            None,
            StatusCode::BAD_REQUEST,
            "invalid_limit",
        ),
        (
            "bad limit type",
            Method::GET,
            format!("{pay}?limit=abc"),
            None,
            None,
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "bad after",
            Method::GET,
            format!("{pay}?after=zzz"),
            None,
            None,
            StatusCode::BAD_REQUEST,
            "invalid_id",
        ),
        (
            "unknown merchant",
            Method::GET,
            format!("/v1/merchants/{}", MerchantId::new()),
            None,
            None,
            StatusCode::NOT_FOUND,
            "merchant_not_found",
        ),
        (
            "unknown payment",
            Method::GET,
            format!("{pay}/{}", MerchantId::new()),
            None,
            None,
            StatusCode::NOT_FOUND,
            "payment_not_found",
        ),
        (
            "unknown route",
            Method::GET,
            "/v2/nothing".into(),
            None,
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "wrong method",
            Method::DELETE,
            pay.clone(),
            None,
            None,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            "merchant empty name",
            Method::POST,
            "/v1/merchants".into(),
            Some("application/json"),
            Some(br#"{"name":"","default_currency":"USD"}"#.to_vec()),
            StatusCode::BAD_REQUEST,
            "invalid_name",
        ),
        (
            "merchant missing field",
            Method::POST,
            "/v1/merchants".into(),
            Some("application/json"),
            Some(br#"{"name":"a"}"#.to_vec()),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
    ];
    for (name, method, uri, ct, body, status, code) in cases {
        let resp = r
            .send(Call {
                method,
                uri,
                key: Some(&r.key),
                idem: Some("idem-1"),
                content_type: ct,
                body,
            })
            .await;
        assert_eq!(resp.status, status, "{name}: {resp:?}");
        assert!(resp.is_problem(), "{name}: {resp:?}");
        assert_eq!(resp.code(), code, "{name}: {resp:?}");
    }
    let bad_idem = r
        .post(
            &pay,
            Some("has space"),
            json!({"amount": "1.00", "currency": "USD"}),
        )
        .await;
    assert_eq!(bad_idem.code(), "idempotency_key_invalid");
    assert_eq!(c.count(&c.owner(&m).await.0, "payments", &m).await, 0);
    stop.cancel();
}
