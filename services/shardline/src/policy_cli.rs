//! `shardline policy pause|resume|dry-run|status|explain`: the autonomous
//! policy's controls over the rebalancer admin API.

use clap::{Args, Subcommand};
use hyper::Method;
use serde_json::Value;

use crate::admin_cli::{Api, ApiArgs};

#[derive(Debug, Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    pub verb: PolicyVerb,
}

#[derive(Debug, Subcommand)]
pub enum PolicyVerb {
    /// Stop deciding (moves in flight finish; nothing new starts).
    Pause(ApiArgs),
    /// Decide and act again.
    Resume(ApiArgs),
    /// Decide and record every decision, but execute nothing.
    DryRun(ApiArgs),
    /// Mode, leader, last round and the knobs.
    Status(ApiArgs),
    /// Recent decisions with their reasons, newest first.
    Explain(ExplainArgs),
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// How many decisions (1-1000).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(i64).range(1..=1000))]
    pub limit: i64,
    /// Only taken decisions (moves, isolations, merges).
    #[arg(long)]
    pub taken: bool,
    /// Only this reason code (e.g. not_sustained, isolate_dominant_merchant).
    #[arg(long)]
    pub reason: Option<String>,
    /// Also print each decision's inputs (loads, thresholds, predictions).
    #[arg(long)]
    pub inputs: bool,
}

fn status_text(v: &Value) {
    let s = |k: &str| v[k].as_str().unwrap_or("-").to_owned();
    println!("mode:        {}", s("mode"));
    println!(
        "changed:     {} by {}",
        s("changed_at"),
        v["changed_by"].as_str().unwrap_or("-")
    );
    println!("leader:      {}", s("leader"));
    println!(
        "last round:  {} ({} ms)",
        s("last_round_at"),
        v["last_round_ms"]
            .as_i64()
            .map_or("-".into(), |m| m.to_string())
    );
    if let Some(e) = v["last_error"].as_str() {
        println!("last error:  {e}");
    }
    if let Some(cfg) = v["config"].as_object() {
        println!("knobs:");
        for (k, val) in cfg {
            println!("  {k:<22} {val}");
        }
    }
}

fn decision_line(d: &Value, inputs: bool) {
    let text = d["decision"]["explanation"].as_str().unwrap_or("");
    let mut line = format!(
        "#{} {} {}{} [{}] {}",
        d["id"],
        d["at"].as_str().unwrap_or("?"),
        d["kind"].as_str().unwrap_or("?"),
        if d["dry_run"].as_bool() == Some(true) {
            " (dry run)"
        } else {
            ""
        },
        d["reason"].as_str().unwrap_or("?"),
        text
    );
    if let Some(m) = d["move_id"].as_str() {
        line.push_str(&format!(" -> move {m}"));
    }
    if let Some(e) = d["decision"]["error"].as_str() {
        line.push_str(&format!(" (failed: {e})"));
    }
    println!("{line}");
    if inputs {
        println!("    inputs: {}", d["decision"]["inputs"]);
    }
}

pub async fn run(a: PolicyArgs) -> anyhow::Result<bool> {
    let (api_args, path, method) = match &a.verb {
        PolicyVerb::Pause(x) => (x, "/v1/policy/pause".to_owned(), Method::POST),
        PolicyVerb::Resume(x) => (x, "/v1/policy/resume".to_owned(), Method::POST),
        PolicyVerb::DryRun(x) => (x, "/v1/policy/dry-run".to_owned(), Method::POST),
        PolicyVerb::Status(x) => (x, "/v1/policy".to_owned(), Method::GET),
        PolicyVerb::Explain(e) => {
            let mut q = format!("/v1/decisions?limit={}", e.limit);
            if e.taken {
                q.push_str("&taken=true");
            }
            if let Some(r) = &e.reason {
                // Reason codes are [a-z_]; anything else is rejected by the API.
                let safe: String = r
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                q.push_str(&format!("&reason={safe}"));
            }
            (&e.api, q, Method::GET)
        }
    };
    let api = Api::new(api_args)?;
    let v = api.call(method, &path, None).await?;
    match &a.verb {
        PolicyVerb::Explain(e) => api.print(&v, |v| {
            let rows = v.as_array().cloned().unwrap_or_default();
            if rows.is_empty() {
                println!("no decisions recorded yet");
            }
            for d in rows.iter().rev() {
                decision_line(d, e.inputs);
            }
        })?,
        _ => api.print(&v, status_text)?,
    }
    Ok(true)
}
