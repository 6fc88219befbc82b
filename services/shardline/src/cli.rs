//! Command-line surface. Every flag can also come from the environment (named in
//! `--help`), and `up` also reads a TOML file; see [`crate::config`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use shardline_core::telemetry::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "shardline",
    version,
    about = "Sharded transactional payments store on PostgreSQL"
)]
pub struct Cli {
    /// Log output format (filter with RUST_LOG).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "SHARDLINE_LOG_FORMAT"
    )]
    pub log_format: LogFormatArg,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}

impl From<LogFormatArg> for LogFormat {
    fn from(v: LogFormatArg) -> Self {
        match v {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a local cluster (catalog + shards as real PostgreSQL clusters, NATS
    /// JetStream, and every service) under ./.shardline; Ctrl-C stops it.
    Up(UpArgs),
    /// Serve the payments API (routes every merchant to its shard).
    Router(shardline_router::RouterArgs),
    /// Apply the embedded migrations to a catalog and/or shard databases.
    Migrate(MigrateArgs),
    /// Bootstrap a catalog against existing databases (idempotent, run it on
    /// every deploy): migrate, register shards, seed the range map and the shards'
    /// owned ranges, optionally import an admin key.
    Init(InitArgs),
    /// Shards, ranges and epochs of a cluster.
    Status(StatusArgs),
    /// Manage API keys.
    Keys(KeysArgs),
    /// Benchmarks (each prints its same-run baseline and the ratio).
    Bench(BenchArgs),
    /// Production-shaped open-loop load with an invariant verifier at the end
    /// (against a running system, or a throwaway one with --local).
    Loadtest(Box<crate::loadtest::LoadtestArgs>),
    /// Stream one shard's committed transactions to NATS JetStream (CDC).
    Replicator(crate::cdc::ReplicatorArgs),
    /// Serve edge reads from the CDC stream (embedded store, 127.0.0.1:8090).
    Edge(crate::cdc::EdgeArgs),
    /// Run the rebalancer: the leader-elected move engine and its admin API
    /// (127.0.0.1:8070).
    Rebalancer(crate::rebalancer::RebalancerArgs),
    #[command(flatten)]
    Admin(crate::admin_cli::AdminCommand),
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// TOML file with any of the settings below (flags and env win over it).
    #[arg(long, env = "SHARDLINE_UP_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where cluster data lives (kept across restarts).
    #[arg(long, env = "SHARDLINE_DIR")]
    pub dir: Option<PathBuf>,
    /// Number of shard clusters (1-16) when the cluster is first created.
    #[arg(long, env = "SHARDLINE_SHARDS")]
    pub shards: Option<u32>,
    /// Ranges per shard in the initial even map (1-256).
    #[arg(long, env = "SHARDLINE_RANGES_PER_SHARD")]
    pub ranges_per_shard: Option<u32>,
    /// Port of the catalog PostgreSQL (default: a free one, then kept).
    #[arg(long, env = "SHARDLINE_CATALOG_PORT")]
    pub catalog_port: Option<u16>,
    /// Port of the NATS server (default: a free one, then kept).
    #[arg(long, env = "SHARDLINE_NATS_PORT")]
    pub nats_port: Option<u16>,
    /// Number of edges (1-16): separate stores (`<dir>/edge`, `<dir>/edge-2`, ...)
    /// on consecutive ports from 127.0.0.1:8090 (`SHARDLINE_EDGE_LISTEN`).
    #[arg(long, env = "SHARDLINE_EDGES")]
    pub edges: Option<u32>,
    /// Wipe the data directory first.
    #[arg(long)]
    pub fresh: bool,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Catalog database URL.
    #[arg(long, env = "SHARDLINE_CATALOG_URL")]
    pub catalog: Option<String>,
    /// Shard database URL (repeat for each shard).
    #[arg(long = "shard")]
    pub shards: Vec<String>,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Catalog database URL.
    #[arg(long, env = "SHARDLINE_CATALOG_URL")]
    pub catalog: Option<String>,
    /// A shard as ID=URL (repeat for each shard; in the environment, separate
    /// them by spaces).
    #[arg(
        long = "shard",
        value_name = "ID=URL",
        env = "SHARDLINE_INIT_SHARDS",
        value_delimiter = ' '
    )]
    pub shards: Vec<String>,
    /// Ranges per shard when the catalog has no range map yet (1-256, default 4).
    #[arg(long, env = "SHARDLINE_RANGES_PER_SHARD")]
    pub ranges_per_shard: Option<u32>,
    /// Import the admin API key (sl_<12 hex>_<64 hex>) held by this environment
    /// variable, unless it is already stored. Without it no key is created.
    #[arg(long, value_name = "VAR", env = "SHARDLINE_INIT_ADMIN_KEY_ENV")]
    pub admin_key_env: Option<String>,
    /// Machine-readable summary.
    #[arg(long)]
    pub json: bool,
}

/// Where to find the catalog: an explicit URL, or the local cluster of `up`.
#[derive(Debug, Clone, Args)]
pub struct CatalogArgs {
    /// Catalog database URL (default: the local cluster's, from <dir>/cluster.json).
    #[arg(long, global = true, env = "SHARDLINE_CATALOG_URL")]
    pub catalog: Option<String>,
    /// Local cluster directory, when --catalog is not given.
    #[arg(
        long,
        global = true,
        env = "SHARDLINE_DIR",
        default_value = ".shardline"
    )]
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub catalog: CatalogArgs,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(flatten)]
    pub catalog: CatalogArgs,
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; its secret is printed once.
    Create {
        /// A name to recognise the key by.
        #[arg(long)]
        name: String,
        /// `admin` or `payments`.
        #[arg(long)]
        scope: String,
        /// Restrict a `payments` key to one merchant.
        #[arg(long)]
        merchant: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List keys (never their secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by id.
    Revoke { id: String },
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Throughput of a payment-shaped write transaction (1 payment + 2 ledger rows)
    /// with and without the fencing triggers, on one local cluster.
    Fencing(crate::bench::fencing::FencingArgs),
    /// Payments create+capture through the router (HTTP, in process) vs the same
    /// shard transactions issued directly, at the same concurrency.
    Router(crate::bench::router::RouterBenchArgs),
    /// Online moves of one range round three shards under open-loop router load:
    /// write pause, client latency during vs outside moves, copy vs plain COPY.
    Move(crate::bench::moves::MoveBenchArgs),
    /// Edge replication and reads: commit -> edge applied under router writes vs
    /// a JetStream publish+ack, Store::get (no cache, cached) vs raw redb, edge vs
    /// router HTTP reads.
    Edge(crate::bench::edge::EdgeBenchArgs),
}
