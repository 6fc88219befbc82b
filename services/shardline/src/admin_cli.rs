//! Operator verbs over the rebalancer's admin API: `move`, `isolate`, `split`,
//! `merge`, `abort`, `moves`. Each is one HTTP call (plus, for `move`, following
//! the move until it ends, with a progress spinner); `--json` prints the API's
//! JSON instead. Errors from the API are problem+json and printed as
//! `error [code]: detail` with exit code 1; bad settings exit 2.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use crate::config::ConfigError;
use crate::local::{LocalCluster, admin_key_path};

/// Where the admin API is and the key to call it with.
#[derive(Debug, Args, Clone)]
pub struct ApiArgs {
    /// Rebalancer admin API base URL (default: the local cluster's, else
    /// http://127.0.0.1:8070).
    #[arg(long = "rebalancer", env = "SHARDLINE_REBALANCER_URL")]
    pub url: Option<String>,
    /// Admin API key (default: the local cluster's `<dir>/admin.key`).
    #[arg(long, env = "SHARDLINE_API_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// Local cluster directory (for the defaults above).
    #[arg(long, env = "SHARDLINE_DIR", default_value = ".shardline")]
    pub dir: PathBuf,
    /// Print the API's JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct MoveArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// Catalog range id to move.
    #[arg(
        long,
        conflicts_with = "merchant",
        required_unless_present = "merchant"
    )]
    pub range: Option<i64>,
    /// Move the range holding this merchant's shard key.
    #[arg(long)]
    pub merchant: Option<String>,
    /// Target shard id.
    #[arg(long)]
    pub to: String,
    /// Why (recorded with the move).
    #[arg(long)]
    pub reason: Option<String>,
    /// Return once the move is planned instead of following it to its end.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, Args)]
pub struct IsolateArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// The merchant whose shard key gets a range of its own.
    #[arg(long)]
    pub merchant: String,
    /// Then move that range to this shard.
    #[arg(long)]
    pub to: Option<String>,
}

#[derive(Debug, Args)]
pub struct SplitArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[arg(long)]
    pub range: i64,
    /// Split key (start < at < end); the right part gets a new id.
    #[arg(long)]
    pub at: i64,
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// The left range (survives).
    #[arg(long)]
    pub left: i64,
    /// The adjacent right range on the same shard.
    #[arg(long)]
    pub right: i64,
}

#[derive(Debug, Args)]
pub struct AbortArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// Move id.
    pub id: String,
}

#[derive(Debug, Args)]
pub struct MovesArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// One move (with its events) instead of the list.
    pub id: Option<String>,
    /// Only moves in this state (or `unfinished`).
    #[arg(long)]
    pub state: Option<String>,
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
}

/// The operator verbs.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Move a key range (or a merchant's range) to another shard, online.
    Move(MoveArgs),
    /// Split the map down to a merchant's key (and optionally move it).
    Isolate(IsolateArgs),
    /// Split a range in two.
    Split(SplitArgs),
    /// Merge two adjacent ranges of one shard.
    Merge(MergeArgs),
    /// Ask a move to roll back (only before it switched).
    Abort(AbortArgs),
    /// List moves, or show one with its phase timings and events.
    Moves(MovesArgs),
    /// The autonomous policy: pause, resume, dry-run, status, explain decisions.
    Policy(crate::policy_cli::PolicyArgs),
}

/// A failed API call: problem+json's code and detail.
#[derive(Debug, thiserror::Error)]
#[error("error [{code}]: {detail} (HTTP {status})")]
pub struct ApiFailure {
    pub status: u16,
    pub code: String,
    pub detail: String,
}

