//! Crash safety and one daemon per state directory, against the real binary.
//!
//! The crash loop SIGKILLs `synthd sync` and `synthd run` at random moments
//! while they poll a provider we control and deliver to a receiver that
//! records every request. The provider's record set changes between
//! processes (creates, updates, deletes) and, in some epochs, records are
//! updated *while* a process pages through them. An *epoch* is the life of
//! one synthd process; the events it committed are the rows of `events`
//! added since the previous epoch.
//!
//! After every epoch, with no synthd running, the database must satisfy:
//!
//! - `PRAGMA integrity_check` is `ok`;
//! - the stored hashes moved exactly as the epoch's events say: for every
//!   record, no event when its stored hash did not change, one `created` when
//!   it appeared, one `updated` when it changed, one `deleted` when it went —
//!   so an event is never lost (a hash committed without its event), never
//!   invented, and never emitted twice for one change (two event ids);
//! - every stored hash is one the provider actually served during the epoch;
//! - every event has a delivery row per subscribed webhook, and every
//!   pending delivery has a next attempt time (nothing stuck).
//!
//! At the end a clean `sync` (receiver healthy, retries made due) drains the
//! outbox; then the stored hashes equal the provider's final state, and the
//! receiver has accepted every event (same id, type and record) at least once
//! on every subscribed webhook.
//!
//! The pace of time is simulated in SQL: moving `poll_state.last_started_at`
//! back makes an account overdue for `run`, and moving pending deliveries'
//! `next_attempt_at` to now makes their retries due.
//!
//! The same loop runs once against the PostgreSQL store (`[store] backend =
//! "postgres"`, a fresh database per run, dropped after; skipped with one
//! line when no server answers, unless `SYNTHD_REQUIRE_POSTGRES=1`). The
//! checks read the same tables through [`Db`]; there `integrity_check` is
//! amcheck's (`verify_heapam` on every table, `bt_index_check` on every
//! index), and as there is no state-directory lock a killed process leaves
//! its poll and delivery claims behind: every epoch starts by letting them
//! lapse, as a lease does after a death.
//!
//! `cargo test` runs 40 epochs on SQLite and 25 on PostgreSQL; `cargo test
//! -- --ignored` runs the 300-epoch soak. `SYNTHD_CRASH_SEED` and
//! `SYNTHD_SOAK_EPOCHS` override the defaults.

mod common;

use common::{PgDb, Receiver, Reply, lock, serve, wait_exit, wait_until};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use rand::prelude::*;
use rusqlite::{Connection, OpenFlags};
use serde_json::{Value, json};
use synthd::detect::{Hash, Hasher};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const TOKEN: &str = "crash-provider-token-7781";
const URL_TOKEN: &str = "crash-hook-token-1187";
const RESOURCE: &str = "hris_employees";
const PAGE_SIZE: usize = 7;

// ---------------------------------------------------------------------------
// The provider: records with version counters, every change known
// ---------------------------------------------------------------------------

fn record_json(id: &str, version: u64) -> Value {
    json!({
        "id": id,
        "name": format!("Person {id}"),
        "email": format!("{id}@crash.example"),
        "salary": 50_000 + version,
        "version": version,
    })
}

#[derive(Default, Clone)]
struct World {
    /// Current state: record id → version.
    records: BTreeMap<String, u64>,
    /// Every version each record had during the current epoch.
    epoch_versions: BTreeMap<String, BTreeSet<u64>>,
    next_id: u64,
    next_version: u64,
    /// Changes made, for the report.
    changes: u64,
}

impl World {
    fn start_epoch(&mut self) {
        self.epoch_versions = self
            .records
            .iter()
            .map(|(id, v)| (id.clone(), BTreeSet::from([*v])))
            .collect();
    }

    fn create(&mut self) {
        self.next_id += 1;
        self.next_version += 1;
        let id = format!("r{:04}", self.next_id);
        self.records.insert(id.clone(), self.next_version);
        self.epoch_versions
            .entry(id)
            .or_default()
            .insert(self.next_version);
        self.changes += 1;
    }

    fn update(&mut self, rng: &mut StdRng) {
        let Some(id) = self.records.keys().choose(rng).cloned() else {
            return;
        };
        self.next_version += 1;
        self.records.insert(id.clone(), self.next_version);
        self.epoch_versions
            .entry(id)
            .or_default()
            .insert(self.next_version);
        self.changes += 1;
    }

    fn delete(&mut self, rng: &mut StdRng) {
        let Some(id) = self.records.keys().choose(rng).cloned() else {
            return;
        };
        self.records.remove(&id);
        self.epoch_versions.remove(&id);
        self.changes += 1;
    }
}

