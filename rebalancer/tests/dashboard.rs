//! The dashboard (`GET /` on the admin server) against a real catalog holding a
//! realistic state (three shards, a split, 15 minutes of load samples, a move in
//! flight, a planned move, finished moves with phase timings, decisions):
//! (a) through the app: Bearer and Basic auth, 401 with a Basic challenge,
//! 403 for a payments key, `?refresh`, and the panels' content;
//! (b) in headless Chromium against a listening server: the rendered DOM and a
//! screenshot.
//!
//! Chromium: `SHARDLINE_CHROMIUM`, else `/usr/bin/chromium`, else `chromium`,
//! `chromium-browser` or `google-chrome` on PATH. Missing, the test fails (Debian
//! package `chromium`) unless `SHARDLINE_SKIP_BROWSER=1`.
//! `SHARDLINE_DASHBOARD_SCREENSHOT=<path>` copies the screenshot there
//! (docs/img/rebalancer-dashboard.png is made that way).

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::Cluster;
use http_body_util::BodyExt;
use serde_json::json;
use shardline_core::api_keys::{self, Scope};
use shardline_rebalancer::admin::{AdminServer, AdminState, app};
use shardline_rebalancer::{Subject, plan_move};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use uuid::Uuid;

const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(60);

fn base64(input: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
}