pub(crate) struct Api {
    base: String,
    key: String,
    json: bool,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Api {
    pub(crate) fn new(a: &ApiArgs) -> Result<Self, ConfigError> {
        let local = LocalCluster::load(&a.dir).ok().flatten();
        let base = match (
            &a.url,
            local.as_ref().and_then(|l| l.rebalancer_url.clone()),
        ) {
            (Some(u), _) => u.clone(),
            (None, Some(u)) => u,
            (None, None) => "http://127.0.0.1:8070".to_owned(),
        };
        let base = base.trim_end_matches('/').to_owned();
        if !base.starts_with("http://") {
            return Err(ConfigError::new(
                "rebalancer",
                format!("{base:?} is not an http:// URL"),
            ));
        }
        let key = match &a.key {
            Some(k) => k.clone(),
            None => std::fs::read_to_string(admin_key_path(&a.dir))
                .map(|s| s.trim().to_owned())
                .map_err(|e| {
                    ConfigError::new(
                        "key",
                        format!(
                            "no --key (or SHARDLINE_API_KEY) and cannot read {}: {e}",
                            admin_key_path(&a.dir).display()
                        ),
                    )
                })?,
        };
        Ok(Api {
            base,
            key,
            json: a.json,
            client: Client::builder(TokioExecutor::new()).build_http(),
        })
    }

    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {}", self.key));
        let bytes = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Bytes::from(serde_json::to_vec(&b)?)
            }
            None => Bytes::new(),
        };
        let resp = tokio::time::timeout(
            Duration::from_secs(60),
            self.client.request(req.body(Full::new(bytes))?),
        )
        .await
        .with_context(|| format!("{} did not answer in 60 s", self.base))?
        .with_context(|| {
            format!(
                "cannot reach the rebalancer at {} (is it running?)",
                self.base
            )
        })?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        Err(ApiFailure {
            status: status.as_u16(),
            code: value["code"].as_str().unwrap_or("unknown").to_owned(),
            detail: value["detail"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned()),
        }
        .into())
    }

    pub(crate) fn print(&self, v: &Value, text: impl FnOnce(&Value)) -> anyhow::Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(v)?);
        } else {
            text(v);
        }
        Ok(())
    }
}

/// Run one verb. `Ok(false)` means the verb ran but its outcome is a failure (a
/// move that ended aborted): exit 1.
pub async fn run(cmd: AdminCommand) -> anyhow::Result<bool> {
    match cmd {
        AdminCommand::Policy(a) => crate::policy_cli::run(a).await,
        AdminCommand::Move(a) => {
            let api = Api::new(&a.api)?;
            let mut body = json!({"to": a.to});
            match (a.range, &a.merchant) {
                (Some(r), _) => body["range_id"] = r.into(),
                (None, Some(m)) => body["merchant_id"] = m.clone().into(),
                (None, None) => unreachable!("clap requires one of --range/--merchant"),
            }
            if let Some(r) = a.reason {
                body["reason"] = r.into();
            }
            let planned = api.call(Method::POST, "/v1/moves", Some(body)).await?;
            follow(&api, &planned, a.no_wait).await
        }
        AdminCommand::Isolate(a) => {
            let api = Api::new(&a.api)?;
            let iso = api
                .call(
                    Method::POST,
                    "/v1/ranges/isolate",
                    Some(json!({"merchant_id": a.merchant})),
                )
                .await?;
            let Some(to) = a.to else {
                api.print(&iso, |v| {
                    println!(
                        "merchant {} (shard key {}) is range {} on {}",
                        v["merchant_id"].as_str().unwrap_or("?"),
                        v["shard_key"],
                        v["range"]["id"],
                        v["range"]["shard_id"].as_str().unwrap_or("?")
                    )
                })?;
                return Ok(true);
            };
            if !api.json {
                println!(
                    "isolated shard key {} as range {}",
                    iso["shard_key"], iso["range"]["id"]
                );
            }
            let planned = api
                .call(
                    Method::POST,
                    "/v1/moves",
                    Some(json!({"range_id": iso["range"]["id"], "to": to,
                                "reason": "operator: isolate merchant"})),
                )
                .await?;
            follow(&api, &planned, false).await
        }
        AdminCommand::Split(a) => {
            let api = Api::new(&a.api)?;
            let v = api
                .call(
                    Method::POST,
                    "/v1/ranges/split",
                    Some(json!({"range_id": a.range, "at": a.at})),
                )
                .await?;
            api.print(&v, |v| {
                println!("{}\n{}", range_line(&v["left"]), range_line(&v["right"]))
            })?;
            Ok(true)
        }
        AdminCommand::Merge(a) => {
            let api = Api::new(&a.api)?;
            let v = api
                .call(
                    Method::POST,
                    "/v1/ranges/merge",
                    Some(json!({"left": a.left, "right": a.right})),
                )
                .await?;
            api.print(&v, |v| println!("{}", range_line(&v["range"])))?;
            Ok(true)
        }
        AdminCommand::Abort(a) => {
            let api = Api::new(&a.api)?;
            let v = api
                .call(Method::POST, &format!("/v1/moves/{}/abort", a.id), None)
                .await?;
            api.print(&v, |v| {
                println!(
                    "abort requested for move {} (state {})",
                    v["id"].as_str().unwrap_or("?"),
                    v["state"].as_str().unwrap_or("?")
                )
            })?;
            Ok(true)
        }
        AdminCommand::Moves(a) => {
            let api = Api::new(&a.api)?;
            if let Some(id) = a.id {
                let v = api
                    .call(Method::GET, &format!("/v1/moves/{id}"), None)
                    .await?;
                api.print(&v, print_move_detail)?;
                return Ok(true);
            }
            let mut path = format!("/v1/moves?limit={}", a.limit);
            if let Some(st) = &a.state {
                path.push_str(&format!("&state={st}"));
            }
            let v = api.call(Method::GET, &path, None).await?;
            api.print(&v, |v| {
                let list = v.as_array().cloned().unwrap_or_default();
                if list.is_empty() {
                    println!("no moves");
                }
                for m in list {
                    println!("{}", move_line(&m));
                }
            })?;
            Ok(true)
        }
    }
}

