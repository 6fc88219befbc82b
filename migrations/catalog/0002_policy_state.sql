-- The autonomous policy's persisted state (one row). The leader's loop reads
-- `mode` every round; any rebalancer (leader or standby) may change it through
-- the admin API, so pause/resume survive restarts and leader changes.
--   active  : decisions are stored and taken ones executed
--   dry_run : decisions are stored (decisions.dry_run = true), nothing executed
--   paused  : no decision round runs
CREATE TABLE policy_state (
    singleton       boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    mode            text NOT NULL DEFAULT 'active' CHECK (mode IN ('active', 'dry_run', 'paused')),
    changed_by      text,
    changed_at      timestamptz NOT NULL DEFAULT now(),
    -- written by the leader's loop each round
    leader          text,
    last_round_at   timestamptz,
    last_round_ms   integer,
    last_error      text,
    config          jsonb NOT NULL DEFAULT '{}'::jsonb
);
INSERT INTO policy_state DEFAULT VALUES;

CREATE INDEX decisions_taken_at ON decisions (at DESC) WHERE taken;
