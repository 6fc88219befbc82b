//! Router configuration: flags > environment (both via clap, [`RouterArgs`]) > TOML
//! file > defaults, validated into a [`Config`]. Errors name the setting.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

pub use shardline_core::config::{ConfigError, parse_duration};

/// Validated router settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP listen address (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Catalog PostgreSQL URL (range map, shard DSNs, API keys, load samples).
    pub catalog_url: String,
    /// Name of this router in `load_samples.router_id`.
    pub router_id: String,
    /// How long a request for a moving range may be held before 503 `range_moving`.
    pub hold_timeout: Duration,
    /// How long idempotency keys are kept.
    pub idempotency_ttl: Duration,
    /// How often expired idempotency keys are deleted.
    pub idempotency_cleanup_interval: Duration,
    /// How often load samples are written to the catalog.
    pub load_flush_interval: Duration,
    /// Periodic range map refresh (besides LISTEN and fencing errors).
    pub map_refresh_interval: Duration,
    /// Whether to LISTEN for `shardline_map` notifications (off only in tests).
    pub map_listen: bool,
    /// Whole-request timeout (503 `request_timeout`).
    pub request_timeout: Duration,
    /// Connections per shard pool.
    pub shard_pool_size: usize,
    /// Connections of the catalog pool.
    pub catalog_pool_size: u32,
    /// How long a verified API key is trusted before the catalog is asked again.
    pub auth_cache_ttl: Duration,
    /// Fencing retries (SLF01 after a map refresh) before giving up.
    pub max_fence_retries: u32,
}

impl Config {
    /// Defaults for everything but the catalog URL.
    pub fn new(catalog_url: impl Into<String>) -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            catalog_url: catalog_url.into(),
            router_id: default_router_id(),
            hold_timeout: Duration::from_secs(2),
            idempotency_ttl: Duration::from_secs(24 * 3600),
            idempotency_cleanup_interval: Duration::from_secs(60),
            load_flush_interval: Duration::from_secs(5),
            map_refresh_interval: Duration::from_secs(5),
            map_listen: true,
            request_timeout: Duration::from_secs(10),
            shard_pool_size: 16,
            catalog_pool_size: 4,
            auth_cache_ttl: Duration::from_secs(30),
            max_fence_retries: 3,
        }
    }

    /// Checks every setting; the error names the first bad one.
    pub fn validate(self) -> Result<Self, ConfigError> {
        shardline_core::config::postgres_url("catalog_url", &self.catalog_url)?;
        if self.router_id.is_empty() || self.router_id.len() > 64 {
            return Err(ConfigError::new("router_id", "must be 1..=64 characters"));
        }
        let within = |name: &str, d: Duration, lo: Duration, hi: Duration| {
            if d < lo || d > hi {
                Err(ConfigError::new(
                    name,
                    format!("{d:?} is out of range (allowed {lo:?}..={hi:?})"),
                ))
            } else {
                Ok(())
            }
        };
        let ms = Duration::from_millis;
        let s = Duration::from_secs;
        within("hold_timeout", self.hold_timeout, ms(0), s(60))?;
        within("idempotency_ttl", self.idempotency_ttl, s(1), s(30 * 86400))?;
        within(
            "idempotency_cleanup_interval",
            self.idempotency_cleanup_interval,
            ms(100),
            s(86400),
        )?;
        within(
            "load_flush_interval",
            self.load_flush_interval,
            ms(100),
            s(3600),
        )?;
        within(
            "map_refresh_interval",
            self.map_refresh_interval,
            ms(100),
            s(3600),
        )?;
        within("request_timeout", self.request_timeout, ms(100), s(600))?;
        within("auth_cache_ttl", self.auth_cache_ttl, ms(0), s(3600))?;
        if !(1..=1024).contains(&self.shard_pool_size) {
            return Err(ConfigError::new("shard_pool_size", "allowed 1..=1024"));
        }
        if !(1..=64).contains(&self.catalog_pool_size) {
            return Err(ConfigError::new("catalog_pool_size", "allowed 1..=64"));
        }
        if self.max_fence_retries > 10 {
            return Err(ConfigError::new("max_fence_retries", "allowed 0..=10"));
        }
        Ok(self)
    }

    /// Settings from flags/env (clap) over an optional TOML file over defaults.
    pub fn from_args(args: RouterArgs) -> Result<Self, ConfigError> {
        let file: RouterFile = shardline_core::config::load_file(args.config.as_deref())?;
        let catalog_url = args.catalog_url.or(file.catalog_url).ok_or_else(|| {
            ConfigError::new(
                "catalog_url",
                "required (--catalog-url, SHARDLINE_CATALOG_URL or catalog_url in the file)",
            )
        })?;
        let mut c = Config::new(catalog_url);
        if let Some(l) = args.listen.or(file.listen) {
            c.listen = l
                .parse()
                .map_err(|e| ConfigError::new("listen", format!("{l:?}: {e}")))?;
        }
        if let Some(id) = args.router_id.or(file.router_id) {
            c.router_id = id;
        }
        let dur = |name: &str, flag: Option<String>, file: Option<String>, dflt: Duration| {
            flag.or(file).map_or(Ok(dflt), |v| {
                parse_duration(&v).map_err(|m| ConfigError::new(name, m))
            })
        };
        c.hold_timeout = dur(
            "hold_timeout",
            args.hold_timeout,
            file.hold_timeout,
            c.hold_timeout,
        )?;
        c.idempotency_ttl = dur(
            "idempotency_ttl",
            args.idempotency_ttl,
            file.idempotency_ttl,
            c.idempotency_ttl,
        )?;
        c.load_flush_interval = dur(
            "load_flush_interval",
            args.load_flush_interval,
            file.load_flush_interval,
            c.load_flush_interval,
        )?;
        c.map_refresh_interval = dur(
            "map_refresh_interval",
            args.map_refresh_interval,
            file.map_refresh_interval,
            c.map_refresh_interval,
        )?;
        c.request_timeout = dur(
            "request_timeout",
            args.request_timeout,
            file.request_timeout,
            c.request_timeout,
        )?;
        c.auth_cache_ttl = dur(
            "auth_cache_ttl",
            args.auth_cache_ttl,
            file.auth_cache_ttl,
            c.auth_cache_ttl,
        )?;
        if let Some(n) = args.shard_pool_size.or(file.shard_pool_size) {
            c.shard_pool_size = n;
        }
        if let Some(n) = args.catalog_pool_size.or(file.catalog_pool_size) {
            c.catalog_pool_size = n;
        }
        c.validate()
    }
}

