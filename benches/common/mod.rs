//! Shared pieces of the end-to-end benchmarks (`scan`, `delivery`, `idle`).
//!
//! Everything here drives the real `synthd` binary through its config file
//! and CLI only, never the library's internals, so the benchmarks keep
//! working while the internals are rewritten:
//!
//! - [`Provider`]: a loopback HRIS API serving pre-serialised pages of
//!   [`employee`] records (so serving costs almost nothing),
//! - [`Sink`]: a loopback webhook receiver answering 200, at once or after
//!   a delay,
//! - [`run_measured`]: runs a child to completion and reports wall time,
//!   CPU time, peak RSS and `/proc/<pid>/io` counters,
//! - config writers and table formatting.

#![allow(dead_code)]

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::Response;
use base64::Engine as _;
use serde_json::{Value, json};

/// The binary under test, built by `cargo bench` in the bench profile.
pub const BUILT_SYNTHD: &str = env!("CARGO_BIN_EXE_synthd");

/// The binary under test: this build's, or `SYNTHD_BENCH_BIN` (an older
/// build kept aside, to compare two builds side by side in one sitting).
pub fn synthd_bin() -> String {
    std::env::var("SYNTHD_BENCH_BIN").unwrap_or_else(|_| BUILT_SYNTHD.to_string())
}

/// The bearer token the loopback provider wants.
pub const TOKEN: &str = "bench-token-0123456789";

/// Records per page, in the provider and in every config.
pub const PAGE_SIZE: usize = 1000;

/// A valid webhook signing secret (`whsec_` + base64 of 32 fixed bytes).
pub fn secret() -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(SECRET_KEY)
    )
}

/// The raw key bytes of [`secret`].
pub const SECRET_KEY: &[u8; 32] = b"synthd-bench-signing-key-000001!";

/// A tokio runtime for the loopback servers (and clients) of a benchmark.
/// Two workers: the machine the figures come from has two cores, and the
/// servers only hand out pre-built bytes.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

// ---------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------

/// splitmix64: a tiny deterministic generator, so every run (and the Python
/// reference) sees byte-identical data.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct Rng(u64);

