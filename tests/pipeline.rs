//! End-to-end tests of the real `synthd` binary: a wiremock provider and an
//! axum receiver on loopback, `synthd sync` in between, and the SQLite state
//! file inspected afterwards.
//!
//! Covered: the silent baseline and exactly-the-right created / updated /
//! deleted events, each verified with the `standardwebhooks` crate and the
//! hex signature header; no events for key-order, formatting or ignored-field
//! changes; a failed page deleting nothing; a failing receiver leaving the
//! delivery pending for the 5 s retry; every pagination and auth type; root
//! arrays and numeric ids; the mass-deletion guard at its boundaries;
//! `sync --account/--resource`; no secret, token or record value in the
//! database or any output; and `synthd demo`.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use base64::Engine as _;
use common::*;
use serde_json::{Value, json};
use wiremock::matchers::{
    basic_auth, bearer_token, body_string_contains, header, method, path, query_param,
    query_param_is_missing,
};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// The HR provider's bearer token (read from `HR_TOKEN`).
const TOKEN: &str = "tok-Bearer-5150-Xyzzy";
/// The `?token=` of the webhook URL.
const HOOK_TOKEN: &str = "Tok-Query-9931-Plugh";

// ---------------------------------------------------------------------------
// The "hr" provider: page pagination (size 2), bearer auth, records at /data
// ---------------------------------------------------------------------------

fn hr_config(provider: &str, receiver: &str, ignore: &str, account_extra: &str) -> String {
    format!(
        r#"
[providers.hr]
base_url = "{provider}/v1"
auth = {{ type = "bearer", token_env = "HR_TOKEN" }}
pagination = {{ type = "page", page_param = "page", size_param = "per_page", size = 2 }}
records = "/data"
id = "/id"
retry_backoff = "20ms"

[providers.hr.resources.hris_employees]
path = "/employees"
ignore = {ignore}

[[accounts]]
id = "acme"
provider = "hr"
interval = "5m"
{account_extra}

[[webhooks]]
id = "hr-sync"
name = "HR sync"
url = "{receiver}/hook?token={HOOK_TOKEN}"
events = ["hris_employees.*", "account.*"]
secret = "{SECRET}"
"#
    )
}

/// A test environment for the hr provider, with `HR_TOKEN` set.
fn hr_env(server: &MockServer, rx: &Receiver) -> TestEnv {
    let mut env = TestEnv::new();
    env.set_var("HR_TOKEN", TOKEN);
    env.write_config(&hr_config(
        &server.uri(),
        &rx.base,
        r#"["/last_seen_at"]"#,
        "",
    ));
    env
}

/// An employee whose every field value is distinctive, so a leak of any of
/// them into the database or an output can be found by a byte search.
fn employee(id: &str, version: u32) -> Value {
    json!({
        "id": id,
        "name": format!("Zebediah-Quux-7731-{id}-v{version}"),
        "email": format!("zq7731.{id}.v{version}@mail.example"),
        "title": format!("Chief Frobnicator {id} v{version}"),
        "address": {"city": format!("Quuxville-{id}-{version}"), "zip": format!("ZIP-7731-{id}")},
        "salary": 77310 + version,
        "last_seen_at": format!("seen-at-{id}-{version}"),
    })
}

fn page_body(records: &[Value]) -> Value {
    json!({ "data": records, "meta": {"total": records.len()} })
}

