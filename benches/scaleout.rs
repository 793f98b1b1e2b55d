//! Scale-out benchmark: 1, 2 and 3 `synthd run` processes sharing one
//! PostgreSQL database poll 3,000 accounts against a loopback provider that
//! takes 50 ms per page, so the provider (not the database) is the
//! bottleneck and the processes should add up.
//!
//! `cargo bench --bench scaleout` needs a PostgreSQL server
//! (`SCALEOUT_BENCH_POSTGRES`, by default the local one with trust auth:
//! `postgres://postgres@127.0.0.1:5432/postgres`); when none answers it
//! says so in one line and stops. Overrides: `SCALEOUT_ACCOUNTS` (3000),
//! `SCALEOUT_PAGE_MS` (50), `SCALEOUT_INSTANCES` (`1,2,3`),
//! `SCALEOUT_POLLS` (each process's `max_concurrent_polls`, 8).
//!
//! What is timed is one polling round of accounts that are all due: a
//! template database is seeded once (a `sync` baselines every account,
//! then the stored poll times are moved two intervals back), and each run
//! starts from a copy of it, spawns its processes at once and stops the
//! clock when the database shows every account's poll finished. (Brand-new
//! accounts are not the measure: their first polls are deliberately spread
//! over a start-up window of 5 ms per account, which bounds that round
//! whatever the number of processes.)
//!
//! Database load is measured per account-poll from the run's database:
//! transactions (`pg_stat_database` xact_commit + xact_rollback, minus the
//! benchmark's own progress queries), rows read and written, and the CPU
//! time of the server backends serving the processes (`/proc/<pid>/stat`
//! of each backend in `pg_stat_activity`, read before the processes stop).
//! The report extrapolates those to 100,000 accounts polled hourly.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use common::*;
use serde_json::json;

/// A loopback API: `GET /t/<tenant>/employees` answers three records in
/// one page after `latency`.
struct SlowProvider {
    base: String,
    requests: Arc<AtomicU64>,
}

#[derive(Clone)]
struct SlowState {
    latency: Duration,
    requests: Arc<AtomicU64>,
}

async fn tenant_page(
    State(s): State<SlowState>,
    UrlPath(tenant): UrlPath<u64>,
) -> axum::Json<serde_json::Value> {
    s.requests.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(s.latency).await;
    axum::Json(json!({
        "data": (0..3u64).map(|i| employee(tenant, i, 0)).collect::<Vec<_>>()
    }))
}

impl SlowProvider {
    fn start(rt: &tokio::runtime::Runtime, latency: Duration) -> SlowProvider {
        let requests = Arc::new(AtomicU64::new(0));
        let state = SlowState {
            latency,
            requests: requests.clone(),
        };
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind the provider");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new()
            .route("/t/{tenant}/employees", axum::routing::get(tenant_page))
            .with_state(state);
        rt.spawn(async move { axum::serve(listener, app).await });
        SlowProvider { base, requests }
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

fn config_text(state: &Path, provider: &str, sink: &str, accounts: usize, polls: usize) -> String {
    let mut text = format!(
        r#"[daemon]
state_dir = {state:?}
log_format = "json"
max_concurrent_polls = {polls}

[providers.hris]
base_url = "{provider}"
auth = {{ type = "bearer", token = "{TOKEN}" }}
pagination = {{ type = "page", page_param = "page", size_param = "per_page", size = {PAGE_SIZE} }}
records = "/data"
id = "/id"

[providers.hris.resources.hris_employees]
path = "/employees"

"#,
        state = state.display().to_string(),
    );
    for i in 0..accounts {
        text += &account(
            &format!("t{i:06}"),
            &format!("base_url = \"{provider}/t/{i}\""),
        );
    }
    text + &webhook(sink, "") + &pg_store_table("30s")
}

/// CPU time (user + system) of a process so far.
fn cpu_of(pid: i32) -> Duration {
    let ticks = cpu_ticks(pid).unwrap_or(0);
    Duration::from_secs_f64(ticks as f64 / clock_ticks_per_sec() as f64)
}

/// The database's transaction and row counters.
#[derive(Clone, Copy, Default)]
struct DbStats {
    xacts: i64,
    read: i64,
    written: i64,
}

fn db_stats(server: &PgServer, db: &str) -> DbStats {
    let q = |col: &str| {
        server.query_in(
            db,
            &format!(
                "SELECT ({col})::BIGINT FROM pg_stat_database WHERE datname = current_database()"
            ),
        )
    };
    DbStats {
        xacts: q("xact_commit + xact_rollback"),
        read: q("tup_returned + tup_fetched"),
        written: q("tup_inserted + tup_updated + tup_deleted"),
    }
}

struct RunResult {
    instances: usize,
    wall: Duration,
    requests: u64,
    /// Each process's "poll finished" lines.
    per_instance: Vec<usize>,
    xacts: i64,
    read: i64,
    written: i64,
    backend_cpu: Duration,
    synthd_cpu: Duration,
}

struct Setup {
    server: PgServer,
    seed: String,
    provider: SlowProvider,
    sink: Sink,
    accounts: usize,
    polls: usize,
    dir: tempfile::TempDir,
}

fn spawn_run(config: &Path, url: &str, log: &Path) -> Child {
    let mut cmd = synthd(config, &["run"]);
    let file = std::fs::File::create(log).unwrap();
    cmd.env(PG_URL_ENV, url)
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file);
    cmd.spawn().expect("spawn synthd run")
}

impl Setup {
    fn config(&self, name: &str, polls: usize) -> PathBuf {
        let path = path_in(&self.dir, &format!("{name}.toml"));
        write(
            &path,
            &config_text(
                &path_in(&self.dir, &format!("state-{name}")),
                &self.provider.base,
                &self.sink.url,
                self.accounts,
                polls,
            ),
        );
        path
    }

