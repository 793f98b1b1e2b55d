//! End-to-end delivery benchmark: a burst of 20,000 pending webhook
//! deliveries sent by the real `synthd` binary to (a) a loopback sink that
//! answers 200 at once and (b) one that answers after 20 ms, next to the
//! ceiling of a plain HTTP client doing the same POSTs.
//!
//! `cargo bench --bench delivery` (`DELIVERY_BENCH_EVENTS=2000` for a quick
//! run). How the burst is made, so that the timed run is (almost) pure
//! delivery:
//!
//! 1. setup: `sync` with `emit_initial = true` polls N new records, so N
//!    `hris_employees.created` events and N deliveries are committed, then
//!    delivered (to the fast sink, whichever sink is being measured, to
//!    keep the setup short). Its time is reported too ("poll + deliver").
//! 2. `synthd replay --since 1970-01-01T00:00:00Z` queues every event again:
//!    N new pending deliveries, same payloads, nothing sent.
//! 3. timed: `sync` with the account disabled, so it polls nothing and its
//!    one delivery pass sends the N pending deliveries to the sink being
//!    measured. deliveries/s = N ÷ the process's wall time (startup
//!    included: a few ms); the sink's own view (first request in to last
//!    answer out) is printed beside it.
//!
//! The ceiling: the same number of signed POSTs of a similar event body from
//! one `reqwest` client (rustls build, keep-alive pool, redirects off, as
//! synthd's sender) at the same concurrency synthd uses per webhook: 4
//! today, or 32 once the webhook key `concurrency` exists (detected by
//! running `synthd check` on a config that sets it; exit 2 = unknown key).

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use futures_util::StreamExt;
use hmac::{KeyInit, Mac};
use serde_json::Value;

/// synthd's fixed per-webhook concurrency before the `concurrency` key.
const LEGACY_CONCURRENCY: usize = 4;
/// The concurrency the 20 ms target is stated for.
const WANTED_CONCURRENCY: usize = 32;

fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no {key:?} in {v}"))
}

/// Whether this build accepts `concurrency = 32` on a webhook.
fn concurrency_supported(provider: &Provider, sink: &Sink) -> bool {
    let dir = temp_dir("synthd-delivery-check-");
    let config = path_in(&dir, "synthd.toml");
    write(
        &config,
        &(config_head(&path_in(&dir, "state"), provider, "/employees")
            + &account("bench", "")
            + &webhook(&sink.url, &format!("concurrency = {WANTED_CONCURRENCY}"))),
    );
    let m = run_measured(synthd(&config, &["check"]));
    match m.code {
        0 => true,
        2 => false,
        _ => panic!(
            "synthd check exited {}:\n{}\n{}",
            m.code, m.stdout, m.stderr
        ),
    }
}

struct Outcome {
    sink: &'static str,
    setup: Measured,
    timed: Measured,
    sink_span: Option<Duration>,
    ceiling: Duration,
}

/// Builds the burst (setup + replay) and times synthd delivering it to
/// `sink`.
fn measure_synthd(
    n: usize,
    provider: &Provider,
    fast: &Sink,
    sink: &Sink,
    extra: &str,
) -> (Measured, Measured, Option<Duration>) {
    let dir = temp_dir("synthd-delivery-bench-");
    let state = path_in(&dir, "state");
    let config = path_in(&dir, "synthd.toml");
    let head = config_head(&state, provider, "/employees");

    // 1. N created events, delivered once to the fast sink.
    write(
        &config,
        &(head.clone() + &account("bench", "emit_initial = true") + &webhook(&fast.url, extra)),
    );
    let setup = run_measured(synthd(&config, &["sync", "--json"]));
    setup.expect_code(0, "setup sync");
    let out = setup.json();
    let poll = &out["polls"][0];
    assert_eq!(u(poll, "created"), n as u64, "setup: {out}");
    assert_eq!(u(&out["deliveries"], "delivered"), n as u64, "setup: {out}");

    // 2. Queue them all again (the timed run checks that N went out).
    let replay = run_measured(synthd(
        &config,
        &["replay", "--since", "1970-01-01T00:00:00Z"],
    ));
    replay.expect_code(0, "replay");

    // 3. Deliver them, polling nothing.
    write(
        &config,
        &(head + &account("bench", "enabled = false") + &webhook(&sink.url, extra)),
    );
    settle();
    sink.reset_span();
    let before = sink.count();
    let timed = run_measured(synthd(&config, &["sync", "--json"]));
    timed.expect_code(0, "timed sync");
    let out = timed.json();
    assert_eq!(
        out["polls"].as_array().map(Vec::len),
        Some(0),
        "the timed run must poll nothing: {out}"
    );
    assert_eq!(u(&out["deliveries"], "delivered"), n as u64, "timed: {out}");
    assert_eq!(sink.count() - before, n as u64, "the sink's count");
    (setup, timed, sink.span())
}

fn hmac256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().to_vec()
}

