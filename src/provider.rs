//! Fetching a resource from a provider's REST API, one page at a time.
//!
//! [`ProviderClient`] holds what is shared across polls: the HTTP client with
//! its connection pool, OAuth2 tokens and the per-provider rate limiters.
//! [`Pager`] walks one resource of one account through its pagination and
//! hands back each page's record array; it never holds more than one page.
//!
//! Real APIs are slow, rate-limited and sometimes return garbage, so every
//! request is bounded (timeout, `max_page_bytes`), transient failures are
//! retried a bounded number of times with backoff, and anything the pager
//! cannot trust (a non-JSON body, a pagination loop, a records pointer that
//! is not an array) is an error. An error ends the scan, and a scan that did
//! not finish deletes nothing.
//!
//! Every error names a redacted URL, never a response body or a credential.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash as _, Hasher as _};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;
use url::Url;

use crate::config::{
    Account, Auth, ClientAuth, OAuth2, Pagination, Provider, Resource, TimeFormat,
};
use crate::redact::{redact_text, redact_url};

/// The longest `Retry-After` synthd waits for inside a poll; a longer one
/// fails the poll and the next scheduled poll tries again.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);
/// The longest single backoff step between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// An OAuth2 token response larger than this is not a token response.
const MAX_TOKEN_BYTES: u64 = 1 << 20;

/// Why fetching a resource failed. Messages carry a redacted URL and never a
/// body or credential.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("GET {url}: HTTP {status}{hint}")]
    Status {
        url: String,
        status: u16,
        hint: &'static str,
    },
    #[error("GET {url}: {kind}: {detail}")]
    Transport {
        url: String,
        kind: &'static str,
        detail: String,
    },
    #[error(
        "GET {url}: HTTP {status} asks to wait {wait_secs}s (Retry-After), longer than the {}s a poll waits; the next scheduled poll tries again",
        MAX_RETRY_AFTER.as_secs()
    )]
    RetryAfterTooLong {
        url: String,
        status: u16,
        wait_secs: u64,
    },
    #[error("{last} (gave up after {attempts} attempts)")]
    GaveUp {
        attempts: u32,
        last: Box<FetchError>,
    },
    #[error("GET {url}: response is not JSON (content-type {content_type:?}, {what})")]
    NotJson {
        url: String,
        content_type: String,
        what: String,
    },
    #[error("GET {url}: response JSON is truncated ({detail})")]
    TruncatedJson { url: String, detail: String },
    #[error("GET {url}: response is larger than the {limit}-byte page limit (max_page_bytes)")]
    TooLarge { url: String, limit: u64 },
    #[error("GET {url}: records pointer {pointer:?} {what}")]
    Records {
        url: String,
        pointer: String,
        what: &'static str,
    },
    #[error("GET {url}: pagination loop: the provider returned the same {what} twice")]
    Loop { url: String, what: &'static str },
    #[error(
        "stopped after max_pages = {max} pages with more to fetch; raise max_pages or narrow the resource"
    )]
    MaxPages { max: u64 },
    #[error("GET {url}: next page URL {detail}")]
    BadNext { url: String, detail: String },
    #[error("OAuth2 token request to {url} failed: {detail}")]
    OAuth { url: String, detail: String },
}

/// Shared state for talking to providers. Clones share the connection pool,
/// the token cache and the rate limiters, so one client serves the daemon.
#[derive(Clone)]
pub struct ProviderClient {
    http: reqwest::Client,
    /// One slot per OAuth2 client, locked while a token is fetched so that
    /// concurrent polls of one client fetch it once.
    tokens: Arc<StdMutex<HashMap<[u8; 32], TokenSlot>>>,
    /// Per provider name: when its next request may start.
    next_slot: Arc<StdMutex<HashMap<String, Instant>>>,
}

/// The cached token of one OAuth2 client; empty until the first fetch.
type TokenSlot = Arc<Mutex<Option<CachedToken>>>;

struct CachedToken {
    token: String,
    refresh_at: Instant,
}