impl Rng {
    fn new(seed: u64, i: u64) -> Rng {
        Rng(mix(seed ^ mix(i)))
    }
    fn next(&mut self) -> u64 {
        self.0 = mix(self.0);
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

// The word lists stay one line per few words.
#[rustfmt::skip]
const FIRST: &[&str] = &[
    "Ada", "Grace", "Alan", "Katherine", "Linus", "Margaret", "Edsger", "Barbara", "Dennis",
    "Frances", "Ken", "Radia", "José", "Zoë", "Björn", "Søren", "Aiko", "Chidi", "Priya", "Mateo",
];
#[rustfmt::skip]
const LAST: &[&str] = &[
    "Lovelace", "Hopper", "Turing", "Johnson", "Torvalds", "Hamilton", "Dijkstra", "Liskov",
    "Ritchie", "Allen", "Thompson", "Perlman", "García", "Müller", "Nakamura", "Okafor",
    "Ramanathan", "Fernández", "O'Brien", "Kowalski",
];
#[rustfmt::skip]
const TITLES: &[&str] = &[
    "Software Engineer", "Staff Engineer", "Product Manager", "Account Executive",
    "People Partner", "Data Analyst", "Support Specialist", "Finance Manager", "Designer",
    "Site Reliability Engineer",
];
#[rustfmt::skip]
const DEPARTMENTS: &[&str] = &[
    "Engineering", "Product", "Sales", "People", "Finance", "Customer Success", "Design",
    "Operations",
];
#[rustfmt::skip]
const CITIES: &[(&str, &str, &str)] = &[
    ("London", "GB", "GBP"), ("Berlin", "DE", "EUR"), ("New York", "US", "USD"),
    ("Toronto", "CA", "CAD"), ("Lisbon", "PT", "EUR"), ("Bangalore", "IN", "INR"),
    ("São Paulo", "BR", "BRL"), ("Tokyo", "JP", "JPY"),
];
#[rustfmt::skip]
const TAGS: &[&str] = &[
    "onsite", "remote-eligible", "mentor", "on-call", "interviewer", "first-aider", "union", "visa",
];

/// One realistic HRIS employee (~730 bytes as compact JSON, 23 top-level
/// fields: strings, numbers, booleans, nulls, nested objects, an array),
/// deterministic from `seed` and `i`. `version` > 0 changes exactly one
/// field (`job_title`), which is how the "changed" data set is made.
pub fn employee(seed: u64, i: u64, version: u32) -> Value {
    let mut r = Rng::new(seed, i);
    let id = 100_000 + i;
    let first = r.pick(FIRST);
    let last = r.pick(LAST);
    let (city, country, currency) = CITIES[r.below(CITIES.len() as u64) as usize];
    let dept = r.below(DEPARTMENTS.len() as u64);
    let mut title = r.pick(TITLES).to_string();
    if version > 0 {
        title = format!("Senior {title} (v{version})");
    }
    let n_tags = r.below(4) as usize;
    let tags: Vec<&str> = (0..n_tags).map(|_| r.pick(TAGS)).collect();
    let start_year = 2010 + r.below(16);
    let (sm, sd) = (1 + r.below(12), 1 + r.below(28));
    let terminated = r.chance(8);
    let updated_day = 1 + r.below(28);
    json!({
        "id": id,
        "employee_number": format!("E{id:07}"),
        "first_name": first,
        "last_name": last,
        "preferred_name": if r.chance(20) { Value::from(first.chars().take(3).collect::<String>()) } else { Value::Null },
        "display_name": format!("{first} {last}"),
        "work_email": format!("{}.{}{}@example.com", first.to_lowercase(), last.to_lowercase(), id),
        "personal_email": if r.chance(60) { Value::from(format!("{}{}@example.org", first.to_lowercase(), r.below(1000))) } else { Value::Null },
        "mobile_phone": format!("+44 7{:03} {:06}", r.below(1000), r.below(1_000_000)),
        "job_title": title,
        "department": { "id": 10 + dept, "name": DEPARTMENTS[dept as usize] },
        "manager_id": if r.chance(90) { Value::from(100_000 + r.below(i.max(1))) } else { Value::Null },
        "employment_status": if terminated { "terminated" } else { "active" },
        "employment_type": if r.chance(85) { "full_time" } else { "part_time" },
        "start_date": format!("{start_year}-{sm:02}-{sd:02}"),
        "termination_date": if terminated { Value::from(format!("2025-{sm:02}-{sd:02}")) } else { Value::Null },
        "location": {
            "city": city, "country": country,
            "postal_code": format!("{:05}", r.below(100_000)),
            "remote": r.chance(30)
        },
        "salary": {
            "amount": (30_000 + r.below(170_000)) as f64 + 0.5 * r.below(2) as f64,
            "currency": currency, "period": "year"
        },
        "weekly_hours": if r.chance(85) { json!(40) } else { json!(22.5) },
        "is_manager": r.chance(15),
        "tags": tags,
        "created_at": format!("{start_year}-{sm:02}-{sd:02}T09:00:00Z"),
        "updated_at": format!("2026-10-{updated_day:02}T{:02}:{:02}:00Z", r.below(24), r.below(60)),
    })
}

/// A data set as the provider serves it: the bodies of pages 1..=n, each
/// `{"data":[…],"meta":{…}}`, pre-serialised.
pub struct Pages {
    pub pages: Vec<Bytes>,
    /// Records per page (the `per_page` the provider expects).
    pub page_size: usize,
    pub records: usize,
    pub bytes: usize,
    /// The body served for any page past the end.
    empty: Bytes,
}

impl Pages {
    /// Serialises `records` into pages of [`PAGE_SIZE`].
    pub fn build(records: impl Iterator<Item = Value>, total_hint: usize) -> Pages {
        Pages::build_sized(records, total_hint, PAGE_SIZE)
    }

    /// Serialises `records` into pages of `page_size`.
    pub fn build_sized(
        records: impl Iterator<Item = Value>,
        total_hint: usize,
        page_size: usize,
    ) -> Pages {
        let mut pages = Vec::with_capacity(total_hint / page_size + 1);
        let (mut count, mut bytes) = (0usize, 0usize);
        let mut buf: Vec<u8> = Vec::new();
        let mut in_page = 0usize;
        let finish = |buf: &mut Vec<u8>, page: usize, pages: &mut Vec<Bytes>| {
            buf.extend_from_slice(
                format!("],\"meta\":{{\"page\":{page},\"per_page\":{page_size},\"total\":{total_hint}}}}}")
                    .as_bytes(),
            );
            pages.push(Bytes::from(std::mem::take(buf)));
        };
        for r in records {
            if in_page == 0 {
                buf.reserve(page_size.min(PAGE_SIZE) * 800);
                buf.extend_from_slice(b"{\"data\":[");
            } else {
                buf.push(b',');
            }
            let before = buf.len();
            serde_json::to_writer(&mut buf, &r).expect("serialise a record");
            bytes += buf.len() - before;
            count += 1;
            in_page += 1;
            if in_page == page_size {
                finish(&mut buf, pages.len() + 1, &mut pages);
                in_page = 0;
            }
        }
        if in_page > 0 {
            finish(&mut buf, pages.len() + 1, &mut pages);
        }
        let empty = Bytes::from(format!(
            "{{\"data\":[],\"meta\":{{\"page\":{},\"per_page\":{page_size},\"total\":{total_hint}}}}}",
            pages.len() + 1
        ));
        Pages {
            pages,
            page_size,
            records: count,
            bytes,
            empty,
        }
    }

    pub fn empty() -> Pages {
        Pages::build(std::iter::empty(), 0)
    }

    /// The body of page `n` (1-based).
    pub fn page(&self, n: usize) -> Bytes {
        n.checked_sub(1)
            .and_then(|i| self.pages.get(i))
            .cloned()
            .unwrap_or_else(|| self.empty.clone())
    }

    /// Mean bytes per record of compact JSON.
    pub fn record_bytes(&self) -> f64 {
        self.bytes as f64 / self.records.max(1) as f64
    }

    /// Total bytes of all page bodies.
    pub fn body_bytes(&self) -> usize {
        self.pages.iter().map(|p| p.len()).sum()
    }
}

// ---------------------------------------------------------------------------
// The loopback provider
// ---------------------------------------------------------------------------

/// A loopback HRIS API: `GET /employees?page=N&per_page=1000` serves the
/// current data set, `GET /empty` an empty one, and
/// `GET /t/<tenant>/employees` a tiny per-tenant data set (for the idle
/// benchmark). Bearer auth; pages end at a short (or empty) page.
#[derive(Clone)]
pub struct Provider {
    pub base: String,
    inner: Arc<ProviderState>,
}

struct ProviderState {
    main: RwLock<Arc<Pages>>,
    tenant: Arc<Pages>,
    empty: Arc<Pages>,
    requests: AtomicU64,
    tenants: Mutex<HashSet<u64>>,
}

impl Provider {
    pub fn start(rt: &tokio::runtime::Runtime) -> Provider {
        let tenant = Pages::build((0..3).map(|i| employee(7, i, 0)), 3);
        let inner = Arc::new(ProviderState {
            main: RwLock::new(Arc::new(Pages::empty())),
            tenant: Arc::new(tenant),
            empty: Arc::new(Pages::empty()),
            requests: AtomicU64::new(0),
            tenants: Mutex::new(HashSet::new()),
        });
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind the provider");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new().fallback(serve_page).with_state(inner.clone());
        rt.spawn(async move { axum::serve(listener, app).await });
        Provider { base, inner }
    }

    /// Replaces the data set `/employees` serves.
    pub fn set(&self, pages: Arc<Pages>) {
        *self.inner.main.write().unwrap() = pages;
    }

    /// Drops the data set (to free its memory before building the next).
    pub fn clear(&self) {
        self.set(Arc::new(Pages::empty()));
    }

    pub fn requests(&self) -> u64 {
        self.inner.requests.load(Ordering::SeqCst)
    }

    /// How many distinct tenants have been served at least once.
    pub fn tenants_seen(&self) -> usize {
        self.inner.tenants.lock().unwrap().len()
    }
}

fn query_usize(uri: &Uri, key: &str) -> Option<usize> {
    uri.query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.parse().ok()).flatten()
    })
}

