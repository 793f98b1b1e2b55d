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
        return refuse(&mut f, "a JSON body without content-type application/json".into());
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
            && (e["body"].is_null() && body.is_none() || Some(&e["body"]) == body.as_ref())
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
            v.as_str().unwrap().replace("$base", &f.base).parse().unwrap(),
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
