//! Console and /metrics benchmark: the real `synthd run` on a SQLite store
//! holding a long delivery log, and the time each page and a scrape take.
//!
//! `cargo bench --bench console` (`CONSOLE_BENCH_ROWS=100000` for a quick
//! run; default 1,000,000 deliveries: 1 % failed, 1,000 pending, the rest
//! delivered, one every 2 s back in time, so about 43,000 fall in the last
//! 24 h). The rows are written straight into the database the daemon
//! created (events and deliveries, as the outbox stores them), then each URL
//! (and the page of the delivery in the middle of the log) is fetched 20
//! times after one warm-up; the median and the maximum are
//! printed.

mod common;

use std::time::{Duration, Instant};

use common::*;

const URLS: &[&str] = &[
    "/metrics",
    "/",
    "/webhooks/hr",
    "/webhooks/hr?page=200",
    "/webhooks/hr?status=failed",
    "/webhooks/hr?type=hris_employees.deleted&status=failed",
    "/accounts/acct1",
];

fn main() {
    let rows = env_usize("CONSOLE_BENCH_ROWS", 1_000_000) as i64;
    let rt = runtime();
    println!(
        "console benchmark: {} deliveries, synthd {}, {} (figures are noisy on a shared machine)",
        thousands(rows as u64),
        synthd_bin(),
        machine()
    );
    let dir = temp_dir("synthd-console-bench-");
    let state = path_in(&dir, "state");
    let config = path_in(&dir, "synthd.toml");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let hook = format!(
        "[[webhooks]]\nid = \"hr\"\nurl = \"http://127.0.0.1:9/hook\"\nevents = [\"*\"]\nsecret = \"{}\"\n",
        secret()
    );
    write(
        &config,
        &format!(
            "[daemon]\nstate_dir = {:?}\nlisten = \"127.0.0.1:{port}\"\n\n[[accounts]]\nid = \"acct1\"\nprovider = \"p\"\nenabled = false\n\n\
             [providers.p]\nbase_url = \"http://127.0.0.1:9/v1\"\n[providers.p.resources.hris_employees]\npath = \"/e\"\n\n{hook}",
            state.display().to_string(),
        ),
    );

    // The schema, as the daemon creates it.
    drop(synthd::store::Store::open_sqlite(&state).expect("a state directory"));
    let started = Instant::now();
    fill(&state.join("synthd.db"), rows);
    println!(
        "wrote {} events and deliveries in {:.1} s",
        thousands(rows as u64),
        started.elapsed().as_secs_f64()
    );

    let mut child = synthd(&config, &["run"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    rt.block_on(async {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while client.get(format!("{base}/healthz")).send().await.is_err() {
            assert!(Instant::now() < deadline, "the daemon did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!("{:<60} {:>10} {:>10}", "URL", "median", "max");
        let middle = format!("/deliveries/dlv_b{}", rows / 2);
        for url in URLS.iter().copied().chain([middle.as_str()]) {
            let mut times = Vec::new();
            for i in 0..21 {
                let t = Instant::now();
                let resp = client.get(format!("{base}{url}")).send().await.unwrap();
                let status = resp.status();
                let _ = resp.bytes().await.unwrap();
                assert!(status.is_success(), "{url}: {status}");
                if i > 0 {
                    times.push(t.elapsed());
                }
            }
            times.sort();
            println!(
                "{url:<60} {:>8.1}ms {:>8.1}ms",
                times[times.len() / 2].as_secs_f64() * 1e3,
                times[times.len() - 1].as_secs_f64() * 1e3
            );
        }
    });
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
}

/// `rows` events with one delivery each to webhook `hr`.
fn fill(db: &std::path::Path, rows: i64) {
    let mut conn = rusqlite::Connection::open(db).unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let tx = conn.transaction().unwrap();
    {
        let mut ev = tx
            .prepare(
                "INSERT INTO events (id, type, account_id, resource, record_id, created_at)
                 VALUES (?1, ?2, ?3, 'hris_employees', ?4, ?5)",
            )
            .unwrap();
        let mut dl = tx
            .prepare(
                "INSERT INTO deliveries (id, event_id, webhook_id, order_key, status, attempts,
                   next_attempt_at, created_at, updated_at, last_status, payload)
                 VALUES (?1, ?2, 'hr', ?3, ?4, 1, ?5, ?6, ?6, ?7, ?8)",
            )
            .unwrap();
        for i in 1..=rows {
            let at = now - (rows - i) * 2000;
            let kind = ["created", "updated", "deleted"][(i % 3) as usize];
            let event = format!("evt_b{i}");
            ev.execute(rusqlite::params![
                event,
                format!("hris_employees.{kind}"),
                format!("acct{}", i % 20),
                format!("rec{i}"),
                at
            ])
            .unwrap();
            let (status, next, code) = if i > rows - 1000 {
                ("pending", Some(now + 3_600_000), Some(500))
            } else if i % 97 == 0 {
                ("failed", None, Some(500))
            } else {
                ("delivered", None, Some(200))
            };
            dl.execute(rusqlite::params![
                format!("dlv_b{i}"),
                event,
                format!("k{}", i % 5000),
                status,
                next,
                at,
                code,
                format!(
                    "{{\"id\":\"{event}\",\"type\":\"hris_employees.{kind}\",\"data\":{{\"record_id\":\"rec{i}\"}}}}"
                )
            ])
            .unwrap();
        }
    }
    tx.commit().unwrap();
}