/// Serves `bodies[i]` (raw JSON text) as page `i + 1` of /v1/employees, and
/// an empty page after the last, to requests carrying the bearer token.
async fn serve_raw_pages(server: &MockServer, bodies: &[String]) {
    server.reset().await;
    let mut bodies = bodies.to_vec();
    bodies.push(r#"{"data": []}"#.to_string());
    for (i, body) in bodies.iter().enumerate() {
        Mock::given(method("GET"))
            .and(path("/v1/employees"))
            .and(query_param("page", (i + 1).to_string()))
            .and(query_param("per_page", "2"))
            .and(bearer_token(TOKEN))
            .respond_with(ResponseTemplate::new(200).set_body_raw(body.clone(), "application/json"))
            .mount(server)
            .await;
    }
}

/// Serves `records` two per page.
async fn serve(server: &MockServer, records: &[Value]) {
    let bodies: Vec<String> = records
        .chunks(2)
        .map(|c| page_body(c).to_string())
        .collect();
    serve_raw_pages(server, &bodies).await;
}

/// The one poll line of a `sync --json` summary.
fn poll(j: &Value) -> &Value {
    let polls = j["polls"].as_array().expect("polls");
    assert_eq!(polls.len(), 1, "one poll expected: {j}");
    &polls[0]
}

fn counts(p: &Value) -> (u64, u64, u64, u64) {
    (
        p["records"].as_u64().unwrap(),
        p["created"].as_u64().unwrap(),
        p["updated"].as_u64().unwrap(),
        p["deleted"].as_u64().unwrap(),
    )
}

/// A silent baseline of `n` records: flagged as such (the events it would
/// have produced are checked at the receiver).
fn assert_baseline(p: &Value, n: u64) {
    assert_eq!(p["ok"], true, "{p}");
    assert_eq!(p["baseline"], true, "{p}");
    assert_eq!(p["records"], n, "{p}");
    assert_eq!(
        (p["updated"].as_u64(), p["deleted"].as_u64()),
        (Some(0), Some(0)),
        "{p}"
    );
}

fn deliveries(j: &Value) -> (u64, u64, u64, u64) {
    let d = &j["deliveries"];
    (
        d["attempted"].as_u64().unwrap(),
        d["delivered"].as_u64().unwrap(),
        d["retrying"].as_u64().unwrap(),
        d["failed"].as_u64().unwrap(),
    )
}

fn forbidden(served: &[Value], extra: &[&str]) -> Vec<String> {
    let mut f = field_values(served);
    f.extend(extra.iter().map(|s| s.to_string()));
    f
}

fn ids(list: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------------
// 1. Baseline, then exactly the created / updated / deleted events
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_become_exactly_the_right_signed_events() {
    let server = MockServer::start().await;
    let rx = start_receiver().await;
    let env = hr_env(&server, &rx);
    let mut served = Vec::new();

    // First sync: a silent baseline of three records on two pages.
    let v1 = vec![employee("e1", 1), employee("e2", 1), employee("e3", 1)];
    served.extend(v1.clone());
    serve(&server, &v1).await;
    let (out, j) = env.sync(&[]).await;
    out.assert_code(0);
    let p = poll(&j);
    assert_eq!(p["ok"], true, "{j}");
    assert_eq!(p["account"], "acme");
    assert_eq!(p["resource"], "hris_employees");
    assert_baseline(p, 3);
    assert_eq!(p["pages"], 2, "{j}");
    assert_eq!(deliveries(&j), (1, 1, 0, 0), "{j}");

    let first = rx.requests();
    assert_eq!(
        verified_keys(&first, SECRET),
        keys(&[("account.created", "")])
    );
    let body = verify(&first[0], SECRET);
    assert_eq!(
        body["data"],
        json!({"account_id": "acme", "provider": "hr"}),
        "{body}"
    );
    assert_eq!(body["webhook"], json!({"id": "hr-sync", "name": "HR sync"}));
    // The ?token= is sent as configured.
    assert_eq!(first[0].path_and_query, format!("/hook?token={HOOK_TOKEN}"));
    assert_eq!(
        env.tracked("acme", "hris_employees"),
        ids(&["e1", "e2", "e3"])
    );

    // Second sync: e2 changed, e3 gone, e4 new, e1 untouched.
    let v2 = vec![employee("e1", 1), employee("e2", 2), employee("e4", 1)];
    served.extend(v2.clone());
    serve(&server, &v2).await;
    let (out, j) = env.sync(&[]).await;
    out.assert_code(0);
    assert_eq!(counts(poll(&j)), (3, 1, 1, 1), "{j}");
    assert_eq!(poll(&j)["baseline"], false, "{j}");
    assert_eq!(deliveries(&j), (3, 3, 0, 0), "{j}");
    let all = rx.requests();
    assert_eq!(all.len(), 4, "exactly three more requests");
    let second = &all[1..];
    assert_eq!(
        verified_keys(second, SECRET),
        keys(&[
            ("hris_employees.created", "e4"),
            ("hris_employees.deleted", "e3"),
            ("hris_employees.updated", "e2"),
        ])
    );
    for r in second {
        let b = verify(r, SECRET);
        let ty = b["type"].as_str().unwrap();
        let action = ty.strip_prefix("hris_employees.").unwrap();
        let top: BTreeSet<&str> = b.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            top,
            set(&["data", "id", "timestamp", "type", "webhook"]),
            "{b}"
        );
        assert_eq!(
            b["data"],
            json!({
                "account_id": "acme",
                "resource": "hris_employees",
                "action": action,
                "record_id": b["data"]["record_id"],
            }),
            "{b}"
        );
        assert_eq!(b["webhook"], json!({"id": "hr-sync", "name": "HR sync"}));
        let ts = b["timestamp"].as_str().expect("timestamp is a string");
        chrono::DateTime::parse_from_rfc3339(ts).expect("timestamp is RFC 3339");
    }
    let event_ids: BTreeSet<String> = all
        .iter()
        .map(|r| r.headers["webhook-id"].to_str().unwrap().to_string())
        .collect();
    assert_eq!(event_ids.len(), 4, "every event has its own id");
    assert_eq!(
        env.tracked("acme", "hris_employees"),
        ids(&["e1", "e2", "e4"])
    );

    // Third sync, nothing changed: nothing sent.
    let (out, j) = env.sync(&[]).await;
    out.assert_code(0);
    assert_eq!(counts(poll(&j)), (3, 0, 0, 0), "{j}");
    assert_eq!(deliveries(&j), (0, 0, 0, 0), "{j}");
    assert_eq!(rx.count(), 4);

    let status = env.synthd(&["status", "--json"]).await;
    status.assert_code(0);
    let s = status.json();
    assert_eq!(s["polls"][0]["records"], 3, "{s}");
    assert_eq!(
        s["deliveries"],
        json!({"pending": 0, "delivered": 4, "failed": 0, "cancelled": 0})
    );

    env.assert_no_leaks(&forbidden(&served, &[TOKEN, HOOK_TOKEN]));
}

// ---------------------------------------------------------------------------
// 2. Key order, formatting and ignored fields are not changes
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_order_formatting_and_ignored_fields_emit_nothing() {
    let server = MockServer::start().await;
    let rx = start_receiver().await;
    let mut env = TestEnv::new();
    env.set_var("HR_TOKEN", TOKEN);
    env.write_config(&hr_config(
        &server.uri(),
        &rx.base,
        r#"["/last_seen_at", "/meta/etag"]"#,
        "",
    ));

    let baseline = r#"{"data": [
        {"id": "k1", "name": "Zebediah-Quux-7731", "score": 1.5, "city": "Caf\u00e9-Quux",
         "address": {"street": "Quux-Street-1", "zip": "ZIP-7731"}, "tags": ["alpha-7731", "beta-7731"],
         "last_seen_at": "seen-Q-1", "meta": {"etag": "etag-Q-1", "kind": "kind-Q"}},
        {"id": "k2", "name": "Ximena-Quux-7732", "active": true, "count": 10,
         "last_seen_at": "seen-Q-2"}
    ]}"#;
    serve_raw_pages(&server, &[baseline.to_string()]).await;
    let (out, j) = env.sync(&[]).await;
    out.assert_code(0);
    assert_baseline(poll(&j), 2);
    assert_eq!(
        verified_keys(&rx.requests(), SECRET),
        keys(&[("account.created", "")])
    );

    // The same records: keys reordered at every level, no whitespace, the
    // same numbers and strings spelled differently, and only ignored fields
    // changed.
    let reordered = r#"{"meta":{"total":2},"data":[{"tags":["alpha-7731","beta-7731"],"meta":{"kind":"kind-Q","etag":"etag-Q-CHANGED"},"last_seen_at":"seen-Q-1-CHANGED","address":{"zip":"ZIP-7731","street":"Quux-Street-1"},"city":"Café-Quux","score":1.50,"name":"Zebediah-Quux-7731","id":"k1"},{"last_seen_at":"seen-Q-2-CHANGED","count":1e1,"active":true,"name":"Ximena-Quux-7732","id":"k2"}]}"#;
    serve_raw_pages(&server, &[reordered.to_string()]).await;
    let (out, j) = env.sync(&[]).await;
    out.assert_code(0);
    assert_eq!(counts(poll(&j)), (2, 0, 0, 0), "{j}");
    assert_eq!(deliveries(&j), (0, 0, 0, 0), "{j}");
    assert_eq!(rx.count(), 1, "no event for a change of form only");

    // A real change inside a nested object is seen (the test is not vacuous).
    let changed = reordered.replace("Quux-Street-1", "Quux-Street-2");
    serve_raw_pages(&server, &[changed]).await;
    let (out, j) = env.sync(&[]).await;
    out.assert_code(0);
    assert_eq!(counts(poll(&j)), (2, 0, 1, 0), "{j}");
    let reqs = rx.requests();
    assert_eq!(
        verified_keys(&reqs[1..], SECRET),
        keys(&[("hris_employees.updated", "k1")])
    );

    let values: Vec<String> = [
        "Zebediah-Quux-7731",
        "Ximena-Quux-7732",
        "Quux-Street-1",
        "Quux-Street-2",
        "ZIP-7731",
        "alpha-7731",
        "seen-Q-1",
        "etag-Q-1",
        "kind-Q",
        "Café-Quux",
        TOKEN,
        HOOK_TOKEN,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    env.assert_no_leaks(&values);
}

