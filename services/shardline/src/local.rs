//! The local cluster's description, `<dir>/cluster.json`, written by `shardline up`
//! and read by the other commands when no explicit URL is given.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cli::CatalogArgs;
use crate::config::{ConfigError, postgres_url};

pub const CLUSTER_FILE: &str = "cluster.json";
pub const ADMIN_KEY_FILE: &str = "admin.key";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LocalShard {
    pub id: String,
    pub port: u16,
    pub url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LocalCluster {
    pub catalog_port: u16,
    pub catalog_url: String,
    pub shards: Vec<LocalShard>,
    pub nats_port: u16,
    pub nats_url: String,
    pub ranges_per_shard: u32,
    /// The router of the running `up` (written once it listens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router_url: Option<String>,
    /// The rebalancer admin API of the running `up` (written once it listens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebalancer_url: Option<String>,
    /// The edges' read APIs of the running `up` (written once they listen).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub edge_urls: Vec<String>,
}

impl LocalCluster {
    pub fn load(dir: &Path) -> Result<Option<Self>, ConfigError> {
        let path = dir.join(CLUSTER_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
                ConfigError::new("dir", format!("{} is corrupt: {e}", path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ConfigError::new(
                "dir",
                format!("cannot read {}: {e}", path.display()),
            )),
        }
    }

    /// Written atomically (temp file + rename).
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        let tmp = dir.join(format!("{CLUSTER_FILE}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(tmp, dir.join(CLUSTER_FILE))
    }
}

/// The catalog URL from `--catalog`/`SHARDLINE_CATALOG_URL`, else the local cluster's.
pub fn catalog_url(args: &CatalogArgs) -> Result<String, ConfigError> {
    if let Some(url) = &args.catalog {
        return postgres_url("catalog", url);
    }
    match LocalCluster::load(&args.dir)? {
        Some(c) => Ok(c.catalog_url),
        None => Err(ConfigError::new(
            "catalog",
            format!(
                "no --catalog URL (or SHARDLINE_CATALOG_URL) given and no local cluster in {} \
                 (start one with `shardline up`)",
                args.dir.display()
            ),
        )),
    }
}

pub fn admin_key_path(dir: &Path) -> PathBuf {
    dir.join(ADMIN_KEY_FILE)
}
