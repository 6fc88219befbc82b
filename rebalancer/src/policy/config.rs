//! The policy's knobs, their defaults and their validation.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A knob with a value the policy cannot work with. Names the knob.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("policy knob `{knob}` = {value}: {rule}")]
pub struct ConfigError {
    /// The field name of [`PolicyConfig`].
    pub knob: &'static str,
    /// The rejected value, as text.
    pub value: String,
    /// What it must satisfy.
    pub rule: &'static str,
}

/// Every knob of the policy. `Default` gives the documented defaults (see
/// docs/rebalancer.md for why each value).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Length of one load interval (bucket). Router samples are summed per
    /// interval; rates are per second over it. Default 10 s (two router
    /// flushes, which routers align to wall-clock multiples of their period).
    #[serde(with = "secs")]
    pub interval: Duration,
    /// How many complete intervals of history the load model reads; a shard
    /// must also be hot on average over this window to count as sustained
    /// (filters oscillating load). Default 60 (ten minutes).
    pub history_intervals: u32,
    /// EWMA weight of the newest interval (0 < alpha <= 1). Default 0.3.
    pub ewma_alpha: f64,
    /// A shard must be over the threshold in this many consecutive complete
    /// intervals before the policy moves anything off it. Default 3.
    pub sustained_intervals: u32,
    /// A shard is hot when its load exceeds `mean * (1 + tolerance)`. Default 0.10.
    pub tolerance: f64,
    /// Absolute floor: below this load (units/s) on the hottest shard nothing is
    /// moved for balance, whatever the ratio. Default 50.
    pub min_shard_load: f64,
    /// A move must lower the predicted cluster maximum by at least this fraction
    /// of the current maximum. Default 0.05.
    pub min_improvement: f64,
    /// A merchant carrying at least this share of its range's load is isolated
    /// (split to its key) rather than moving the whole range. Default 0.5.
    pub dominant_share: f64,
    /// No range whose keys took part in a move started within this time is
    /// moved again. Default 15 min.
    #[serde(with = "secs")]
    pub range_cooldown: Duration,
    /// Keys that moved from shard A to B within this time never go back to A
    /// (anti-oscillation). Default 2 h.
    #[serde(with = "secs")]
    pub oscillation_window: Duration,
    /// At most this many moves in flight at once (counting those already
    /// running). Default 2.
    pub max_concurrent_moves: u32,
    /// At most this many bytes of range data started moving in any trailing
    /// hour (running and finished moves count). Default 4 GiB.
    pub byte_budget_per_hour: u64,
    /// Size assumed for keys no size estimate covers. Default 1 GiB
    /// (conservative: unknown data spends budget).
    pub unknown_size_bytes: u64,
    /// Two neighbouring ranges of one shard are merged when their combined
    /// smoothed load is below this (units/s). Default 5.
    pub merge_cold_load: f64,
    /// Never merge a shard below this many ranges (keeps granularity for
    /// future moves). Default 4.
    pub min_ranges_per_shard: u32,
    /// At most this many merges per decision round. Default 4.
    pub max_merges_per_round: u32,
    /// Load units of one request. Default 1.
    pub request_weight: f64,
    /// Extra load units of a write (on top of its request). Default 1.
    pub write_weight: f64,
    /// Load units per row touched. Default 0.05.
    pub row_weight: f64,
    /// Load units per KiB transferred. Default 0.01.
    pub kib_weight: f64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            interval: Duration::from_secs(10),
            history_intervals: 60,
            ewma_alpha: 0.3,
            sustained_intervals: 3,
            tolerance: 0.10,
            min_shard_load: 50.0,
            min_improvement: 0.05,
            dominant_share: 0.5,
            range_cooldown: Duration::from_secs(15 * 60),
            oscillation_window: Duration::from_secs(2 * 3600),
            max_concurrent_moves: 2,
            byte_budget_per_hour: 4 << 30,
            unknown_size_bytes: 1 << 30,
            merge_cold_load: 5.0,
            min_ranges_per_shard: 4,
            max_merges_per_round: 4,
            request_weight: 1.0,
            write_weight: 1.0,
            row_weight: 0.05,
            kib_weight: 0.01,
        }
    }
}

fn bad(knob: &'static str, value: impl ToString, rule: &'static str) -> ConfigError {
    ConfigError {
        knob,
        value: value.to_string(),
        rule,
    }
}

fn finite_nonneg(knob: &'static str, v: f64) -> Result<(), ConfigError> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(bad(knob, v, "must be a finite number >= 0"))
    }
}

fn fraction(knob: &'static str, v: f64, zero_ok: bool) -> Result<(), ConfigError> {
    let ok = v.is_finite() && v <= 1.0 && if zero_ok { v >= 0.0 } else { v > 0.0 };
    if ok {
        Ok(())
    } else if zero_ok {
        Err(bad(knob, v, "must be in [0, 1]"))
    } else {
        Err(bad(knob, v, "must be in (0, 1]"))
    }
}

