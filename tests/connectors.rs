//! Provider connectors against real local HTTP servers: every auth and
//! pagination style, OAuth2 token handling, retries and `Retry-After`, the
//! shared rate limit, hostile responses and incremental polls. Each test is
//! named after the failure mode it proves; none of them lets a failure turn
//! into a deletion.

use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use synthd::clock::ManualClock;
use synthd::config::{self, Config};
use synthd::detect::Hasher;
use synthd::poll::{self, PollContext, PollError, PollSummary};
use synthd::provider::{FetchError, Pager, ProviderClient};
use synthd::store::Store;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use wiremock::matchers::{
    body_string_contains, header, method, path, query_param, query_param_is_missing,
};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

/// A validated config, a store in a temp dir, a provider client and a clock
/// the test moves.
struct Harness {
    dir: TempDir,
    ctx: PollContext,
    clock: ManualClock,
    config: Arc<Config>,
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn harness(toml: &str) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let config = config::from_toml_str(toml, dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let clock = ManualClock::new(at("2026-11-23T10:00:00Z"));
    let ctx = PollContext {
        store: Store::open_sqlite(dir.path()).unwrap(),
        client: ProviderClient::new(),
        hasher: Hasher::new(None),
        clock: Arc::new(clock.clone()),
        events_queued: Default::default(),
    };
    Harness {
        dir,
        ctx,
        clock,
        config: Arc::new(config),
    }
}

impl Harness {
    fn account(&self, id: &str) -> &synthd::config::Account {
        self.config.accounts.iter().find(|a| a.id == id).unwrap()
    }

    /// One poll of the account's first resource, through the store.
    async fn poll(&self, account: &str) -> Result<PollSummary, PollError> {
        let account = self.account(account);
        let provider = self.config.provider(&account.provider);
        let resource = &provider.resources[&account.resources[0]];
        poll::poll_resource(
            &self.ctx,
            &self.config,
            account,
            resource,
            poll::PollMode::default(),
        )
        .await
    }

    /// Every record of the account's first resource, straight from the pager.
    async fn fetch(&self, account: &str) -> Result<Vec<Value>, FetchError> {
        let account = self.account(account);
        let provider = self.config.provider(&account.provider);
        let resource = &provider.resources[&account.resources[0]];
        let mut pager = Pager::new(&self.ctx.client, account, provider, resource, None);
        let mut all = Vec::new();
        while let Some(page) = pager.next_page().await? {
            all.extend(
                page.records()
                    .map(|r| serde_json::from_str::<Value>(r).unwrap()),
            );
        }
        Ok(all)
    }

    /// Records tracked and the last error of the account's poll state.
    async fn state(&self, account: &str) -> (u64, Option<String>) {
        let s = self.ctx.store.poll_status().await.unwrap();
        let s = s.iter().find(|s| s.account_id == account).unwrap();
        (s.records, s.last_error.clone())
    }

