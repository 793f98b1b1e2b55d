//! Several real `synthd run` processes over one PostgreSQL database, as on
//! several VMs (each its own state directory), polling a loopback provider
//! we control and delivering to the shared verifying receiver.
//!
//! - three instances share the baselines: every change becomes exactly one
//!   event id, each baseline is fetched once (a poll one instance finished
//!   is not repeated by another), and every instance did some of the work;
//!   then two concurrent `sync` runs never scan one pair at once and announce
//!   each later change once; `status` lists the instances;
//! - SIGKILL of an instance holding polls and a delivery in flight: its
//!   claims are taken over once its lease lapses, nothing is lost, and the
//!   delivery it held is sent again without counting a failed attempt;
//! - SIGSTOP of an instance mid-scan past its lease, SIGCONT after another
//!   took the pair over: its stale page is refused by the fencing token (a
//!   committed stale page would announce an update that never happened);
//! - `store import` of a real SQLite state, then `run` on PostgreSQL: no
//!   re-baseline, no repeated account event, the pending delivery kept.
//!
//! Each test makes its own database (`common::PgDb`) and skips with one
//! line when no PostgreSQL answers (fails under SYNTHD_REQUIRE_POSTGRES=1).
//! Leases are the shortest the config allows (5 s) so the file stays fast;
//! every wait is on a condition.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use common::{Out, PgDb, Receiver, Reply, SECRET, lock, serve, wait_until};
use serde_json::{Value, json};

const TOKEN: &str = "shared-provider-token-5531";
const PAGE: usize = 5;
const RESOURCE: &str = "items";
/// The store's lease (the smallest the config accepts).
const LEASE: Duration = Duration::from_secs(5);
/// How long any condition may take before the test fails.
const WAIT: Duration = Duration::from_secs(30);
/// The environment variable the configs name for the database URL.
const URL_ENV: &str = "SYNTHD_SHARED_TEST_DB";

// ---------------------------------------------------------------------------
// The provider: per-account records with versions, every request logged,
// and a gate that holds requests while a test sets up a moment
// ---------------------------------------------------------------------------

/// Which provider requests wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gate {
    /// Every request waits.
    Closed,
    /// Page 2 and later wait: a scan is claimed, its first page committed,
    /// and it is still in progress.
    HoldLaterPages,
    Open,
}

impl Gate {
    fn lets(self, page: usize) -> bool {
        match self {
            Gate::Closed => false,
            Gate::HoldLaterPages => page < 2,
            Gate::Open => true,
        }
    }
}

/// One provider request.
#[derive(Clone, Debug)]
struct Hit {
    account: String,
    page: usize,
    started: Instant,
    /// When the answer went out (`None`: still waiting, or abandoned).
    ended: Option<Instant>,
    /// The answer was the scan's last page (shorter than a full page).
    last: bool,
}

#[derive(Default)]
struct World {
    /// account → record id → version.
    accounts: BTreeMap<String, BTreeMap<String, u64>>,
    hits: Vec<Hit>,
}

#[derive(Clone)]
struct Provider {
    base: String,
    world: Arc<Mutex<World>>,
    gate: Arc<tokio::sync::watch::Sender<Gate>>,
}

#[derive(Clone)]
struct ProviderState {
    world: Arc<Mutex<World>>,
    gate: Arc<tokio::sync::watch::Sender<Gate>>,
    latency: Duration,
}

fn record(id: &str, version: u64) -> Value {
    json!({ "id": id, "name": format!("Item {id}"), "version": version })
}

