//! `shardline loadtest`: production-shaped open-loop load against a running
//! system, and the verifier that decides whether a run kept every invariant
//! (docs/loadtest.md).
//!
//! Built: scenarios ([`scenario`], presets in `scenarios/`), the open-loop
//! [`run`]ner with HDR latency histograms, the [`workload`] (onboarding,
//! authorize, capture, partial refunds, voids, router and edge reads, Zipf
//! merchant popularity, deliberate idempotent retries), the JSON report, and the
//! end-of-run [`verify`]er, the HTML report ([`html`]) with per-shard load
//! ([`shard_load`]), scheduled moves and faults ([`events`]), the latency
//! [`proxy`] of the `slow-shard` scenario, the [`hotspot`] scenario's watcher of
//! the autonomous policy, and baseline comparison ([`baseline`]).

pub mod baseline;
pub mod events;
pub mod hotspot;
pub mod html;
pub mod http;
pub mod proxy;
pub mod run;
pub mod scenario;
pub mod shard_load;
pub mod stats;
pub mod verify;
pub mod workload;
pub mod zipf;

#[cfg(test)]
mod testing;
