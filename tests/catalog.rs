//! The built-in provider catalog through the real binary.
//!
//! One table-driven test runs every vendor's fixture
//! (`tests/catalog_fixtures/<vendor>.json`): a loopback server reproducing
//! the vendor's documented requests and responses (auth, parameter names,
//! pages and their end signal, record fields), which refuses anything else.
//! synthd gets only `provider = "<vendor>"`, params and credentials (plus
//! the loopback host, as a `[providers.<vendor>] base_url` override keeping
//! the vendor's `{param}` placeholders); its first sync is a silent
//! baseline, its second sees exactly the fixture's events.
//!
//! Fixture format: `base` (the base URL's path, placeholders kept),
//! `params`, `auth` (a TOML table; `$base` is the server), `expect_auth`
//! (`basic` [user, password] | `bearer` token | `query` [name, value]),
//! `token` (an OAuth2 token endpoint to serve), `optional_query` (the
//! `updated_since` parameters an incremental poll may add), `exchanges`
//! (method, path, exact query, exact JSON body, response headers and body
//! with `"$records"` standing for the records of the current state, `before`
//! and `after` records) and `events` (`type:record_id` after the change).
//! Also here: `check` on every entry, a missing param, key-by-key override,
//! and `synthd providers`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::Value;

use common::{TestEnv, lock, serve};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/catalog_fixtures");

#[derive(Default)]
struct Fixture {
    spec: Value,
    base: String,
    /// 0 before the change set, 1 after.
    state: usize,
    /// Per exchange: hits in each state.
    hits: Vec<[u32; 2]>,
    refused: Vec<String>,
    tokens: u32,
}

type Shared = Arc<Mutex<Fixture>>;

fn query_map(uri: &Uri) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Replaces `"$records"` with the records and `$base` inside strings.
fn render(v: &Value, records: &Value, base: &str) -> Value {
    match v {
        Value::String(s) if s == "$records" => records.clone(),
        Value::String(s) => Value::String(s.replace("$base", base)),
        Value::Array(a) => Value::Array(a.iter().map(|x| render(x, records, base)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), render(x, records, base)))
                .collect(),
        ),
        other => other.clone(),
    }
}

async fn vendor(
    State(fx): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut f = lock(&fx);
    let spec = f.spec.clone();
    let path = uri.path().to_string();
    let mut query = query_map(&uri);
    let refuse = |f: &mut Fixture, why: String| {
        f.refused.push(format!("{method} {uri}: {why}"));
        (StatusCode::BAD_REQUEST, why).into_response()
    };
    if let Some(token) = spec.get("token")
        && token["path"].as_str() == Some(path.as_str())
    {
        let form = String::from_utf8_lossy(&body);
        if method != Method::POST || !form.contains("grant_type=client_credentials") {
            return refuse(&mut f, "not a client-credentials token request".into());
        }
        f.tokens += 1;
        return axum::Json(serde_json::json!({
            "access_token": token["access_token"], "token_type": "Bearer", "expires_in": 3600
        }))
        .into_response();
    }
    let auth = &spec["expect_auth"];
    let header = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let ok = if let Some([u, p]) = auth["basic"].as_array().map(Vec::as_slice) {
        let pair = format!("{}:{}", u.as_str().unwrap(), p.as_str().unwrap());
        header
            == format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
    } else if let Some(t) = auth["bearer"].as_str() {
        header == format!("Bearer {t}")
    } else if let Some([n, v]) = auth["query"].as_array().map(Vec::as_slice) {
        query.remove(n.as_str().unwrap()).as_deref() == v.as_str() && header.is_empty()
    } else {
        false
    };
    if !ok {
        return (StatusCode::UNAUTHORIZED, "bad credentials").into_response();
    }
    for opt in spec["optional_query"].as_array().into_iter().flatten() {
        query.remove(opt.as_str().unwrap());
    }
    let body: Option<Value> = if body.is_empty() {
        None
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => Some(v),
            Err(_) => return refuse(&mut f, "body is not JSON".into()),
        }
    };
    if body.is_some()
        && headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/json")
    {
        return refuse(
            &mut f,
            "a JSON body without content-type application/json".into(),
        );
    }
    let exchanges = spec["exchanges"].as_array().unwrap();
    let found = exchanges.iter().position(|e| {
        e["method"].as_str() == Some(method.as_str())
            && e["path"].as_str() == Some(path.as_str())
            && e["query"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect::<BTreeMap<_, _>>()
                == query
            && ((e["body"].is_null() && body.is_none()) || Some(&e["body"]) == body.as_ref())
    });
    let Some(i) = found else {
        return refuse(
            &mut f,
            format!("no documented request matches (query {query:?}, body {body:?})"),
        );
    };
    let state = f.state;
    f.hits[i][state] += 1;
    let e = &exchanges[i];
    let records = &e[if state == 0 { "before" } else { "after" }];
    let out = render(&e["response"]["body"], records, &f.base);
    let mut resp = axum::Json(out).into_response();
    for (k, v) in e["response"]["headers"].as_object().unwrap() {
        resp.headers_mut().insert(
            axum::http::HeaderName::try_from(k.as_str()).unwrap(),
            v.as_str()
                .unwrap()
                .replace("$base", &f.base)
                .parse()
                .unwrap(),
        );
    }
    resp
}