async fn serve_page(State(p): State<Arc<ProviderState>>, uri: Uri, headers: HeaderMap) -> Response {
    p.requests.fetch_add(1, Ordering::Relaxed);
    let reply = |status: StatusCode, body: Bytes| {
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap()
    };
    let authorised = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.strip_prefix("Bearer ") == Some(TOKEN));
    if !authorised {
        return reply(
            StatusCode::UNAUTHORIZED,
            Bytes::from_static(b"{\"error\":\"unauthorized\"}"),
        );
    }
    let page = query_usize(&uri, "page").unwrap_or(1);
    let path = uri.path();
    let pages = if path == "/employees" {
        p.main.read().unwrap().clone()
    } else if path == "/empty" {
        p.empty.clone()
    } else if let Some(t) = path
        .strip_prefix("/t/")
        .and_then(|rest| rest.strip_suffix("/employees"))
        .and_then(|t| t.parse::<u64>().ok())
    {
        p.tenants.lock().unwrap().insert(t);
        p.tenant.clone()
    } else {
        return reply(
            StatusCode::NOT_FOUND,
            Bytes::from_static(b"{\"error\":\"not found\"}"),
        );
    };
    if query_usize(&uri, "per_page") != Some(pages.page_size) {
        return reply(
            StatusCode::BAD_REQUEST,
            Bytes::from(format!(
                "{{\"error\":\"per_page must be {}\"}}",
                pages.page_size
            )),
        );
    }
    reply(StatusCode::OK, pages.page(page))
}

