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
use crate::redact::{printable, redact_url};
use crate::store::{DeliveryStatus, Store};

pub mod out;
mod providers;

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
    /// The delivery log, newest first; `deliveries show <ID>` for one delivery
    #[command(args_conflicts_with_subcommands = true)]
    Deliveries {
        #[command(subcommand)]
        show: Option<DeliveriesCommand>,
        /// Only deliveries to this webhook
        #[arg(long, value_name = "ID")]
        webhook: Option<String>,
        /// Only deliveries in this state (pending, delivered, failed, cancelled)
        #[arg(long, value_parser = parse_status)]
        status: Option<DeliveryStatus>,
        /// Only deliveries of this event
        #[arg(long, value_name = "EVENT_ID")]
        event: Option<String>,
        /// Only events of this type (e.g. hris_employees.created)
        #[arg(long = "type", value_name = "EVENT_TYPE")]
        event_type: Option<String>,
        /// Skip this many rows (paging)
        #[arg(long, default_value_t = 0)]
        offset: u64,
        /// At most this many rows
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Queue events again for delivery (same event id, new delivery rows)
    Replay {
        /// The event to replay
        #[arg(value_name = "EVENT_ID", required_unless_present = "since", conflicts_with_all = ["since", "until"])]
        event_id: Option<String>,
        /// Replay events created at or after this time (RFC 3339)
        #[arg(long, value_name = "RFC3339", value_parser = parse_time)]
        since: Option<chrono::DateTime<Utc>>,
        /// …and before this time (RFC 3339)
        #[arg(long, value_name = "RFC3339", value_parser = parse_time, requires = "since")]
        until: Option<chrono::DateTime<Utc>>,
        /// Only deliveries to this webhook
        #[arg(long, value_name = "ID")]
        webhook: Option<String>,
        /// Only deliveries in this state (e.g. failed)
        #[arg(long, value_parser = parse_status)]
        status: Option<DeliveryStatus>,
    },
    /// Test or resume a webhook
    Webhook {
        #[command(subcommand)]
        action: WebhookCommand,
    },
    /// List the built-in provider catalog; `providers show NAME` prints one entry's block
    #[command(args_conflicts_with_subcommands = true)]
    Providers {
        #[command(subcommand)]
        show: Option<ProvidersCommand>,
        /// Print the list as JSON
        #[arg(long)]
        json: bool,
    },
    /// Print a new random signing secret (whsec_…)
    Secret,
    /// Manage the state store (moving from one VM's SQLite to PostgreSQL)
    Store {
        #[command(subcommand)]
        action: StoreCommand,
    },
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

#[derive(Debug, Subcommand)]
pub enum ProvidersCommand {
    /// Print a built-in provider's full block (with its doc pages) to copy and edit
    Show {
        #[arg(value_name = "NAME")]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeliveriesCommand {
    /// One delivery: its exact payload and every attempt
    Show {
        #[arg(value_name = "DELIVERY_ID")]
        id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy an SQLite state (hashes, poll state, fingerprints, events, deliveries and attempts) into the configured PostgreSQL store, which must be empty
    Import {
        /// The old state directory, or its synthd.db (stop the daemon using it first)
        #[arg(value_name = "PATH")]
        path: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Send a signed webhook.test event now; print status code and response time
    Test {
        #[arg(value_name = "WEBHOOK_ID")]
        id: String,
    },
    /// Resume a webhook paused after days of failures
    Resume {
        #[arg(value_name = "WEBHOOK_ID")]
        id: String,
    },
}

fn parse_status(s: &str) -> Result<DeliveryStatus, String> {
    DeliveryStatus::parse(s).ok_or_else(|| {
        let all: Vec<&str> = DeliveryStatus::ALL.iter().map(|d| d.as_str()).collect();
        format!(
            "{s:?} is not a delivery state; use one of {}",
            all.join(", ")
        )
    })
}

fn parse_time(s: &str) -> Result<chrono::DateTime<Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| format!("{s:?} is not an RFC 3339 time like 2026-11-23T10:00:00Z"))
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
            out::error(&format!("synthd: cannot start the async runtime: {e}"));
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(Failure::Config(e)) => {
            for line in e.lines() {
                out::error(&format!("synthd: config error: {line}"));
            }
            ExitCode::from(2)
        }
        Err(Failure::Usage(e)) => {
            out::error(&format!("synthd: {e}"));
            ExitCode::from(2)
        }
        Err(Failure::Runtime(e)) => {
            out::error(&format!("synthd: {e}"));
            ExitCode::from(1)
        }
    }
}

async fn dispatch(cli: Cli) -> Result<ExitCode, Failure> {
    let path = config::config_path(cli.config);
    match cli.command {
        Command::Secret => {
            crate::outln!("{}", crate::signing::new_secret());
            Ok(ExitCode::SUCCESS)
        }
        Command::Check => check(&path),
        Command::Providers { show: None, json } => providers::list(json),
        Command::Providers {
            show: Some(ProvidersCommand::Show { name }),
            ..
        } => providers::show(&name),
        Command::Run => run(path).await,
        Command::Sync {
            account,
            resource,
            json,
        } => sync(&path, account, resource, json).await,
        Command::Status { json } => status(&path, json).await,
        Command::Deliveries {
            show: Some(DeliveriesCommand::Show { id, json }),
            ..
        } => show_delivery(&path, &id, json).await,
        Command::Deliveries {
            show: None,
            webhook,
            status,
            event,
            event_type,
            offset,
            limit,
            json,
        } => {
            let query = crate::store::LogQuery {
                webhook,
                status,
                event_type,
                event_id: event,
                offset,
                limit,
            };
            list_deliveries(&path, &query, json).await
        }
        Command::Replay {
            event_id,
            since,
            until,
            webhook,
            status,
        } => {
            let sel = crate::store::ReplaySelection {
                event_id,
                since,
                until,
                webhook,
                status,
            };
            replay(&path, &sel).await
        }
        Command::Webhook {
            action: WebhookCommand::Test { id },
        } => webhook_test(&path, &id).await,
        Command::Webhook {
            action: WebhookCommand::Resume { id },
        } => webhook_resume(&path, &id).await,
        Command::Store {
            action: StoreCommand::Import { path: source },
        } => store_import(&path, &source).await,
        Command::Demo { run_for, interval } => crate::demo::run(run_for, interval)
            .await
            .map(|()| ExitCode::SUCCESS)
            .map_err(Failure::Runtime),
    }
}

fn check(path: &std::path::Path) -> Result<ExitCode, Failure> {
    let config = config::load(path)?;
    crate::outln!("config {} is valid", path.display());
    crate::out!("{}", describe_plan(&config));
    for w in daemon::plan_warnings(&config) {
        crate::outln!("warning: {w}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The human-readable plan `check` prints.
pub fn describe_plan(config: &Config) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "state: {}", config.describe_store());
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
            let mode = match &res.updated_since {
                Some(us) => {
                    let secs = us.full_scan_every.as_secs();
                    let every = if secs % 3600 == 0 {
                        format!("{}h", secs / 3600)
                    } else {
                        format!("{}m", secs / 60)
                    };
                    format!("incremental + full scan every {every}")
                }
                None => "full scan".to_string(),
            };
            let _ = writeln!(
                out,
                "    {r}: {} {} ({mode})",
                res.method.as_str(),
                res.path
            );
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
            "  {} -> {} events [{}] for {}; {} secret(s); timeout {}{}",
            w.id,
            w.shown_url(),
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
    raise_fd_limit();
    let (store, _lock) = open_store(&config, Access::Exclusive).await?;
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

/// Raises the soft limit on open files to the hard limit (the unit file
/// sets a generous one): each webhook and provider host holds sockets, and
/// running out of descriptors would fail deliveries and even a reload.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write and read only the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 || lim.rlim_cur >= lim.rlim_max {
            return;
        }
        let wanted = lim.rlim_max;
        lim.rlim_cur = wanted;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            tracing::warn!(
                "cannot raise the open-files limit; set LimitNOFILE= in the unit if deliveries fail with 'too many open files'"
            );
        } else {
            tracing::debug!(limit = wanted, "raised the open-files limit");
        }
    }
}