impl ProviderClient {
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .user_agent(concat!("synthd/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::limited(5))
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .expect("TLS backend initialises");
        ProviderClient {
            http,
            tokens: Arc::default(),
            next_slot: Arc::default(),
        }
    }

    /// Waits for the provider's next request slot. Slots are spaced evenly
    /// (`10/s` → one every 100 ms) and shared by every account of the
    /// provider, so no window of `per` ever holds more than `requests`
    /// requests however many accounts poll at once.
    async fn wait_turn(&self, provider: &Provider) {
        let Some(limit) = provider.rate_limit else {
            return;
        };
        let spacing = limit.per / limit.requests;
        let at = {
            let mut slots = self.next_slot.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let slot = slots.entry(provider.name.clone()).or_insert(now);
            let at = (*slot).max(now);
            *slot = at + spacing;
            at
        };
        tokio::time::sleep_until(at.into()).await;
    }

    /// A bearer token for `auth`: the cached one unless it is due for
    /// refresh or is `rejected` (the provider just answered 401 to it).
    async fn oauth_token(
        &self,
        auth: &OAuth2,
        timeout: Duration,
        rejected: Option<&str>,
    ) -> Result<String, SendError> {
        let slot = {
            let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
            tokens.entry(token_key(auth)).or_default().clone()
        };
        let mut slot = slot.lock().await;
        if let Some(cached) = slot.as_ref()
            && cached.refresh_at > Instant::now()
            && Some(cached.token.as_str()) != rejected
        {
            return Ok(cached.token.clone());
        }
        let (token, lifetime) = self.fetch_token(auth, timeout).await?;
        // Refresh a minute before expiry, or at half-life for short tokens.
        let margin = Duration::from_secs(60).min(lifetime / 2);
        *slot = Some(CachedToken {
            token: token.clone(),
            refresh_at: Instant::now() + lifetime - margin,
        });
        tracing::debug!(token_url = %redact_url(&auth.token_url), expires_in = lifetime.as_secs(),
            "fetched an OAuth2 token");
        Ok(token)
    }

    async fn fetch_token(
        &self,
        auth: &OAuth2,
        timeout: Duration,
    ) -> Result<(String, Duration), SendError> {
        let shown = redact_url(&auth.token_url);
        let fail = |detail: String, transient: bool| SendError {
            error: FetchError::OAuth {
                url: shown.clone(),
                detail,
            },
            transient,
        };
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(scope) = &auth.scope {
            form.push(("scope", scope));
        }
        if auth.client_auth == ClientAuth::Body {
            form.push(("client_id", &auth.client_id));
            form.push(("client_secret", auth.client_secret.expose()));
        }
        let mut req = self
            .http
            .post(auth.token_url.clone())
            .timeout(timeout)
            .header(header::ACCEPT, "application/json")
            .form(&form);
        if auth.client_auth == ClientAuth::Basic {
            req = req.basic_auth(&auth.client_id, Some(auth.client_secret.expose()));
        }
        let resp = req
            .send()
            .await
            .map_err(|e| fail(redact_text(&error_chain(&e.without_url())), true))?;
        let status = resp.status();
        let body = read_limited(resp, MAX_TOKEN_BYTES)
            .await
            .map_err(|e| match e {
                ReadError::TooLarge => fail("the response is too large".into(), false),
                ReadError::Http(e) => fail(redact_text(&error_chain(&e.without_url())), true),
            })?;
        let body: Option<Value> = serde_json::from_slice(&body).ok();
        if !status.is_success() {
            // The OAuth2 error code (RFC 6749 §5.2) is safe to show; the
            // description might echo input, so it is not shown.
            let code = body
                .as_ref()
                .and_then(|b| b.get("error"))
                .and_then(Value::as_str)
                .filter(|c| c.len() <= 64 && c.chars().all(|ch| ch.is_ascii_graphic()))
                .map(|c| format!(" ({c})"))
                .unwrap_or_default();
            return Err(fail(
                format!(
                    "HTTP {}{code}; check client_id, client_secret and scope",
                    status.as_u16()
                ),
                transient_status(status),
            ));
        }
        let Some(body) = body else {
            return Err(fail("the response is not JSON".into(), false));
        };
        let Some(token) = body.get("access_token").and_then(Value::as_str) else {
            return Err(fail("the response has no access_token".into(), false));
        };
        let lifetime = match body.get("expires_in") {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        }
        .unwrap_or(3600);
        Ok((token.to_string(), Duration::from_secs(lifetime)))
    }
}

impl Default for ProviderClient {
    fn default() -> Self {
        Self::new()
    }
}

/// Identifies an OAuth2 client in the token cache without keeping its
/// secret in the key.
fn token_key(auth: &OAuth2) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [
        auth.token_url.as_str(),
        &auth.client_id,
        auth.client_secret.expose(),
        auth.scope.as_deref().unwrap_or(""),
        if auth.client_auth == ClientAuth::Basic {
            "basic"
        } else {
            "body"
        },
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().into()
}

/// Walks one resource of one account page by page.
///
/// After an error the pager stays on the page that failed: calling
/// [`Pager::next_page`] again retries it. `Ok(None)` means every page was
/// fetched.
pub struct Pager<'a> {
    client: &'a ProviderClient,
    account: &'a Account,
    provider: &'a Provider,
    resource: &'a Resource,
    since: Option<DateTime<Utc>>,
    next: Option<NextRequest>,
    pages: u64,
    /// Hashes of every URL fetched in this scan, for the loop guard.
    fetched: HashSet<u64>,
    last_page_digest: Option<[u8; 32]>,
}

