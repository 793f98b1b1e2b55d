//! The web console on `daemon.listen`: server-rendered pages
//! ([`pages`]), sign-in with the console token, and the actions (replay a
//! delivery, send a test event, resume a paused webhook, poll an account
//! now).
//!
//! Access:
//! - read pages are open on a loopback listener; on any other address
//!   they need the console token (a session cookie or a Bearer header);
//! - actions are POSTs that need either `Authorization: Bearer <token>`
//!   (scripts) or the session cookie plus the session's CSRF token in the
//!   form; without a configured token there are no actions;
//! - a browser signs in at `/login` and gets an HttpOnly, SameSite=Strict
//!   cookie naming a random session kept in memory (12 h);
//! - every response carries a CSP without scripts, `frame-ancestors
//!   'none'`, `nosniff` and `no-store`.
//!
//! The data comes from [`crate::views`], the layer `synthd status` and
//! `synthd deliveries` use.

pub mod pages;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Form, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use base64::Engine as _;
use tokio::sync::watch;

use crate::config::Config;
use crate::daemon::Engine;
use crate::store::{DeliveryStatus, LogQuery, ReplaySelection};
use pages::Chrome;

const COOKIE: &str = "synthd_session";
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
const CSS: &str = include_str!("console.css");
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

struct Session {
    csrf: String,
    expires: Instant,
}

/// What the console's handlers share.
#[derive(Clone)]
pub struct Console {
    engine: Engine,
    config: watch::Receiver<Arc<Config>>,
    /// The listener is on a loopback address: read pages are open.
    loopback: bool,
    sessions: Arc<Mutex<HashMap<String, Session>>>,
    sender: crate::deliver::Sender,
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Viewer {
    Anonymous,
    /// A browser session, with its CSRF token.
    Session(String),
    /// `Authorization: Bearer <console token>`.
    Bearer,
}

impl Console {
    pub fn new(engine: Engine, config: watch::Receiver<Arc<Config>>, loopback: bool) -> Console {
        Console {
            engine,
            config,
            loopback,
            sessions: Arc::default(),
            sender: crate::deliver::Sender::new(),
        }
    }

    fn config(&self) -> Arc<Config> {
        self.config.borrow().clone()
    }

    fn token(&self) -> Option<crate::config::Secret> {
        self.config.borrow().console.token.clone()
    }

    fn viewer(&self, headers: &HeaderMap, jar: &CookieJar) -> Viewer {
        let Some(token) = self.token() else {
            return Viewer::Anonymous;
        };
        if let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            && same(given.trim(), token.expose())
        {
            return Viewer::Bearer;
        }
        if let Some(c) = jar.get(COOKIE) {
            let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            sessions.retain(|_, s| s.expires > now);
            if let Some(s) = sessions.get(c.value()) {
                return Viewer::Session(s.csrf.clone());
            }
        }
        Viewer::Anonymous
    }

    fn chrome<'a>(&self, viewer: &'a Viewer, flash: Option<(bool, &'static str)>) -> Chrome<'a> {
        Chrome {
            csrf: match viewer {
                Viewer::Session(csrf) => Some(csrf.as_str()),
                _ => None,
            },
            actions: self.token().is_some(),
            now: self.engine.ctx.clock.now(),
            flash,
            refresh: None,
        }
    }

    /// Read pages: open on loopback, otherwise only to a signed-in viewer.
    fn may_read(&self, viewer: &Viewer) -> bool {
        self.loopback || *viewer != Viewer::Anonymous
    }
}

/// Compares two secrets in constant time (HMAC of both under a random key).
fn same(given: &str, expected: &str) -> bool {
    use hmac::{KeyInit, Mac};
    let key: [u8; 32] = rand::random();
    let mac = |v: &str| {
        let mut m = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&key)
            .expect("HMAC takes any key length");
        m.update(v.as_bytes());
        m
    };
    let expected = mac(expected).finalize().into_bytes();
    mac(given).verify_slice(&expected).is_ok()
}

fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The console's routes (the caller adds /healthz and /metrics).
pub fn routes(console: Console) -> Router {
    Router::new()
        .route("/", get(overview))
        .route("/console.css", get(css))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/webhooks/{id}", get(webhook))
        .route("/webhooks/{id}/test", post(test_send))
        .route("/webhooks/{id}/resume", post(resume))
        .route("/deliveries/{id}", get(delivery))
        .route("/deliveries/{id}/replay", post(replay))
        .route("/accounts/{id}", get(account))
        .route("/accounts/{id}/poll", post(poll_now))
        .with_state(console)
}

/// Security headers on every response of the listener.
pub async fn headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn page(status: StatusCode, markup: maud::Markup) -> Response {
    (status, Html(markup.into_string())).into_response()
}

/// The answer to a viewer who may not read pages here.
fn need_sign_in(c: &Console) -> Response {
    if c.token().is_some() {
        Redirect::to("/login").into_response()
    } else {
        let viewer = Viewer::Anonymous;
        page(
            StatusCode::FORBIDDEN,
            pages::message(
                "Console closed",
                "This listener is not on a loopback address, so every console page needs the console token; \
                 set [console] token_env (or token_file) in the config and sign in.",
                &c.chrome(&viewer, None),
            ),
        )
    }
}

fn store_error(c: &Console, viewer: &Viewer, e: impl std::fmt::Display) -> Response {
    tracing::warn!(error = %e, "console: the store did not answer");
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        pages::message(
            "Store unavailable",
            &format!("The store did not answer: {e}"),
            &c.chrome(viewer, None),
        ),
    )
}