fn default_router_id() -> String {
    format!("router-{}", std::process::id())
}

/// `shardline router` flags; each also reads an environment variable.
#[derive(Debug, Clone, Default, Args)]
pub struct RouterArgs {
    /// TOML file with any of the settings below (flags and env win over it).
    #[arg(long, env = "SHARDLINE_ROUTER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Catalog database URL.
    #[arg(long, env = "SHARDLINE_CATALOG_URL")]
    pub catalog_url: Option<String>,
    /// Listen address (default 127.0.0.1:8080).
    #[arg(long, env = "SHARDLINE_ROUTER_LISTEN")]
    pub listen: Option<String>,
    /// Router name in load samples (default router-<pid>).
    #[arg(long, env = "SHARDLINE_ROUTER_ID")]
    pub router_id: Option<String>,
    /// Hold budget for requests to a moving range, e.g. 2s, 500ms.
    #[arg(long, env = "SHARDLINE_HOLD_TIMEOUT")]
    pub hold_timeout: Option<String>,
    /// Idempotency key lifetime, e.g. 24h.
    #[arg(long, env = "SHARDLINE_IDEMPOTENCY_TTL")]
    pub idempotency_ttl: Option<String>,
    /// Load sample interval, e.g. 10s.
    #[arg(long, env = "SHARDLINE_LOAD_FLUSH_INTERVAL")]
    pub load_flush_interval: Option<String>,
    /// Periodic map refresh, e.g. 5s.
    #[arg(long, env = "SHARDLINE_MAP_REFRESH_INTERVAL")]
    pub map_refresh_interval: Option<String>,
    /// Request timeout, e.g. 10s.
    #[arg(long, env = "SHARDLINE_REQUEST_TIMEOUT")]
    pub request_timeout: Option<String>,
    /// API key cache lifetime, e.g. 30s.
    #[arg(long, env = "SHARDLINE_AUTH_CACHE_TTL")]
    pub auth_cache_ttl: Option<String>,
    /// Connections per shard.
    #[arg(long, env = "SHARDLINE_SHARD_POOL_SIZE")]
    pub shard_pool_size: Option<usize>,
    /// Connections to the catalog.
    #[arg(long, env = "SHARDLINE_CATALOG_POOL_SIZE")]
    pub catalog_pool_size: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouterFile {
    catalog_url: Option<String>,
    listen: Option<String>,
    router_id: Option<String>,
    hold_timeout: Option<String>,
    idempotency_ttl: Option<String>,
    load_flush_interval: Option<String>,
    map_refresh_interval: Option<String>,
    request_timeout: Option<String>,
    auth_cache_ttl: Option<String>,
    shard_pool_size: Option<usize>,
    catalog_pool_size: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_setting() {
        let mut c = Config::new("postgres://u@127.0.0.1:1/db");
        c.hold_timeout = Duration::from_secs(61);
        assert_eq!(c.validate().unwrap_err().setting, "hold_timeout");
        let e = Config::new("mysql:/x").validate().unwrap_err();
        assert_eq!(e.setting, "catalog_url");
        let args = RouterArgs {
            catalog_url: Some("postgres://u@127.0.0.1:1/db".into()),
            hold_timeout: Some("fast".into()),
            ..RouterArgs::default()
        };
        assert_eq!(Config::from_args(args).unwrap_err().setting, "hold_timeout");
        assert_eq!(
            Config::from_args(RouterArgs::default())
                .unwrap_err()
                .setting,
            "catalog_url"
        );
    }

    #[test]
    fn file_settings_and_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.toml");
        std::fs::write(
            &p,
            "catalog_url = \"postgres://u@h/db\"\nhold_timeout = \"3s\"\n",
        )
        .unwrap();
        let args = RouterArgs {
            config: Some(p.clone()),
            ..RouterArgs::default()
        };
        let c = Config::from_args(args).unwrap();
        assert_eq!(c.hold_timeout, Duration::from_secs(3));
        std::fs::write(&p, "hold_timout = \"3s\"\n").unwrap();
        let args = RouterArgs {
            config: Some(p),
            ..RouterArgs::default()
        };
        assert_eq!(Config::from_args(args).unwrap_err().setting, "config");
    }
}