#[derive(Clone)]
enum NextRequest {
    /// Our own URL plus pagination parameters.
    Params(Vec<(String, String)>),
    /// A URL handed to us by the provider (Link header or next_url).
    Url(Url),
}

impl<'a> Pager<'a> {
    /// `since`: fetch only records changed since then (incremental poll).
    pub fn new(
        client: &'a ProviderClient,
        account: &'a Account,
        provider: &'a Provider,
        resource: &'a Resource,
        since: Option<DateTime<Utc>>,
    ) -> Self {
        let first = match &resource.pagination {
            Pagination::Page {
                page_param,
                size_param,
                size,
                first_page,
            } => vec![
                (page_param.clone(), first_page.to_string()),
                (size_param.clone(), size.to_string()),
            ],
            Pagination::Offset {
                offset_param,
                limit_param,
                size,
            } => vec![
                (offset_param.clone(), "0".into()),
                (limit_param.clone(), size.to_string()),
            ],
            _ => Vec::new(),
        };
        Pager {
            client,
            account,
            provider,
            resource,
            since,
            next: Some(NextRequest::Params(first)),
            pages: 0,
            fetched: HashSet::new(),
            last_page_digest: None,
        }
    }

    pub fn pages_fetched(&self) -> u64 {
        self.pages
    }

    fn base_url(&self) -> Url {
        if let Ok(abs) = Url::parse(&self.resource.path) {
            return abs;
        }
        let mut url = self.account.base_url.clone();
        let path = format!("{}{}", url.path().trim_end_matches('/'), self.resource.path);
        url.set_path(&path);
        url
    }

    fn build_url(&self, next: &NextRequest) -> Url {
        let mut url = match next {
            NextRequest::Url(u) => u.clone(),
            NextRequest::Params(params) => {
                let mut url = self.base_url();
                {
                    let mut q = url.query_pairs_mut();
                    for (k, v) in &self.resource.query {
                        q.append_pair(k, v);
                    }
                    if let (Some(since), Some(us)) = (self.since, &self.resource.updated_since) {
                        q.append_pair(&us.param, &format_since(since, us.format));
                    }
                    for (k, v) in params {
                        q.append_pair(k, v);
                    }
                }
                if url.query() == Some("") {
                    url.set_query(None);
                }
                url
            }
        };
        if let Auth::Query { name, value } = &self.account.auth
            && !url.query_pairs().any(|(k, _)| k == name.as_str())
        {
            url.query_pairs_mut().append_pair(name, value.expose());
        }
        url
    }

    /// The next page's records, or `None` when the scan is complete.
    pub async fn next_page(&mut self) -> Result<Option<Vec<Value>>, FetchError> {
        let Some(next) = self.next.clone() else {
            return Ok(None);
        };
        if self.pages >= self.provider.max_pages {
            return Err(FetchError::MaxPages {
                max: self.provider.max_pages,
            });
        }
        let url = self.build_url(&next);
        let shown = redact_url(&url);
        let url_hash = {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            url.as_str().hash(&mut h);
            h.finish()
        };
        if self.fetched.contains(&url_hash) {
            return Err(FetchError::Loop {
                url: shown,
                what: match self.resource.pagination {
                    Pagination::Cursor { .. } => "cursor",
                    _ => "next-page URL",
                },
            });
        }
        let (headers, bytes) = self.get(&url).await?;
        let mut body = parse_json(&shown, &headers, &bytes)?;
        drop(bytes);
        let records = take_records(&shown, &mut body, &self.resource.records)?;
        self.next = self.following(&shown, &url, next, &headers, &body, &records)?;
        self.fetched.insert(url_hash);
        self.pages += 1;
        Ok(Some(records))
    }

