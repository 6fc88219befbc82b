//! The router's API keys against real shards and catalog: admin and payments
//! scopes, merchant-bound keys, revocation, and the open ops endpoints.

use axum::http::{Method, StatusCode};
use serde_json::json;
use shardline_core::MerchantId;
use shardline_core::api_keys::{self, Scope};
use shardline_testkit::{Call, Cluster};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_scopes() {
    let c = Cluster::start(2).await;
    let stop = CancellationToken::new();
    let r = c.router(c.config(), &stop).await;
    let m1 = r.merchant("USD").await;
    let m2 = r.merchant("USD").await;
    let scoped = api_keys::create(
        &c.catalog_pool,
        "m1",
        &Scope::Payments {
            merchant_id: Some(m1.parse::<MerchantId>().unwrap()),
        },
    )
    .await
    .unwrap()
    .token;
    let mut as_m1 = r.clone();
    as_m1.key = scoped;
    assert_eq!(
        as_m1.get(&format!("/v1/merchants/{m1}")).await.status,
        StatusCode::OK
    );
    let other = as_m1.get(&format!("/v1/merchants/{m2}")).await;
    assert_eq!(other.status, StatusCode::FORBIDDEN);
    assert_eq!(other.code(), "forbidden_merchant");
    assert!(other.is_problem());
    let pay = as_m1.authorize(&m2, "1.00", "USD", "x").await;
    assert_eq!(pay.code(), "forbidden_merchant");
    let create = as_m1
        .post(
            "/v1/merchants",
            None,
            json!({"name": "n", "default_currency": "USD"}),
        )
        .await;
    assert_eq!(create.status, StatusCode::FORBIDDEN);

    let none = r
        .send(Call {
            method: Method::GET,
            uri: format!("/v1/merchants/{m1}"),
            key: None,
            idem: None,
            content_type: None,
            body: None,
        })
        .await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert!(none.is_problem());
    assert!(
        none.headers
            .get("www-authenticate")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    let mut bogus = r.clone();
    bogus.key = "sl_000000000000_".to_owned() + &"0".repeat(64);
    assert_eq!(
        bogus.get(&format!("/v1/merchants/{m1}")).await.status,
        StatusCode::UNAUTHORIZED
    );
    bogus.key = "nonsense".into();
    assert_eq!(
        bogus.get(&format!("/v1/merchants/{m1}")).await.code(),
        "unauthorized"
    );

    let all = api_keys::create(
        &c.catalog_pool,
        "all",
        &Scope::Payments { merchant_id: None },
    )
    .await
    .unwrap();
    api_keys::revoke(&c.catalog_pool, all.id).await.unwrap();
    let mut revoked = r.clone();
    revoked.key = all.token;
    assert_eq!(
        revoked.get(&format!("/v1/merchants/{m1}")).await.status,
        StatusCode::UNAUTHORIZED
    );

    for open in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let resp = r
            .send(Call {
                method: Method::GET,
                uri: open.into(),
                key: None,
                idem: None,
                content_type: None,
                body: None,
            })
            .await;
        assert_eq!(resp.status, StatusCode::OK, "{open}: {resp:?}");
    }
    stop.cancel();
}
