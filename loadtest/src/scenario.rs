//! Scenario files (TOML): arrival rate, duration, merchant population and skew,
//! operation mix, retries. Presets ship inside the binary (`scenarios/*.toml`).

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Shipped presets: name -> TOML.
pub const PRESETS: [(&str, &str); 8] = [
    ("steady", include_str!("../scenarios/steady.toml")),
    (
        "move-under-load",
        include_str!("../scenarios/move-under-load.toml"),
    ),
    ("failover", include_str!("../scenarios/failover.toml")),
    (
        "nats-restart",
        include_str!("../scenarios/nats-restart.toml"),
    ),
    ("hotspot", include_str!("../scenarios/hotspot.toml")),
    ("slow-shard", include_str!("../scenarios/slow-shard.toml")),
    (
        "edge-restart",
        include_str!("../scenarios/edge-restart.toml"),
    ),
    (
        "rebalancer-crash",
        include_str!("../scenarios/rebalancer-crash.toml"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("scenario {0:?} is neither a preset ({presets}) nor a readable file: {1}", presets = preset_names())]
    NotFound(String, String),
    #[error("scenario {file}: {detail}")]
    Parse { file: String, detail: String },
    #[error("scenario event {index} ({action} at {at_s} s): {field}: {detail}")]
    Event {
        /// 1-based, in file order.
        index: usize,
        action: String,
        at_s: u64,
        field: &'static str,
        detail: String,
    },
    #[error("scenario setting {setting}: {detail}")]
    Invalid {
        setting: &'static str,
        detail: String,
    },
}

fn preset_names() -> String {
    PRESETS.map(|(n, _)| n).join(", ")
}

/// Relative weights of the operations (need not sum to anything).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mix {
    pub onboard: u32,
    pub authorize: u32,
    pub capture: u32,
    pub refund: u32,
    pub void: u32,
    pub read_router: u32,
    pub read_edge: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub duration_s: u64,
    /// Operations per second, sent on schedule whatever the latency (open loop).
    pub rate: u32,
    /// Merchants created before the clock starts.
    pub merchants: u32,
    /// Zipf exponent of merchant popularity (0 = uniform).
    pub zipf_s: f64,
    pub currencies: Vec<String>,
    /// Share of writes sent a second time with the same Idempotency-Key.
    pub retry_fraction: f64,
    /// Requests in flight at most; later ones wait (their wait counts as latency).
    pub max_in_flight: u32,
    pub request_timeout_ms: u64,
    /// After the load: how long moves may take to settle and edges to catch up.
    pub settle_s: u64,
    pub mix: Mix,
    /// Operator actions at given seconds (moves through the rebalancer).
    #[serde(default)]
    pub events: Vec<crate::events::Event>,
    /// The rebalancer's autonomous policy during the run: `active`, `dry_run`
    /// or `paused` (set through the admin API at the start, the previous mode
    /// restored at the end). Unset: left as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// One merchant turns hot at a given second (the `hotspot` scenario).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hotspot: Option<crate::hotspot::Hotspot>,
}

impl Scenario {
    /// A preset name or a path to a TOML file.
    pub fn load(name_or_path: &str) -> Result<Self, ScenarioError> {
        let (file, text) = match PRESETS.iter().find(|(n, _)| *n == name_or_path) {
            Some((n, t)) => (format!("preset {n}"), (*t).to_owned()),
            None => {
                let text = std::fs::read_to_string(Path::new(name_or_path))
                    .map_err(|e| ScenarioError::NotFound(name_or_path.to_owned(), e.to_string()))?;
                (name_or_path.to_owned(), text)
            }
        };
        let s: Scenario = toml::from_str(&text).map_err(|e| ScenarioError::Parse {
            file,
            detail: e.to_string(),
        })?;
        s.validate()?;
        Ok(s)
    }