#[derive(serde::Serialize)]
struct SyncLine {
    account: String,
    resource: String,
    ok: bool,
    /// Left to another process sharing the store (not a failure).
    skipped: bool,
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
    let (store, _lock) = open_store(&config, Access::Exclusive).await?;
    let engine = Engine::new(store.clone(), &config, Arc::new(SystemClock));
    engine.reconcile_accounts(&config).await?;
    store.heartbeat(Utc::now()).await?;

    // Deliveries start while the polls run: each page that commits events
    // wakes the pass, so the webhooks overlap the scan instead of following it.
    let polls = {
        let limit = config.daemon.max_concurrent_polls;
        let (engine, config, resource) = (engine.clone(), config.clone(), resource.clone());
        futures_util::stream::iter(selected)
            .map(move |a| {
                let (engine, config, resource) = (engine.clone(), config.clone(), resource.clone());
                let mode = poll::PollMode {
                    skip_if_started_after: None,
                };
                async move {
                    poll::poll_account(&engine.ctx, &config, &a, resource.as_deref(), mode).await
                }
            })
            .buffer_unordered(limit)
            .flat_map(futures_util::stream::iter)
            .collect::<Vec<poll::ResourceOutcome>>()
    };
    let (outcomes, pass) = engine
        .deliverer
        .deliver_during(&config, tokio::spawn(polls))
        .await;
    // Whatever happened, this process's registration and claims go now.
    if let Err(e) = store.leave().await {
        tracing::warn!(error = %e, "could not deregister from the store; its claims expire after the lease");
    }
    let pass = pass?;
    let outcomes = outcomes.map_err(|e| Failure::Runtime(crate::store::panic_text(e)))?;

