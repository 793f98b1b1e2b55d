//! Faults around the real binary: the store, the provider, the receivers,
//! and what reaches disk and output.
//!
//! - Store: a state directory that is missing, unusable, read-only or on a
//!   full filesystem; a database locked by another process, written by a
//!   newer schema, or corrupt. Each is one clear line and exit 1, and the
//!   existing hashes and queued deliveries survive it.
//! - Provider (at daemon level): an outage of every kind, a listing that
//!   reorders between polls or between pages, a page size that changes: no
//!   false deletes, no event storm.
//! - Receivers that never answer, answer byte by byte, reset, or redirect to
//!   themselves: each attempt ends at the webhook's `timeout` and the other
//!   webhooks keep flowing.
//! - Privacy: after a run through every command, the database, WAL, lock
//!   file, logs and output hold no record field value but ids, no webhook
//!   secret, no provider token, no `?token=` value; the files are 0600.
//!
//! Tests run as root here, and root ignores file modes. To see what the
//! `synthd` service user sees, the read-only cases drop CAP_DAC_OVERRIDE,
//! CAP_DAC_READ_SEARCH and CAP_FOWNER from the child's capability bounding set
//! before exec: it stays uid 0 but obeys file modes. A full disk is a
//! `RLIMIT_FSIZE` on the child, with SIGXFSZ ignored so writes fail instead
//! of killing it.

mod common;

use common::{Receiver, lock, serve, set, wait_exit, wait_until};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rand::prelude::*;
use rusqlite::{Connection, OpenFlags};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const TOKEN: &str = "prov-token-Jq7Vw2";
const URL_TOKEN: &str = "url-token-Rk4Lp9";
/// Field values of the provider's records; none may reach disk or output.
const PII: &[&str] = &[
    "Ottoline Vexby",
    "ovexby@pii.example",
    "078-05-1120",
    "Marrow Lane 7",
    "Quartermaster of Llamas",
];

// ---------------------------------------------------------------------------
// A provider with every kind of bad day
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Up,
    /// 503 with a Retry-After of two hours: down for hours.
    Unavailable,
    /// Page n answers 503 (Retry-After two hours); the others are fine.
    FailPage(usize),
    /// Page n answers 400 with a body echoing record data and the token.
    Chatty(usize),
    /// 200 with an HTML error page.
    Html,
    /// 200 with no records at all.
    Empty,
    /// The provider silently serves at most n records a page.
    CapPageSize(usize),
    /// A new order at every first page: stable within a scan.
    ShufflePerScan,
    /// A new order at every request: records move between pages mid-scan.
    ShufflePerRequest,
}

fn person(i: usize, version: u64) -> Value {
    json!({
        "id": format!("emp-{i}"),
        "name": format!("{} {i}", PII[0]),
        "email": PII[1],
        "ssn": PII[2],
        "address": {"street": PII[3], "city": "Brno"},
        "title": PII[4],
        "version": version,
    })
}

struct Api {
    records: Vec<Value>,
    order: Vec<usize>,
    mode: Mode,
    rng: StdRng,
    /// Every request received, as its page number.
    requests: Vec<usize>,
}

impl Api {
    fn new(n: usize) -> Arc<Mutex<Api>> {
        Arc::new(Mutex::new(Api {
            records: (1..=n).map(|i| person(i, 1)).collect(),
            order: (0..n).collect(),
            mode: Mode::Up,
            rng: StdRng::seed_from_u64(42),
            requests: Vec::new(),
        }))
    }

    fn set(&mut self, mode: Mode) {
        self.mode = mode;
    }

    fn update(&mut self, i: usize) {
        let v = self.records[i - 1]["version"].as_u64().unwrap();
        self.records[i - 1] = person(i, v + 1);
    }
}

async fn employees(
    State(api): State<Arc<Mutex<Api>>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if q.get("api_key").map(String::as_str) != Some(TOKEN) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    let mut per: usize = q.get("per_page").and_then(|p| p.parse().ok()).unwrap_or(10);
    let mut api = lock(&api);
    api.requests.push(page);
    if api.order.len() != api.records.len() {
        api.order = (0..api.records.len()).collect();
    }
    let unavailable = || {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", "7200")],
            "down for maintenance",
        )
            .into_response()
    };
    match api.mode {
        Mode::Unavailable => return unavailable(),
        Mode::FailPage(n) if n == page => return unavailable(),
        Mode::Chatty(n) if n == page => {
            return (
                StatusCode::BAD_REQUEST,
                format!(
                    "{{\"error\":\"bad page for {} <{}>, your key {TOKEN} is fine\"}}",
                    PII[0], PII[1]
                ),
            )
                .into_response();
        }
        Mode::Html => {
            return (
                [("content-type", "text/html")],
                format!("<html><body>Error. Hello {}!</body></html>", PII[0]),
            )
                .into_response();
        }
        Mode::Empty => return axum::Json(json!({"data": []})).into_response(),
        Mode::CapPageSize(n) => per = per.min(n),
        Mode::ShufflePerScan if page == 1 => {
            let mut order = std::mem::take(&mut api.order);
            order.shuffle(&mut api.rng);
            api.order = order;
        }
        Mode::ShufflePerRequest => {
            let mut order = std::mem::take(&mut api.order);
            order.shuffle(&mut api.rng);
            api.order = order;
        }
        _ => {}
    }
    let data: Vec<Value> = api
        .order
        .iter()
        .filter_map(|&i| api.records.get(i).cloned())
        .skip((page.max(1) - 1) * per)
        .take(per)
        .collect();
    axum::Json(json!({ "data": data })).into_response()
}

async fn start_provider(n: usize) -> (Arc<Mutex<Api>>, String) {
    let api = Api::new(n);
    let url = serve(
        Router::new()
            .route("/v1/employees", axum::routing::get(employees))
            .with_state(api.clone()),
    )
    .await;
    (api, url)
}

