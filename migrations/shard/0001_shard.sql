-- Shardline shard database: merchant data for the key ranges this shard owns.
--
-- Every data row carries shard_key (0..2^32-1, the merchant's placement hash) and
-- merchant_id; primary keys lead with shard_key so a range is one index scan and
-- publication row filters can use it (it is part of the replica identity).
--
-- Ownership is enforced HERE, not by callers (see docs/fencing.md):
--   * owned_ranges lists the ranges this shard holds and their state;
--   * a BEFORE trigger on every data table rejects a write whose shard_key is not in
--     an 'active' owned range with SQLSTATE SLF01 (not owned) or SLF02 (frozen or
--     incoming: a move is in progress);
--   * a writer holds a shared transaction-level advisory lock on its key's bucket
--     until it commits; changing a range takes the exclusive locks of its buckets,
--     so in-flight writers drain and later ones see the new state;
--   * triggers are ENABLE ORIGIN (the default), so logical replication apply
--     (session_replication_role = replica) bypasses them.

CREATE TABLE owned_ranges (
    -- the catalog's range id; also the advisory-lock key of the range
    id          bigint PRIMARY KEY CHECK (id BETWEEN 1 AND 2147483647),
    start_key   bigint NOT NULL,
    end_key     bigint NOT NULL,
    epoch       bigint NOT NULL,
    state       text NOT NULL CHECK (state IN ('active', 'frozen', 'incoming')),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (start_key >= 0 AND end_key <= 4294967296 AND start_key < end_key),
    EXCLUDE USING gist (int8range(start_key, end_key) WITH &&)
);
CREATE INDEX owned_ranges_start ON owned_ranges (start_key, end_key);

-- Fencing locks: pg_advisory_xact_lock[_shared](1397245510, bucket) where
-- bucket = shard_key >> 22 (1024 buckets of 2^22 keys). A writer takes the SHARED
-- lock of its key's bucket before it reads the range's state; every change to
-- owned_ranges takes the EXCLUSIVE locks of all buckets its old and new bounds
-- overlap (trigger below, so no caller can forget). Hence a change waits for every
-- in-flight writer of the keys it covers, and writers arriving meanwhile read the
-- state only after it committed. Locking by bucket rather than by range id needs no
-- lookup before the lock, so a writer's check is one lock and one index probe.
CREATE FUNCTION shardline_fence_lock_class() RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS 'SELECT 1397245510';

CREATE FUNCTION shardline_lock_keys(s bigint, e bigint) RETURNS void LANGUAGE sql AS $$
    SELECT count(pg_advisory_xact_lock(1397245510, b::integer))::integer * 0
      FROM generate_series(s >> 22, (e - 1) >> 22) AS b;
$$;

CREATE FUNCTION owned_ranges_lock() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        PERFORM shardline_lock_keys(OLD.start_key, OLD.end_key);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM shardline_lock_keys(NEW.start_key, NEW.end_key);
        NEW.updated_at := now();
        RETURN NEW;
    END IF;
    RETURN OLD;
END $$;
CREATE TRIGGER owned_ranges_lock BEFORE INSERT OR UPDATE OR DELETE ON owned_ranges
    FOR EACH ROW EXECUTE FUNCTION owned_ranges_lock();
-- Also when an operator or cleanup session runs with session_replication_role = replica.
ALTER TABLE owned_ranges ENABLE ALWAYS TRIGGER owned_ranges_lock;

-- The fence: BEFORE trigger on every data table. One check per transaction and
-- key: the verdict is remembered in a transaction-local setting, which is safe
-- because the shared bucket lock is held until the transaction ends.
CREATE FUNCTION shardline_fence() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    k     bigint;
    st    text;
    r     record;
    done  text;
BEGIN
    IF TG_OP = 'INSERT' THEN
        k := NEW.shard_key;
    ELSIF TG_OP = 'UPDATE' THEN
        k := NEW.shard_key;
        IF NEW.shard_key <> OLD.shard_key OR NEW.merchant_id <> OLD.merchant_id THEN
            RAISE EXCEPTION 'shard_key and merchant_id of a % row never change', TG_TABLE_NAME
                USING ERRCODE = 'SLF03';
        END IF;
        NEW.version := OLD.version + 1;
    ELSE
        k := OLD.shard_key;
    END IF;
    IF current_setting('shardline.fence_key', true) IS DISTINCT FROM k::text THEN
        -- (assignments, not PERFORM: evaluated as simple expressions, no SPI query)
        done := pg_advisory_xact_lock_shared(1397245510, (k >> 22)::integer)::text;
        -- Under READ COMMITTED this query takes a new snapshot, so it sees any range
        -- change that committed while we waited for the lock. Under REPEATABLE READ
        -- or SERIALIZABLE the snapshot may predate the lock: FOR SHARE then raises a
        -- serialization failure if the range changed since.
        IF current_setting('transaction_isolation') = 'read committed' THEN
            SELECT state INTO st FROM owned_ranges WHERE start_key <= k AND end_key > k;
        ELSE
            SELECT state INTO st FROM owned_ranges WHERE start_key <= k AND end_key > k FOR SHARE;
        END IF;
        IF st IS NULL THEN
            RAISE EXCEPTION 'shard_key % is not in a range owned by this shard', k
                USING ERRCODE = 'SLF01', HINT = 'refresh the range map and retry on the owner';
        ELSIF st <> 'active' THEN
            SELECT id, start_key, end_key INTO r FROM owned_ranges WHERE start_key <= k AND end_key > k;
            RAISE EXCEPTION 'range % [%, %) holding shard_key % is %', r.id, r.start_key, r.end_key, k, st
                USING ERRCODE = 'SLF02', HINT = 'the range is moving: retry after the map changes';
        END IF;
        done := set_config('shardline.fence_key', k::text, true);
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END $$;

-- Freeze / activate / mark incoming (the trigger above takes the locks).
CREATE FUNCTION shardline_set_range_state(rid bigint, new_state text) RETURNS owned_ranges
LANGUAGE plpgsql AS $$
DECLARE
    r owned_ranges;
BEGIN
    UPDATE owned_ranges SET state = new_state WHERE id = rid RETURNING * INTO r;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'range % is not owned by this shard', rid USING ERRCODE = 'SLF01';
    END IF;
    RETURN r;
END $$;

CREATE TABLE merchants (
    shard_key        bigint NOT NULL CHECK (shard_key BETWEEN 0 AND 4294967295),
    merchant_id      uuid NOT NULL,
    name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    default_currency char(3) NOT NULL CHECK (default_currency ~ '^[A-Z]{3}$'),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    version          bigint NOT NULL DEFAULT 1 CHECK (version >= 1),
    PRIMARY KEY (shard_key, merchant_id)
);

CREATE TABLE payments (
    shard_key        bigint NOT NULL CHECK (shard_key BETWEEN 0 AND 4294967295),
    merchant_id      uuid NOT NULL,
    payment_id       uuid NOT NULL,
    currency         char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    amount           numeric NOT NULL CHECK (amount > 0),
    captured_amount  numeric NOT NULL DEFAULT 0 CHECK (captured_amount >= 0),
    refunded_amount  numeric NOT NULL DEFAULT 0 CHECK (refunded_amount >= 0),
    status           text NOT NULL CHECK (status IN (
                         'authorized', 'captured', 'partially_refunded', 'refunded', 'voided')),
    reference        text CHECK (length(reference) <= 200),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    version          bigint NOT NULL DEFAULT 1 CHECK (version >= 1),
    PRIMARY KEY (shard_key, merchant_id, payment_id),
    CHECK (captured_amount <= amount),
    CHECK (refunded_amount <= captured_amount)
);

CREATE TABLE refunds (
    shard_key        bigint NOT NULL CHECK (shard_key BETWEEN 0 AND 4294967295),
    merchant_id      uuid NOT NULL,
    refund_id        uuid NOT NULL,
    payment_id       uuid NOT NULL,
    currency         char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    amount           numeric NOT NULL CHECK (amount > 0),
    created_at       timestamptz NOT NULL DEFAULT now(),
    version          bigint NOT NULL DEFAULT 1 CHECK (version >= 1),
    PRIMARY KEY (shard_key, merchant_id, refund_id)
);
CREATE INDEX refunds_by_payment ON refunds (shard_key, merchant_id, payment_id);

-- Double-entry ledger: the entries of one journal sum to zero per currency
-- (checked at commit), and entries are never updated or deleted by callers.
CREATE TABLE ledger_entries (
    shard_key        bigint NOT NULL CHECK (shard_key BETWEEN 0 AND 4294967295),
    merchant_id      uuid NOT NULL,
    journal_id       uuid NOT NULL,
    line             smallint NOT NULL CHECK (line >= 0),
    payment_id       uuid,
    account          text NOT NULL CHECK (account ~ '^[a-z][a-z_]{0,31}$'),
    currency         char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    amount           numeric NOT NULL CHECK (amount <> 0),
    kind             text NOT NULL CHECK (kind ~ '^[a-z][a-z_]{0,31}$'),
    created_at       timestamptz NOT NULL DEFAULT now(),
    version          bigint NOT NULL DEFAULT 1 CHECK (version >= 1),
    PRIMARY KEY (shard_key, journal_id, line)
);
CREATE INDEX ledger_by_merchant ON ledger_entries (shard_key, merchant_id, currency, account);

CREATE FUNCTION ledger_check_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    IF current_setting('shardline.ledger_checked', true) = NEW.journal_id::text THEN
        RETURN NULL;
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
    PERFORM set_config('shardline.ledger_checked', NEW.journal_id::text, true);
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER ledger_balanced AFTER INSERT ON ledger_entries
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_check_balanced();

CREATE FUNCTION ledger_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger entries are immutable' USING ERRCODE = 'SLL02';
END $$;
CREATE TRIGGER ledger_immutable BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_immutable();

-- Balances per merchant, currency and account: always equal to the ledger's sums.
CREATE TABLE balances (
    shard_key        bigint NOT NULL CHECK (shard_key BETWEEN 0 AND 4294967295),
    merchant_id      uuid NOT NULL,
    currency         char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    account          text NOT NULL CHECK (account ~ '^[a-z][a-z_]{0,31}$'),
    amount           numeric NOT NULL DEFAULT 0,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    version          bigint NOT NULL DEFAULT 1 CHECK (version >= 1),
    PRIMARY KEY (shard_key, merchant_id, currency, account)
);

-- Idempotency keys live with the merchant's data, so they move with it.
CREATE TABLE idempotency_keys (
    shard_key        bigint NOT NULL CHECK (shard_key BETWEEN 0 AND 4294967295),
    merchant_id      uuid NOT NULL,
    idem_key         text NOT NULL CHECK (length(idem_key) BETWEEN 1 AND 255),
    request_hash     bytea NOT NULL,
    method           text NOT NULL,
    path             text NOT NULL,
    state            text NOT NULL CHECK (state IN ('in_flight', 'done')),
    response_status  smallint,
    response_body    jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    version          bigint NOT NULL DEFAULT 1 CHECK (version >= 1),
    PRIMARY KEY (shard_key, merchant_id, idem_key),
    CHECK (state = 'in_flight' OR response_status IS NOT NULL)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);

-- Markers the move engine writes (not fenced: only the engine writes them). A
-- marker row written on the source after the fence, and seen on the target, proves
-- the target applied every earlier source commit of the range; edges use them to
-- order a merchant's rows across owners. shard_key is the range's start key so the
-- move's row-filtered publication carries it.
CREATE TABLE range_events (
    shard_key        bigint NOT NULL CHECK (shard_key BETWEEN 0 AND 4294967295),
    event_id         uuid NOT NULL,
    kind             text NOT NULL CHECK (kind IN ('cutover_marker', 'moved_in', 'moved_out')),
    range_id         bigint NOT NULL,
    start_key        bigint NOT NULL,
    end_key          bigint NOT NULL,
    epoch            bigint NOT NULL,
    move_id          uuid,
    source_shard     text,
    target_shard     text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    version          bigint NOT NULL DEFAULT 1 CHECK (version >= 1),
    PRIMARY KEY (shard_key, event_id)
);

-- Fence triggers. INSERT and DELETE carry a WHEN clause, evaluated by the executor
-- without entering PL/pgSQL, so the second and later rows of an already checked key
-- in a transaction cost one comparison. UPDATE always runs the function (it also
-- bumps version and guards the key columns).
CREATE TRIGGER merchants_fence_insert BEFORE INSERT ON merchants FOR EACH ROW
    WHEN (current_setting('shardline.fence_key', true) IS DISTINCT FROM NEW.shard_key::text)
    EXECUTE FUNCTION shardline_fence();
CREATE TRIGGER merchants_fence_update BEFORE UPDATE ON merchants FOR EACH ROW
    EXECUTE FUNCTION shardline_fence();
CREATE TRIGGER merchants_fence_delete BEFORE DELETE ON merchants FOR EACH ROW
    WHEN (current_setting('shardline.fence_key', true) IS DISTINCT FROM OLD.shard_key::text)
    EXECUTE FUNCTION shardline_fence();
CREATE TRIGGER payments_fence_insert BEFORE INSERT ON payments FOR EACH ROW
    WHEN (current_setting('shardline.fence_key', true) IS DISTINCT FROM NEW.shard_key::text)
    EXECUTE FUNCTION shardline_fence();
CREATE TRIGGER payments_fence_update BEFORE UPDATE ON payments FOR EACH ROW
    EXECUTE FUNCTION shardline_fence();
CREATE TRIGGER payments_fence_delete BEFORE DELETE ON payments FOR EACH ROW
    WHEN (current_setting('shardline.fence_key', true) IS DISTINCT FROM OLD.shard_key::text)
    EXECUTE FUNCTION shardline_fence();
CREATE TRIGGER refunds_fence_insert BEFORE INSERT ON refunds FOR EACH ROW
    WHEN (current_setting('shardline.fence_key', true) IS DISTINCT FROM NEW.shard_key::text)
    EXECUTE FUNCTION shardline_fence();
CREATE TRIGGER refunds_fence_update BEFORE UPDATE ON refunds FOR EACH ROW
    EXECUTE FUNCTION shardline_fence();
CREATE TRIGGER refunds_fence_delete BEFORE DELETE ON refunds FOR EACH ROW
    WHEN (current_setting('shardline.fence_key', true) IS DISTINCT FROM OLD.shard_key::text)
    EXECUTE FUNCTION shardline_fence();
CREATE TRIGGER ledger_entries_fence_insert BEFORE INSERT ON ledger_entries FOR EACH ROW
    WHEN (current_setting('shardline.fence_key', true) IS DISTINCT FROM NEW.shard_key::text)
    EXECUTE FUNCTION shardline_fence();
CREATE TRIGGER balances_fence_insert BEFORE INSERT ON balances FOR EACH ROW
    WHEN (current_setting('shardline.fence_key', true) IS DISTINCT FROM NEW.shard_key::text)
    EXECUTE FUNCTION shardline_fence();
CREATE TRIGGER balances_fence_update BEFORE UPDATE ON balances FOR EACH ROW
    EXECUTE FUNCTION shardline_fence();
CREATE TRIGGER balances_fence_delete BEFORE DELETE ON balances FOR EACH ROW
    WHEN (current_setting('shardline.fence_key', true) IS DISTINCT FROM OLD.shard_key::text)
    EXECUTE FUNCTION shardline_fence();
CREATE TRIGGER idempotency_keys_fence_insert BEFORE INSERT ON idempotency_keys FOR EACH ROW
    WHEN (current_setting('shardline.fence_key', true) IS DISTINCT FROM NEW.shard_key::text)
    EXECUTE FUNCTION shardline_fence();
CREATE TRIGGER idempotency_keys_fence_update BEFORE UPDATE ON idempotency_keys FOR EACH ROW
    EXECUTE FUNCTION shardline_fence();
CREATE TRIGGER idempotency_keys_fence_delete BEFORE DELETE ON idempotency_keys FOR EACH ROW
    WHEN (current_setting('shardline.fence_key', true) IS DISTINCT FROM OLD.shard_key::text)
    EXECUTE FUNCTION shardline_fence();
