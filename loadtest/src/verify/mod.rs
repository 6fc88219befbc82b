//! The end-of-run verifier: reads the catalog, every shard and (optionally) the
//! edges, and lists every broken invariant. A run passes only with none.
//!
//! Invariants (DESIGN.md section 10, docs/loadtest.md):
//! 1. every acknowledged write exists exactly once, on the shard owning its key;
//! 2. no shard holds rows of a range it does not own (ranges of moves still in
//!    flight may be on both ends and are skipped, and counted);
//! 3. every ledger journal sums to zero per currency, and balances equal the
//!    ledger sums per (merchant, currency, account);
//! 4. every edge returns what the owning shard holds for each acknowledged
//!    payment and merchant balance;
//! 5. no replication slot, publication, subscription or origin outlives its
//!    move, and nothing but the shard's CDC slot and publication exists besides.
//!
//! Unacknowledged writes (timeouts, 5xx: the client does not know the outcome) are
//! looked up too and reported separately: present once or absent are both fine,
//! present twice is a violation.

mod edge;
mod shards;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shardline_core::catalog::{self, CatalogError, RangeRow};
use shardline_core::{MerchantId, RangeMap};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

pub use edge::EdgeTarget;

/// A write whose outcome the client knows (acknowledged) or does not know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Write {
    Merchant {
        merchant: MerchantId,
    },
    Payment {
        merchant: MerchantId,
        payment: Uuid,
    },
    Refund {
        merchant: MerchantId,
        payment: Uuid,
        refund: Uuid,
    },
}

impl Write {
    pub fn merchant(&self) -> &MerchantId {
        match self {
            Write::Merchant { merchant }
            | Write::Payment { merchant, .. }
            | Write::Refund { merchant, .. } => merchant,
        }
    }

    /// (table, id column, id) of the row this write created.
    fn row(&self) -> (&'static str, &'static str, Uuid) {
        match self {
            Write::Merchant { merchant } => ("merchants", "merchant_id", *merchant.as_uuid()),
            Write::Payment { payment, .. } => ("payments", "payment_id", *payment),
            Write::Refund { refund, .. } => ("refunds", "refund_id", *refund),
        }
    }
}

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Violation {
    /// An acknowledged write is on no shard.
    Lost { write: Write, owner: String },
    /// A write exists more than once (on one or several shards).
    Duplicate {
        write: Write,
        copies: BTreeMap<String, i64>,
    },
    /// An acknowledged write exists once, but not on the owner.
    WrongShard {
        write: Write,
        owner: String,
        found_on: String,
    },
    /// Rows of keys the shard does not own.
    Misplaced {
        shard: String,
        table: String,
        rows: i64,
        example_key: i64,
    },
    /// A journal whose entries do not sum to zero in a currency.
    UnbalancedJournal {
        shard: String,
        journal: Uuid,
        currency: String,
        sum: String,
    },
    /// A balance row that differs from the ledger's sum.
    BalanceMismatch {
        shard: String,
        merchant: Uuid,
        currency: String,
        account: String,
        ledger: String,
        balance: String,
    },
    /// An edge answered differently from the owning shard (after waiting).
    EdgeMismatch {
        edge: String,
        path: String,
        detail: String,
    },
    /// A replication object no move or replicator accounts for.
    Orphan {
        shard: String,
        object: String,
        name: String,
    },
}

/// What the verifier looked at, besides violations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Checked {
    pub acked: usize,
    pub shards: usize,
    pub rows_by_table: BTreeMap<String, i64>,
    pub journals: i64,
    pub edge_reads: usize,
    /// Moves not yet `done`/`aborted` when the verifier ran: their ranges were
    /// skipped by the placement check.
    pub moves_in_flight: usize,
}

/// An unacknowledged write and how many copies exist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnackedOutcome {
    pub write: Write,
    pub copies: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub violations: Vec<Violation>,
    pub checked: Checked,
    pub unacked: Vec<UnackedOutcome>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("catalog: {0}")]
    Catalog(#[from] CatalogError),
    #[error("database {what}: {source}")]
    Db {
        what: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("the catalog lists no shards")]
    NoShards,
    #[error("edge {url}: {detail}")]
    Edge { url: String, detail: String },
}

pub(crate) fn db(what: impl Into<String>) -> impl FnOnce(sqlx::Error) -> VerifyError {
    let what = what.into();
    move |source| VerifyError::Db { what, source }
}

/// Where to look.
#[derive(Debug, Clone)]
pub struct Target {
    pub catalog_url: String,
    pub edges: Vec<EdgeTarget>,
    /// How long an edge may take to show what the shard holds.
    pub edge_wait: Duration,
}

/// Everything the verifier reads, loaded once.
pub(crate) struct World {
    pub map: RangeMap,
    pub ranges: Vec<RangeRow>,
    pub shards: Vec<(String, PgPool)>,
    /// [start, end) of ranges whose moves are in flight.
    pub moving: Vec<(i64, i64)>,
    /// Names of replication objects moves in flight may own.
    pub move_objects: Vec<String>,
}

impl World {
    async fn load(catalog_url: &str) -> Result<World, VerifyError> {
        let catalog = PgPoolOptions::new()
            .max_connections(2)
            .connect(catalog_url)
            .await
            .map_err(db("connect catalog"))?;
        let map = catalog::load_range_map(&catalog).await?;
        let ranges = catalog::list_ranges(&catalog).await?;
        let rows = catalog::list_shards(&catalog).await?;
        if rows.is_empty() {
            return Err(VerifyError::NoShards);
        }
        let in_flight: Vec<(i64, i64, String, String, String)> = sqlx::query_as(
            "SELECT start_key, end_key, publication, slot, subscription FROM moves
              WHERE state NOT IN ('done', 'aborted')",
        )
        .fetch_all(&catalog)
        .await
        .map_err(db("list moves"))?;
        catalog.close().await;
        let mut shards = Vec::new();
        for s in rows {
            let pool = PgPoolOptions::new()
                .max_connections(2)
                .connect(&s.dsn)
                .await
                .map_err(db(format!("connect shard {}", s.id)))?;
            shards.push((s.id, pool));
        }
        let moving = in_flight.iter().map(|m| (m.0, m.1)).collect();
        let move_objects = in_flight
            .into_iter()
            .flat_map(|(_, _, p, s, sub)| [p, s, sub])
            .collect();
        Ok(World {
            map,
            ranges,
            shards,
            moving,
            move_objects,
        })
    }

    pub fn in_flight(&self, key: i64) -> bool {
        self.moving.iter().any(|&(s, e)| s <= key && key < e)
    }
}

/// Run every check. `acked` and `unacked` come from the load generator.
pub async fn verify(
    target: &Target,
    acked: &[Write],
    unacked: &[Write],
) -> Result<Report, VerifyError> {
    let world = World::load(&target.catalog_url).await?;
    let mut violations = Vec::new();
    let mut checked = Checked {
        acked: acked.len(),
        shards: world.shards.len(),
        moves_in_flight: world.moving.len(),
        ..Checked::default()
    };
    shards::exactly_once(&world, acked, &mut violations).await?;
    let unacked = shards::unacked(&world, unacked, &mut violations).await?;
    shards::placement(&world, &mut checked, &mut violations).await?;
    shards::ledger(&world, &mut checked, &mut violations).await?;
    shards::orphans(&world, &mut violations).await?;
    for e in &target.edges {
        checked.edge_reads +=
            edge::compare(e, &world, acked, target.edge_wait, &mut violations).await?;
    }
    for (_, p) in &world.shards {
        p.close().await;
    }
    Ok(Report {
        violations,
        checked,
        unacked,
    })
}
