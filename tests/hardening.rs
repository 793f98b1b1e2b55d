//! Regression tests for the hardening issue: each test is one class of
//! broken promise (a credential following a redirect, a secret in an error,
//! a number from outside panicking, an operator edit inventing events, …),
//! driven through the real binary against loopback servers.

mod common;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path, query_param, query_param_is_missing};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const TOKEN: &str = "hdr-Key-4471-Gribble";

/// A provider block, one account polling it every 5 minutes, and one
/// webhook subscribed to everything.
struct Cfg {
    base: String,
    auth: String,
    pagination: String,
    records: String,
    provider_extra: String,
    resource_extra: String,
    account_extra: String,
    hook: String,
}

impl Cfg {
    fn new(provider: &MockServer, hook: &Receiver) -> Cfg {
        Cfg {
            base: format!("{}/v1", provider.uri()),
            auth: r#"{ type = "header", name = "X-Api-Key", value_env = "API_KEY" }"#.into(),
            pagination:
                r#"{ type = "page", page_param = "page", size_param = "per_page", size = 2 }"#
                    .into(),
            records: "/data".into(),
            provider_extra: "retries = 0".into(),
            resource_extra: String::new(),
            account_extra: String::new(),
            hook: format!("{}/hook?token=hook-Tok-88", hook.base),
        }
    }

    fn render(&self) -> String {
        format!(
            r#"
[providers.p]
base_url = "{base}"
auth = {auth}
pagination = {pagination}
records = "{records}"
{provider_extra}

[providers.p.resources.items]
path = "/items"
{resource_extra}

[[accounts]]
id = "acme"
provider = "p"
interval = "5m"
{account_extra}

[[webhooks]]
id = "hook"
url = "{hook}"
events = ["*"]
secret = "{SECRET}"
"#,
            base = self.base,
            auth = self.auth,
            pagination = self.pagination,
            records = self.records,
            provider_extra = self.provider_extra,
            resource_extra = self.resource_extra,
            account_extra = self.account_extra,
            hook = self.hook,
        )
    }

    fn env(&self) -> TestEnv {
        let mut env = TestEnv::new();
        env.set_var("API_KEY", TOKEN);
        env.write_config(&self.render());
        env
    }
}