// ---------------------------------------------------------------------------
// The webhook sink
// ---------------------------------------------------------------------------

/// A loopback webhook receiver: answers every POST with 200 (after `delay`),
/// counting requests and noting when the first arrived and the last was
/// answered.
#[derive(Clone)]
pub struct Sink {
    pub url: String,
    inner: Arc<SinkState>,
}

struct SinkState {
    delay: Duration,
    count: AtomicU64,
    span: Mutex<(Option<Instant>, Option<Instant>)>,
}

impl Sink {
    pub fn start(rt: &tokio::runtime::Runtime, delay: Duration) -> Sink {
        let inner = Arc::new(SinkState {
            delay,
            count: AtomicU64::new(0),
            span: Mutex::new((None, None)),
        });
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind the sink");
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let app = Router::new().fallback(receive).with_state(inner.clone());
        rt.spawn(async move { axum::serve(listener, app).await });
        Sink { url, inner }
    }

    pub fn count(&self) -> u64 {
        self.inner.count.load(Ordering::SeqCst)
    }

    /// Forgets the first/last times (the count keeps going).
    pub fn reset_span(&self) {
        *self.inner.span.lock().unwrap() = (None, None);
    }

    /// From the first request's arrival to the last one's answer.
    pub fn span(&self) -> Option<Duration> {
        match *self.inner.span.lock().unwrap() {
            (Some(a), Some(b)) => Some(b.saturating_duration_since(a)),
            _ => None,
        }
    }
}

async fn receive(State(s): State<Arc<SinkState>>, _body: Bytes) -> (StatusCode, &'static str) {
    {
        let mut span = s.span.lock().unwrap();
        span.0.get_or_insert_with(Instant::now);
    }
    if !s.delay.is_zero() {
        tokio::time::sleep(s.delay).await;
    }
    s.count.fetch_add(1, Ordering::SeqCst);
    s.span.lock().unwrap().1 = Some(Instant::now());
    (StatusCode::OK, "ok")
}

// ---------------------------------------------------------------------------
// Configs
// ---------------------------------------------------------------------------

/// The `[daemon]` table and the loopback provider, with one resource
/// `hris_employees` at `resource_path`.
pub fn config_head(state_dir: &Path, provider: &Provider, resource_path: &str) -> String {
    config_head_sized(state_dir, provider, resource_path, PAGE_SIZE, "")
}

/// [`config_head`] with another page size and extra provider keys.
pub fn config_head_sized(
    state_dir: &Path,
    provider: &Provider,
    resource_path: &str,
    page_size: usize,
    provider_extra: &str,
) -> String {
    format!(
        r#"[daemon]
state_dir = {state:?}
log_format = "json"

[providers.hris]
base_url = "{base}"
auth = {{ type = "bearer", token = "{TOKEN}" }}
pagination = {{ type = "page", page_param = "page", size_param = "per_page", size = {page_size} }}
records = "/data"
id = "/id"
{provider_extra}

[providers.hris.resources.hris_employees]
path = "{resource_path}"

"#,
        state = state_dir.display().to_string(),
        base = provider.base,
    )
}