fn not_found(c: &Console, viewer: &Viewer, what: &str) -> Response {
    page(
        StatusCode::NOT_FOUND,
        pages::message("Not found", what, &c.chrome(viewer, None)),
    )
}

/// The fixed texts an action can leave on the next page (`?done=`).
fn flash(code: Option<&str>) -> Option<(bool, &'static str)> {
    Some(match code? {
        "replayed" => (
            true,
            "Queued again with the same event id: it goes out on the next delivery pass.",
        ),
        "replay-none" => (
            false,
            "Nothing was queued: the webhook is disabled or gone, or this event is already pending for it.",
        ),
        "test-ok" => (true, "Test event delivered (2xx)."),
        "test-failed" => (
            false,
            "Test event sent, but the receiver did not answer 2xx: see the newest delivery below.",
        ),
        "test-soon" => (
            false,
            "A test was sent less than 10 s ago; try again shortly.",
        ),
        "resumed" => (
            true,
            "Resumed: its queued deliveries go out on the next pass.",
        ),
        "not-paused" => (false, "That webhook was not paused."),
        "polling" => (
            true,
            "Poll requested: it starts as soon as a poll slot is free.",
        ),
        _ => return None,
    })
}

#[derive(serde::Deserialize, Default)]
struct Done {
    done: Option<String>,
}

async fn css() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS)
}

async fn overview(
    State(c): State<Console>,
    headers: HeaderMap,
    jar: CookieJar,
    Query(done): Query<Done>,
) -> Response {
    let viewer = c.viewer(&headers, &jar);
    if !c.may_read(&viewer) {
        return need_sign_in(&c);
    }
    let config = c.config();
    match crate::views::overview(&c.engine.ctx.store, &config, c.engine.ctx.clock.now()).await {
        Ok(o) => {
            let chrome = Chrome {
                refresh: Some(30),
                ..c.chrome(&viewer, flash(done.done.as_deref()))
            };
            page(StatusCode::OK, pages::overview(&o, &chrome))
        }
        Err(e) => store_error(&c, &viewer, e),
    }
}

#[derive(serde::Deserialize, Default)]
struct LogParams {
    status: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    page: Option<u64>,
    done: Option<String>,
}

async fn webhook(
    State(c): State<Console>,
    Path(id): Path<String>,
    headers: HeaderMap,
    jar: CookieJar,
    Query(p): Query<LogParams>,
) -> Response {
    let viewer = c.viewer(&headers, &jar);
    if !c.may_read(&viewer) {
        return need_sign_in(&c);
    }
    let config = c.config();
    let now = c.engine.ctx.clock.now();
    let status = match p.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => match DeliveryStatus::parse(s) {
            Some(s) => Some(s),
            None => {
                return page(
                    StatusCode::BAD_REQUEST,
                    pages::message(
                        "Bad filter",
                        "status must be pending, delivered, failed or cancelled",
                        &c.chrome(&viewer, None),
                    ),
                );
            }
        },
    };
    let page_no = p.page.unwrap_or(1).clamp(1, 1_000_000);
    let query = LogQuery {
        webhook: Some(id.clone()),
        status,
        event_type: p
            .event_type
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty()),
        event_id: None,
        offset: (page_no - 1) * pages::PAGE_SIZE as u64,
        limit: pages::PAGE_SIZE,
    };
    let ov = match crate::views::overview(&c.engine.ctx.store, &config, now).await {
        Ok(o) => o,
        Err(e) => return store_error(&c, &viewer, e),
    };
    let row = ov.webhooks.iter().find(|w| w.id == id);
    let log = match crate::views::delivery_log(&c.engine.ctx.store, &query).await {
        Ok(l) => l,
        Err(e) => return store_error(&c, &viewer, e),
    };
    if row.is_none() && log.rows.is_empty() && page_no == 1 && query.status.is_none() {
        return not_found(
            &c,
            &viewer,
            "No such webhook in the config or the delivery log.",
        );
    }
    page(
        StatusCode::OK,
        pages::webhook(
            row,
            &id,
            &query,
            &log,
            page_no,
            &c.chrome(&viewer, flash(p.done.as_deref())),
        ),
    )
}

