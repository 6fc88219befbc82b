//! `shardline move`: move a key range (or the range holding a merchant) to another
//! shard online. Plans the move in the catalog; drives it with an in-process engine
//! when no rebalancer leads (e.g. no `shardline up` running), otherwise follows the
//! leader's progress. Prints each state and the phase timings.

use std::time::Duration;

use anyhow::Context;
use shardline_rebalancer::{Engine, Error, MoveState, Subject};
use sqlx::postgres::PgPoolOptions;

use crate::cli::MoveArgs;
use crate::local::catalog_url;

pub async fn run(args: MoveArgs) -> anyhow::Result<()> {
    let url = catalog_url(&args.catalog)?;
    let catalog = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(5))
        .connect(&url)
        .await
        .context("connecting to the catalog")?;
    let subject = match (args.range, &args.merchant) {
        (Some(r), None) => Subject::Range(r),
        (None, Some(m)) => Subject::Merchant(m.parse().context("--merchant")?),
        _ => anyhow::bail!("give exactly one of --range or --merchant"),
    };
    let id = shardline_rebalancer::plan_move(&catalog, subject, &args.to, "operator").await?;
    if !args.json {
        println!("move {id} planned");
    }
    let config = shardline_rebalancer::Config::new(url);
    let end = match Engine::new(catalog.clone(), config).await {
        Ok(engine) => engine.run_move(id).await?,
        Err(Error::NotLeader) => {
            if !args.json {
                println!("a rebalancer is running: following its progress");
            }
            let mut last = String::new();
            loop {
                let st: String = sqlx::query_scalar("SELECT state FROM moves WHERE id = $1")
                    .bind(id)
                    .fetch_one(&catalog)
                    .await?;
                if st != last && !args.json {
                    println!("  {st}");
                }
                let parsed: MoveState = st.parse()?;
                if parsed.is_terminal() {
                    break parsed;
                }
                last = st;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Err(e) => return Err(e.into()),
    };
    let (phase_ms, error): (serde_json::Value, Option<String>) =
        sqlx::query_as("SELECT phase_ms, error FROM moves WHERE id = $1")
            .bind(id)
            .fetch_one(&catalog)
            .await?;
    if args.json {
        let out = serde_json::json!({"id": id, "state": end.as_str(), "phase_ms": phase_ms, "error": error});
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("move {id}: {end}");
        if let Some(e) = &error {
            println!("  error: {e}");
        }
        println!("  phase_ms: {phase_ms}");
    }
    catalog.close().await;
    if end != MoveState::Done {
        anyhow::bail!("move {id} ended {end}");
    }
    Ok(())
}
