//! Scheduled scenario events, run beside the load at their second: operator moves
//! through the rebalancer's admin API, and faults (kill a shard, NATS, the edge
//! or the rebalancer; slow a shard) through the [`Injector`] of whoever started
//! the system. Each event's outcome (move id, result, phase timings) goes into
//! the report, on the run's time axis.

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
    /// Delay every chunk between shard `shard`'s clients and its PostgreSQL by
    /// `delay_ms` each way for `duration_s` (a TCP proxy, `--local`).
    SlowShard,
    /// Crash edge `edge` (1-based; its tasks aborted), start it again on the
    /// same store after `down_s` (`--local`).
    KillEdge,
    /// Crash the rebalancer (move engine and admin API; the engine's leader
    /// lock goes with its connections) once a move is in one of
    /// `when_move_state`, start a new instance after `down_s` (`--local`).
    KillRebalancer,
}

/// A fault the loadtest can inject into a system it controls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    KillShard {
        index: usize,
        down: Duration,
    },
    KillNats {
        down: Duration,
    },
    SlowShard {
        index: usize,
        delay: Duration,
        duration: Duration,
    },
    KillEdge {
        index: usize,
        down: Duration,
    },
    KillRebalancer {
        down: Duration,
    },
}

/// Injects faults; provided by whoever started the system (`--local`). `Ok`
/// carries the outcome for the report (`restarted`, `restored`).
pub type Injector = Arc<
    dyn Fn(Fault) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>> + Send + Sync,
>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// Seconds after the load starts.
    pub at_s: u64,
    pub action: Action,
    /// `kill_shard`, `slow_shard`: which shard, 1-based (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<usize>,
    /// `kill_edge`: which edge, 1-based (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge: Option<usize>,
    /// `kill_*`: seconds down before the restart (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down_s: Option<u64>,
    /// `slow_shard`: added latency per direction, ms (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// `slow_shard`: how long the shard stays slow, seconds (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<u64>,
    /// `kill_rebalancer`: wait (up to 60 s) until a move is in one of these
    /// states, then kill. Unset: kill at `at_s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when_move_state: Option<Vec<String>>,
}

/// How long `kill_rebalancer` waits for a move in a `when_move_state`.
const STATE_WAIT: Duration = Duration::from_secs(60);

impl Event {
    pub fn is_fault(&self) -> bool {
        self.fault().is_some()
    }

    /// Whether the event needs the rebalancer's admin API.
    pub fn needs_admin(&self) -> bool {
        !self.is_fault() || self.when_move_state.is_some()
    }