async fn delivery(
    State(c): State<Console>,
    Path(id): Path<String>,
    headers: HeaderMap,
    jar: CookieJar,
    Query(done): Query<Done>,
) -> Response {
    let viewer = c.viewer(&headers, &jar);
    if !c.may_read(&viewer) {
        return need_sign_in(&c);
    }
    let config = c.config();
    match crate::views::delivery_detail(&c.engine.ctx.store, &config, &id).await {
        Ok(Some(d)) => page(
            StatusCode::OK,
            pages::delivery(&d, &c.chrome(&viewer, flash(done.done.as_deref()))),
        ),
        Ok(None) => not_found(
            &c,
            &viewer,
            "No such delivery (it may have been pruned by retention).",
        ),
        Err(e) => store_error(&c, &viewer, e),
    }
}

async fn account(
    State(c): State<Console>,
    Path(id): Path<String>,
    headers: HeaderMap,
    jar: CookieJar,
    Query(done): Query<Done>,
) -> Response {
    let viewer = c.viewer(&headers, &jar);
    if !c.may_read(&viewer) {
        return need_sign_in(&c);
    }
    let config = c.config();
    let now = c.engine.ctx.clock.now();
    match crate::views::account(&c.engine.ctx.store, &config, &id, now).await {
        Ok(Some(a)) => page(
            StatusCode::OK,
            pages::account(&a, &c.chrome(&viewer, flash(done.done.as_deref()))),
        ),
        Ok(None) => not_found(&c, &viewer, "No such account."),
        Err(e) => store_error(&c, &viewer, e),
    }
}

async fn login_page(State(c): State<Console>, headers: HeaderMap, jar: CookieJar) -> Response {
    let viewer = c.viewer(&headers, &jar);
    if c.token().is_none() {
        return page(
            StatusCode::NOT_FOUND,
            pages::message(
                "No console token",
                "Set [console] token_env (or token_file) in the config to sign in and use the actions.",
                &c.chrome(&viewer, None),
            ),
        );
    }
    page(
        StatusCode::OK,
        pages::login(&c.chrome(&viewer, None), false),
    )
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(State(c): State<Console>, jar: CookieJar, Form(f): Form<LoginForm>) -> Response {
    let Some(token) = c.token() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if !same(f.token.trim(), token.expose()) {
        tracing::warn!("console: sign-in with a wrong token");
        let viewer = Viewer::Anonymous;
        return page(
            StatusCode::UNAUTHORIZED,
            pages::login(&c.chrome(&viewer, None), true),
        );
    }
    let id = random_token();
    c.sessions.lock().unwrap_or_else(|p| p.into_inner()).insert(
        id.clone(),
        Session {
            csrf: random_token(),
            expires: Instant::now() + SESSION_TTL,
        },
    );
    let cookie = Cookie::build((COOKIE, id))
        .http_only(true)
        .same_site(SameSite::Strict)
        .path("/")
        .build();
    (jar.add(cookie), Redirect::to("/")).into_response()
}

/// An action's form: only the CSRF token (a Bearer request may send no
/// body at all).
#[derive(Default)]
struct ActionForm {
    csrf: Option<String>,
}

impl ActionForm {
    fn parse(body: &[u8]) -> ActionForm {
        ActionForm {
            csrf: url::form_urlencoded::parse(body)
                .find(|(k, _)| k == "csrf")
                .map(|(_, v)| v.into_owned()),
        }
    }
}

/// Whether this POST may act: a Bearer token, or a session whose CSRF
/// token the form in `body` carries.
fn may_act(
    c: &Console,
    headers: &HeaderMap,
    jar: &CookieJar,
    body: &[u8],
) -> Result<Viewer, Box<Response>> {
    let form = ActionForm::parse(body);
    if c.token().is_none() {
        return Err(Box::new(
            (
                StatusCode::FORBIDDEN,
                "actions need [console] token in the config\n",
            )
                .into_response(),
        ));
    }
    match c.viewer(headers, jar) {
        Viewer::Bearer => Ok(Viewer::Bearer),
        Viewer::Session(csrf) if form.csrf.as_deref().is_some_and(|given| same(given, &csrf)) => {
            Ok(Viewer::Session(csrf))
        }
        Viewer::Session(_) => Err(Box::new(
            (
                StatusCode::FORBIDDEN,
                "the form's CSRF token is missing or wrong; reload the page and try again\n",
            )
                .into_response(),
        )),
        Viewer::Anonymous => Err(Box::new(
            (
                StatusCode::UNAUTHORIZED,
                "sign in at /login, or send Authorization: Bearer <console token>\n",
            )
                .into_response(),
        )),
    }
}

async fn logout(
    State(c): State<Console>,
    headers: HeaderMap,
    jar: CookieJar,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = may_act(&c, &headers, &jar, &body) {
        return *r;
    }
    if let Some(cookie) = jar.get(COOKIE) {
        c.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(cookie.value());
    }
    (
        jar.remove(Cookie::build(COOKIE).path("/")),
        Redirect::to("/"),
    )
        .into_response()
}

/// An action's answer when the store fails it.
fn unavailable(e: impl std::fmt::Display) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response()
}