    let mut all_ok = true;
    let mut lines = Vec::new();
    for o in outcomes {
        let (summary, error, skipped) = match o.result {
            Ok(s) => (Some(s), None, false),
            // Another process has it: not a failure (exit 0), said plainly.
            Err(e) if e.is_skip() => (None, Some(e.to_string()), true),
            Err(e) => {
                all_ok = false;
                (None, Some(e.to_string()), false)
            }
        };
        lines.push(SyncLine {
            account: o.account_id,
            resource: o.resource,
            ok: error.is_none() || skipped,
            skipped,
            summary,
            error,
            duration_ms: o.duration.as_millis() as u64,
        });
    }
    lines.sort_by(|a, b| (&a.account, &a.resource).cmp(&(&b.account, &b.resource)));
    if json {
        let out = serde_json::json!({ "polls": lines, "deliveries": pass });
        crate::outln!("{out}");
    } else {
        for l in &lines {
            match (&l.summary, &l.error) {
                (Some(s), _) => crate::outln!(
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
                    match (s.baseline, s.emitted) {
                        (true, false) => " [baseline: no events]",
                        (true, true) => " [first poll: events sent, emit_initial = true]",
                        _ => "",
                    },
                    if s.full_scan {
                        "full scan"
                    } else {
                        "incremental"
                    },
                    s.pages,
                    l.duration_ms
                ),
                (None, Some(e)) if l.skipped => {
                    crate::outln!("{}/{}: {}", l.account, l.resource, printable(e))
                }
                (None, Some(e)) => {
                    crate::outln!("{}/{}: FAILED: {}", l.account, l.resource, printable(e))
                }
                (None, None) => {}
            }
        }
        crate::outln!(
            "deliveries: {} attempted, {} delivered, {} to retry, {} failed",
            pass.attempted,
            pass.delivered,
            pass.retrying,
            pass.failed
        );
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn status(path: &std::path::Path, json: bool) -> Result<ExitCode, Failure> {
    let config = config::load(path)?;
    let store = open_existing(&config).await?;
    let view = crate::views::overview(&store, &config, Utc::now()).await?;
    let counts = store.delivery_counts().await?;
    let (polls, paused, instances) = (&view.resources, &view.paused, &view.instances);
    if json {
        let rows = polls;
        crate::outln!(
            "{}",
            serde_json::json!({
                "polls": rows,
                "deliveries": counts,
                "paused_webhooks": paused.iter().map(|(id, at)| serde_json::json!({"webhook": id, "paused_at": at})).collect::<Vec<_>>(),
                "instances": instances,
            })
        );
    } else {
        let fmt = |t: Option<chrono::DateTime<Utc>>| {
            t.map_or("never".to_string(), |t| {
                t.format("%Y-%m-%d %H:%M:%SZ").to_string()
            })
        };
        for row in polls {
            let p = &row.poll;
            crate::outln!(
                "{}/{}: {} records; last poll {}; last success {}; next poll {}{}",
                p.account_id,
                p.resource,
                p.records,
                fmt(p.last_started_at),
                fmt(p.last_success_at),
                fmt(row.next_poll_at),
                p.last_error
                    .as_ref()
                    .map_or(String::new(), |e| format!("; last error: {}", printable(e)))
            );
        }
        crate::outln!(
            "deliveries: {} pending, {} delivered, {} failed, {} cancelled",
            counts.pending,
            counts.delivered,
            counts.failed,
            counts.cancelled
        );
        for (id, at) in paused {
            crate::outln!(
                "webhook {id}: PAUSED since {} after 5 days of failures; `synthd webhook resume {id}` once the receiver is fixed",
                fmt(Some(*at))
            );
        }
        if store.shared() {
            crate::outln!("processes sharing {}:", store.describe());
            if instances.is_empty() {
                crate::outln!("  (none running)");
            }
            for i in instances {
                crate::outln!(
                    "  {} pid {} (synthd {}): started {}, last heartbeat {}, {} claim(s) held",
                    i.host,
                    i.pid,
                    i.version,
                    fmt(Some(i.started_at)),
                    fmt(Some(i.heartbeat_at)),
                    i.claims
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// How a command uses the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// `run` and `sync`: they poll and deliver. On SQLite they hold the
    /// state directory's lock; on PostgreSQL claims coordinate them.
    Exclusive,
    /// Reads or queues: on SQLite the state must exist already.
    Existing,
    /// May create the state (a test send records its attempt).
    Create,
}

/// Opens the store the config names: SQLite in the state directory, or the
/// shared PostgreSQL database. The lock (SQLite, `Exclusive` only) is held
/// for as long as the caller keeps it.
async fn open_store(
    config: &Config,
    access: Access,
) -> Result<(Store, Option<crate::store::StateLock>), Failure> {
    match &config.store {
        config::StoreConfig::Sqlite => {
            let db = config.db_path();
            if access == Access::Existing && !db.exists() {
                return Err(Failure::Runtime(format!(
                    "no state yet at {}; start the daemon or run `synthd sync`",
                    db.display()
                )));
            }
            let lock = match access {
                Access::Exclusive => {
                    Some(crate::store::StateLock::acquire(&config.daemon.state_dir)?)
                }
                _ => None,
            };
            Ok((Store::open_sqlite(&config.daemon.state_dir)?, lock))
        }
        config::StoreConfig::Postgres {
            url,
            pool_size,
            lease,
        } => Ok((
            Store::connect_postgres(url.expose(), *pool_size, *lease).await?,
            None,
        )),
    }
}

/// Opens the store of an existing state; commands that only read or queue
/// should not create one.
async fn open_existing(config: &Config) -> Result<Store, Failure> {
    Ok(open_store(config, Access::Existing).await?.0)
}

fn find_webhook<'a>(config: &'a Config, id: &str) -> Result<&'a crate::config::Webhook, Failure> {
    config.webhooks.iter().find(|w| w.id == id).ok_or_else(|| {
        let known: Vec<&str> = config.webhooks.iter().map(|w| w.id.as_str()).collect();
        Failure::Usage(format!(
            "no webhook {id:?} in the config (known: {})",
            known.join(", ")
        ))
    })
}

fn time(t: chrono::DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%SZ").to_string()
}

async fn list_deliveries(
    path: &std::path::Path,
    query: &crate::store::LogQuery,
    json: bool,
) -> Result<ExitCode, Failure> {
    let config = config::load(path)?;
    let store = open_existing(&config).await?;
    let page = crate::views::delivery_log(&store, query).await?;
    let rows: Vec<&crate::store::DeliveryView> = page.rows.iter().map(|r| &r.delivery).collect();
    if json {
        crate::outln!("{}", serde_json::to_string(&page.rows).unwrap_or_default());
        return Ok(ExitCode::SUCCESS);
    }
    crate::outln!(
        "{:<30} {:<30} {:<28} {:<16} {:<9} {:>8} {:>5}  UPDATED",
        "DELIVERY",
        "EVENT",
        "TYPE",
        "WEBHOOK",
        "STATUS",
        "ATTEMPTS",
        "LAST"
    );
    for r in &rows {
        crate::outln!(
            "{:<30} {:<30} {:<28} {:<16} {:<9} {:>8} {:>5}  {}",
            r.id,
            r.event_id,
            r.event_type,
            r.webhook_id,
            r.status,
            r.attempts,
            r.last_status.map_or("-".to_string(), |s| s.to_string()),
            time(r.updated_at)
        );
    }
    if rows.is_empty() {
        crate::outln!("(no deliveries match)");
    } else if page.more {
        crate::outln!("(more: --offset {})", query.offset + query.limit as u64);
    }
    Ok(ExitCode::SUCCESS)
}

async fn show_delivery(path: &std::path::Path, id: &str, json: bool) -> Result<ExitCode, Failure> {
    let config = config::load(path)?;
    let store = open_existing(&config).await?;
    let Some(detail) = crate::views::delivery_detail(&store, &config, id).await? else {
        return Err(Failure::Usage(format!(
            "no delivery {id:?} (list them with `synthd deliveries`)"
        )));
    };
    let crate::views::DeliveryDetail {
        delivery: row,
        url,
        payload,
        attempts,
    } = detail;
    let url = url.unwrap_or_else(|| "(webhook no longer in the config)".to_string());
    if json {
        let out = serde_json::json!({
            "delivery": row,
            "url": url,
            "payload": payload,
            "attempts": attempts,
        });
        crate::outln!("{out}");
        return Ok(ExitCode::SUCCESS);
    }
    crate::outln!("delivery  {}", row.id);
    crate::outln!("event     {} ({})", row.event_id, row.event_type);
    crate::outln!("webhook   {} -> {url}", row.webhook_id);
    let next = row
        .next_attempt_at
        .map_or(String::new(), |t| format!("; next attempt {}", time(t)));
    crate::outln!(
        "status    {} after {} attempt(s){next}",
        row.status,
        row.attempts
    );
    crate::outln!("created   {}", time(row.created_at));
    crate::outln!("payload   {payload}");
    crate::outln!("attempts:");
    if attempts.is_empty() {
        crate::outln!("  (none yet)");
    }
    for a in &attempts {
        let outcome = match (a.status_code, &a.error) {
            (Some(code), None) => format!("HTTP {code}"),
            (Some(code), Some(_)) => format!("HTTP {code} (failure)"),
            (None, Some(e)) => format!(
                "{}: {}",
                a.error_kind.as_deref().unwrap_or("error"),
                printable(e)
            ),
            (None, None) => "no response".into(),
        };
        crate::outln!(
            "  #{} {} {outcome} in {} ms",
            a.attempt,
            time(a.started_at),
            a.duration_ms
        );
        if let Some(body) = &a.response_body {
            // The receiver wrote this: escape anything that could drive
            // the terminal.
            crate::outln!("     response: {}", printable(body));
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn replay(
    path: &std::path::Path,
    sel: &crate::store::ReplaySelection,
) -> Result<ExitCode, Failure> {
    let config = config::load(path)?;
    if let Some(w) = &sel.webhook {
        find_webhook(&config, w)?;
    }
    let store = open_existing(&config).await?;
    let enabled = config.enabled_webhook_ids();
    let done = store.replay(sel, &enabled, Utc::now()).await?;
    let (queued, skipped) = (done.queued, done.skipped);
    crate::outln!("queued {queued} deliveries for replay");
    if skipped > 0 {
        crate::outln!("skipped {skipped}: their webhook is disabled or no longer in the config");
    }
    if done.already_pending > 0 {
        crate::outln!(
            "skipped {}: a delivery of that event to that webhook is already pending",
            done.already_pending
        );
    }
    if queued == 0 && skipped == 0 && done.already_pending == 0 {
        if let Some(e) = &sel.event_id {
            return Err(Failure::Runtime(format!(
                "no deliveries of event {e:?} to replay"
            )));
        }
        crate::outln!("nothing matched");
    } else if queued > 0 {
        crate::outln!("the running daemon sends them within 30 s (or run `synthd sync`)");
    }
    Ok(ExitCode::SUCCESS)
}

async fn webhook_test(path: &std::path::Path, id: &str) -> Result<ExitCode, Failure> {
    let config = config::load(path)?;
    logging::init(config.daemon.log_format, Target::Stderr, "warn");
    let webhook = find_webhook(&config, id)?;
    let (store, _) = open_store(&config, Access::Create).await?;
    let sender = crate::deliver::Sender::new();
    let attempt = crate::deliver::test_send(&store, &sender, webhook, Utc::now())
        .await
        .map_err(|e| Failure::Runtime(e.to_string()))?;
    let url = webhook.shown_url();
    match (attempt.status_code, &attempt.error) {
        (Some(code), _) if (200..300).contains(&code) => {
            crate::outln!(
                "webhook {id} ({url}): HTTP {code} in {} ms",
                attempt.duration_ms
            );
            Ok(ExitCode::SUCCESS)
        }
        (Some(code), _) => {
            crate::outln!(
                "webhook {id} ({url}): HTTP {code} in {} ms (not 2xx: failure)",
                attempt.duration_ms
            );
            Ok(ExitCode::from(1))
        }
        (None, e) => {
            crate::outln!(
                "webhook {id} ({url}): failed after {} ms: {}",
                attempt.duration_ms,
                printable(e.as_deref().unwrap_or("no response"))
            );
            Ok(ExitCode::from(1))
        }
    }
}

async fn store_import(
    path: &std::path::Path,
    source: &std::path::Path,
) -> Result<ExitCode, Failure> {
    let config = config::load(path)?;
    let config::StoreConfig::Postgres {
        url,
        pool_size,
        lease,
    } = &config.store
    else {
        return Err(Failure::Usage(format!(
            "`store import` copies into the PostgreSQL store the config names, but {} uses SQLite; \
             set [store] backend = \"postgres\" and url_env (or url / url_file) first",
            path.display()
        )));
    };
    let dir = crate::store::import::source_dir(source)?;
    let target = crate::store::postgres::PgStore::connect(url.expose(), *pool_size, *lease).await?;
    let done = crate::store::import::import_sqlite(&dir, &target).await?;
    crate::outln!(
        "imported {} into {}:",
        dir.join("synthd.db").display(),
        target.describe_url()
    );
    for (table, rows) in &done.tables {
        crate::outln!("  {table}: {rows} rows");
    }
    crate::outln!(
        "start `synthd run` with this config on each VM; resources keep their baselines and pending deliveries go out from the shared store"
    );
    Ok(ExitCode::SUCCESS)
}

async fn webhook_resume(path: &std::path::Path, id: &str) -> Result<ExitCode, Failure> {
    let config = config::load(path)?;
    find_webhook(&config, id)?;
    let store = open_existing(&config).await?;
    if store.resume_webhook(id).await? {
        crate::outln!(
            "webhook {id} resumed; its queued deliveries go out on the daemon's next pass"
        );
    } else {
        crate::outln!("webhook {id} was not paused");
    }
    Ok(ExitCode::SUCCESS)
}
