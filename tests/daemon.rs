//! The real `synthd run` process: start-up, /healthz and /metrics (every
//! gauge asserted), SIGHUP reloads (a bad config kept out, an account added,
//! an account removed), SIGTERM exit, and JSON logs without secrets. Every
//! webhook request is verified by the shared receiver (tests/common).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Receiver, Reply, SECRET, lock, wait_exit, wait_until, wait_until_async};
use wiremock::matchers::{bearer_token, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TOKEN: &str = "provider-token-Qx81";
const URL_TOKEN: &str = "hook-token-Zz90";
/// Account `gamma`'s token, which the provider refuses: a failing resource.
const BAD_TOKEN: &str = "refused-token-Gm42";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Webhook `hr` gets everything; `dead` gets account events and refuses
/// them all, so they stay pending. `gamma` polls with a token the provider
/// refuses.
fn config(
    state: &std::path::Path,
    provider: &str,
    receiver: &str,
    port: u16,
    accounts: &[&str],
) -> String {
    let mut s = format!(
        r#"
[daemon]
state_dir = "{state}"
listen = "127.0.0.1:{port}"

[providers.p]
base_url = "{provider}/v1"
auth = {{ type = "bearer", token = "{TOKEN}" }}
records = "/data"

[providers.p.resources.hris_employees]
path = "/employees"

[[webhooks]]
id = "hr"
url = "{receiver}/hook?token={URL_TOKEN}"
events = ["*"]
secret = "{SECRET}"

[[webhooks]]
id = "dead"
url = "{receiver}/dead"
events = ["account.*"]
secret = "{SECRET}"
"#,
        state = state.display()
    );
    for a in accounts {
        s.push_str(&format!("\n[[accounts]]\nid = \"{a}\"\nprovider = \"p\"\n"));
        if *a == "gamma" {
            s.push_str(&format!(
                "auth = {{ type = \"bearer\", token = \"{BAD_TOKEN}\" }}\n"
            ));
        }
    }
    s
}

/// `(type, account)` of every account event `hr` accepted, sorted.
fn account_events(rx: &Receiver) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = rx
        .requests()
        .iter()
        .filter(|r| r.path() == "/hook")
        .map(|r| r.json())
        .filter(|v| v["type"].as_str().unwrap().starts_with("account."))
        .map(|v| {
            (
                v["type"].as_str().unwrap().to_string(),
                v["data"]["account_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

fn events(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = list
        .iter()
        .map(|(t, a)| (t.to_string(), a.to_string()))
        .collect();
    v.sort();
    v
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

async fn get(port: u16, path: &str) -> (u16, String) {
    let resp = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// The value of one gauge line of the /metrics text.
fn gauge(metrics: &str, name: &str) -> Option<i64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Collects a child's stdout lines as they are written.
fn collect_lines(child: &mut Child) -> Arc<Mutex<Vec<String>>> {
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let (out, sink) = (child.stdout.take().unwrap(), lines.clone());
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            lock(&sink).push(line);
        }
    });
    lines
}

fn logged(lines: &Mutex<Vec<String>>, message: &str) -> usize {
    let needle = format!("\"message\":\"{message}\"");
    lock(lines).iter().filter(|l| l.contains(&needle)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_metrics_reloads_on_sighup_and_stops_on_sigterm() {
    let provider = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/employees"))
        .and(bearer_token(TOKEN))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "data": [{"id": 1, "name": "Ottoline-Vexby"}]
        })))
        .mount(&provider)
        .await;
    let rx = Receiver::start(&[SECRET], None).await;
    rx.script(|q| (q.path() == "/dead").then(|| Reply::status(500).body("gone fishing")));

    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cfg = dir.path().join("synthd.toml");
    let port = free_port();
    let write = |accounts: &[&str]| {
        std::fs::write(
            &cfg,
            config(&state, &provider.uri(), &rx.base, port, accounts),
        )
        .unwrap()
    };
    write(&["alpha", "gamma"]);

    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin!("synthd"));
    cmd.arg("--config")
        .arg(&cfg)
        .arg("run")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    common::clean_env(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    let lines = collect_lines(&mut child);
    let within = Duration::from_secs(15);

    wait_until("account.created for alpha and gamma", within, || {
        account_events(&rx) == events(&[("account.created", "alpha"), ("account.created", "gamma")])
    })
    .await;
    wait_until("alpha's poll", within, || {
        logged(&lines, "poll finished") >= 1
    })
    .await;
    wait_until("the refused account events", within, || {
        rx.requests().iter().filter(|r| r.path() == "/dead").count() >= 2
    })
    .await;

    wait_until_async("/healthz", within, || async {
        reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
            .await
            .is_ok()
    })
    .await;
    assert_eq!(get(port, "/healthz").await, (200, "ok\n".to_string()));
    let metrics = async || get(port, "/metrics").await.1;
    // Alpha polled fine and gamma failed; hr took both account events and
    // dead refused them (its attempts are recorded after the receiver saw
    // them, hence the wait).
    wait_until_async("the gauges to settle", within, || async {
        let m = metrics().await;
        gauge(&m, "synthd_resources{state=\"ok\"}") == Some(1)
            && gauge(&m, "synthd_resources{state=\"failing\"}") == Some(1)
            && gauge(
                &m,
                "synthd_deliveries_total{result=\"delivered\",status_class=\"2xx\"}",
            ) == Some(2)
            && gauge(&m, "synthd_deliveries_pending") == Some(2)
    })
    .await;
    let m = metrics().await;
    // Dead's refusals are retries, never final failures yet.
    assert_eq!(
        gauge(
            &m,
            "synthd_deliveries_total{result=\"failed\",status_class=\"5xx\"}"
        ),
        None,
        "{m}"
    );
    assert!(
        gauge(&m, "synthd_delivery_retries_scheduled_total").unwrap_or(0) >= 2,
        "{m}"
    );
    assert_eq!(gauge(&m, "synthd_paused_webhooks"), Some(0), "{m}");
    let age = gauge(&m, "synthd_oldest_pending_delivery_age_seconds").unwrap();
    assert!(age < 60, "oldest pending age {age}:\n{m}");
    // The two refused deliveries have been waiting an hour (as if).
    common::age_pending_deliveries(&state.join("synthd.db"), Duration::from_secs(3600));
    let m = metrics().await;
    let age = gauge(&m, "synthd_oldest_pending_delivery_age_seconds").unwrap();
    assert!(
        (3600..3660).contains(&age),
        "oldest pending age {age}:\n{m}"
    );

    // A broken config on SIGHUP is logged and the old one keeps running.
    std::fs::write(&cfg, "[[accounts]]\nid = \"x\"\nprovider = \"nope\"\n").unwrap();
    signal(&child, libc::SIGHUP);
    wait_until("the failed reload", within, || {
        logged(&lines, "config reload failed; keeping the running config") == 1
    })
    .await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "a bad reload must not stop the daemon"
    );

    // A good one adds an account: account.created arrives.
    write(&["alpha", "beta", "gamma"]);
    signal(&child, libc::SIGHUP);
    wait_until("account.created for beta", within, || {
        account_events(&rx).contains(&("account.created".into(), "beta".into()))
    })
    .await;

    // One that removes an account: account.deleted arrives, and the
    // account's poll state is gone.
    write(&["beta", "gamma"]);
    signal(&child, libc::SIGHUP);
    wait_until("account.deleted for alpha", within, || {
        account_events(&rx).contains(&("account.deleted".into(), "alpha".into()))
    })
    .await;
    assert_eq!(
        account_events(&rx),
        events(&[
            ("account.created", "alpha"),
            ("account.created", "beta"),
            ("account.created", "gamma"),
            ("account.deleted", "alpha"),
        ])
    );
    let status = std::process::Command::new(assert_cmd::cargo::cargo_bin!("synthd"))
        .arg("--config")
        .arg(&cfg)
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let mut polled: Vec<&str> = status["polls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["account_id"].as_str().unwrap())
        .collect();
    polled.dedup();
    assert!(!polled.contains(&"alpha"), "{status}");
    assert!(polled.contains(&"gamma"), "{status}");

    signal(&child, libc::SIGTERM);
    assert_eq!(wait_exit(&mut child, within).await.code(), Some(0));
    // The reader thread has seen the end of stdout once the process is gone.
    wait_until("the last log line", within, || {
        logged(&lines, "synthd stopped") == 1
    })
    .await;

    let lines = lock(&lines).clone();
    let logs: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not a JSON log line: {l}")))
        .collect();
    let messages: Vec<&str> = logs.iter().filter_map(|l| l["message"].as_str()).collect();
    for expected in [
        "synthd started",
        "poll finished",
        "delivered",
        "config reload failed; keeping the running config",
        "config reloaded",
        "synthd stopped",
    ] {
        assert!(
            messages.contains(&expected),
            "missing log {expected:?} in {messages:?}"
        );
    }
    let poll = logs
        .iter()
        .find(|l| l["message"] == "poll finished" && l["account"] == "alpha")
        .unwrap();
    assert_eq!(poll["resource"], "hris_employees");
    assert_eq!(poll["records"], 1);
    assert!(poll["duration_ms"].is_u64());
    let all = lines.join("\n");
    for secret in [SECRET, TOKEN, URL_TOKEN, BAD_TOKEN, "Ottoline-Vexby"] {
        assert!(!all.contains(secret), "{secret} leaked into the logs");
    }
}

/// A long scan's events go out while it is still running: page 1's events
/// reach the receiver while the provider holds page 2 back (before, they
/// waited for the scan's end or the delivery loop's 30 s nap).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_a_committed_page_are_delivered_while_the_scan_goes_on() {
    events_go_out_while_page_2_is_held("run").await;
}

/// The same for `sync`: its delivery pass overlaps the polls instead of
/// following them (before, page 1's events waited for the last page).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_delivers_a_committed_page_while_the_scan_goes_on() {
    events_go_out_while_page_2_is_held("sync").await;
}