// ---------------------------------------------------------------------------
// The receiver: the shared verifying one (tests/common)
// ---------------------------------------------------------------------------

/// A receiver answering `status`, and the webhook URL pointing at it.
async fn start_receiver(status: u16) -> (Receiver, String) {
    let rx = Receiver::start(&[SECRET], None).await;
    rx.respond_with(status);
    let url = format!("{}/hook?token={URL_TOKEN}", rx.base);
    (rx, url)
}

// ---------------------------------------------------------------------------
// Receivers that misbehave at the TCP level
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Hostile {
    /// Accepts, reads the request, never answers.
    Silent,
    /// Answers the status line and headers one byte at a time.
    TrickleHead,
    /// Answers 200 at once, then the body one byte at a time, forever.
    TrickleBody,
    /// Reads the request and resets the connection.
    Reset,
    /// 301 to its own URL.
    RedirectToSelf,
}

/// Reads one HTTP/1.1 request (head and content-length body); false at EOF.
async fn read_request(sock: &mut tokio::net::TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    true
}

async fn start_hostile(kind: Hostile) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let (self_url, counter) = (url.clone(), hits.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let (self_url, counter) = (self_url.clone(), counter.clone());
            tokio::spawn(async move {
                while read_request(&mut sock).await {
                    counter.fetch_add(1, Ordering::SeqCst);
                    match kind {
                        Hostile::Silent => {
                            tokio::time::sleep(Duration::from_secs(120)).await;
                            return;
                        }
                        Hostile::TrickleHead => {
                            for b in b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok" {
                                if sock.write_all(&[*b]).await.is_err() {
                                    return;
                                }
                                tokio::time::sleep(Duration::from_millis(150)).await;
                            }
                        }
                        Hostile::TrickleBody => {
                            let head = b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n";
                            if sock.write_all(head).await.is_err() {
                                return;
                            }
                            while sock.write_all(b"x").await.is_ok() {
                                tokio::time::sleep(Duration::from_millis(150)).await;
                            }
                            return;
                        }
                        Hostile::Reset => {
                            let linger = libc::linger {
                                l_onoff: 1,
                                l_linger: 0,
                            };
                            // SAFETY: setsockopt on a socket we own, with a
                            // correctly sized linger struct.
                            unsafe {
                                libc::setsockopt(
                                    sock.as_raw_fd(),
                                    libc::SOL_SOCKET,
                                    libc::SO_LINGER,
                                    (&raw const linger).cast(),
                                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                                );
                            }
                            return;
                        }
                        Hostile::RedirectToSelf => {
                            let resp = format!(
                                "HTTP/1.1 301 Moved Permanently\r\nlocation: {self_url}\r\ncontent-length: 0\r\n\r\n"
                            );
                            if sock.write_all(resp.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (url, hits)
}

// ---------------------------------------------------------------------------
// Config and the binary
// ---------------------------------------------------------------------------

struct Setup {
    state: PathBuf,
    provider: String,
    webhooks: Vec<(String, String)>,
    page_size: usize,
    emit_initial: bool,
}

impl Setup {
    fn new(state: &Path, provider: &str, receiver: &str) -> Setup {
        Setup {
            state: state.to_path_buf(),
            provider: provider.to_string(),
            webhooks: vec![("hr".into(), receiver.to_string())],
            page_size: 10,
            emit_initial: true,
        }
    }

    fn toml(&self) -> String {
        let mut s = format!(
            r#"
[daemon]
state_dir = "{state}"
log_format = "json"

[providers.p]
base_url = "{provider}/v1"
auth = {{ type = "query", name = "api_key", value = "{TOKEN}" }}
records = "/data"
pagination = {{ type = "page", page_param = "page", size_param = "per_page", size = {size} }}

[providers.p.resources.hris_employees]
path = "/employees"

[[accounts]]
id = "acme"
provider = "p"
emit_initial = {emit}
"#,
            state = self.state.display(),
            provider = self.provider,
            size = self.page_size,
            emit = self.emit_initial,
        );
        for (id, url) in &self.webhooks {
            s.push_str(&format!(
                "\n[[webhooks]]\nid = \"{id}\"\nurl = \"{url}\"\nevents = [\"*\"]\nsecret = \"{SECRET}\"\ntimeout = \"1s\"\n"
            ));
        }
        s
    }

    fn write(&self, path: &Path) {
        std::fs::write(path, self.toml()).unwrap();
    }
}

fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin!("synthd").to_path_buf()
}

fn cmd(cfg: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.arg("--config").arg(cfg).args(args).stdin(Stdio::null());
    c
}

#[derive(Debug)]
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Every byte any synthd process printed, for the privacy check.
static PRINTED: Mutex<String> = Mutex::new(String::new());

/// Runs a command to completion; one that is still running after 60 s is
/// killed and fails the test (a `run` expected to refuse that started).
fn run(mut c: Command) -> Out {
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let reader = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let stdout = reader(Box::new(child.stdout.take().unwrap()));
    let stderr = reader(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("synthd still running after 60 s: {c:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = Out {
        code: status.code(),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    };
    lock(&PRINTED).push_str(&out.all());
    assert!(
        !out.all().contains("panicked"),
        "synthd panicked: {}",
        out.all()
    );
    out
}

fn synthd(cfg: &Path, args: &[&str]) -> Out {
    run(cmd(cfg, args))
}

/// Root ignores file modes; drop the capabilities that let it, so the child
/// sees what the synthd service user would (see the module doc).
fn obey_file_modes(c: &mut Command) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    // SAFETY: prctl is async-signal-safe; the closure allocates nothing.
    unsafe {
        c.pre_exec(|| {
            for cap in [1, 2, 3] {
                // CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER
                if libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// A filesystem that fills up at `bytes` per file.
fn limit_file_size(c: &mut Command, bytes: u64) {
    // SAFETY: signal and setrlimit are async-signal-safe.
    unsafe {
        c.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: signalling our own, unreaped child.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

// ---------------------------------------------------------------------------
// What the database holds
// ---------------------------------------------------------------------------

fn read_only(db: &Path) -> Connection {
    Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap()
}

fn integrity(db: &Path) -> String {
    read_only(db)
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

/// Hashes and queued deliveries: what no fault may lose.
#[derive(Debug, PartialEq, Eq, Clone)]
struct Snapshot {
    records: BTreeMap<String, Vec<u8>>,
    pending: BTreeSet<(String, String)>,
    events: BTreeSet<String>,
}

fn snapshot(db: &Path) -> Snapshot {
    let conn = read_only(db);
    let records = conn
        .prepare("SELECT record_id, hash FROM records")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let pending = conn
        .prepare("SELECT event_id, webhook_id FROM deliveries WHERE status = 'pending'")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let events = conn
        .prepare("SELECT id FROM events")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    Snapshot {
        records,
        pending,
        events,
    }
}

fn count(db: &Path, sql: &str) -> i64 {
    read_only(db).query_row(sql, [], |r| r.get(0)).unwrap()
}

fn record_events(db: &Path) -> BTreeMap<String, i64> {
    read_only(db)
        .prepare("SELECT type, COUNT(*) FROM events WHERE record_id IS NOT NULL GROUP BY type")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// A state directory with 30 tracked records and 31 deliveries queued for a
/// receiver that is down (account.created + 30 created).
struct Seeded {
    _dir: tempfile::TempDir,
    cfg: PathBuf,
    state: PathBuf,
    db: PathBuf,
    api: Arc<Mutex<Api>>,
    inbox: Receiver,
    before: Snapshot,
}

async fn seeded() -> Seeded {
    seeded_with(&[]).await
}

/// [`seeded`] with more webhooks, each at the receiver's `/<id>`.
async fn seeded_with(more_webhooks: &[&str]) -> Seeded {
    let (api, provider) = start_provider(30).await;
    let (inbox, receiver) = start_receiver(503).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cfg = dir.path().join("synthd.toml");
    let mut setup = Setup::new(&state, &provider, &receiver);
    for id in more_webhooks {
        setup
            .webhooks
            .push((id.to_string(), format!("{}/{id}", inbox.base)));
    }
    setup.write(&cfg);
    let out = synthd(&cfg, &["sync"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    let db = state.join("synthd.db");
    let before = snapshot(&db);
    assert_eq!(before.records.len(), 30);
    assert_eq!(before.pending.len(), 31 * (1 + more_webhooks.len()));
    // Changes waiting for the next poll.
    {
        let mut api = lock(&api);
        api.update(3);
        api.update(4);
        let n = api.records.len();
        api.records.push(person(n + 1, 1));
    }
    Seeded {
        _dir: dir,
        cfg,
        state,
        db,
        api,
        inbox,
        before,
    }
}

impl Seeded {
    /// After the fault is gone: nothing was lost, and a normal sync delivers
    /// every delivery that was queued before it.
    fn recovers(&self, fault: &str) {
        assert_eq!(integrity(&self.db), "ok", "{fault}");
        let now = snapshot(&self.db);
        for id in self.before.records.keys() {
            assert!(now.records.contains_key(id), "{fault}: hash of {id} lost");
        }
        for p in &self.before.pending {
            assert!(
                now.pending.contains(p),
                "{fault}: queued delivery {p:?} lost"
            );
        }
        self.inbox.respond_with(200);
        // The retries are due (time passes).
        Connection::open(&self.db)
            .unwrap()
            .execute(
                "UPDATE deliveries SET next_attempt_at = 0 WHERE status = 'pending'",
                [],
            )
            .unwrap();
        let out = synthd(&self.cfg, &["sync"]);
        assert_eq!(
            out.code,
            Some(0),
            "{fault}: sync after the fault: {}",
            out.all()
        );
        let got: BTreeSet<String> = self
            .inbox
            .requests()
            .iter()
            .map(|h| h.header("webhook-id"))
            .collect();
        for (event, _) in &self.before.pending {
            assert!(got.contains(event), "{fault}: {event} never delivered");
        }
        let after = record_events(&self.db);
        assert_eq!(
            after.get("hris_employees.updated"),
            Some(&2),
            "{fault}: {after:?}"
        );
        assert_eq!(
            after.get("hris_employees.created"),
            Some(&31),
            "{fault}: {after:?}"
        );
        assert_eq!(
            count(
                &self.db,
                "SELECT COUNT(*) FROM deliveries WHERE status != 'delivered'"
            ),
            0
        );
    }
}

fn one_clear_line(out: &Out, needle: &str) {
    let all = out.all();
    assert_eq!(out.code, Some(1), "expected exit 1: {all}");
    let line = all
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line mentions {needle:?}: {all}"));
    assert!(line.len() < 400, "{line}");
    println!("exit 1: {line}");
}

// ---------------------------------------------------------------------------
// Store faults
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_state_dir_is_created_and_an_unusable_one_is_a_clear_error() {
    let (_api, provider) = start_provider(3).await;
    let (_inbox, receiver) = start_receiver(200).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("synthd.toml");

    // Missing, several levels deep: created 0700, database 0600.
    let state = dir.path().join("a/b/state");
    Setup::new(&state, &provider, &receiver).write(&cfg);
    let out = synthd(&cfg, &["status"]);
    one_clear_line(&out, "no state yet");
    assert!(!state.exists(), "status must not create state");
    let out = synthd(&cfg, &["sync"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_eq!(mode_of(&state), 0o700);
    assert_eq!(mode_of(&state.join("synthd.db")), 0o600);

    // Under a regular file, or a regular file itself: one line, exit 1.
    std::fs::write(dir.path().join("file"), "x").unwrap();
    for (state, command) in [
        (dir.path().join("file/state"), "sync"),
        (dir.path().join("file/state"), "run"),
        (dir.path().join("file"), "sync"),
        (dir.path().join("file"), "run"),
    ] {
        Setup::new(&state, &provider, &receiver).write(&cfg);
        let out = synthd(&cfg, &[command]);
        one_clear_line(&out, "state directory");
        assert!(
            out.all().contains(&state.display().to_string()),
            "{}",
            out.all()
        );
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join("file")).unwrap(),
        "x"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_state_is_refused_and_nothing_is_lost() {
    let s = seeded().await;
    let files: Vec<PathBuf> = std::fs::read_dir(&s.state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let make = |db: u32, lock_file: u32, others: u32, dir: u32| {
        for f in &files {
            let mode = match f.file_name().and_then(|n| n.to_str()) {
                Some("synthd.db") => db,
                Some("synthd.lock") => lock_file,
                _ => others,
            };
            chmod(f, mode);
        }
        chmod(&s.state, dir);
    };
    // The database file read-only; its -wal and -shm read-only; then
    // everything read-only. (A read-only directory whose files are writable
    // is fine: SQLite writes into the existing -wal and -shm files.)
    for (fault, db, lock_file, others, dir) in [
        ("read-only database file", 0o400, 0o600, 0o600, 0o700),
        ("read-only -wal and -shm", 0o600, 0o600, 0o400, 0o500),
        (
            "read-only state directory and files",
            0o400,
            0o400,
            0o400,
            0o500,
        ),
    ] {
        make(db, lock_file, others, dir);
        // The daemon can open a database whose -wal is read-only; what it
        // does then is the next test.
        let commands: &[&str] = if db == 0o600 {
            &["sync"]
        } else {
            &["sync", "run"]
        };
        for &command in commands {
            let mut c = cmd(&s.cfg, &[command]);
            obey_file_modes(&mut c);
            let out = run(c);
            assert_eq!(out.code, Some(1), "{fault}, {command}: {}", out.all());
            let all = out.all();
            assert!(
                all.contains("read-only") || all.contains("Permission denied"),
                "{fault}, {command}: {all}"
            );
            assert!(all.contains(&s.state.display().to_string()), "{all}");
            println!(
                "{fault}, {command}: {}",
                all.lines().next().unwrap_or_default()
            );
        }
        make(0o600, 0o600, 0o600, 0o700);
        assert_eq!(snapshot(&s.db), s.before, "{fault}");
    }
    s.recovers("read-only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_record_attempts_does_not_make_the_daemon_resend_in_a_loop() {
    // Webhook `later` has the same 31 deliveries, due a moment after the
    // daemon starts: when it sends them, its delivery loop has gone round
    // many times since the first attempts to `hr` went unrecorded.
    let s = seeded_with(&["later"]).await;
    s.inbox.respond_with(200);
    Connection::open(&s.db)
        .unwrap()
        .execute(
            "UPDATE deliveries SET next_attempt_at = 0 WHERE status = 'pending'",
            [],
        )
        .unwrap();
    common::delay_pending_deliveries(&s.db, "later", Duration::from_millis(1500));
    // The daemon starts and reads, but cannot write: every attempt it makes
    // goes unrecorded. (A reader held open keeps the -wal and -shm around.)
    let keeper = read_only(&s.db);
    let _: i64 = keeper
        .query_row("SELECT COUNT(*) FROM records", [], |r| r.get(0))
        .unwrap();
    for f in ["synthd.db-wal", "synthd.db-shm"] {
        chmod(&s.state.join(f), 0o400);
    }
    chmod(&s.state, 0o500);
    // Only what the daemon sends counts (the seeding sync's are gone).
    s.inbox.clear();
    let mut c = cmd(&s.cfg, &["run"]);
    c.stdout(Stdio::null()).stderr(Stdio::null());
    obey_file_modes(&mut c);
    let mut daemon = c.spawn().unwrap();
    let to = |path: &str| -> Vec<String> {
        s.inbox
            .requests()
            .iter()
            .filter(|r| r.path() == path)
            .map(|r| r.header("webhook-id"))
            .collect()
    };
    wait_until("the later deliveries", Duration::from_secs(10), || {
        !to("/later").is_empty()
    })
    .await;
    let hits = to("/hook");
    assert!(!hits.is_empty(), "nothing was sent to hr");
    signal(&daemon, libc::SIGTERM);
    let status = wait_exit(&mut daemon, Duration::from_secs(20)).await;
    chmod(&s.state, 0o700);
    for f in ["synthd.db-wal", "synthd.db-shm"] {
        chmod(&s.state.join(f), 0o600);
    }
    drop(keeper);
    assert_eq!(status.code(), Some(0));
    for id in set(&hits) {
        let n = hits.iter().filter(|h| **h == id).count();
        assert!(
            n == 1,
            "{id} sent {n} times ({} requests in all): unrecorded attempts are resent in a loop",
            hits.len()
        );
    }
    assert_eq!(snapshot(&s.db), s.before);
    s.inbox.clear();
    s.recovers("unrecorded attempts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_rolls_back_cleanly_and_loses_nothing() {
    let s = seeded().await;
    {
        let mut api = lock(&s.api);
        for i in 32..=1500 {
            api.records.push(person(i, 1));
        }
    }
    let size = std::fs::metadata(&s.db).unwrap().len();
    let mut c = cmd(&s.cfg, &["sync"]);
    limit_file_size(&mut c, size + 64 * 1024);
    let out = run(c);
    assert_eq!(out.code, Some(1), "{}", out.all());
    one_clear_line(&out, "disk full");
    assert_eq!(integrity(&s.db), "ok");
    // Pages that committed before the disk filled are whole: every stored
    // new record came with its event.
    let now = snapshot(&s.db);
    let created = record_events(&s.db)
        .get("hris_employees.created")
        .copied()
        .unwrap_or(0);
    assert_eq!(
        now.records.len() as i64 - 30,
        created - 30,
        "records without events"
    );
    for (id, hash) in &s.before.records {
        if id != "emp-3" && id != "emp-4" {
            assert_eq!(now.records.get(id), Some(hash), "{id}");
        }
    }
    for p in &s.before.pending {
        assert!(now.pending.contains(p), "queued delivery {p:?} lost");
    }
    // Room again (and time for the retries): everything arrives, each
    // change once.
    s.inbox.respond_with(200);
    Connection::open(&s.db)
        .unwrap()
        .execute(
            "UPDATE deliveries SET next_attempt_at = 0 WHERE status = 'pending'",
            [],
        )
        .unwrap();
    let out = synthd(&s.cfg, &["sync"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    let events = record_events(&s.db);
    assert_eq!(
        events.get("hris_employees.created"),
        Some(&1500),
        "{events:?}"
    );
    assert_eq!(events.get("hris_employees.updated"), Some(&2), "{events:?}");
    assert_eq!(
        count(
            &s.db,
            "SELECT COUNT(DISTINCT record_id) FROM events WHERE type = 'hris_employees.created'"
        ),
        1500
    );
    assert_eq!(
        count(
            &s.db,
            "SELECT COUNT(*) FROM deliveries WHERE status != 'delivered'"
        ),
        0
    );
}

/// The nanosleep system calls (x86_64, aarch64).
#[cfg(target_arch = "aarch64")]
const NANOSLEEP: &[i64] = &[101, 115];
#[cfg(not(target_arch = "aarch64"))]
const NANOSLEEP: &[i64] = &[35, 230];

/// Whether a thread of process `pid` is asleep in nanosleep: in synthd,
/// only SQLite's busy handler sleeps that way, between tries of a lock.
fn waiting_for_a_lock(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|t| {
        let read = |f: &str| std::fs::read_to_string(t.path().join(f)).unwrap_or_default();
        let call: Option<i64> = read("syscall")
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok());
        read("wchan").contains("nanosleep") || call.is_some_and(|n| NANOSLEEP.contains(&n))
    })
}

/// Starts `synthd sync` on `s` while the test holds the database's write
/// lock; returns once the sync is waiting for it (SQLite's busy wait), with
/// the lock holder and the child.
async fn sync_behind_a_lock(s: &Seeded) -> (Connection, Child) {
    let holder = Connection::open(&s.db).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let dir = s.state.parent().unwrap();
    let mut c = cmd(&s.cfg, &["sync"]);
    c.stdout(std::fs::File::create(dir.join("sync.out")).unwrap())
        .stderr(std::fs::File::create(dir.join("sync.err")).unwrap());
    let mut child = c.spawn().unwrap();
    let pid = child.id();
    wait_until("sync to wait for the lock", Duration::from_secs(10), || {
        waiting_for_a_lock(pid)
    })
    .await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "sync gave up at once instead of waiting for the lock"
    );
    // Readers are not blocked by a writer (WAL).
    let status = synthd(&s.cfg, &["status"]);
    assert_eq!(status.code, Some(0), "{}", status.all());
    (holder, child)
}

/// The exit code and output of a child from [`sync_behind_a_lock`].
async fn finish(s: &Seeded, child: &mut Child) -> Out {
    let status = wait_exit(child, Duration::from_secs(30)).await;
    let dir = s.state.parent().unwrap();
    let out = Out {
        code: status.code(),
        stdout: std::fs::read_to_string(dir.join("sync.out")).unwrap(),
        stderr: std::fs::read_to_string(dir.join("sync.err")).unwrap(),
    };
    lock(&PRINTED).push_str(&out.all());
    assert!(!out.all().contains("panicked"), "{}", out.all());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_locked_for_a_moment_is_waited_for() {
    let s = seeded().await;
    let (holder, mut child) = sync_behind_a_lock(&s).await;
    holder.execute_batch("ROLLBACK").unwrap();
    drop(holder);
    let out = finish(&s, &mut child).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    // Its poll went through once the lock was free.
    let events = record_events(&s.db);
    assert_eq!(events.get("hris_employees.updated"), Some(&2), "{events:?}");
    s.recovers("locked for a moment");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_database_is_reported_after_the_busy_timeout() {
    let s = seeded().await;
    // The queued retries are not due during the test.
    {
        let conn = Connection::open(&s.db).unwrap();
        conn.execute(
            "UPDATE deliveries SET next_attempt_at = next_attempt_at + 3600000 WHERE status = 'pending'",
            [],
        )
        .unwrap();
    }
    let before = snapshot(&s.db);
    // Held until sync gives up, after its own busy timeout (5 s): the one
    // wait here is synthd's, and it is at least that long.
    let (holder, mut child) = sync_behind_a_lock(&s).await;
    let waiting = Instant::now();
    let out = finish(&s, &mut child).await;
    one_clear_line(&out, "stayed locked for");
    assert!(
        waiting.elapsed() >= Duration::from_secs(4),
        "gave up after {:?}",
        waiting.elapsed()
    );
    holder.execute_batch("ROLLBACK").unwrap();
    drop(holder);
    assert_eq!(snapshot(&s.db), before);
    s.recovers("locked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_schema_is_refused_and_left_untouched() {
    let s = seeded().await;
    let conn = Connection::open(&s.db).unwrap();
    let known: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    conn.pragma_update(None, "user_version", 999).unwrap();
    drop(conn);
    let bytes = std::fs::read(&s.db).unwrap();
    for args in [&["sync"][..], &["run"], &["status"], &["deliveries"]] {
        let out = synthd(&s.cfg, args);
        one_clear_line(
            &out,
            "schema version 999, newer than this synthd understands",
        );
    }
    assert!(
        std::fs::read(&s.db).unwrap() == bytes,
        "the newer database was modified"
    );
    Connection::open(&s.db)
        .unwrap()
        .pragma_update(None, "user_version", known)
        .unwrap();
    assert_eq!(snapshot(&s.db), s.before);
    s.recovers("newer schema");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_database_is_refused_and_left_untouched() {
    let s = seeded().await;
    let original = std::fs::read(&s.db).unwrap();
    let page = 4096;
    let records_root: i64 = read_only(&s.db)
        .query_row(
            "SELECT rootpage FROM sqlite_master WHERE name = 'records'",
            [],
            |r| r.get(0),
        )
        .unwrap();

    // A damaged header, then a damaged table page.
    let mut header = original.clone();
    header[..16].copy_from_slice(b"not a database!!");
    let mut table = original.clone();
    let at = (records_root as usize - 1) * page;
    table[at..at + page].fill(0xa5);
    // A damaged header stops every command at once; a damaged table page is
    // found when a poll reads it (a daemon keeps delivering meanwhile).
    for (fault, bytes, commands) in [
        (
            "header",
            header,
            &[&["sync"][..], &["run"], &["status"]][..],
        ),
        ("table page", table, &[&["sync"][..]]),
    ] {
        std::fs::write(&s.db, &bytes).unwrap();
        for args in commands {
            let out = synthd(&s.cfg, args);
            one_clear_line(&out, "is damaged");
            assert!(
                out.all().contains("restore it from a backup"),
                "{}",
                out.all()
            );
            // Nothing rewrote the damage (or started the file over).
            let now = std::fs::read(&s.db).unwrap();
            assert!(now[..16] == bytes[..16], "{fault}: header rewritten");
            assert!(
                now.len() >= at + page && now[at..at + page] == bytes[at..at + page],
                "{fault}: damaged page rewritten"
            );
        }
    }
    std::fs::write(&s.db, &original).unwrap();
    assert_eq!(snapshot(&s.db), s.before);
    s.recovers("corrupt");
}

// ---------------------------------------------------------------------------
// Provider faults
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_down_for_hours_causes_no_false_deletes_and_no_storm() {
    let (api, provider) = start_provider(30).await;
    let (inbox, receiver) = start_receiver(200).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let db = state.join("synthd.db");
    let cfg = dir.path().join("synthd.toml");
    let mut setup = Setup::new(&state, &provider, &receiver);
    setup.emit_initial = false;
    setup.write(&cfg);
    let out = synthd(&cfg, &["sync"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_eq!(
        record_events(&db),
        BTreeMap::new(),
        "the baseline is silent"
    );

    // Every way of being down, while the provider's data also changes; and
    // the pages each poll asked for: a failure is not retried in a storm (a
    // Retry-After of two hours is not waited out within a poll, a 400 or an
    // HTML page is not retried), and the scan stops at the failing page.
    let mut faults = 0;
    for (mode, exit, pages) in [
        (Mode::Unavailable, 1, vec![1]),
        (Mode::FailPage(2), 1, vec![1, 2]),
        (Mode::FailPage(4), 1, vec![1, 2, 3, 4]),
        (Mode::Html, 1, vec![1]),
        (Mode::Chatty(3), 1, vec![1, 2, 3]),
        (Mode::Empty, 0, vec![1]),
        (Mode::Unavailable, 1, vec![1]),
        // A short page ends the scan.
        (Mode::CapPageSize(4), 0, vec![1]),
    ] {
        lock(&api).set(mode);
        lock(&api).requests.clear();
        let out = synthd(&cfg, &["sync"]);
        assert_eq!(out.code, Some(exit), "{mode:?}: {}", out.all());
        assert_eq!(lock(&api).requests, pages, "{mode:?}: the pages requested");
        // Pages that did arrive may show the real changes; nothing else.
        let events = record_events(&db);
        let n = |t: &str| events.get(t).copied().unwrap_or(0);
        assert_eq!(
            n("hris_employees.deleted"),
            0,
            "{mode:?}: a false delete: {}",
            out.all()
        );
        assert!(
            n("hris_employees.updated") <= 2 && n("hris_employees.created") <= 1,
            "{mode:?}: more events than changes: {events:?}"
        );
        assert!(count(&db, "SELECT COUNT(*) FROM records") >= 30, "{mode:?}");
        faults += 1;
        if faults == 3 {
            let mut api = lock(&api);
            api.update(7);
            api.update(8);
            api.records.remove(19);
            api.records.push(person(31, 1));
            let n = api.records.len();
            api.order = (0..n).collect();
        }
    }

    // Back, hours later: the daemon polls at once (four pages, once) and
    // sends exactly the four real changes.
    lock(&api).set(Mode::Up);
    lock(&api).requests.clear();
    Connection::open(&db)
        .unwrap()
        .execute(
            "UPDATE poll_state SET last_started_at = last_started_at - 5 * 3600000",
            [],
        )
        .unwrap();
    let mut daemon = cmd(&cfg, &["run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let record_hits = |inbox: &Receiver| {
        inbox
            .requests()
            .iter()
            .filter(|h| h.text().contains("hris_employees."))
            .count()
    };
    wait_until("the four changes", Duration::from_secs(20), || {
        record_hits(&inbox) >= 4
    })
    .await;
    signal(&daemon, libc::SIGTERM);
    assert_eq!(
        wait_exit(&mut daemon, Duration::from_secs(20)).await.code(),
        Some(0)
    );
    let events = record_events(&db);
    assert_eq!(
        events,
        BTreeMap::from([
            ("hris_employees.created".to_string(), 1),
            ("hris_employees.deleted".to_string(), 1),
            ("hris_employees.updated".to_string(), 2),
        ])
    );
    assert_eq!(record_hits(&inbox), 4);
    assert_eq!(
        lock(&api).requests,
        [1, 2, 3, 4],
        "one poll of the recovered provider"
    );
    assert_eq!(count(&db, "SELECT COUNT(*) FROM records"), 30);
    println!("provider outage: {faults} faulty polls, then exactly 4 events for 4 changes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reordered_listings_and_changing_page_sizes_emit_nothing() {
    let (api, provider) = start_provider(40).await;
    let (_inbox, receiver) = start_receiver(200).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let db = state.join("synthd.db");
    let cfg = dir.path().join("synthd.toml");
    let mut setup = Setup::new(&state, &provider, &receiver);
    setup.write(&cfg);
    let out = synthd(&cfg, &["sync"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    let baseline = record_events(&db);
    assert_eq!(baseline.get("hris_employees.created"), Some(&40));

    let mut polls = 0;
    // A different order at every poll, and at every page within a poll.
    for mode in [
        Mode::ShufflePerScan,
        Mode::ShufflePerScan,
        Mode::ShufflePerScan,
        Mode::ShufflePerRequest,
        Mode::ShufflePerRequest,
        Mode::ShufflePerRequest,
    ] {
        lock(&api).set(mode);
        let out = synthd(&cfg, &["sync"]);
        assert_eq!(out.code, Some(0), "{mode:?}: {}", out.all());
        assert_eq!(record_events(&db), baseline, "{mode:?}: {}", out.all());
        polls += 1;
    }
    // The page size changing between polls, including to an exact divisor
    // (an empty last page) and to more than everything.
    lock(&api).set(Mode::ShufflePerScan);
    for size in [7, 3, 20, 40, 100, 1] {
        setup.page_size = size;
        setup.write(&cfg);
        let out = synthd(&cfg, &["sync"]);
        assert_eq!(out.code, Some(0), "size {size}: {}", out.all());
        assert_eq!(record_events(&db), baseline, "size {size}: {}", out.all());
        polls += 1;
    }
    assert_eq!(count(&db, "SELECT COUNT(*) FROM records"), 40);
    println!("reordering and page sizes: {polls} polls, 0 events");
}

// ---------------------------------------------------------------------------
// Receiver faults
// ---------------------------------------------------------------------------

struct Attempt {
    webhook: String,
    duration_ms: i64,
    status: Option<i64>,
    kind: Option<String>,
}

fn attempts(db: &Path) -> Vec<Attempt> {
    read_only(db)
        .prepare(
            "SELECT d.webhook_id, a.duration_ms, a.status_code, a.error_kind
             FROM attempts a JOIN deliveries d ON d.id = a.delivery_id",
        )
        .unwrap()
        .query_map([], |r| {
            Ok(Attempt {
                webhook: r.get(0)?,
                duration_ms: r.get(1)?,
                status: r.get(2)?,
                kind: r.get(3)?,
            })
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

const HOSTILES: [Hostile; 5] = [
    Hostile::Silent,
    Hostile::TrickleHead,
    Hostile::TrickleBody,
    Hostile::Reset,
    Hostile::RedirectToSelf,
];

async fn hostile_setup(
    provider: &str,
    receiver: &str,
) -> (tempfile::TempDir, PathBuf, PathBuf, Vec<Arc<AtomicUsize>>) {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cfg = dir.path().join("synthd.toml");
    let mut setup = Setup::new(&state, provider, receiver);
    let mut counters = Vec::new();
    for kind in HOSTILES {
        let (url, hits) = start_hostile(kind).await;
        setup
            .webhooks
            .push((format!("{kind:?}").to_lowercase(), url));
        counters.push(hits);
    }
    setup.write(&cfg);
    (dir, cfg, state.join("synthd.db"), counters)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_receivers_time_out_while_other_webhooks_keep_flowing() {
    let (_api, provider) = start_provider(20).await;
    let (inbox, receiver) = start_receiver(200).await;
    let (_dir, cfg, db, counters) = hostile_setup(&provider, &receiver).await;

    let started = Instant::now();
    let out = tokio::task::spawn_blocking({
        let cfg = cfg.clone();
        move || synthd(&cfg, &["sync"])
    })
    .await
    .unwrap();
    let took = started.elapsed();
    assert_eq!(out.code, Some(0), "{}", out.all());
    // 21 events to each of six webhooks.
    let hits = inbox.requests();
    assert_eq!(hits.len(), 21);
    let spread = hits.last().unwrap().at - hits.first().unwrap().at;
    assert!(
        spread < Duration::from_millis(900),
        "the healthy webhook waited on the hostile ones: its 21 events took {spread:?}"
    );
    let all = attempts(&db);
    for (kind, hits) in HOSTILES.iter().zip(&counters) {
        let id = format!("{kind:?}").to_lowercase();
        let mine: Vec<&Attempt> = all.iter().filter(|a| a.webhook == id).collect();
        assert_eq!(mine.len(), 21, "{id}: one attempt per event");
        for a in &mine {
            assert!(
                a.duration_ms <= 1600,
                "{id}: an attempt took {} ms",
                a.duration_ms
            );
            match kind {
                Hostile::Silent | Hostile::TrickleHead => {
                    assert_eq!(a.kind.as_deref(), Some("timeout"), "{id}")
                }
                // The status arrived in time: a 2xx is a success, and the
                // body read stops at the timeout.
                Hostile::TrickleBody => assert_eq!(a.status, Some(200), "{id}"),
                Hostile::Reset => {
                    assert!(a.status.is_none() && a.kind.is_some(), "{id}");
                    assert!(a.duration_ms < 500, "{id}: {}", a.duration_ms)
                }
                Hostile::RedirectToSelf => {
                    assert_eq!((a.status, a.kind.as_deref()), (Some(301), Some("redirect")))
                }
            }
        }
        assert_eq!(
            hits.load(Ordering::SeqCst),
            21,
            "{id}: redirects are not followed"
        );
    }
    assert!(took < Duration::from_secs(15), "sync took {took:?}");
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM deliveries WHERE status = 'pending' AND next_attempt_at IS NOT NULL"
        ),
        21 * 4
    );
    println!(
        "hostile receivers: {} attempts against 5 hostile receivers in {took:?}; the healthy one got its 21 within {spread:?}",
        21 * 5
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_receivers_do_not_hold_up_the_daemon() {
    let (_api, provider) = start_provider(20).await;
    let (inbox, receiver) = start_receiver(200).await;
    let (_dir, cfg, _db, _counters) = hostile_setup(&provider, &receiver).await;
    let mut daemon = cmd(&cfg, &["run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(
        "the healthy webhook's 21 events",
        Duration::from_secs(20),
        || inbox.count() >= 21,
    )
    .await;
    let hits = inbox.requests();
    let spread = hits.last().unwrap().at - hits.first().unwrap().at;
    assert!(spread < Duration::from_millis(900), "{spread:?}");
    let stopping = Instant::now();
    signal(&daemon, libc::SIGTERM);
    assert_eq!(
        wait_exit(&mut daemon, Duration::from_secs(15)).await.code(),
        Some(0)
    );
    assert!(stopping.elapsed() < Duration::from_secs(12));
}

// ---------------------------------------------------------------------------
// Privacy and secrets
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_private_reaches_disk_logs_or_output() {
    let (api, provider) = start_provider(12).await;
    let (inbox, receiver) = start_receiver(500).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let db = state.join("synthd.db");
    let cfg = dir.path().join("synthd.toml");
    let setup = Setup::new(&state, &provider, &receiver);
    setup.write(&cfg);
    let mut printed = String::new();
    let mut record = |out: Out| {
        printed.push_str(&out.all());
        out
    };

    record(synthd(&cfg, &["check"]));
    record(synthd(&cfg, &["sync"]));
    // A provider error page full of record data and the token, then HTML.
    for mode in [Mode::Chatty(1), Mode::Chatty(2), Mode::Html] {
        lock(&api).set(mode);
        record(synthd(&cfg, &["sync", "--json"]));
    }
    lock(&api).set(Mode::Up);
    {
        let mut api = lock(&api);
        api.update(2);
        api.records.remove(5);
        let n = api.records.len();
        api.order = (0..n).collect();
    }
    inbox.respond_with(200);

    // The daemon, with a reload that fails on the line holding the secret.
    Connection::open(&db)
        .unwrap()
        .execute_batch(
            "UPDATE poll_state SET last_started_at = last_started_at - 7200000;
             UPDATE deliveries SET next_attempt_at = 0 WHERE status = 'pending';",
        )
        .unwrap();
    let log = dir.path().join("run.log");
    let mut daemon = cmd(&cfg, &["run"])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the daemon to deliver", Duration::from_secs(20), || {
        count(
            &db,
            "SELECT COUNT(*) FROM deliveries WHERE status = 'delivered'",
        ) >= 15
    })
    .await;
    let broken = setup.toml().replace(
        &format!("secret = \"{SECRET}\""),
        &format!("secret = \"{SECRET}"),
    );
    std::fs::write(&cfg, &broken).unwrap();
    signal(&daemon, libc::SIGHUP);
    wait_until("the failed reload", Duration::from_secs(10), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("config reload failed")
    })
    .await;
    let out = record(synthd(&cfg, &["check"]));
    assert_eq!(out.code, Some(2), "{}", out.all());
    setup.write(&cfg);

    for args in [
        &["status"][..],
        &["status", "--json"],
        &["deliveries"],
        &["deliveries", "--json"],
        &["webhook", "test", "hr"],
        &["check"],
    ] {
        let out = record(synthd(&cfg, args));
        assert_eq!(out.code, Some(0), "{args:?}: {}", out.all());
    }
    let (delivery, event): (String, String) = read_only(&db)
        .query_row(
            "SELECT id, event_id FROM deliveries WHERE attempts > 0 LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    for args in [
        &["deliveries", "show", delivery.as_str()][..],
        &["deliveries", "show", delivery.as_str(), "--json"],
        &["replay", event.as_str()],
    ] {
        let out = record(synthd(&cfg, args));
        assert_eq!(out.code, Some(0), "{args:?}: {}", out.all());
    }
    // Killed, so the WAL stays on disk to be inspected too.
    signal(&daemon, libc::SIGKILL);
    let _ = daemon.wait();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut daemon.stderr.take().unwrap(), &mut stderr).unwrap();
    printed.push_str(&stderr);
    printed.push_str(&std::fs::read_to_string(&log).unwrap());
    printed.push_str(&lock(&PRINTED));

    let mut files: Vec<PathBuf> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(names.contains(&"synthd.db-wal".to_string()), "{names:?}");
    let mut bytes_checked = 0;
    let mut forbidden: Vec<&str> = vec![SECRET, TOKEN, URL_TOKEN];
    forbidden.extend_from_slice(PII);
    let secret_key = SECRET.trim_start_matches("whsec_");
    forbidden.push(secret_key);
    for f in &files {
        assert_eq!(mode_of(f), 0o600, "{} is not 0600", f.display());
        let bytes = std::fs::read(f).unwrap();
        bytes_checked += bytes.len();
        for needle in &forbidden {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{needle:?} found in {}",
                f.display()
            );
        }
    }
    assert_eq!(mode_of(&state), 0o700);
    for needle in &forbidden {
        assert!(!printed.contains(needle), "{needle:?} printed:\n{printed}");
    }
    // Receivers get ids only.
    for h in inbox.requests() {
        for needle in PII {
            assert!(
                !h.text().contains(needle),
                "{needle:?} sent in {}",
                h.text()
            );
        }
    }
    assert!(
        printed.contains("***"),
        "redaction markers expected in output"
    );
    println!(
        "privacy: {} files ({bytes_checked} bytes) and {} bytes of output searched for {} secrets and values",
        files.len(),
        printed.len(),
        forbidden.len()
    );
}
