//! Shared helpers for the black-box tests: a temp directory with a config
//! file and a state directory, a way to run the real `synthd` binary against
//! it (recording every output for the leak checks), the one loopback webhook
//! receiver of the suites (it verifies every request with the official
//! `standardwebhooks` crate and records it), condition waits, and the few
//! database queries no command can answer.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine as _;
use hmac::{KeyInit, Mac};
use serde_json::Value;
use synthd::clock::{Clock, ManualClock};

/// A valid signing secret: `whsec_` + base64 of [`SECRET_KEY`].
pub const SECRET: &str = "whsec_c3ludGhkLWludGVncmF0aW9uLXRlc3Qta2V5LTAwMDE=";
/// The decoded key bytes of [`SECRET`].
pub const SECRET_KEY: &str = "synthd-integration-test-key-0001";

/// The strings of [`SECRET`] that must never be stored or printed.
pub fn secret_forms() -> Vec<String> {
    vec![
        SECRET.to_string(),
        SECRET.trim_start_matches("whsec_").to_string(),
        SECRET_KEY.to_string(),
    ]
}

/// What one CLI run produced.
#[derive(Debug, Clone)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// stdout as JSON (for `--json` commands).
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n--- stdout\n{}\n--- stderr\n{}",
                self.stdout, self.stderr
            )
        })
    }

    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "unexpected exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// A fresh temp dir holding `synthd.toml` and the state directory
/// `state/` (not created: synthd creates it), plus the log of every CLI
/// output produced against it.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub state: PathBuf,
    /// Extra environment variables for every child.
    pub vars: Vec<(String, String)>,
    outputs: Mutex<Vec<Out>>,
}

