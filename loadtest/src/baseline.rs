//! `--baseline report.json`: compare this run with an earlier report of the same
//! scenario and flag regressions per operation: p99 latency up by more than the
//! tolerance (and by at least 1 ms, so sub-millisecond noise is not flagged),
//! throughput down by more than the tolerance, or errors where there were none.
//! The baseline is read as plain JSON, so reports of older versions still load.

use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::run::RunReport;

#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("baseline {path}: {detail}")]
    Read { path: String, detail: String },
}

/// One compared figure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub op: String,
    pub metric: &'static str,
    pub baseline: f64,
    pub now: f64,
    pub regression: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub baseline: String,
    /// Relative tolerance, e.g. 0.2 = 20 %.
    pub tolerance: f64,
    pub changes: Vec<Change>,
}

impl Comparison {
    pub fn regressions(&self) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(|c| c.regression)
    }
}

pub fn load(path: &Path) -> Result<Value, BaselineError> {
    let err = |detail: String| BaselineError::Read {
        path: path.display().to_string(),
        detail,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
    if !v["ops"].is_array() {
        return Err(err("not a loadtest report (no \"ops\" array)".into()));
    }
    Ok(v)
}

/// Compare `now` with the baseline report `base`.
pub fn compare(name: &str, base: &Value, now: &RunReport, tolerance: f64) -> Comparison {
    let mut changes = Vec::new();
    for o in &now.ops {
        let Some(b) = base["ops"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|b| b["op"].as_str() == Some(o.op.name()))
        else {
            continue;
        };
        let f = |k: &str| b[k].as_f64().unwrap_or(0.0);
        let errors_now = (o.count - o.ok) as f64;
        let errors_base = f("count") - f("ok");
        let p99 = f("p99_ms");
        changes.push(Change {
            op: o.op.name().to_owned(),
            metric: "p99_ms",
            baseline: p99,
            now: o.p99_ms,
            regression: o.p99_ms > p99 * (1.0 + tolerance) && o.p99_ms - p99 >= 1.0,
        });
        let tput = f("throughput");
        changes.push(Change {
            op: o.op.name().to_owned(),
            metric: "throughput",
            baseline: tput,
            now: o.throughput,
            regression: o.throughput < tput * (1.0 - tolerance),
        });
        changes.push(Change {
            op: o.op.name().to_owned(),
            metric: "errors",
            baseline: errors_base,
            now: errors_now,
            regression: errors_now > 0.0 && errors_now > errors_base * (1.0 + tolerance),
        });
    }
    Comparison {
        baseline: name.to_owned(),
        tolerance,
        changes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::report;

    #[test]
    fn slower_p99_fewer_ops_and_new_errors_are_flagged() {
        let now = report(true);
        // The same run as its own baseline: nothing regresses.
        let same = serde_json::to_value(&now).unwrap();
        let c = compare("same", &same, &now, 0.2);
        assert_eq!(c.changes.len(), 3 * now.ops.len());
        assert_eq!(c.regressions().count(), 0, "{c:#?}");
        // A baseline twice as fast, with twice the throughput and no errors.
        let mut better = same.clone();
        for o in better["ops"].as_array_mut().unwrap() {
            let p99 = o["p99_ms"].as_f64().unwrap();
            o["p99_ms"] = (p99 / 4.0).into();
            let t = o["throughput"].as_f64().unwrap();
            o["throughput"] = (t * 2.0).into();
            o["ok"] = o["count"].clone();
        }
        let c = compare("better", &better, &now, 0.2);
        let flagged: Vec<(&str, &str)> =
            c.regressions().map(|r| (r.op.as_str(), r.metric)).collect();
        assert!(flagged.contains(&("authorize", "p99_ms")), "{flagged:?}");
        assert!(
            flagged.contains(&("authorize", "throughput")),
            "{flagged:?}"
        );
        assert!(flagged.contains(&("read_edge", "errors")), "{flagged:?}");
        assert!(!flagged.contains(&("authorize", "errors")), "{flagged:?}");
    }

    #[test]
    fn a_file_that_is_not_a_report_is_refused() {
        let p = std::env::temp_dir().join(format!("bl-{}.json", std::process::id()));
        std::fs::write(&p, "{\"x\": 1}").unwrap();
        let e = load(&p).unwrap_err().to_string();
        assert!(e.contains("not a loadtest report"), "{e}");
        std::fs::remove_file(p).unwrap();
    }
}