    pub fn validate(&self) -> Result<(), ScenarioError> {
        let bad = |setting: &'static str, detail: &str| {
            Err(ScenarioError::Invalid {
                setting,
                detail: detail.to_owned(),
            })
        };
        if !(1..=86_400).contains(&self.duration_s) {
            return bad("duration_s", "must be 1..=86400 seconds");
        }
        if !(1..=100_000).contains(&self.rate) {
            return bad("rate", "must be 1..=100000 operations per second");
        }
        if !(1..=1_000_000).contains(&self.merchants) {
            return bad("merchants", "must be 1..=1000000");
        }
        if !(0.0..=5.0).contains(&self.zipf_s) {
            return bad("zipf_s", "must be within 0..=5");
        }
        if self.currencies.is_empty() {
            return bad("currencies", "must name at least one currency");
        }
        for c in &self.currencies {
            if c.parse::<shardline_core::Currency>().is_err() {
                return Err(ScenarioError::Invalid {
                    setting: "currencies",
                    detail: format!("{c:?} is not a supported ISO 4217 currency"),
                });
            }
        }
        if !(0.0..=1.0).contains(&self.retry_fraction) {
            return bad("retry_fraction", "must be within 0..=1");
        }
        if !(1..=100_000).contains(&self.max_in_flight) {
            return bad("max_in_flight", "must be 1..=100000");
        }
        if !(1..=600_000).contains(&self.request_timeout_ms) {
            return bad("request_timeout_ms", "must be 1..=600000");
        }
        if self.settle_s > 3600 {
            return bad("settle_s", "must be at most 3600");
        }
        if let Some(e) = self.events.iter().find(|e| e.at_s >= self.duration_s) {
            return Err(ScenarioError::Invalid {
                setting: "events",
                detail: format!("an event at {} s lies beyond duration_s", e.at_s),
            });
        }
        for (i, e) in self.events.iter().enumerate() {
            e.validate()
                .map_err(|(field, detail)| ScenarioError::Event {
                    index: i + 1,
                    action: crate::events::action_name(e.action),
                    at_s: e.at_s,
                    field,
                    detail,
                })?;
        }
        if let Some(p) = &self.policy
            && !matches!(p.as_str(), "active" | "dry_run" | "paused")
        {
            return Err(ScenarioError::Invalid {
                setting: "policy",
                detail: format!("{p:?} is not one of active, dry_run, paused"),
            });
        }
        if let Some(h) = &self.hotspot {
            h.validate(self.merchants, self.duration_s)
                .map_err(|(setting, detail)| ScenarioError::Invalid { setting, detail })?;
        }
        let m = &self.mix;
        let writes = m.onboard + m.authorize + m.capture + m.refund + m.void;
        if writes + m.read_router + m.read_edge == 0 {
            return bad("mix", "all weights are zero");
        }
        if m.authorize == 0 && (m.capture + m.refund + m.void) > 0 {
            return bad(
                "mix.authorize",
                "captures, refunds and voids need authorizations",
            );
        }
        Ok(())
    }

    pub fn duration(&self) -> Duration {
        Duration::from_secs(self.duration_s)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_parses_and_validates() {
        for (name, _) in PRESETS {
            let s = Scenario::load(name).unwrap();
            assert_eq!(s.name, name);
        }
    }

    #[test]
    fn bad_settings_are_named() {
        let mut s = Scenario::load("steady").unwrap();
        s.rate = 0;
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("rate"), "{e}");
        let mut s = Scenario::load("steady").unwrap();
        s.currencies = vec!["XYZ".into()];
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("currencies") && e.contains("XYZ"), "{e}");
        let e = Scenario::load("no-such-scenario").unwrap_err().to_string();
        assert!(e.contains("steady"), "{e}");
        let dir = std::env::temp_dir().join(format!("lt-{}.toml", std::process::id()));
        std::fs::write(&dir, "name = \"x\"\nbogus = 1\n").unwrap();
        let e = Scenario::load(dir.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("bogus") || e.contains("unknown"), "{e}");
        std::fs::remove_file(dir).unwrap();
    }

    #[test]
    fn the_fault_presets_carry_their_events() {
        use crate::events::Action;
        let s = Scenario::load("slow-shard").unwrap();
        let e = &s.events[0];
        assert_eq!(e.action, Action::SlowShard);
        assert_eq!(
            (e.shard, e.delay_ms, e.duration_s),
            (Some(2), Some(20), Some(20))
        );
        let s = Scenario::load("edge-restart").unwrap();
        assert_eq!(s.events[0].action, Action::KillEdge);
        assert_eq!(s.events[0].down_s, Some(5));
        let s = Scenario::load("rebalancer-crash").unwrap();
        let kinds: Vec<Action> = s.events.iter().map(|e| e.action).collect();
        assert_eq!(kinds, [Action::MoveHottest, Action::KillRebalancer]);
        assert!(s.events[1].needs_admin() && s.events[1].is_fault());
        assert_eq!(
            s.events[1].when_move_state.as_deref(),
            Some(
                &[
                    "copying".to_owned(),
                    "catching_up".into(),
                    "verifying".into()
                ][..]
            )
        );
    }

    /// A scenario file whose only event is `event` (TOML inline table body).
    fn with_event(event: &str) -> Result<Scenario, ScenarioError> {
        let base = PRESETS.iter().find(|(n, _)| *n == "steady").unwrap().1;
        let text = format!("{base}\n[[events]]\n{event}\n");
        let path =
            std::env::temp_dir().join(format!("lt-ev-{}-{}.toml", std::process::id(), text.len()));
        std::fs::write(&path, text).unwrap();
        let r = Scenario::load(path.to_str().unwrap());
        std::fs::remove_file(path).unwrap();
        r
    }

    #[test]
    fn bad_events_name_the_field() {
        for (event, want) in [
            (
                "at_s = 5\naction = \"slow_shard\"\ndelay_ms = 0",
                "delay_ms",
            ),
            (
                "at_s = 5\naction = \"slow_shard\"\ndelay_ms = 99999",
                "delay_ms",
            ),
            (
                "at_s = 5\naction = \"slow_shard\"\nduration_s = 0",
                "duration_s",
            ),
            ("at_s = 5\naction = \"slow_shard\"\nshard = 0", "shard"),
            ("at_s = 5\naction = \"slow_shard\"\ndown_s = 3", "down_s"),
            ("at_s = 5\naction = \"kill_edge\"\nshard = 2", "shard"),
            ("at_s = 5\naction = \"kill_edge\"\nedge = 0", "edge"),
            ("at_s = 5\naction = \"kill_nats\"\ndelay_ms = 5", "delay_ms"),
            (
                "at_s = 5\naction = \"kill_rebalancer\"\nwhen_move_state = [\"copying\", \"done\"]",
                "when_move_state",
            ),
            (
                "at_s = 5\naction = \"kill_rebalancer\"\nwhen_move_state = []",
                "when_move_state",
            ),
            (
                "at_s = 5\naction = \"move_hottest\"\nwhen_move_state = [\"copying\"]",
                "when_move_state",
            ),
            (
                "at_s = 5\naction = \"slow_shard\"\ndelay_ms = \"x\"",
                "delay_ms",
            ),
            ("at_s = 5\naction = \"slow_shards\"", "slow_shards"),
            ("at_s = 5\naction = \"kill_edge\"\ndown = 3", "down"),
        ] {
            let e = with_event(event).unwrap_err().to_string();
            assert!(e.contains(want), "{event}: {e}");
        }
        let e = with_event("at_s = 5\naction = \"slow_shard\"\ndelay_ms = 0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("event 1 (slow_shard at 5 s)"), "{e}");
        assert!(with_event("at_s = 5\naction = \"kill_rebalancer\"").is_ok());
    }
}
