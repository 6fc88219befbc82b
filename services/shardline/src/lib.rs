//! The `shardline` binary: one executable for every role.
//!
//! `main` only parses the command line and dispatches; each command lives in its
//! own module and every service crate exposes `Config` + `run(config, shutdown)`.

pub mod admin_cli;
pub mod bench;
pub mod bootstrap;
pub mod cdc;
pub mod cli;
pub mod config;
pub mod init;
pub mod keys;
pub mod loadtest;
pub mod local;
pub mod migrate;
pub mod policy_cli;
pub mod rebalancer;
pub mod restartable;
pub mod status;
pub mod up;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::config::ConfigError;

/// Exit code for invalid configuration or usage (as clap uses for bad flags).
pub const EXIT_CONFIG: u8 = 2;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Inside the runtime: the OTLP exporter (when OTEL_EXPORTER_OTLP_ENDPOINT is set) needs it.
    let _telemetry =
        runtime.block_on(async { shardline_router::telemetry::init(cli.log_format.into()) });
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if let Some(cfg) = err.downcast_ref::<ConfigError>() {
                eprintln!("error: {cfg}");
                return ExitCode::from(EXIT_CONFIG);
            }
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Up(args) => up::run(up::UpConfig::from_args(args)?).await,
        Command::Router(args) => {
            let config = shardline_router::Config::from_args(args)?;
            let shutdown = tokio_util::sync::CancellationToken::new();
            up::spawn_signal_handler(shutdown.clone());
            Ok(shardline_router::run(config, shutdown).await?)
        }
        Command::Migrate(args) => migrate::run(migrate::MigrateConfig::from_args(args)?).await,
        Command::Init(args) => init::run(init::InitConfig::from_args(args)?).await,
        Command::Status(args) => status::run(args).await,
        Command::Keys(args) => keys::run(args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Loadtest(args) => loadtest::run(*args).await,
        Command::Replicator(args) => cdc::run_replicator(args).await,
        Command::Edge(args) => cdc::run_edge(args).await,
        Command::Rebalancer(args) => rebalancer::run(args).await,
        Command::Admin(cmd) => {
            if admin_cli::run(cmd).await? {
                Ok(())
            } else {
                Err(anyhow::anyhow!("the move did not complete"))
            }
        }
    }
}