impl TestEnv {
    pub fn new() -> TestEnv {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("synthd.toml");
        let state = dir.path().join("state");
        TestEnv {
            dir,
            config,
            state,
            vars: Vec::new(),
            outputs: Mutex::new(Vec::new()),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The `[daemon]` table every test config starts with.
    pub fn daemon_table(&self) -> String {
        format!(
            "[daemon]\nstate_dir = {:?}\nlog_format = \"json\"\n\n",
            self.state.display().to_string()
        )
    }

    /// Writes the config file: the `[daemon]` table plus `rest`.
    pub fn write_config(&self, rest: &str) {
        std::fs::write(&self.config, format!("{}{rest}", self.daemon_table())).unwrap();
    }

    pub fn set_var(&mut self, k: &str, v: &str) {
        self.vars.push((k.to_string(), v.to_string()));
    }

    /// Runs `synthd --config <config> <args…>` to completion off the async
    /// runtime (so the in-process provider and receiver keep serving).
    pub async fn synthd(&self, args: &[&str]) -> Out {
        let mut cmd = std::process::Command::new(synthd_bin());
        cmd.arg("--config").arg(&self.config).args(args);
        clean_env(&mut cmd);
        for (k, v) in &self.vars {
            cmd.env(k, v);
        }
        let out = run_with_deadline(cmd, Duration::from_secs(60)).await;
        self.outputs.lock().unwrap().push(out.clone());
        out
    }

    /// `sync --json` (plus `extra` args); returns the output and its JSON.
    pub async fn sync(&self, extra: &[&str]) -> (Out, Value) {
        let mut args = vec!["sync", "--json"];
        args.extend_from_slice(extra);
        let out = self.synthd(&args).await;
        let json = out.json();
        (out, json)
    }

    /// Every output of every CLI run so far.
    pub fn outputs(&self) -> Vec<Out> {
        self.outputs.lock().unwrap().clone()
    }

    pub fn db_path(&self) -> PathBuf {
        self.state.join("synthd.db")
    }

    /// A connection to the state database (no synthd may be running).
    pub fn db(&self) -> rusqlite::Connection {
        let c = rusqlite::Connection::open(self.db_path()).expect("open synthd.db");
        c.busy_timeout(Duration::from_secs(5)).unwrap();
        c
    }

    /// Record ids tracked for (account, resource), sorted.
    pub fn tracked(&self, account: &str, resource: &str) -> Vec<String> {
        let c = self.db();
        let mut st = c
            .prepare(
                "SELECT r.record_id FROM records r JOIN streams s ON s.id = r.stream
                 WHERE s.account_id = ?1 AND s.resource = ?2 ORDER BY r.record_id",
            )
            .unwrap();
        st.query_map([account, resource], |r| r.get::<_, String>(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// Asserts that no file of the state directory and no CLI output so far
    /// contains any of `forbidden` (plus the webhook secret in all its
    /// forms), and that the database is private (0600).
    pub fn assert_no_leaks(&self, forbidden: &[String]) {
        let mut forbidden: Vec<String> = forbidden.to_vec();
        forbidden.extend(secret_forms());
        forbidden.retain(|f| !f.is_empty());

        let db = self.db_path();
        assert!(db.exists(), "no database at {}", db.display());
        let mut scanned = 0;
        for entry in std::fs::read_dir(&self.state).unwrap() {
            let p = entry.unwrap().path();
            if !p.is_file() {
                continue;
            }
            let bytes = std::fs::read(&p).unwrap();
            scanned += 1;
            for f in &forbidden {
                assert!(
                    find(&bytes, f.as_bytes()).is_none(),
                    "{} contains the forbidden value {f:?}",
                    p.display()
                );
            }
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if name.starts_with("synthd.db") {
                let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{name} has mode {mode:o}, want 0600");
            }
        }
        assert!(scanned >= 1);
        let dir_mode = std::fs::metadata(&self.state).unwrap().permissions().mode();
        assert_eq!(
            dir_mode & 0o077,
            0,
            "state dir is group/world accessible: {dir_mode:o}"
        );

        for out in self.outputs() {
            for f in &forbidden {
                assert!(
                    !out.stdout.contains(f.as_str()) && !out.stderr.contains(f.as_str()),
                    "a CLI output contains the forbidden value {f:?}\n--- stdout\n{}\n--- stderr\n{}",
                    out.stdout,
                    out.stderr
                );
            }
            assert!(
                !out.stderr.contains("panicked") && !out.stderr.contains("RUST_BACKTRACE"),
                "a CLI run panicked:\n{}",
                out.stderr
            );
        }
    }
}

// ---------------------------------------------------------------------------
// The few facts no command shows. Every query the tests make of the
// database's layout is here, so a schema change is mended in one place.
// ---------------------------------------------------------------------------

fn open_db(db: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(db).expect("open synthd.db");
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c
}

/// The ids of the events stored in `db` (the file `synthd.db`).
pub fn stored_event_ids(db: &Path) -> BTreeSet<String> {
    let c = open_db(db);
    let mut st = c.prepare("SELECT id FROM events").unwrap();
    st.query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// How many delivery attempts `db` holds.
pub fn stored_attempts(db: &Path) -> u64 {
    open_db(db)
        .query_row("SELECT COUNT(*) FROM attempts", [], |r| r.get::<_, i64>(0))
        .unwrap() as u64
}

/// Makes every pending delivery to `webhook` due `after` from now.
pub fn delay_pending_deliveries(db: &Path, webhook: &str, after: Duration) {
    let at = chrono::Utc::now().timestamp_millis() + after.as_millis() as i64;
    open_db(db)
        .execute(
            "UPDATE deliveries SET next_attempt_at = ?2 WHERE status = 'pending' AND webhook_id = ?1",
            rusqlite::params![webhook, at],
        )
        .unwrap();
}

/// Moves the creation time of every pending delivery `by` into the past, as
/// if they had waited that long.
pub fn age_pending_deliveries(db: &Path, by: Duration) {
    open_db(db)
        .execute(
            "UPDATE deliveries SET created_at = created_at - ?1 WHERE status = 'pending'",
            [by.as_millis() as i64],
        )
        .unwrap();
}

pub fn synthd_bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("synthd")
}

/// Children never inherit `SYNTHD_…` overrides or credentials from the
/// environment the tests run in.
pub fn clean_env(cmd: &mut std::process::Command) {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().to_string();
        if k.starts_with("SYNTHD_") || k == "CREDENTIALS_DIRECTORY" || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
}

/// Runs a command to completion on a blocking thread; kills it after
/// `deadline` so a hung child fails the test instead of hanging it.
pub async fn run_with_deadline(mut cmd: std::process::Command, deadline: Duration) -> Out {
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut child = cmd
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn synthd");
        let mut so = child.stdout.take().unwrap();
        let mut se = child.stderr.take().unwrap();
        let t_out = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = so.read_to_string(&mut s);
            s
        });
        let t_err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = se.read_to_string(&mut s);
            s
        });
        let started = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if started.elapsed() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("synthd did not finish within {deadline:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Out {
            code: status.code().unwrap_or(-1),
            stdout: t_out.join().unwrap(),
            stderr: t_err.join().unwrap(),
        }
    })
    .await
    .unwrap()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > haystack.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------