    /// What to request after the page just fetched, if anything.
    fn following(
        &mut self,
        shown: &str,
        url: &Url,
        current: NextRequest,
        headers: &HeaderMap,
        body: &Value,
        records: &[Value],
    ) -> Result<Option<NextRequest>, FetchError> {
        let full_page = |size: u64| !records.is_empty() && records.len() as u64 >= size;
        Ok(match (&self.resource.pagination, current) {
            (
                Pagination::Page {
                    page_param, size, ..
                },
                NextRequest::Params(mut params),
            ) => {
                if !full_page(*size) {
                    return Ok(None);
                }
                self.guard_repeat(shown, records)?;
                bump(&mut params, page_param, 1);
                Some(NextRequest::Params(params))
            }
            (
                Pagination::Offset {
                    offset_param, size, ..
                },
                NextRequest::Params(mut params),
            ) => {
                if !full_page(*size) {
                    return Ok(None);
                }
                self.guard_repeat(shown, records)?;
                bump(&mut params, offset_param, records.len() as u64);
                Some(NextRequest::Params(params))
            }
            (Pagination::Cursor { cursor_param, next }, _) => match body.pointer(next) {
                Some(Value::String(c)) if !c.is_empty() => {
                    Some(NextRequest::Params(vec![(cursor_param.clone(), c.clone())]))
                }
                Some(Value::Number(n)) => Some(NextRequest::Params(vec![(
                    cursor_param.clone(),
                    n.to_string(),
                )])),
                _ => None,
            },
            (Pagination::Link, _) => match next_link(headers) {
                Some(link) => Some(NextRequest::Url(resolve_next(shown, url, &link)?)),
                None => None,
            },
            (Pagination::NextUrl { next }, _) => match body.pointer(next) {
                Some(Value::String(s)) if !s.is_empty() => {
                    Some(NextRequest::Url(resolve_next(shown, url, s)?))
                }
                _ => None,
            },
            _ => None,
        })
    }

    /// A page/offset provider that ignores the page parameter returns the
    /// same full page forever; stop instead of looping to max_pages.
    fn guard_repeat(&mut self, shown: &str, records: &[Value]) -> Result<(), FetchError> {
        let mut h = Sha256::new();
        for r in records {
            h.update(serde_json::to_vec(r).unwrap_or_default());
            h.update(b"\n");
        }
        let digest: [u8; 32] = h.finalize().into();
        if self.last_page_digest == Some(digest) {
            return Err(FetchError::Loop {
                url: shown.to_string(),
                what: "page",
            });
        }
        self.last_page_digest = Some(digest);
        Ok(())
    }

