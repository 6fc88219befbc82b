#!/usr/bin/env bash
# CI smoke load: a short `steady` and a `move-under-load` run, each on a throwaway
# local system (3 shards, NATS, every service). Fails on any verifier violation,
# idempotent-replay mismatch or unsettled move (the loadtest exits non-zero).
# Uses the debug binary `./dev test` already built (same features: no rebuild).
set -euo pipefail
cd "$(dirname "$0")/.."
run() {
  cargo run -q -p shardline --features shardline-rebalancer/failpoints -- \
    loadtest --local --quiet "$@"
}
RUST_LOG=error run --scenario steady --duration 45 --rate 100
RUST_LOG=error run --scenario move-under-load --rate 100