// ---------------------------------------------------------------------------
// 3. A failed page deletes nothing
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_page_deletes_nothing_and_sync_exits_1() {
    let server = MockServer::start().await;
    let rx = start_receiver().await;
    let env = hr_env(&server, &rx);
    let mut served = Vec::new();

    let v1 = vec![employee("f1", 1), employee("f2", 1), employee("f3", 1)];
    served.extend(v1.clone());
    serve(&server, &v1).await;
    env.sync(&[]).await.0.assert_code(0);
    assert_eq!(rx.count(), 1);

    // f3 vanished from page 2, but page 2 keeps failing: nothing may be
    // deleted.
    server.reset().await;
    Mock::given(method("GET"))
        .and(path("/v1/employees"))
        .and(query_param("page", "1"))
        .and(bearer_token(TOKEN))
        .respond_with(ResponseTemplate::new(200).set_body_json(page_body(&v1[..2])))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/employees"))
        .and(query_param("page", "2"))
        .and(bearer_token(TOKEN))
        .respond_with(ResponseTemplate::new(500).set_body_string(format!(
            "internal error while reading {}",
            v1[2]["name"].as_str().unwrap()
        )))
        .mount(&server)
        .await;
    let (out, j) = env.sync(&[]).await;
    out.assert_code(1);
    let p = poll(&j);
    assert_eq!(p["ok"], false, "{j}");
    let err = p["error"].as_str().expect("error message");
    assert!(err.contains("500"), "{err}");
    assert!(
        p.get("deleted").is_none_or(|d| d.as_u64() == Some(0)),
        "{j}"
    );
    assert_eq!(deliveries(&j), (0, 0, 0, 0), "{j}");
    assert_eq!(rx.count(), 1, "no event from a failed scan");
    assert_eq!(
        env.tracked("acme", "hris_employees"),
        ids(&["f1", "f2", "f3"])
    );
    let page2_hits = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.query_pairs().any(|(k, v)| k == "page" && v == "2"))
        .count();
    assert!(
        page2_hits >= 2,
        "a 500 is retried (got {page2_hits} requests)"
    );

    let status = env.synthd(&["status", "--json"]).await;
    status.assert_code(0);
    let s = status.json();
    let row = &s["polls"][0];
    assert_eq!(row["records"], 3, "{s}");
    assert!(
        row["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("500")),
        "{s}"
    );
    assert_eq!(row["consecutive_failures"], 1, "{s}");

    // The next complete scan sees f3 gone.
    serve(&server, &v1[..2]).await;
    let (out, j) = env.sync(&[]).await;
    out.assert_code(0);
    assert_eq!(counts(poll(&j)), (2, 0, 0, 1), "{j}");
    let reqs = rx.requests();
    assert_eq!(
        verified_keys(&reqs[1..], SECRET),
        keys(&[("hris_employees.deleted", "f3")])
    );
    assert_eq!(env.tracked("acme", "hris_employees"), ids(&["f1", "f2"]));

    env.assert_no_leaks(&forbidden(&served, &[TOKEN, HOOK_TOKEN]));
}