    /// One GET with auth, rate limit, retries and the size limit.
    async fn get(&self, url: &Url) -> Result<(HeaderMap, Vec<u8>), FetchError> {
        let shown = redact_url(url);
        let attempts = self.provider.retries + 1;
        let mut rejected_token: Option<String> = None;
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.client.wait_turn(self.provider).await;
            let (error, retry_after) = match self.send_once(url, rejected_token.as_deref()).await {
                Ok(Response::Body(headers, bytes)) => return Ok((headers, bytes)),
                Ok(Response::Unauthorized {
                    oauth_token: Some(token),
                }) if rejected_token.is_none() => {
                    // A token can be revoked or expire early: fetch a new
                    // one, once, without spending a retry on it.
                    rejected_token = Some(token);
                    attempt -= 1;
                    continue;
                }
                Ok(Response::Unauthorized { .. }) => {
                    return Err(FetchError::Status {
                        url: shown,
                        status: 401,
                        hint: " (check the account's credentials)",
                    });
                }
                Ok(Response::Status(status, retry_after)) => {
                    let error = status_error(&shown, status);
                    if !transient_status(status) {
                        return Err(error);
                    }
                    if let Some(wait) = retry_after
                        && wait > MAX_RETRY_AFTER
                    {
                        return Err(FetchError::RetryAfterTooLong {
                            url: shown,
                            status: status.as_u16(),
                            wait_secs: wait.as_secs(),
                        });
                    }
                    (error, retry_after)
                }
                Err(SendError {
                    error,
                    transient: false,
                }) => return Err(error),
                Err(SendError {
                    error,
                    transient: true,
                }) => (error, None),
            };
            if attempt >= attempts {
                return Err(if attempt == 1 {
                    error
                } else {
                    FetchError::GaveUp {
                        attempts: attempt,
                        last: Box::new(error),
                    }
                });
            }
            let wait =
                backoff(self.provider.retry_backoff, attempt).max(retry_after.unwrap_or_default());
            tracing::warn!(account = %self.account.id, resource = %self.resource.name,
                error = %error, attempt, retry_in_ms = wait.as_millis() as u64,
                "provider request failed; retrying");
            tokio::time::sleep(wait).await;
        }
    }

    async fn send_once(
        &self,
        url: &Url,
        rejected_token: Option<&str>,
    ) -> Result<Response, SendError> {
        let shown = redact_url(url);
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        for (k, v) in &self.resource.headers {
            // Validated in config; a resource's header replaces the default.
            if let (Ok(k), Ok(v)) = (HeaderName::try_from(k.as_str()), HeaderValue::try_from(v)) {
                headers.insert(k, v);
            }
        }
        let mut oauth_token = None;
        match &self.account.auth {
            Auth::None | Auth::Query { .. } => {}
            Auth::Bearer { token } => {
                headers.insert(
                    header::AUTHORIZATION,
                    sensitive(&shown, &format!("Bearer {}", token.expose()))?,
                );
            }
            Auth::Basic { username, password } => {
                use base64::Engine as _;
                let pair = format!("{username}:{}", password.expose());
                let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
                headers.insert(
                    header::AUTHORIZATION,
                    sensitive(&shown, &format!("Basic {encoded}"))?,
                );
            }
            Auth::Header { name, value } => {
                if let Ok(name) = HeaderName::try_from(name.as_str()) {
                    headers.insert(name, sensitive(&shown, value.expose())?);
                }
            }
            Auth::OAuth2(auth) => {
                let token = self
                    .client
                    .oauth_token(auth, self.provider.timeout, rejected_token)
                    .await?;
                headers.insert(
                    header::AUTHORIZATION,
                    sensitive(&shown, &format!("Bearer {token}"))?,
                );
                oauth_token = Some(token);
            }
        }
        let resp = self
            .client
            .http
            .get(url.clone())
            .timeout(self.provider.timeout)
            .headers(headers)
            .send()
            .await
            .map_err(|e| transport(&shown, e))?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED {
            return Ok(Response::Unauthorized { oauth_token });
        }
        if !status.is_success() {
            let retry_after = resp
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            return Ok(Response::Status(status, retry_after));
        }
        let headers = resp.headers().clone();
        let limit = self.provider.max_page_bytes;
        let bytes = read_limited(resp, limit).await.map_err(|e| match e {
            ReadError::TooLarge => SendError {
                error: FetchError::TooLarge { url: shown, limit },
                transient: false,
            },
            ReadError::Http(e) => transport(&redact_url(url), e),
        })?;
        Ok(Response::Body(headers, bytes))
    }
}

/// The `since` value in the provider's format.
pub fn format_since(since: DateTime<Utc>, format: TimeFormat) -> String {
    match format {
        TimeFormat::Rfc3339 => since.to_rfc3339_opts(SecondsFormat::Secs, true),
        TimeFormat::Unix => since.timestamp().to_string(),
        TimeFormat::UnixMs => since.timestamp_millis().to_string(),
        TimeFormat::Date => since.format("%Y-%m-%d").to_string(),
    }
}

/// A credential as a header value that is marked sensitive (kept out of
/// HTTP/2 header tables and debug output).
fn sensitive(shown: &str, value: &str) -> Result<HeaderValue, SendError> {
    let mut v = HeaderValue::try_from(value).map_err(|_| SendError {
        error: FetchError::Transport {
            url: shown.to_string(),
            kind: "bad credential",
            detail: "the credential contains characters not allowed in an HTTP header".into(),
        },
        transient: false,
    })?;
    v.set_sensitive(true);
    Ok(v)
}

enum Response {
    Body(HeaderMap, Vec<u8>),
    /// HTTP 401, with the OAuth2 token that was refused (if one was sent).
    Unauthorized {
        oauth_token: Option<String>,
    },
    Status(StatusCode, Option<Duration>),
}

struct SendError {
    error: FetchError,
    transient: bool,
}