async fn start(spec: Value) -> (Shared, String) {
    let n = spec["exchanges"].as_array().unwrap().len();
    let fx: Shared = Arc::new(Mutex::new(Fixture {
        spec,
        hits: vec![[0, 0]; n],
        ..Fixture::default()
    }));
    let base = serve(Router::new().fallback(vendor).with_state(fx.clone())).await;
    lock(&fx).base = base.clone();
    (fx, base)
}

fn record_events(env: &TestEnv) -> BTreeSet<String> {
    let c = env.db();
    let mut st = c
        .prepare("SELECT type, record_id FROM events WHERE record_id IS NOT NULL")
        .unwrap();
    st.query_map([], |r| {
        Ok(format!(
            "{}:{}",
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn inline_params(spec: &Value) -> String {
    let parts: Vec<String> = spec["params"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| format!("{k} = {v}"))
        .collect();
    format!("{{ {} }}", parts.join(", "))
}

async fn run_vendor(name: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(format!("{FIXTURES}/{name}.json"))
        .map_err(|e| format!("{name}: no fixture: {e}"))?;
    let spec: Value = serde_json::from_str(&text).map_err(|e| format!("{name}: {e}"))?;
    let (fx, base) = start(spec.clone()).await;
    let env = TestEnv::new();
    env.write_config(&format!(
        "[providers.{name}]\nbase_url = \"{base}{}\"\n\n[[accounts]]\nid = \"acme\"\nprovider = \"{name}\"\nparams = {}\nauth = {}\n",
        spec["base"].as_str().unwrap(),
        inline_params(&spec),
        spec["auth"].as_str().unwrap().replace("$base", &base),
    ));
    let (out, _) = env.sync(&[]).await;
    if out.code != 0 {
        return Err(format!("{name}: baseline sync failed: {}", out.stderr));
    }
    if !record_events(&env).is_empty() {
        return Err(format!(
            "{name}: the baseline emitted {:?}",
            record_events(&env)
        ));
    }
    lock(&fx).state = 1;
    let (out, _) = env.sync(&[]).await;
    if out.code != 0 {
        return Err(format!("{name}: second sync failed: {}", out.stderr));
    }
    let want: BTreeSet<String> = spec["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect();
    let got = record_events(&env);
    let f = lock(&fx);
    if !f.refused.is_empty() {
        return Err(format!("{name}: refused requests: {:?}", f.refused));
    }
    for (i, [before, after]) in f.hits.iter().enumerate() {
        if *before != 1 || *after != 1 {
            return Err(format!(
                "{name}: exchange {i} served {before} time(s) before and {after} after the change; every page once per scan"
            ));
        }
    }
    if spec.get("token").is_some() && f.tokens == 0 {
        return Err(format!("{name}: no OAuth2 token was fetched"));
    }
    if got != want {
        return Err(format!("{name}: events {got:?}, expected {want:?}"));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_catalog_vendor_walks_its_fixture_and_sees_exactly_the_change_set() {
    let names: Vec<&str> = synthd::config::catalog::names().collect();
    assert!(names.len() >= 16);
    let mut failures = Vec::new();
    for name in &names {
        if let Err(e) = run_vendor(name).await {
            failures.push(e);
        }
    }
    let fixtures = std::fs::read_dir(FIXTURES).unwrap().count();
    assert_eq!(fixtures, names.len(), "one fixture per catalog entry");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The queries an `after_last` list saw, and whether it ignores the cursor.
type Seen = Arc<Mutex<(Vec<String>, bool)>>;

/// A Stripe-style list: `starting_after=<last id>`, `has_more`, 2 per page.
async fn after_last_list(State(seen): State<Seen>, uri: Uri) -> Response {
    let q = query_map(&uri);
    let mut s = lock(&seen);
    s.0.push(uri.query().unwrap_or("").to_string());
    let ids = ["a1", "a2", "a3", "a4", "a5"];
    let start = match q.get("starting_after") {
        None => 0,
        Some(after) => match ids.iter().position(|i| i == after) {
            Some(p) => p + 1,
            None => return (StatusCode::BAD_REQUEST, "unknown cursor").into_response(),
        },
    };
    // `stuck`: the provider ignores the cursor and serves page one again.
    let start = if s.1 { 0 } else { start };
    let page: Vec<Value> = ids[start..]
        .iter()
        .take(2)
        .map(|id| serde_json::json!({"id": id, "object": "customer"}))
        .collect();
    let more = start + 2 < ids.len();
    axum::Json(serde_json::json!({"object": "list", "data": page, "has_more": more}))
        .into_response()
}

#[tokio::test(flavor = "multi_thread")]
async fn after_last_walks_every_page_stops_on_has_more_and_refuses_a_loop() {
    let seen: Seen = Arc::new(Mutex::new((Vec::new(), false)));
    let base = serve(
        Router::new()
            .route("/v1/customers", axum::routing::get(after_last_list))
            .with_state(seen.clone()),
    )
    .await;
    let env = TestEnv::new();
    env.write_config(&format!(
        r#"
[providers.stripeish]
base_url = "{base}/v1"
records = "/data"
pagination = {{ type = "after_last", param = "starting_after", from = "/id", has_more = "/has_more" }}
query = {{ limit = "2" }}
[providers.stripeish.resources.crm_accounts]
path = "/customers"
[[accounts]]
id = "acme"
provider = "stripeish"
"#
    ));
    let (out, _) = env.sync(&[]).await;
    out.assert_code(0);
    assert_eq!(
        lock(&seen).0,
        vec![
            "limit=2",
            "limit=2&starting_after=a2",
            "limit=2&starting_after=a4"
        ],
        "three pages, the last one ends on has_more = false"
    );
    assert_eq!(env.tracked("acme", "crm_accounts").len(), 5);
    // A provider that ignores the cursor would loop: the scan fails and
    // deletes nothing.
    {
        let mut s = lock(&seen);
        s.0.clear();
        s.1 = true;
    }
    let (out, _) = env.sync(&[]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("pagination loop"), "{}", out.stderr);
    assert_eq!(env.tracked("acme", "crm_accounts").len(), 5);
}

/// Without `has_more`, an empty page ends an `after_last` scan.
#[tokio::test(flavor = "multi_thread")]
async fn after_last_without_a_flag_stops_at_an_empty_page() {
    let seen: Seen = Arc::new(Mutex::new((Vec::new(), false)));
    let base = serve(
        Router::new()
            .route("/v1/customers", axum::routing::get(after_last_list))
            .with_state(seen.clone()),
    )
    .await;
    let env = TestEnv::new();
    env.write_config(&format!(
        r#"
[providers.stripeish]
base_url = "{base}/v1"
records = "/data"
pagination = {{ type = "after_last", param = "starting_after" }}
[providers.stripeish.resources.crm_accounts]
path = "/customers"
[[accounts]]
id = "acme"
provider = "stripeish"
"#
    ));
    let (out, _) = env.sync(&[]).await;
    out.assert_code(0);
    let queries = lock(&seen).0.clone();
    assert_eq!(queries.len(), 4, "{queries:?}");
    assert_eq!(
        queries[3], "starting_after=a5",
        "the empty page after the last"
    );
    assert_eq!(env.tracked("acme", "crm_accounts").len(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_block_overrides_a_builtin_key_by_key() {
    // Greenhouse's built-in block keeps its Link pagination, resources and
    // updated_since; the user's block changes the host and one query value.
    let requests = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = requests.clone();
    let base = serve(Router::new().fallback(move |uri: Uri| {
        let seen = seen.clone();
        async move {
            lock(&seen).push(uri.to_string());
            axum::Json(serde_json::json!([{"id": 1, "name": "x"}]))
        }
    }))
    .await;
    let env = TestEnv::new();
    env.write_config(&format!(
        r#"
[providers.greenhouse]
base_url = "{base}/v1"
query = {{ per_page = "2" }}
[providers.greenhouse.resources.ats_jobs]
query = {{ status = "open" }}
[[accounts]]
id = "acme"
provider = "greenhouse"
auth = {{ type = "basic", username = "KEY", password = "" }}
"#
    ));
    let (out, _) = env.sync(&[]).await;
    out.assert_code(0);
    let mut got = lock(&requests).clone();
    got.sort();
    assert_eq!(
        got,
        vec![
            "/v1/applications?per_page=2",
            "/v1/candidates?per_page=2",
            "/v1/jobs?per_page=2&status=open",
        ]
    );
    let check = env.synthd(&["check"]).await;
    check.assert_code(0);
    assert!(
        check
            .stdout
            .contains("ats_candidates: GET /candidates (incremental"),
        "the built-in updated_since survives the override: {}",
        check.stdout
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn check_accepts_every_catalog_entry_and_names_a_missing_param_or_auth() {
    let mut config = String::new();
    for entry in synthd::config::catalog::entries() {
        let params: Vec<String> = synthd::config::catalog_params(entry.name)
            .into_iter()
            .map(|p| format!("{p} = \"acme\""))
            .collect();
        let auth = entry.auth_example();
        config.push_str(&format!(
            "[[accounts]]\nid = \"{0}\"\nprovider = \"{0}\"\nparams = {{ {1} }}\nauth = {auth}\n\n",
            entry.name,
            params.join(", ")
        ));
    }
    let mut env = TestEnv::new();
    env.write_config(&config);
    // Placeholder credentials for every *_env the examples name.
    let names: BTreeSet<String> = config
        .split('"')
        .filter(|s| s.chars().all(|c| c.is_ascii_uppercase() || c == '_') && s.len() > 3)
        .map(str::to_string)
        .collect();
    for n in &names {
        env.set_var(n, "placeholder");
    }
    let out = env.synthd(&["check"]).await;
    out.assert_code(0);
    for entry in synthd::config::catalog::entries() {
        assert!(
            out.stdout.contains(&format!("provider {}", entry.name)),
            "{}",
            out.stdout
        );
    }

    env.write_config(
        "[[accounts]]\nid = \"a\"\nprovider = \"bamboohr\"\nauth = { type = \"basic\", username = \"k\", password = \"x\" }\n",
    );
    let out = env.synthd(&["check"]).await;
    out.assert_code(2);
    assert!(
        out.stderr.contains("accounts[0].params.subdomain: missing"),
        "{}",
        out.stderr
    );

    env.write_config(
        "[[accounts]]\nid = \"a\"\nprovider = \"bamboohr\"\nparams = { subdomain = \"acme\", tenant = \"x\" }\nauth = { type = \"basic\", username = \"k\", password = \"x\" }\n",
    );
    let out = env.synthd(&["check"]).await;
    out.assert_code(2);
    assert!(
        out.stderr.contains("accounts[0].params.tenant"),
        "{}",
        out.stderr
    );

    env.write_config(
        "[[accounts]]\nid = \"a\"\nprovider = \"bamboohr\"\nparams = { subdomain = \"acme/../x\" }\nauth = { type = \"basic\", username = \"k\", password = \"x\" }\n",
    );
    let out = env.synthd(&["check"]).await;
    out.assert_code(2);
    assert!(
        out.stderr.contains("accounts[0].params.subdomain"),
        "{}",
        out.stderr
    );

    env.write_config("[[accounts]]\nid = \"a\"\nprovider = \"hubspot\"\n");
    let out = env.synthd(&["check"]).await;
    out.assert_code(2);
    assert!(
        out.stderr
            .contains("accounts[0].auth: provider \"hubspot\" needs credentials"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn providers_lists_the_catalog_and_shows_one_block() {
    let env = TestEnv::new();
    let out = env.synthd(&["providers"]).await;
    out.assert_code(0);
    for entry in synthd::config::catalog::entries() {
        let line = out
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("{} ", entry.name)))
            .unwrap_or_else(|| panic!("{} missing:\n{}", entry.name, out.stdout));
        assert!(line.contains(&entry.meta.category), "{line}");
    }
    let out = env.synthd(&["providers", "--json"]).await;
    out.assert_code(0);
    let list = out.json();
    let gh = list
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "greenhouse")
        .unwrap();
    assert_eq!(gh["category"], "ats");
    assert_eq!(gh["auth"], "basic");
    assert_eq!(
        gh["resources"],
        serde_json::json!(["ats_applications", "ats_candidates", "ats_jobs"])
    );
    assert_eq!(gh["incremental"].as_array().unwrap().len(), 3);
    assert_eq!(gh["rate_limit"], "50/10s");
    let bamboo = list
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "bamboohr")
        .unwrap();
    assert_eq!(bamboo["params"], serde_json::json!(["subdomain"]));

    let out = env.synthd(&["providers", "show", "greenhouse"]).await;
    out.assert_code(0);
    assert!(out.stdout.starts_with('#'), "{}", out.stdout);
    assert!(out.stdout.contains("[providers.greenhouse]"));
    assert!(
        out.stdout
            .contains("https://developers.greenhouse.io/harvest")
    );
    assert!(out.stdout.contains("provider = \"greenhouse\""));
    assert!(out.stdout.contains("auth = { type = \"basic\""));

    let out = env.synthd(&["providers", "show", "nope"]).await;
    out.assert_code(2);
    assert!(
        out.stderr.contains("no built-in provider \"nope\""),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("greenhouse"));
}

/// A POST list whose cursor travels in the body: a provider that hands back
/// the same cursor forever is a loop (nothing deleted), and `max_pages`
/// bounds a provider that never ends.
#[tokio::test(flavor = "multi_thread")]
async fn a_body_cursor_gets_the_loop_guard_and_max_pages() {
    // mode 0: two pages then has_more = false; 1: the same cursor forever;
    // 2: a new cursor forever.
    let state = Arc::new(Mutex::new((0u8, Vec::<Value>::new())));
    let shared = state.clone();
    let base = serve(Router::new().fallback(move |body: Bytes| {
        let shared = shared.clone();
        async move {
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let mut s = lock(&shared);
            s.1.push(body.clone());
            let n = s.1.len();
            let (cursor, more) = match s.0 {
                0 if body.get("cursor").is_some() => ("c-end".to_string(), false),
                0 => ("c-1".to_string(), true),
                1 => ("c-same".to_string(), true),
                _ => (format!("c-{n}"), true),
            };
            let id = if s.0 == 0 { n } else { 1 };
            axum::Json(serde_json::json!({
                "entries": [{"id": format!("f{id}")}], "cursor": cursor, "has_more": more
            }))
        }
    }))
    .await;
    let env = TestEnv::new();
    env.write_config(&format!(
        r#"
[providers.boxish]
base_url = "{base}/2"
max_pages = 5
[providers.boxish.resources.documents_files]
path = "/files/list"
method = "POST"
body = {{ recursive = true }}
records = "/entries"
pagination = {{ type = "cursor", in = "body", next = "/cursor", has_more = "/has_more", continue_path = "/files/list/continue" }}
[[accounts]]
id = "acme"
provider = "boxish"
"#
    ));
    let (out, _) = env.sync(&[]).await;
    out.assert_code(0);
    assert_eq!(
        lock(&state).1,
        vec![
            serde_json::json!({"recursive": true}),
            serde_json::json!({"cursor": "c-1"})
        ]
    );
    assert_eq!(env.tracked("acme", "documents_files"), vec!["f1", "f2"]);

    lock(&state).0 = 1;
    let (out, _) = env.sync(&[]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("POST ") && out.stderr.contains("pagination loop"),
        "{}",
        out.stderr
    );
    assert_eq!(env.tracked("acme", "documents_files"), vec!["f1", "f2"]);

    lock(&state).0 = 2;
    let (out, _) = env.sync(&[]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("max_pages = 5"), "{}", out.stderr);
    assert_eq!(env.tracked("acme", "documents_files"), vec!["f1", "f2"]);
}