/// One account of the `hris` provider.
pub fn account(id: &str, extra: &str) -> String {
    format!("[[accounts]]\nid = \"{id}\"\nprovider = \"hris\"\ninterval = \"1h\"\n{extra}\n")
}

/// One webhook for `hris_employees.*` events; `extra` adds keys.
pub fn webhook(url: &str, extra: &str) -> String {
    format!(
        "[[webhooks]]\nid = \"sink\"\nurl = \"{url}\"\nevents = [\"hris_employees.*\"]\nsecret = \"{}\"\n{extra}\n",
        secret()
    )
}

pub fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

// ---------------------------------------------------------------------------
// Running and measuring a child
// ---------------------------------------------------------------------------

/// `/proc/<pid>/io` counters.
#[derive(Debug, Default, Clone, Copy)]
pub struct Io {
    pub rchar: u64,
    pub wchar: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub cancelled_write_bytes: u64,
}

pub fn read_io(pid: i32) -> Option<Io> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    let mut io = Io::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v: u64 = v.trim().parse().ok()?;
        match k {
            "rchar" => io.rchar = v,
            "wchar" => io.wchar = v,
            "read_bytes" => io.read_bytes = v,
            "write_bytes" => io.write_bytes = v,
            "cancelled_write_bytes" => io.cancelled_write_bytes = v,
            _ => {}
        }
    }
    Some(io)
}

/// A `VmXXX:` line of `/proc/<pid>/status`, in KiB.
pub fn status_kib(pid: i32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// utime + stime of `pid` from `/proc/<pid>/stat`, in clock ticks.
pub fn cpu_ticks(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; fields resume after its ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

pub fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// What a measured child did.
#[derive(Debug, Clone)]
pub struct Measured {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// Spawn to exit.
    pub wall: Duration,
    /// User + system CPU time (from wait4's rusage).
    pub cpu: Duration,
    /// Peak RSS in KiB: the largest VmHWM seen while polling every 5 ms
    /// (VmHWM only grows, so at most the last 5 ms of growth can be missed).
    /// Not wait4's ru_maxrss: exec(2) folds the spawning process's high
    /// water mark into it (fork or vfork, the pre-exec image is the
    /// parent's), so a child of a benchmark holding 700 MB of pages would
    /// report 700 MB.
    pub peak_rss_kib: u64,
    /// `/proc/<pid>/io` as the process exited (read while it was a zombie,
    /// before it was reaped, so nothing written late is missed).
    pub io: Io,
}

impl Measured {
    /// stdout as JSON, or a panic showing both outputs.
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n--- stdout\n{}\n--- stderr\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// Panics with both outputs unless the exit code is `code`.
    pub fn expect_code(&self, code: i32, what: &str) -> &Self {
        assert_eq!(
            self.code, code,
            "{what}: exit code {} (wanted {code})\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }
}

/// `synthd --config <config> <args…>`, with a clean environment. With
/// `BENCH_WRAP` set (e.g. `"perf record -g -o /tmp/perf.data --"`), the
/// command runs under that wrapper: for profiling, not for figures.
pub fn synthd(config: &Path, args: &[&str]) -> Command {
    let wrap = std::env::var("BENCH_WRAP").unwrap_or_default();
    let mut words = wrap.split_whitespace();
    let mut cmd = match words.next() {
        Some(program) => {
            let mut c = Command::new(program);
            c.args(words).arg(synthd_bin());
            c
        }
        None => Command::new(synthd_bin()),
    };
    cmd.arg("--config").arg(config).args(args);
    clean_env(&mut cmd);
    cmd
}

/// Children never inherit `SYNTHD_…` overrides, log filters or credentials.
pub fn clean_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().to_string();
        if k.starts_with("SYNTHD_") || k == "CREDENTIALS_DIRECTORY" || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
}

/// Runs `cmd` to completion, measuring it. A sampler thread polls
/// `/proc/<pid>/status` (VmHWM) and `/proc/<pid>/io` every 5 ms; the I/O
/// counters reported come from the exited-but-unreaped process
/// (`waitid(WNOWAIT)`, then `/proc/<pid>/io`; the sampled values are the
/// fallback), the CPU time from `wait4`'s rusage.
pub fn run_measured(mut cmd: Command) -> Measured {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let pid = child.id() as i32;
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
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let (mut hwm, mut io) = (0u64, Io::default());
            while !done.load(Ordering::SeqCst) {
                if let Some(v) = status_kib(pid, "VmHWM") {
                    hwm = hwm.max(v);
                }
                if let Some(v) = read_io(pid) {
                    io = v;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (hwm, io)
        })
    };
    // Wait for the exit without reaping, so /proc/<pid>/io still holds the
    // final counters.
    // SAFETY: plain syscalls on our own child; `info` is a valid out-param.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        loop {
            let r = libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            );
            if r == 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                break;
            }
        }
    }
    let wall = started.elapsed();
    let final_io = read_io(pid);
    done.store(true, Ordering::SeqCst);
    let (hwm, sampled_io) = sampler.join().unwrap();
    let mut status = 0;
    // SAFETY: as above; `rusage` is a valid out-param.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4 on the child");
    // The child is reaped by hand: `child` must not wait again.
    drop(child);
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -libc::WTERMSIG(status)
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Measured {
        code,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
        wall,
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
        peak_rss_kib: hwm,
        io: final_io.unwrap_or(sampled_io),
    }
}