// ---------------------------------------------------------------------------
// 4. A failing receiver: pending, retried 5 s later, same event id
// ---------------------------------------------------------------------------

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_leaves_the_delivery_pending_for_5s() {
    let server = MockServer::start().await;
    let rx = start_receiver().await;
    rx.respond_with(500);
    let env = hr_env(&server, &rx);
    let v1 = vec![employee("r1", 1)];
    serve(&server, &v1).await;

    let before = now_ms();
    let (out, j) = env.sync(&[]).await;
    let after = now_ms();
    out.assert_code(0); // the poll succeeded; delivery failures are retried
    assert_eq!(deliveries(&j), (1, 0, 1, 0), "{j}");
    assert_eq!(rx.count(), 1);
    let first = rx.requests()[0].clone();
    verify(&first, SECRET);

    let (id, status, attempts, next_at, last_status): (String, String, i64, i64, Option<i64>) = env
        .db()
        .query_row(
            "SELECT id, status, attempts, next_attempt_at, last_status FROM deliveries",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .unwrap();
    assert_eq!(status, "pending");
    assert_eq!(attempts, 1);
    assert_eq!(last_status, Some(500));
    let started: i64 = env
        .db()
        .query_row(
            "SELECT started_at FROM attempts WHERE delivery_id = ?1",
            [&id],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        (before..=after).contains(&started),
        "attempt time {started} outside the sync ({before}..{after})"
    );
    let delay = next_at - started;
    assert!(
        (4_500..=6_000).contains(&delay),
        "next attempt {delay} ms after the first, want 5 s ± 10 %"
    );

    let s = env.synthd(&["status", "--json"]).await;
    s.assert_code(0);
    assert_eq!(
        s.json()["deliveries"],
        json!({"pending": 1, "delivered": 0, "failed": 0, "cancelled": 0})
    );

    // Not due yet: another sync does not send it.
    let (out, j) = env.sync(&[]).await;
    out.assert_code(0);
    assert_eq!(deliveries(&j), (0, 0, 0, 0), "{j}");
    assert_eq!(rx.count(), 1);

    // Let the 5 s pass (in the database), fix the receiver: the retry goes
    // out with the same event id and body.
    env.db()
        .execute("UPDATE deliveries SET next_attempt_at = ?1", [now_ms() - 1])
        .unwrap();
    rx.respond_with(200);
    let (out, j) = env.sync(&[]).await;
    out.assert_code(0);
    assert_eq!(deliveries(&j), (1, 1, 0, 0), "{j}");
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 2);
    verify(&reqs[1], SECRET);
    assert_eq!(reqs[1].headers["webhook-id"], first.headers["webhook-id"]);
    assert_eq!(reqs[1].body, first.body);
    let (status, attempts): (String, i64) = env
        .db()
        .query_row("SELECT status, attempts FROM deliveries", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((status.as_str(), attempts), ("delivered", 2));

    env.assert_no_leaks(&forbidden(&v1, &[TOKEN, HOOK_TOKEN]));
}

// ---------------------------------------------------------------------------
// The mass-deletion guard and account events
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mass_deletions_are_held_until_a_second_complete_scan_confirms_them() {
    let server = MockServer::start().await;
    let rx = start_receiver().await;
    let env = hr_env(&server, &rx);
    let all: Vec<Value> = (1..=14).map(|i| employee(&format!("g{i:02}"), 1)).collect();
    serve(&server, &all).await;
    env.sync(&[]).await.0.assert_code(0);
    assert_eq!(rx.count(), 1);

    // 12 of 14 vanish (more than half, more than 10): held, not deleted.
    serve(&server, &all[..2]).await;
    let (out, j) = env.sync(&[]).await;
    out.assert_code(0);
    let p = poll(&j);
    assert_eq!(counts(p), (2, 0, 0, 0), "{j}");
    assert_eq!(p["held"], 12, "{j}");
    assert_eq!(rx.count(), 1, "held deletions send nothing");
    assert_eq!(env.tracked("acme", "hris_employees").len(), 14);

    // The next complete scan agrees: now they are deleted.
    let (out, j) = env.sync(&[]).await;
    out.assert_code(0);
    let p = poll(&j);
    assert_eq!(counts(p), (2, 0, 0, 12), "{j}");
    assert_eq!(p["held"], 0, "{j}");
    let want: Vec<(String, String)> = (3..=14)
        .map(|i| ("hris_employees.deleted".to_string(), format!("g{i:02}")))
        .collect();
    assert_eq!(verified_keys(&rx.requests()[1..], SECRET), want);
    assert_eq!(env.tracked("acme", "hris_employees"), ids(&["g01", "g02"]));
    env.assert_no_leaks(&forbidden(&all, &[TOKEN, HOOK_TOKEN]));
}

/// A provider serving `{"id": n}` for each `n` of `ids` (no pagination, a
/// root array), and a config with one account and one webhook.
async fn plain_env(server: &MockServer, rx: &Receiver) -> TestEnv {
    let env = TestEnv::new();
    env.write_config(
        &generic_config(
            &format!(
                "base_url = \"{}/api\"\npagination = {{ type = \"none\" }}\nrecords = \"\"",
                server.uri()
            ),
            "hris_employees",
            "/people",
            &rx.base,
        )
        .replace("emit_initial = true", "emit_initial = false"),
    );
    env
}

async fn serve_ids(server: &MockServer, ids: impl IntoIterator<Item = u32>) {
    server.reset().await;
    let records: Vec<Value> = ids.into_iter().map(|i| json!({ "id": i })).collect();
    Mock::given(method("GET"))
        .and(path("/api/people"))
        .respond_with(ResponseTemplate::new(200).set_body_json(records))
        .mount(server)
        .await;
}

/// Records tracked for the one account/resource, from `status --json`.
async fn tracked(env: &TestEnv) -> u64 {
    let s = env.synthd(&["status", "--json"]).await;
    s.assert_code(0);
    s.json()["polls"][0]["records"].as_u64().unwrap()
}

/// The guard at its boundaries, through the binary: after a baseline of
/// `known` records, a complete scan missing `missing` of them (and adding
/// none) holds the deletions exactly when `missing > 10` and
/// `2 * missing > known`; held deletions go with the next complete scan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mass_deletion_guard_holds_exactly_past_its_boundaries() {
    // (known before the scan, missing from it, held?)
    let cases = [
        (30, 15, false), // exactly half: not more than half
        (30, 16, true),  // half plus one
        (22, 11, false), // exactly half, and more than 10
        (21, 11, true),  // more than half, and more than 10
        (12, 11, true),  // 11 > 10 and more than half
        (12, 10, false), // more than half, but 10 is not more than 10
        (20, 10, false), // neither
    ];
    for (known, missing, held) in cases {
        let what = format!("{missing} of {known} missing");
        let server = MockServer::start().await;
        let rx = start_receiver().await;
        let env = plain_env(&server, &rx).await;
        serve_ids(&server, 1..=known).await;
        let (out, j) = env.sync(&[]).await;
        out.assert_code(0);
        assert_baseline(poll(&j), known as u64);
        let after_baseline = rx.count();

        serve_ids(&server, missing + 1..=known).await;
        let (out, j) = env.sync(&[]).await;
        out.assert_code(0);
        let p = poll(&j);
        let deleted_ids = |from: usize| -> Vec<String> {
            let mut ids: Vec<String> = rx.requests()[from..]
                .iter()
                .map(|r| verify(r, SECRET))
                .filter(|b| b["type"] == "hris_employees.deleted")
                .map(|b| b["data"]["record_id"].as_str().unwrap().to_string())
                .collect();
            ids.sort_by_key(|id| id.parse::<u32>().unwrap());
            ids
        };
        let want: Vec<String> = (1..=missing).map(|i| i.to_string()).collect();
        if held {
            assert_eq!(
                (p["held"].as_u64(), p["deleted"].as_u64()),
                (Some(missing as u64), Some(0)),
                "{what}: {j}"
            );
            assert!(deleted_ids(after_baseline).is_empty(), "{what}");
            assert_eq!(tracked(&env).await, known as u64, "{what}");
            // The next complete scan confirms them.
            let (out, j) = env.sync(&[]).await;
            out.assert_code(0);
            let p = poll(&j);
            assert_eq!(
                (p["held"].as_u64(), p["deleted"].as_u64()),
                (Some(0), Some(missing as u64)),
                "{what}: {j}"
            );
        } else {
            assert_eq!(
                (p["held"].as_u64(), p["deleted"].as_u64()),
                (Some(0), Some(missing as u64)),
                "{what}: {j}"
            );
        }
        assert_eq!(deleted_ids(after_baseline), want, "{what}");
        assert_eq!(tracked(&env).await, (known - missing) as u64, "{what}");
    }
}