/// Serves `bodies` as pages 1..=n of /v1/items (2 per page), then an empty
/// page, to requests carrying the API key.
async fn serve_pages(server: &MockServer, bodies: &[String]) {
    server.reset().await;
    let mut bodies = bodies.to_vec();
    bodies.push(r#"{"data":[]}"#.into());
    for (i, body) in bodies.iter().enumerate() {
        Mock::given(method("GET"))
            .and(path("/v1/items"))
            .and(query_param("page", (i + 1).to_string()))
            .and(header("x-api-key", TOKEN))
            .respond_with(ResponseTemplate::new(200).set_body_raw(body.clone(), "application/json"))
            .mount(server)
            .await;
    }
}

/// Serves `records` (JSON texts) two per page.
async fn serve_records(server: &MockServer, records: &[String]) {
    let bodies: Vec<String> = records
        .chunks(2)
        .map(|c| format!(r#"{{"data":[{}]}}"#, c.join(",")))
        .collect();
    serve_pages(server, &bodies).await;
}

fn item(id: &str, v: u32) -> String {
    json!({"id": id, "name": format!("Name-{id}-{v}"), "v": v}).to_string()
}

fn items(range: std::ops::Range<u32>, v: u32) -> Vec<String> {
    range.map(|i| item(&format!("r{i}"), v)).collect()
}

fn the_poll(j: &Value) -> &Value {
    &j["polls"][0]
}

fn counts(j: &Value) -> (u64, u64, u64, u64) {
    let p = the_poll(j);
    let n = |k: &str| p[k].as_u64().unwrap_or_else(|| panic!("{k} in {p}"));
    (n("records"), n("created"), n("updated"), n("deleted"))
}

/// Types of every event received so far, sorted, with record ids.
fn received(rx: &Receiver) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = rx
        .requests()
        .iter()
        .map(|r| key_of(&verify(r, SECRET)))
        .collect();
    v.sort();
    v
}

fn record_events(rx: &Receiver) -> Vec<(String, String)> {
    received(rx)
        .into_iter()
        .filter(|(t, _)| !t.starts_with("account."))
        .collect()
}

// ---------------------------------------------------------------------------
// Security
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_another_origin_is_refused_and_deletes_nothing() {
    let provider = MockServer::start().await;
    let elsewhere = MockServer::start().await;
    let rx = start_receiver().await;
    let mut cfg = Cfg::new(&provider, &rx);
    cfg.provider_extra = "retries = 0\nheaders = { \"X-Static\" = \"static-Hdr-31\" }".into();
    let env = cfg.env();
    serve_records(&provider, &items(0..3, 1)).await;
    env.sync(&[]).await.0.assert_code(0);

    // The provider now redirects page 1 to another port of the same host:
    // another origin. Nothing may be sent there, and nothing is deleted.
    provider.reset().await;
    Mock::given(path("/v1/items"))
        .respond_with(
            ResponseTemplate::new(302)
                .insert_header("location", format!("{}/v1/items?page=1", elsewhere.uri())),
        )
        .mount(&provider)
        .await;
    Mock::given(path("/v1/items"))
        .respond_with(ResponseTemplate::new(200).set_body_string(r#"{"data":[]}"#))
        .mount(&elsewhere)
        .await;
    let (out, j) = env.sync(&[]).await;
    out.assert_code(1);
    let error = the_poll(&j)["error"].as_str().unwrap().to_string();
    assert!(error.contains("redirected to another origin"), "{error}");
    assert!(
        elsewhere.received_requests().await.unwrap().is_empty(),
        "a request reached the other origin"
    );
    assert!(record_events(&rx).is_empty(), "{:?}", received(&rx));
    assert_eq!(env.tracked("acme", "items").len(), 3);

    // A redirect within the origin is followed, credentials and all.
    provider.reset().await;
    Mock::given(path("/v1/items"))
        .and(query_param_is_missing("moved"))
        .respond_with(
            ResponseTemplate::new(307)
                .insert_header("location", "/v1/items?moved=1&page=1&per_page=2"),
        )
        .mount(&provider)
        .await;
    Mock::given(path("/v1/items"))
        .and(query_param("moved", "1"))
        .and(header("x-api-key", TOKEN))
        .and(header("x-static", "static-Hdr-31"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string(format!(r#"{{"data":[{}]}}"#, item("r0", 1))),
        )
        .mount(&provider)
        .await;
    let (out, j) = env.sync(&[]).await;
    out.assert_code(0);
    assert_eq!(the_poll(&j)["records"], 1, "{j}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_endpoint_redirect_to_another_origin_never_resends_the_secret() {
    let provider = MockServer::start().await;
    let elsewhere = MockServer::start().await;
    let rx = start_receiver().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(
            ResponseTemplate::new(307)
                .insert_header("location", format!("{}/steal", elsewhere.uri())),
        )
        .mount(&provider)
        .await;
    let mut cfg = Cfg::new(&provider, &rx);
    cfg.auth = format!(
        r#"{{ type = "oauth2", token_url = "{}/oauth/token", client_id = "cid", client_secret_env = "API_KEY" }}"#,
        provider.uri()
    );
    let env = cfg.env();
    let (out, j) = env.sync(&[]).await;
    out.assert_code(1);
    let error = the_poll(&j)["error"].as_str().unwrap();
    assert!(
        error.contains("OAuth2 token request") && error.contains("another origin"),
        "{error}"
    );
    assert!(elsewhere.received_requests().await.unwrap().is_empty());
    env.assert_no_leaks(&[TOKEN.to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_never_print_a_password_or_a_secret_given_where_a_name_belongs() {
    let provider = MockServer::start().await;
    let rx = start_receiver().await;
    let base = Cfg::new(&provider, &rx);
    let hidden = [
        "hunter2-Pass",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "a3f9c2d81b7e4f60a3f9c2d81b7e4f60",
    ];
    let cases = [
        // An unparsable URL with a password in it.
        base.render()
            .replace(&base.base, "https://user:hunter2-Pass@exa mple.com/v1"),
        // A secret written where the variable name belongs.
        base.render().replace(
            &format!("secret = \"{SECRET}\""),
            "secret_env = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"",
        ),
        base.render().replace(
            "value_env = \"API_KEY\"",
            "value_env = \"a3f9c2d81b7e4f60a3f9c2d81b7e4f60\"",
        ),
        base.render().replace(
            &format!("secret = \"{SECRET}\""),
            "secret_file = \"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"",
        ),
        // A secret where a number belongs: serde would quote it.
        base.render()
            .replace("interval = \"5m\"", "interval = 12345678901234567890123"),
    ];
    for text in cases {
        let mut env = TestEnv::new();
        env.set_var("API_KEY", TOKEN);
        env.write_config(&text);
        let out = env.synthd(&["check"]).await;
        assert_eq!(out.code, 2, "{}", out.stderr);
        for h in hidden {
            assert!(
                !out.stderr.contains(h) && !out.stdout.contains(h),
                "{h} printed: {}",
                out.stderr
            );
        }
        assert!(
            !out.stderr.contains("12345678901234567890123"),
            "{}",
            out.stderr
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_show_escapes_what_a_receiver_sends() {
    let provider = MockServer::start().await;
    serve_records(&provider, &[]).await;
    let hook = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(500)
                .set_body_string("\u{1b}[2J\u{1b}[31mEVIL\u{7}\u{202e}txt.exe"),
        )
        .mount(&hook)
        .await;
    let rx = start_receiver().await;
    let mut cfg = Cfg::new(&provider, &rx);
    cfg.hook = format!("{}/hook", hook.uri());
    let env = cfg.env();
    env.sync(&[]).await.0.assert_code(0);
    let list = env.synthd(&["deliveries", "--json"]).await;
    let rows: Vec<Value> = serde_json::from_str(&list.stdout).unwrap();
    let id = rows[0]["id"].as_str().unwrap();
    let out = env.synthd(&["deliveries", "show", id]).await;
    out.assert_code(0);
    for raw in ['\u{1b}', '\u{7}', '\u{202e}'] {
        assert!(
            !out.stdout.contains(raw),
            "raw {raw:?} reached the terminal: {:?}",
            out.stdout
        );
    }
    assert!(
        out.stdout.contains("\\u{1b}[31mEVIL\\u{7}\\u{202e}txt.exe"),
        "{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insecure_state_directory_and_symlinked_state_files_are_refused() {
    let provider = MockServer::start().await;
    serve_records(&provider, &items(0..1, 1)).await;
    let rx = start_receiver().await;
    let env = Cfg::new(&provider, &rx).env();

    // World-writable: refused, and nothing is created in it.
    std::fs::create_dir(&env.state).unwrap();
    std::fs::set_permissions(&env.state, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = env.synthd(&["sync"]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("writable by other users") && out.stderr.contains("chmod"),
        "{}",
        out.stderr
    );
    assert!(std::fs::read_dir(&env.state).unwrap().next().is_none());
    std::fs::set_permissions(&env.state, std::fs::Permissions::from_mode(0o700)).unwrap();

    // A synthd.lock that is a symbolic link: its target is never written.
    let target = env.path().join("precious.txt");
    std::fs::write(&target, "keep me").unwrap();
    std::os::unix::fs::symlink(&target, env.state.join("synthd.lock")).unwrap();
    let out = env.synthd(&["sync"]).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("symbolic link"), "{}", out.stderr);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
    std::fs::remove_file(env.state.join("synthd.lock")).unwrap();

    // A synthd.db that is a symbolic link: not followed.
    let db_target = env.path().join("elsewhere.db");
    std::os::unix::fs::symlink(&db_target, env.state.join("synthd.db")).unwrap();
    let out = env.synthd(&["sync"]).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("symbolic link"), "{}", out.stderr);
    assert!(!db_target.exists(), "the link was followed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_header_names_dotted_resources_and_colliding_parameters_are_refused() {
    let provider = MockServer::start().await;
    let rx = start_receiver().await;
    let base = Cfg::new(&provider, &rx).render();
    let hook_line = "events = [\"*\"]";
    let cases: Vec<(String, &str, &str)> = vec![
        (
            base.replace(
                hook_line,
                &format!("{hook_line}\nsignature_header = \"host\""),
            ),
            "webhooks[0].signature_header",
            "header",
        ),
        (
            base.replace(
                hook_line,
                &format!("{hook_line}\nsignature_header = \"Transfer-Encoding\""),
            ),
            "webhooks[0].signature_header",
            "header",
        ),
        (
            base.replace(
                hook_line,
                &format!("{hook_line}\nsignature_header = \"webhook-id\""),
            ),
            "webhooks[0].signature_header",
            "header",
        ),
        (
            base.replace(
                "retries = 0",
                "retries = 0\nheaders = { Host = \"evil.example\" }",
            ),
            "providers.p.headers.Host",
            "header",
        ),
        (
            base.replace("name = \"X-Api-Key\"", "name = \"Content-Length\""),
            "providers.p.auth.name",
            "header",
        ),
        (
            base.replace(
                "[providers.p.resources.items]",
                "[providers.p.resources.\"items.secret\"]",
            ),
            "providers.p.resources.items.secret",
            "dot",
        ),
        (
            base.replace(
                "path = \"/items\"",
                "path = \"/items\"\nquery = { page = \"7\" }",
            ),
            "providers.p.resources.items.query.page",
            "written by the pagination",
        ),
        (
            base.replace("size = 2 }", "size = 2 }\nquery = { cursor = \"x\" }")
                .replace(
                    "type = \"page\", page_param = \"page\", size_param = \"per_page\", size = 2",
                    "type = \"cursor\", next = \"/next\"",
                ),
            "providers.p.query.cursor",
            "written by the pagination",
        ),
    ];
    for (text, key, words) in cases {
        let mut env = TestEnv::new();
        env.set_var("API_KEY", TOKEN);
        env.write_config(&text);
        let out = env.synthd(&["check"]).await;
        assert_eq!(out.code, 2, "{key}: {}{}", out.stdout, out.stderr);
        assert!(
            out.stderr.contains(key) && out.stderr.contains(words),
            "{key}: {}",
            out.stderr
        );
    }
}

// ---------------------------------------------------------------------------
// Numbers from outside
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oauth2_expires_in_beyond_any_clock_neither_panics_nor_stalls() {
    let provider = MockServer::start().await;
    let rx = start_receiver().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            r#"{"access_token":"tok-Huge-1","token_type":"bearer","expires_in":18446744073709551615}"#,
            "application/json",
        ))
        .mount(&provider)
        .await;
    Mock::given(path("/v1/items"))
        .and(header("authorization", "Bearer tok-Huge-1"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string(format!(r#"{{"data":[{}]}}"#, item("r0", 1))),
        )
        .mount(&provider)
        .await;
    let mut cfg = Cfg::new(&provider, &rx);
    cfg.auth = format!(
        r#"{{ type = "oauth2", token_url = "{}/oauth/token", client_id = "cid", client_secret_env = "API_KEY" }}"#,
        provider.uri()
    );
    let env = cfg.env();
    for _ in 0..2 {
        let (out, j) = env.sync(&[]).await;
        out.assert_code(0);
        assert_eq!(the_poll(&j)["records"], 1, "{j}");
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_retry_after_values_are_clamped_to_the_longest_step() {
    let provider = MockServer::start().await;
    let rx = start_receiver().await;
    for (value, check) in [
        ("9000000000000", "huge"),
        ("18446744073709551615", "max"),
        ("1795428000", "epoch-like"),
        ("Fri, 31 Dec 9999 23:59:59 GMT", "far date"),
    ] {
        serve_records(&provider, &[]).await;
        let hook = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(503).insert_header("retry-after", value))
            .mount(&hook)
            .await;
        let mut cfg = Cfg::new(&provider, &rx);
        cfg.hook = format!("{}/hook", hook.uri());
        let env = cfg.env();
        let before = chrono::Utc::now();
        let (out, j) = env.sync(&[]).await;
        out.assert_code(0);
        assert!(!out.stderr.contains("panicked"), "{check}: {}", out.stderr);
        assert_eq!(j["deliveries"]["retrying"], 1, "{check}: {j}");
        let list = env.synthd(&["deliveries", "--json"]).await;
        let rows: Vec<Value> = serde_json::from_str(&list.stdout).unwrap();
        assert_eq!(rows[0]["status"], "pending", "{check}");
        let next: chrono::DateTime<chrono::Utc> = rows[0]["next_attempt_at"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let wait = (next - before).num_seconds();
        assert!(
            (36_000 - 5..=36_000 + 60).contains(&wait),
            "{check}: retry in {wait}s, want 10 h"
        );
    }
}

// ---------------------------------------------------------------------------
// The CLI on a closed pipe
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_pipe_ends_every_command_quietly() {
    let provider = MockServer::start().await;
    serve_records(&provider, &items(0..3, 1)).await;
    let rx = start_receiver().await;
    let env = Cfg::new(&provider, &rx).env();
    env.sync(&[]).await.0.assert_code(0);
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["deliveries"],
        &["check"],
        &["secret"],
        &["sync"],
    ] {
        // A pipe whose reader is already gone: the first write fails with
        // EPIPE, as `synthd status | head -0` does.
        let (read_end, write_end) = std::io::pipe().unwrap();
        drop(read_end);
        let mut cmd = std::process::Command::new(synthd_bin());
        cmd.arg("--config").arg(&env.config).args(args);
        clean_env(&mut cmd);
        cmd.env("API_KEY", TOKEN);
        let mut child = cmd
            .stdout(write_end)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "{args:?}: {stderr}"
        );
    }
}

// ---------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_times_from_a_wrong_clock_never_stall_polls_or_deletions() {
    let provider = MockServer::start().await;
    serve_records(&provider, &items(0..3, 1)).await;
    let rx = start_receiver().await;
    let mut cfg = Cfg::new(&provider, &rx);
    cfg.resource_extra = r#"updated_since = { param = "updated_after" }"#.into();
    let env = cfg.env();
    env.sync(&[]).await.0.assert_code(0);
    env.sync(&[]).await.0.assert_code(0);

    // A poll ran with the clock a year ahead.
    let year_ms: i64 = 365 * 86_400_000;
    env.db()
        .execute(
            "UPDATE poll_state SET last_started_at = last_started_at + ?1,
                 last_success_started_at = last_success_started_at + ?1,
                 last_full_scan_at = last_full_scan_at + ?1",
            [year_ms],
        )
        .unwrap();
    let status = env.synthd(&["status", "--json"]).await;
    status.assert_code(0);
    let next: chrono::DateTime<chrono::Utc> = status.json()["polls"][0]["next_poll_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let ahead = next - chrono::Utc::now();
    assert!(ahead < chrono::Duration::hours(1), "next poll {ahead} away");

    // The next poll is a full scan (not an incremental one from a time in
    // the future), so a deletion is seen.
    serve_records(&provider, &items(0..2, 1)).await;
    let (out, j) = env.sync(&[]).await;
    out.assert_code(0);
    assert_eq!(the_poll(&j)["full_scan"], true, "{j}");
    assert_eq!(counts(&j), (2, 0, 0, 1), "{j}");
    let reqs = provider.received_requests().await.unwrap();
    assert!(
        reqs.iter()
            .all(|r| !r.url.as_str().contains("updated_after")),
        "an incremental request was made"
    );
}

// ---------------------------------------------------------------------------
// Never invent events
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_that_replaces_every_id_is_held_by_the_mass_deletion_guard() {
    let provider = MockServer::start().await;
    serve_records(&provider, &items(0..20, 1)).await;
    let rx = start_receiver().await;
    let env = Cfg::new(&provider, &rx).env();
    env.sync(&[]).await.0.assert_code(0);

    // Twenty different ids (a wrong tenant, an id format change).
    serve_records(&provider, &items(100..120, 1)).await;
    let (out, j) = env.sync(&[]).await;
    out.assert_code(0);
    assert_eq!(counts(&j), (20, 20, 0, 0), "{j}");
    assert_eq!(the_poll(&j)["held"], 20, "{j}");
    let deleted = record_events(&rx)
        .iter()
        .filter(|(t, _)| t.ends_with(".deleted"))
        .count();
    assert_eq!(deleted, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_ignore_or_the_id_pointer_rebaselines_silently() {
    let provider = MockServer::start().await;
    let rx = start_receiver().await;
    let records = |stamp: &str| -> Vec<String> {
        (0..4)
            .map(|i| {
                json!({"id": i, "uuid": format!("u-{i}"), "name": format!("n{i}"), "seen": stamp})
                    .to_string()
            })
            .collect()
    };
    serve_records(&provider, &records("t1")).await;
    let mut cfg = Cfg::new(&provider, &rx);
    let env = cfg.env();
    env.sync(&[]).await.0.assert_code(0);

    // The operator adds `seen` to ignore while `seen` changes: no events.
    serve_records(&provider, &records("t2")).await;
    cfg.resource_extra = r#"ignore = ["/seen"]"#.into();
    env.write_config(&cfg.render());
    let (out, j) = env.sync(&[]).await;
    out.assert_code(0);
    assert_eq!(the_poll(&j)["baseline"], true, "a re-baseline: {j}");
    assert!(record_events(&rx).is_empty(), "{:?}", record_events(&rx));
    assert!(out.stderr.is_empty() || !out.stderr.contains("panicked"));

    // The operator switches the id to /uuid: still no events.
    cfg.resource_extra = "ignore = [\"/seen\"]\nid = \"/uuid\"".into();
    env.write_config(&cfg.render());
    env.sync(&[]).await.0.assert_code(0);
    assert!(record_events(&rx).is_empty(), "{:?}", record_events(&rx));

    // A real change afterwards is announced under the new id.
    let mut changed = records("t3");
    changed[1] = json!({"id": 1, "uuid": "u-1", "name": "renamed", "seen": "t3"}).to_string();
    serve_records(&provider, &changed).await;
    env.sync(&[]).await.0.assert_code(0);
    assert_eq!(
        record_events(&rx),
        vec![("items.updated".to_string(), "u-1".to_string())]
    );
}

/// A re-baseline recomputes every hash even when the provider's bytes
/// have not changed (the raw-bytes fast path would keep hashes of the old
/// shape): after `/seen` joins `ignore` over identical bytes, a later change
/// of `/seen` alone announces nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_ignored_over_unchanged_bytes_stays_ignored() {
    let provider = MockServer::start().await;
    let rx = start_receiver().await;
    let records = |stamp: &str| -> Vec<String> {
        (0..4)
            .map(|i| json!({"id": i, "name": format!("n{i}"), "seen": stamp}).to_string())
            .collect()
    };
    serve_records(&provider, &records("t1")).await;
    let mut cfg = Cfg::new(&provider, &rx);
    let env = cfg.env();
    env.sync(&[]).await.0.assert_code(0);
    env.sync(&[]).await.0.assert_code(0);

    cfg.resource_extra = r#"ignore = ["/seen"]"#.into();
    env.write_config(&cfg.render());
    let (out, j) = env.sync(&[]).await;
    out.assert_code(0);
    assert_eq!(the_poll(&j)["baseline"], true, "a re-baseline: {j}");

    serve_records(&provider, &records("t2")).await;
    let (out, j) = env.sync(&[]).await;
    out.assert_code(0);
    assert_eq!(counts(&j), (4, 0, 0, 0), "{j}");
    assert!(record_events(&rx).is_empty(), "{:?}", record_events(&rx));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_numeric_ids_are_one_id_and_a_type_collision_never_blocks_deletes() {
    let provider = MockServer::start().await;
    let rx = start_receiver().await;
    let rec = |id: &str| format!(r#"{{"id":{id},"name":"x"}}"#);
    serve_records(&provider, &[rec("1"), rec("2"), rec("3")]).await;
    let env = Cfg::new(&provider, &rx).env();
    env.sync(&[]).await.0.assert_code(0);

    // The same ids re-serialised as 1.0 and 2e0: nothing happened.
    serve_records(&provider, &[rec("1.0"), rec("2e0"), rec("3")]).await;
    let (out, j) = env.sync(&[]).await;
    out.assert_code(0);
    assert_eq!(counts(&j), (3, 0, 0, 0), "{j}");

    // 1 and "1" collide: counted, the later ignored, and the deletion of 3
    // still happens (this scan and every later one).
    serve_records(&provider, &[rec("1"), rec("\"1\""), rec("2")]).await;
    let (out, j) = env.sync(&[]).await;
    out.assert_code(0);
    assert_eq!(the_poll(&j)["collisions"], 1, "{j}");
    assert_eq!(counts(&j), (2, 0, 0, 1), "{j}");
    assert_eq!(
        record_events(&rx),
        vec![("items.deleted".to_string(), "3".to_string())]
    );
    assert_eq!(
        env.tracked("acme", "items"),
        vec!["1".to_string(), "2".to_string()]
    );
}

// ---------------------------------------------------------------------------
// Valid input is accepted
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_that_once_failed_the_page_is_hashed_and_the_rest_flows() {
    let provider = MockServer::start().await;
    let rx = start_receiver().await;
    let deep = format!(
        r#"{{"id":"deep","x":{}0{}}}"#,
        "[".repeat(300),
        "]".repeat(300)
    );
    let too_deep = format!(
        r#"{{"id":"abyss","x":{}0{}}}"#,
        "[".repeat(20_000),
        "]".repeat(20_000)
    );
    let page = |v: u32| {
        vec![
            deep.clone(),
            r#"{"id":"lone","s":"\ud800"}"#.to_string(),
            r#"{"id":"huge","n":1e400}"#.to_string(),
            too_deep.clone(),
            item("plain", v),
        ]
    };
    serve_records(&provider, &page(1)).await;
    let env = Cfg::new(&provider, &rx).env();
    let (out, j) = env.sync(&[]).await;
    out.assert_code(0);
    assert_eq!(the_poll(&j)["records"], 4, "{j}");
    assert_eq!(the_poll(&j)["unhashable"], 1, "{j}");

    // The plain record changes: exactly its event, and the record that
    // cannot be hashed is neither updated nor deleted.
    serve_records(&provider, &page(2)).await;
    let (out, j) = env.sync(&[]).await;
    out.assert_code(0);
    assert_eq!(counts(&j), (4, 0, 1, 0), "{j}");
    assert_eq!(
        record_events(&rx),
        vec![("items.updated".to_string(), "plain".to_string())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_pagination_stops_at_the_end_signal_the_api_gives() {
    let rx = start_receiver().await;
    // DRF: 404 past the last page; 4 records, 2 per page (an exact multiple).
    let drf = MockServer::start().await;
    for (page, ids) in [(1, [1, 2]), (2, [3, 4])] {
        Mock::given(path("/v1/items"))
            .and(query_param("page", page.to_string()))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "count": 4, "next": null, "results": ids.iter().map(|i| json!({"id": i})).collect::<Vec<_>>()
            })))
            .mount(&drf)
            .await;
    }
    Mock::given(path("/v1/items"))
        .and(query_param("page", "3"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"detail": "Invalid page."})))
        .mount(&drf)
        .await;
    let mut cfg = Cfg::new(&drf, &rx);
    cfg.records = "/results".into();
    // Without an end signal, every scan fails at the 404, with a hint.
    let env = cfg.env();
    let (out, j) = env.sync(&[]).await;
    out.assert_code(1);
    assert!(
        the_poll(&j)["error"]
            .as_str()
            .unwrap()
            .contains("end_status"),
        "{j}"
    );
    for signal in [r#"total = "/count""#, "end_status = [404]"] {
        cfg.pagination = format!(
            r#"{{ type = "page", page_param = "page", size_param = "per_page", size = 2, {signal} }}"#
        );
        let env = cfg.env();
        let (out, j) = env.sync(&[]).await;
        out.assert_code(0);
        assert_eq!(the_poll(&j)["records"], 4, "{signal}: {j}");
    }

    // json-server v1: the last page again past the end; `pages` says where.
    let js = MockServer::start().await;
    Mock::given(path("/v1/items"))
        .respond_with(|req: &Request| {
            let page: u32 = req
                .url
                .query_pairs()
                .find(|(k, _)| k == "_page")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(1)
                .min(2);
            let ids = [page * 2 - 1, page * 2];
            ResponseTemplate::new(200).set_body_json(json!({
                "first": 1, "prev": null, "next": null, "last": 2, "pages": 2, "items": 4,
                "data": ids.iter().map(|i| json!({"id": i})).collect::<Vec<_>>()
            }))
        })
        .mount(&js)
        .await;
    let mut cfg = Cfg::new(&js, &rx);
    cfg.pagination =
        r#"{ type = "page", page_param = "_page", size_param = "_per_page", size = 2 }"#.into();
    let (out, j) = cfg.env().sync(&[]).await;
    out.assert_code(1);
    assert!(
        the_poll(&j)["error"]
            .as_str()
            .unwrap()
            .contains("pagination loop"),
        "{j}"
    );
    cfg.pagination =
        r#"{ type = "page", page_param = "_page", size_param = "_per_page", size = 2, last_page = "/pages" }"#.into();
    let (out, j) = cfg.env().sync(&[]).await;
    out.assert_code(0);
    assert_eq!(the_poll(&j)["records"], 4, "{j}");
    assert_eq!(the_poll(&j)["pages"], 2, "{j}");
}

// ---------------------------------------------------------------------------
// Operator experience
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_show_pagination_parameters_but_not_credentials() {
    let provider = MockServer::start().await;
    Mock::given(path("/v1/items"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&provider)
        .await;
    let rx = start_receiver().await;
    let mut cfg = Cfg::new(&provider, &rx);
    cfg.auth = r#"{ type = "query", name = "auth_key", value_env = "API_KEY" }"#.into();
    let (out, j) = cfg.env().sync(&[]).await;
    out.assert_code(1);
    let error = the_poll(&j)["error"].as_str().unwrap();
    assert!(error.contains("page=1&per_page=2"), "{error}");
    assert!(
        error.contains("auth_key=***") && !error.contains(TOKEN),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_catches_impossible_filters_every_missing_variable_and_empty_configs() {
    let provider = MockServer::start().await;
    let rx = start_receiver().await;
    let base = Cfg::new(&provider, &rx).render();
    for (filter, hint) in [
        ("items.create", "did you mean \"items.created\""),
        ("item.created", "did you mean \"items.created\""),
        ("itemz.*", "did you mean \"items.*\""),
        (
            "nothing_like_it.updated",
            "with a resource from: account, items",
        ),
    ] {
        let mut env = TestEnv::new();
        env.set_var("API_KEY", TOKEN);
        env.write_config(&base.replace("events = [\"*\"]", &format!("events = [\"{filter}\"]")));
        let out = env.synthd(&["check"]).await;
        assert_eq!(out.code, 2, "{filter}");
        assert!(
            out.stderr.contains("webhooks[0].events[0]") && out.stderr.contains(hint),
            "{filter}: {}",
            out.stderr
        );
    }

    // Two unset variables: both named, one line each.
    let env = TestEnv::new();
    env.write_config(&base.replace(
        &format!("secret = \"{SECRET}\""),
        "secret_env = \"HOOK_SECRET\"",
    ));
    let out = env.synthd(&["check"]).await;
    assert_eq!(out.code, 2);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{}", out.stderr);
    assert!(
        lines[0].contains("API_KEY") && lines[1].contains("HOOK_SECRET"),
        "{}",
        out.stderr
    );

    // No accounts and no webhooks: valid, but said.
    let env = TestEnv::new();
    env.write_config("");
    let out = env.synthd(&["check"]).await;
    out.assert_code(0);
    assert!(
        out.stdout.contains("no accounts are configured"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("no webhooks are configured"),
        "{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_webhooks_have_their_pending_deliveries_cancelled() {
    let provider = MockServer::start().await;
    serve_records(&provider, &[]).await;
    let hook = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&hook)
        .await;
    let rx = start_receiver().await;
    let mut cfg = Cfg::new(&provider, &rx);
    cfg.hook = format!("{}/hook", hook.uri());
    let env = cfg.env();
    env.sync(&[]).await.0.assert_code(0);
    let status = env.synthd(&["status", "--json"]).await.json();
    assert_eq!(status["deliveries"]["pending"], 1, "{status}");

    // The webhook leaves the config: its pending delivery is cancelled, not
    // left waiting forever, and stays visible.
    let text = cfg.render();
    let without = &text[..text.find("[[webhooks]]").unwrap()];
    env.write_config(without);
    env.sync(&[]).await.0.assert_code(0);
    let status = env.synthd(&["status", "--json"]).await.json();
    assert_eq!(status["deliveries"]["pending"], 0, "{status}");
    assert_eq!(status["deliveries"]["cancelled"], 1, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_says_when_a_first_poll_sent_its_events() {
    let provider = MockServer::start().await;
    serve_records(&provider, &items(0..2, 1)).await;
    let rx = start_receiver().await;
    let mut cfg = Cfg::new(&provider, &rx);
    cfg.account_extra = "emit_initial = true".into();
    let out = cfg.env().synthd(&["sync"]).await;
    out.assert_code(0);
    assert!(!out.stdout.contains("no events"), "{}", out.stdout);
    assert!(out.stdout.contains("emit_initial"), "{}", out.stdout);
    assert_eq!(record_events(&rx).len(), 2);
}

/// The README's install path on a fresh VM, as far as it can run here: the
/// env file it writes makes the example config pass `check`, and the unit
/// file verifies with the binary at its path in a temporary root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_install_path_of_the_readme_checks_and_the_unit_verifies() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let unit = std::fs::read_to_string(format!("{root}/systemd/synthd.service")).unwrap();
    // Every secret the example config reads from the environment is one
    // the README puts in /etc/synthd/env, and the unit loads that file.
    let example = std::fs::read_to_string(format!("{root}/config/synthd.example.toml")).unwrap();
    let vars: Vec<&str> = example
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split("_env = \"").nth(1)?.split('"').next())
        .collect();
    assert!(!vars.is_empty());
    for v in &vars {
        assert!(
            readme.contains(&format!("{v}=")),
            "the README never sets {v}"
        );
    }
    assert!(
        unit.contains("EnvironmentFile=-/etc/synthd/env"),
        "the unit does not load /etc/synthd/env"
    );
    assert!(
        unit.contains("LimitNOFILE="),
        "the unit sets no LimitNOFILE"
    );
    for line in unit.lines().filter(|l| l.starts_with("LoadCredential=")) {
        let file = line.rsplit(':').next().unwrap();
        assert!(readme.contains(file), "the README never creates {file}");
    }

    let mut env = TestEnv::new();
    for v in &vars {
        let value = if v.contains("SECRET") {
            SECRET.to_string()
        } else {
            format!("value-of-{v}")
        };
        env.set_var(v, &value);
    }
    std::fs::copy(format!("{root}/config/synthd.example.toml"), &env.config).unwrap();
    env.synthd(&["check"]).await.assert_code(0);

    let Ok(analyze) = which("systemd-analyze") else {
        println!("skipped: systemd-analyze is not installed, so the unit file was not verified");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let sysroot = tmp.path();
    for dir in [
        "usr/local/bin",
        "etc/systemd/system",
        "bin",
        "usr/lib/systemd",
    ] {
        std::fs::create_dir_all(sysroot.join(dir)).unwrap();
    }
    std::fs::copy(synthd_bin(), sysroot.join("usr/local/bin/synthd")).unwrap();
    std::fs::copy("/bin/kill", sysroot.join("bin/kill")).unwrap();
    std::fs::write(sysroot.join("etc/systemd/system/synthd.service"), &unit).unwrap();
    let copy = std::process::Command::new("cp")
        .args(["-r", "/usr/lib/systemd/system"])
        .arg(sysroot.join("usr/lib/systemd/"))
        .status()
        .unwrap();
    assert!(copy.success());
    let out = std::process::Command::new(analyze)
        .arg("verify")
        .arg(format!("--root={}", sysroot.display()))
        .arg("/etc/systemd/system/synthd.service")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {stderr}"
    );
}

fn which(cmd: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join(cmd))
                .find(|p| p.is_file())
        })
        .ok_or(())
}

/// A running daemon whose JSON log lines are collected as they come.
struct Daemon {
    child: std::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Daemon {
    fn start(env: &TestEnv) -> Daemon {
        use std::io::BufRead;
        let mut cmd = std::process::Command::new(synthd_bin());
        cmd.arg("--config").arg(&env.config).arg("run");
        clean_env(&mut cmd);
        for (k, v) in &env.vars {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stream)
                    .lines()
                    .map_while(Result::ok)
                {
                    lock(&lines).push(line);
                }
            });
        }
        Daemon { child, lines }
    }

    /// Waits (at most 10 s) for a log line containing every one of `words`.
    async fn wait_line(&self, words: &[&str]) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(l) = lock(&self.lines)
                .iter()
                .find(|l| words.iter().all(|w| l.contains(w)))
            {
                return l.clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no log line with {words:?}:\n{}",
                lock(&self.lines).join("\n")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child process.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    async fn stop(mut self) -> Vec<String> {
        self.signal(libc::SIGTERM);
        let status = wait_exit(&mut self.child, Duration::from_secs(20)).await;
        assert_eq!(status.code(), Some(0));
        lock(&self.lines).clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_names_the_keys_that_need_a_restart_and_never_logs_a_password() {
    let provider = MockServer::start().await;
    serve_records(&provider, &items(0..1, 1)).await;
    let rx = start_receiver().await;
    let cfg = Cfg::new(&provider, &rx);
    let env = cfg.env();
    let daemon = Daemon::start(&env);
    daemon.wait_line(&["synthd started"]).await;

    // A broken config with a password in an unparsable URL: refused,
    // logged without the password, the running config kept.
    env.write_config(
        &cfg.render()
            .replace(&cfg.base, "https://user:hunter2-Pass@exa mple.com/v1"),
    );
    daemon.signal(libc::SIGHUP);
    daemon
        .wait_line(&["config reload failed", "providers.p.base_url"])
        .await;

    // Keys a reload cannot apply: named, and the running values kept.
    let moved = env.path().join("elsewhere");
    let text = format!(
        "[daemon]\nstate_dir = {:?}\nlog_format = \"json\"\nmax_concurrent_polls = 3\n{}",
        moved.display().to_string(),
        cfg.render()
    );
    std::fs::write(&env.config, text).unwrap();
    daemon.signal(libc::SIGHUP);
    let line = daemon
        .wait_line(&["only take effect after a restart"])
        .await;
    assert!(
        line.contains("daemon.state_dir") && line.contains("daemon.max_concurrent_polls"),
        "{line}"
    );
    daemon.wait_line(&["config reloaded"]).await;
    let lines = daemon.stop().await;
    assert!(
        !moved.exists(),
        "the state directory moved without a restart"
    );
    for l in &lines {
        assert!(!l.contains("hunter2-Pass") && !l.contains(TOKEN), "{l}");
    }
}

/// Hundreds of hung receivers hold at most one connection each plus a
/// shared pool, and a healthy webhook keeps getting its events meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_webhooks_cannot_starve_a_healthy_one_or_take_unbounded_connections() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use synthd::ingest::AccountFingerprint;
    use synthd::store::Store;

    // A receiver that accepts connections and never answers.
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hung_addr = hung.local_addr().unwrap();
    let open = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    {
        let (open, peak) = (open.clone(), peak.clone());
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = hung.accept().await {
                let now = open.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                let open = open.clone();
                // Read (and never answer) until the client hangs up.
                tokio::spawn(async move {
                    use tokio::io::AsyncReadExt;
                    let mut buf = [0u8; 4096];
                    while matches!(sock.read(&mut buf).await, Ok(n) if n > 0) {}
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
    }
    let rx = start_receiver().await;
    const HUNG: usize = 130;
    let mut text = String::from(
        "[providers.p]\nbase_url = \"http://127.0.0.1:1\"\n[providers.p.resources.items]\npath = \"/items\"\n",
    );
    for a in 0..4 {
        text.push_str(&format!("[[accounts]]\nid = \"a{a}\"\nprovider = \"p\"\n"));
    }
    for h in 0..HUNG {
        text.push_str(&format!(
            "[[webhooks]]\nid = \"hung{h}\"\nurl = \"http://{hung_addr}/h{h}\"\nevents = [\"*\"]\nsecret = \"{SECRET}\"\ntimeout = \"10s\"\n"
        ));
    }
    text.push_str(&format!(
        "[[webhooks]]\nid = \"healthy\"\nurl = \"{}/hook\"\nevents = [\"*\"]\nsecret = \"{SECRET}\"\n",
        rx.base
    ));
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[daemon]\nstate_dir = {:?}\n{text}",
        dir.path().display().to_string()
    );
    let config = Arc::new(synthd::config::from_toml_str(&text, dir.path()).unwrap());
    let store = Store::open_sqlite(dir.path()).unwrap();
    // Four account.created events: four deliveries to every webhook, which
    // the hung ones would all keep open at once without the shared pool.
    let accounts: Vec<AccountFingerprint> = config
        .accounts
        .iter()
        .map(|a| AccountFingerprint {
            id: a.id.clone(),
            provider: a.provider.clone(),
            fingerprint: a.fingerprint(),
        })
        .collect();
    record_accounts(&store, &accounts, &config.webhooks, chrono::Utc::now()).await;
    let deliverer = synthd::deliver::Deliverer::new(store, Arc::new(synthd::clock::SystemClock));
    let pass = tokio::spawn({
        let (deliverer, config) = (deliverer.clone(), config.clone());
        async move { deliverer.deliver_pass(&config).await.unwrap() }
    });
    // The healthy webhook gets all four while the hung ones hang.
    let started = std::time::Instant::now();
    rx.wait_for(4).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let peak = peak.load(Ordering::SeqCst);
    pass.abort();
    let bound = HUNG + synthd::deliver::SHARED_EXTRA_REQUESTS;
    assert!(
        peak <= bound,
        "{peak} connections to hung receivers, bound {bound}"
    );
    assert!(peak > HUNG, "the shared pool was not used at all ({peak})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_answer_while_a_writer_holds_the_database() {
    let provider = MockServer::start().await;
    serve_records(&provider, &items(0..1, 1)).await;
    let rx = start_receiver().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut env = TestEnv::new();
    env.set_var("API_KEY", TOKEN);
    let cfg = Cfg::new(&provider, &rx);
    std::fs::write(
        &env.config,
        format!(
            "{}listen = \"127.0.0.1:{port}\"\n{}",
            env.daemon_table().trim_end().to_string() + "\n",
            cfg.render()
        ),
    )
    .unwrap();
    let daemon = Daemon::start(&env);
    daemon.wait_line(&["poll finished"]).await;

    // Another process holds the write lock (a long commit).
    let holder = env.db();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let started = std::time::Instant::now();
    let health = reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let status = env.synthd(&["status", "--json"]).await;
    status.assert_code(0);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "readers waited {:?}",
        started.elapsed()
    );
    holder.execute_batch("ROLLBACK").unwrap();
    drop(holder);
    daemon.stop().await;
}
