-- Per-move change log. While a range moves, the move engine creates AFTER ROW
-- triggers on the source (named after the move, WHEN the key is in the range)
-- that record which rows of the range the source wrote, with the writer's 64-bit
-- transaction id. Verification then reads the rows written since a transaction
-- horizon from here, O(changes), instead of scanning the range for xmin
-- (docs/moves.md). Not published, not fenced; emptied when the move ends.
CREATE TABLE move_changes (
    move_id      uuid NOT NULL,
    xid          bigint NOT NULL DEFAULT txid_current(),
    tbl          text NOT NULL,
    -- the primary key as canonical jsonb text (what verification compares by)
    k            text NOT NULL,
    merchant_id  uuid
);
CREATE INDEX move_changes_by_move ON move_changes (move_id, tbl, xid);

-- TG_ARGV[0]: move id; TG_ARGV[1]: the table's primary key columns, comma-separated.
CREATE FUNCTION shardline_move_log() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r jsonb;
BEGIN
    IF TG_OP = 'DELETE' THEN
        r := to_jsonb(OLD);
    ELSE
        r := to_jsonb(NEW);
    END IF;
    INSERT INTO move_changes (move_id, tbl, k, merchant_id)
    SELECT TG_ARGV[0]::uuid, TG_TABLE_NAME, jsonb_object_agg(c, r -> c)::text,
           (r ->> 'merchant_id')::uuid
      FROM unnest(string_to_array(TG_ARGV[1], ',')) AS c;
    RETURN NULL;
END $$;
