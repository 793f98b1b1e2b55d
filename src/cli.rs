//! The command line: argument parsing, and one function per command that
//! wires config, store and engine together. Exit codes: 0 success, 1
//! runtime failure, 2 usage or configuration error.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use clap::{Parser, Subcommand};
use futures_util::StreamExt;

use crate::clock::SystemClock;
use crate::config::{self, Config, ConfigError};
use crate::daemon::{self, Engine, RunOptions};
use crate::logging::{self, Target};
use crate::poll;
use crate::redact::redact_url;
use crate::store::Store;

/// Synthetic webhooks for APIs that have none: poll, hash, detect, deliver.
#[derive(Debug, Parser)]
#[command(name = "synthd", version, about, long_about = None)]
pub struct Cli {
    /// Config file [default: $SYNTHD_CONFIG, else /etc/synthd/synthd.toml]
    #[arg(long, global = true, env = "SYNTHD_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: schedule polls and deliver events until SIGTERM (SIGHUP reloads the config)
    Run,
    /// Validate the config and print the plan; exit 2 on any error
    Check,
    /// Poll now (ignoring schedules), commit events, attempt due deliveries once, print a summary
    Sync {
        /// Only this account
        #[arg(long, value_name = "ID")]
        account: Option<String>,
        /// Only this resource
        #[arg(long, value_name = "NAME")]
        resource: Option<String>,
        /// Print the summary as JSON
        #[arg(long)]
        json: bool,
    },
    /// Per account/resource: records tracked, last poll, last error; delivery counts
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Print a new random signing secret (whsec_…)
    Secret,
    /// Run the whole pipeline on loopback with a simulated provider and receiver
    Demo {
        /// Stop after this long (e.g. "30s"); default: until Ctrl-C
        #[arg(long = "for", value_name = "DURATION", value_parser = humantime::parse_duration)]
        run_for: Option<Duration>,
        /// Poll interval of the simulated account (demo only; real configs allow 5m-1h)
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        interval: Duration,
    },
}

/// A command's failure, with the exit code it maps to.
#[derive(Debug)]
pub enum Failure {
    Config(ConfigError),
    Usage(String),
    Runtime(String),
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure::Config(e)
    }
}