#[derive(Debug)]
struct Page {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Page {
    fn header(&self, h: header::HeaderName) -> &str {
        self.headers
            .get(h)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }
    fn assert_problem(&self, status: StatusCode, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(
            self.header(header::CONTENT_TYPE),
            "application/problem+json",
            "{self:?}"
        );
        let v: serde_json::Value = serde_json::from_str(&self.body).unwrap();
        assert_eq!(v["code"], code, "{self:?}");
    }
}

async fn get(app: &axum::Router, uri: &str, authorization: Option<&str>) -> Page {
    let mut b = Request::builder().uri(uri);
    if let Some(a) = authorization {
        b = b.header(header::AUTHORIZATION, a);
    }
    let resp = app
        .clone()
        .oneshot(b.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    Page {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

/// What the seeded catalog holds that the page must show.
struct Seeded {
    in_flight: Uuid,
    planned: Uuid,
    finished: Vec<Uuid>,
    moving_range: i64,
}

const HOT_TEXT: &str = "shard s1 is hot (264.0/s, threshold 146.7/s, 3 intervals): move range 1 \
     (120.5/s) to s3, predicted max 158.2/s";
const ESCAPE_TEXT: &str = "no candidate relieves s2 by 5% (best: range 4 -> s3 gives < 5% & \
     raises the cluster max)";

async fn seed(c: &Cluster) -> Seeded {
    let pool = &c.catalog_pool;
    // one split, so the map has ranges of different sizes
    let (r1, r1_end): (i64, i64) = sqlx::query_as(
        "SELECT id, end_key FROM ranges WHERE shard_id = 's1' ORDER BY start_key LIMIT 1",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    shardline_rebalancer::ops::split(pool, r1, r1_end / 2)
        .await
        .unwrap();

    // 15 minutes of samples: s1 hot and rising, s2 steady with a wave, s3 cool
    sqlx::query(
        "INSERT INTO load_samples (router_id, at, interval_ms, range_id, start_key, end_key,
                                   shard_id, requests, writes)
         SELECT 'router-a', now() - make_interval(secs => g * 10 + 5), 10000,
                r.id, r.start_key, r.end_key, r.shard_id, q, q / 3
           FROM ranges r, generate_series(0, 95) g,
                LATERAL (SELECT (CASE r.shard_id
                    WHEN 's1' THEN 700 + 9 * (95 - g)
                    WHEN 's2' THEN 900 + 250 * sin(g / 7.0)
                    ELSE 500 + 120 * cos(g / 11.0) END)::bigint AS q) v",
    )
    .execute(pool)
    .await
    .unwrap();

    // a move in flight (as the engine leaves it while catching up: the range is
    // `moving`) and a planned one
    let moving_range: i64 = sqlx::query_scalar(
        "SELECT id FROM ranges WHERE shard_id = 's1' ORDER BY start_key LIMIT 1",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    let in_flight = plan_move(
        pool,
        Subject::Range(moving_range),
        "s3",
        "rebalance_hot_shard",
    )
    .await
    .unwrap();
    sqlx::query(
        "UPDATE moves SET state = 'catching_up', created_at = now() - interval '95 seconds',
                phase_ms = '{\"copy_ms\": 61234}' WHERE id = $1",
    )
    .bind(in_flight)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("UPDATE ranges SET state = 'moving' WHERE id = $1")
        .bind(moving_range)
        .execute(pool)
        .await
        .unwrap();
    let s2_range: i64 = sqlx::query_scalar(
        "SELECT id FROM ranges WHERE shard_id = 's2' ORDER BY start_key LIMIT 1",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    let planned = plan_move(pool, Subject::Range(s2_range), "s3", "operator")
        .await
        .unwrap();

    // finished moves with phase timings (one aborted)
    let mut finished = Vec::new();
    for (i, (state, copy, pause)) in [
        ("done", 48_210.0, 212.0),
        ("done", 95_400.0, 388.0),
        ("aborted", 12_000.0, 0.0),
        ("done", 30_050.0, 145.0),
    ]
    .into_iter()
    .enumerate()
    {
        let id = Uuid::now_v7();
        let phases = if state == "done" {
            json!({"copy_ms": copy, "catch_up_ms": copy / 9.0, "verify_ms": copy / 5.0,
                   "freeze_ms": pause / 4.0, "pause_ms": pause, "flip_ms": pause + 35.0,
                   "cleanup_ms": 850.0 + copy / 40.0})
        } else {
            json!({"copy_ms": copy})
        };
        let (src, dst) = if i % 2 == 0 {
            ("s2", "s3")
        } else {
            ("s1", "s2")
        };
        sqlx::query(
            "INSERT INTO moves (id, range_id, start_key, end_key, source_shard, target_shard,
                                state, reason, publication, slot, subscription, phase_ms,
                                created_at, finished_at)
             VALUES ($1, 900 + $2::int, $2::bigint * 16777216, ($2::bigint + 1) * 16777216,
                     $3, $4, $5, 'rebalance_hot_shard', 'p', 's', 'u', $6,
                     now() - make_interval(mins => 50 - 10 * $2::int)
                           - make_interval(secs => $7::float8 / 1000),
                     now() - make_interval(mins => 50 - 10 * $2::int))",
        )
        .bind(id)
        .bind(i as i32)
        .bind(src)
        .bind(dst)
        .bind(state)
        .bind(phases)
        .bind(copy * 1.4)
        .execute(pool)
        .await
        .unwrap();
        finished.push(id);
    }

    // decisions: older first; one without any text, one to be escaped
    let decisions = [
        (
            "decline",
            false,
            false,
            "within_tolerance",
            None,
            None,
            json!({}),
        ),
        (
            "decline",
            false,
            false,
            "not_sustained",
            None,
            None,
            json!({"text": "shard s1 is hot now (181.0/s > 146.7/s) but only for 1 of 3 intervals",
                   "inputs": {"intervals_hot": 1}}),
        ),
        (
            "decline",
            false,
            false,
            "no_improvement",
            Some(s2_range),
            None,
            json!({"text": ESCAPE_TEXT, "inputs": {}, "action": {"action": "move"}}),
        ),
        (
            "move",
            true,
            false,
            "rebalance_hot_shard",
            Some(moving_range),
            Some(in_flight),
            json!({"text": HOT_TEXT, "inputs": {"shard": "s1"},
                   "action": {"action": "move", "range_id": moving_range, "target": "s3"}}),
        ),
        (
            "decline",
            false,
            true,
            "max_concurrent_moves",
            None,
            None,
            json!({"text": "no free move slot (2 in flight)"}),
        ),
    ];
    let n = decisions.len() as i32;
    for (i, (kind, taken, dry_run, reason, range_id, move_id, inputs)) in
        decisions.into_iter().enumerate()
    {
        sqlx::query(
            "INSERT INTO decisions (at, kind, taken, dry_run, reason, range_id, move_id, inputs)
             VALUES (now() - make_interval(mins => $1::int), $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(n - i as i32)
        .bind(kind)
        .bind(taken)
        .bind(dry_run)
        .bind(reason)
        .bind(range_id)
        .bind(move_id)
        .bind(inputs)
        .execute(pool)
        .await
        .unwrap();
    }
    sqlx::query(
        "UPDATE policy_state SET mode = 'active', leader = 'rebalancer-1',
                last_round_at = now() - interval '12 seconds', last_round_ms = 38",
    )
    .execute(pool)
    .await
    .unwrap();
    Seeded {
        in_flight,
        planned,
        finished,
        moving_range,
    }
}

/// What both the served HTML and Chromium's DOM must contain.
fn assert_content(html: &str, s: &Seeded) {
    for needle in [
        r#"<svg class="range-map""#,
        r#"<svg class="load-chart""#,
        "<polyline",
        r#"class="range moving""#,
        r#"data-shard="s1""#,
        r#"data-shard="s2""#,
        r#"data-shard="s3""#,
        r#"id="policy-mode">active<"#,
        "rebalancer-1",
        r#"<code class="reason">rebalance_hot_shard</code>"#,
        r#"<code class="reason">not_sustained</code>"#,
        r#"<code class="reason">within_tolerance</code>"#,
        HOT_TEXT,
        "requests / s",
        r#"<li class="current">catching up</li>"#,
        r#"<li class="current">planned</li>"#,
        r#"<span class="badge mode-paused">aborted</span>"#,
    ] {
        assert!(html.contains(needle), "missing {needle:?} in:\n{html}");
    }
    // escaped once: `<` and `&` of the decision text are entities
    let escaped = ESCAPE_TEXT
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    assert!(html.contains(&escaped), "escaped decision text");
    assert!(!html.contains(ESCAPE_TEXT));
    for id in [s.in_flight, s.planned].iter().chain(&s.finished) {
        assert!(html.contains(&format!(r#"data-move="{id}""#)), "move {id}");
    }
    assert!(html.contains(&format!(r#"<tr data-range="{}">"#, s.moving_range)));
}

/// The browser to drive, or why there is none.
fn find_chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SHARDLINE_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let fixed = Path::new("/usr/bin/chromium");
    if fixed.is_file() {
        return Some(fixed.to_owned());
    }
    let path = std::env::var_os("PATH")?;
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// Run Chromium headless with `args` in its own process group; the group is
/// killed after [`CHROMIUM_TIMEOUT`].
async fn chromium(bin: &Path, profile: &Path, args: &[String]) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args([
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0)
    .kill_on_drop(true);
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let pid = child.id().expect("a running child has a pid");
    match tokio::time::timeout(CHROMIUM_TIMEOUT, child.wait_with_output()).await {
        Ok(out) => out.expect("chromium output"),
        Err(_) => {
            // the browser and its helpers share the group we gave them
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
            panic!("chromium {args:?} did not finish within {CHROMIUM_TIMEOUT:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_the_catalog_to_admins_and_renders_in_chromium() {
    let c = Cluster::start(3).await;
    let seeded = seed(&c).await;
    let state = AdminState::new(c.catalog_pool.clone());
    let api = app(state.clone());
    let key = c.admin_key.clone();

    // (a) Bearer and Basic
    let bearer = format!("Bearer {key}");
    let page = get(&api, "/", Some(&bearer)).await;
    assert_eq!(page.status, StatusCode::OK, "{page:?}");
    assert_eq!(
        page.header(header::CONTENT_TYPE),
        "text/html; charset=utf-8"
    );
    assert_eq!(page.header(header::CACHE_CONTROL), "no-store");
    assert!(page.body.starts_with("<!DOCTYPE html>"));
    assert_content(&page.body, &seeded);
    assert!(!page.body.contains("http-equiv"));
    let page = get(&api, "/", Some(&basic("admin", &key))).await;
    assert_eq!(page.status, StatusCode::OK, "{page:?}");
    assert_content(&page.body, &seeded);
    let page = get(&api, "/", Some(&basic("", &key))).await;
    assert_eq!(page.status, StatusCode::OK, "any user name");

    // 401: none (with a Basic challenge), a bad key either way; Basic is for `/` only
    let page = get(&api, "/", None).await;
    page.assert_problem(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(
        page.header(header::WWW_AUTHENTICATE),
        "Basic realm=\"shardline\", charset=\"UTF-8\""
    );
    get(&api, "/", Some(&basic("admin", "sl_nope")))
        .await
        .assert_problem(StatusCode::UNAUTHORIZED, "unauthorized");
    get(&api, "/", Some("Bearer sl_nope"))
        .await
        .assert_problem(StatusCode::UNAUTHORIZED, "unauthorized");
    get(&api, "/", Some("Digest x"))
        .await
        .assert_problem(StatusCode::UNAUTHORIZED, "unauthorized");
    get(&api, "/v1/ranges", Some(&basic("admin", &key)))
        .await
        .assert_problem(StatusCode::UNAUTHORIZED, "unauthorized");
    // 403: a payments key either way
    let pay = api_keys::create(
        &c.catalog_pool,
        "payments",
        &Scope::Payments { merchant_id: None },
    )
    .await
    .unwrap();
    get(&api, "/", Some(&format!("Bearer {}", pay.token)))
        .await
        .assert_problem(StatusCode::FORBIDDEN, "admin_required");
    get(&api, "/", Some(&basic("admin", &pay.token)))
        .await
        .assert_problem(StatusCode::FORBIDDEN, "admin_required");

    // ?refresh
    let page = get(&api, "/?refresh=15", Some(&bearer)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body
            .contains(r#"<meta http-equiv="refresh" content="15">"#)
    );
    for bad in ["1", "301", "x", ""] {
        get(&api, &format!("/?refresh={bad}"), Some(&bearer))
            .await
            .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_refresh");
    }

    // (b) headless Chromium against a listening server
    let Some(bin) = find_chromium() else {
        if std::env::var("SHARDLINE_SKIP_BROWSER").as_deref() == Ok("1") {
            eprintln!("SKIP dashboard browser check: no Chromium found (SHARDLINE_SKIP_BROWSER=1)");
            return;
        }
        panic!(
            "no Chromium found for the dashboard browser test: install the Debian package \
             `chromium` (apt-get install chromium, or ./dev setup), point SHARDLINE_CHROMIUM \
             at a browser, or set SHARDLINE_SKIP_BROWSER=1 to skip"
        );
    };
    let server = AdminServer::bind("127.0.0.1:0".parse().unwrap(), state)
        .await
        .unwrap();
    let addr = server.local_addr();
    let stop = CancellationToken::new();
    let serving = tokio::spawn(server.serve(stop.clone()));
    let tmp = std::env::temp_dir().join(format!(
        "shardline-dashboard-{}-{}",
        std::process::id(),
        Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&tmp).unwrap();
    // Credentials in the URL: Chromium answers the Basic challenge with them on
    // a top-level navigation.
    let url = format!("http://admin:{key}@{addr}/");

    let out = chromium(
        &bin,
        &tmp.join("profile-dom"),
        &["--dump-dom".into(), url.clone()],
    )
    .await;
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "chromium --dump-dom failed: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_content(&dom, &seeded);
    assert!(dom.contains("Shardline rebalancer"));

    let png = tmp.join("dashboard.png");
    let out = chromium(
        &bin,
        &tmp.join("profile-shot"),
        &[
            format!("--screenshot={}", png.display()),
            "--window-size=1400,1800".into(),
            url,
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "chromium --screenshot failed: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&png).expect("the screenshot was written");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    assert!(
        bytes.len() > 10 * 1024,
        "a non-trivial screenshot: {} bytes",
        bytes.len()
    );
    if let Some(dest) = std::env::var_os("SHARDLINE_DASHBOARD_SCREENSHOT") {
        std::fs::copy(&png, &dest).expect("copy the screenshot");
        eprintln!(
            "dashboard screenshot copied to {}",
            Path::new(&dest).display()
        );
    }

    stop.cancel();
    serving.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&tmp);
}
