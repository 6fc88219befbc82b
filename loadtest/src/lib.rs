//! `shardline loadtest`: production-shaped load against a running system, fault
//! injection, and the verifier that decides whether a run kept every invariant.
//!
//! Built so far: the end-of-run [`verify`]er (docs/loadtest.md). The workload,
//! scenarios and reports are issue 8's remaining work.

pub mod verify;