impl From<crate::store::StoreError> for Failure {
    fn from(e: crate::store::StoreError) -> Self {
        Failure::Runtime(e.to_string())
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("synthd: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(Failure::Config(e)) => {
            eprintln!("synthd: config error: {e}");
            ExitCode::from(2)
        }
        Err(Failure::Usage(e)) => {
            eprintln!("synthd: {e}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("synthd: {e}");
            ExitCode::from(1)
        }
    }
}

async fn dispatch(cli: Cli) -> Result<ExitCode, Failure> {
    let path = config::config_path(cli.config);
    match cli.command {
        Command::Secret => {
            println!("{}", crate::signing::new_secret());
            Ok(ExitCode::SUCCESS)
        }
        Command::Check => check(&path),
        Command::Run => run(path).await,
        Command::Sync {
            account,
            resource,
            json,
        } => sync(&path, account, resource, json).await,
        Command::Status { json } => status(&path, json),
        Command::Demo { run_for, interval } => crate::demo::run(run_for, interval)
            .await
            .map(|()| ExitCode::SUCCESS)
            .map_err(Failure::Runtime),
    }
}

fn check(path: &std::path::Path) -> Result<ExitCode, Failure> {
    let config = config::load(path)?;
    println!("config {} is valid", path.display());
    print!("{}", describe_plan(&config));
    for w in daemon::plan_warnings(&config) {
        println!("warning: {w}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The human-readable plan `check` prints.
pub fn describe_plan(config: &Config) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "state: {}", config.db_path().display());
    let _ = writeln!(out, "accounts:");
    for a in &config.accounts {
        let provider = config.provider(&a.provider);
        let _ = writeln!(
            out,
            "  {} (provider {}, {}, {}){}",
            a.id,
            a.provider,
            redact_url(&a.base_url),
            a.schedule,
            if a.enabled { "" } else { " [disabled]" }
        );
        for r in &a.resources {
            let res = &provider.resources[r];
            let mode = if res.updated_since.is_some() {
                "incremental + daily full scan"
            } else {
                "full scan"
            };
            let _ = writeln!(out, "    {r}: GET {} ({mode})", res.path);
        }
    }
    let _ = writeln!(out, "webhooks:");
    for w in &config.webhooks {
        let events: Vec<String> = w.events.iter().map(ToString::to_string).collect();
        let accounts = w
            .accounts
            .as_ref()
            .map_or("all accounts".to_string(), |a| a.join(", "));
        let _ = writeln!(
            out,
            "  {} → {} events [{}] for {}; {} secret(s); timeout {}{}",
            w.id,
            redact_url(&w.url),
            events.join(", "),
            accounts,
            w.secrets.len(),
            humantime::format_duration(w.timeout),
            if w.enabled { "" } else { " [disabled]" }
        );
    }
    out
}

async fn run(path: PathBuf) -> Result<ExitCode, Failure> {
    let config = config::load(&path)?;
    logging::init(config.daemon.log_format, Target::Stdout, "info");
    let store = Store::open(&config.daemon.state_dir)?;
    let engine = Engine::new(store, &config, Arc::new(SystemClock));
    daemon::run(
        engine,
        config,
        RunOptions {
            config_path: Some(path),
            notify_systemd: true,
            plan_warnings: true,
        },
        std::future::pending(),
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}

#[derive(serde::Serialize)]
struct SyncLine {
    account: String,
    resource: String,
    ok: bool,
    #[serde(flatten)]
    summary: Option<poll::PollSummary>,
    error: Option<String>,
    duration_ms: u64,
}

async fn sync(
    path: &std::path::Path,
    account: Option<String>,
    resource: Option<String>,
    json: bool,
) -> Result<ExitCode, Failure> {
    let config = Arc::new(config::load(path)?);
    logging::init(config.daemon.log_format, Target::Stderr, "warn");
    if let Some(a) = &account
        && !config.accounts.iter().any(|x| &x.id == a)
    {
        return Err(Failure::Usage(format!(
            "--account {a:?}: no such account in {}",
            path.display()
        )));
    }
    let selected: Vec<_> = config
        .accounts
        .iter()
        .filter(|a| account.as_ref().map_or(a.enabled, |id| &a.id == id))
        .filter(|a| resource.as_ref().is_none_or(|r| a.resources.contains(r)))
        .cloned()
        .collect();
    if let Some(r) = &resource
        && selected.is_empty()
    {
        return Err(Failure::Usage(format!(
            "--resource {r:?}: no selected account polls this resource"
        )));
    }
    let store = Store::open(&config.daemon.state_dir)?;
    let engine = Engine::new(store, &config, Arc::new(SystemClock));
    engine.reconcile_accounts(&config).await?;

    let outcomes: Vec<poll::ResourceOutcome> = futures_util::stream::iter(selected)
        .map(|a| {
            let (engine, config, resource) = (engine.clone(), config.clone(), resource.clone());
            async move { poll::poll_account(&engine.ctx, &config, &a, resource.as_deref()).await }
        })
        .buffer_unordered(config.daemon.max_concurrent_polls)
        .flat_map(futures_util::stream::iter)
        .collect()
        .await;
    let pass = engine.deliverer.deliver_pass(&config).await?;

    let mut all_ok = true;
    let mut lines = Vec::new();
    for o in outcomes {
        let (summary, error) = match o.result {
            Ok(s) => (Some(s), None),
            Err(e) => {
                all_ok = false;
                (None, Some(e.to_string()))
            }
        };
        lines.push(SyncLine {
            account: o.account_id,
            resource: o.resource,
            ok: error.is_none(),
            summary,
            error,
            duration_ms: o.duration.as_millis() as u64,
        });
    }
    lines.sort_by(|a, b| (&a.account, &a.resource).cmp(&(&b.account, &b.resource)));
    if json {
        let out = serde_json::json!({ "polls": lines, "deliveries": pass });
        println!("{out}");
    } else {
        for l in &lines {
            match (&l.summary, &l.error) {
                (Some(s), _) => println!(
                    "{}/{}: {} records, {} created, {} updated, {} deleted{}{} ({}, {} pages, {} ms)",
                    l.account,
                    l.resource,
                    s.records,
                    s.created,
                    s.updated,
                    s.deleted,
                    if s.held > 0 {
                        format!(", {} deletions held by the mass-deletion guard", s.held)
                    } else {
                        String::new()
                    },
                    if s.baseline {
                        " [baseline: no events]"
                    } else {
                        ""
                    },
                    if s.full_scan {
                        "full scan"
                    } else {
                        "incremental"
                    },
                    s.pages,
                    l.duration_ms
                ),
                (None, Some(e)) => println!("{}/{}: FAILED: {e}", l.account, l.resource),
                (None, None) => {}
            }
        }
        println!(
            "deliveries: {} attempted, {} delivered, {} to retry, {} failed",
            pass.attempted, pass.delivered, pass.retrying, pass.failed
        );
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn status(path: &std::path::Path, json: bool) -> Result<ExitCode, Failure> {
    let config = config::load(path)?;
    let db = config.db_path();
    if !db.exists() {
        return Err(Failure::Runtime(format!(
            "no state yet at {}; start the daemon or run `synthd sync`",
            db.display()
        )));
    }
    let store = Store::open(&config.daemon.state_dir)?;
    let polls = store.poll_status()?;
    let counts = store.delivery_counts()?;
    let now = Utc::now();
    let next_poll = |account_id: &str, last: Option<chrono::DateTime<Utc>>| {
        config
            .accounts
            .iter()
            .find(|a| a.id == account_id)
            .map(|a| a.schedule.next_due(&a.id, last, now))
    };
    if json {
        let rows: Vec<serde_json::Value> = polls
            .iter()
            .map(|p| {
                let mut v = serde_json::to_value(p).unwrap_or_default();
                v["next_poll_at"] = serde_json::json!(next_poll(&p.account_id, p.last_started_at));
                v
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({ "polls": rows, "deliveries": counts })
        );
    } else {
        let fmt = |t: Option<chrono::DateTime<Utc>>| {
            t.map_or("never".to_string(), |t| {
                t.format("%Y-%m-%d %H:%M:%SZ").to_string()
            })
        };
        for p in &polls {
            println!(
                "{}/{}: {} records; last poll {}; last success {}; next poll {}{}",
                p.account_id,
                p.resource,
                p.records,
                fmt(p.last_started_at),
                fmt(p.last_success_at),
                fmt(next_poll(&p.account_id, p.last_started_at)),
                p.last_error
                    .as_ref()
                    .map_or(String::new(), |e| format!("; last error: {e}"))
            );
        }
        println!(
            "deliveries: {} pending, {} delivered, {} failed",
            counts.pending, counts.delivered, counts.failed
        );
    }
    Ok(ExitCode::SUCCESS)
}
