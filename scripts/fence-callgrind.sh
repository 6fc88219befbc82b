#!/usr/bin/env bash
# Instructions per payment-shaped write transaction (1 payment + 2 balanced ledger
# rows, PREPAREd, BEGIN/COMMIT), unfenced vs. PL/pgSQL fence vs. native fence,
# counted by callgrind on a single-user backend (`postgres --single`): deterministic,
# unlike throughput on a shared 2-core machine. Cost per transaction =
# (Ir(N_HI txns) - Ir(N_LO txns)) / (N_HI - N_LO), which cancels start-up and
# warm-up. See docs/fencing.md ("Where the cost goes").
#
#   scripts/fence-callgrind.sh            # needs valgrind, PostgreSQL 15, and
#                                         # target/release/shardline (or SHARDLINE=path)
# Env: N_LO (200), N_HI (1200), PAR (2 parallel callgrind runs), SHARDLINE,
#      PG_BINDIR (/usr/lib/postgresql/15/bin), KEEP=1 keeps the temp dir.
# The native variant is skipped when the shardline_fence extension is not installed.
set -euo pipefail
cd "$(dirname "$0")/.."

N_LO=${N_LO:-200}
N_HI=${N_HI:-1200}
PAR=${PAR:-2}
PG_BINDIR=${PG_BINDIR:-/usr/lib/postgresql/15/bin}
SHARDLINE=${SHARDLINE:-${CARGO_TARGET_DIR:-target}/release/shardline}
[ -x "$SHARDLINE" ] || { echo "error: $SHARDLINE not found (cargo build --release -p shardline, or SHARDLINE=path)" >&2; exit 1; }
command -v valgrind >/dev/null || { echo "error: valgrind is not installed" >&2; exit 1; }

as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

