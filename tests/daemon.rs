//! The real `synthd run` process: start-up, /healthz and /metrics, SIGHUP
//! reload (good and bad configs), SIGTERM exit, and JSON logs without
//! secrets.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const TOKEN: &str = "provider-token-Qx81";
const URL_TOKEN: &str = "hook-token-Zz90";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

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
"#,
        state = state.display()
    );
    for a in accounts {
        s.push_str(&format!("\n[[accounts]]\nid = \"{a}\"\nprovider = \"p\"\n"));
    }
    s
}

/// Account ids of the `account.created` events the receiver has seen.
async fn created_accounts(receiver: &MockServer) -> Vec<String> {
    let mut out: Vec<String> = receiver
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter_map(|r| serde_json::from_slice::<serde_json::Value>(&r.body).ok())
        .filter(|v| v["type"] == "account.created")
        .map(|v| v["data"]["account_id"].as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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

#[tokio::test]
async fn run_serves_metrics_reloads_on_sighup_and_stops_on_sigterm() {
    let provider = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/employees"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "data": [{"id": 1, "name": "Ottoline-Vexby"}]
        })))
        .mount(&provider)
        .await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&receiver)
        .await;

    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cfg = dir.path().join("synthd.toml");
    let port = free_port();
    std::fs::write(
        &cfg,
        config(&state, &provider.uri(), &receiver.uri(), port, &["alpha"]),
    )
    .unwrap();

    let mut child = Command::new(assert_cmd::cargo::cargo_bin!("synthd"))
        .arg("--config")
        .arg(&cfg)
        .arg("run")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    wait_for("account.created for alpha", || async {
        created_accounts(&receiver).await == ["alpha"]
    })
    .await;
    wait_for("the first poll", || async {
        provider.received_requests().await.unwrap_or_default().len() == 1
    })
    .await;

    wait_for("/healthz", || async {
        reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
            .await
            .is_ok()
    })
    .await;
    assert_eq!(get(port, "/healthz").await, (200, "ok\n".to_string()));
    let metrics = async || get(port, "/metrics").await.1;
    wait_for("the delivered gauge", || async {
        metrics()
            .await
            .contains("synthd_deliveries{state=\"delivered\"} 1")
    })
    .await;
    let text = metrics().await;
    assert!(text.contains("synthd_resources{state=\"ok\"} 1"), "{text}");
    assert!(text.contains("synthd_paused_webhooks 0"), "{text}");

    // A broken config on SIGHUP is logged and the old one keeps running.
    std::fs::write(&cfg, "[[accounts]]\nid = \"x\"\nprovider = \"nope\"\n").unwrap();
    signal(&child, libc::SIGHUP);
    // A good one adds an account: account.created arrives.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "a bad reload must not stop the daemon"
    );
    std::fs::write(
        &cfg,
        config(
            &state,
            &provider.uri(),
            &receiver.uri(),
            port,
            &["alpha", "beta"],
        ),
    )
    .unwrap();
    signal(&child, libc::SIGHUP);
    wait_for("account.created for beta", || async {
        created_accounts(&receiver).await == ["alpha", "beta"]
    })
    .await;

    signal(&child, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "synthd did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(0));

    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not a JSON log line: {l}")))
        .collect();
    let messages: Vec<&str> = lines.iter().filter_map(|l| l["message"].as_str()).collect();
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
    let poll = lines
        .iter()
        .find(|l| l["message"] == "poll finished")
        .unwrap();
    assert_eq!(poll["account"], "alpha");
    assert_eq!(poll["resource"], "hris_employees");
    assert_eq!(poll["records"], 1);
    assert!(poll["duration_ms"].is_u64());
    for secret in [SECRET, TOKEN, URL_TOKEN, "Ottoline-Vexby"] {
        assert!(!stdout.contains(secret), "{secret} leaked into the logs");
    }
}