/// Sizes of `synthd.db` and its `-wal` in `state_dir` (0 when missing).
pub fn db_bytes(state_dir: &Path) -> u64 {
    ["synthd.db", "synthd.db-wal"]
        .iter()
        .map(|f| {
            std::fs::metadata(state_dir.join(f))
                .map(|m| m.len())
                .unwrap_or(0)
        })
        .sum()
}

pub fn file_bytes(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

pub fn env_list(key: &str, default: &[usize]) -> Vec<usize> {
    match std::env::var(key) {
        Ok(v) if !v.trim().is_empty() => v
            .split(',')
            .map(|s| {
                s.trim()
                    .replace('_', "")
                    .parse()
                    .unwrap_or_else(|_| panic!("{key}: {s:?} is not a number"))
            })
            .collect(),
        _ => default.to_vec(),
    }
}

pub fn env_usize(key: &str, default: usize) -> usize {
    env_list(key, &[default])[0]
}

pub fn env_flag(key: &str) -> bool {
    std::env::var(key).is_ok_and(|v| !v.is_empty() && v != "0")
}

pub fn temp_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("temp dir")
}

pub fn path_in(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

// ---------------------------------------------------------------------------
// Formatting
// ---------------------------------------------------------------------------

/// 1234567 → "1,234,567".
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes as B / KiB / MiB / GiB.
pub fn human_bytes(n: u64) -> String {
    let f = n as f64;
    if f >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB", f / (1024.0 * 1024.0 * 1024.0))
    } else if f >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", f / (1024.0 * 1024.0))
    } else if f >= 1024.0 {
        format!("{:.1} KiB", f / 1024.0)
    } else {
        format!("{n} B")
    }
}

/// A ratio as "12.3×".
pub fn times(r: f64) -> String {
    if r.is_finite() {
        format!("{r:.1}×")
    } else {
        "-".into()
    }
}

/// A left-aligned text table.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let cols = header.len();
    let width = |i: usize| {
        rows.iter()
            .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
            .chain(std::iter::once(header[i].chars().count()))
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..cols).map(width).collect();
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(c.chars().count());
            s.push_str(c);
            if i + 1 < cols {
                s.push_str(&" ".repeat(pad + 2));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    out.push_str(&line(
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect(),
    ));
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// The machine, for the header of every table: cores and the load average
/// when first called (the start of the benchmark; later calls repeat it).
pub fn machine() -> String {
    static AT_START: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    AT_START
        .get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
            let load = std::fs::read_to_string("/proc/loadavg")
                .ok()
                .and_then(|l| l.split_whitespace().next().map(str::to_string))
                .unwrap_or_else(|| "?".into());
            format!("{cores} cores, load average {load} at start")
        })
        .clone()
}
