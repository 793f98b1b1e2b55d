//! The web console and /metrics of a real `synthd run`, over HTTP: pages
//! on a loopback listener, sign-in (HttpOnly SameSite=Strict cookie),
//! CSRF rejection, Bearer scripts, a non-loopback listener that needs the
//! token, escaping of a hostile receiver's answer, no secret on any page,
//! every action doing its thing, and /metrics parsed by a Prometheus text
//! parser with its series moving after polls and deliveries.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use common::{Receiver, Reply, SECRET, lock, wait_exit, wait_until, wait_until_async};
use serde_json::{Value, json};

const PROVIDER_TOKEN: &str = "provider-token-Cn55";
const URL_TOKEN: &str = "hook-token-Uq31";
pub const CONSOLE_TOKEN: &str = "console-token-Kd8s9Wq2Lm4x";
const HOSTILE: &str = "<script>document.title='pwned'</script><img src=x onerror=alert(1)>";
/// A record field value: never on a page.
const FIELD: &str = "Philippa-Quorndon";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A provider whose employee list the test edits between polls.
pub struct Provider {
    pub base: String,
    pub records: Arc<Mutex<Vec<Value>>>,
}

impl Provider {
    pub async fn start() -> Provider {
        let records: Arc<Mutex<Vec<Value>>> = Arc::new(Mutex::new(vec![
            json!({"id": 1, "name": FIELD}),
            json!({"id": 2, "name": "Bo"}),
            json!({"id": 3, "name": "Cy"}),
        ]));
        let shared = records.clone();
        let router = Router::new().route(
            "/v1/employees",
            get(move |headers: axum::http::HeaderMap| {
                let shared = shared.clone();
                async move {
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    if auth != format!("Bearer {PROVIDER_TOKEN}") {
                        return (axum::http::StatusCode::UNAUTHORIZED, "no".to_string());
                    }
                    let data = lock(&shared).clone();
                    (
                        axum::http::StatusCode::OK,
                        json!({ "data": data }).to_string(),
                    )
                }
            }),
        );
        Provider {
            base: common::serve(router).await,
            records,
        }
    }
}

/// Webhook `hr` takes everything and answers 200; `hostile` answers 500
/// with HTML in its body (it keeps failing, so its deliveries retry).
/// `store`: a `[store]` table, or "" for SQLite.
pub fn config(
    state: &std::path::Path,
    provider: &str,
    receiver: &str,
    listen: &str,
    store: &str,
) -> String {
    format!(
        r#"
[daemon]
state_dir = "{state}"
listen = "{listen}"

[console]
token_env = "CONSOLE_TEST_TOKEN"

{store}

[providers.p]
base_url = "{provider}/v1"
auth = {{ type = "bearer", token = "{PROVIDER_TOKEN}" }}
records = "/data"

[providers.p.resources.hris_employees]
path = "/employees"

[[accounts]]
id = "alpha"
provider = "p"
emit_initial = true

[[webhooks]]
id = "hr"
url = "{receiver}/hook?token={URL_TOKEN}"
events = ["hris_employees.*"]
secret = "{SECRET}"

[[webhooks]]
id = "hostile"
url = "{receiver}/hostile"
events = ["hris_employees.created"]
secret = "{SECRET}"
"#,
        state = state.display()
    )
}

pub struct Daemon {
    pub child: Child,
    pub base: String,
    pub cfg: std::path::PathBuf,
    pub _dir: tempfile::TempDir,
}

impl Daemon {
    pub async fn start(provider: &Provider, rx: &Receiver, listen_ip: &str) -> Daemon {
        Daemon::start_on(provider, rx, listen_ip, "").await
    }