    fn run(&self, k: usize) -> RunResult {
        let db = self
            .server
            .create_db(&format!("scaleout{k}"), Some(&self.seed));
        let url = self.server.url_of(&db);
        let before = db_stats(&self.server, &db);
        let requests_before = self.provider.requests();
        let started_ms = chrono::Utc::now().timestamp_millis();
        let t0 = Instant::now();
        let mut children: Vec<(Child, PathBuf)> = (0..k)
            .map(|i| {
                let config = self.config(&format!("run{k}-{i}"), self.polls);
                let log = path_in(&self.dir, &format!("run{k}-{i}.log"));
                (spawn_run(&config, &url, &log), log)
            })
            .collect();
        let mut checks = 0;
        let done_sql =
            format!("SELECT COUNT(*) FROM poll_state WHERE last_finished_at >= {started_ms}");
        loop {
            checks += 1;
            let done = self.server.query_in(&db, &done_sql);
            if done as usize >= self.accounts {
                break;
            }
            for (c, log) in &mut children {
                if let Some(status) = c.try_wait().unwrap() {
                    panic!(
                        "synthd run exited early ({status}):\n{}",
                        std::fs::read_to_string(log).unwrap_or_default()
                    );
                }
            }
            assert!(
                t0.elapsed() < Duration::from_secs(600),
                "{done} of {} accounts polled after 10 minutes",
                self.accounts
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let wall = t0.elapsed();
        let requests = self.provider.requests() - requests_before;
        // The server backends serving the processes, read while they live.
        let backends = backend_pids(&self.server, &db);
        let backend_cpu: Duration = backends.iter().map(|&p| cpu_of(p)).sum();
        let synthd_cpu: Duration = children.iter().map(|(c, _)| cpu_of(c.id() as i32)).sum();
        for (c, _) in &children {
            // SAFETY: signalling our own child, not yet reaped.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
        }
        let mut per_instance = Vec::new();
        for (c, log) in &mut children {
            let deadline = Instant::now() + Duration::from_secs(30);
            while c.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            per_instance.push(
                std::fs::read_to_string(log)
                    .unwrap_or_default()
                    .matches("\"poll finished\"")
                    .count(),
            );
        }
        // Backend exit flushes their statistics.
        std::thread::sleep(Duration::from_millis(1500));
        let after = db_stats(&self.server, &db);
        self.server.drop_db(&db);
        RunResult {
            instances: k,
            wall,
            requests,
            per_instance,
            // Our own progress checks are one transaction each (and the
            // statistics queries a few).
            xacts: after.xacts - before.xacts - checks - 8,
            read: after.read - before.read,
            written: after.written - before.written,
            backend_cpu,
            synthd_cpu,
        }
    }
}

/// The pids of the client backends connected to `db`, except the asking one.
fn backend_pids(server: &PgServer, db: &str) -> Vec<i32> {
    let n = server.query_in(
        db,
        "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database()
         AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
    );
    (0..n)
        .map(|i| {
            server.query_in(
                db,
                &format!(
                    "SELECT pid::BIGINT FROM pg_stat_activity WHERE datname = current_database()
                     AND backend_type = 'client backend' AND pid <> pg_backend_pid()
                     ORDER BY pid OFFSET {i} LIMIT 1"
                ),
            ) as i32
        })
        .collect()
}

fn main() {
    let server_url = std::env::var("SCALEOUT_BENCH_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let server = PgServer { url: server_url };
    if let Err(e) = server.query_i64("SELECT 1::BIGINT") {
        println!(
            "scale-out benchmark: skipped (no PostgreSQL answers at SCALEOUT_BENCH_POSTGRES: {e})"
        );
        return;
    }
    let accounts = env_usize("SCALEOUT_ACCOUNTS", 3000);
    let page_ms = env_usize("SCALEOUT_PAGE_MS", 50);
    let polls = env_usize("SCALEOUT_POLLS", 8);
    let ks = env_list("SCALEOUT_INSTANCES", &[1, 2, 3]);
    let rt = runtime();
    let provider = SlowProvider::start(&rt, Duration::from_millis(page_ms as u64));
    let sink = Sink::start(&rt, Duration::ZERO);
    println!(
        "scale-out benchmark: {} accounts, {page_ms} ms per page, max_concurrent_polls = {polls}, on {}",
        thousands(accounts as u64),
        machine()
    );

    let mut setup = Setup {
        seed: String::new(),
        server: server.clone(),
        provider,
        sink,
        accounts,
        polls,
        dir: temp_dir("synthd-scaleout-"),
    };
    // The template: every account baselined, then made due.
    let seed = server.create_db("scaleout_seed", None);
    setup.seed = seed.clone();
    let t = Instant::now();
    let config = setup.config("seed", 64);
    let mut cmd = synthd(&config, &["sync", "--json"]);
    cmd.env(PG_URL_ENV, server.url_of(&seed));
    let m = run_measured(cmd);
    m.expect_code(0, "the seeding sync");
    assert_eq!(
        m.json()["polls"].as_array().map(Vec::len),
        Some(accounts),
        "the seeding sync polls every account"
    );
    server.execute_in(
        &seed,
        "UPDATE poll_state SET last_started_at = last_started_at - 7200000,
             last_finished_at = last_finished_at - 7200000;
         DELETE FROM instances;",
    );
    println!(
        "  seeded {} baselined accounts in {:.1} s",
        thousands(accounts as u64),
        t.elapsed().as_secs_f64()
    );

    let mut results: Vec<RunResult> = Vec::new();
    for &k in &ks {
        let r = setup.run(k);
        println!(
            "  {k} process(es): {:.2} s, {} provider requests, polls per process {:?}",
            r.wall.as_secs_f64(),
            r.requests,
            r.per_instance
        );
        results.push(r);
    }
    server.drop_db(&seed);

    let one = results.iter().find(|r| r.instances == 1).map(|r| r.wall);
    let n = accounts as f64;
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            let rate = n / r.wall.as_secs_f64();
            vec![
                r.instances.to_string(),
                format!("{:.2}", r.wall.as_secs_f64()),
                thousands(rate as u64),
                one.map_or("-".into(), |w| {
                    times(w.as_secs_f64() / r.wall.as_secs_f64())
                }),
                thousands(r.requests),
                format!("{:.1}", r.xacts as f64 / n),
                format!("{:.0}", r.read as f64 / n),
                format!("{:.1}", r.written as f64 / n),
                format!("{:.2}", r.backend_cpu.as_secs_f64() * 1000.0 / n),
                format!("{:.2}", r.synthd_cpu.as_secs_f64() * 1000.0 / n),
                format!("{:.0}", r.xacts as f64 / r.wall.as_secs_f64()),
            ]
        })
        .collect();
    println!();
    println!(
        "scale-out: one round of {} due accounts ({page_ms} ms per page, one page each)",
        thousands(accounts as u64)
    );
    print!(
        "{}",
        table(
            &[
                "processes",
                "wall s",
                "polls/s",
                "speed-up",
                "provider requests",
                "xacts/poll",
                "rows read/poll",
                "rows written/poll",
                "PG CPU ms/poll",
                "synthd CPU ms/poll",
                "xacts/s",
            ],
            &rows
        )
    );
    println!(
        "speed-up: the 1-process wall time ÷ this one. provider requests: one per account means no poll\n\
         was repeated by another process. xacts: pg_stat_database commits + rollbacks of the run's database\n\
         (the benchmark's own progress queries subtracted); rows: tup_returned + tup_fetched, and\n\
         inserted + updated + deleted. PG CPU: user + system time of the server backends serving the\n\
         processes (from their start, so connecting and the schema check are included)."
    );
    println!();
    if let Some(three) = results.iter().find(|r| r.instances == 3)
        && let Some(w1) = one
    {
        let x = w1.as_secs_f64() / three.wall.as_secs_f64();
        println!(
            "target: 3 processes ≥ 2.5× one: {} ({})",
            times(x),
            if x >= 2.5 { "met" } else { "MISSED" }
        );
    }
    // On paper: 100,000 accounts polled hourly, one page each, with the
    // per-poll costs measured at the largest process count.
    if let Some(r) = results.iter().max_by_key(|r| r.instances) {
        let per_s = 100_000.0 / 3600.0;
        let xacts = r.xacts as f64 / n;
        let cpu_ms = r.backend_cpu.as_secs_f64() * 1000.0 / n;
        println!(
            "on paper, 100,000 accounts hourly (one page each; costs per poll from the {}-process run):\n\
             \x20 {per_s:.1} polls/s → {:.0} transactions/s, {:.0} rows read/s, {:.0} rows written/s,\n\
             \x20 PostgreSQL CPU {:.1} ms/s ≈ {:.1} % of one core; each further page adds one commit\n\
             \x20 (plus heartbeats: one per process every lease/4 = 7.5 s here, negligible).",
            r.instances,
            per_s * xacts,
            per_s * r.read as f64 / n,
            per_s * r.written as f64 / n,
            per_s * cpu_ms,
            per_s * cpu_ms / 10.0,
        );
    }
    drop(rt);
}
