//! Which fence guards a shard's inserts: the native (C) one of the
//! `shardline_fence` extension (shard-ext/) or the PL/pgSQL one of the shard
//! migrations. Both keep the same contract (docs/fencing.md); the native one costs
//! less. The migrations themselves stay the same everywhere; [`install`] runs after
//! them and re-points the insert triggers and the ledger's balance trigger.

use std::fmt;
use std::str::FromStr;

use sqlx::PgPool;

/// Environment variable choosing the fence: `auto` (default), `native`, `plpgsql`.
pub const FENCE_MODE_ENV: &str = "SHARDLINE_FENCE";

/// Name of the PostgreSQL extension holding the native fence.
pub const NATIVE_EXTENSION: &str = "shardline_fence";

/// Data tables with a `<table>_fence_insert` trigger (ledger_entries is fenced by
/// its deferred balance trigger `ledger_balanced`).
pub const FENCED_TABLES: [&str; 5] = [
    "merchants",
    "payments",
    "refunds",
    "balances",
    "idempotency_keys",
];

/// What the operator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FenceMode {
    /// Native when the server has the extension (and we may create it), else PL/pgSQL.
    #[default]
    Auto,
    /// Native or an error.
    Native,
    /// PL/pgSQL even when the extension is available.
    Plpgsql,
}

impl FenceMode {
    /// `SHARDLINE_FENCE` (unset or empty: `auto`).
    pub fn from_env() -> Result<FenceMode, FenceError> {
        match std::env::var(FENCE_MODE_ENV) {
            Ok(v) if !v.trim().is_empty() => v.parse(),
            _ => Ok(FenceMode::Auto),
        }
    }
}

impl FromStr for FenceMode {
    type Err = FenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(FenceMode::Auto),
            "native" => Ok(FenceMode::Native),
            "plpgsql" => Ok(FenceMode::Plpgsql),
            _ => Err(FenceError::BadMode(s.to_owned())),
        }
    }
}

/// The fence a shard runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceKind {
    Native,
    Plpgsql,
}

impl FenceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FenceKind::Native => "native",
            FenceKind::Plpgsql => "plpgsql",
        }
    }

    /// The insert trigger function and the ledger balance trigger's arguments.
    fn trigger_functions(self) -> (&'static str, &'static str) {
        match self {
            FenceKind::Native => ("shardline_fence_native_insert()", "'native'"),
            FenceKind::Plpgsql => ("shardline_fence_insert()", ""),
        }
    }
}

impl fmt::Display for FenceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    #[error("{FENCE_MODE_ENV}={0:?}: expected auto, native or plpgsql")]
    BadMode(String),
    #[error(
        "{FENCE_MODE_ENV}=native but this PostgreSQL server does not have the \
         {NATIVE_EXTENSION} extension (build and install it with `make -C shard-ext install` \
         or `./dev setup`, or use {FENCE_MODE_ENV}=plpgsql)"
    )]
    NativeUnavailable,
    #[error("installing the {kind} fence failed: {source}")]
    Sql {
        kind: &'static str,
        #[source]
        source: sqlx::Error,
    },
}

fn sql_err(kind: FenceKind) -> impl FnOnce(sqlx::Error) -> FenceError {
    move |source| FenceError::Sql {
        kind: kind.as_str(),
        source,
    }
}

/// Does the server have the native fence extension installed (files present)?
pub async fn native_available(pool: &PgPool) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = $1)")
        .bind(NATIVE_EXTENSION)
        .fetch_one(pool)
        .await
}

/// The fence guarding inserts now: `native`, `plpgsql` or `mixed` (see
/// `shardline_fence_kind()` in migrations/shard/0004).
pub async fn active_kind(pool: &PgPool) -> Result<String, sqlx::Error> {
    sqlx::query_scalar("SELECT shardline_fence_kind()")
        .fetch_one(pool)
        .await
}

/// Make `mode`'s fence the active one on a migrated shard database; idempotent and
/// free when it already is (no DDL then). `auto` falls back to PL/pgSQL, with a
/// warning, when the extension is missing or cannot be created (e.g. a role that
/// may not create C extensions); `native` fails instead.
pub async fn install(pool: &PgPool, mode: FenceMode) -> Result<FenceKind, FenceError> {
    let want = match mode {
        FenceMode::Plpgsql => FenceKind::Plpgsql,
        FenceMode::Native | FenceMode::Auto => {
            let available = native_available(pool)
                .await
                .map_err(sql_err(FenceKind::Native))?;
            match (available, mode) {
                (true, _) => FenceKind::Native,
                (false, FenceMode::Native) => return Err(FenceError::NativeUnavailable),
                (false, _) => FenceKind::Plpgsql,
            }
        }
    };
    match point_triggers(pool, want).await {
        Ok(()) => Ok(want),
        Err(e) if mode == FenceMode::Auto && want == FenceKind::Native => {
            tracing::warn!(error = %e, "native fence unavailable, using the PL/pgSQL fence");
            point_triggers(pool, FenceKind::Plpgsql).await?;
            Ok(FenceKind::Plpgsql)
        }
        Err(e) => Err(e),
    }
}

/// In one transaction (serialized against concurrent installs by an advisory
/// lock): create the extension if needed, then re-point the triggers unless they
/// already point at `kind`.
async fn point_triggers(pool: &PgPool, kind: FenceKind) -> Result<(), FenceError> {
    let err = sql_err(kind);
    if active_kind(pool).await.map_err(err)? == kind.as_str() {
        return Ok(());
    }
    let mut tx = pool.begin().await.map_err(sql_err(kind))?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('shardline_fence_install'))")
        .execute(&mut *tx)
        .await
        .map_err(sql_err(kind))?;
    let now: String = sqlx::query_scalar("SELECT shardline_fence_kind()")
        .fetch_one(&mut *tx)
        .await
        .map_err(sql_err(kind))?;
    if now == kind.as_str() {
        return tx.commit().await.map_err(sql_err(kind));
    }
    let mut ddl = String::new();
    if kind == FenceKind::Native {
        ddl.push_str("CREATE EXTENSION IF NOT EXISTS shardline_fence;\n");
    }
    let (insert_fn, ledger_args) = kind.trigger_functions();
    for t in FENCED_TABLES {
        ddl.push_str(&format!(
            "DROP TRIGGER IF EXISTS {t}_fence_insert ON {t};
             CREATE TRIGGER {t}_fence_insert BEFORE INSERT ON {t} FOR EACH ROW
                 EXECUTE FUNCTION {insert_fn};\n"
        ));
    }
    ddl.push_str(&format!(
        "DROP TRIGGER IF EXISTS ledger_balanced ON ledger_entries;
         CREATE CONSTRAINT TRIGGER ledger_balanced AFTER INSERT ON ledger_entries
             DEFERRABLE INITIALLY DEFERRED
             FOR EACH ROW EXECUTE FUNCTION ledger_check_balanced({ledger_args});\n"
    ));
    sqlx::raw_sql(sqlx::AssertSqlSafe(ddl))
        .execute(&mut *tx)
        .await
        .map_err(sql_err(kind))?;
    tx.commit().await.map_err(sql_err(kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_modes() {
        assert_eq!("auto".parse::<FenceMode>().unwrap(), FenceMode::Auto);
        assert_eq!(" Native".parse::<FenceMode>().unwrap(), FenceMode::Native);
        assert_eq!("plpgsql".parse::<FenceMode>().unwrap(), FenceMode::Plpgsql);
        assert!(matches!(
            "c".parse::<FenceMode>(),
            Err(FenceError::BadMode(_))
        ));
    }
}
