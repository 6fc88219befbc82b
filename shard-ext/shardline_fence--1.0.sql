-- Shardline's native fence (docs/fencing.md). Same contract as the PL/pgSQL
-- fence of migrations/shard/0003: shared bucket lock
-- pg_advisory_xact_lock_shared(1397245510, shard_key >> 22), then the state of the
-- owned range holding the key as last committed; SLF01 / SLF02 otherwise.
-- `shardline_core::fence::install` points the data tables' insert triggers and the
-- ledger's balance trigger at these functions.
\echo Use "CREATE EXTENSION shardline_fence" to load this file. \quit

-- BEFORE INSERT ... FOR EACH ROW trigger: fences NEW.shard_key.
CREATE FUNCTION shardline_fence_native_insert() RETURNS trigger
    AS 'MODULE_PATHNAME', 'shardline_fence_native_insert'
    LANGUAGE C;

-- The check alone (the ledger's deferred balance trigger calls it at commit).
-- Returns true or raises SLF01 / SLF02.
CREATE FUNCTION shardline_fence_native_check(k bigint) RETURNS boolean
    AS 'MODULE_PATHNAME', 'shardline_fence_native_check'
    LANGUAGE C STRICT VOLATILE;