work=$(mktemp -d /tmp/fence-callgrind.XXXXXX)
[ "$(id -u)" -ne 0 ] || chown postgres: "$work"
data="$work/data"
port=$((20000 + RANDOM % 20000))
cleanup() {
  as_pg "$PG_BINDIR/pg_ctl" -D "$data" -m immediate stop >/dev/null 2>&1 || true
  [ "${KEEP:-}" = 1 ] && echo "kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT

as_pg "$PG_BINDIR/initdb" -D "$data" -U postgres -A trust -E UTF8 --no-sync >/dev/null
# the settings of devkit's test clusters that matter for a single backend
cat >>"$data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
port = $port
fsync = off
full_page_writes = off
shared_buffers = 128MB
jit = off
EOF
as_pg "$PG_BINDIR/pg_ctl" -D "$data" -l "$work/log" -w start >/dev/null
url() { echo "postgres://postgres@127.0.0.1:$port/$1"; }
sql() { psql -X -q -v ON_ERROR_STOP=1 "$(url "$1")" -c "$2"; }

native=yes
[ "$(psql -X -Atq "$(url postgres)" -c "SELECT count(*) FROM pg_available_extensions WHERE name = 'shardline_fence'")" = 1 ] || {
  native=""; echo "note: shardline_fence extension not installed: native variant skipped" >&2; }
variants="unfenced plpgsql${native:+ native}"

for v in $variants; do
  sql postgres "CREATE DATABASE base_$v"
  mode=$v; [ "$v" = unfenced ] && mode=plpgsql
  SHARDLINE_FENCE=$mode "$SHARDLINE" migrate --shard "$(url "base_$v")" >/dev/null
  sql "base_$v" "INSERT INTO owned_ranges (id, start_key, end_key, epoch, state) VALUES (1, 0, 4294967296, 1, 'active')"
  if [ "$v" = unfenced ]; then
    # as `shardline bench fencing`'s baseline: fence triggers disabled, the ledger's
    # balance check kept without its fence part
    sql "base_$v" "DO \$\$ DECLARE r record; BEGIN
        FOR r IN SELECT c.relname, t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
                  WHERE NOT t.tgisinternal AND t.tgname ~ '_fence_(insert|update|delete)\$' LOOP
          EXECUTE format('ALTER TABLE %I DISABLE TRIGGER %I', r.relname, r.tgname);
        END LOOP; END \$\$;
      DROP TRIGGER ledger_balanced ON ledger_entries;
      CREATE CONSTRAINT TRIGGER ledger_balanced AFTER INSERT ON ledger_entries
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_check_balanced('unfenced')"
  fi
  echo "$v: fence kind reported: $(psql -X -Atq "$(url "base_$v")" -c 'SELECT shardline_fence_kind()')" >&2
  for n in "$N_LO" "$N_HI"; do sql postgres "CREATE DATABASE run_${v}_$n TEMPLATE base_$v"; done
done
as_pg "$PG_BINDIR/pg_ctl" -D "$data" -w stop >/dev/null

# One statement per line (single-user mode without -j ends a statement at newline).
gen() { # gen N SEED
  python3 - "$1" "$2" <<'EOF'
import random, sys, uuid
n, seed = int(sys.argv[1]), int(sys.argv[2])
rnd = random.Random(seed)
merchants = [(uuid.UUID(int=rnd.getrandbits(128)), rnd.randrange(0, 2**32)) for _ in range(1000)]
print("PREPARE p(bigint, uuid, uuid, numeric) AS INSERT INTO payments (shard_key, merchant_id, payment_id, currency, amount, status) VALUES ($1, $2, $3, 'USD', $4, 'authorized')")
print("PREPARE l(bigint, uuid, uuid, uuid, numeric) AS INSERT INTO ledger_entries (shard_key, merchant_id, journal_id, line, payment_id, account, currency, amount, kind) VALUES ($1, $2, $3, 0, $4, 'authorized', 'USD', $5, 'authorize'), ($1, $2, $3, 1, $4, 'processor_hold', 'USD', -$5::numeric, 'authorize')")
for _ in range(n):
    m, k = merchants[rnd.randrange(len(merchants))]
    p, j = uuid.UUID(int=rnd.getrandbits(128)), uuid.UUID(int=rnd.getrandbits(128))
    amt = "%d.%02d" % (rnd.randrange(1, 1000), rnd.randrange(100))
    print("BEGIN")
    print(f"EXECUTE p({k}, '{m}', '{p}', {amt})")
    print(f"EXECUTE l({k}, '{m}', '{j}', '{p}', {amt})")
    print("COMMIT")
EOF
}
for n in "$N_LO" "$N_HI"; do gen "$n" 42 >"$work/in_$n.sql"; done

run_one() { # run_one VARIANT N
  local out="$work/cg_$1_$2.out"
  as_pg valgrind --tool=callgrind --callgrind-out-file="$out" \
    "$PG_BINDIR/postgres" --single -D "$data" -c jit=off "run_$1_$2" \
    <"$work/in_$2.sql" >"$work/single_$1_$2.log" 2>&1
  if grep -q 'ERROR' "$work/single_$1_$2.log"; then
    echo "error: $1 N=$2 raised errors:" >&2; grep -m3 ERROR "$work/single_$1_$2.log" >&2; exit 1
  fi
}
jobs_list=()
for v in $variants; do for n in "$N_LO" "$N_HI"; do jobs_list+=("$v $n"); done; done
pids=()
# Single-user mode locks the data directory: one backend at a time per directory,
# so PAR > 1 runs use copies of it (round robin, oldest run waited for first).
for ((i = 1; i < PAR; i++)); do as_pg cp -a "$data" "$work/data$i"; done
i=0
for j in "${jobs_list[@]}"; do
  set -- $j
  d="$data"; [ $((i % PAR)) -eq 0 ] || d="$work/data$((i % PAR))"
  ( data="$d"; run_one "$1" "$2" ) &
  pids+=($!)
  i=$((i + 1))
  if [ ${#pids[@]} -ge "$PAR" ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
done
for p in "${pids[@]}"; do wait "$p"; done

ir() { sed -n 's/^\(summary\|totals\): *\([0-9]*\).*/\2/p' "$work/cg_$1_$2.out" | head -1; }
base=""
printf '%-10s %16s %8s\n' variant "instr/txn" ratio
for v in $variants; do
  per=$(( ($(ir "$v" "$N_HI") - $(ir "$v" "$N_LO")) / (N_HI - N_LO) ))
  [ -n "$base" ] || base=$per
  printf '%-10s %16s %8s\n' "$v" "$per" "$(python3 -c "print(f'{$base/$per:.3f}')")"
done
