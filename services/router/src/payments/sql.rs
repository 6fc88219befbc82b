//! The shard SQL of the router (prepared per connection with `prepare_cached`).
//! Parameters `$1` = shard_key (bigint), `$2` = merchant_id (uuid) throughout.

/// The state of the owned range holding a key (NULL: not owned) and the
/// transaction timestamp. Reads are not fenced by triggers, so every operation
/// checks ownership this way before trusting what it reads (a 404 from a shard that
/// no longer owns the merchant would be a lie).
pub const OWNED: &str =
    "SELECT (SELECT state FROM owned_ranges WHERE start_key <= $1 AND end_key > $1), now()";

pub const TRY_LOCK: &str = "SELECT pg_try_advisory_xact_lock($1)";

pub const SELECT_IDEM: &str =
    "SELECT request_hash, response_status, response_body FROM idempotency_keys
     WHERE shard_key = $1 AND merchant_id = $2 AND idem_key = $3 AND expires_at > now()";

/// An expired key that cleanup has not deleted yet is replaced.
pub const INSERT_IDEM: &str = "INSERT INTO idempotency_keys
       (shard_key, merchant_id, idem_key, request_hash, method, path, state,
        response_status, response_body, expires_at)
     VALUES ($1, $2, $3, $4, $5, $6, 'done', $7, $8, now() + make_interval(secs => $9))
     ON CONFLICT (shard_key, merchant_id, idem_key) DO UPDATE
       SET request_hash = EXCLUDED.request_hash, method = EXCLUDED.method,
           path = EXCLUDED.path, state = 'done', response_status = EXCLUDED.response_status,
           response_body = EXCLUDED.response_body, created_at = now(),
           expires_at = EXCLUDED.expires_at
     WHERE idempotency_keys.expires_at <= now()";

pub const DELETE_EXPIRED_IDEM: &str = "DELETE FROM idempotency_keys WHERE ctid = ANY (ARRAY(
       SELECT ctid FROM idempotency_keys WHERE expires_at <= now() LIMIT $1))";

pub const INSERT_MERCHANT: &str =
    "INSERT INTO merchants (shard_key, merchant_id, name, default_currency)
     VALUES ($1, $2, $3, $4) RETURNING created_at, version";

pub const SELECT_MERCHANT: &str =
    "SELECT name, default_currency, created_at, version FROM merchants
     WHERE shard_key = $1 AND merchant_id = $2";

pub const CURRENT_LSN: &str = "SELECT pg_current_wal_flush_lsn()::text";

const PAYMENT_COLS: &str = "payment_id, currency, amount, captured_amount, refunded_amount, status, reference, created_at, updated_at, version";

pub fn select_payment() -> String {
    format!(
        "SELECT {PAYMENT_COLS} FROM payments WHERE shard_key = $1 AND merchant_id = $2 AND payment_id = $3"
    )
}

pub fn select_payment_for_update() -> String {
    format!("{} FOR UPDATE", select_payment())
}

/// Keyset page: `$3` = the last payment id of the previous page (nil UUID: none),
/// `$4` = rows to fetch (limit + 1, to know whether there is more).
pub fn list_payments() -> String {
    format!(
        "SELECT {PAYMENT_COLS} FROM payments WHERE shard_key = $1 AND merchant_id = $2 AND payment_id > $3
         ORDER BY payment_id LIMIT $4"
    )
}

pub const INSERT_PAYMENT: &str =
    "INSERT INTO payments (shard_key, merchant_id, payment_id, currency, amount, status, reference)
     VALUES ($1, $2, $3, $4, $5, 'authorized', $6)";

/// `$4` new status, `$5` captured, `$6` refunded, `$7` the status it must still have.
pub const UPDATE_PAYMENT: &str = "UPDATE payments SET status = $4, captured_amount = $5, refunded_amount = $6, updated_at = now()
     WHERE shard_key = $1 AND merchant_id = $2 AND payment_id = $3 AND status = $7";

pub const INSERT_REFUND: &str =
    "INSERT INTO refunds (shard_key, merchant_id, refund_id, payment_id, currency, amount)
     VALUES ($1, $2, $3, $4, $5, $6)";

/// One journal: `$3` journal id, `$4` payment id, `$5` currency, `$6` kind, then
/// the lines' accounts and amounts as arrays.
pub const INSERT_LEDGER: &str = "INSERT INTO ledger_entries
       (shard_key, merchant_id, journal_id, line, payment_id, account, currency, amount, kind)
     SELECT $1, $2, $3, (t.ord - 1)::smallint, $4, t.account, $5, t.amount, $6
       FROM unnest($7::text[], $8::numeric[]) WITH ORDINALITY AS t(account, amount, ord)";

/// Balance deltas (accounts distinct and sorted: a fixed row-lock order).
pub const UPSERT_BALANCES: &str = "INSERT INTO balances (shard_key, merchant_id, currency, account, amount)
     SELECT $1, $2, $3, t.account, t.amount FROM unnest($4::text[], $5::numeric[]) AS t(account, amount)
     ON CONFLICT (shard_key, merchant_id, currency, account) DO UPDATE
       SET amount = balances.amount + EXCLUDED.amount, updated_at = now()";

pub const SELECT_BALANCES: &str = "SELECT currency, account, amount FROM balances
     WHERE shard_key = $1 AND merchant_id = $2 ORDER BY currency, account";