async fn events_go_out_while_page_2_is_held(command: &str) {
    use axum::extract::Query;
    let rx = Receiver::start(&[SECRET], None).await;
    let released = Arc::new(tokio::sync::Notify::new());
    let provider = {
        let released = released.clone();
        let app = axum::Router::new().route(
            "/v1/employees",
            axum::routing::get(
                move |Query(q): Query<std::collections::HashMap<String, String>>| {
                    let released = released.clone();
                    async move {
                        let page: u32 = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
                        let data = match page {
                            1 => serde_json::json!([{"id": 1}, {"id": 2}]),
                            2 => {
                                // Held until the test has seen page 1's
                                // events (or gives up).
                                let _ = tokio::time::timeout(
                                    Duration::from_secs(40),
                                    released.notified(),
                                )
                                .await;
                                serde_json::json!([{"id": 3}, {"id": 4}])
                            }
                            _ => serde_json::json!([]),
                        };
                        axum::Json(serde_json::json!({ "data": data }))
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("synthd.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[daemon]
state_dir = "{state}"

[providers.p]
base_url = "{provider}/v1"
auth = {{ type = "bearer", token = "{TOKEN}" }}
records = "/data"
pagination = {{ type = "page", page_param = "page", size_param = "per_page", size = 2 }}

[providers.p.resources.hris_employees]
path = "/employees"

[[accounts]]
id = "alpha"
provider = "p"
interval = "1h"
emit_initial = true

[[webhooks]]
id = "hr"
url = "{receiver}/hook"
events = ["hris_employees.*"]
secret = "{SECRET}"
"#,
            state = dir.path().join("state").display(),
            receiver = rx.base,
        ),
    )
    .unwrap();
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin!("synthd"));
    cmd.arg("--config")
        .arg(&cfg)
        .arg(command)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    common::clean_env(&mut cmd);
    let mut child = cmd.spawn().unwrap();

    // Well under the delivery loop's 30 s nap, which is what a scan's
    // events waited for before.
    wait_until(
        "page 1's two events while page 2 is held",
        Duration::from_secs(15),
        || rx.requests().len() >= 2,
    )
    .await;
    // Two records go out concurrently: in either order.
    let mut ids: Vec<String> = rx
        .requests()
        .iter()
        .map(|r| common::key_of(&r.json()).1)
        .collect();
    ids.sort();
    assert_eq!(ids, ["1", "2"], "only page 1's records so far");
    released.notify_one();
    wait_until(
        "page 2's events after it is served",
        Duration::from_secs(15),
        || rx.requests().len() >= 4,
    )
    .await;
    // `sync` ends by itself once page 2's events are out.
    if command == "run" {
        signal(&child, libc::SIGTERM);
    }
    assert!(
        wait_exit(&mut child, Duration::from_secs(10))
            .await
            .success()
    );
    assert_eq!(rx.requests().len(), 4, "each event delivered once");
}