/// N signed POSTs like synthd's, from one keep-alive client at
/// `concurrency`; returns the wall time.
async fn ceiling(url: &str, n: usize, concurrency: usize) -> Duration {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
        .expect("client");
    let started = Instant::now();
    let ts = chrono::Utc::now().timestamp();
    let stamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    futures_util::stream::iter(0..n)
        .map(|i| {
            let client = client.clone();
            let stamp = stamp.clone();
            async move {
                let id = format!("evt_01JD6Y6W1T1ZQ7N3X8H9{i:06}");
                let body = format!(
                    "{{\"data\":{{\"account_id\":\"bench\",\"action\":\"created\",\"record_id\":\"{}\",\
                     \"resource\":\"hris_employees\"}},\"id\":\"{id}\",\"timestamp\":\"{stamp}\",\
                     \"type\":\"hris_employees.created\",\"webhook\":{{\"id\":\"sink\",\"name\":\"sink\"}}}}",
                    100_000 + i
                );
                let ts_s = ts.to_string();
                let sig = base64::engine::general_purpose::STANDARD.encode(hmac256(
                    SECRET_KEY,
                    &[id.as_bytes(), b".", ts_s.as_bytes(), b".", body.as_bytes()],
                ));
                let hex: String = hmac256(SECRET_KEY, &[body.as_bytes()])
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                let resp = client
                    .post(url)
                    .timeout(Duration::from_secs(10))
                    .header("content-type", "application/json")
                    .header("webhook-id", id)
                    .header("webhook-timestamp", ts_s)
                    .header("webhook-signature", format!("v1,{sig}"))
                    .header("x-synthd-signature", hex)
                    .body(body)
                    .send()
                    .await
                    .expect("ceiling POST");
                let ok = resp.status().is_success();
                let _ = resp.bytes().await;
                ok
            }
        })
        .buffer_unordered(concurrency)
        .for_each(|ok| {
            assert!(ok, "the sink answered non-2xx");
            std::future::ready(())
        })
        .await;
    started.elapsed()
}

fn settle() {
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    std::thread::sleep(Duration::from_millis(200));
}

fn main() {
    let n = env_usize("DELIVERY_BENCH_EVENTS", 20_000);
    let rt = runtime();
    // The ceiling's client gets its own runtime, as synthd has its own
    // process; the sinks stay on `rt`.
    let client_rt = runtime();
    let provider = Provider::start(&rt);
    provider.set(std::sync::Arc::new(Pages::build(
        (0..n as u64).map(|i| employee(0xDE11_7E27, i, 0)),
        n,
    )));
    let fast = Sink::start(&rt, Duration::ZERO);
    let slow = Sink::start(&rt, Duration::from_millis(20));

    let supported = concurrency_supported(&provider, &fast);
    let (concurrency, extra) = if supported {
        (
            WANTED_CONCURRENCY,
            format!("concurrency = {WANTED_CONCURRENCY}"),
        )
    } else {
        (LEGACY_CONCURRENCY, String::new())
    };
    println!(
        "delivery benchmark: {} deliveries per sink, synthd {}, {} (figures are noisy on a shared machine)",
        thousands(n as u64),
        synthd_bin(),
        machine()
    );
    println!(
        "per-webhook concurrency: {concurrency} ({})",
        if supported {
            "`concurrency = 32` set on the webhook"
        } else {
            "this build rejects the webhook key `concurrency`: synthd's fixed limit"
        }
    );

    let mut results = Vec::new();
    for (label, sink) in [
        ("fast (200 at once)", &fast),
        ("slow (200 after 20 ms)", &slow),
    ] {
        let (setup, timed, sink_span) = measure_synthd(n, &provider, &fast, sink, &extra);
        println!(
            "  {label}: synthd {:.2} s ({} deliveries/s); setup poll + deliver {:.2} s",
            timed.wall.as_secs_f64(),
            thousands((n as f64 / timed.wall.as_secs_f64()) as u64),
            setup.wall.as_secs_f64()
        );
        settle();
        let ceiling = client_rt.block_on(ceiling(&sink.url, n, concurrency));
        println!(
            "  {label}: ceiling {:.2} s ({} POSTs/s)",
            ceiling.as_secs_f64(),
            thousands((n as f64 / ceiling.as_secs_f64()) as u64)
        );
        results.push(Outcome {
            sink: label,
            setup,
            timed,
            sink_span,
            ceiling,
        });
    }

    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    let mut rows = Vec::new();
    for (r, target) in results.iter().zip([10_000.0, 1_000.0]) {
        let synthd = rate(r.timed.wall);
        rows.push(vec![
            r.sink.to_string(),
            concurrency.to_string(),
            format!("{:.2}", r.timed.wall.as_secs_f64()),
            thousands(synthd as u64),
            r.sink_span
                .map_or("-".into(), |s| thousands(rate(s) as u64)),
            thousands(rate(r.ceiling) as u64),
            format!("{:.0} %", 100.0 * synthd / rate(r.ceiling)),
            format!(
                "≥ {}/s{}: {}",
                thousands(target as u64),
                if target < 10_000.0 { " at 32" } else { "" },
                if synthd >= target { "met" } else { "MISSED" }
            ),
            format!("{:.0}", r.timed.cpu.as_secs_f64() * 1e6 / n as f64),
            format!("{:.0}", r.timed.io.write_bytes as f64 / n as f64),
            human_bytes(r.timed.peak_rss_kib * 1024),
            format!("{:.2}", r.setup.wall.as_secs_f64()),
        ]);
    }
    println!();
    println!(
        "delivery benchmark ({}; figures are noisy: shared machine, one run each)",
        machine()
    );
    print!(
        "{}",
        table(
            &[
                "sink",
                "conc.",
                "synthd s",
                "synthd/s",
                "sink-side/s",
                "ceiling/s",
                "of ceiling",
                "target",
                "CPU µs/dlv",
                "disk B/dlv",
                "peak RSS",
                "setup s",
            ],
            &rows
        )
    );
    println!(
        "synthd/s: {n} deliveries ÷ the wall time of a `sync` that only delivers (replayed burst, account\n\
         disabled); sink-side/s: ÷ the sink's first-request-in to last-answer-out; ceiling/s: the same POSTs\n\
         from one plain reqwest client at the same concurrency. CPU µs/dlv and disk B/dlv: synthd's user+system\n\
         time and /proc/<pid>/io write_bytes per delivery. setup s: the `sync` that polled the {n} new records\n\
         and delivered them once (to the fast sink)."
    );
    drop(client_rt);
    drop(rt);
}