/// 408, 429 and 5xx may succeed when tried again; other statuses will not.
fn transient_status(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
}

fn status_error(shown: &str, status: StatusCode) -> FetchError {
    FetchError::Status {
        url: shown.to_string(),
        status: status.as_u16(),
        hint: match status.as_u16() {
            403 => " (check the account's credentials and scopes)",
            404 => " (check base_url and the resource path)",
            429 => " (rate limited; consider the provider's rate_limit)",
            _ => "",
        },
    }
}

enum ReadError {
    TooLarge,
    Http(reqwest::Error),
}

/// Reads the (decompressed) body, failing as soon as it passes `limit`, so
/// a huge or endless response never sits in memory.
async fn read_limited(mut resp: reqwest::Response, limit: u64) -> Result<Vec<u8>, ReadError> {
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(ReadError::TooLarge);
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(ReadError::Http)? {
        if bytes.len() as u64 + chunk.len() as u64 > limit {
            return Err(ReadError::TooLarge);
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

fn transport(shown: &str, e: reqwest::Error) -> SendError {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "reading the body failed"
    } else {
        "request failed"
    };
    SendError {
        error: FetchError::Transport {
            url: shown.to_string(),
            kind,
            detail: redact_text(&error_chain(&e.without_url())),
        },
        transient: true,
    }
}

/// The error and its sources, joined, so "connection refused" is not lost.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Exponential backoff with ±25 % jitter: base, 2·base, 4·base… capped at a
/// minute.
fn backoff(base: Duration, attempt: u32) -> Duration {
    let exp = base
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
        .min(MAX_BACKOFF);
    exp.mul_f64(rand::random_range(0.75..1.25))
}

/// `Retry-After` as seconds or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = DateTime::parse_from_rfc2822(v.trim()).ok()?;
    Some(
        (when.with_timezone(&Utc) - Utc::now())
            .to_std()
            .unwrap_or_default(),
    )
}

fn parse_json(shown: &str, headers: &HeaderMap, bytes: &[u8]) -> Result<Value, FetchError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_string();
        if e.classify() == serde_json::error::Category::Eof
            && !bytes.iter().all(u8::is_ascii_whitespace)
        {
            return FetchError::TruncatedJson {
                url: shown.to_string(),
                detail: e.to_string(),
            };
        }
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        let what = match first {
            None => "empty body".to_string(),
            Some(b'<') => "looks like HTML".to_string(),
            Some(_) => format!(
                "invalid at {}",
                e.to_string().rsplit_once(" at ").map_or("start", |x| x.1)
            ),
        };
        FetchError::NotJson {
            url: shown.to_string(),
            content_type,
            what,
        }
    })
}

/// Moves the record array out of the body. `null` counts as an empty array
/// (some APIs write an empty list that way); anything else that is not an
/// array is an error.
fn take_records(shown: &str, body: &mut Value, pointer: &str) -> Result<Vec<Value>, FetchError> {
    let err = |what| FetchError::Records {
        url: shown.to_string(),
        pointer: pointer.to_string(),
        what,
    };
    match body.pointer_mut(pointer) {
        None => Err(err("does not exist in the response")),
        Some(Value::Array(items)) => Ok(std::mem::take(items)),
        Some(Value::Null) => Ok(Vec::new()),
        Some(_) => Err(err("does not point at an array")),
    }
}

fn bump(params: &mut [(String, String)], name: &str, by: u64) {
    for (k, v) in params.iter_mut() {
        if k == name {
            let n: u64 = v.parse().unwrap_or(0);
            *v = (n + by).to_string();
        }
    }
}

fn resolve_next(shown: &str, current: &Url, next: &str) -> Result<Url, FetchError> {
    let url = current.join(next).map_err(|_| FetchError::BadNext {
        url: shown.to_string(),
        detail: "is not a URL".into(),
    })?;
    if url.host_str() != current.host_str()
        || url.port_or_known_default() != current.port_or_known_default()
        || url.scheme() != current.scheme()
    {
        // Following a next link to another origin would send our
        // credentials there.
        return Err(FetchError::BadNext {
            url: shown.to_string(),
            detail: format!("points at another origin ({})", redact_url(&url)),
        });
    }
    Ok(url)
}