    pub async fn start_on(
        provider: &Provider,
        rx: &Receiver,
        listen_ip: &str,
        store: &str,
    ) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let cfg = dir.path().join("synthd.toml");
        let port = free_port();
        std::fs::write(
            &cfg,
            config(
                &state,
                &provider.base,
                &rx.base,
                &format!("{listen_ip}:{port}"),
                store,
            ),
        )
        .unwrap();
        let mut cmd = Command::new(common::synthd_bin());
        cmd.arg("--config")
            .arg(&cfg)
            .arg("run")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        common::clean_env(&mut cmd);
        cmd.env("CONSOLE_TEST_TOKEN", CONSOLE_TOKEN);
        let child = cmd.spawn().unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let health = format!("{base}/healthz");
        wait_until_async("/healthz", Duration::from_secs(15), || async {
            reqwest::get(&health).await.is_ok()
        })
        .await;
        Daemon {
            child,
            base,
            cfg,
            _dir: dir,
        }
    }

    pub async fn stop(mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = wait_exit(&mut self.child, Duration::from_secs(20)).await;
        assert!(status.success(), "synthd run exited with {status}");
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

struct Page {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

async fn fetch(req: reqwest::RequestBuilder) -> Page {
    let resp = req.send().await.unwrap();
    Page {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.text().await.unwrap(),
    }
}

/// The first `/deliveries/<id>` link on a page.
fn first_delivery(html: &str) -> Option<String> {
    let at = html.find("href=\"/deliveries/")? + "href=\"/deliveries/".len();
    Some(html[at..].split('"').next()?.to_string())
}

fn hidden_csrf(html: &str) -> Option<String> {
    let at = html.find("name=\"csrf\" value=\"")? + "name=\"csrf\" value=\"".len();
    Some(html[at..].split('"').next()?.to_string())
}

/// The value of one sample, by name and labels.
fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(ref h) => h.last().map_or(0.0, |b| b.count),
            prometheus_parse::Value::Summary(_) => f64::NAN,
        })
}

async fn scrape(base: &str) -> (String, prometheus_parse::Scrape) {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("a valid Prometheus text");
    (text, parsed)
}

