//! Configuration plumbing: flags > environment (both via clap) > TOML file >
//! defaults, validated at start. A bad value is a [`ConfigError`] naming the setting;
//! the binary exits with status 2.

use std::path::Path;

use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
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

/// Read a TOML settings file; unknown keys are errors (a typo must not be ignored).
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
pub fn in_range(
    setting: &str,
    value: u32,
    range: std::ops::RangeInclusive<u32>,
) -> Result<u32, ConfigError> {
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

/// A postgres URL must at least parse as one.
pub fn postgres_url(setting: &str, url: &str) -> Result<String, ConfigError> {
    url.parse::<tokio_postgres::Config>()
        .map_err(|e| ConfigError::new(setting, format!("not a PostgreSQL URL ({e})")))?;
    Ok(url.to_owned())
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
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "shardz = 3\n").unwrap();
        let e = load_file::<Sample>(Some(&p)).unwrap_err();
        assert!(e.to_string().contains("shardz"), "{e}");
        std::fs::write(&p, "shards = \"three\"\n").unwrap();
        assert!(load_file::<Sample>(Some(&p)).is_err());
        let e = load_file::<Sample>(Some(&dir.path().join("missing.toml"))).unwrap_err();
        assert!(e.to_string().contains("cannot read"), "{e}");
    }

    #[test]
    fn postgres_urls_are_checked() {
        assert!(postgres_url("catalog", "postgres://u@127.0.0.1:5432/db").is_ok());
        let e = postgres_url("catalog", "mysql:/nope").unwrap_err();
        assert!(e.to_string().contains("`catalog`"), "{e}");
    }
}