async fn employees(
    State(world): State<Arc<Mutex<World>>>,
    Query(q): Query<HashMap<String, String>>,
) -> axum::Json<Value> {
    let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    let per: usize = q
        .get("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(PAGE_SIZE);
    let data: Vec<Value> = lock(&world)
        .records
        .iter()
        .skip(page.saturating_sub(1) * per)
        .take(per)
        .map(|(id, v)| record_json(id, *v))
        .collect();
    // A little latency per page spreads the kill points over the scan.
    tokio::time::sleep(Duration::from_millis(6)).await;
    axum::Json(json!({ "data": data }))
}

// ---------------------------------------------------------------------------
// The receiver: the shared verifying one, failing some requests
// ---------------------------------------------------------------------------

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Request {
    path: String,
    id: String,
    kind: String,
    record_id: Option<String>,
    accepted: bool,
}

/// How often the receiver fails, drawn from a seeded generator.
struct Faults {
    fail_rate: f64,
    rng: StdRng,
}

/// The shared verifying receiver (tests/common), answering 500 to a
/// `fail_rate` of requests and each after 5 to 25 ms: the delivery phase
/// lasts long enough for kills to land in it.
async fn start_receiver(fail_rate: f64, seed: u64) -> (Receiver, Arc<Mutex<Faults>>) {
    let rx = Receiver::start(&[SECRET], None).await;
    let faults = Arc::new(Mutex::new(Faults {
        fail_rate,
        rng: StdRng::seed_from_u64(seed),
    }));
    let f = faults.clone();
    rx.script(move |_| {
        let mut f = lock(&f);
        let rate = f.fail_rate;
        let fail = f.rng.random_bool(rate);
        let delay = Duration::from_millis(f.rng.random_range(5..25u64));
        Some(Reply::status(if fail { 500 } else { 200 }).delay(delay))
    });
    (rx, faults)
}

fn requests(rx: &Receiver) -> Vec<Request> {
    rx.requests()
        .iter()
        .map(|r| {
            let body = r.json();
            Request {
                path: r.path().to_string(),
                id: r.header("webhook-id"),
                kind: body["type"].as_str().unwrap_or_default().to_string(),
                record_id: body["data"]["record_id"].as_str().map(str::to_string),
                accepted: r.status < 300,
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------

fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin!("synthd").to_path_buf()
}

/// The config of a synthd on `state`; its store is PostgreSQL at `pg_url`
/// when given, else SQLite in `state`.
fn config_text(state: &Path, provider: &str, receiver: &str, pg_url: Option<&str>) -> String {
    let store = pg_url.map_or(String::new(), |url| {
        format!("[store]\nbackend = \"postgres\"\nurl = \"{url}\"\npool_size = 4\n")
    });
    format!(
        r#"
[daemon]
state_dir = "{state}"
log_format = "json"

{store}

[providers.p]
base_url = "{provider}/v1"
auth = {{ type = "bearer", token = "{TOKEN}" }}
records = "/data"
pagination = {{ type = "page", page_param = "page", size_param = "per_page", size = {PAGE_SIZE} }}

[providers.p.resources.{RESOURCE}]
path = "/employees"

[[accounts]]
id = "acme"
provider = "p"
interval = "5m"
emit_initial = true

[[webhooks]]
id = "hr"
url = "{receiver}/hr?token={URL_TOKEN}"
events = ["*"]
secret = "{SECRET}"
timeout = "2s"

[[webhooks]]
id = "audit"
url = "{receiver}/audit"
events = ["{RESOURCE}.*"]
secret = "{SECRET}"
timeout = "2s"
"#,
        state = state.display()
    )
}

fn synthd(dir: &Path, cfg: &Path, command: &str, n: usize) -> Child {
    Command::new(bin())
        .arg("--config")
        .arg(cfg)
        .arg(command)
        .stdin(Stdio::null())
        .stdout(File::create(dir.join(format!("out-{n}.log"))).unwrap())
        .stderr(File::create(dir.join(format!("err-{n}.log"))).unwrap())
        .spawn()
        .unwrap()
}

fn output_of(dir: &Path, n: usize) -> String {
    let out = std::fs::read_to_string(dir.join(format!("out-{n}.log"))).unwrap_or_default();
    let err = std::fs::read_to_string(dir.join(format!("err-{n}.log"))).unwrap_or_default();
    format!("stdout:\n{out}\nstderr:\n{err}")
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: signalling our own child process, which has not been reaped.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

enum Ending {
    Killed,
    Terminated,
    Finished,
}

/// Runs a process until it exits or `after` elapses, then ends it with
/// SIGKILL (or SIGTERM when `graceful`).
async fn run_until(child: &mut Child, after: Duration, graceful: bool) -> (Ending, ExitStatus) {
    let deadline = Instant::now() + after;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (Ending::Finished, status);
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    if graceful {
        signal(child, libc::SIGTERM);
        (
            Ending::Terminated,
            wait_exit(child, Duration::from_secs(20)).await,
        )
    } else {
        child.kill().unwrap();
        (Ending::Killed, child.wait().unwrap())
    }
}

// ---------------------------------------------------------------------------
// The checks
// ---------------------------------------------------------------------------

fn read_only(db: &Path) -> Connection {
    Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap()
}

/// One value of a row read from either backend.
#[derive(Debug, Clone)]
enum Cell {
    Null,
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
}

impl Cell {
    fn int(&self) -> i64 {
        self.opt_int()
            .unwrap_or_else(|| panic!("{self:?} is not a number"))
    }

    fn opt_int(&self) -> Option<i64> {
        match self {
            Cell::Null => None,
            Cell::Int(n) => Some(*n),
            other => panic!("{other:?} is not a number"),
        }
    }

    fn text(&self) -> String {
        self.opt_text()
            .unwrap_or_else(|| panic!("{self:?} is not text"))
    }

    fn opt_text(&self) -> Option<String> {
        match self {
            Cell::Null => None,
            Cell::Text(t) => Some(t.clone()),
            other => panic!("{other:?} is not text"),
        }
    }

    fn bytes(&self) -> Vec<u8> {
        match self {
            Cell::Bytes(b) => b.clone(),
            other => panic!("{other:?} is not a blob"),
        }
    }
}

/// The store the checks read (with no synthd running) and the simulated
/// time edits: the SQLite file of the state directory, or the PostgreSQL
/// database. Both hold the same tables and columns for what is read here;
/// the SQL is shared (`$1` is a parameter in both).
enum Db {
    Sqlite(PathBuf),
    Postgres(tokio_postgres::Client),
}

impl Db {
    async fn postgres(url: &str) -> Db {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect to the test database: {e}"));
        tokio::spawn(conn);
        // PostgreSQL's counterpart of `PRAGMA integrity_check`.
        client
            .batch_execute("CREATE EXTENSION IF NOT EXISTS amcheck")
            .await
            .unwrap_or_else(|e| panic!("CREATE EXTENSION amcheck: {e}"));
        Db::Postgres(client)
    }

    async fn query(&self, sql: &str, params: &[i64]) -> Vec<Vec<Cell>> {
        match self {
            Db::Sqlite(path) => {
                let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
                    .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
                let mut st = conn.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
                let n = st.column_count();
                st.query_map(rusqlite::params_from_iter(params), |r| {
                    (0..n)
                        .map(|i| {
                            use rusqlite::types::ValueRef;
                            Ok(match r.get_ref(i)? {
                                ValueRef::Null => Cell::Null,
                                ValueRef::Integer(v) => Cell::Int(v),
                                ValueRef::Text(t) => {
                                    Cell::Text(String::from_utf8(t.to_vec()).unwrap())
                                }
                                ValueRef::Blob(b) => Cell::Bytes(b.to_vec()),
                                ValueRef::Real(v) => panic!("{sql}: unexpected real {v}"),
                            })
                        })
                        .collect()
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
            }
            Db::Postgres(client) => {
                use tokio_postgres::types::{ToSql, Type};
                let params: Vec<&(dyn ToSql + Sync)> =
                    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
                let rows = client
                    .query(sql, &params)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                rows.iter()
                    .map(|row| {
                        row.columns()
                            .iter()
                            .enumerate()
                            .map(|(i, col)| {
                                let t = col.type_();
                                let cell = if *t == Type::INT8 {
                                    row.get::<_, Option<i64>>(i).map(Cell::Int)
                                } else if *t == Type::INT4 {
                                    row.get::<_, Option<i32>>(i).map(|v| Cell::Int(v.into()))
                                } else if *t == Type::TEXT {
                                    row.get::<_, Option<String>>(i).map(Cell::Text)
                                } else if *t == Type::BYTEA {
                                    row.get::<_, Option<Vec<u8>>>(i).map(Cell::Bytes)
                                } else {
                                    panic!("{sql}: unexpected column type {t}")
                                };
                                cell.unwrap_or(Cell::Null)
                            })
                            .collect()
                    })
                    .collect()
            }
        }
    }

    /// The number a `SELECT COUNT(*)` answers.
    async fn count(&self, sql: &str, params: &[i64]) -> i64 {
        self.query(sql, params).await[0][0].int()
    }

    async fn execute(&self, sql: &str) {
        match self {
            Db::Sqlite(path) => {
                let conn = Connection::open(path).unwrap();
                conn.busy_timeout(Duration::from_secs(5)).unwrap();
                conn.execute_batch(sql).unwrap();
            }
            Db::Postgres(client) => client
                .batch_execute(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}")),
        }
    }

    /// Asserts that the database's own consistency check finds nothing.
    async fn assert_integrity(&self, epoch: usize) {
        match self {
            Db::Sqlite(_) => {
                let rows = self.query("PRAGMA integrity_check", &[]).await;
                assert_eq!(rows[0][0].text(), "ok", "epoch {epoch}: integrity_check");
            }
            Db::Postgres(_) => {
                let corrupt = self
                    .query(
                        "SELECT c.relname::TEXT, v.msg FROM pg_class c
                         JOIN pg_namespace n ON n.oid = c.relnamespace,
                         LATERAL verify_heapam(c.oid) v
                         WHERE n.nspname = 'public' AND c.relkind = 'r'",
                        &[],
                    )
                    .await;
                assert!(
                    corrupt.is_empty(),
                    "epoch {epoch}: verify_heapam: {corrupt:?}"
                );
                // bt_index_check raises an error on a corrupt index.
                let indexes = self
                    .count(
                        "SELECT COUNT(*) FROM (SELECT bt_index_check(c.oid, true) FROM pg_index i
                         JOIN pg_class c ON c.oid = i.indexrelid
                         JOIN pg_namespace n ON n.oid = c.relnamespace
                         JOIN pg_am a ON a.oid = c.relam
                         WHERE n.nspname = 'public' AND a.amname = 'btree') checked",
                        &[],
                    )
                    .await;
                assert!(indexes > 0, "epoch {epoch}: no index checked");
            }
        }
    }

    /// Pending deliveries due now: work a process left unfinished.
    async fn due_pending_deliveries(&self) -> u64 {
        self.count(
            "SELECT COUNT(*) FROM deliveries WHERE status = 'pending' AND next_attempt_at <= $1",
            &[chrono::Utc::now().timestamp_millis()],
        )
        .await as u64
    }

    /// Simulates time passing: the account becomes overdue and pending
    /// retries become due.
    async fn let_time_pass(&self) {
        self.execute(
            "UPDATE poll_state SET last_started_at = last_started_at - 7200000;
             UPDATE deliveries SET next_attempt_at = 0 WHERE status = 'pending';",
        )
        .await;
    }

    /// With PostgreSQL, a killed process's poll and delivery claims hold
    /// until their lease runs out: lets them lapse, as time would. (SQLite
    /// has no claims; its lock dies with the process.)
    async fn lapse_leases(&self) {
        if let Db::Postgres(_) = self {
            self.execute(
                "UPDATE poll_state SET claim_expires = 0 WHERE claim_expires IS NOT NULL;
                 UPDATE deliveries SET claim_expires = 0 WHERE claim_expires IS NOT NULL;",
            )
            .await;
        }
    }
}

#[derive(Default)]
struct Tally {
    epochs: u64,
    kills: u64,
    kills_before_poll: u64,
    kills_mid_poll: u64,
    /// The poll done, due deliveries not yet all attempted.
    kills_mid_delivery: u64,
    /// The poll done and nothing due: a finished sync about to exit, or an
    /// idle daemon.
    kills_idle: u64,
    sigterms: u64,
    finished: u64,
    concurrent_updates: u64,
    events: u64,
    deliveries_checked: u64,
    receiver_duplicates: u64,
    receiver_failures: u64,
}

/// What the database says, between epochs.
struct Checker {
    db: Db,
    last_seq: i64,
    /// record id → version, decoded from the stored hash.
    stored: BTreeMap<String, u64>,
    /// hash → (record id, version) of every version ever served.
    versions: HashMap<Hash, (String, u64)>,
    hasher: Hasher,
    account_events: u64,
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Poll {
    NotStarted,
    Partial,
    Finished,
}

impl Checker {
    fn learn(&mut self, world: &World) {
        for (id, vs) in &world.epoch_versions {
            for v in vs {
                let text = record_json(id, *v).to_string();
                let hash = synthd::detect::Digester::new(
                    synthd::detect::Shape {
                        id: synthd::json::Pointer::parse("/id").unwrap(),
                        ignore: Vec::new(),
                    },
                    self.hasher.clone(),
                )
                .digest(&text, 0)
                .unwrap()
                .hash;
                self.versions.insert(hash, (id.clone(), *v));
            }
        }
    }

    async fn poll_state(&self) -> Option<(i64, Option<i64>, Option<i64>)> {
        let rows = self
            .db
            .query(
                "SELECT scan_seq, last_started_at, last_finished_at FROM poll_state",
                &[],
            )
            .await;
        rows.first()
            .map(|r| (r[0].int(), r[1].opt_int(), r[2].opt_int()))
    }

    /// Checks one epoch; returns the number of events it committed.
    async fn check_epoch(&mut self, epoch: usize, world: &World, scan_before: i64) -> (u64, Poll) {
        self.db.assert_integrity(epoch).await;

        let events: Vec<(i64, String, String, Option<String>)> = self
            .db
            .query(
                "SELECT seq, id, type, record_id FROM events WHERE seq > $1 ORDER BY seq",
                &[self.last_seq],
            )
            .await
            .iter()
            .map(|r| (r[0].int(), r[1].text(), r[2].text(), r[3].opt_text()))
            .collect();
        let mut by_record: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (seq, id, kind, record) in &events {
            self.last_seq = self.last_seq.max(*seq);
            match record {
                Some(r) => by_record.entry(r.clone()).or_default().push(kind.clone()),
                None => {
                    assert_eq!(kind, "account.created", "epoch {epoch}: event {id}");
                    self.account_events += 1;
                    assert_eq!(self.account_events, 1, "account.created emitted twice");
                }
            }
        }

        let now: BTreeMap<String, u64> = self
            .db
            .query(
                "SELECT r.record_id, r.hash FROM records r JOIN streams s ON s.id = r.stream
                 WHERE s.account_id = 'acme'",
                &[],
            )
            .await
            .iter()
            .map(|row| {
                let (id, hash) = (row[0].text(), row[1].bytes());
                let hash: Hash = hash.try_into().unwrap();
                let (vid, version) = self.versions.get(&hash).unwrap_or_else(|| {
                    panic!("epoch {epoch}: stored hash of {id} matches no version ever served")
                });
                assert_eq!(
                    vid, &id,
                    "epoch {epoch}: stored hash belongs to another record"
                );
                (id, *version)
            })
            .collect();

        let ids: BTreeSet<&String> = self.stored.keys().chain(now.keys()).collect();
        for id in ids.into_iter().chain(by_record.keys()) {
            let got = by_record.get(id).cloned().unwrap_or_default();
            let expected: Vec<String> = match (self.stored.get(id), now.get(id)) {
                (None, None) => vec![],
                (None, Some(_)) => vec![format!("{RESOURCE}.created")],
                (Some(_), None) => vec![format!("{RESOURCE}.deleted")],
                (Some(a), Some(b)) if a == b => vec![],
                (Some(_), Some(_)) => vec![format!("{RESOURCE}.updated")],
            };
            assert_eq!(
                got,
                expected,
                "epoch {epoch}: record {id}: stored version {:?} -> {:?}, but the events committed were {got:?}",
                self.stored.get(id),
                now.get(id)
            );
            if let (Some(v), false) = (now.get(id), self.stored.get(id) == now.get(id)) {
                let served = world.epoch_versions.get(id);
                assert!(
                    served.is_some_and(|s| s.contains(v)),
                    "epoch {epoch}: {id} stored at version {v}, which the provider did not serve in this epoch ({served:?})"
                );
            }
            if self.stored.contains_key(id) && !now.contains_key(id) {
                assert!(
                    !world.records.contains_key(id),
                    "epoch {epoch}: {id} deleted while the provider still has it"
                );
            }
        }
        self.stored = now;

        let orphans = self
            .db
            .count(
                "SELECT COUNT(*) FROM events e WHERE NOT EXISTS
                   (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.webhook_id = 'hr')
                 OR (e.record_id IS NOT NULL AND NOT EXISTS
                   (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.webhook_id = 'audit'))",
                &[],
            )
            .await;
        assert_eq!(orphans, 0, "epoch {epoch}: events without their deliveries");
        let stuck = self
            .db
            .count(
                "SELECT COUNT(*) FROM deliveries WHERE status = 'pending' AND next_attempt_at IS NULL",
                &[],
            )
            .await;
        assert_eq!(
            stuck, 0,
            "epoch {epoch}: pending deliveries with no next attempt"
        );

        let poll = match self.poll_state().await {
            Some((seq, _, _)) if seq == scan_before => Poll::NotStarted,
            Some((_, Some(start), Some(end))) if end >= start => Poll::Finished,
            Some(_) => Poll::Partial,
            None => Poll::NotStarted,
        };
        (events.len() as u64, poll)
    }
}

/// A provider, a receiver and a config pointing synthd at them.
struct Setup {
    world: Arc<Mutex<World>>,
    rx: Receiver,
    faults: Arc<Mutex<Faults>>,
    provider: String,
    receiver: String,
    dir: tempfile::TempDir,
    state: PathBuf,
    cfg: PathBuf,
}

/// `records` employees at the provider; the receiver fails `fail_rate` of
/// requests, drawn from `seed`; the store is PostgreSQL at `pg_url` when
/// given.
async fn setup(records: usize, fail_rate: f64, seed: u64, pg_url: Option<&str>) -> Setup {
    let world = Arc::new(Mutex::new(World::default()));
    {
        let mut w = lock(&world);
        for _ in 0..records {
            w.create();
        }
    }
    let provider = serve(
        Router::new()
            .route("/v1/employees", axum::routing::get(employees))
            .with_state(world.clone()),
    )
    .await;
    let (rx, faults) = start_receiver(fail_rate, seed).await;
    let receiver = rx.base.clone();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cfg = dir.path().join("synthd.toml");
    std::fs::write(&cfg, config_text(&state, &provider, &receiver, pg_url)).unwrap();
    Setup {
        world,
        rx,
        faults,
        provider,
        receiver,
        dir,
        state,
        cfg,
    }
}

/// The crash loop on SQLite, or on the PostgreSQL database `pg` when given.
async fn crash_loop(seed: u64, epochs: usize, pg: Option<&PgDb>) {
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);
    let Setup {
        world,
        rx,
        faults,
        dir,
        state,
        cfg,
        ..
    } = setup(40, 0.15, seed ^ 0xfeed, pg.map(|p| p.url.as_str())).await;
    let db = match pg {
        Some(pg) => Db::postgres(&pg.url).await,
        None => Db::Sqlite(state.join("synthd.db")),
    };
    let backend = if pg.is_some() { "PostgreSQL" } else { "SQLite" };
    let mut checker = Checker {
        db,
        last_seq: 0,
        stored: BTreeMap::new(),
        versions: HashMap::new(),
        hasher: Hasher::new(None),
        account_events: 0,
    };
    let mut tally = Tally::default();

    // Epoch 0: one uninterrupted sync, to learn how long a sync takes.
    lock(&world).start_epoch();
    checker.learn(&lock(&world));
    let t = Instant::now();
    let mut child = synthd(dir.path(), &cfg, "sync", 0);
    let status = wait_exit(&mut child, Duration::from_secs(30)).await;
    // How long a sync takes, learnt as we go: kills land within it.
    let mut sync_time = t.elapsed();
    assert!(status.success(), "{}", output_of(dir.path(), 0));
    tally.epochs += 1;
    let w = lock(&world).clone();
    tally.events += checker.check_epoch(0, &w, 0).await.0;

    for epoch in 1..=epochs {
        {
            let mut w = lock(&world);
            w.start_epoch();
            for _ in 0..rng.random_range(0..=4) {
                match rng.random_range(0..10) {
                    0..=2 => w.create(),
                    3..=7 => w.update(&mut rng),
                    _ if w.records.len() > 30 => w.delete(&mut rng),
                    _ => w.create(),
                }
            }
            checker.learn(&w);
        }
        checker.db.lapse_leases().await;
        if rng.random_bool(0.5) {
            checker.db.let_time_pass().await;
        }
        let scan_before = checker.poll_state().await.map_or(0, |s| s.0);
        let use_run = rng.random_bool(0.3);
        let graceful = use_run && rng.random_bool(0.2);
        let after = if graceful {
            sync_time.mul_f64(rng.random_range(0.5..2.0))
        } else {
            sync_time.mul_f64(rng.random_range(0.0..2.0))
        };
        // Some epochs update records while synthd pages through them.
        let stop_updates = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let updater = rng.random_bool(0.3).then(|| {
            let (world, stop) = (world.clone(), stop_updates.clone());
            let mut rng = StdRng::seed_from_u64(rng.random());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(rng.random_range(2..15))).await;
                    lock(&world).update(&mut rng);
                    n += 1;
                }
                n
            })
        });

        let mut child = synthd(
            dir.path(),
            &cfg,
            if use_run { "run" } else { "sync" },
            epoch,
        );
        let spawned = Instant::now();
        let (ending, status) = run_until(&mut child, after, graceful).await;
        // Deliveries the process left due: it died while delivering.
        let due_left = checker.db.due_pending_deliveries().await;
        if matches!(ending, Ending::Finished) && !use_run {
            sync_time = (sync_time + spawned.elapsed()) / 2;
        }
        stop_updates.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(u) = updater {
            tally.concurrent_updates += u.await.unwrap();
        }
        checker.learn(&lock(&world));
        let w = lock(&world).clone();
        let (events, poll) = checker.check_epoch(epoch, &w, scan_before).await;
        tally.epochs += 1;
        tally.events += events;
        match ending {
            Ending::Killed => {
                tally.kills += 1;
                match poll {
                    Poll::NotStarted => tally.kills_before_poll += 1,
                    Poll::Partial => tally.kills_mid_poll += 1,
                    Poll::Finished if due_left > 0 => tally.kills_mid_delivery += 1,
                    Poll::Finished => tally.kills_idle += 1,
                }
            }
            Ending::Terminated => {
                tally.sigterms += 1;
                // A SIGTERM that lands before the handlers are installed
                // ends the process like a kill; after, it must exit 0.
                assert!(
                    status.code() == Some(0) || status.signal() == Some(libc::SIGTERM),
                    "epoch {epoch}: run after SIGTERM: {status:?}\n{}",
                    output_of(dir.path(), epoch)
                );
            }
            Ending::Finished => {
                tally.finished += 1;
                assert!(
                    status.success(),
                    "epoch {epoch}: an uninterrupted synthd failed\n{}",
                    output_of(dir.path(), epoch)
                );
            }
        }
    }

    // Drain: a healthy receiver, retries due, uninterrupted syncs.
    lock(&faults).fail_rate = 0.0;
    let mut n = epochs;
    loop {
        n += 1;
        assert!(n < epochs + 6, "the outbox did not drain");
        checker.db.lapse_leases().await;
        checker.db.let_time_pass().await;
        lock(&world).start_epoch();
        let mut child = synthd(dir.path(), &cfg, "sync", n);
        let status = wait_exit(&mut child, Duration::from_secs(60)).await;
        assert!(status.success(), "{}", output_of(dir.path(), n));
        tally.epochs += 1;
        let w = lock(&world).clone();
        tally.events += checker.check_epoch(n, &w, 0).await.0;
        let pending = checker
            .db
            .count(
                "SELECT COUNT(*) FROM deliveries WHERE status != 'delivered'",
                &[],
            )
            .await;
        if pending == 0 {
            break;
        }
    }

    // Every change the provider made is reflected, and every event reached
    // every webhook it was addressed to.
    assert_eq!(
        checker.stored,
        lock(&world).records,
        "final stored state differs from the provider"
    );
    let expected: Vec<(String, String, Option<String>, String)> = checker
        .db
        .query(
            "SELECT e.id, e.type, e.record_id, d.webhook_id FROM deliveries d
             JOIN events e ON e.id = d.event_id",
            &[],
        )
        .await
        .iter()
        .map(|r| (r[0].text(), r[1].text(), r[2].opt_text(), r[3].text()))
        .collect();
    let requests = requests(&rx);
    let mut accepted: HashMap<(String, String), Vec<&Request>> = HashMap::new();
    for r in &requests {
        if r.accepted {
            let webhook = r.path.trim_start_matches('/').to_string();
            accepted.entry((r.id.clone(), webhook)).or_default().push(r);
        } else {
            tally.receiver_failures += 1;
        }
    }
    let known: HashMap<&str, (&str, Option<&str>)> = expected
        .iter()
        .map(|(id, kind, record, _)| (id.as_str(), (kind.as_str(), record.as_deref())))
        .collect();
    for r in &requests {
        let (kind, record) = known
            .get(r.id.as_str())
            .unwrap_or_else(|| panic!("receiver got {} which synthd never recorded", r.id));
        assert_eq!((r.kind.as_str(), r.record_id.as_deref()), (*kind, *record));
    }
    for (id, kind, record, webhook) in &expected {
        let got = accepted
            .get(&(id.clone(), webhook.clone()))
            .unwrap_or_else(|| panic!("{kind} {id} of {record:?} never reached webhook {webhook}"));
        tally.deliveries_checked += 1;
        tally.receiver_duplicates += got.len() as u64 - 1;
    }
    let w = lock(&world);
    println!(
        "crash loop on {backend} (seed {seed:#x}): {} epochs in {:.1}s; {} SIGKILLs ({} before the poll, {} mid-poll, {} mid-delivery, {} idle), \
         {} SIGTERMs, {} processes finished first; {} provider changes ({} while synthd was paging); \
         {} events checked against the stored hashes, {} (event, webhook) deliveries confirmed at the receiver \
         ({} redelivered after a kill, {} receiver failures retried)",
        tally.epochs,
        started.elapsed().as_secs_f64(),
        tally.kills,
        tally.kills_before_poll,
        tally.kills_mid_poll,
        tally.kills_mid_delivery,
        tally.kills_idle,
        tally.sigterms,
        tally.finished,
        w.changes,
        tally.concurrent_updates,
        tally.events,
        tally.deliveries_checked,
        tally.receiver_duplicates,
        tally.receiver_failures,
    );
    // The seeded run must have killed synthd in every phase.
    for (phase, kills) in [
        ("before the poll", tally.kills_before_poll),
        ("mid-poll", tally.kills_mid_poll),
        ("mid-delivery", tally.kills_mid_delivery),
    ] {
        assert!(kills > 0, "no SIGKILL landed {phase} (seed {seed:#x})");
    }
}

fn seed() -> u64 {
    std::env::var("SYNTHD_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_c4a5)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_points_loses_and_duplicates_nothing() {
    crash_loop(seed(), 40, None).await;
}

/// The same loop with the PostgreSQL store: no state-directory lock, poll
/// and delivery claims with leases and fencing tokens instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_points_on_postgres_loses_and_duplicates_nothing() {
    let Some(pg) = PgDb::create("crash").await else {
        return;
    };
    crash_loop(seed(), 40, Some(&pg)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: 300 epochs, one to two minutes; run with `cargo test -- --ignored`"]
async fn soak_kill_9_many_times() {
    let epochs = std::env::var("SYNTHD_SOAK_EPOCHS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    crash_loop(seed().wrapping_add(1), epochs, None).await;
}

// ---------------------------------------------------------------------------
// Two daemons on one state directory
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_state_dir_refuses_to_start() {
    let Setup {
        world,
        rx,
        provider,
        receiver,
        dir,
        state,
        cfg,
        ..
    } = setup(20, 0.0, 1, None).await;
    // The same directory under another spelling, and through a symlink.
    let cfg_dot = dir.path().join("dot.toml");
    std::fs::write(
        &cfg_dot,
        config_text(&dir.path().join("./state/."), &provider, &receiver, None),
    )
    .unwrap();
    std::os::unix::fs::symlink(&state, dir.path().join("alias")).unwrap();
    let cfg_link = dir.path().join("link.toml");
    std::fs::write(
        &cfg_link,
        config_text(&dir.path().join("alias"), &provider, &receiver, None),
    )
    .unwrap();

    let mut first = synthd(dir.path(), &cfg, "run", 0);
    // account.created + 20 created, on two webhooks (the account event on one).
    wait_until(
        "the first daemon's deliveries",
        Duration::from_secs(20),
        || rx.count() >= 41,
    )
    .await;

    let mut refusals = 0;
    for (n, (config, command)) in [
        (&cfg, "run"),
        (&cfg, "sync"),
        (&cfg_dot, "run"),
        (&cfg_link, "run"),
        (&cfg_link, "sync"),
    ]
    .into_iter()
    .enumerate()
    {
        let n = n + 1;
        let mut second = synthd(dir.path(), config, command, n);
        let status = wait_exit(&mut second, Duration::from_secs(10)).await;
        let out = output_of(dir.path(), n);
        assert_eq!(status.code(), Some(1), "{command} alongside run: {out}");
        let expected = format!(
            "another synthd (pid {}) is running on state directory",
            first.id()
        );
        assert!(out.contains(&expected), "{command}: {out}");
        assert!(!out.contains("panicked"), "{out}");
        refusals += 1;
    }
    // Read-only commands still work alongside the daemon.
    let status = Command::new(bin())
        .arg("--config")
        .arg(&cfg)
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");

    signal(&first, libc::SIGTERM);
    assert_eq!(
        wait_exit(&mut first, Duration::from_secs(20)).await.code(),
        Some(0)
    );

    // Nothing was delivered twice and the database is sound.
    let requests = requests(&rx);
    let mut seen = BTreeSet::new();
    for r in &requests {
        assert!(
            seen.insert((r.id.clone(), r.path.clone())),
            "{} delivered twice to {}",
            r.id,
            r.path
        );
    }
    assert_eq!(requests.len(), 41);
    let conn = read_only(&state.join("synthd.db"));
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let events: i64 = conn
        .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(events, 21);

    // Racing starts: of two syncs started together, each either runs or
    // refuses cleanly, and the changes are emitted once.
    lock(&world).create();
    lock(&world).create();
    let mut racers: Vec<Child> = (0..4)
        .map(|i| synthd(dir.path(), &cfg, "sync", 100 + i))
        .collect();
    let mut ran = 0;
    for (i, c) in racers.iter_mut().enumerate() {
        let status = wait_exit(c, Duration::from_secs(20)).await;
        let out = output_of(dir.path(), 100 + i);
        if status.success() {
            ran += 1;
        } else {
            assert_eq!(status.code(), Some(1), "{out}");
            assert!(out.contains("another synthd"), "{out}");
            refusals += 1;
        }
    }
    assert!(ran >= 1);
    let created: i64 = read_only(&state.join("synthd.db"))
        .query_row(
            "SELECT COUNT(*) FROM events WHERE type = 'hris_employees.created'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(created, 22, "the two new records must be created once");
    println!("concurrency: {refusals} second processes refused, {ran} of 4 racing syncs ran");
}
