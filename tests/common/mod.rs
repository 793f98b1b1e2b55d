//! Shared helpers for the black-box tests: a temp directory with a config
//! file and a state directory, a way to run the real `synthd` binary against
//! it (recording every output for the leak checks), a loopback webhook
//! receiver that records every request, and signature verification with the
//! official `standardwebhooks` crate.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine as _;
use hmac::{KeyInit, Mac};
use serde_json::Value;

/// A valid signing secret: `whsec_` + base64 of [`SECRET_KEY`].
pub const SECRET: &str = "whsec_c3ludGhkLWludGVncmF0aW9uLXRlc3Qta2V5LTAwMDE=";
/// The decoded key bytes of [`SECRET`].
pub const SECRET_KEY: &str = "synthd-integration-test-key-0001";
/// A different valid secret, for negative controls.
pub const OTHER_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

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
                "SELECT record_id FROM records WHERE account_id = ?1 AND resource = ?2 ORDER BY record_id",
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
}

/// A loopback webhook receiver: records every request and answers with a
/// configurable status (200 by default).
#[derive(Clone)]
pub struct Receiver {
    /// The base URL, e.g. `http://127.0.0.1:1234`; requests go to any path.
    pub base: String,
    requests: Arc<Mutex<Vec<Received>>>,
    status: Arc<AtomicU16>,
}

async fn record(
    State(rx): State<Receiver>,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, &'static str) {
    rx.requests.lock().unwrap().push(Received {
        path_and_query: uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers,
        body: body.to_vec(),
    });
    let code = rx.status.load(Ordering::SeqCst);
    (
        StatusCode::from_u16(code).unwrap(),
        if code < 300 { "ok" } else { "receiver says no" },
    )
}

pub async fn start_receiver() -> Receiver {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let rx = Receiver {
        base: format!("http://{addr}"),
        requests: Arc::default(),
        status: Arc::new(AtomicU16::new(200)),
    };
    let app = Router::new()
        .fallback(axum::routing::any(record))
        .with_state(rx.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    rx
}

impl Receiver {
    pub fn respond_with(&self, code: u16) {
        self.status.store(code, Ordering::SeqCst);
    }

    pub fn requests(&self) -> Vec<Received> {
        self.requests.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    /// Waits (at most 10 s) until at least `n` requests arrived; returns all.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.requests();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "receiver got {} requests, expected {n}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

// ---------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------

fn hex_hmac(key: &[u8], body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Verifies one received webhook request the way a receiver would, with the
/// official `standardwebhooks` crate and the plain hex HMAC header, and
/// returns its JSON body.
pub fn verify(r: &Received, secret: &str) -> Value {
    standardwebhooks::Webhook::new(secret)
        .unwrap()
        .verify(&r.body, &r.headers)
        .unwrap_or_else(|e| {
            panic!(
                "standardwebhooks rejected a request: {e}; headers {:?}",
                r.headers
            )
        });
    // The negative control: another secret must not verify.
    assert!(
        standardwebhooks::Webhook::new(OTHER_SECRET)
            .unwrap()
            .verify(&r.body, &r.headers)
            .is_err(),
        "a request verified with the wrong secret"
    );
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .unwrap();
    let hex = r
        .headers
        .get("x-synthd-signature")
        .expect("x-synthd-signature header")
        .to_str()
        .unwrap();
    assert_eq!(hex, hex_hmac(&key, &r.body), "x-synthd-signature mismatch");
    assert_eq!(
        r.headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let sig = r.headers["webhook-signature"].to_str().unwrap();
    assert!(sig.starts_with("v1,"), "webhook-signature {sig:?}");
    let body: Value = serde_json::from_slice(&r.body).expect("event body is JSON");
    assert_eq!(
        r.headers["webhook-id"].to_str().unwrap(),
        body["id"].as_str().expect("event id"),
        "webhook-id is the event id"
    );
    assert!(body["id"].as_str().unwrap().starts_with("evt_"));
    let ts: i64 = r.headers["webhook-timestamp"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let now = chrono::Utc::now().timestamp();
    assert!(
        (now - ts).abs() < 120,
        "webhook-timestamp {ts} is not now ({now})"
    );
    body
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
