//! Scheduled scenario events, run beside the load at their second: operator moves
//! through the rebalancer's admin API. Each event's outcome (move id, final
//! state, phase timings) goes into the report, on the run's time axis.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use shardline_core::MerchantId;

use crate::http::Client;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Move the range holding the most popular merchant to the shard with the
    /// fewest ranges (other than its owner).
    MoveHottest,
    /// Split the map down to the most popular merchant's key, then move that
    /// one-merchant range likewise.
    IsolateHottest,
    /// SIGKILL shard `shard`'s PostgreSQL (1-based), restart it after `down_s`
    /// (crash recovery). Needs a system the loadtest controls (`--local`).
    KillShard,
    /// SIGKILL NATS, restart it on its store after `down_s` (`--local`).
    KillNats,
}

/// A fault the loadtest can inject into a system it controls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    KillShard { index: usize, down: Duration },
    KillNats { down: Duration },
}

/// Injects faults; provided by whoever started the system (`--local`).
pub type Injector =
    Arc<dyn Fn(Fault) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// Seconds after the load starts.
    pub at_s: u64,
    pub action: Action,
    /// `kill_shard`: which shard, 1-based (default 1).
    #[serde(default)]
    pub shard: Option<usize>,
    /// `kill_*`: seconds down before the restart (default 3).
    #[serde(default)]
    pub down_s: Option<u64>,
}

impl Event {
    pub fn is_fault(&self) -> bool {
        matches!(self.action, Action::KillShard | Action::KillNats)
    }

    fn fault(&self) -> Option<Fault> {
        let down = Duration::from_secs(self.down_s.unwrap_or(3));
        match self.action {
            Action::KillShard => Some(Fault::KillShard {
                index: self.shard.unwrap_or(1).saturating_sub(1),
                down,
            }),
            Action::KillNats => Some(Fault::KillNats { down }),
            _ => None,
        }
    }
}

/// What happened.
#[derive(Debug, Clone, Serialize)]
pub struct EventOutcome {
    pub at_s: u64,
    pub action: Action,
    /// Seconds after the load started when the event finished.
    pub finished_s: f64,
    pub move_id: Option<String>,
    /// `done`, `aborted`, or an error.
    pub result: String,
    pub phase_ms: Value,
}

#[derive(Debug, thiserror::Error)]
enum EventError {
    #[error("{0}")]
    Http(#[from] crate::http::HttpError),
    #[error("{what}: http {status}: {body}")]
    Refused {
        what: &'static str,
        status: u16,
        body: Value,
    },
}

fn ok(what: &'static str, r: crate::http::Reply) -> Result<Value, EventError> {
    if r.status.is_success() {
        Ok(r.body)
    } else {
        Err(EventError::Refused {
            what,
            status: r.status.as_u16(),
            body: r.body,
        })
    }
}

/// The shard with the fewest ranges, other than `not`.
async fn coolest_shard(admin: &Client, not: &str) -> Result<Option<String>, EventError> {
    let shards = ok("list shards", admin.get("/v1/shards").await?)?;
    let ranges = ok("list ranges", admin.get("/v1/ranges").await?)?;
    let list = |v: &Value, key: &str| -> Vec<Value> {
        v.as_array()
            .or_else(|| v[key].as_array())
            .cloned()
            .unwrap_or_default()
    };
    let count = |id: &str| {
        list(&ranges, "ranges")
            .iter()
            .filter(|r| r["shard_id"].as_str() == Some(id))
            .count()
    };
    Ok(list(&shards, "shards")
        .iter()
        .filter_map(|s| s["id"].as_str().map(str::to_owned))
        .filter(|id| id != not)
        .min_by_key(|id| (count(id), id.clone())))
}

async fn run_one(
    admin: &Client,
    action: Action,
    hottest: &MerchantId,
) -> Result<(String, String, Value), EventError> {
    let range_id = match action {
        Action::MoveHottest | Action::KillShard | Action::KillNats => None,
        Action::IsolateHottest => {
            let r = ok(
                "isolate",
                admin
                    .post(
                        "/v1/ranges/isolate",
                        None,
                        &json!({"merchant_id": hottest.to_string()}),
                    )
                    .await?,
            )?;
            r["range"]["id"].as_i64()
        }
    };
    let owner_of = ok("list ranges", admin.get("/v1/ranges").await?)?;
    let key = i64::from(shardline_core::shard_key(hottest));
    let ranges = owner_of
        .as_array()
        .or_else(|| owner_of["ranges"].as_array())
        .cloned()
        .unwrap_or_default();
    let owner = ranges
        .iter()
        .find(|r| {
            r["start_key"].as_i64().is_some_and(|s| s <= key)
                && r["end_key"].as_i64().is_some_and(|e| e > key)
        })
        .and_then(|r| r["shard_id"].as_str())
        .unwrap_or_default()
        .to_owned();
    let Some(to) = coolest_shard(admin, &owner).await? else {
        return Ok((String::new(), "skipped: only one shard".into(), Value::Null));
    };
    let body = match range_id {
        Some(id) => json!({"range_id": id, "to": to, "reason": "loadtest"}),
        None => json!({"merchant_id": hottest.to_string(), "to": to, "reason": "loadtest"}),
    };
    let created = ok("create move", admin.post("/v1/moves", None, &body).await?)?;
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let m = ok("get move", admin.get(&format!("/v1/moves/{id}")).await?)?;
        let state = m["state"].as_str().unwrap_or_default();
        if state == "done" || state == "aborted" {
            return Ok((id, state.to_owned(), m["phase_ms"].clone()));
        }
    }
}

/// Run `events` (sorted by time): moves against the admin API (`admin`), faults
/// through `inject`; `hottest` is the merchant with the largest share of the load.
pub async fn run(
    admin: Option<Client>,
    inject: Option<Injector>,
    events: Vec<Event>,
    hottest: MerchantId,
    start: Instant,
) -> Vec<EventOutcome> {
    let mut out = Vec::new();
    for e in events {
        tokio::time::sleep_until((start + Duration::from_secs(e.at_s)).into()).await;
        let (move_id, result, phase_ms) = match (e.fault(), &admin, &inject) {
            (Some(f), _, Some(inject)) => match inject(f).await {
                Ok(()) => (None, "restarted".to_owned(), Value::Null),
                Err(err) => (None, format!("error: {err}"), Value::Null),
            },
            (Some(_), _, None) => (None, "error: no fault injector".to_owned(), Value::Null),
            (None, Some(admin), _) => match run_one(admin, e.action, &hottest).await {
                Ok((id, state, phases)) => ((!id.is_empty()).then_some(id), state, phases),
                Err(err) => (None, format!("error: {err}"), Value::Null),
            },
            (None, None, _) => (None, "error: no rebalancer URL".to_owned(), Value::Null),
        };
        out.push(EventOutcome {
            at_s: e.at_s,
            action: e.action,
            finished_s: start.elapsed().as_secs_f64(),
            move_id,
            result,
            phase_ms,
        });
    }
    out
}

/// After the load: wait until no move is unfinished, at most `wait`. Returns
/// whether everything settled.
pub async fn settle(admin: &Client, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        if let Ok(r) = admin.get("/v1/moves?state=unfinished").await {
            let n = r
                .body
                .as_array()
                .or_else(|| r.body["moves"].as_array())
                .map_or(1, Vec::len);
            if r.status.is_success() && n == 0 {
                return true;
            }
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