/// `sync --account` and `--resource` poll only what they name: the polls
/// reported, the provider's requests (told apart by each account's token)
/// and `status` agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_polls_only_the_account_and_resource_it_is_given() {
    let server = MockServer::start().await;
    let rx = start_receiver().await;
    let env = TestEnv::new();
    env.write_config(&format!(
        r#"
[providers.p]
base_url = "{uri}/v1"
pagination = {{ type = "none" }}
records = ""

[providers.p.resources.hris_employees]
path = "/employees"

[providers.p.resources.ats_jobs]
path = "/jobs"

[[accounts]]
id = "acme"
provider = "p"
auth = {{ type = "bearer", token = "tok-acme-1" }}

[[accounts]]
id = "globex"
provider = "p"
auth = {{ type = "bearer", token = "tok-globex-2" }}

[[webhooks]]
id = "all"
url = "{rx}/in"
events = ["*"]
secret = "{SECRET}"
"#,
        uri = server.uri(),
        rx = rx.base
    ));
    for p in ["/v1/employees", "/v1/jobs"] {
        Mock::given(method("GET"))
            .and(path(p))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!([{"id": 1}])))
            .mount(&server)
            .await;
    }
    let pairs = |list: Vec<(&str, &str)>| -> BTreeSet<(String, String)> {
        list.into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    let mut seen = 0;
    for (args, polled, requested) in [
        (
            vec!["--account", "globex"],
            vec![("globex", "ats_jobs"), ("globex", "hris_employees")],
            vec![
                ("tok-globex-2", "/v1/jobs"),
                ("tok-globex-2", "/v1/employees"),
            ],
        ),
        (
            vec!["--resource", "ats_jobs"],
            vec![("acme", "ats_jobs"), ("globex", "ats_jobs")],
            vec![("tok-acme-1", "/v1/jobs"), ("tok-globex-2", "/v1/jobs")],
        ),
        (
            vec!["--account", "acme", "--resource", "hris_employees"],
            vec![("acme", "hris_employees")],
            vec![("tok-acme-1", "/v1/employees")],
        ),
    ] {
        let (out, j) = env.sync(&args).await;
        out.assert_code(0);
        let got: BTreeSet<(String, String)> = j["polls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                assert_eq!(p["ok"], true, "{p}");
                (
                    p["account"].as_str().unwrap().to_string(),
                    p["resource"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(got, pairs(polled), "{args:?}");
        let reqs = server.received_requests().await.unwrap();
        let got: BTreeSet<(String, String)> = reqs[seen..]
            .iter()
            .map(|r| {
                let auth = r.headers["authorization"].to_str().unwrap();
                (
                    auth.trim_start_matches("Bearer ").to_string(),
                    r.url.path().to_string(),
                )
            })
            .collect();
        assert_eq!(got, pairs(requested), "{args:?}");
        assert_eq!(reqs.len() - seen, got.len(), "{args:?}: one request each");
        seen = reqs.len();
    }
    // status: the first sync polled globex only; by now all four pairs.
    let s = env.synthd(&["status", "--json"]).await;
    s.assert_code(0);
    let rows = s.json()["polls"].as_array().unwrap().len();
    assert_eq!(rows, 4);

    for (args, says) in [
        (vec!["sync", "--account", "nope"], "--account \"nope\""),
        (vec!["sync", "--resource", "nope"], "--resource \"nope\""),
    ] {
        let out = env.synthd(&args).await;
        out.assert_code(2);
        assert!(out.stderr.contains(says), "{}", out.stderr);
    }
    env.assert_no_leaks(&["tok-acme-1".into(), "tok-globex-2".into()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_events_follow_the_config() {
    let server = MockServer::start().await;
    let rx = start_receiver().await;
    let mut env = hr_env(&server, &rx);
    let v1 = vec![employee("h1", 1)];
    serve(&server, &v1).await;
    env.sync(&[]).await.0.assert_code(0);
    env.sync(&[]).await.0.assert_code(0);
    assert_eq!(
        verified_keys(&rx.requests(), SECRET),
        keys(&[("account.created", "")]),
        "account.created once, not on every sync"
    );

    // New credentials: account.updated (the provider accepts any token).
    env.vars.retain(|(k, _)| k != "HR_TOKEN");
    env.set_var("HR_TOKEN", "tok-Rotated-0042");
    server.reset().await;
    Mock::given(method("GET"))
        .and(path("/v1/employees"))
        .and(bearer_token("tok-Rotated-0042"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page_body(&v1)))
        .mount(&server)
        .await;
    env.sync(&[]).await.0.assert_code(0);
    assert_eq!(
        verified_keys(&rx.requests()[1..], SECRET),
        keys(&[("account.updated", "")])
    );
    assert_eq!(
        verify(&rx.requests()[1], SECRET)["data"],
        json!({"account_id": "acme", "provider": "hr"})
    );

    // acme leaves the config, globex joins: account.deleted and
    // account.created, and acme's hashes are gone.
    let cfg = hr_config(&server.uri(), &rx.base, r#"["/last_seen_at"]"#, "")
        .replace("id = \"acme\"", "id = \"globex\"");
    env.write_config(&cfg);
    let (out, _) = env.sync(&[]).await;
    out.assert_code(0);
    let last = &rx.requests()[2..];
    let got: Vec<(String, String)> = last
        .iter()
        .map(|r| {
            let b = verify(r, SECRET);
            (
                b["type"].as_str().unwrap().to_string(),
                b["data"]["account_id"].as_str().unwrap().to_string(),
            )
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(
        got,
        vec![
            ("account.created".to_string(), "globex".to_string()),
            ("account.deleted".to_string(), "acme".to_string()),
        ]
    );
    assert_eq!(last.len(), 2);
    assert!(env.tracked("acme", "hris_employees").is_empty());
    assert_eq!(env.tracked("globex", "hris_employees"), ids(&["h1"]));
    env.assert_no_leaks(&forbidden(&v1, &[TOKEN, HOOK_TOKEN, "tok-Rotated-0042"]));
}

// ---------------------------------------------------------------------------
// 5 & 6. Every pagination type and every auth type; root arrays, numeric ids
// ---------------------------------------------------------------------------

/// A config with one provider `p` (the given lines), one resource, one
/// account `t1` emitting its initial records, and a webhook for everything.
fn generic_config(provider_lines: &str, resource: &str, res_path: &str, receiver: &str) -> String {
    format!(
        r#"
[providers.p]
{provider_lines}

[providers.p.resources.{resource}]
path = "{res_path}"

[[accounts]]
id = "t1"
provider = "p"
emit_initial = true

[[webhooks]]
id = "all"
url = "{receiver}/in"
events = ["*"]
secret = "{SECRET}"
"#
    )
}

fn item(id: &str) -> Value {
    json!({"id": id, "label": format!("Label-Quux-7731-{id}")})
}

/// Syncs once and checks that exactly `expected` were tracked and announced
/// (emit_initial), in `pages` pages.
async fn sync_and_expect(
    env: &TestEnv,
    rx: &Receiver,
    resource: &str,
    expected: &[&str],
    pages: u64,
) {
    let (out, j) = env.sync(&[]).await;
    out.assert_code(0);
    let p = poll(&j);
    assert_eq!(p["ok"], true, "{j}");
    assert_eq!(
        counts(p),
        (expected.len() as u64, expected.len() as u64, 0, 0),
        "{j}"
    );
    assert_eq!(p["pages"], pages, "{j}");
    assert_eq!(env.tracked("t1", resource), ids(expected));
    let mut want: Vec<(String, String)> = expected
        .iter()
        .map(|id| (format!("{resource}.created"), id.to_string()))
        .collect();
    want.push(("account.created".into(), String::new()));
    want.sort();
    assert_eq!(verified_keys(&rx.requests(), SECRET), want);
}

/// Every request the provider got for `path_str`.
async fn requests_to(server: &MockServer, path_str: &str) -> Vec<wiremock::Request> {
    server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.url.path() == path_str)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_pagination_with_bearer_auth() {
    const T: &str = "tok-Page-Bearer-8841";
    let server = MockServer::start().await;
    let rx = start_receiver().await;
    let env = TestEnv::new();
    env.write_config(&generic_config(
        &format!(
            r#"base_url = "{}/api"
auth = {{ type = "bearer", token = "{T}" }}
pagination = {{ type = "page", page_param = "pg", size_param = "limit", size = 2, first_page = 0 }}
records = "/data""#,
            server.uri()
        ),
        "hris_employees",
        "/people",
        &rx.base,
    ));
    let all: Vec<Value> = ["a", "b", "c", "d", "e"].iter().map(|i| item(i)).collect();
    for (pg, chunk) in all.chunks(2).enumerate() {
        Mock::given(method("GET"))
            .and(path("/api/people"))
            .and(query_param("pg", pg.to_string()))
            .and(query_param("limit", "2"))
            .and(header("authorization", format!("Bearer {T}").as_str()))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "data": chunk })))
            .expect(1)
            .mount(&server)
            .await;
    }
    sync_and_expect(&env, &rx, "hris_employees", &["a", "b", "c", "d", "e"], 3).await;
    let reqs = requests_to(&server, "/api/people").await;
    assert_eq!(reqs.len(), 3, "a short page ends the scan");
    server.verify().await;
    env.assert_no_leaks(&forbidden(&all, &[T]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_pagination_with_basic_auth_from_a_secret_file() {
    const PASSWORD: &str = "pw-Basic-Offset-6620";
    let server = MockServer::start().await;
    let rx = start_receiver().await;
    let env = TestEnv::new();
    // A relative password_file is found next to the config file.
    std::fs::write(env.path().join("p.password"), format!("{PASSWORD}\n")).unwrap();
    env.write_config(&generic_config(
        &format!(
            r#"base_url = "{}/api"
auth = {{ type = "basic", username = "svc-7731", password_file = "p.password" }}
pagination = {{ type = "offset", offset_param = "skip", limit_param = "take", size = 2 }}
records = "/results""#,
            server.uri()
        ),
        "ats_candidates",
        "/candidates",
        &rx.base,
    ));
    let all: Vec<Value> = ["c1", "c2", "c3", "c4"].iter().map(|i| item(i)).collect();
    let pages = [&all[0..2], &all[2..4], &[][..]];
    for (i, chunk) in pages.iter().enumerate() {
        Mock::given(method("GET"))
            .and(path("/api/candidates"))
            .and(query_param("skip", (i * 2).to_string()))
            .and(query_param("take", "2"))
            .and(basic_auth("svc-7731", PASSWORD))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "results": chunk })))
            .expect(1)
            .mount(&server)
            .await;
    }
    sync_and_expect(&env, &rx, "ats_candidates", &["c1", "c2", "c3", "c4"], 3).await;
    let expected_auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("svc-7731:{PASSWORD}"))
    );
    for r in requests_to(&server, "/api/candidates").await {
        assert_eq!(r.headers["authorization"], expected_auth.as_str());
    }
    server.verify().await;
    env.assert_no_leaks(&forbidden(&all, &[PASSWORD]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_pagination_with_header_auth_static_query_and_headers() {
    const KEY: &str = "key-Header-Cursor-3301";
    let server = MockServer::start().await;
    let rx = start_receiver().await;
    let mut env = TestEnv::new();
    env.set_var("P_API_KEY", KEY);
    env.write_config(&generic_config(
        &format!(
            r#"base_url = "{}/api"
auth = {{ type = "header", name = "X-Api-Key", value_env = "P_API_KEY" }}
pagination = {{ type = "cursor", cursor_param = "after", next = "/meta/next_cursor" }}
records = "/data"
query = {{ include_deleted = "false" }}
headers = {{ "Accept-Language" = "en" }}"#,
            server.uri()
        ),
        "hris_employments",
        "/employments",
        &rx.base,
    ));
    let all: Vec<Value> = ["m1", "m2", "m3", "m4"].iter().map(|i| item(i)).collect();
    let base = || {
        Mock::given(method("GET"))
            .and(path("/api/employments"))
            .and(header("x-api-key", KEY))
            .and(header("accept-language", "en"))
            .and(query_param("include_deleted", "false"))
    };
    base()
        .and(query_param_is_missing("after"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"data": &all[0..2], "meta": {"next_cursor": "cur-2"}})),
        )
        .expect(1)
        .mount(&server)
        .await;
    // A numeric cursor is used as its decimal text.
    base()
        .and(query_param("after", "cur-2"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"data": &all[2..3], "meta": {"next_cursor": 17}})),
        )
        .expect(1)
        .mount(&server)
        .await;
    base()
        .and(query_param("after", "17"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"data": &all[3..4], "meta": {"next_cursor": null}})),
        )
        .expect(1)
        .mount(&server)
        .await;
    sync_and_expect(&env, &rx, "hris_employments", &["m1", "m2", "m3", "m4"], 3).await;
    server.verify().await;
    env.assert_no_leaks(&forbidden(&all, &[KEY]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_header_pagination_with_query_auth() {
    const KEY: &str = "key-Query-Link-2207";
    let server = MockServer::start().await;
    let rx = start_receiver().await;
    let env = TestEnv::new();
    env.write_config(&generic_config(
        &format!(
            r#"base_url = "{}/api"
auth = {{ type = "query", name = "api_key", value = "{KEY}" }}
pagination = {{ type = "link" }}
records = "/jobs""#,
            server.uri()
        ),
        "ats_jobs",
        "/jobs",
        &rx.base,
    ));
    let all: Vec<Value> = ["j1", "j2", "j3", "j4", "j5"]
        .iter()
        .map(|i| item(i))
        .collect();
    let uri = server.uri();
    let base = || {
        Mock::given(method("GET"))
            .and(path("/api/jobs"))
            .and(query_param("api_key", KEY))
    };
    // An absolute next link, then a relative one beside a prev link.
    base()
        .and(query_param_is_missing("page"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header(
                    "link",
                    format!("<{uri}/api/jobs?page=2>; rel=\"next\"").as_str(),
                )
                .set_body_json(json!({"jobs": &all[0..2]})),
        )
        .expect(1)
        .mount(&server)
        .await;
    base()
        .and(query_param("page", "2"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header(
                    "link",
                    "</api/jobs?page=1>; rel=\"prev\", </api/jobs?page=3>; rel=\"next\"",
                )
                .set_body_json(json!({"jobs": &all[2..4]})),
        )
        .expect(1)
        .mount(&server)
        .await;
    base()
        .and(query_param("page", "3"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("link", "</api/jobs?page=2>; rel=\"prev\"")
                .set_body_json(json!({"jobs": &all[4..5]})),
        )
        .expect(1)
        .mount(&server)
        .await;
    sync_and_expect(&env, &rx, "ats_jobs", &["j1", "j2", "j3", "j4", "j5"], 3).await;
    for r in requests_to(&server, "/api/jobs").await {
        let n = r.url.query_pairs().filter(|(k, _)| k == "api_key").count();
        assert_eq!(n, 1, "the api_key is sent once on every page: {}", r.url);
    }
    server.verify().await;
    env.assert_no_leaks(&forbidden(&all, &[KEY]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_url_pagination_with_oauth2_client_credentials() {
    const CLIENT_SECRET: &str = "cs-OAuth-Secret-5518";
    const ACCESS: &str = "at-OAuth-Access-9090";
    let server = MockServer::start().await;
    let rx = start_receiver().await;
    let mut env = TestEnv::new();
    env.set_var("P_CLIENT_SECRET", CLIENT_SECRET);
    env.write_config(&generic_config(
        &format!(
            r#"base_url = "{uri}/api"
auth = {{ type = "oauth2", token_url = "{uri}/oauth/token", client_id = "synthd-client", client_secret_env = "P_CLIENT_SECRET", scope = "tickets.read" }}
pagination = {{ type = "next_url", next = "/links/next" }}
records = "/items""#,
            uri = server.uri()
        ),
        "crm_tickets",
        "/tickets",
        &rx.base,
    ));
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .and(body_string_contains("grant_type=client_credentials"))
        .and(body_string_contains("client_id=synthd-client"))
        .and(body_string_contains(format!(
            "client_secret={CLIENT_SECRET}"
        )))
        .and(body_string_contains("scope=tickets.read"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"access_token": ACCESS, "token_type": "Bearer", "expires_in": 3600}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let all: Vec<Value> = ["t1", "t2", "t3"].iter().map(|i| item(i)).collect();
    let base = || {
        Mock::given(method("GET"))
            .and(path("/api/tickets"))
            .and(bearer_token(ACCESS))
    };
    base()
        .and(query_param_is_missing("after"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"items": &all[0..2], "links": {"next": "/api/tickets?after=t2"}}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    base()
        .and(query_param("after", "t2"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"items": &all[2..3], "links": {"next": null}})),
        )
        .expect(1)
        .mount(&server)
        .await;
    sync_and_expect(&env, &rx, "crm_tickets", &["t1", "t2", "t3"], 2).await;
    server.verify().await;
    env.assert_no_leaks(&forbidden(&all, &[CLIENT_SECRET, ACCESS]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_pagination_root_array_and_numeric_ids() {
    const T: &str = "tok-None-Root-4471";
    let server = MockServer::start().await;
    let rx = start_receiver().await;
    let mut env = TestEnv::new();
    env.set_var("P_TOKEN", T);
    // emit_initial is off here: a baseline, then changes.
    env.write_config(
        &generic_config(
            &format!(
                r#"base_url = "{}/api"
auth = {{ type = "bearer", token_env = "P_TOKEN" }}
pagination = {{ type = "none" }}
records = ""
id = "/id""#,
                server.uri()
            ),
            "hris_groups",
            "/groups",
            &rx.base,
        )
        .replace("emit_initial = true", "emit_initial = false"),
    );
    let big: u64 = 12_345_678_901_234_567; // beyond 2^53: kept exact
    let rec = |id: u64, v: u32| json!({"id": id, "name": format!("Group-Quux-7731-{id}-v{v}")});
    let mount = |records: Vec<Value>| {
        let server = &server;
        async move {
            server.reset().await;
            Mock::given(method("GET"))
                .and(path("/api/groups"))
                .and(bearer_token(T))
                .respond_with(ResponseTemplate::new(200).set_body_json(Value::Array(records)))
                .expect(1)
                .mount(server)
                .await;
        }
    };
    let v1 = vec![rec(7, 1), rec(42, 1), rec(big, 1)];
    mount(v1.clone()).await;
    let (out, j) = env.sync(&[]).await;
    out.assert_code(0);
    assert_baseline(poll(&j), 3);
    assert_eq!(poll(&j)["pages"], 1);
    assert_eq!(
        env.tracked("t1", "hris_groups"),
        ids(&["7", "42", "12345678901234567"])
    );
    server.verify().await;

    let v2 = vec![rec(42, 2), rec(big, 1), rec(1001, 1)];
    mount(v2.clone()).await;
    let (out, j) = env.sync(&[]).await;
    out.assert_code(0);
    assert_eq!(counts(poll(&j)), (3, 1, 1, 1), "{j}");
    let reqs = rx.requests();
    assert_eq!(
        verified_keys(&reqs, SECRET),
        keys(&[
            ("account.created", ""),
            ("hris_groups.created", "1001"),
            ("hris_groups.deleted", "7"),
            ("hris_groups.updated", "42"),
        ])
    );
    // The id is a JSON string in the event, not a number.
    for r in &reqs[1..] {
        assert!(verify(r, SECRET)["data"]["record_id"].is_string());
    }
    assert_eq!(
        env.tracked("t1", "hris_groups"),
        ids(&["42", "1001", "12345678901234567"])
    );
    server.verify().await;
    let mut served = v1;
    served.extend(v2);
    env.assert_no_leaks(&forbidden(&served, &[T]));
}

// ---------------------------------------------------------------------------
// 8. Nothing secret in the database or any output, even on failures
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_token_or_record_value_reaches_the_database_or_any_output() {
    const QUERY_KEY: &str = "key-Globex-Query-6194";
    let server = MockServer::start().await;
    let rx = start_receiver().await;
    let mut env = TestEnv::new();
    env.set_var("HR_TOKEN", TOKEN);
    // A second account with its own credentials: a ?api_key= query value.
    let account2 = format!(
        r#"
[[accounts]]
id = "globex"
provider = "hr"
auth = {{ type = "query", name = "api_key", value = "{QUERY_KEY}" }}
"#
    );
    env.write_config(&format!(
        "{}{account2}",
        hr_config(&server.uri(), &rx.base, r#"["/last_seen_at"]"#, "")
    ));
    let mut served = Vec::new();

    // Both accounts see the same records; the receiver fails at first, so
    // attempts with errors and response bodies are logged.
    let mount = |records: Vec<Value>, fail_with: Option<u16>| {
        let server = &server;
        async move {
            server.reset().await;
            let bodies: Vec<Value> = records.chunks(2).map(page_body).collect();
            for (i, body) in bodies.iter().chain([&json!({"data": []})]).enumerate() {
                let page = (i + 1).to_string();
                Mock::given(method("GET"))
                    .and(path("/v1/employees"))
                    .and(query_param("page", page.as_str()))
                    .and(bearer_token(TOKEN))
                    .respond_with(ResponseTemplate::new(200).set_body_json(body))
                    .mount(server)
                    .await;
                // globex: the same data, or a failure whose body echoes a
                // record value and the credential.
                let resp = match fail_with {
                    None => ResponseTemplate::new(200).set_body_json(body),
                    Some(code) => ResponseTemplate::new(code)
                        .set_body_string(format!("error for api_key={QUERY_KEY}: {body}")),
                };
                Mock::given(method("GET"))
                    .and(path("/v1/employees"))
                    .and(query_param("page", page.as_str()))
                    .and(query_param("api_key", QUERY_KEY))
                    .respond_with(resp)
                    .mount(server)
                    .await;
            }
        }
    };

    let v1 = vec![employee("s1", 1), employee("s2", 1), employee("s3", 1)];
    served.extend(v1.clone());
    mount(v1.clone(), None).await;
    rx.respond_with(500);
    let (out, j) = env.sync(&[]).await;
    out.assert_code(0);
    assert_eq!(j["polls"].as_array().unwrap().len(), 2, "{j}");
    assert_eq!(deliveries(&j), (2, 0, 2, 0), "{j}");
    assert_eq!(
        env.tracked("globex", "hris_employees"),
        ids(&["s1", "s2", "s3"])
    );

    // Changes, while globex's provider fails with a revealing body and the
    // receiver is back.
    env.db()
        .execute("UPDATE deliveries SET next_attempt_at = ?1", [now_ms() - 1])
        .unwrap();
    rx.respond_with(200);
    let v2 = vec![employee("s1", 2), employee("s3", 1), employee("s4", 1)];
    served.extend(v2.clone());
    mount(v2.clone(), Some(400)).await;
    let (out, j) = env.sync(&[]).await;
    out.assert_code(1);
    let globex = j["polls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["account"] == "globex")
        .unwrap()
        .clone();
    assert_eq!(globex["ok"], false, "{j}");
    assert!(globex["error"].as_str().unwrap().contains("400"), "{j}");
    // 2 account.created retried + created s4, updated s1, deleted s2 for acme.
    assert_eq!(deliveries(&j), (5, 5, 0, 0), "{j}");
    let last: Vec<_> = rx.requests().into_iter().skip(2).collect();
    let got = verified_keys(&last, SECRET);
    assert_eq!(
        got,
        keys(&[
            ("account.created", ""),
            ("account.created", ""),
            ("hris_employees.created", "s4"),
            ("hris_employees.deleted", "s2"),
            ("hris_employees.updated", "s1"),
        ])
    );

    // The human-readable outputs too.
    env.synthd(&["sync"]).await;
    env.synthd(&["status"]).await.assert_code(0);
    env.synthd(&["status", "--json"]).await.assert_code(0);
    env.synthd(&["check"]).await.assert_code(0);
    let list = env.synthd(&["deliveries", "--json"]).await;
    list.assert_code(0);
    env.synthd(&["deliveries"]).await.assert_code(0);
    let rows = list.json();
    let first_id = rows[0]["id"].as_str().expect("a delivery id").to_string();
    env.synthd(&["deliveries", "show", &first_id])
        .await
        .assert_code(0);
    env.synthd(&["deliveries", "show", &first_id, "--json"])
        .await
        .assert_code(0);
    let check = env
        .outputs()
        .into_iter()
        .find(|o| o.stdout.contains("webhooks:"))
        .expect("check output");
    assert!(check.stdout.contains("token=***"), "{}", check.stdout);

    env.assert_no_leaks(&forbidden(&served, &[TOKEN, HOOK_TOKEN, QUERY_KEY]));
}

// ---------------------------------------------------------------------------
// 9. The demo
// ---------------------------------------------------------------------------

/// `synthd demo` until its receiver has verified at least three events of
/// at least two types (polling every second; Ctrl-C then stops it), and
/// `demo --for` stopping by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_and_every_event_verifies() {
    use std::io::BufRead;
    let mut cmd = std::process::Command::new(synthd_bin());
    cmd.args(["demo", "--interval", "1s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    clean_env(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    let lines: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let (stdout, sink) = (child.stdout.take().unwrap(), lines.clone());
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            lock(&sink).push(line);
        }
    });
    // "receiver: verified <type> …" per event, as the demo prints them.
    let verified = |lines: &[String]| -> Vec<String> {
        lines
            .iter()
            .filter_map(|l| l.strip_prefix("receiver: verified "))
            .map(|rest| rest.split_whitespace().next().unwrap().to_string())
            .collect()
    };
    wait_until("three events of two types", Duration::from_secs(45), || {
        let types = verified(&lock(&lines));
        types.len() >= 3 && set(&types).len() >= 2
    })
    .await;
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let status = wait_exit(&mut child, Duration::from_secs(20)).await;
    reader.join().unwrap();
    let lines = lock(&lines).clone();
    let all = lines.join("\n");
    assert_eq!(status.code(), Some(0), "{all}");
    let types = verified(&lines);
    let last = lines.last().expect("output");
    let n: usize = last
        .strip_prefix("demo finished: ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no closing line: {all}"));
    assert!(n >= 3, "{all}");
    assert_eq!(n, types.len(), "every event received is printed: {all}");
    assert!(set(&types).len() >= 2, "{types:?}");
    assert!(
        types
            .iter()
            .all(|t| t == "account.created" || t.starts_with("hris_employees.")),
        "{types:?}"
    );
    assert!(last.ends_with(" 0 rejected"), "{all}");
    assert!(!all.contains("REJECTED"), "{all}");

    // --for: it stops by itself.
    let mut cmd = std::process::Command::new(synthd_bin());
    cmd.args(["demo", "--for", "1s"]);
    clean_env(&mut cmd);
    let out = run_with_deadline(cmd, Duration::from_secs(30)).await;
    out.assert_code(0);
    assert!(out.stdout.contains("demo finished: "), "{}", out.stdout);
}
