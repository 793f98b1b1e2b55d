//! Idle benchmark: the real `synthd run` daemon with 10,000 accounts after
//! their first polls: resident memory and CPU while nothing is due.
//!
//! `cargo bench --bench idle` (`IDLE_BENCH_ACCOUNTS=1000` and
//! `IDLE_BENCH_SECS=10` for a quick run). Every account is a tenant of one
//! loopback provider (`base_url = …/t/<k>`) with one 3-record resource and
//! `interval = "1h"`, so after its first poll (a silent baseline) the next
//! is at least half an hour away. The benchmark waits until the provider
//! has served every tenant and `synthd status --json` shows every poll
//! succeeded, lets the daemon settle for 2 s, then samples VmRSS and
//! utime+stime once a second for IDLE_BENCH_SECS (default 60), and stops the
//! daemon with SIGTERM.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

fn main() {
    let accounts = env_usize("IDLE_BENCH_ACCOUNTS", 10_000);
    let secs = env_usize("IDLE_BENCH_SECS", 60);
    let rt = runtime();
    let provider = Provider::start(&rt);
    let sink = Sink::start(&rt, Duration::ZERO);
    println!(
        "idle benchmark: {} accounts, {secs} s of idle sampling, synthd {}, {} (figures are noisy on a shared machine)",
        thousands(accounts as u64),
        synthd_bin(),
        machine()
    );

    let dir = temp_dir("synthd-idle-bench-");
    let state = path_in(&dir, "state");
    let config = path_in(&dir, "synthd.toml");
    let mut text = config_head(&state, &provider, "/employees");
    for k in 0..accounts {
        text.push_str(&account(
            &format!("tenant-{k:05}"),
            &format!("base_url = \"{}/t/{k}\"", provider.base),
        ));
    }
    text.push_str(&webhook(&sink.url, ""));
    write(&config, &text);

    let log = std::fs::File::create(path_in(&dir, "synthd.log")).expect("log file");
    let started = Instant::now();
    let mut cmd = synthd(&config, &["run"]);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn synthd run");
    let pid = child.id() as i32;
    let log_tail = || {
        let text = std::fs::read_to_string(path_in(&dir, "synthd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    };

    // First polls: every tenant served, then every poll recorded as a success.
    let deadline = Duration::from_secs(30 * 60);
    let mut last_report = Instant::now();
    while provider.tenants_seen() < accounts {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("synthd run exited early ({status}):\n{}", log_tail());
        }
        assert!(
            started.elapsed() < deadline,
            "only {} of {accounts} tenants polled after {deadline:?}:\n{}",
            provider.tenants_seen(),
            log_tail()
        );
        if last_report.elapsed() > Duration::from_secs(10) {
            println!(
                "  … {} of {} accounts polled after {:.0} s",
                thousands(provider.tenants_seen() as u64),
                thousands(accounts as u64),
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let served = started.elapsed();
    loop {
        let out = synthd(&config, &["status", "--json"])
            .output()
            .expect("synthd status");
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
            let polls = v["polls"].as_array().cloned().unwrap_or_default();
            let done = polls
                .iter()
                .filter(|p| !p["last_success_at"].is_null())
                .count();
            if done >= accounts {
                break;
            }
        }
        assert!(
            started.elapsed() < deadline,
            "polls not all recorded as successes:\n{}",
            log_tail()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let first_polls = started.elapsed();
    let hwm_first = status_kib(pid, "VmHWM").unwrap_or(0);
    println!(
        "  first polls: all {} served after {:.1} s, all recorded after {:.1} s ({} accounts/s); peak RSS so far {}",
        thousands(accounts as u64),
        served.as_secs_f64(),
        first_polls.as_secs_f64(),
        thousands((accounts as f64 / first_polls.as_secs_f64()) as u64),
        human_bytes(hwm_first * 1024)
    );

    // Idle.
    std::thread::sleep(Duration::from_secs(2));
    let tick = clock_ticks_per_sec();
    let requests_before = provider.requests();
    let cpu_start = cpu_ticks(pid).expect("/proc/<pid>/stat");
    let t0 = Instant::now();
    let mut rss = Vec::new();
    for _ in 0..secs.max(1) {
        std::thread::sleep(Duration::from_secs(1));
        if let Some(v) = status_kib(pid, "VmRSS") {
            rss.push(v);
        }
    }
    let cpu_end = cpu_ticks(pid).expect("/proc/<pid>/stat");
    let window = t0.elapsed();
    let idle_requests = provider.requests() - requests_before;
    let cpu_secs = (cpu_end - cpu_start) as f64 / tick as f64;
    let cpu_pct = 100.0 * cpu_secs / window.as_secs_f64();

    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let stop = Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if stop.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("synthd run did not stop within 30 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stopped = stop.elapsed();

    let (min, max) = (
        rss.iter().copied().min().unwrap_or(0),
        rss.iter().copied().max().unwrap_or(0),
    );
    let last = rss.last().copied().unwrap_or(0);
    println!();
    println!(
        "idle benchmark ({}; figures are noisy: shared machine, one run)",
        machine()
    );
    let rows = vec![
        vec![
            "RSS while idle (VmRSS, last / min / max)".into(),
            format!(
                "{} / {} / {}",
                human_bytes(last * 1024),
                human_bytes(min * 1024),
                human_bytes(max * 1024)
            ),
            "≤ 40 MiB".into(),
            if max <= 40 * 1024 { "met" } else { "MISSED" }.into(),
        ],
        vec![
            format!(
                "CPU while idle ({:.0} s, % of one core)",
                window.as_secs_f64()
            ),
            format!("{cpu_pct:.3} % ({cpu_secs:.2} s)"),
            "≤ 0.1 %".into(),
            if cpu_pct <= 0.1 { "met" } else { "MISSED" }.into(),
        ],
        vec![
            "peak RSS during the first polls (VmHWM)".into(),
            human_bytes(hwm_first * 1024),
            String::new(),
            String::new(),
        ],
        vec![
            "first polls of every account".into(),
            format!("{:.1} s", first_polls.as_secs_f64()),
            String::new(),
            String::new(),
        ],
        vec![
            "provider requests while idle".into(),
            idle_requests.to_string(),
            "0".into(),
            String::new(),
        ],
        vec![
            "SIGTERM to exit".into(),
            format!(
                "{} ms, exit {}",
                stopped.as_millis(),
                code.map_or("signal".into(), |c| c.to_string())
            ),
            "0".into(),
            String::new(),
        ],
    ];
    print!(
        "{}",
        table(
            &[
                &format!(
                    "{} accounts after their first polls",
                    thousands(accounts as u64)
                ),
                "now",
                "target",
                "",
            ],
            &rows
        )
    );
    drop(rt);
}
