//! The autonomous rebalancing policy: a pure function from load history, the
//! range map, moves in flight and recent moves to decisions.
//!
//! [`decide`] does no IO, reads no clock (the input carries `now`) and uses no
//! randomness; equal inputs give equal decisions in the same order. Each round:
//!
//! 1. **Drain**: ranges of shards marked `draining` move to the least loaded
//!    active shard (heaviest first), within concurrency and byte budget.
//! 2. **Balance**: when the hottest active shard is above the absolute floor and
//!    above `mean * (1 + tolerance)` for `sustained_intervals` consecutive
//!    intervals, move load off it: isolate a dominant merchant (split to its
//!    key) if one carries `dominant_share` of its range, else move a range; the
//!    target is the shard with the lowest predicted post-move load, and the move
//!    must lower the predicted cluster maximum by `min_improvement`. Cooldown,
//!    anti-oscillation, byte budget and concurrency are checked before a move is
//!    taken; a blocked candidate is recorded as a declined decision.
//! 3. **Merge**: neighbouring cold ranges of one active shard are merged.
//!
//! Every round yields at least one decision (taken or declined), each with a
//! stable [`Reason`] code, a sentence, and the [`Inputs`] that mattered. See
//! docs/rebalancer.md. [`crate::autopilot`] is the loop that reads the catalog,
//! runs `decide` each interval, stores decisions and executes taken ones.

mod config;
mod decision;
mod drain_merge;
mod history;
mod input;
mod model;
mod plan;
pub mod sim;

pub(crate) use model::size_of;

#[cfg(test)]
mod tests;

pub use config::{ConfigError, PolicyConfig};
pub use decision::{Action, Decision, Inputs, Reason};
pub use input::{
    HeavyHitter, LoadSample, MoveInFlight, MoveRecord, PolicyInput, ShardInfo, ShardState,
    SizeEstimate,
};

/// One decision round. Pure and deterministic.
///
/// # Errors
/// The configuration is invalid ([`PolicyConfig::validate`]).
pub fn decide(input: &PolicyInput, config: &PolicyConfig) -> Result<Vec<Decision>, ConfigError> {
    config.validate()?;
    Ok(plan::Planner::new(input, config).run())
}
