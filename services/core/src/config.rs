//! Configuration plumbing shared by every service: flags > environment (both via
//! clap in the binary) > TOML file > defaults, validated at start. A bad value is a
//! [`ConfigError`] naming the setting; binaries exit with status 2 on it.

use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;

/// A setting with an invalid value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting `{setting}`: {message}")]
pub struct ConfigError {
    pub setting: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(setting: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            setting: setting.into(),
            message: message.into(),
        }
    }
}

/// Read a TOML settings file; unknown keys are errors (a typo must not be ignored:
/// give the file type `#[serde(deny_unknown_fields)]`). `None` gives the defaults.
pub fn load_file<T: DeserializeOwned + Default>(path: Option<&Path>) -> Result<T, ConfigError> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new("config", format!("cannot read {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| {
        ConfigError::new(
            "config",
            format!("{}: {}", path.display(), e.to_string().trim()),
        )
    })
}

/// Check `value` lies in `range`, naming `setting` otherwise.
pub fn in_range<T>(
    setting: &str,
    value: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ConfigError>
where
    T: PartialOrd + std::fmt::Display + Copy,
{
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::new(
            setting,
            format!(
                "{value} is out of range (allowed {}..={})",
                range.start(),
                range.end()
            ),
        ))
    }
}

/// A PostgreSQL URL must at least parse as one.
pub fn postgres_url(setting: &str, url: &str) -> Result<String, ConfigError> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(ConfigError::new(
            setting,
            "not a PostgreSQL URL (expected postgres://user@host:port/db)",
        ));
    }
    url.parse::<sqlx::postgres::PgConnectOptions>()
        .map_err(|e| ConfigError::new(setting, format!("not a PostgreSQL URL ({e})")))?;
    Ok(url.to_owned())
}

/// `"250ms"`, `"2s"`, `"5m"`, `"24h"`, `"7d"` (a whole number and a unit).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 500ms, 2s, 5m, 24h or 7d"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        "d" => Duration::from_secs(n.saturating_mul(86_400)),
        _ => return Err(format!("{s:?} has no unit: use ms, s, m, h or d")),
    };
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        #[allow(dead_code)]
        shards: Option<u32>,
    }

    #[test]
    fn range_errors_name_the_setting() {
        let e = in_range("shards", 0, 1..=16).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid setting `shards`: 0 is out of range (allowed 1..=16)"
        );
        assert_eq!(in_range("shards", 3, 1..=16).unwrap(), 3);
    }

    #[test]
    fn files_reject_unknown_keys_and_bad_types() {
        let dir = std::env::temp_dir().join(format!("sl-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("c.toml");
        std::fs::write(&p, "shardz = 3\n").unwrap();
        let e = load_file::<Sample>(Some(&p)).unwrap_err();
        assert!(e.to_string().contains("shardz"), "{e}");
        std::fs::write(&p, "shards = \"three\"\n").unwrap();
        assert!(load_file::<Sample>(Some(&p)).is_err());
        let e = load_file::<Sample>(Some(&dir.join("missing.toml"))).unwrap_err();
        assert!(e.to_string().contains("cannot read"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn postgres_urls_are_checked() {
        assert!(postgres_url("catalog", "postgres://u@127.0.0.1:5432/db").is_ok());
        let e = postgres_url("catalog", "mysql:/nope").unwrap_err();
        assert!(e.to_string().contains("`catalog`"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert!(parse_duration("2").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("1.5s").is_err());
    }
}