    /// The field that is wrong and why (the scenario names the event).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        use Action::*;
        let a = self.action;
        let only = |field: &'static str, set: bool, allowed: &[Action]| {
            if set && !allowed.contains(&a) {
                Err((field, format!("does not apply to {}", action_name(a))))
            } else {
                Ok(())
            }
        };
        only("shard", self.shard.is_some(), &[KillShard, SlowShard])?;
        only("edge", self.edge.is_some(), &[KillEdge])?;
        only(
            "down_s",
            self.down_s.is_some(),
            &[KillShard, KillNats, KillEdge, KillRebalancer],
        )?;
        only("delay_ms", self.delay_ms.is_some(), &[SlowShard])?;
        only("duration_s", self.duration_s.is_some(), &[SlowShard])?;
        only(
            "when_move_state",
            self.when_move_state.is_some(),
            &[KillRebalancer],
        )?;
        let range = |field: &'static str, v: Option<u64>, lo: u64, hi: u64| match v {
            Some(v) if !(lo..=hi).contains(&v) => {
                Err((field, format!("{v} is out of range ({lo}..={hi})")))
            }
            _ => Ok(()),
        };
        range("shard", self.shard.map(|v| v as u64), 1, 64)?;
        range("edge", self.edge.map(|v| v as u64), 1, 16)?;
        range("down_s", self.down_s, 0, 600)?;
        range("delay_ms", self.delay_ms, 1, 10_000)?;
        range("duration_s", self.duration_s, 1, 3600)?;
        if let Some(states) = &self.when_move_state {
            if states.is_empty() {
                return Err(("when_move_state", "names no state".into()));
            }
            for st in states {
                match st.parse::<shardline_rebalancer::MoveState>() {
                    Ok(s) if !s.is_terminal() => {}
                    _ => {
                        return Err((
                            "when_move_state",
                            format!(
                                "{st:?} is not the state of a move in flight (planned, copying, catching_up, verifying, cutover, switched, cleaning, aborting)"
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Seconds after `at_s` the event keeps a fault in place (for validation
    /// against the run's duration).
    pub fn span_s(&self) -> u64 {
        match self.action {
            Action::SlowShard => self.duration_s.unwrap_or(10),
            _ => 0,
        }
    }

    fn fault(&self) -> Option<Fault> {
        let down = Duration::from_secs(self.down_s.unwrap_or(3));
        let shard = self.shard.unwrap_or(1).saturating_sub(1);
        match self.action {
            Action::KillShard => Some(Fault::KillShard { index: shard, down }),
            Action::KillNats => Some(Fault::KillNats { down }),
            Action::SlowShard => Some(Fault::SlowShard {
                index: shard,
                delay: Duration::from_millis(self.delay_ms.unwrap_or(20)),
                duration: Duration::from_secs(self.duration_s.unwrap_or(10)),
            }),
            Action::KillEdge => Some(Fault::KillEdge {
                index: self.edge.unwrap_or(1).saturating_sub(1),
                down,
            }),
            Action::KillRebalancer => Some(Fault::KillRebalancer { down }),
            Action::MoveHottest | Action::IsolateHottest => None,
        }
    }
}

/// The action as scenario files spell it.
pub fn action_name(a: Action) -> String {
    serde_json::to_value(a)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{a:?}"))
}

/// What happened.
#[derive(Debug, Clone, Serialize)]
pub struct EventOutcome {
    pub at_s: u64,
    pub action: Action,
    /// Seconds after the load started when a fault was injected (later than
    /// `at_s` when it waited for a move state).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault_at_s: Option<f64>,
    /// Seconds after the load started when the event finished.
    pub finished_s: f64,
    pub move_id: Option<String>,
    /// `done`, `aborted`, `restarted`, `restored`, or an error.
    pub result: String,
    pub phase_ms: Value,
    /// Whether the event did what it should (a move `done` or skipped, a fault
    /// injected and undone). A run with a failed event does not pass.
    pub ok: bool,
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

/// The shard owning `key` in a `GET /v1/ranges` answer (a list, or an object
/// with a `ranges` list).
pub(crate) fn range_owner(ranges: &Value, key: i64) -> Option<&str> {
    ranges
        .as_array()
        .or_else(|| ranges["ranges"].as_array())?
        .iter()
        .find(|r| {
            r["start_key"].as_i64().is_some_and(|s| s <= key)
                && r["end_key"].as_i64().is_some_and(|e| e > key)
        })
        .and_then(|r| r["shard_id"].as_str())
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
        _ => None,
    };
    let ranges = ok("list ranges", admin.get("/v1/ranges").await?)?;
    let key = i64::from(shardline_core::shard_key(hottest));
    // No owner found (a map being rewritten): any shard is "another" shard.
    let owner = range_owner(&ranges, key).unwrap_or_default().to_owned();
    let Some(to) = coolest_shard(admin, &owner).await? else {
        return Ok((String::new(), "skipped: only one shard".into(), Value::Null));
    };
    let body = match range_id {
        Some(id) => json!({"range_id": id, "to": to, "reason": "loadtest"}),
        None => json!({"merchant_id": hottest.to_string(), "to": to, "reason": "loadtest"}),
    };
    let created = ok("create move", admin.post("/v1/moves", None, &body).await?)?;
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    // The admin API may be down for a while (a rebalancer crash): keep asking.
    let mut last_answer = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let got = match admin.get(&format!("/v1/moves/{id}")).await {
            Ok(r) => ok("get move", r),
            Err(e) => Err(e.into()),
        };
        match got {
            Ok(m) => {
                last_answer = Instant::now();
                let state = m["state"].as_str().unwrap_or_default();
                if state == "done" || state == "aborted" {
                    return Ok((id, state.to_owned(), m["phase_ms"].clone()));
                }
            }
            Err(e) if last_answer.elapsed() > ADMIN_GAP => return Err(e),
            Err(_) => {}
        }
    }
}

/// How long the admin API may fail to answer while a move is followed.
const ADMIN_GAP: Duration = Duration::from_secs(120);

/// Wait until an unfinished move is in one of `states`: (move id, state).
async fn wait_for_move_state(
    admin: &Client,
    states: &[String],
    wait: Duration,
) -> Result<(String, String), String> {
    let deadline = Instant::now() + wait;
    loop {
        if let Ok(r) = admin.get("/v1/moves?state=unfinished").await {
            let list = r
                .body
                .as_array()
                .or_else(|| r.body["moves"].as_array())
                .cloned()
                .unwrap_or_default();
            let hit = list.iter().find_map(|m| {
                let st = m["state"].as_str()?;
                states.iter().any(|s| s == st).then(|| {
                    (
                        m["id"].as_str().unwrap_or_default().to_owned(),
                        st.to_owned(),
                    )
                })
            });
            if let Some(hit) = hit {
                return Ok(hit);
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "no move reached {} within {} s",
                states.join("|"),
                wait.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Run `events` (sorted by time), each at its second and beside the others:
/// moves against the admin API (`admin`, one at a time), faults through
/// `inject`; `hottest` is the merchant with the largest share of the load.
/// Outcomes come back in the events' order.
pub async fn run(
    admin: Option<Client>,
    inject: Option<Injector>,
    events: Vec<Event>,
    hottest: MerchantId,
    start: Instant,
) -> Vec<EventOutcome> {
    let moves = Arc::new(tokio::sync::Mutex::new(()));
    let tasks: Vec<_> = events
        .into_iter()
        .map(|e| {
            let (admin, inject, moves) = (admin.clone(), inject.clone(), moves.clone());
            let (at_s, action) = (e.at_s, e.action);
            let task = tokio::spawn(async move {
                tokio::time::sleep_until((start + Duration::from_secs(e.at_s)).into()).await;
                run_event(&e, admin.as_ref(), inject.as_ref(), &moves, hottest, start).await
            });
            (at_s, action, task)
        })
        .collect();
    let mut out = Vec::new();
    for (at_s, action, task) in tasks {
        out.push(task.await.unwrap_or_else(|e| EventOutcome {
            at_s,
            action,
            fault_at_s: None,
            finished_s: start.elapsed().as_secs_f64(),
            move_id: None,
            result: format!("error: event task failed: {e}"),
            phase_ms: Value::Null,
            ok: false,
        }));
    }
    out
}

async fn run_event(
    e: &Event,
    admin: Option<&Client>,
    inject: Option<&Injector>,
    moves: &tokio::sync::Mutex<()>,
    hottest: MerchantId,
    start: Instant,
) -> EventOutcome {
    let mut fault_at_s = None;
    let mut move_id = None;
    let mut phase_ms = Value::Null;
    let result: Result<String, String> = match (e.fault(), inject) {
        (Some(_), None) => Err("no fault injector".to_owned()),
        (Some(f), Some(inject)) => {
            let waited = match (&e.when_move_state, admin) {
                (Some(states), Some(admin)) => wait_for_move_state(admin, states, STATE_WAIT)
                    .await
                    .map(|(id, st)| {
                        move_id = Some(id);
                        format!(" (in {st})")
                    }),
                (Some(_), None) => Err("no rebalancer URL to watch moves".to_owned()),
                (None, _) => Ok(String::new()),
            };
            match waited {
                Ok(when) => {
                    fault_at_s = Some(start.elapsed().as_secs_f64());
                    inject(f).await.map(|r| format!("{r}{when}"))
                }
                Err(err) => Err(err),
            }
        }
        (None, _) => match admin {
            None => Err("no rebalancer URL".to_owned()),
            Some(admin) => {
                let _one_at_a_time = moves.lock().await;
                match run_one(admin, e.action, &hottest).await {
                    Ok((id, state, phases)) => {
                        move_id = (!id.is_empty()).then_some(id);
                        phase_ms = phases;
                        if state == "done" || state.starts_with("skipped") {
                            Ok(state)
                        } else {
                            Err(format!("move ended {state}"))
                        }
                    }
                    Err(err) => Err(err.to_string()),
                }
            }
        },
    };
    let ok = result.is_ok();
    EventOutcome {
        at_s: e.at_s,
        action: e.action,
        fault_at_s,
        finished_s: start.elapsed().as_secs_f64(),
        move_id,
        result: match result {
            Ok(r) => r,
            Err(err) if err.starts_with("move ended ") => {
                err.trim_start_matches("move ended ").to_owned()
            }
            Err(err) => format!("error: {err}"),
        },
        phase_ms,
        ok,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_owner_reads_both_answer_shapes_and_half_open_bounds() {
        let list = json!([
            {"start_key": 0, "end_key": 100, "shard_id": "s1"},
            {"start_key": 100, "end_key": 4294967296_i64, "shard_id": "s2"},
        ]);
        assert_eq!(range_owner(&list, 0), Some("s1"));
        assert_eq!(range_owner(&list, 99), Some("s1"));
        assert_eq!(range_owner(&list, 100), Some("s2"));
        assert_eq!(range_owner(&list, 4294967296), None);
        let wrapped = json!({"ranges": list});
        assert_eq!(range_owner(&wrapped, 150), Some("s2"));
        assert_eq!(range_owner(&json!({"error": "x"}), 1), None);
    }
}