impl PolicyConfig {
    /// Checks every knob; the error names the first bad one.
    ///
    /// # Errors
    /// [`ConfigError`] naming the knob and the rule it breaks.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.interval.as_millis() < 1000 {
            return Err(bad(
                "interval",
                format!("{:?}", self.interval),
                "must be at least 1 s",
            ));
        }
        if self.sustained_intervals == 0 {
            return Err(bad("sustained_intervals", 0, "must be at least 1"));
        }
        if self.history_intervals < self.sustained_intervals || self.history_intervals > 1440 {
            return Err(bad(
                "history_intervals",
                self.history_intervals,
                "must be >= sustained_intervals and <= 1440 (a day of minutes)",
            ));
        }
        fraction("ewma_alpha", self.ewma_alpha, false)?;
        finite_nonneg("tolerance", self.tolerance)?;
        if self.tolerance > 10.0 {
            return Err(bad("tolerance", self.tolerance, "must be <= 10"));
        }
        finite_nonneg("min_shard_load", self.min_shard_load)?;
        if !(self.min_improvement.is_finite()
            && self.min_improvement >= 0.0
            && self.min_improvement < 1.0)
        {
            return Err(bad(
                "min_improvement",
                self.min_improvement,
                "must be in [0, 1)",
            ));
        }
        if !(self.dominant_share.is_finite()
            && self.dominant_share > 0.0
            && self.dominant_share <= 1.0)
        {
            return Err(bad(
                "dominant_share",
                self.dominant_share,
                "must be in (0, 1]",
            ));
        }
        if self.oscillation_window < self.range_cooldown {
            return Err(bad(
                "oscillation_window",
                format!("{:?}", self.oscillation_window),
                "must be >= range_cooldown",
            ));
        }
        if self.max_concurrent_moves == 0 {
            return Err(bad(
                "max_concurrent_moves",
                0,
                "must be at least 1 (pause the loop to stop moves)",
            ));
        }
        if self.byte_budget_per_hour == 0 {
            return Err(bad("byte_budget_per_hour", 0, "must be > 0"));
        }
        if self.unknown_size_bytes == 0 {
            return Err(bad("unknown_size_bytes", 0, "must be > 0"));
        }
        finite_nonneg("merge_cold_load", self.merge_cold_load)?;
        if self.min_ranges_per_shard == 0 {
            return Err(bad("min_ranges_per_shard", 0, "must be at least 1"));
        }
        finite_nonneg("request_weight", self.request_weight)?;
        finite_nonneg("write_weight", self.write_weight)?;
        finite_nonneg("row_weight", self.row_weight)?;
        finite_nonneg("kib_weight", self.kib_weight)?;
        if self.request_weight + self.write_weight + self.row_weight + self.kib_weight <= 0.0 {
            return Err(bad(
                "request_weight",
                self.request_weight,
                "at least one load weight must be > 0",
            ));
        }
        Ok(())
    }

    /// Interval length in milliseconds (validated >= 1000).
    pub(crate) fn interval_ms(&self) -> i64 {
        i64::try_from(self.interval.as_millis())
            .unwrap_or(i64::MAX)
            .max(1)
    }
}

/// `Duration` as whole seconds in TOML/JSON.
mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        PolicyConfig::default().validate().unwrap();
    }

    type Edit = Box<dyn Fn(&mut PolicyConfig)>;

    #[test]
    fn errors_name_the_knob() {
        let cases: Vec<(&str, Edit)> = vec![
            (
                "interval",
                Box::new(|c| c.interval = Duration::from_millis(10)),
            ),
            (
                "sustained_intervals",
                Box::new(|c| c.sustained_intervals = 0),
            ),
            ("history_intervals", Box::new(|c| c.history_intervals = 1)),
            ("ewma_alpha", Box::new(|c| c.ewma_alpha = 0.0)),
            ("ewma_alpha", Box::new(|c| c.ewma_alpha = f64::NAN)),
            ("tolerance", Box::new(|c| c.tolerance = -0.1)),
            (
                "min_shard_load",
                Box::new(|c| c.min_shard_load = f64::INFINITY),
            ),
            ("min_improvement", Box::new(|c| c.min_improvement = 1.0)),
            ("dominant_share", Box::new(|c| c.dominant_share = 1.5)),
            (
                "oscillation_window",
                Box::new(|c| c.oscillation_window = Duration::from_secs(1)),
            ),
            (
                "max_concurrent_moves",
                Box::new(|c| c.max_concurrent_moves = 0),
            ),
            (
                "byte_budget_per_hour",
                Box::new(|c| c.byte_budget_per_hour = 0),
            ),
            ("unknown_size_bytes", Box::new(|c| c.unknown_size_bytes = 0)),
            ("merge_cold_load", Box::new(|c| c.merge_cold_load = -1.0)),
            (
                "min_ranges_per_shard",
                Box::new(|c| c.min_ranges_per_shard = 0),
            ),
            ("row_weight", Box::new(|c| c.row_weight = -2.0)),
            (
                "request_weight",
                Box::new(|c| {
                    c.request_weight = 0.0;
                    c.write_weight = 0.0;
                    c.row_weight = 0.0;
                    c.kib_weight = 0.0;
                }),
            ),
        ];
        for (knob, set) in cases {
            let mut c = PolicyConfig::default();
            set(&mut c);
            let e = c.validate().unwrap_err();
            assert_eq!(e.knob, knob, "{e}");
            assert!(e.to_string().contains(knob));
        }
    }

    #[test]
    fn json_round_trip_uses_seconds() {
        let c = PolicyConfig::default();
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["interval"], 10);
        assert_eq!(v["range_cooldown"], 900);
        let back: PolicyConfig = serde_json::from_value(v).unwrap();
        assert_eq!(back, c);
        let partial: PolicyConfig = serde_json::from_str(r#"{"max_concurrent_moves": 5}"#).unwrap();
        assert_eq!(partial.max_concurrent_moves, 5);
        assert!(serde_json::from_str::<PolicyConfig>(r#"{"bogus": 1}"#).is_err());
    }
}