/// The `rel="next"` target of an RFC 8288 `Link` header.
pub fn next_link(headers: &HeaderMap) -> Option<String> {
    for value in headers.get_all(header::LINK) {
        let Ok(value) = value.to_str() else { continue };
        for part in split_links(value) {
            let part = part.trim();
            let Some(end) = part.find('>') else { continue };
            if !part.starts_with('<') {
                continue;
            }
            let target = &part[1..end];
            let is_next = part[end + 1..].split(';').any(|param| {
                let param = param.trim();
                param
                    .strip_prefix("rel=")
                    .map(|v| {
                        v.trim_matches('"')
                            .split_whitespace()
                            .any(|r| r.eq_ignore_ascii_case("next"))
                    })
                    .unwrap_or(false)
            });
            if is_next {
                return Some(target.to_string());
            }
        }
    }
    None
}

/// Splits a Link header on the commas between links (not inside `<…>`).
fn split_links(value: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut inside = false;
    let mut start = 0;
    for (i, c) in value.char_indices() {
        match c {
            '<' => inside = true,
            '>' => inside = false,
            ',' if !inside => {
                parts.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&value[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_header_next_is_found() {
        let mut h = HeaderMap::new();
        h.insert(
            header::LINK,
            HeaderValue::from_static(
                "<https://api.x/items?page=1>; rel=\"prev\", <https://api.x/items?page=3&a=1,2>; rel=\"next\"",
            ),
        );
        assert_eq!(
            next_link(&h).as_deref(),
            Some("https://api.x/items?page=3&a=1,2")
        );
        h.insert(
            header::LINK,
            HeaderValue::from_static("<https://api.x/items?page=1>; rel=\"prev\""),
        );
        assert_eq!(next_link(&h), None);
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("soon"), None);
        let past = "Wed, 21 Oct 2015 07:28:00 GMT";
        assert_eq!(parse_retry_after(past), Some(Duration::ZERO));
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let base = Duration::from_millis(100);
        for attempt in 1..=3 {
            let d = backoff(base, attempt);
            let nominal = base * 2u32.pow(attempt - 1);
            assert!(
                d >= nominal.mul_f64(0.75) && d <= nominal.mul_f64(1.25),
                "{d:?}"
            );
        }
        assert!(backoff(Duration::from_secs(30), 10) <= MAX_BACKOFF.mul_f64(1.25));
    }

    #[test]
    fn records_pointer_errors_are_specific() {
        let mut body = serde_json::json!({"data": {"x": 1}, "list": [1, 2]});
        assert!(matches!(
            take_records("u", &mut body, "/data"),
            Err(FetchError::Records {
                what: "does not point at an array",
                ..
            })
        ));
        assert!(matches!(
            take_records("u", &mut body, "/nope"),
            Err(FetchError::Records {
                what: "does not exist in the response",
                ..
            })
        ));
        assert_eq!(take_records("u", &mut body, "/list").unwrap().len(), 2);
    }

    #[test]
    fn html_and_truncated_bodies_are_told_apart() {
        let h = HeaderMap::new();
        let html = parse_json("u", &h, b"<html><body>login</body></html>").unwrap_err();
        assert!(html.to_string().contains("looks like HTML"), "{html}");
        assert!(!html.to_string().contains("login"));
        let cut = parse_json("u", &h, br#"{"data":[{"id":1},"#).unwrap_err();
        assert!(matches!(cut, FetchError::TruncatedJson { .. }), "{cut}");
    }

    #[test]
    fn next_links_to_other_origins_are_refused() {
        let cur = Url::parse("https://api.example.com/v1/items?page=1").unwrap();
        assert!(resolve_next("u", &cur, "/v1/items?page=2").is_ok());
        assert!(resolve_next("u", &cur, "?page=2").is_ok());
        assert!(resolve_next("u", &cur, "https://evil.example.net/x").is_err());
        assert!(resolve_next("u", &cur, "https://api.example.com:8443/x").is_err());
        assert!(resolve_next("u", &cur, "http://api.example.com/x").is_err());
    }

    #[test]
    fn since_formats() {
        let t = DateTime::parse_from_rfc3339("2026-11-23T10:00:00.250Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(format_since(t, TimeFormat::Rfc3339), "2026-11-23T10:00:00Z");
        assert_eq!(format_since(t, TimeFormat::Unix), "1795428000");
        assert_eq!(format_since(t, TimeFormat::UnixMs), "1795428000250");
        assert_eq!(format_since(t, TimeFormat::Date), "2026-11-23");
    }
}
