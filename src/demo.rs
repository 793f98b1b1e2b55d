//! `synthd demo`: the real pipeline between two embedded loopback servers.
//!
//! - a simulated HRIS provider whose employees are hired, changed and let go
//!   every couple of seconds (bearer-token auth, page pagination);
//! - a receiver that verifies every request's Standard Webhooks signature
//!   and prints the event.
//!
//! Between them runs the same engine as `synthd run`, with a demo-only poll
//! interval and a throwaway state directory.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use rand::RngExt;
use serde_json::{Value, json};

use crate::clock::SystemClock;
use crate::config;
use crate::daemon::{self, Engine, RunOptions};
use crate::logging::{self, Target};
use crate::schedule::Schedule;
use crate::store::Store;

const TOKEN: &str = "demo-provider-token";

const FIRST: &[&str] = &[
    "Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia", "Leslie",
];
const LAST: &[&str] = &[
    "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Perlman",
    "Lamport",
];
const TITLES: &[&str] = &[
    "Engineer",
    "Senior Engineer",
    "Staff Engineer",
    "Manager",
    "Director",
    "Analyst",
];
const DEPARTMENTS: &[&str] = &["Platform", "Payments", "People", "Research", "Sales"];

/// The simulated provider's data. Lives only in this process's memory.
struct Hris {
    employees: BTreeMap<u64, Value>,
    next_id: u64,
}

impl Hris {
    fn new() -> Self {
        let mut h = Hris {
            employees: BTreeMap::new(),
            next_id: 1,
        };
        for _ in 0..12 {
            h.hire();
        }
        h
    }

    fn hire(&mut self) -> u64 {
        let mut rng = rand::rng();
        let id = self.next_id;
        self.next_id += 1;
        let first = FIRST[rng.random_range(0..FIRST.len())];
        let last = LAST[rng.random_range(0..LAST.len())];
        self.employees.insert(
            id,
            json!({
                "id": id,
                "first_name": first,
                "last_name": last,
                "work_email": format!("{}.{}{id}@example.com", first.to_lowercase(), last.to_lowercase()),
                "title": TITLES[rng.random_range(0..TITLES.len())],
                "department": DEPARTMENTS[rng.random_range(0..DEPARTMENTS.len())],
                "last_login_at": chrono::Utc::now().to_rfc3339(),
            }),
        );
        id
    }

    /// One random change; returns a line describing it for the console.
    fn mutate(&mut self) -> String {
        let mut rng = rand::rng();
        let roll = rng.random_range(0..10);
        if self.employees.len() < 6 || roll < 3 {
            let id = self.hire();
            return format!("provider: hired employee {id}");
        }
        let ids: Vec<u64> = self.employees.keys().copied().collect();
        let id = ids[rng.random_range(0..ids.len())];
        if roll < 5 {
            self.employees.remove(&id);
            return format!("provider: employee {id} left");
        }
        if roll < 7 {
            // Only an ignored field changes: synthd must stay silent.
            if let Some(e) = self.employees.get_mut(&id) {
                e["last_login_at"] = json!(chrono::Utc::now().to_rfc3339());
            }
            return format!("provider: employee {id} logged in (ignored field, no event expected)");
        }
        if let Some(e) = self.employees.get_mut(&id) {
            e["title"] = json!(TITLES[rng.random_range(0..TITLES.len())]);
            e["department"] = json!(DEPARTMENTS[rng.random_range(0..DEPARTMENTS.len())]);
        }
        format!("provider: employee {id} changed role")
    }
}

type Shared = Arc<Mutex<Hris>>;

