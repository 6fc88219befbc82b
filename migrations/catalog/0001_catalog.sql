-- Shardline catalog: shards, the range map, moves, load history, decisions, API keys.
--
-- The range map is the source of truth for placement. The database itself enforces
-- that ranges never overlap (exclusion constraint) and, at commit, that they cover
-- the whole key space [0, 2^32) with no gap (deferred constraint trigger). Every
-- change to a range takes a fresh epoch from one sequence, so the map epoch is
-- max(epoch) and routers can tell which of two maps is newer. Every change sends
-- NOTIFY shardline_map with the new map epoch.

CREATE TABLE shards (
    id          text PRIMARY KEY CHECK (id ~ '^[a-z][a-z0-9-]{0,31}$'),
    dsn         text NOT NULL,
    state       text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'draining', 'down')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE SEQUENCE map_epoch_seq;
CREATE SEQUENCE range_id_seq;

CREATE TABLE ranges (
    id          bigint PRIMARY KEY DEFAULT nextval('range_id_seq'),
    start_key   bigint NOT NULL,
    end_key     bigint NOT NULL,
    shard_id    text NOT NULL REFERENCES shards (id),
    epoch       bigint NOT NULL,
    -- 'moving' while a move holds the range: routers hold writes that are fenced.
    state       text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'moving')),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (start_key >= 0 AND end_key <= 4294967296 AND start_key < end_key),
    EXCLUDE USING gist (int8range(start_key, end_key) WITH &&)
);
CREATE UNIQUE INDEX ranges_start_key ON ranges (start_key);

-- Every insert or update of a range takes a new, globally increasing epoch.
CREATE FUNCTION ranges_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.epoch := nextval('map_epoch_seq');
    NEW.updated_at := now();
    RETURN NEW;
END $$;
CREATE TRIGGER ranges_stamp BEFORE INSERT OR UPDATE ON ranges
    FOR EACH ROW EXECUTE FUNCTION ranges_stamp();

-- At commit: the ranges must cover [0, 2^32) exactly (overlap is already excluded,
-- so full coverage <=> total length is 2^32). Runs once per transaction.
CREATE FUNCTION ranges_check_coverage() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    total numeric;
    n bigint;
BEGIN
    IF current_setting('shardline.coverage_checked', true) = txid_current()::text THEN
        RETURN NULL;
    END IF;
    SELECT coalesce(sum(end_key - start_key), 0), count(*) INTO total, n FROM ranges;
    IF n > 0 AND total <> 4294967296 THEN
        RAISE EXCEPTION 'range map must cover [0, 2^32) without gaps (covered % keys)', total
            USING ERRCODE = 'SLM01';
    END IF;
    PERFORM set_config('shardline.coverage_checked', txid_current()::text, true);
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER ranges_coverage AFTER INSERT OR UPDATE OR DELETE ON ranges
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ranges_check_coverage();

CREATE FUNCTION ranges_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('shardline_map', (SELECT coalesce(max(epoch), 0) FROM ranges)::text);
    RETURN NULL;
END $$;
CREATE TRIGGER ranges_notify AFTER INSERT OR UPDATE OR DELETE ON ranges
    FOR EACH STATEMENT EXECUTE FUNCTION ranges_notify();

-- Moves: a persisted state machine; move_events is its append-only audit log.
CREATE TABLE moves (
    id              uuid PRIMARY KEY,
    range_id        bigint NOT NULL,
    start_key       bigint NOT NULL,
    end_key         bigint NOT NULL,
    source_shard    text NOT NULL REFERENCES shards (id),
    target_shard    text NOT NULL REFERENCES shards (id),
    state           text NOT NULL DEFAULT 'planned' CHECK (state IN (
                        'planned', 'copying', 'catching_up', 'verifying', 'cutover',
                        'switched', 'cleaning', 'done', 'aborting', 'aborted')),
    reason          text NOT NULL DEFAULT 'operator',
    requested_by    text,
    abort_requested boolean NOT NULL DEFAULT false,
    error           text,
    -- names of what the move created on the shards, derived from the id
    publication     text NOT NULL,
    slot            text NOT NULL,
    subscription    text NOT NULL,
    cutover_lsn     pg_lsn,
    phase_ms        jsonb NOT NULL DEFAULT '{}'::jsonb,
    stats           jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    CHECK (source_shard <> target_shard),
    CHECK (start_key >= 0 AND end_key <= 4294967296 AND start_key < end_key)
);
-- At most one unfinished move per range.
CREATE UNIQUE INDEX moves_one_active_per_range ON moves (range_id)
    WHERE state NOT IN ('done', 'aborted');
CREATE INDEX moves_unfinished ON moves (created_at) WHERE state NOT IN ('done', 'aborted');

CREATE TABLE move_events (
    id          bigserial PRIMARY KEY,
    move_id     uuid NOT NULL REFERENCES moves (id),
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    from_state  text,
    to_state    text NOT NULL,
    detail      jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX move_events_by_move ON move_events (move_id, id);

CREATE FUNCTION append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = 'SLA01';
END $$;
CREATE TRIGGER move_events_append_only BEFORE UPDATE OR DELETE ON move_events
    FOR EACH ROW EXECUTE FUNCTION append_only();

-- Load reported by routers every interval, per range (and the heaviest merchants).
CREATE TABLE load_samples (
    id              bigserial PRIMARY KEY,
    router_id       text NOT NULL,
    at              timestamptz NOT NULL,
    interval_ms     integer NOT NULL CHECK (interval_ms > 0),
    range_id        bigint NOT NULL,
    start_key       bigint NOT NULL,
    end_key         bigint NOT NULL,
    shard_id        text NOT NULL,
    requests        bigint NOT NULL DEFAULT 0 CHECK (requests >= 0),
    writes          bigint NOT NULL DEFAULT 0 CHECK (writes >= 0),
    rows_touched    bigint NOT NULL DEFAULT 0 CHECK (rows_touched >= 0),
    bytes           bigint NOT NULL DEFAULT 0 CHECK (bytes >= 0),
    latency_us_sum  bigint NOT NULL DEFAULT 0 CHECK (latency_us_sum >= 0),
    latency_us_max  bigint NOT NULL DEFAULT 0 CHECK (latency_us_max >= 0),
    -- [{"merchant_id": "...", "shard_key": n, "count": n, "error": n}, ...]
    heavy_hitters   jsonb NOT NULL DEFAULT '[]'::jsonb
);
CREATE INDEX load_samples_at ON load_samples (at);
CREATE INDEX load_samples_range_at ON load_samples (range_id, at);

-- Every policy decision, taken or declined, with its inputs and reason.
CREATE TABLE decisions (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    kind        text NOT NULL,
    taken       boolean NOT NULL,
    dry_run     boolean NOT NULL DEFAULT false,
    reason      text NOT NULL,
    range_id    bigint,
    move_id     uuid REFERENCES moves (id),
    inputs      jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX decisions_at ON decisions (at DESC);

-- API keys: only a SHA-256 of the secret is stored; the prefix identifies the key.
CREATE TABLE api_keys (
    id          uuid PRIMARY KEY,
    prefix      text NOT NULL UNIQUE,
    secret_hash bytea NOT NULL CHECK (octet_length(secret_hash) = 32),
    name        text NOT NULL,
    scope       text NOT NULL CHECK (scope IN ('payments', 'admin')),
    merchant_id uuid,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    CHECK (scope = 'payments' OR merchant_id IS NULL)
);