    /// `(type, record_id)` of every event, oldest first.
    fn events(&self) -> Vec<(String, String)> {
        let db = rusqlite::Connection::open(self.dir.path().join("synthd.db")).unwrap();
        let mut st = db
            .prepare("SELECT type, COALESCE(record_id, '') FROM events ORDER BY seq")
            .unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn deleted_events(&self) -> usize {
        self.events()
            .iter()
            .filter(|(t, _)| t.ends_with(".deleted"))
            .count()
    }
}

/// Provider `p` with resource `hris_employees` at `{uri}/v1/employees` and
/// account `acme`; `provider` and `resource` add keys to those tables.
/// Retries back off 5 ms so tests do not wait.
fn one_resource(uri: &str, provider: &str, resource: &str) -> String {
    format!(
        r#"
[providers.p]
base_url = "{uri}/v1"
retry_backoff = "5ms"
{provider}
[providers.p.resources.hris_employees]
path = "/employees"
{resource}
[[accounts]]
id = "acme"
provider = "p"
"#
    )
}

fn people(ids: impl IntoIterator<Item = u32>) -> Value {
    ids.into_iter()
        .map(|i| json!({"id": i, "name": format!("person {i}")}))
        .collect()
}

fn ids(records: &[Value]) -> Vec<String> {
    records.iter().map(|r| r["id"].to_string()).collect()
}

fn ok_json(body: Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(body)
}

async fn requests(server: &MockServer) -> Vec<Request> {
    server.received_requests().await.unwrap()
}

fn err_text(r: Result<PollSummary, PollError>) -> String {
    match r {
        Ok(s) => panic!("expected the poll to fail, got {s:?}"),
        Err(e) => e.to_string(),
    }
}

// ---------------------------------------------------------------------------
// Auth
// ---------------------------------------------------------------------------

#[tokio::test]
async fn each_auth_style_sends_its_credentials_and_accounts_override_the_provider() {
    let server = MockServer::start().await;
    let uri = server.uri();
    let toml = format!(
        r#"
[providers.p]
base_url = "{uri}/provider"
auth = {{ type = "bearer", token = "provider-token" }}
[providers.p.resources.hris_employees]
path = "/employees"

[[accounts]]
id = "inherits"
provider = "p"
[[accounts]]
id = "basic"
provider = "p"
base_url = "{uri}/basic"
auth = {{ type = "basic", username = "svc", password = "pw" }}
[[accounts]]
id = "header"
provider = "p"
base_url = "{uri}/header"
auth = {{ type = "header", name = "X-Api-Key", value = "key-123" }}
[[accounts]]
id = "query"
provider = "p"
base_url = "{uri}/query"
auth = {{ type = "query", name = "api_key", value = "q-secret" }}
[[accounts]]
id = "anonymous"
provider = "p"
base_url = "{uri}/anonymous"
auth = {{ type = "none" }}
"#
    );
    let mounts = [
        (
            "/provider/employees",
            Mock::given(header("authorization", "Bearer provider-token")),
        ),
        (
            "/basic/employees",
            // base64("svc:pw")
            Mock::given(header("authorization", "Basic c3ZjOnB3")),
        ),
        (
            "/header/employees",
            Mock::given(header("x-api-key", "key-123")),
        ),
        (
            "/query/employees",
            Mock::given(query_param("api_key", "q-secret")),
        ),
        (
            "/anonymous/employees",
            Mock::given(|r: &Request| !r.headers.contains_key("authorization")),
        ),
    ];
    for (p, mock) in mounts {
        mock.and(method("GET"))
            .and(path(p))
            .respond_with(ok_json(people([1])))
            .mount(&server)
            .await;
    }
    let h = harness(&toml);
    for account in ["inherits", "basic", "header", "query", "anonymous"] {
        let got = h
            .fetch(account)
            .await
            .unwrap_or_else(|e| panic!("{account}: {e}"));
        assert_eq!(ids(&got), ["1"], "{account}");
    }
    for r in requests(&server).await {
        if r.url.path().starts_with("/basic") {
            assert!(!r.headers.contains_key("x-api-key"));
            assert_eq!(
                r.headers["authorization"], "Basic c3ZjOnB3",
                "the account's auth replaces the provider's"
            );
        }
    }

    // A failing request shows the URL with the query credential masked.
    server.reset().await;
    let err = h.fetch("query").await.unwrap_err().to_string();
    assert!(err.contains("HTTP 404"), "{err}");
    assert!(err.contains("api_key=***"), "{err}");
    assert!(!err.contains("q-secret"), "{err}");
}

fn oauth_config(uri: &str, auth_extra: &str) -> String {
    one_resource(
        uri,
        &format!(
            r#"auth = {{ type = "oauth2", token_url = "{uri}/oauth/token", client_id = "synthd", client_secret = "s3cret-value", scope = "employees:read"{auth_extra} }}
pagination = {{ type = "page", size = 1 }}"#
        ),
        "",
    )
}

async fn token_requests(server: &MockServer) -> usize {
    requests(server)
        .await
        .iter()
        .filter(|r| r.url.path() == "/oauth/token")
        .count()
}

/// `/v1/employees` as two pages of one record and an empty third, for a
/// request bearing `token`.
async fn mount_pages_for_token(server: &MockServer, token: &str) {
    for (page, body) in [("1", people([1])), ("2", people([2])), ("3", people([]))] {
        Mock::given(path("/v1/employees"))
            .and(query_param("page", page))
            .and(header("authorization", format!("Bearer {token}").as_str()))
            .respond_with(ok_json(body))
            .mount(server)
            .await;
    }
}

#[tokio::test]
async fn oauth2_token_is_fetched_once_cached_and_refreshed_once_on_401() {
    let server = MockServer::start().await;
    let token =
        |t: &str| ok_json(json!({"access_token": t, "token_type": "Bearer", "expires_in": 3600}));
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .and(body_string_contains("grant_type=client_credentials"))
        .and(body_string_contains("client_id=synthd"))
        .and(body_string_contains("client_secret=s3cret-value"))
        .and(body_string_contains("scope=employees%3Aread"))
        .respond_with(token("tok-1"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(token("tok-2"))
        .mount(&server)
        .await;
    mount_pages_for_token(&server, "tok-1").await;
    let h = harness(&oauth_config(&server.uri(), ""));

    // Three pages and a second poll: one token request.
    assert_eq!(h.poll("acme").await.unwrap().records, 2);
    assert_eq!(h.poll("acme").await.unwrap().records, 2);
    assert_eq!(token_requests(&server).await, 1, "the token is cached");

    // The provider revokes tok-1: one 401, one new token, the poll succeeds.
    server.reset().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(token("tok-2"))
        .mount(&server)
        .await;
    Mock::given(header("authorization", "Bearer tok-1"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&server)
        .await;
    mount_pages_for_token(&server, "tok-2").await;
    assert_eq!(h.poll("acme").await.unwrap().records, 2);
    assert_eq!(token_requests(&server).await, 1, "refreshed once");
    let unauthorized = requests(&server)
        .await
        .iter()
        .filter(|r| {
            r.headers
                .get("authorization")
                .is_some_and(|v| v == "Bearer tok-1")
        })
        .count();
    assert_eq!(unauthorized, 1);

    // A provider that refuses every token: one refresh, then a clear error.
    server.reset().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(token("tok-3"))
        .mount(&server)
        .await;
    Mock::given(path("/v1/employees"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&server)
        .await;
    let err = err_text(h.poll("acme").await);
    assert!(
        err.contains("HTTP 401 (check the account's credentials)"),
        "{err}"
    );
    assert_eq!(token_requests(&server).await, 1, "no refresh loop");
    assert_eq!(requests(&server).await.len(), 3, "401, token, 401");
    for secret in ["s3cret-value", "tok-2", "tok-3"] {
        assert!(!err.contains(secret), "{err}");
    }
    assert_eq!(h.deleted_events(), 0);
}

#[tokio::test]
async fn oauth2_token_is_fetched_again_when_it_expires_and_basic_client_auth_works() {
    let server = MockServer::start().await;
    // base64("synthd:s3cret-value")
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .and(header(
            "authorization",
            "Basic c3ludGhkOnMzY3JldC12YWx1ZQ==",
        ))
        .and(|r: &Request| !String::from_utf8_lossy(&r.body).contains("s3cret"))
        .respond_with(ok_json(json!({"access_token": "short", "expires_in": "0"})))
        .mount(&server)
        .await;
    mount_pages_for_token(&server, "short").await;
    let h = harness(&oauth_config(&server.uri(), r#", client_auth = "basic""#));
    assert_eq!(h.fetch("acme").await.unwrap().len(), 2);
    assert_eq!(
        token_requests(&server).await,
        3,
        "a token that expires at once is fetched for each of the three pages"
    );
}

#[tokio::test]
async fn oauth2_token_endpoint_refusal_is_a_clear_error_without_the_secret() {
    let server = MockServer::start().await;
    Mock::given(path("/oauth/token"))
        .respond_with(ResponseTemplate::new(401).set_body_json(
            json!({"error": "invalid_client", "error_description": "s3cret-value is wrong"}),
        ))
        .mount(&server)
        .await;
    let h = harness(&oauth_config(&server.uri(), ""));
    let err = err_text(h.poll("acme").await);
    assert!(err.contains("OAuth2 token request to"), "{err}");
    assert!(
        err.contains("HTTP 401 (invalid_client); check client_id, client_secret and scope"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
    assert_eq!(token_requests(&server).await, 1, "a refusal is not retried");
    assert_eq!(h.state("acme").await.1.as_deref(), Some(err.as_str()));
}

// ---------------------------------------------------------------------------
// Pagination
// ---------------------------------------------------------------------------

#[tokio::test]
async fn page_pagination_walks_pages_until_a_short_one_with_static_query_and_headers() {
    let server = MockServer::start().await;
    for (page, body) in [
        ("0", people([1, 2])),
        ("1", people([3, 4])),
        ("2", people([5])),
    ] {
        Mock::given(path("/v1/employees"))
            .and(query_param("pg", page))
            .and(query_param("size", "2"))
            .and(query_param("include_deleted", "false"))
            .and(query_param("status", "all"))
            .and(header("accept", "application/vnd.api+json"))
            .and(header("x-tenant", "acme"))
            .respond_with(ok_json(json!({"data": body})))
            .mount(&server)
            .await;
    }
    let h = harness(&one_resource(
        &server.uri(),
        r#"records = "/data"
pagination = { type = "page", page_param = "pg", size_param = "size", size = 2, first_page = 0 }
query = { include_deleted = "true", status = "all" }
headers = { "X-Tenant" = "acme" }"#,
        r#"query = { include_deleted = "false" }
headers = { "Accept" = "application/vnd.api+json" }"#,
    ));
    assert_eq!(
        ids(&h.fetch("acme").await.unwrap()),
        ["1", "2", "3", "4", "5"]
    );
    let reqs = requests(&server).await;
    assert_eq!(reqs.len(), 3);
    for r in &reqs {
        let deleted: Vec<_> = r
            .url
            .query_pairs()
            .filter(|(k, _)| k == "include_deleted")
            .collect();
        assert_eq!(
            deleted.len(),
            1,
            "the resource's value replaces the provider's"
        );
        assert_eq!(r.headers.get_all("accept").iter().count(), 1);
    }
}

#[tokio::test]
async fn offset_pagination_advances_by_the_records_received() {
    let server = MockServer::start().await;
    for (offset, body) in [
        ("0", people([1, 2, 3])),
        ("3", people([4, 5, 6])),
        ("6", people([])),
    ] {
        Mock::given(path("/v1/employees"))
            .and(query_param("offset", offset))
            .and(query_param("limit", "3"))
            .respond_with(ok_json(body))
            .mount(&server)
            .await;
    }
    let h = harness(&one_resource(
        &server.uri(),
        r#"pagination = { type = "offset", size = 3 }"#,
        "",
    ));
    assert_eq!(
        ids(&h.fetch("acme").await.unwrap()),
        ["1", "2", "3", "4", "5", "6"]
    );
    assert_eq!(requests(&server).await.len(), 3, "stops at the empty page");
}

#[tokio::test]
async fn cursor_pagination_takes_the_cursor_from_a_json_pointer() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/employees"))
        .and(query_param_is_missing("after"))
        .respond_with(ok_json(
            json!({"results": people([1]), "paging": {"next": {"after": "c2"}}}),
        ))
        .mount(&server)
        .await;
    Mock::given(path("/v1/employees"))
        .and(query_param("after", "c2"))
        .respond_with(ok_json(
            json!({"results": people([2]), "paging": {"next": {"after": 3}}}),
        ))
        .mount(&server)
        .await;
    Mock::given(path("/v1/employees"))
        .and(query_param("after", "3"))
        .respond_with(ok_json(json!({"results": people([3]), "paging": {}})))
        .mount(&server)
        .await;
    let h = harness(&one_resource(
        &server.uri(),
        r#"records = "/results"
pagination = { type = "cursor", cursor_param = "after", next = "/paging/next/after" }"#,
        "",
    ));
    assert_eq!(ids(&h.fetch("acme").await.unwrap()), ["1", "2", "3"]);
}

#[tokio::test]
async fn link_header_pagination_follows_absolute_and_relative_next_links() {
    let server = MockServer::start().await;
    let uri = server.uri();
    let page = |n: &str, link: Option<String>| {
        let body = people([n.parse().unwrap()]);
        let mut t = ok_json(body);
        if let Some(l) = link {
            t = t.insert_header("link", l.as_str());
        }
        Mock::given(path("/v1/employees"))
            .and(query_param("page", n))
            .respond_with(t)
    };
    Mock::given(path("/v1/employees"))
        .and(query_param_is_missing("page"))
        .respond_with(ok_json(people([1])).insert_header(
            "link",
            format!(r#"<{uri}/v1/employees?page=1>; rel="first", <{uri}/v1/employees?page=2>; rel="next""#)
                .as_str(),
        ))
        .mount(&server)
        .await;
    page("2", Some(r#"</v1/employees?page=3>; rel="next""#.into()))
        .mount(&server)
        .await;
    page("3", None).mount(&server).await;
    let h = harness(&one_resource(&uri, r#"pagination = { type = "link" }"#, ""));
    assert_eq!(ids(&h.fetch("acme").await.unwrap()), ["1", "2", "3"]);
}

#[tokio::test]
async fn next_url_pagination_follows_a_url_in_the_body_but_not_to_another_host() {
    let server = MockServer::start().await;
    let uri = server.uri();
    Mock::given(path("/v1/employees"))
        .and(query_param_is_missing("skiptoken"))
        .respond_with(ok_json(
            json!({"value": people([1]), "@odata.nextLink": format!("{uri}/v1/employees?skiptoken=a")}),
        ))
        .mount(&server)
        .await;
    Mock::given(path("/v1/employees"))
        .and(query_param("skiptoken", "a"))
        .respond_with(ok_json(
            json!({"value": people([2]), "@odata.nextLink": "employees?skiptoken=b"}),
        ))
        .mount(&server)
        .await;
    Mock::given(path("/v1/employees"))
        .and(query_param("skiptoken", "b"))
        .respond_with(ok_json(
            json!({"value": people([3]), "@odata.nextLink": null}),
        ))
        .mount(&server)
        .await;
    let h = harness(&one_resource(
        &uri,
        r#"records = "/value"
pagination = { type = "next_url", next = "/@odata.nextLink" }"#,
        "",
    ));
    assert_eq!(ids(&h.fetch("acme").await.unwrap()), ["1", "2", "3"]);

    // A next URL on another host would receive our credentials: refused.
    server.reset().await;
    Mock::given(path("/v1/employees"))
        .respond_with(ok_json(
            json!({"value": people([1]), "@odata.nextLink": "https://elsewhere.example/v1/employees"}),
        ))
        .mount(&server)
        .await;
    let err = h.poll("acme").await;
    let err = err_text(err);
    assert!(err.contains("points at another origin"), "{err}");
}

#[tokio::test]
async fn no_pagination_makes_one_request() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/employees"))
        .respond_with(ok_json(people([1, 2, 3])))
        .mount(&server)
        .await;
    let h = harness(&one_resource(
        &server.uri(),
        r#"pagination = { type = "none" }"#,
        "",
    ));
    assert_eq!(h.fetch("acme").await.unwrap().len(), 3);
    assert_eq!(requests(&server).await.len(), 1);
}

/// Polls once to track records 1 and 2, then returns the harness so a test
/// can make the provider misbehave and check nothing is deleted.
async fn baseline(server: &MockServer, provider: &str, resource: &str) -> Harness {
    let h = harness(&one_resource(&server.uri(), provider, resource));
    Mock::given(path("/v1/employees"))
        .respond_with(ok_json(json!({"data": people([1, 2])})))
        .up_to_n_times(1)
        .mount(server)
        .await;
    h.poll("acme").await.unwrap();
    assert_eq!(h.state("acme").await.0, 2);
    server.reset().await;
    h
}

#[tokio::test]
async fn a_cursor_that_repeats_is_a_loop_error_and_deletes_nothing() {
    let server = MockServer::start().await;
    let h = baseline(
        &server,
        r#"records = "/data"
pagination = { type = "cursor", next = "/next" }"#,
        "",
    )
    .await;
    Mock::given(path("/v1/employees"))
        .respond_with(ok_json(json!({"data": people([1]), "next": "same"})))
        .mount(&server)
        .await;
    let err = err_text(h.poll("acme").await);
    assert!(
        err.contains("pagination loop: the provider returned the same cursor twice"),
        "{err}"
    );
    assert_eq!(requests(&server).await.len(), 2);
    assert_eq!(h.state("acme").await, (2, Some(err)));
    assert_eq!(h.deleted_events(), 0);
}

#[tokio::test]
async fn a_page_parameter_the_provider_ignores_is_a_loop_error() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/employees"))
        .respond_with(ok_json(people([1, 2])))
        .mount(&server)
        .await;
    let h = harness(&one_resource(
        &server.uri(),
        r#"pagination = { type = "page", size = 2 }"#,
        "",
    ));
    let err = h.fetch("acme").await.unwrap_err().to_string();
    assert!(err.contains("the same page twice"), "{err}");
    assert_eq!(requests(&server).await.len(), 2);
}

#[tokio::test]
async fn a_link_header_pointing_at_itself_is_a_loop_error() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/employees"))
        .respond_with(
            ok_json(people([1])).insert_header("link", r#"</v1/employees?page=2>; rel="next""#),
        )
        .mount(&server)
        .await;
    let h = harness(&one_resource(
        &server.uri(),
        r#"pagination = { type = "link" }"#,
        "",
    ));
    let err = h.fetch("acme").await.unwrap_err().to_string();
    assert!(err.contains("the same next-page URL twice"), "{err}");
}

#[tokio::test]
async fn max_pages_bounds_a_provider_that_never_stops() {
    let server = MockServer::start().await;
    let n = Arc::new(AtomicUsize::new(0));
    let counter = n.clone();
    Mock::given(path("/v1/employees"))
        .respond_with(move |_: &Request| {
            let i = counter.fetch_add(1, Ordering::SeqCst);
            ok_json(json!({"data": people([i as u32]), "next": format!("c{i}")}))
        })
        .mount(&server)
        .await;
    let h = harness(&one_resource(
        &server.uri(),
        r#"records = "/data"
pagination = { type = "cursor", next = "/next" }
max_pages = 3"#,
        "",
    ));
    let err = err_text(h.poll("acme").await);
    assert!(err.contains("stopped after max_pages = 3 pages"), "{err}");
    assert_eq!(n.load(Ordering::SeqCst), 3);
}

// ---------------------------------------------------------------------------
// Response encoding and size
// ---------------------------------------------------------------------------

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[tokio::test]
async fn gzip_responses_are_decompressed_and_the_page_limit_applies_to_the_decompressed_size() {
    let server = MockServer::start().await;
    let asks_for_gzip = |r: &Request| {
        r.headers
            .get("accept-encoding")
            .is_some_and(|v| v.to_str().unwrap().contains("gzip"))
    };
    Mock::given(path("/v1/small"))
        .and(asks_for_gzip)
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-encoding", "gzip")
                .set_body_raw(
                    gzip(people([1, 2]).to_string().as_bytes()),
                    "application/json",
                ),
        )
        .mount(&server)
        .await;
    // 1 MiB of JSON that compresses to about a kilobyte.
    let bomb = json!([{"id": 1, "pad": "0".repeat(1 << 20)}]).to_string();
    let bomb = gzip(bomb.as_bytes());
    assert!(bomb.len() < 8 << 10);
    Mock::given(path("/v1/bomb"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-encoding", "gzip")
                .set_body_raw(bomb, "application/json"),
        )
        .mount(&server)
        .await;
    let uri = server.uri();
    let h = harness(&format!(
        r#"
[providers.p]
base_url = "{uri}/v1"
max_page_bytes = "64KiB"
[providers.p.resources.hris_employees]
path = "/small"
[providers.p.resources.documents_files]
path = "/bomb"
[[accounts]]
id = "small"
provider = "p"
resources = ["hris_employees"]
[[accounts]]
id = "bomb"
provider = "p"
resources = ["documents_files"]
"#
    ));
    assert_eq!(ids(&h.fetch("small").await.unwrap()), ["1", "2"]);
    let err = h.fetch("bomb").await.unwrap_err().to_string();
    assert!(
        err.contains("larger than the 65536-byte page limit (max_page_bytes)"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// Retries, Retry-After, timeouts, resets
// ---------------------------------------------------------------------------

#[tokio::test]
async fn flapping_500s_that_recover_within_the_retry_budget_succeed() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/employees"))
        .respond_with(ResponseTemplate::new(502))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path("/v1/employees"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(path("/v1/employees"))
        .respond_with(ok_json(people([1, 2])))
        .mount(&server)
        .await;
    let h = harness(&one_resource(&server.uri(), "retries = 3", ""));
    let s = h.poll("acme").await.unwrap();
    assert_eq!(s.records, 2);
    assert_eq!(requests(&server).await.len(), 4);
    assert_eq!(h.state("acme").await, (2, None));
}

#[tokio::test]
async fn server_errors_beyond_the_retry_budget_fail_the_poll_record_the_error_and_delete_nothing() {
    let server = MockServer::start().await;
    let h = baseline(
        &server,
        r#"records = "/data"
retries = 2"#,
        "",
    )
    .await;
    Mock::given(path("/v1/employees"))
        .respond_with(
            ResponseTemplate::new(500).set_body_string("<h1>oops, secret stack trace</h1>"),
        )
        .mount(&server)
        .await;
    let err = err_text(h.poll("acme").await);
    assert!(
        err.ends_with("HTTP 500 (gave up after 3 attempts)"),
        "{err}"
    );
    assert!(!err.contains("stack trace"), "{err}");
    assert_eq!(requests(&server).await.len(), 3);
    assert_eq!(h.state("acme").await, (2, Some(err)));
    assert_eq!(h.deleted_events(), 0);

    // A client error is not retried.
    server.reset().await;
    Mock::given(path("/v1/employees"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&server)
        .await;
    let err = err_text(h.poll("acme").await);
    assert!(
        err.contains("HTTP 404 (check base_url and the resource path"),
        "{err}"
    );
    assert_eq!(requests(&server).await.len(), 1);

    // The next poll after the provider recovers is normal again.
    server.reset().await;
    Mock::given(path("/v1/employees"))
        .respond_with(ok_json(json!({"data": people([1, 2])})))
        .mount(&server)
        .await;
    h.poll("acme").await.unwrap();
    assert_eq!(h.state("acme").await, (2, None));
}

/// One answer of a [`scripted`] provider.
#[derive(Clone)]
struct Step {
    status: u16,
    retry_after: Option<&'static str>,
    /// How long the provider takes to answer (on tokio's clock).
    delay: Duration,
    body: Value,
}

impl Step {
    fn ok(body: Value) -> Step {
        Step {
            status: 200,
            retry_after: None,
            delay: Duration::ZERO,
            body,
        }
    }

    fn status(status: u16, retry_after: &'static str) -> Step {
        Step {
            status,
            retry_after: Some(retry_after),
            delay: Duration::ZERO,
            body: json!({}),
        }
    }
}

/// A provider served on the test's own runtime, so that it runs on the
/// runtime's paused clock too: its n-th request gets `steps[n]` (the last
/// step repeats). Returns its base URL and the tokio time of each request.
async fn scripted(steps: Vec<Step>) -> (String, Arc<Mutex<Vec<tokio::time::Instant>>>) {
    use axum::response::IntoResponse;
    let arrivals: Arc<Mutex<Vec<tokio::time::Instant>>> = Arc::default();
    let log = arrivals.clone();
    let app = axum::Router::new().fallback(move || {
        let (steps, log) = (steps.clone(), log.clone());
        async move {
            let n = {
                let mut log = log.lock().unwrap();
                log.push(tokio::time::Instant::now());
                log.len() - 1
            };
            let step = steps[n.min(steps.len() - 1)].clone();
            tokio::time::sleep(step.delay).await;
            let mut resp = (
                axum::http::StatusCode::from_u16(step.status).unwrap(),
                axum::Json(step.body),
            )
                .into_response();
            if let Some(ra) = step.retry_after {
                resp.headers_mut()
                    .insert("retry-after", ra.parse().unwrap());
            }
            resp
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), arrivals)
}

// The waits below (a Retry-After, a timeout) pass on tokio's paused clock,
// which jumps ahead whenever every task is waiting on a timer: no test
// sleeps, and the intervals measured are exact.

#[tokio::test(start_paused = true)]
async fn retry_after_on_429_is_honoured_and_a_long_one_fails_the_poll_at_once() {
    let (uri, arrivals) = scripted(vec![Step::status(429, "1"), Step::ok(people([1]))]).await;
    let h = harness(&one_resource(&uri, "", ""));
    assert_eq!(ids(&h.fetch("acme").await.unwrap()), ["1"]);
    let at = arrivals.lock().unwrap().clone();
    assert_eq!(at.len(), 2);
    let gap = at[1] - at[0];
    // The 1 s asked for, not the 5 ms backoff.
    assert!(
        gap >= Duration::from_secs(1) && gap < Duration::from_millis(1100),
        "{gap:?}"
    );

    let (uri, arrivals) = scripted(vec![Step::status(503, "3600")]).await;
    let h = harness(&one_resource(&uri, "", ""));
    let started = tokio::time::Instant::now();
    let err = h.fetch("acme").await.unwrap_err().to_string();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(
        err.contains("HTTP 503 asks to wait 3600s (Retry-After)"),
        "{err}"
    );
    assert_eq!(arrivals.lock().unwrap().len(), 1);
}

/// A raw HTTP/1.1 server whose first `resets` connections are reset as soon
/// as the request arrives; later ones get `body` as JSON.
async fn resetting_server(resets: usize, body: String) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let n = count.fetch_add(1, Ordering::SeqCst);
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => buf.extend_from_slice(&chunk[..k]),
                    }
                }
                if n < resets {
                    // SO_LINGER 0: closing sends a TCP RST.
                    let _ = sock.set_zero_linger();
                    return;
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(response.as_bytes()).await;
            });
        }
    });
    (format!("http://{addr}"), connections)
}

#[tokio::test]
async fn connection_resets_are_retried() {
    let (uri, connections) = resetting_server(2, people([1, 2]).to_string()).await;
    let h = harness(&one_resource(&uri, "retries = 2", ""));
    assert_eq!(ids(&h.fetch("acme").await.unwrap()), ["1", "2"]);
    assert_eq!(connections.load(Ordering::SeqCst), 3);

    let (uri, connections) = resetting_server(usize::MAX, String::new()).await;
    let h = harness(&one_resource(&uri, "retries = 1", ""));
    let err = err_text(h.poll("acme").await);
    assert!(err.contains("(gave up after 2 attempts)"), "{err}");
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_request_that_times_out_is_retried() {
    // The first answer would take 3 s; the timeout is 1 s.
    let mut slow = Step::ok(people([9]));
    slow.delay = Duration::from_secs(3);
    let (uri, arrivals) = scripted(vec![slow, Step::ok(people([1]))]).await;
    let h = harness(&one_resource(&uri, "timeout = \"1s\"\nretries = 1", ""));
    assert_eq!(ids(&h.fetch("acme").await.unwrap()), ["1"]);
    let at = arrivals.lock().unwrap().clone();
    assert_eq!(at.len(), 2);
    let gap = at[1] - at[0];
    assert!(
        gap >= Duration::from_secs(1) && gap < Duration::from_millis(1100),
        "retried {gap:?} after the first request"
    );
}

// ---------------------------------------------------------------------------
// Hostile responses
// ---------------------------------------------------------------------------

#[tokio::test]
async fn hostile_bodies_fail_the_poll_with_a_specific_error_and_delete_nothing() {
    let server = MockServer::start().await;
    let h = baseline(&server, r#"records = "/data""#, "").await;
    let cases: Vec<(ResponseTemplate, &str)> = vec![
        (
            ResponseTemplate::new(200)
                .set_body_raw("<html><body>Please log in</body></html>", "text/html"),
            r#"response is not JSON (content-type "text/html", looks like HTML)"#,
        ),
        (
            ResponseTemplate::new(200)
                .set_body_raw(r#"{"data":[{"id":1},{"id":"#, "application/json"),
            "response JSON is truncated",
        ),
        (
            ResponseTemplate::new(200).set_body_raw("", "application/json"),
            "response is not JSON (content-type \"application/json\", empty body)",
        ),
        (
            ResponseTemplate::new(200).set_body_raw("ok", "text/plain"),
            "response is not JSON",
        ),
        (
            ok_json(json!({"data": {"id": 1}})),
            r#"records pointer "/data" does not point at an array"#,
        ),
        (
            ok_json(json!({"error": "maintenance"})),
            r#"records pointer "/data" does not exist in the response"#,
        ),
        (
            ok_json(json!({"data": people(1..=40)})),
            "larger than the 1024-byte page limit (max_page_bytes)",
        ),
    ];
    let small = harness(&one_resource(
        &server.uri(),
        "records = \"/data\"\nmax_page_bytes = 1024",
        "",
    ));
    for (i, (template, expected)) in cases.into_iter().enumerate() {
        server.reset().await;
        Mock::given(path("/v1/employees"))
            .respond_with(template)
            .mount(&server)
            .await;
        let target = if expected.contains("max_page_bytes") {
            &small
        } else {
            &h
        };
        let err = err_text(target.poll("acme").await);
        assert!(err.contains(expected), "case {i}: {err}");
        assert!(
            !err.contains("log in") && !err.contains("maintenance"),
            "no body in errors: {err}"
        );
        assert_eq!(requests(&server).await.len(), 1, "case {i}: not retried");
    }
    assert_eq!(h.state("acme").await.0, 2);
    assert_eq!(h.deleted_events(), 0);
}

#[tokio::test]
async fn records_without_an_id_are_counted_and_the_poll_fails_without_deletions() {
    let server = MockServer::start().await;
    let h = baseline(&server, r#"records = "/data""#, "").await;
    Mock::given(path("/v1/employees"))
        .respond_with(ok_json(json!({"data": [
            {"id": 1, "name": "changed"},
            {"name": "no id here"},
            {"id": null},
            {"id": 3},
        ]})))
        .mount(&server)
        .await;
    let err = err_text(h.poll("acme").await);
    assert!(
        err.starts_with(r#"2 records had no usable id (first: record 1 has no id at "/id"); check the resource's id pointer"#),
        "{err}"
    );
    assert!(!err.contains("no id here"));
    let events = h.events();
    assert_eq!(
        events,
        [
            ("hris_employees.updated".to_string(), "1".to_string()),
            ("hris_employees.created".to_string(), "3".to_string()),
        ],
        "changes to records with ids are applied; record 2 is not deleted"
    );
    assert_eq!(h.state("acme").await, (3, Some(err)));
}

/// Serves `pages` (two records a page) at `?page=1…`, then an empty page.
async fn mount_pages(server: &MockServer, pages: &[&[u32]]) {
    server.reset().await;
    for (i, ids) in pages.iter().enumerate() {
        Mock::given(path("/v1/employees"))
            .and(query_param("page", (i + 1).to_string().as_str()))
            .respond_with(ok_json(people(ids.iter().copied())))
            .mount(server)
            .await;
    }
    Mock::given(path("/v1/employees"))
        .respond_with(ok_json(people([])))
        .mount(server)
        .await;
}

#[tokio::test]
async fn duplicate_ids_across_pages_are_counted_and_that_scan_deletes_nothing() {
    let server = MockServer::start().await;
    let h = harness(&one_resource(
        &server.uri(),
        r#"pagination = { type = "page", size = 2 }"#,
        "",
    ));
    // Even a baseline with a repeated id completes, so later polls emit.
    mount_pages(&server, &[&[1, 2], &[2, 3], &[4, 5]]).await;
    let s = h.poll("acme").await.unwrap();
    assert_eq!((s.records, s.duplicates, s.pages), (5, 1, 4));
    assert_eq!(h.state("acme").await, (5, None));

    // Record 1 is deleted mid-scan, so the listing shifts: 3 is listed twice
    // and 4 is never seen although it still exists. No deletion this scan.
    mount_pages(&server, &[&[2, 3], &[3, 5]]).await;
    let s = h.poll("acme").await.unwrap();
    assert_eq!((s.records, s.duplicates, s.deleted), (3, 1, 0));
    assert_eq!(h.deleted_events(), 0);

    // The next clean complete scan sees that 1 is gone.
    mount_pages(&server, &[&[2, 3], &[4, 5]]).await;
    let s = h.poll("acme").await.unwrap();
    assert_eq!((s.duplicates, s.deleted), (0, 1));
    assert_eq!(
        h.events(),
        [("hris_employees.deleted".to_string(), "1".to_string())]
    );
}

// ---------------------------------------------------------------------------
// Incremental polls
// ---------------------------------------------------------------------------

#[tokio::test]
async fn incremental_polls_fetch_only_changes_and_the_full_scan_finds_deletions() {
    let server = MockServer::start().await;
    let h = harness(&one_resource(
        &server.uri(),
        "",
        r#"updated_since = { param = "updated_after", format = "rfc3339", lookback = "5m", full_scan_every = "24h" }"#,
    ));
    let full = |ids: Vec<Value>| {
        Mock::given(path("/v1/employees"))
            .and(query_param_is_missing("updated_after"))
            .respond_with(ok_json(Value::Array(ids)))
    };
    let p = |i: u32, name: &str| json!({"id": i, "name": name});

    // 10:00 baseline: a complete scan.
    full(vec![p(1, "a"), p(2, "b"), p(3, "c")])
        .mount(&server)
        .await;
    let s = h.poll("acme").await.unwrap();
    assert!(s.full_scan && s.baseline);

    // 10:10: only records changed since 09:55 are asked for. Record 3 is gone
    // at the provider, but an incremental poll cannot know that.
    server.reset().await;
    h.clock.advance(Duration::from_secs(600));
    Mock::given(path("/v1/employees"))
        .and(query_param("updated_after", "2026-11-23T09:55:00Z"))
        .respond_with(ok_json(json!([p(2, "b2")])))
        .mount(&server)
        .await;
    full(vec![p(1, "a"), p(2, "b2")]).mount(&server).await;
    let s = h.poll("acme").await.unwrap();
    assert!(!s.full_scan);
    assert_eq!((s.records, s.updated, s.deleted), (1, 1, 0));
    let reqs = requests(&server).await;
    assert_eq!(reqs.len(), 1);
    assert!(
        reqs[0]
            .url
            .query()
            .unwrap()
            .contains("updated_after=2026-11-23T09%3A55%3A00Z")
    );
    assert_eq!(h.state("acme").await.0, 3);

    // 10:20: the next incremental poll starts from the 10:10 poll.
    h.clock.advance(Duration::from_secs(600));
    Mock::given(path("/v1/employees"))
        .and(query_param("updated_after", "2026-11-23T10:05:00Z"))
        .respond_with(ok_json(json!([])))
        .mount(&server)
        .await;
    let s = h.poll("acme").await.unwrap();
    assert_eq!((s.full_scan, s.records, s.deleted), (false, 0, 0));

    // A day after the last complete scan: a full scan, which sees record 3
    // is gone.
    h.clock.set(at("2026-11-24T10:00:00Z"));
    let s = h.poll("acme").await.unwrap();
    assert!(s.full_scan);
    assert_eq!(s.deleted, 1);
    assert_eq!(
        h.events(),
        [
            ("hris_employees.updated".to_string(), "2".to_string()),
            ("hris_employees.deleted".to_string(), "3".to_string()),
        ]
    );
    let last = requests(&server).await.pop().unwrap();
    assert!(!last.url.query().unwrap_or("").contains("updated_after"));
}

#[tokio::test]
async fn updated_since_formats_reach_the_provider() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/employees"))
        .respond_with(ok_json(people([1])))
        .mount(&server)
        .await;
    // Baseline at 10:00, incremental at 10:10: since = 10:00 - 5m lookback.
    for (format, expected) in [
        ("rfc3339", "2026-11-23T09:55:00Z"),
        ("unix", "1795427700"),
        ("unix_ms", "1795427700000"),
        ("date", "2026-11-23"),
    ] {
        let h = harness(&one_resource(
            &server.uri(),
            "",
            &format!(r#"updated_since = {{ param = "since", format = "{format}" }}"#),
        ));
        h.poll("acme").await.unwrap();
        h.clock.advance(Duration::from_secs(600));
        assert!(!h.poll("acme").await.unwrap().full_scan);
        let last = requests(&server).await.pop().unwrap();
        let since = last
            .url
            .query_pairs()
            .find(|(k, _)| k == "since")
            .map(|(_, v)| v.to_string());
        assert_eq!(since.as_deref(), Some(expected), "{format}");
    }
}

// ---------------------------------------------------------------------------
// Rate limit
// ---------------------------------------------------------------------------

#[tokio::test]
async fn the_rate_limit_holds_across_all_accounts_of_a_provider() {
    let server = MockServer::start().await;
    let arrivals: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let log = arrivals.clone();
    Mock::given(path("/v1/employees"))
        .respond_with(move |r: &Request| {
            log.lock().unwrap().push(Instant::now());
            let page: u32 = r
                .url
                .query_pairs()
                .find(|(k, _)| k == "page")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap();
            ok_json(if page <= 10 {
                people([page])
            } else {
                people([])
            })
        })
        .mount(&server)
        .await;
    let uri = server.uri();
    let h = harness(&format!(
        r#"
[providers.p]
base_url = "{uri}/v1"
rate_limit = "10/s"
pagination = {{ type = "page", size = 1 }}
[providers.p.resources.hris_employees]
path = "/employees"
[[accounts]]
id = "acme"
provider = "p"
[[accounts]]
id = "globex"
provider = "p"
auth = {{ type = "bearer", token = "other-tenant" }}
"#
    ));
    let (a, b) = tokio::join!(h.fetch("acme"), h.fetch("globex"));
    assert_eq!((a.unwrap().len(), b.unwrap().len()), (10, 10));
    let mut times = arrivals.lock().unwrap().clone();
    times.sort();
    assert_eq!(times.len(), 22);
    // Slots are 100 ms apart across both accounts. Arrival times jitter on a
    // busy machine (and the first request of each account also opens a
    // connection), so the window is 850 ms rather than 1 s; without
    // sharing, the two accounts would put ~17 requests in it.
    for (i, start) in times.iter().enumerate() {
        let in_window = times[i..]
            .iter()
            .take_while(|t| t.duration_since(*start) < Duration::from_millis(850))
            .count();
        assert!(in_window <= 10, "{in_window} requests within one second");
    }
    let span = times[21].duration_since(times[0]);
    assert!(span >= Duration::from_millis(21 * 100 - 150), "{span:?}");
}

// ---------------------------------------------------------------------------
// Config and plan
// ---------------------------------------------------------------------------

#[test]
fn connector_settings_are_validated_with_their_key_path() {
    let cases = [
        ("rate_limit = \"10/x\"", "", "providers.p.rate_limit"),
        ("rate_limit = \"0/s\"", "", "providers.p.rate_limit"),
        ("timeout = \"0s\"", "", "providers.p.timeout"),
        ("timeout = \"10m\"", "", "providers.p.timeout"),
        ("retries = 11", "", "providers.p.retries"),
        ("retries = -1", "", "providers.p.retries"),
        ("retry_backoff = \"2m\"", "", "providers.p.retry_backoff"),
        ("retry_backoff = \"soon\"", "", "providers.p.retry_backoff"),
        ("max_pages = 0", "", "providers.p.max_pages"),
        ("max_page_bytes = 100", "", "providers.p.max_page_bytes"),
        (
            "max_page_bytes = \"12 parsecs\"",
            "",
            "providers.p.max_page_bytes",
        ),
        (
            "max_page_bytes = \"2GiB\"",
            "",
            "providers.p.max_page_bytes",
        ),
        ("records = \"data\"", "", "providers.p.records"),
        (
            "pagination = { type = \"cursor\", next = \"meta.next\" }",
            "",
            "providers.p.pagination.next",
        ),
        (
            "pagination = { type = \"page\", size = 0 }",
            "",
            "providers.p.pagination.size",
        ),
        (
            "pagination = { type = \"link\", next = \"/x\" }",
            "",
            "providers.p.pagination",
        ),
        (
            "auth = { type = \"oauth2\", token_url = \"not a url\", client_id = \"x\", client_secret = \"y\" }",
            "",
            "providers.p.auth.token_url",
        ),
        (
            "auth = { type = \"oauth2\", token_url = \"http://h/t\", client_id = \"x\", client_secret = \"y\", client_auth = \"jwt\" }",
            "",
            "providers.p.auth",
        ),
        (
            "headers = { \"Bad Header\" = \"x\" }",
            "",
            "providers.p.headers.Bad Header",
        ),
        (
            "",
            "path = \"/employees?all=1\"",
            "providers.p.resources.hris_employees.path",
        ),
        (
            "",
            "updated_since = { param = \"since\", format = \"iso\" }",
            "providers.p.resources.hris_employees.updated_since.format",
        ),
        (
            "",
            "updated_since = { param = \"since\", lookback = \"2d\" }",
            "providers.p.resources.hris_employees.updated_since.lookback",
        ),
        (
            "",
            "updated_since = { param = \"since\", full_scan_every = \"1m\" }",
            "providers.p.resources.hris_employees.updated_since.full_scan_every",
        ),
    ];
    // A case that sets `path` or `retry_backoff` replaces the default.
    let settings = |provider: &str, resource: &str| {
        one_resource("http://127.0.0.1:9", provider, resource)
            .replacen("path = \"/employees\"\npath", "path", 1)
            .replacen("retry_backoff = \"5ms\"\nretry_backoff", "retry_backoff", 1)
    };
    for (provider, resource, key) in cases {
        let toml = settings(provider, resource);
        let err = config::from_toml_str(&toml, Path::new("."))
            .map(|_| ())
            .expect_err(provider);
        assert!(
            err.path.starts_with(key),
            "{provider}{resource}: expected {key}, got {err}"
        );
    }
    let ok = settings(
        "retry_backoff = \"250ms\"\nrate_limit = \"600/m\"\ntimeout = \"2m\"\nretries = 0\nmax_page_bytes = \"8MiB\"",
        "",
    );
    let c = config::from_toml_str(&ok, Path::new(".")).unwrap();
    let p = c.provider("p");
    assert_eq!((p.retries, p.max_page_bytes), (0, 8 << 20));
    assert_eq!(p.retry_backoff, Duration::from_millis(250));
    let defaults =
        config::from_toml_str(&one_resource("http://127.0.0.1:9", "", ""), Path::new(".")).unwrap();
    let p = defaults.provider("p");
    assert_eq!(
        (p.retries, p.max_pages, p.max_page_bytes),
        (3, 100_000, 64 << 20)
    );
    assert_eq!(p.timeout, Duration::from_secs(30));
}

#[test]
fn short_intervals_without_updated_since_are_warned_about() {
    let toml = r#"
[providers.p]
base_url = "http://127.0.0.1:9/v1"
[providers.p.resources.hris_employees]
path = "/employees"
[providers.p.resources.hris_employments]
path = "/employments"
updated_since = { param = "updated_after" }
[[accounts]]
id = "fast"
provider = "p"
interval = "10m"
[[accounts]]
id = "slow"
provider = "p"
interval = "15m"
"#;
    let c = config::from_toml_str(toml, Path::new(".")).unwrap();
    let warnings: Vec<String> = synthd::daemon::plan_warnings(&c)
        .into_iter()
        .filter(|w| w.contains("updated_since"))
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("\"fast\" polls hris_employees"),
        "{}",
        warnings[0]
    );
    assert!(
        warnings[0].contains("every poll is a full scan"),
        "{}",
        warnings[0]
    );
}

#[test]
fn every_provider_template_passes_check_with_an_account_and_a_webhook() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/providers");
    let mut templates: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    templates.sort();
    assert!(templates.len() >= 5, "{templates:?}");
    let tmp = tempfile::tempdir().unwrap();
    let mut catalog_names = 0;
    for template in &templates {
        let text = std::fs::read_to_string(template).unwrap();
        let provider = text
            .lines()
            .find_map(|l| l.strip_prefix("[providers.")?.strip_suffix(']'))
            .filter(|p| !p.contains('.'))
            .unwrap_or_else(|| panic!("{}: no [providers.NAME] table", template.display()));
        // Every secret a template reads from the environment.
        let vars: Vec<String> = text
            .split("_env = \"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next().map(str::to_string))
            .collect();
        assert!(
            !vars.is_empty(),
            "{}: secrets come from the environment",
            template.display()
        );
        catalog_names += text.matches(".resources.").count();
        let cfg = tmp.path().join(template.file_name().unwrap());
        std::fs::write(
            &cfg,
            format!(
                r#"[daemon]
state_dir = "{state}"

{text}

[[accounts]]
id = "tenant-1"
provider = "{provider}"

[[webhooks]]
id = "hook"
url = "http://127.0.0.1:9/hook"
events = ["*"]
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
"#,
                state = tmp.path().join("state").display()
            ),
        )
        .unwrap();
        let mut cmd = assert_cmd::Command::new(assert_cmd::cargo::cargo_bin!("synthd"));
        cmd.arg("--config").arg(&cfg).arg("check");
        for v in &vars {
            cmd.env(v, "placeholder-credential");
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}: {}{}",
            template.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(catalog_names >= 9);
}
