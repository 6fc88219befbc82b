#!/usr/bin/env bash
# Contract test of the router: boots a local cluster (`shardline up`, 2 shards, in
# a temporary directory) with the router on a free port, then runs schemathesis
# (PyPI, installed into ./.venv when missing) against the live /openapi.json with
# the cluster's admin key. Exits non-zero on any schemathesis failure.
#   scripts/schemathesis.sh [extra schemathesis args]
# Env: SHARDLINE_BIN (default: target/debug/shardline, built first),
#      SCHEMATHESIS_MAX_EXAMPLES (default 25).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${SHARDLINE_BIN:-}" ]; then
  cargo build -q -p shardline # a no-op when up to date; never test a stale binary
fi
bin="${SHARDLINE_BIN:-${CARGO_TARGET_DIR:-target}/debug/shardline}"
if [ ! -x .venv/bin/schemathesis ]; then
  [ -x .venv/bin/pip ] || python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check schemathesis
fi

dir="$(mktemp -d -t shardline-schemathesis-XXXXXX)"
chmod 755 "$dir" # PostgreSQL runs as the postgres user when we are root
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
SHARDLINE_ROUTER_LISTEN="127.0.0.1:$port" "$bin" up --dir "$dir" --shards 2 --ranges-per-shard 2 \
  >"$dir/up.log" 2>&1 &
up_pid=$!
cleanup() {
  kill -INT "$up_pid" 2>/dev/null || true
  wait "$up_pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

for _ in $(seq 1 240); do
  grep -q '^shardline is up' "$dir/up.log" 2>/dev/null && break
  if ! kill -0 "$up_pid" 2>/dev/null; then
    echo "schemathesis.sh: shardline up exited:" >&2
    cat "$dir/up.log" >&2
    exit 1
  fi
  sleep 0.5
done
grep -q '^shardline is up' "$dir/up.log" || { echo "schemathesis.sh: cluster not up in 120 s" >&2; cat "$dir/up.log" >&2; exit 1; }
key="$(tr -d '\n' <"$dir/admin.key")"
base="http://127.0.0.1:$port"
curl -fsS "$base/readyz" >/dev/null 2>&1 || sleep 1

# positive_data_acceptance is left out: schema-valid requests legitimately get 404
# (random merchant/payment ids), 409 (state machine) or 422 (over-refund).
.venv/bin/schemathesis run "$base/openapi.json" \
  --url "$base" \
  -H "Authorization: Bearer $key" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,negative_data_rejection,missing_required_header,unsupported_method,ignored_auth \
  --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-25}" \
  --generation-deterministic \
  --workers 1 \
  "$@"
