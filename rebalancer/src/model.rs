//! Move states, persisted rows, names and errors.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

/// The persisted states of a move (`moves.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MoveState {
    Planned,
    Copying,
    CatchingUp,
    Verifying,
    Cutover,
    Switched,
    Cleaning,
    Done,
    Aborting,
    Aborted,
}

impl MoveState {
    pub const ALL: [MoveState; 10] = [
        MoveState::Planned,
        MoveState::Copying,
        MoveState::CatchingUp,
        MoveState::Verifying,
        MoveState::Cutover,
        MoveState::Switched,
        MoveState::Cleaning,
        MoveState::Done,
        MoveState::Aborting,
        MoveState::Aborted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MoveState::Planned => "planned",
            MoveState::Copying => "copying",
            MoveState::CatchingUp => "catching_up",
            MoveState::Verifying => "verifying",
            MoveState::Cutover => "cutover",
            MoveState::Switched => "switched",
            MoveState::Cleaning => "cleaning",
            MoveState::Done => "done",
            MoveState::Aborting => "aborting",
            MoveState::Aborted => "aborted",
        }
    }

    /// `done` or `aborted`.
    pub fn is_terminal(self) -> bool {
        matches!(self, MoveState::Done | MoveState::Aborted)
    }

    /// Whether the move may still be rolled back (before the catalog flip).
    pub fn can_abort(self) -> bool {
        matches!(
            self,
            MoveState::Planned
                | MoveState::Copying
                | MoveState::CatchingUp
                | MoveState::Verifying
                | MoveState::Cutover
                | MoveState::Aborting
        )
    }
}

impl fmt::Display for MoveState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MoveState {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        MoveState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| Error::Inconsistent(format!("unknown move state {s:?}")))
    }
}

/// A row of `moves` (the columns the engine needs).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MoveRow {
    pub id: Uuid,
    pub range_id: i64,
    pub start_key: i64,
    pub end_key: i64,
    pub source_shard: String,
    pub target_shard: String,
    pub state: String,
    pub abort_requested: bool,
    pub error: Option<String>,
    pub publication: String,
    pub slot: String,
    pub subscription: String,
    pub phase_ms: serde_json::Value,
}

impl MoveRow {
    pub fn state(&self) -> Result<MoveState, Error> {
        self.state.parse()
    }
}

pub(crate) const MOVE_COLUMNS: &str = "id, range_id, start_key, end_key, source_shard, target_shard, \
     state, abort_requested, error, publication, slot, subscription, phase_ms";

/// Prefix of every replication object a move creates.
pub const NAME_PREFIX: &str = "sl_mv_";

/// Publication, slot, subscription and replication-origin name of a move.
pub fn object_name(id: Uuid) -> String {
    format!("{NAME_PREFIX}{}", id.simple())
}

/// The move id encoded in an object name made by [`object_name`].
pub fn move_id_of(name: &str) -> Option<Uuid> {
    name.strip_prefix(NAME_PREFIX)
        .and_then(|s| Uuid::try_parse(s).ok())
}

/// Everything that can stop a move step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("another engine holds the rebalancer leader lock")]
    NotLeader,
    #[error("move {0} not found")]
    NotFound(Uuid),
    #[error("invalid move request: {0}")]
    Invalid(String),
    #[error("shard {0} is not registered in the catalog")]
    UnknownShard(String),
    #[error("move {id} is no longer in state {expected}")]
    Conflict { id: Uuid, expected: MoveState },
    #[error("timed out {0}")]
    Timeout(String),
    #[error("verification failed: {0}")]
    Verification(String),
    #[error("abort requested by an operator")]
    AbortRequested,
    #[error("stopped by a fail point at step {0}")]
    Crashed(&'static str),
    #[error("inconsistent state: {0}")]
    Inconsistent(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A failure that says nothing about the move itself: a shard restarting or
    /// unreachable, a connection lost (I/O, SQLSTATE class 08, `admin_shutdown`,
    /// `crash_shutdown`, `cannot_connect_now`), a pool that found no connection in
    /// time. The step can run again once the shard is back.
    pub fn is_transient(&self) -> bool {
        let Error::Db(e) = self else {
            return false;
        };
        match e {
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(d) => d
                .code()
                .is_some_and(|c| c.starts_with("08") || matches!(&*c, "57P01" | "57P02" | "57P03")),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip() {
        for s in MoveState::ALL {
            assert_eq!(s.as_str().parse::<MoveState>().unwrap(), s);
        }
        assert!("bogus".parse::<MoveState>().is_err());
    }

    #[test]
    fn names_encode_the_move_id() {
        let id = Uuid::now_v7();
        let n = object_name(id);
        assert!(n.len() < 64);
        assert_eq!(move_id_of(&n), Some(id));
        assert_eq!(move_id_of("pg_16390_sync_1_2"), None);
    }
}