fn range_line(r: &Value) -> String {
    format!(
        "range {:<6} [{}, {}) on {} (epoch {}, {})",
        r["id"],
        r["start_key"],
        r["end_key"],
        r["shard_id"].as_str().unwrap_or("?"),
        r["epoch"],
        r["state"].as_str().unwrap_or("?")
    )
}

fn move_line(m: &Value) -> String {
    format!(
        "{}  {:<11} range {} {} -> {}  {}{}",
        m["id"].as_str().unwrap_or("?"),
        m["state"].as_str().unwrap_or("?"),
        m["range_id"],
        m["source_shard"].as_str().unwrap_or("?"),
        m["target_shard"].as_str().unwrap_or("?"),
        m["reason"].as_str().unwrap_or(""),
        m["error"]
            .as_str()
            .map(|e| format!("  error: {e}"))
            .unwrap_or_default()
    )
}

fn print_move_detail(m: &Value) {
    println!("{}", move_line(m));
    if let Some(phases) = m["phase_ms"].as_object() {
        for (k, v) in phases {
            println!("  {k:<16} {v} ms");
        }
    }
    for e in m["events"].as_array().into_iter().flatten() {
        println!(
            "  {}  {} -> {}  {}",
            e["at"].as_str().unwrap_or("?"),
            e["from_state"].as_str().unwrap_or("-"),
            e["to_state"].as_str().unwrap_or("?"),
            e["detail"]
        );
    }
}

/// Follow a planned move to its end with a spinner showing its state (or print it
/// and return when `no_wait`). `Ok(false)` when it ended aborted.
async fn follow(api: &Api, planned: &Value, no_wait: bool) -> anyhow::Result<bool> {
    let id = planned["id"]
        .as_str()
        .context("the API returned a move without an id")?
        .to_owned();
    if no_wait {
        api.print(planned, |v| println!("{}", move_line(v)))?;
        return Ok(true);
    }
    let bar = if api.json {
        indicatif::ProgressBar::hidden()
    } else {
        let b = indicatif::ProgressBar::new_spinner();
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {elapsed:>4} move {prefix} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        b.set_prefix(id.clone());
        b.enable_steady_tick(Duration::from_millis(120));
        b
    };
    let mut last = String::new();
    let end = loop {
        let v = api
            .call(Method::GET, &format!("/v1/moves/{id}"), None)
            .await?;
        let st = v["state"].as_str().unwrap_or("?").to_owned();
        if st != last {
            if !last.is_empty() {
                bar.println(format!("  {last} done"));
            }
            bar.set_message(st.clone());
            last = st.clone();
        }
        if st == "done" || st == "aborted" {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    bar.finish_and_clear();
    let ok = end["state"] == "done";
    api.print(&end, print_move_detail)?;
    if !ok && !api.json {
        eprintln!("move {id} ended aborted");
    }
    Ok(ok)
}