async fn list_employees(
    State(hris): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<axum::Json<Value>, StatusCode> {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    if auth != Some(&format!("Bearer {TOKEN}")) {
        return Err(StatusCode::UNAUTHORIZED);
    }
    let page: usize = q
        .get("page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1)
        .max(1);
    let per_page: usize = q
        .get("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(5)
        .clamp(1, 100);
    let hris = hris.lock().unwrap_or_else(|p| p.into_inner());
    let data: Vec<Value> = hris
        .employees
        .values()
        .skip((page - 1) * per_page)
        .take(per_page)
        .cloned()
        .collect();
    Ok(axum::Json(
        json!({ "data": data, "meta": { "page": page, "per_page": per_page } }),
    ))
}

struct Receiver {
    key: Vec<u8>,
    received: AtomicU64,
    rejected: AtomicU64,
}

async fn receive(
    State(rx): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let verdict = crate::signing::verify(
        &rx.key,
        h("webhook-id"),
        h("webhook-timestamp"),
        h("webhook-signature"),
        &body,
        chrono::Utc::now().timestamp(),
    );
    if let Err(e) = verdict {
        rx.rejected.fetch_add(1, Ordering::Relaxed);
        crate::outln!("receiver: REJECTED a request: {e}");
        return StatusCode::UNAUTHORIZED;
    }
    rx.received.fetch_add(1, Ordering::Relaxed);
    let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let data = &event["data"];
    let what = match data.get("record_id").and_then(Value::as_str) {
        Some(id) => format!("record {id}"),
        None => format!("provider {}", data["provider"].as_str().unwrap_or("?")),
    };
    crate::outln!(
        "receiver: verified {:<24} {:<12} account {} ({})",
        event["type"].as_str().unwrap_or("?"),
        what,
        data["account_id"].as_str().unwrap_or("?"),
        event["id"].as_str().unwrap_or("?"),
    );
    StatusCode::NO_CONTENT
}

async fn serve(router: Router) -> Result<std::net::SocketAddr, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("demo: cannot listen on loopback: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(addr)
}

pub async fn run(run_for: Option<Duration>, interval: Duration) -> Result<(), String> {
    logging::init(config::LogFormat::Pretty, Target::Stderr, "warn");
    let hris: Shared = Arc::new(Mutex::new(Hris::new()));
    let provider_addr = serve(
        Router::new()
            .route("/v1/employees", get(list_employees))
            .with_state(hris.clone()),
    )
    .await?;

    let secret = crate::signing::new_secret();
    let webhook_key = config::Secret::new(secret.clone()).key_bytes();
    let receiver = Arc::new(Receiver {
        key: webhook_key,
        received: AtomicU64::new(0),
        rejected: AtomicU64::new(0),
    });
    let receiver_addr = serve(
        Router::new()
            .route("/hooks/hr", post(receive))
            .with_state(receiver.clone()),
    )
    .await?;

    let state_dir = std::env::temp_dir().join(format!("synthd-demo-{}", std::process::id()));
    let toml = format!(
        r#"
[daemon]
state_dir = "{state}"
log_format = "pretty"

[providers.demo_hris]
base_url = "http://{provider_addr}/v1"
auth = {{ type = "bearer", token = "{TOKEN}" }}
pagination = {{ type = "page", page_param = "page", size_param = "per_page", size = 5 }}
records = "/data"
id = "/id"

[providers.demo_hris.resources.hris_employees]
path = "/employees"
ignore = ["/last_login_at"]

[[accounts]]
id = "acme"
provider = "demo_hris"

[[webhooks]]
id = "demo-receiver"
name = "Demo receiver"
url = "http://{receiver_addr}/hooks/hr?token=demo-receiver-token"
events = ["*"]
secret = "{secret}"
"#,
        state = state_dir.display()
    );
    let mut config =
        config::from_toml_str(&toml, &state_dir).map_err(|e| format!("demo config: {e}"))?;
    // The demo polls faster than real configs may (5m minimum).
    for a in &mut config.accounts {
        a.schedule = Schedule::Every(interval);
    }

    crate::outln!("synthd demo: the real poller, detector and delivery pipeline on loopback");
    crate::outln!(
        "  simulated HRIS provider  http://{provider_addr}/v1/employees (12 employees, changes every 2s)"
    );
    crate::outln!(
        "  verifying receiver       http://{receiver_addr}/hooks/hr (checks each webhook-signature)"
    );
    crate::outln!(
        "  polling every {}; the first poll is a silent baseline. Ctrl-C to stop.",
        humantime::format_duration(interval)
    );
    crate::outln!();

    let store = Store::open_sqlite(&state_dir).map_err(|e| e.to_string())?;
    let engine = Engine::new(store, &config, Arc::new(SystemClock));

    let mutator = {
        let hris = hris.clone();
        tokio::spawn(async move {
            // Let the baseline poll see the initial staff first.
            tokio::time::sleep(interval + Duration::from_secs(1)).await;
            loop {
                let line = hris.lock().unwrap_or_else(|p| p.into_inner()).mutate();
                crate::outln!("{line}");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        })
    };
    let stop = async move {
        match run_for {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    let result = daemon::run(
        engine,
        config,
        RunOptions {
            config_path: None,
            notify_systemd: false,
            // The demo's seconds-long interval is deliberate.
            plan_warnings: false,
        },
        stop,
    )
    .await;
    mutator.abort();
    let _ = std::fs::remove_dir_all(&state_dir);
    result.map_err(|e| e.to_string())?;
    let received = receiver.received.load(Ordering::Relaxed);
    let rejected = receiver.rejected.load(Ordering::Relaxed);
    crate::outln!();
    crate::outln!("demo finished: {received} events received and verified, {rejected} rejected");
    if rejected > 0 {
        return Err(format!(
            "{rejected} webhook requests failed signature verification"
        ));
    }
    Ok(())
}
