-- Hooks for the optional native fence (shard-ext/, docs/fencing.md "Native fence").
--
-- This migration is the same everywhere: it does not need the extension. Whether a
-- shard uses the native (C) or the PL/pgSQL fence is decided after the migrations
-- by `shardline_core::fence::install` (SHARDLINE_FENCE=auto|native|plpgsql), which
-- re-points the insert triggers and the ledger's balance trigger.
--
-- ledger_check_balanced: TG_ARGV[0] = 'native' fences through the extension's
-- shardline_fence_native_check (whose per-transaction cache the payment's native
-- insert trigger filled); no argument keeps the PL/pgSQL fence and its
-- `shardline.fence_key` cache; 'unfenced' is the bench's baseline.
CREATE OR REPLACE FUNCTION ledger_check_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
    ok  boolean;
BEGIN
    -- Keyed by shard key and journal: a journal spread over two keys is checked
    -- (and fenced) for each.
    IF current_setting('shardline.ledger_checked', true) = NEW.shard_key::text || '/' || NEW.journal_id::text THEN
        RETURN NULL;
    END IF;
    IF TG_NARGS = 0 THEN
        IF current_setting('shardline.fence_key', true) IS DISTINCT FROM NEW.shard_key::text THEN
            ok := shardline_fence_check(NEW.shard_key);
        END IF;
    ELSIF TG_ARGV[0] = 'native' THEN
        ok := shardline_fence_native_check(NEW.shard_key);
    END IF;
    SELECT currency, sum(amount) AS total INTO bad
      FROM ledger_entries
     WHERE shard_key = NEW.shard_key AND journal_id = NEW.journal_id
     GROUP BY currency HAVING sum(amount) <> 0
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger journal % does not balance in %: entries sum to %',
            NEW.journal_id, bad.currency, bad.total USING ERRCODE = 'SLL01';
    END IF;
    PERFORM set_config('shardline.ledger_checked', NEW.shard_key::text || '/' || NEW.journal_id::text, true);
    RETURN NULL;
END $$;

-- Which fence guards inserts: 'native' or 'plpgsql' when every data table's insert
-- trigger and the ledger's balance trigger agree, else 'mixed' (e.g. the bench's
-- unfenced baseline, or a half-applied manual change).
CREATE FUNCTION shardline_fence_kind() RETURNS text LANGUAGE sql STABLE AS $$
    WITH t AS (
        SELECT p.proname::text AS fn, t.tgenabled, t.tgnargs,
               CASE WHEN t.tgnargs > 0 THEN split_part(encode(t.tgargs, 'escape'), '\000', 1) END AS arg0,
               t.tgname::text AS tgname
          FROM pg_trigger t
          JOIN pg_proc p ON p.oid = t.tgfoid
          JOIN pg_class c ON c.oid = t.tgrelid
         WHERE c.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = 'owned_ranges'::regclass)
           AND t.tgname IN ('merchants_fence_insert', 'payments_fence_insert', 'refunds_fence_insert',
                            'balances_fence_insert', 'idempotency_keys_fence_insert', 'ledger_balanced')
           AND t.tgenabled <> 'D'
    )
    SELECT CASE
        WHEN (SELECT count(*) FROM t WHERE fn = 'shardline_fence_native_insert') = 5
         AND EXISTS (SELECT 1 FROM t WHERE tgname = 'ledger_balanced' AND arg0 = 'native') THEN 'native'
        WHEN (SELECT count(*) FROM t WHERE fn = 'shardline_fence_insert') = 5
         AND EXISTS (SELECT 1 FROM t WHERE tgname = 'ledger_balanced' AND tgnargs = 0) THEN 'plpgsql'
        ELSE 'mixed'
    END
$$;