async fn items(
    State(p): State<ProviderState>,
    UrlPath(account): UrlPath<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {TOKEN}"))
    {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    let per: usize = q
        .get("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(PAGE);
    // The page as it is when the request arrives: a request held at the
    // gate answers with what the provider had then.
    let (data, index) = {
        let mut w = lock(&p.world);
        let Some(records) = w.accounts.get(&account) else {
            return StatusCode::NOT_FOUND.into_response();
        };
        let data: Vec<Value> = records
            .iter()
            .skip(page.saturating_sub(1) * per)
            .take(per)
            .map(|(id, v)| record(id, *v))
            .collect();
        w.hits.push(Hit {
            account,
            page,
            started: Instant::now(),
            ended: None,
            last: data.len() < per,
        });
        (data, w.hits.len() - 1)
    };
    let mut gate = p.gate.subscribe();
    let _ = gate.wait_for(|g| g.lets(page)).await;
    // The provider's own speed, not a wait of the test.
    tokio::time::sleep(p.latency).await;
    lock(&p.world).hits[index].ended = Some(Instant::now());
    axum::Json(json!({ "data": data })).into_response()
}

impl Provider {
    async fn start(latency: Duration) -> Provider {
        let world = Arc::new(Mutex::new(World::default()));
        let gate = Arc::new(tokio::sync::watch::channel(Gate::Open).0);
        let state = ProviderState {
            world: world.clone(),
            gate: gate.clone(),
            latency,
        };
        let router = Router::new()
            .route(
                &format!("/{{account}}/v1/{RESOURCE}"),
                axum::routing::get(items),
            )
            .with_state(state);
        Provider {
            base: serve(router).await,
            world,
            gate,
        }
    }

    fn set_gate(&self, g: Gate) {
        self.gate.send_replace(g);
    }

    fn hits(&self) -> Vec<Hit> {
        lock(&self.world).hits.clone()
    }

    /// How many scans of `account` started (first-page requests).
    fn scans_of(&self, account: &str) -> usize {
        self.hits()
            .iter()
            .filter(|h| h.account == account && h.page == 1)
            .count()
    }

    fn change(&self, f: impl FnOnce(&mut BTreeMap<String, BTreeMap<String, u64>>)) {
        f(&mut lock(&self.world).accounts)
    }
}

fn rid(i: usize) -> String {
    format!("r{i:02}")
}

// ---------------------------------------------------------------------------
// The processes
// ---------------------------------------------------------------------------

/// A `synthd run` child, SIGKILLed (and reaped) when dropped.
struct Instance {
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl Instance {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child, which has not been reaped.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    fn log(&self) -> String {
        let out = std::fs::read_to_string(&self.out).unwrap_or_default();
        let err = std::fs::read_to_string(&self.err).unwrap_or_default();
        format!("{out}{err}")
    }

    /// How many polls this process finished (its "poll finished" lines).
    fn polls_finished(&self) -> usize {
        self.log().matches("\"poll finished\"").count()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The PostgreSQL process name `host:pid:ulid` → pid.
fn pid_of(owner: &str) -> u32 {
    owner
        .rsplit(':')
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("claim owner {owner:?} names no pid"))
}

async fn pg(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(conn);
    client
}

/// Several instances over one database, a provider, a receiver.
struct Cluster {
    // Declared first: the processes die before the database is dropped.
    instances: Vec<Instance>,
    provider: Provider,
    rx: Receiver,
    accounts: Vec<String>,
    db: PgDb,
    dir: tempfile::TempDir,
    /// Whether `[[accounts]]` announce their baseline.
    emit_initial: bool,
}

impl Cluster {
    /// `accounts` accounts of `records` records each. `None` when no
    /// PostgreSQL server answers (the skip line is printed once).
    async fn new(label: &str, accounts: usize, records: usize, latency: Duration) -> Option<Self> {
        let db = PgDb::create(label).await?;
        let provider = Provider::start(latency).await;
        let ids: Vec<String> = (0..accounts).map(|i| format!("a{i:02}")).collect();
        provider.change(|w| {
            for a in &ids {
                w.insert(a.clone(), (0..records).map(|i| (rid(i), 1)).collect());
            }
        });
        Some(Cluster {
            instances: Vec::new(),
            provider,
            rx: Receiver::start(&[SECRET], None).await,
            accounts: ids,
            db,
            dir: tempfile::tempdir().unwrap(),
            emit_initial: true,
        })
    }

    /// The config of process `name`: its own state directory, the shared
    /// store (or SQLite when `postgres` is false).
    fn config(&self, name: &str, postgres: bool) -> PathBuf {
        let state = self.dir.path().join(format!("state-{name}"));
        let mut text = format!(
            "[daemon]\nstate_dir = {:?}\nlog_format = \"json\"\n\n",
            state.display().to_string()
        );
        if postgres {
            text += &format!(
                "[store]\nbackend = \"postgres\"\nurl_env = \"{URL_ENV}\"\npool_size = 4\nlease = \"{}s\"\n\n",
                LEASE.as_secs()
            );
        }
        text += &format!(
            r#"[providers.p]
base_url = "{base}/none/v1"
auth = {{ type = "bearer", token = "{TOKEN}" }}
records = "/data"
pagination = {{ type = "page", page_param = "page", size_param = "per_page", size = {PAGE} }}

[providers.p.resources.{RESOURCE}]
path = "/{RESOURCE}"

[[webhooks]]
id = "hook"
url = "{rx}/hook"
events = ["*"]
secret = "{SECRET}"
timeout = "30s"
"#,
            base = self.provider.base,
            rx = self.rx.base,
        );
        for a in &self.accounts {
            text += &format!(
                "\n[[accounts]]\nid = \"{a}\"\nprovider = \"p\"\nbase_url = \"{}/{a}/v1\"\ninterval = \"1h\"\nemit_initial = {}\n",
                self.provider.base, self.emit_initial
            );
        }
        let path = self.dir.path().join(format!("synthd-{name}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn command(&self, config: &PathBuf) -> Command {
        let mut cmd = Command::new(common::synthd_bin());
        common::clean_env(&mut cmd);
        cmd.env(URL_ENV, &self.db.url).arg("--config").arg(config);
        cmd
    }

    /// Starts one more `synthd run` on the shared store; returns its index.
    fn start(&mut self) -> usize {
        let n = self.instances.len();
        let config = self.config(&format!("run{n}"), true);
        let (out, err) = (
            self.dir.path().join(format!("run{n}.out")),
            self.dir.path().join(format!("run{n}.err")),
        );
        let child = self
            .command(&config)
            .arg("run")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("spawn synthd run");
        self.instances.push(Instance { child, out, err });
        n
    }

    /// Runs one CLI command to completion (config `name`, shared store
    /// unless `postgres` is false).
    async fn cli(&self, name: &str, postgres: bool, args: &[&str]) -> Out {
        let config = self.config(name, postgres);
        let mut cmd = self.command(&config);
        cmd.args(args);
        common::run_with_deadline(cmd, Duration::from_secs(60)).await
    }

    async fn client(&self) -> tokio_postgres::Client {
        pg(&self.db.url).await
    }

    /// The instance whose pid the store names in `owner`.
    fn instance_of(&self, owner: &str) -> usize {
        let pid = pid_of(owner);
        self.instances
            .iter()
            .position(|i| i.pid() == pid)
            .unwrap_or_else(|| panic!("no instance of ours has pid {pid} ({owner})"))
    }

    /// Waits until `n` processes are registered in the store.
    async fn wait_registered(&self, n: i64) {
        let db = self.client().await;
        let deadline = Instant::now() + WAIT;
        loop {
            let got: i64 = db
                .query_one("SELECT COUNT(*) FROM instances", &[])
                .await
                .map(|r| r.get(0))
                .unwrap_or(0);
            if got >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{got} of {n} instances registered; logs:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `check` holds; fails with every process's log after
    /// [`WAIT`].
    async fn wait(&self, what: &str, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + WAIT;
        while !check() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; logs:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn logs(&self) -> String {
        self.instances
            .iter()
            .enumerate()
            .map(|(i, p)| format!("--- instance {i} (pid {})\n{}", p.pid(), p.log()))
            .collect()
    }

    /// Every event the receiver verified, by (type, account, record id):
    /// the event ids it came with.
    fn events(&self) -> BTreeMap<Key, BTreeSet<String>> {
        let mut out: BTreeMap<Key, BTreeSet<String>> = BTreeMap::new();
        for r in self.rx.requests() {
            let body = common::verify(&r, SECRET);
            out.entry(key(&body))
                .or_default()
                .insert(body["id"].as_str().unwrap().to_string());
        }
        out
    }

    /// Waits until the receiver has accepted an event for every key of
    /// `want` and the store holds no pending delivery; then asserts that
    /// exactly `want` arrived, each key with one event id.
    async fn expect_events(&self, want: &BTreeSet<Key>) -> BTreeMap<Key, BTreeSet<String>> {
        let db = self.client().await;
        let deadline = Instant::now() + WAIT;
        loop {
            let got = self.events();
            let pending: i64 = db
                .query_one(
                    "SELECT COUNT(*) FROM deliveries WHERE status = 'pending'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            if want.iter().all(|k| got.contains_key(k)) && pending == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "timed out: {} of {} events arrived, {pending} deliveries pending; missing {:?}\n{}",
                want.iter().filter(|k| got.contains_key(*k)).count(),
                want.len(),
                want.iter()
                    .filter(|k| !got.contains_key(*k))
                    .take(5)
                    .collect::<Vec<_>>(),
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let got = self.events();
        let extra: Vec<&Key> = got.keys().filter(|k| !want.contains(*k)).collect();
        assert!(extra.is_empty(), "events nobody caused: {extra:?}");
        for (k, ids) in &got {
            assert_eq!(
                ids.len(),
                1,
                "{k:?} was announced under several event ids: {ids:?}"
            );
        }
        got
    }
}

/// (event type, account, record id; "" for account events).
type Key = (String, String, String);

fn key(body: &Value) -> Key {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    (
        s(&body["type"]),
        s(&body["data"]["account_id"]),
        s(&body["data"]["record_id"]),
    )
}

fn k(kind: &str, account: &str, record: &str) -> Key {
    (kind.to_string(), account.to_string(), record.to_string())
}

/// The events of a first start with `emit_initial`: each account's
/// `account.created` and a `created` per record.
fn baseline_events(c: &Cluster, records: usize) -> BTreeSet<Key> {
    let mut want = BTreeSet::new();
    for a in &c.accounts {
        want.insert(k("account.created", a, ""));
        for i in 0..records {
            want.insert(k(&format!("{RESOURCE}.created"), a, &rid(i)));
        }
    }
    want
}

/// Never two scans of one account at once: from a first page's request to
/// the answer of the scan's last page, per account, at most one is open.
fn assert_no_overlapping_scans(hits: &[Hit]) {
    let mut by_account: BTreeMap<&str, Vec<(Instant, i32)>> = BTreeMap::new();
    for h in hits {
        let marks = by_account.entry(&h.account).or_default();
        if h.page == 1 {
            marks.push((h.started, 1));
        }
        if h.last {
            let ended = h.ended.expect("every scan's last page was answered");
            marks.push((ended, -1));
        }
    }
    for (account, mut marks) in by_account {
        // At one instant, a scan's end comes before the next one's start.
        marks.sort();
        let mut open = 0;
        for (_, d) in marks {
            open += d;
            assert!(open <= 1, "two scans of {account} overlapped in time");
        }
    }
}

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_the_work_and_announce_each_change_once() {
    const RECORDS: usize = 12;
    let Some(mut c) = Cluster::new("share", 24, RECORDS, Duration::from_millis(15)).await else {
        return;
    };
    // Nothing is answered until the three have started, so that each of
    // them claims polls.
    c.provider.set_gate(Gate::Closed);
    for _ in 0..3 {
        c.start();
    }
    c.wait_registered(3).await;

    // `status` lists the three processes.
    let status = c.cli("cli", true, &["status", "--json"]).await;
    status.assert_code(0);
    let listed: BTreeSet<u64> = status.json()["instances"]
        .as_array()
        .expect("status --json lists instances")
        .iter()
        .map(|i| i["pid"].as_u64().unwrap())
        .collect();
    let ours: BTreeSet<u64> = c.instances.iter().map(|i| u64::from(i.pid())).collect();
    assert_eq!(listed, ours, "status lists exactly the running instances");
    let text = c.cli("cli", true, &["status"]).await;
    text.assert_code(0);
    for i in &c.instances {
        assert!(
            text.stdout.contains(&format!("pid {}", i.pid())),
            "status names pid {}:\n{}",
            i.pid(),
            text.stdout
        );
    }

    c.provider.set_gate(Gate::Open);
    let want = baseline_events(&c, RECORDS);
    let got = c.expect_events(&want).await;
    // Nobody died: no delivery was sent twice either.
    assert_eq!(
        c.rx.requests().len(),
        got.len(),
        "a delivery was sent more than once"
    );
    // Each baseline was fetched by one process only: a poll one instance
    // finished is not repeated by another.
    for a in &c.accounts {
        assert_eq!(
            c.provider.scans_of(a),
            1,
            "account {a} was scanned more than once"
        );
    }
    // Every process took part.
    for (i, p) in c.instances.iter().enumerate() {
        assert!(
            p.polls_finished() >= 1,
            "instance {i} polled nothing:\n{}",
            c.logs()
        );
    }

    // Later changes, picked up by two `sync` runs at once while the daemons
    // run: each change is one event, and no pair is scanned twice at once.
    c.provider.change(|w| {
        for (n, records) in w.values_mut().enumerate() {
            *records.get_mut(&rid(1)).unwrap() += 1;
            if n % 2 == 0 {
                records.remove(&rid(2));
            }
            if n % 3 == 0 {
                records.insert(rid(RECORDS), 1);
            }
        }
    });
    let mut want2 = want.clone();
    for (n, a) in c.accounts.iter().enumerate() {
        want2.insert(k(&format!("{RESOURCE}.updated"), a, &rid(1)));
        if n % 2 == 0 {
            want2.insert(k(&format!("{RESOURCE}.deleted"), a, &rid(2)));
        }
        if n % 3 == 0 {
            want2.insert(k(&format!("{RESOURCE}.created"), a, &rid(RECORDS)));
        }
    }
    let (s1, s2) = tokio::join!(
        c.cli("sync1", true, &["sync", "--json"]),
        c.cli("sync2", true, &["sync", "--json"])
    );
    s1.assert_code(0);
    s2.assert_code(0);
    c.expect_events(&want2).await;
    assert_no_overlapping_scans(&c.provider.hits());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_is_taken_over_without_loss_or_a_failed_attempt() {
    const RECORDS: usize = 12;
    let Some(mut c) = Cluster::new("kill", 30, RECORDS, Duration::from_millis(5)).await else {
        return;
    };
    // More accounts than the three processes' 24 poll slots, so that each
    // of them holds scans once the provider holds every second page. The
    // receiver holds the first request it gets (its sender will be killed
    // with it in flight) and answers the rest at once.
    let held: Arc<Mutex<Option<String>>> = Arc::default();
    let h = held.clone();
    c.rx.script(move |r| {
        let mut held = lock(&h);
        if held.is_none() {
            *held = Some(r.header("webhook-id"));
            return Some(Reply::status(200).delay(Duration::from_secs(120)));
        }
        None
    });
    c.provider.set_gate(Gate::Closed);
    for _ in 0..3 {
        c.start();
    }
    c.wait_registered(3).await;
    // First pages go through (their events are delivered); every scan then
    // waits on its second page, claimed.
    c.provider.set_gate(Gate::HoldLaterPages);
    let db = c.client().await;

    // The victim: the sender of the held delivery, once it also holds polls.
    let deadline = Instant::now() + WAIT;
    let (held_event, victim_owner, victim_accounts) = loop {
        let event = lock(&held).clone();
        if let Some(event) = event {
            let row = db
                .query_one(
                    "SELECT claim_owner, status, attempts, claim_expires FROM deliveries WHERE event_id = $1",
                    &[&event],
                )
                .await
                .unwrap();
            let owner: Option<String> = row.get(0);
            let owner = owner.unwrap_or_else(|| {
                panic!(
                    "the delivery in flight is not claimed: {:?} {:?} {:?}\n{}",
                    row.get::<_, String>(1),
                    row.get::<_, i32>(2),
                    row.get::<_, Option<i64>>(3),
                    c.logs()
                )
            });
            let now = chrono::Utc::now().timestamp_millis();
            let accounts: Vec<String> = db
                .query(
                    "SELECT account_id FROM poll_state WHERE claim_owner = $1 AND claim_expires > $2",
                    &[&owner, &now],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            if !accounts.is_empty() {
                break (event, owner, accounts);
            }
        }
        assert!(
            Instant::now() < deadline,
            "no instance held a delivery and polls:\n{}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let victim = c.instance_of(&victim_owner);
    let scans_before: Vec<usize> = victim_accounts
        .iter()
        .map(|a| c.provider.scans_of(a))
        .collect();
    c.instances[victim].signal(libc::SIGKILL);
    let killed = Instant::now();
    let _ = c.instances[victim].child.wait();
    c.provider.set_gate(Gate::Open);

    // Its scans are started again by the others once the lease lapses.
    c.wait("the dead instance's polls taken over", || {
        victim_accounts
            .iter()
            .zip(&scans_before)
            .all(|(a, n)| c.provider.scans_of(a) > *n)
    })
    .await;
    let taken_over = killed.elapsed();
    // And the held delivery is sent again.
    c.wait("the held delivery sent again", || {
        c.rx.requests()
            .iter()
            .filter(|r| r.header("webhook-id") == held_event)
            .count()
            >= 2
    })
    .await;
    let resent = killed.elapsed();
    eprintln!(
        "takeover after the kill: polls {taken_over:?}, delivery {resent:?} (lease {LEASE:?})"
    );
    let bound = LEASE + Duration::from_secs(2);
    assert!(
        taken_over <= bound,
        "polls taken over after {taken_over:?}, lease {LEASE:?}"
    );
    assert!(
        resent <= bound,
        "delivery taken over after {resent:?}, lease {LEASE:?}"
    );

    // Nothing lost, nothing twice.
    c.expect_events(&baseline_events(&c, RECORDS)).await;
    // The dead process's attempt did not count: one attempt, a success.
    let row = db
        .query_one(
            "SELECT status, attempts FROM deliveries WHERE event_id = $1",
            &[&held_event],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, i32>(1)),
        ("delivered".to_string(), 1),
        "the delivery held by the dead instance"
    );
    let attempts: Vec<Option<i32>> = db
        .query(
            "SELECT a.status_code FROM attempts a JOIN deliveries d ON d.id = a.delivery_id
             WHERE d.event_id = $1",
            &[&held_event],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(attempts, vec![Some(200)], "no failed attempt was recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_instance_cannot_commit_its_stale_page() {
    const RECORDS: usize = 12;
    let Some(mut c) = Cluster::new("fence", 1, RECORDS, Duration::ZERO).await else {
        return;
    };
    let account = c.accounts[0].clone();
    c.provider.set_gate(Gate::Closed);
    c.start();
    c.start();
    c.wait_registered(2).await;
    c.provider.set_gate(Gate::HoldLaterPages);
    let db = c.client().await;

    // The instance holding the scan, waiting on its second page with its
    // first page committed: it is paused between transactions (nothing
    // else is going on in it; its deliveries wait for the scan's end).
    let deadline = Instant::now() + WAIT;
    let owner = loop {
        let held = c.provider.hits().iter().any(|h| h.page == 2);
        let owner: Option<String> = db
            .query_one("SELECT claim_owner FROM poll_state", &[])
            .await
            .ok()
            .and_then(|r| r.get(0));
        let settled: bool = db
            .query_one(
                "SELECT (SELECT COUNT(*) FROM events WHERE record_id IS NOT NULL) = $1
                     AND NOT EXISTS (SELECT 1 FROM pg_stat_activity
                         WHERE datname = current_database() AND state = 'idle in transaction')",
                &[&(PAGE as i64)],
            )
            .await
            .unwrap()
            .get(0);
        if let (true, Some(owner), true) = (held, owner, settled) {
            break owner;
        }
        assert!(
            Instant::now() < deadline,
            "no scan reached its second page:\n{}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let paused = c.instance_of(&owner);
    c.instances[paused].signal(libc::SIGSTOP);
    // The page it waits for is the one the provider had when it asked
    // (record 7 at version 1); the provider now moves record 7 on, so the
    // paused page, if committed after the takeover, would announce an
    // update back to version 1.
    c.provider.change(|w| {
        *w.get_mut(&account).unwrap().get_mut(&rid(7)).unwrap() += 1;
    });
    c.provider.set_gate(Gate::Open);

    // The other instance takes the pair over after the lease and finishes.
    let want = baseline_events(&c, RECORDS);
    c.expect_events(&want).await;
    assert_eq!(
        c.provider.scans_of(&account),
        2,
        "the pair was scanned again by the other"
    );

    // Resumed, the paused process goes on with its scan and fails it: its
    // stale page is refused by the fencing token (the usual case), or, when
    // the pause caught it inside a transaction, the server has ended that
    // transaction after the lease and its connection with it.
    c.instances[paused].signal(libc::SIGCONT);
    c.wait("the resumed instance to end its stale scan", || {
        let log = c.instances[paused].log();
        log.contains("\"poll failed\"") || log.contains("\"poll finished\"")
    })
    .await;
    let log = c.instances[paused].log();
    let failed = log
        .lines()
        .find(|l| l.contains("\"poll failed\""))
        .unwrap_or_else(|| panic!("the paused process committed its stale scan:\n{log}"))
        .to_string();
    let fenced = failed.contains("was lost (another synthd took it over");
    assert!(
        fenced || failed.contains("connection closed") || failed.contains("idle-in-transaction"),
        "the stale scan failed for another reason: {failed}"
    );
    eprintln!(
        "the resumed scan failed: {}",
        if fenced {
            "its commit was refused by the fencing token"
        } else {
            "its transaction was ended by the server"
        }
    );

    // The stored state is the provider's: a sync finds nothing to announce.
    let sync = c.cli("sync", true, &["sync", "--json"]).await;
    sync.assert_code(0);
    let polls = sync.json()["polls"].clone();
    let counts: Vec<(bool, u64)> = polls
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let s = &p["summary"];
            let n = ["created", "updated", "deleted"]
                .iter()
                .map(|f| s[f].as_u64().unwrap_or(0))
                .sum();
            (p["ok"].as_bool().unwrap_or(false), n)
        })
        .collect();
    assert_eq!(
        counts,
        vec![(true, 0)],
        "a stale page was committed: {}",
        sync.stdout
    );
    c.expect_events(&want).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_import_then_run_on_postgres_neither_rebaselines_nor_repeats() {
    const RECORDS: usize = 8;
    let Some(mut c) = Cluster::new("import", 2, RECORDS, Duration::ZERO).await else {
        return;
    };
    c.emit_initial = false;
    let (a0, a1) = (c.accounts[0].clone(), c.accounts[1].clone());

    // A real SQLite state: a silent baseline, then an update whose
    // delivery failed once and is pending.
    c.cli("sqlite", false, &["sync", "--json"])
        .await
        .assert_code(0);
    let mut want: BTreeSet<Key> = c
        .accounts
        .iter()
        .map(|a| k("account.created", a, ""))
        .collect();
    wait_until("the account events", WAIT, || c.events().len() == 2).await;
    c.provider.change(|w| {
        *w.get_mut(&a0).unwrap().get_mut(&rid(1)).unwrap() += 1;
    });
    c.rx.respond_with(500);
    c.cli("sqlite", false, &["sync", "--json"])
        .await
        .assert_code(0);
    let updated = k(&format!("{RESOURCE}.updated"), &a0, &rid(1));
    let failed_id = c.events()[&updated].clone();

    // Into PostgreSQL.
    let sqlite_db = c.dir.path().join("state-sqlite").join("synthd.db");
    let import = c
        .cli(
            "import",
            true,
            &["store", "import", sqlite_db.to_str().unwrap()],
        )
        .await;
    import.assert_code(0);

    // A new record meanwhile; the receiver recovers; the imported schedule
    // is made overdue and the pending retry due, as time passing would.
    c.provider.change(|w| {
        w.get_mut(&a1).unwrap().insert(rid(RECORDS), 1);
    });
    c.rx.respond_with(200);
    let db = c.client().await;
    db.batch_execute(
        "UPDATE poll_state SET last_started_at = last_started_at - 7200000;
         UPDATE deliveries SET next_attempt_at = 0 WHERE status = 'pending';",
    )
    .await
    .unwrap();
    c.start();

    want.insert(updated.clone());
    want.insert(k(&format!("{RESOURCE}.created"), &a1, &rid(RECORDS)));
    let got = c.expect_events(&want).await;
    assert_eq!(
        got[&updated], failed_id,
        "the pending delivery kept its event id"
    );
    // Both accounts were polled by the daemon (no re-baseline: no event
    // for the records it already knew).
    c.wait("both accounts polled by run", || {
        c.instances[0].polls_finished() >= 2
    })
    .await;
    c.expect_events(&want).await;
    let row = db
        .query_one(
            "SELECT status, attempts FROM deliveries d JOIN events e ON e.id = d.event_id
             WHERE e.type = $1 AND e.record_id = $2",
            &[&updated.0, &updated.2],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, i32>(1)),
        ("delivered".to_string(), 2),
        "the failed attempt made on SQLite still counts"
    );
}