fn back(url: String, done: &str) -> Response {
    Redirect::to(&format!("{url}?done={done}")).into_response()
}

async fn replay(
    State(c): State<Console>,
    Path(id): Path<String>,
    headers: HeaderMap,
    jar: CookieJar,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = may_act(&c, &headers, &jar, &body) {
        return *r;
    }
    let store = &c.engine.ctx.store;
    let row = match store.delivery(&id).await {
        Ok(Some((row, _, _))) => row,
        Ok(None) => return (StatusCode::NOT_FOUND, "no such delivery\n").into_response(),
        Err(e) => return unavailable(e),
    };
    let config = c.config();
    let enabled = config.enabled_webhook_ids();
    let sel = ReplaySelection {
        event_id: Some(row.event_id.clone()),
        webhook: Some(row.webhook_id.clone()),
        ..Default::default()
    };
    match store.replay(&sel, &enabled, c.engine.ctx.clock.now()).await {
        Ok(done) => {
            tracing::info!(delivery = %id, event_id = %row.event_id, webhook = %row.webhook_id,
                queued = done.queued, "console: replay");
            c.engine.deliverer.wake.notify_one();
            let code = if done.queued > 0 {
                "replayed"
            } else {
                "replay-none"
            };
            back(format!("/deliveries/{}", pages::enc(&id)), code)
        }
        Err(e) => unavailable(e),
    }
}

async fn test_send(
    State(c): State<Console>,
    Path(id): Path<String>,
    headers: HeaderMap,
    jar: CookieJar,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = may_act(&c, &headers, &jar, &body) {
        return *r;
    }
    let config = c.config();
    let Some(webhook) = config.webhooks.iter().find(|w| w.id == id) else {
        return (StatusCode::NOT_FOUND, "no such webhook in the config\n").into_response();
    };
    let url = format!("/webhooks/{}", pages::enc(&id));
    match crate::deliver::test_send(
        &c.engine.ctx.store,
        &c.sender,
        webhook,
        c.engine.ctx.clock.now(),
    )
    .await
    {
        Ok(a) if a.status_code.is_some_and(|s| (200..300).contains(&s)) => back(url, "test-ok"),
        Ok(_) => back(url, "test-failed"),
        Err(crate::deliver::TestSendError::TooSoon { .. }) => back(url, "test-soon"),
        Err(e) => unavailable(e),
    }
}

async fn resume(
    State(c): State<Console>,
    Path(id): Path<String>,
    headers: HeaderMap,
    jar: CookieJar,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = may_act(&c, &headers, &jar, &body) {
        return *r;
    }
    let config = c.config();
    if !config.webhooks.iter().any(|w| w.id == id) {
        return (StatusCode::NOT_FOUND, "no such webhook in the config\n").into_response();
    }
    match c.engine.ctx.store.resume_webhook(&id).await {
        Ok(was) => {
            if was {
                tracing::info!(webhook = %id, "console: webhook resumed");
                c.engine.deliverer.forget_paused();
                c.engine.deliverer.wake.notify_one();
            }
            back(
                format!("/webhooks/{}", pages::enc(&id)),
                if was { "resumed" } else { "not-paused" },
            )
        }
        Err(e) => unavailable(e),
    }
}

async fn poll_now(
    State(c): State<Console>,
    Path(id): Path<String>,
    headers: HeaderMap,
    jar: CookieJar,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = may_act(&c, &headers, &jar, &body) {
        return *r;
    }
    let config = c.config();
    if !config.accounts.iter().any(|a| a.id == id && a.enabled) {
        return (
            StatusCode::NOT_FOUND,
            "no such enabled account in the config\n",
        )
            .into_response();
    }
    tracing::info!(account = %id, "console: poll now");
    let _ = c.engine.poll_now.send(id.clone());
    back(format!("/accounts/{}", pages::enc(&id)), "polling")
}