// The receiver
// ---------------------------------------------------------------------------

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    pub path_and_query: String,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
    /// When it arrived.
    pub at: Instant,
    /// The status the receiver answered it with.
    pub status: u16,
}

impl Received {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's value ("" when absent).
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        self.path_and_query.split('?').next().unwrap_or_default()
    }
}

/// How the receiver answers a request.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    /// Waited after the request is recorded and before the answer.
    pub delay: Duration,
    pub body: Option<String>,
    pub headers: Vec<(String, String)>,
}

impl Reply {
    pub fn status(code: u16) -> Reply {
        Reply {
            status: code,
            delay: Duration::ZERO,
            body: None,
            headers: Vec::new(),
        }
    }

    pub fn delay(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }

    pub fn body(mut self, text: &str) -> Reply {
        self.body = Some(text.to_string());
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

/// Decides the answer to one request; `None` means the default reply.
type Script = Box<dyn FnMut(&Received) -> Option<Reply> + Send>;

struct Inbox {
    /// Every request must verify with each of these secrets.
    secrets: Vec<String>,
    /// The sender's clock when it is a `ManualClock`: `webhook-timestamp`
    /// must then be exactly its time. `None`: the wall clock.
    clock: Option<ManualClock>,
    reply: Reply,
    script: Option<Script>,
    requests: Vec<Received>,
    /// Why each request that failed verification failed.
    rejected: Vec<String>,
}

/// The one loopback webhook receiver of the test suites. It verifies every
/// request the way a real receiver would (the official `standardwebhooks`
/// crate for `webhook-signature` with every configured secret, the hex
/// `x-synthd-signature`, `webhook-id` = the event id, `webhook-timestamp` =
/// now), answers a request that fails with 401, and records everything. The
/// answer is configurable: status, delay, body and headers, or a script that
/// decides per request.
#[derive(Clone)]
pub struct Receiver {
    /// The base URL, e.g. `http://127.0.0.1:1234`; requests go to any path.
    pub base: String,
    inbox: Arc<Mutex<Inbox>>,
}

async fn receive(
    State(rx): State<Receiver>,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut req = Received {
        path_and_query: uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers,
        body: body.to_vec(),
        at: Instant::now(),
        status: 0,
    };
    let reply = {
        let mut inbox = lock(&rx.inbox);
        let now = inbox.clock.as_ref().map(|c| c.now().timestamp());
        let secrets: Vec<&str> = inbox.secrets.iter().map(String::as_str).collect();
        let verdict = check_request(&req, &secrets, now);
        let reply = match verdict {
            Err(why) => {
                inbox
                    .rejected
                    .push(format!("{} {}: {why}", req.path_and_query, req.text()));
                Reply::status(401).body("signature rejected")
            }
            Ok(_) => {
                let default = inbox.reply.clone();
                match inbox.script.as_mut() {
                    Some(script) => script(&req).unwrap_or(default),
                    None => default,
                }
            }
        };
        req.status = reply.status;
        inbox.requests.push(req);
        reply
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut resp = (
        StatusCode::from_u16(reply.status).unwrap(),
        reply.body.unwrap_or_else(|| {
            if reply.status < 300 {
                "ok".into()
            } else {
                "receiver says no".into()
            }
        }),
    )
        .into_response();
    for (k, v) in &reply.headers {
        resp.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    resp
}

/// A receiver for [`SECRET`], on the wall clock, answering 200.
pub async fn start_receiver() -> Receiver {
    Receiver::start(&[SECRET], None).await
}

impl Receiver {
    /// A receiver whose requests must verify with every one of `secrets`
    /// (more than one during a rotation), stamped by `clock` (`None`: the
    /// wall clock).
    pub async fn start(secrets: &[&str], clock: Option<ManualClock>) -> Receiver {
        assert!(!secrets.is_empty());
        assert!(
            !secrets.contains(&NEGATIVE_CONTROL_SECRET),
            "the negative-control secret must never be configured"
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let rx = Receiver {
            base: format!("http://{addr}"),
            inbox: Arc::new(Mutex::new(Inbox {
                secrets: secrets.iter().map(|s| s.to_string()).collect(),
                clock,
                reply: Reply::status(200),
                script: None,
                requests: Vec::new(),
                rejected: Vec::new(),
            })),
        };
        let app = Router::new()
            .fallback(axum::routing::any(receive))
            .with_state(rx.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        rx
    }

    /// Answers every request with `code` from now on.
    pub fn respond_with(&self, code: u16) {
        self.reply(Reply::status(code));
    }

    /// Answers every request with `reply` from now on.
    pub fn reply(&self, reply: Reply) {
        lock(&self.inbox).reply = reply;
    }

    /// Decides each answer with `script` (`None` from it: the default
    /// reply) until [`Receiver::unscript`].
    pub fn script(&self, script: impl FnMut(&Received) -> Option<Reply> + Send + 'static) {
        lock(&self.inbox).script = Some(Box::new(script));
    }

    pub fn unscript(&self) {
        lock(&self.inbox).script = None;
    }

    /// Every request so far, asserting that each one verified.
    pub fn requests(&self) -> Vec<Received> {
        let inbox = lock(&self.inbox);
        assert!(
            inbox.rejected.is_empty(),
            "the receiver rejected {} request(s):\n{}",
            inbox.rejected.len(),
            inbox.rejected.join("\n")
        );
        inbox.requests.clone()
    }

    /// Every request so far, verified or not.
    pub fn all_requests(&self) -> Vec<Received> {
        lock(&self.inbox).requests.clone()
    }

    /// Why each rejected request was rejected.
    pub fn rejected(&self) -> Vec<String> {
        lock(&self.inbox).rejected.clone()
    }

    pub fn count(&self) -> usize {
        self.requests().len()
    }

    /// Forgets the requests so far (rejections are kept).
    pub fn clear(&self) {
        lock(&self.inbox).requests.clear();
    }

    /// Waits (at most 10 s) until at least `n` requests arrived; returns all.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        wait_until(
            &format!("{n} requests at the receiver"),
            Duration::from_secs(10),
            || self.requests().len() >= n,
        )
        .await;
        self.requests()
    }
}

// ---------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------

/// A valid secret no test ever configures: nothing may verify with it.
pub const NEGATIVE_CONTROL_SECRET: &str = "whsec_bmVnYXRpdmUgY29udHJvbDogbmV2ZXIgY29uZmlndXJlZA==";

fn hex_hmac(key: &[u8], body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `signature` (the `webhook-signature` header) holds the `v1`
/// signature `secret` makes over (id, timestamp, body), computed by the
/// official crate.
fn signed_with(secret: &str, id: &str, ts: i64, body: &[u8], signature: &str) -> bool {
    let expected = standardwebhooks::Webhook::new(secret)
        .unwrap()
        .sign(id, ts, body)
        .unwrap();
    signature.split(' ').any(|s| s == expected)
}

/// Checks one webhook request the way a receiver would and returns its JSON
/// body. `now`: the sender's (manual) clock in Unix seconds, which
/// `webhook-timestamp` must equal; `None` checks against the wall clock
/// with the official crate's `verify`, which also bounds the timestamp.
pub fn check_request(r: &Received, secrets: &[&str], now: Option<i64>) -> Result<Value, String> {
    let header = |name: &str| {
        r.headers
            .get(name)
            .ok_or(format!("no {name} header"))
            .and_then(|v| v.to_str().map_err(|_| format!("{name} is not text")))
    };
    let id = header("webhook-id")?;
    let signature = header("webhook-signature")?;
    let ts: i64 = header("webhook-timestamp")?
        .parse()
        .map_err(|_| "webhook-timestamp is not a number".to_string())?;
    if header("content-type")? != "application/json" {
        return Err(format!("content-type {:?}", header("content-type")?));
    }
    if !signature.starts_with("v1,") {
        return Err(format!("webhook-signature {signature:?}"));
    }
    for secret in secrets {
        match now {
            None => standardwebhooks::Webhook::new(secret)
                .unwrap()
                .verify(&r.body, &r.headers)
                .map_err(|e| format!("standardwebhooks rejected it for {secret}: {e}"))?,
            Some(now) => {
                if ts != now {
                    return Err(format!("webhook-timestamp {ts}, the clock says {now}"));
                }
                if !signed_with(secret, id, ts, &r.body, signature) {
                    return Err(format!("webhook-signature does not verify for {secret}"));
                }
            }
        }
    }
    if now.is_none() {
        let wall = chrono::Utc::now().timestamp();
        if (wall - ts).abs() >= 120 {
            return Err(format!("webhook-timestamp {ts} is not now ({wall})"));
        }
    }
    // The negative control: another secret must not verify.
    if signed_with(NEGATIVE_CONTROL_SECRET, id, ts, &r.body, signature) {
        return Err("it verified with a secret that was never configured".into());
    }
    let key = base64::engine::general_purpose::STANDARD
        .decode(secrets[0].trim_start_matches("whsec_"))
        .unwrap();
    let hex = header("x-synthd-signature")?;
    if hex != hex_hmac(&key, &r.body) {
        return Err("x-synthd-signature mismatch".into());
    }
    let body: Value =
        serde_json::from_slice(&r.body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let event_id = body["id"].as_str().ok_or("the body has no id")?;
    if event_id != id {
        return Err(format!("webhook-id {id} is not the event id {event_id}"));
    }
    if !event_id.starts_with("evt_") {
        return Err(format!("event id {event_id}"));
    }
    Ok(body)
}

/// Verifies one received webhook request with `secret` on the wall clock
/// (see [`check_request`]) and returns its JSON body.
pub fn verify(r: &Received, secret: &str) -> Value {
    check_request(r, &[secret], None).unwrap_or_else(|e| {
        panic!(
            "a request failed verification: {e}; headers {:?}",
            r.headers
        )
    })
}

/// `(type, record_id)` of each event, `record_id` empty for account events.
pub type EventKey = (String, String);

pub fn key_of(body: &Value) -> EventKey {
    (
        body["type"].as_str().unwrap().to_string(),
        body["data"]["record_id"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

/// Verifies every request and returns their (type, record_id) multiset as a
/// sorted list (duplicates stay visible).
pub fn verified_keys(reqs: &[Received], secret: &str) -> Vec<EventKey> {
    let mut keys: Vec<EventKey> = reqs.iter().map(|r| key_of(&verify(r, secret))).collect();
    keys.sort();
    keys
}

pub fn keys(list: &[(&str, &str)]) -> Vec<EventKey> {
    let mut v: Vec<EventKey> = list
        .iter()
        .map(|(t, id)| (t.to_string(), id.to_string()))
        .collect();
    v.sort();
    v
}

pub fn set<T: Ord + Clone>(items: &[T]) -> BTreeSet<T> {
    items.iter().cloned().collect()
}

/// Every string leaf of `v` (recursively) except the one at `/id`: the
/// record values that must never be stored or printed.
pub fn field_values(records: &[Value]) -> Vec<String> {
    fn walk(v: &Value, top: bool, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Array(a) => a.iter().for_each(|x| walk(x, false, out)),
            Value::Object(m) => {
                for (k, x) in m {
                    if !(top && k == "id") {
                        walk(x, false, out);
                    }
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for r in records {
        walk(r, true, &mut out);
    }
    out.sort();
    out.dedup();
    out
}

/// A mutex guard that survives a panicked holder: a failed assertion in one
/// task must not hide the state the test wants to report.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Serves `router` on a free loopback port; returns its base URL.
pub async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

/// Waits for a child `synthd` to exit, killing it and failing the test
/// after `within`.
pub async fn wait_exit(
    child: &mut std::process::Child,
    within: Duration,
) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("synthd did not exit within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Waits (polling every 10 ms) until `check` holds; fails the test after
/// `within`.
pub async fn wait_until(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// [`wait_until`] for a check that is itself async (an HTTP request).
pub async fn wait_until_async<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------
// Driving the store as a poll does
// ---------------------------------------------------------------------------

/// Commits one complete scan of `(id, hash)` pairs for `account`/`resource`
/// through the real rules (`ingest`) and store, as a poll does: the first
/// scan is the silent baseline, later ones emit events to `webhooks`.
pub async fn commit_scan(
    store: &synthd::store::Store,
    account: &str,
    resource: &str,
    records: &[(String, [u8; 32])],
    webhooks: &[synthd::config::Webhook],
    now: chrono::DateTime<chrono::Utc>,
) -> (synthd::ingest::PageChanges, synthd::ingest::ScanEnd) {
    use synthd::detect::{RecordDigest, SeenIds};
    use synthd::store::{ScanClaim, ScanRequest};
    let ScanClaim::Started(scan) = store
        .begin_scan(&ScanRequest {
            account_id: account.into(),
            resource: resource.into(),
            shape: "shape".into(),
            now,
            skip_if_started_after: None,
        })
        .await
        .unwrap()
    else {
        panic!("the scan was not started");
    };
    let emit = scan.baseline_done;
    let mut seen = SeenIds::with_capacity(records.len());
    let digests: Vec<RecordDigest> = records
        .iter()
        .map(|(id, hash)| {
            seen.see(id, false);
            RecordDigest {
                id: id.clone(),
                numeric: false,
                hash: *hash,
            }
        })
        .collect();
    let ids: Vec<String> = digests.iter().map(|d| d.id.clone()).collect();
    let stored = store.stored_hashes(&scan, ids).await.unwrap();
    let (rows, changes) = synthd::ingest::page(&scan, &digests, &stored, emit, webhooks, now);
    store.commit_page(&scan, rows).await.unwrap();
    let missing = store
        .missing_ids(&scan, std::sync::Arc::new(seen))
        .await
        .unwrap();
    let (rows, end) = synthd::ingest::scan_end(&scan, missing, true, emit, webhooks, now);
    store.finish_scan(&scan, rows).await.unwrap();
    (changes, end)
}

/// Records `account.created` (and the rest) for `accounts` as the daemon
/// does on start: through `ingest` and the store.
pub async fn record_accounts(
    store: &synthd::store::Store,
    accounts: &[synthd::ingest::AccountFingerprint],
    webhooks: &[synthd::config::Webhook],
    now: chrono::DateTime<chrono::Utc>,
) {
    let stored = store.stored_accounts().await.unwrap();
    let changes = synthd::ingest::account_changes(&stored, accounts, webhooks, now);
    store.apply_account_changes(&changes, now).await.unwrap();
}

// ---------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------

/// The server the PostgreSQL tests use: `$SYNTHD_TEST_POSTGRES`, by default
/// the local one with trust auth.
pub fn postgres_server() -> String {
    std::env::var("SYNTHD_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh database on the test server, dropped when this goes out of
/// scope. `None` (after saying so once) when no server answers, unless
/// `SYNTHD_REQUIRE_POSTGRES=1` (CI), where that fails the test.
pub struct PgDb {
    pub name: String,
    /// The URL of the fresh database.
    pub url: String,
}

static PG_SKIP: std::sync::Once = std::sync::Once::new();

impl PgDb {
    pub async fn create(label: &str) -> Option<PgDb> {
        let server = postgres_server();
        let admin = match tokio_postgres::connect(&server, tokio_postgres::NoTls).await {
            Ok((client, conn)) => {
                tokio::spawn(conn);
                client
            }
            Err(e) => {
                if std::env::var("SYNTHD_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                    panic!("SYNTHD_REQUIRE_POSTGRES=1 but no PostgreSQL answers at {server}: {e}");
                }
                PG_SKIP.call_once(|| {
                    println!(
                        "skipped: the PostgreSQL tests need a server at {server} ({e}); set SYNTHD_TEST_POSTGRES"
                    )
                });
                return None;
            }
        };
        let name = format!(
            "synthd_t_{}_{}",
            label,
            ulid::Ulid::generate().to_string().to_lowercase()
        );
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        let url = match server.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => panic!("{server} names no database"),
        };
        Some(PgDb { name, url })
    }

    /// A store on this database, as a synthd process would open it.
    pub async fn store(&self, lease: Duration) -> synthd::store::Store {
        synthd::store::Store::connect_postgres(&self.url, 4, lease)
            .await
            .unwrap()
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let (server, name) = (postgres_server(), self.name.clone());
        // Drop runs outside any runtime: a short-lived one of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok((client, conn)) =
                    tokio_postgres::connect(&server, tokio_postgres::NoTls).await
                {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}