/// Every series the README documents.
const SERIES: &[&str] = &[
    "synthd_polls_total",
    "synthd_poll_duration_seconds_count",
    "synthd_pages_fetched_total",
    "synthd_records_scanned_total",
    "synthd_events_total",
    "synthd_deliveries_total",
    "synthd_delivery_duration_seconds_count",
    "synthd_delivery_retries_scheduled_total",
    "synthd_deliveries_pending",
    "synthd_oldest_pending_delivery_age_seconds",
    "synthd_paused_webhooks",
    "synthd_resources",
    "synthd_records_tracked",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_pages_actions_and_metrics_on_sqlite() {
    walk_console("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_pages_actions_and_metrics_on_postgres() {
    let Some(db) = common::PgDb::create("console").await else {
        return;
    };
    walk_console(&format!(
        "[store]\nbackend = \"postgres\"\nurl = \"{}\"\n",
        db.url
    ))
    .await;
}

/// The whole console against one running daemon on the given store.
async fn walk_console(store: &str) {
    let provider = Provider::start().await;
    let rx = Receiver::start(&[SECRET], None).await;
    rx.script(|q| (q.path() == "/hostile").then(|| Reply::status(500).body(HOSTILE)));
    let d = Daemon::start_on(&provider, &rx, "127.0.0.1", store).await;
    let base = d.base.clone();
    let within = Duration::from_secs(20);
    let http = client();
    let mut seen_pages: Vec<String> = Vec::new();

    // The first poll emits created for 1, 2, 3 (emit_initial) to both
    // webhooks; hostile refuses them with HTML.
    wait_until("three created events at hr", within, || {
        rx.requests().iter().filter(|r| r.path() == "/hook").count() >= 3
    })
    .await;
    wait_until("hostile's first refusals", within, || {
        rx.all_requests()
            .iter()
            .filter(|r| r.path() == "/hostile")
            .count()
            >= 3
    })
    .await;

    // Overview: open on loopback, with the security headers.
    let ov = fetch(http.get(format!("{base}/"))).await;
    assert_eq!(ov.status, 200, "{}", ov.body);
    let csp = ov.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("script-src"), "no script may run: {csp}");
    assert_eq!(ov.headers["x-content-type-options"], "nosniff");
    for needle in [
        "alpha",
        "hris_employees",
        "/webhooks/hr",
        "/webhooks/hostile",
    ] {
        assert!(ov.body.contains(needle), "overview lacks {needle}");
    }
    assert!(ov.body.contains("token=***"), "the URL is shown redacted");
    assert!(
        ov.body
            .contains("<meta http-equiv=\"refresh\" content=\"30\">")
    );
    seen_pages.push(ov.body.clone());
    let css = fetch(http.get(format!("{base}/console.css"))).await;
    assert_eq!(css.status, 200);
    assert!(
        css.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );

    // The hostile receiver's answer is shown as text on its delivery page.
    wait_until_async("hostile's attempts recorded", within, || async {
        let log = fetch(client().get(format!("{base}/webhooks/hostile"))).await;
        log.body.contains("badge b-bad\">500")
    })
    .await;
    let log = fetch(http.get(format!("{base}/webhooks/hostile"))).await;
    seen_pages.push(log.body.clone());
    let hostile_delivery = first_delivery(&log.body).expect("a delivery row");
    let page = fetch(http.get(format!("{base}/deliveries/{hostile_delivery}"))).await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains(
            "&lt;script&gt;document.title='pwned'&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;"
        ),
        "{}",
        page.body
    );
    assert!(!page.body.contains("<script"), "{}", page.body);
    assert!(!page.body.contains("<img"), "{}", page.body);
    seen_pages.push(page.body.clone());

    // Filters and paging on hr's log.
    let created = fetch(http.get(format!(
        "{base}/webhooks/hr?type=hris_employees.created&status=delivered"
    )))
    .await;
    assert_eq!(created.body.matches("href=\"/deliveries/").count(), 3);
    let none = fetch(http.get(format!("{base}/webhooks/hr?type=hris_employees.deleted"))).await;
    assert!(none.body.contains("No delivery matches."));
    let bad = fetch(http.get(format!("{base}/webhooks/hr?status=bogus"))).await;
    assert_eq!(bad.status, 400);
    let page2 = fetch(http.get(format!("{base}/webhooks/hr?page=2"))).await;
    assert!(page2.body.contains("No delivery matches."));
    let hr_delivery = first_delivery(&created.body).unwrap();
    // The CLI answers the same query with the same rows.
    let mut cli = Command::new(common::synthd_bin());
    cli.arg("--config").arg(&d.cfg).args([
        "deliveries",
        "--webhook",
        "hr",
        "--type",
        "hris_employees.created",
        "--status",
        "delivered",
        "--json",
    ]);
    common::clean_env(&mut cli);
    cli.env("CONSOLE_TEST_TOKEN", CONSOLE_TOKEN);
    let out = common::run_with_deadline(cli, Duration::from_secs(30)).await;
    let cli_ids: Vec<String> = out
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let page_ids: Vec<String> = created
        .body
        .match_indices("href=\"/deliveries/")
        .map(|(i, m)| {
            created.body[i + m.len()..]
                .split('"')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(cli_ids, page_ids);

    // Actions without credentials, with a wrong token, with a session but
    // no CSRF token: all refused, and nothing is sent.
    let before = rx.requests().len();
    let replay = format!("{base}/deliveries/{hr_delivery}/replay");
    assert_eq!(fetch(http.post(&replay)).await.status, 401);
    assert_eq!(
        fetch(http.post(&replay).bearer_auth("not-the-token-at-all"))
            .await
            .status,
        401
    );
    let wrong = fetch(
        http.post(format!("{base}/login"))
            .form(&[("token", "wrong-token-123456")]),
    )
    .await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.headers.get("set-cookie").is_none());
    let login = fetch(
        http.post(format!("{base}/login"))
            .form(&[("token", CONSOLE_TOKEN)]),
    )
    .await;
    assert_eq!(login.status, 303);
    let set_cookie = login.headers["set-cookie"].to_str().unwrap().to_string();
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    assert!(!set_cookie.contains(CONSOLE_TOKEN));
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let no_csrf = fetch(http.post(&replay).header("cookie", &cookie)).await;
    assert_eq!(no_csrf.status, 403);
    let forged = fetch(
        http.post(&replay)
            .header("cookie", &cookie)
            .form(&[("csrf", "forged")]),
    )
    .await;
    assert_eq!(forged.status, 403);
    assert_eq!(
        rx.requests().len(),
        before,
        "a refused action sent something"
    );

    // Signed in: the page carries the CSRF token; Replay re-sends the
    // event under the same webhook-id.
    let signed = fetch(
        http.get(format!("{base}/deliveries/{hr_delivery}"))
            .header("cookie", &cookie),
    )
    .await;
    seen_pages.push(signed.body.clone());
    let csrf = hidden_csrf(&signed.body).expect("a CSRF field when signed in");
    let original = rx
        .requests()
        .iter()
        .find(|r| r.path() == "/hook")
        .map(|r| r.header("webhook-id"))
        .unwrap();
    let event_id_of = |r: &common::Received| r.header("webhook-id");
    let shown_event = {
        let at = signed.body.find("evt_").unwrap();
        signed.body[at..].split('<').next().unwrap().to_string()
    };
    let sends_of = |id: &str| {
        rx.requests()
            .iter()
            .filter(|r| r.path() == "/hook" && event_id_of(r) == id)
            .count()
    };
    let n = sends_of(&shown_event);
    assert_eq!(n, 1, "{shown_event} (first: {original})");
    let done = fetch(
        http.post(&replay)
            .header("cookie", &cookie)
            .form(&[("csrf", csrf.as_str())]),
    )
    .await;
    assert_eq!(done.status, 303);
    assert_eq!(
        done.headers["location"],
        format!("/deliveries/{hr_delivery}?done=replayed")
    );
    wait_until("the replayed event", within, || sends_of(&shown_event) == 2).await;

    // Bearer scripts: a test event, a resume of a webhook that is not
    // paused, and poll-now after the provider changed.
    let test = fetch(
        http.post(format!("{base}/webhooks/hr/test"))
            .bearer_auth(CONSOLE_TOKEN),
    )
    .await;
    assert_eq!(test.status, 303);
    assert_eq!(test.headers["location"], "/webhooks/hr?done=test-ok");
    assert!(
        rx.requests()
            .iter()
            .any(|r| r.path() == "/hook" && r.json()["type"] == "webhook.test")
    );
    let resume = fetch(
        http.post(format!("{base}/webhooks/hr/resume"))
            .bearer_auth(CONSOLE_TOKEN),
    )
    .await;
    assert_eq!(resume.headers["location"], "/webhooks/hr?done=not-paused");
    {
        let mut records = lock(&provider.records);
        records.retain(|r| r["id"] != 3);
        records[1] = json!({"id": 2, "name": "Bo Changed"});
    }
    let poll = fetch(
        http.post(format!("{base}/accounts/alpha/poll"))
            .bearer_auth(CONSOLE_TOKEN),
    )
    .await;
    assert_eq!(poll.status, 303);
    wait_until("updated and deleted at hr", within, || {
        let types: Vec<String> = rx
            .requests()
            .iter()
            .filter(|r| r.path() == "/hook")
            .map(|r| r.json()["type"].as_str().unwrap_or_default().to_string())
            .collect();
        types.iter().any(|t| t == "hris_employees.updated")
            && types.iter().any(|t| t == "hris_employees.deleted")
    })
    .await;
    let unknown = fetch(
        http.post(format!("{base}/accounts/nobody/poll"))
            .bearer_auth(CONSOLE_TOKEN),
    )
    .await;
    assert_eq!(unknown.status, 404);

    // The account page: two polls with their counts, and the chart.
    wait_until_async("two polls on the account page", within, || async {
        let a = fetch(client().get(format!("{base}/accounts/alpha"))).await;
        a.body
            .matches("badge b-ok\">ok</span></td><td class=\"num\">")
            .count()
            >= 2
    })
    .await;
    let account = fetch(http.get(format!("{base}/accounts/alpha"))).await;
    assert!(account.body.contains("<svg class=\"chart\""));
    assert!(
        account.body.contains("3 created"),
        "the chart's hour holds 3 created"
    );
    seen_pages.push(account.body.clone());
    seen_pages.push(
        fetch(
            http.get(format!("{base}/webhooks/hr"))
                .header("cookie", &cookie),
        )
        .await
        .body,
    );
    seen_pages.push(fetch(http.get(format!("{base}/login"))).await.body);

    // /metrics, parsed: every documented series, with the right counts.
    wait_until_async("the metrics to count both polls", within, || async {
        let (_, m) = scrape(&base).await;
        sample(&m, "synthd_polls_total", &[("result", "ok")]) == Some(2.0)
            && sample(&m, "synthd_events_total", &[("change", "deleted")]) == Some(1.0)
    })
    .await;
    let (text, m) = scrape(&base).await;
    for s in SERIES {
        assert!(
            m.samples.iter().any(|x| x.metric == *s),
            "{s} missing:\n{text}"
        );
    }
    assert_eq!(
        sample(
            &m,
            "synthd_events_total",
            &[("resource", "hris_employees"), ("change", "created")]
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(&m, "synthd_events_total", &[("change", "updated")]),
        Some(1.0)
    );
    assert_eq!(sample(&m, "synthd_pages_fetched_total", &[]), Some(2.0));
    assert_eq!(sample(&m, "synthd_records_scanned_total", &[]), Some(5.0));
    assert_eq!(
        sample(
            &m,
            "synthd_records_tracked",
            &[("account", "alpha"), ("resource", "hris_employees")]
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(&m, "synthd_resources", &[("state", "ok")]),
        Some(1.0)
    );
    // hr: 3 created + updated + deleted + the replay (the test send is not
    // a delivery of the outbox).
    assert_eq!(
        sample(
            &m,
            "synthd_deliveries_total",
            &[("result", "delivered"), ("status_class", "2xx")]
        ),
        Some(6.0),
        "{text}"
    );
    let retries = sample(&m, "synthd_delivery_retries_scheduled_total", &[]).unwrap();
    assert!(retries >= 3.0, "{text}");
    assert_eq!(
        sample(
            &m,
            "synthd_deliveries_total",
            &[("result", "retry"), ("status_class", "5xx")]
        ),
        Some(retries)
    );
    assert_eq!(
        sample(&m, "synthd_deliveries_pending", &[]),
        Some(3.0),
        "{text}"
    );

    // No secret, token or record value on any page.
    for body in &seen_pages {
        for secret in [
            SECRET,
            URL_TOKEN,
            PROVIDER_TOKEN,
            CONSOLE_TOKEN,
            FIELD,
            "Bo Changed",
        ] {
            assert!(!body.contains(secret), "a page shows {secret}");
        }
    }
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_off_loopback_needs_the_token_for_every_page() {
    let provider = Provider::start().await;
    let rx = Receiver::start(&[SECRET], None).await;
    // Bound on every address, reached through loopback only.
    let d = Daemon::start(&provider, &rx, "0.0.0.0").await;
    let base = d.base.clone();
    let http = client();
    for path in ["/", "/webhooks/hr", "/accounts/alpha", "/deliveries/dlv_x"] {
        let p = fetch(http.get(format!("{base}{path}"))).await;
        assert_eq!(p.status, 303, "{path}");
        assert_eq!(p.headers["location"], "/login");
        let p = fetch(http.get(format!("{base}{path}")).bearer_auth(CONSOLE_TOKEN)).await;
        assert!(p.status == 200 || p.status == 404, "{path}: {}", p.status);
        let p = fetch(
            http.get(format!("{base}{path}"))
                .bearer_auth("console-token-wrong0000"),
        )
        .await;
        assert_eq!(p.status, 303, "{path}");
    }
    let login = fetch(
        http.post(format!("{base}/login"))
            .form(&[("token", CONSOLE_TOKEN)]),
    )
    .await;
    let cookie = login.headers["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let p = fetch(http.get(format!("{base}/")).header("cookie", &cookie)).await;
    assert_eq!(p.status, 200);
    assert!(p.body.contains("Sign out"));
    // Scrapers and health checks stay open.
    assert_eq!(fetch(http.get(format!("{base}/healthz"))).await.status, 200);
    assert_eq!(fetch(http.get(format!("{base}/metrics"))).await.status, 200);
    d.stop().await;
}

// ---------------------------------------------------------------------------
// The browser: headless Chromium through WebDriver (chromedriver)
// ---------------------------------------------------------------------------

/// chromium and chromedriver, or `None` (and one printed line) when they
/// are absent and SYNTHD_REQUIRE_CHROMIUM is not set.
fn chromium() -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let find = |names: &[&str]| {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .flat_map(|d| names.iter().map(move |n| d.join(n)))
            .find(|p| p.is_file())
    };
    match (
        find(&["chromium", "chromium-browser", "google-chrome"]),
        find(&["chromedriver"]),
    ) {
        (Some(b), Some(d)) => Some((b, d)),
        _ if std::env::var("SYNTHD_REQUIRE_CHROMIUM").as_deref() == Ok("1") => {
            panic!(
                "SYNTHD_REQUIRE_CHROMIUM=1 but chromium or chromedriver is missing (apt-get install chromium chromium-driver)"
            )
        }
        _ => {
            println!(
                "skipped the browser tests: chromium or chromedriver not installed (apt-get install chromium chromium-driver)"
            );
            None
        }
    }
}

/// chromedriver on a free loopback port, killed on drop.
struct Driver(Child, u16);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn browser(
    driver_bin: &std::path::Path,
    chrome: &std::path::Path,
) -> (Driver, fantoccini::Client) {
    let port = free_port();
    let child = Command::new(driver_bin)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let driver = Driver(child, port);
    wait_until_async(
        "chromedriver to listen",
        Duration::from_secs(20),
        || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        },
    )
    .await;
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chrome,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000", "--no-first-run", "--disable-extensions"],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let client = fantoccini::ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.1))
        .await
        .expect("a WebDriver session in headless chromium");
    (driver, client)
}

/// Saves a screenshot under target/console-screenshots/ (a test
/// artifact, not committed).
async fn screenshot(c: &fantoccini::Client, name: &str) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_chromium_the_console_lists_escapes_and_replays() {
    use fantoccini::Locator;
    let Some((chrome, driver_bin)) = chromium() else {
        return;
    };
    let provider = Provider::start().await;
    let rx = Receiver::start(&[SECRET], None).await;
    rx.script(|q| (q.path() == "/hostile").then(|| Reply::status(500).body(HOSTILE)));
    let d = Daemon::start(&provider, &rx, "127.0.0.1").await;
    let base = d.base.clone();
    let within = Duration::from_secs(20);
    wait_until("the first poll's deliveries", within, || {
        rx.requests().iter().filter(|r| r.path() == "/hook").count() >= 3
            && rx
                .all_requests()
                .iter()
                .filter(|r| r.path() == "/hostile")
                .count()
                >= 3
    })
    .await;
    let (_driver, c) = browser(&driver_bin, &chrome).await;
    let mut sources = Vec::new();

    // The overview lists the account and both webhooks.
    c.goto(&format!("{base}/")).await.unwrap();
    let text = c
        .find(Locator::Css("main"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "alpha",
        "hris_employees",
        "hr",
        "hostile",
        "healthy",
        "failing",
    ] {
        assert!(text.contains(needle), "overview lacks {needle}:\n{text}");
    }
    screenshot(&c, "overview").await;
    sources.push(c.source().await.unwrap());

    // hr's delivery log shows the deliveries of the real poll.
    c.find(Locator::Css("a[href='/webhooks/hr']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let rows = c
        .find_all(Locator::Css("a[href^='/deliveries/']"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    let log_text = c
        .find(Locator::Css("main"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(log_text.contains("hris_employees.created"), "{log_text}");
    screenshot(&c, "webhook").await;
    sources.push(c.source().await.unwrap());
    let hr_delivery = rows[0].attr("href").await.unwrap().unwrap();

    // The hostile receiver's answer is text, and none of it ran.
    c.goto(&format!("{base}/webhooks/hostile")).await.unwrap();
    wait_until_async("hostile's refusals logged", within, || async {
        c.refresh().await.unwrap();
        c.source().await.unwrap().contains("badge b-bad\">500")
    })
    .await;
    c.find(Locator::Css("a[href^='/deliveries/']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let response = c
        .find(Locator::Css("pre.response"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(response, HOSTILE);
    assert!(!c.title().await.unwrap().contains("pwned"));
    assert_eq!(
        c.find_all(Locator::Css("main img, main script"))
            .await
            .unwrap()
            .len(),
        0
    );
    screenshot(&c, "delivery-hostile").await;
    sources.push(c.source().await.unwrap());

    // Without a session there is no Replay button, and a forged POST is
    // refused.
    c.goto(&format!("{base}{hr_delivery}")).await.unwrap();
    assert!(
        c.find(Locator::Css("form[action$='/replay'] button"))
            .await
            .is_err()
    );
    let before = rx.requests().len();
    c.execute(
        &format!(
            "const f = document.createElement('form'); f.method = 'post'; \
             f.action = '{hr_delivery}/replay'; document.body.appendChild(f); f.submit();"
        ),
        vec![],
    )
    .await
    .unwrap();
    wait_until_async("the refusal", within, || async {
        c.source().await.unwrap().contains("sign in at /login")
    })
    .await;
    assert_eq!(rx.requests().len(), before);

    // Sign in, press Replay: the receiver gets the event again under the
    // same webhook-id.
    c.goto(&format!("{base}/login")).await.unwrap();
    screenshot(&c, "login").await;
    c.find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys(CONSOLE_TOKEN)
        .await
        .unwrap();
    c.find(Locator::Css("form[action='/login'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_until_async("signed in", within, || async {
        c.source().await.unwrap().contains("Sign out")
    })
    .await;
    let cookie_js = c.execute("return document.cookie", vec![]).await.unwrap();
    assert_eq!(cookie_js, json!(""), "the session cookie is HttpOnly");
    c.goto(&format!("{base}{hr_delivery}")).await.unwrap();
    let page = c.source().await.unwrap();
    let event = {
        let at = page.find("evt_").unwrap();
        page[at..].split('<').next().unwrap().to_string()
    };
    let sends = || {
        rx.requests()
            .iter()
            .filter(|r| r.path() == "/hook" && r.header("webhook-id") == event)
            .count()
    };
    assert_eq!(sends(), 1);
    c.find(Locator::Css("form[action$='/replay'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_until("the replayed event at the receiver", within, || {
        sends() == 2
    })
    .await;
    // The payload shown is exactly the body the receiver got.
    let shown = c
        .find(Locator::Css("pre.payload"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let got = rx
        .requests()
        .iter()
        .find(|r| r.path() == "/hook" && r.header("webhook-id") == event)
        .unwrap()
        .text();
    assert_eq!(shown, got);
    let flash = c
        .find(Locator::Css(".flash.ok"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(flash.contains("same event id"), "{flash}");
    screenshot(&c, "delivery-replayed").await;
    sources.push(c.source().await.unwrap());

    c.goto(&format!("{base}/accounts/alpha")).await.unwrap();
    assert!(c.find(Locator::Css("svg.chart rect.created")).await.is_ok());
    screenshot(&c, "account").await;
    sources.push(c.source().await.unwrap());

    for s in &sources {
        for secret in [SECRET, URL_TOKEN, PROVIDER_TOKEN, CONSOLE_TOKEN, FIELD] {
            assert!(!s.contains(secret), "a page shows {secret}");
        }
    }
    c.close().await.unwrap();
    d.stop().await;
}

/// The dashboard uses only documented series, the README documents every
/// series, and every series is on the dashboard.
#[test]
fn dashboard_and_readme_name_every_series() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("config/grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let base = |s: &str| {
        s.trim_end_matches("_bucket")
            .trim_end_matches("_count")
            .to_string()
    };
    let documented: std::collections::BTreeSet<String> = SERIES.iter().map(|s| base(s)).collect();
    let mut used = std::collections::BTreeSet::new();
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            for (i, _) in expr.match_indices("synthd_") {
                let name: String = expr[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                used.insert(base(&name));
            }
        }
    }
    assert_eq!(used, documented);
    for s in &documented {
        assert!(readme.contains(&format!("| `{s}` |")), "README lacks {s}");
    }
}

/// A console token that is too short, or set twice, is a config error
/// naming the key, and its value is never echoed.
#[tokio::test]
async fn console_token_mistakes_are_config_errors() {
    let env = common::TestEnv::new();
    for (table, key) in [
        ("[console]\ntoken = \"shorty-Zq9\"\n", "console.token"),
        (
            "[console]\ntoken = \"long-enough-token-Zq9x\"\ntoken_env = \"X\"\n",
            "console.token",
        ),
    ] {
        env.write_config(table);
        let out = env.synthd(&["check"]).await;
        out.assert_code(2);
        assert!(out.stderr.contains(key), "{}", out.stderr);
        assert!(!out.stderr.contains("Zq9"), "{}", out.stderr);
    }
    env.write_config("[console]\ntoken_env = \"CONSOLE_TOKEN_UNSET_X\"\n");
    let out = env.synthd(&["check"]).await;
    out.assert_code(2);
    assert!(out.stderr.contains("console.token_env"), "{}", out.stderr);
}
