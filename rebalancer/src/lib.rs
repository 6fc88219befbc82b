//! Shardline rebalancer: the online range move engine.
//!
//! A move is a persisted state machine in the catalog (`moves` + the append-only
//! `move_events`): `planned -> copying -> catching_up -> verifying -> cutover ->
//! switched -> cleaning -> done`, or `aborting -> aborted`. Each state is written
//! (with an event) before its step acts, and every step is idempotent, so a crashed
//! engine, or its successor (leader-elected by a catalog advisory lock), resumes
//! from the persisted state. Copy and catch-up use PostgreSQL's native logical
//! replication (row-filtered publication on the source, subscription on the
//! target); verification is money-aware and gates the flip; cutover fences the
//! source, proves the target applied everything with a marker row, and flips the
//! catalog and activates the target. See docs/moves.md.
//!
//! [`policy`] is the autonomous policy: a pure function from load history, the
//! range map and moves in flight to decisions (docs/rebalancer.md);
//! [`autopilot`] is the loop the leader runs: it reads the catalog every
//! interval, stores every decision and executes the taken ones.

pub mod admin;
pub mod autopilot;
mod engine;
mod model;
pub mod ops;
pub mod policy;
pub mod repl;
pub mod verify;

pub use engine::{Config, Engine, FAIL_POINTS, Subject, plan_move, request_abort, run};
pub use model::{Error, MoveRow, MoveState, NAME_PREFIX, Result, move_id_of, object_name};
