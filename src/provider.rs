//! Fetching a resource from a provider's REST API, one page at a time.
//!
//! [`ProviderClient`] holds what is shared across polls: the HTTP client with
//! its connection pool, OAuth2 tokens and per-provider rate limiters.
//! [`Pager`] walks one resource of one account through its pagination and
//! hands back each page's record array; it never holds more than one page.
//!
//! Every error names the account, resource and a redacted URL, never a
//! response body or a credential.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;
use url::Url;

use crate::config::{Account, Auth, Pagination, Provider, RateLimit, Resource, TimeFormat};
use crate::redact::{redact_text, redact_url};

/// Attempts per request for transient failures (5xx, 429, timeouts,
/// connection errors) before the poll fails.
const REQUEST_ATTEMPTS: u32 = 4;
/// The longest `Retry-After` we wait for inside a poll; a longer one fails
/// the poll and the next scheduled poll tries again.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

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
    #[error("more than max_pages = {max} pages; raise it or narrow the resource")]
    MaxPages { max: u64 },
    #[error("GET {url}: next page URL {detail}")]
    BadNext { url: String, detail: String },
    #[error("OAuth2 token request to {url} failed: {detail}")]
    OAuth { url: String, detail: String },
}

/// Shared state for talking to providers.
#[derive(Clone)]
pub struct ProviderClient {
    http: reqwest::Client,
    tokens: Arc<Mutex<HashMap<String, CachedToken>>>,
    limiters: Arc<Mutex<HashMap<String, Arc<Mutex<Instant>>>>>,
    retry_base: Duration,
}

#[derive(Clone)]
struct CachedToken {
    token: String,
    expires_at: Instant,
}

impl ProviderClient {
    pub fn new() -> Self {
        Self::with_retry_base(Duration::from_millis(500))
    }

    /// `retry_base` is the first backoff step; tests shrink it.
    pub fn with_retry_base(retry_base: Duration) -> Self {
        let http = reqwest::Client::builder()
            .user_agent(concat!("synthd/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::limited(5))
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .expect("TLS backend initialises");
        ProviderClient {
            http,
            tokens: Arc::default(),
            limiters: Arc::default(),
            retry_base,
        }
    }

    /// Waits for the provider's rate limit, shared by all its accounts.
    async fn rate_limit(&self, provider: &str, limit: Option<RateLimit>) {
        let Some(limit) = limit else { return };
        let slot = {
            let mut map = self.limiters.lock().await;
            map.entry(provider.to_string())
                .or_insert_with(|| Arc::new(Mutex::new(Instant::now())))
                .clone()
        };
        let spacing = limit.per / limit.requests;
        let wait_until = {
            let mut next = slot.lock().await;
            let now = Instant::now();
            let at = (*next).max(now);
            *next = at + spacing;
            at
        };
        tokio::time::sleep_until(wait_until.into()).await;
    }

    async fn oauth_token(&self, auth: &Auth, force: bool) -> Result<Option<String>, FetchError> {
        let Auth::OAuth2 {
            token_url,
            client_id,
            client_secret,
            scope,
        } = auth
        else {
            return Ok(None);
        };
        let key = format!("{token_url}\n{client_id}");
        let mut tokens = self.tokens.lock().await;
        if !force
            && let Some(t) = tokens.get(&key)
            && t.expires_at > Instant::now()
        {
            return Ok(Some(t.token.clone()));
        }
        let shown = redact_url(token_url);
        let mut form = vec![
            ("grant_type", "client_credentials".to_string()),
            ("client_id", client_id.clone()),
            ("client_secret", client_secret.expose().to_string()),
        ];
        if let Some(s) = scope {
            form.push(("scope", s.clone()));
        }
        let resp = self
            .http
            .post(token_url.clone())
            .form(&form)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| FetchError::OAuth {
                url: shown.clone(),
                detail: redact_text(&e.without_url().to_string()),
            })?;
        let status = resp.status();
        if !status.is_success() {
            return Err(FetchError::OAuth {
                url: shown,
                detail: format!(
                    "HTTP {}; check client_id and client_secret",
                    status.as_u16()
                ),
            });
        }
        let body: Value = resp.json().await.map_err(|_| FetchError::OAuth {
            url: shown.clone(),
            detail: "response is not JSON".into(),
        })?;
        let Some(token) = body.get("access_token").and_then(Value::as_str) else {
            return Err(FetchError::OAuth {
                url: shown,
                detail: "response has no access_token".into(),
            });
        };
        let lifetime = body
            .get("expires_in")
            .and_then(Value::as_u64)
            .unwrap_or(3600);
        // Refresh a minute early (or at half-life for short tokens).
        let margin = Duration::from_secs(60).min(Duration::from_secs(lifetime / 2));
        tokens.insert(
            key,
            CachedToken {
                token: token.to_string(),
                expires_at: Instant::now() + Duration::from_secs(lifetime) - margin,
            },
        );
        Ok(Some(token.to_string()))
    }
}

impl Default for ProviderClient {
    fn default() -> Self {
        Self::new()
    }
}

/// Walks one resource of one account page by page.
pub struct Pager<'a> {
    client: &'a ProviderClient,
    account: &'a Account,
    provider: &'a Provider,
    resource: &'a Resource,
    since: Option<DateTime<Utc>>,
    next: Option<NextRequest>,
    pages: u64,
    seen_urls: HashSet<String>,
    last_page_digest: Option<[u8; 32]>,
}

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
            seen_urls: HashSet::new(),
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

    fn since_value(&self, since: DateTime<Utc>, format: TimeFormat) -> String {
        match format {
            TimeFormat::Rfc3339 => since.to_rfc3339_opts(SecondsFormat::Secs, true),
            TimeFormat::Unix => since.timestamp().to_string(),
            TimeFormat::UnixMs => since.timestamp_millis().to_string(),
            TimeFormat::Date => since.format("%Y-%m-%d").to_string(),
        }
    }

    fn build_url(&self, next: &NextRequest) -> Url {
        let mut url = match next {
            NextRequest::Url(u) => u.clone(),
            NextRequest::Params(_) => self.base_url(),
        };
        if let NextRequest::Params(params) = next {
            let mut q = url.query_pairs_mut();
            for (k, v) in &self.resource.query {
                q.append_pair(k, v);
            }
            if let (Some(since), Some(us)) = (self.since, &self.resource.updated_since) {
                q.append_pair(&us.param, &self.since_value(since, us.format));
            }
            for (k, v) in params {
                q.append_pair(k, v);
            }
        }
        if let Auth::Query { name, value } = &self.account.auth
            && !url.query_pairs().any(|(k, _)| k == name.as_str())
        {
            url.query_pairs_mut().append_pair(name, value.expose());
        }
        url
    }

    /// The next page's records, or `None` when the scan is complete.
    pub async fn next_page(&mut self) -> Result<Option<Vec<Value>>, FetchError> {
        let Some(next) = self.next.take() else {
            return Ok(None);
        };
        if self.pages >= self.provider.max_pages {
            return Err(FetchError::MaxPages {
                max: self.provider.max_pages,
            });
        }
        let url = self.build_url(&next);
        let shown = redact_url(&url);
        if !self.seen_urls.insert(url.to_string()) {
            return Err(FetchError::Loop {
                url: shown,
                what: "next-page URL",
            });
        }
        let (headers, bytes) = self.get(&url).await?;
        self.pages += 1;
        let mut body = parse_json(&shown, &headers, &bytes)?;
        drop(bytes);

        let records = take_records(&shown, &mut body, &self.resource.records)?;
        let full_page = |size: u64| records.len() as u64 >= size && !records.is_empty();
        self.next = match (&self.resource.pagination, next) {
            (
                Pagination::Page {
                    page_param, size, ..
                },
                NextRequest::Params(mut params),
            ) => {
                if full_page(*size) {
                    self.guard_repeat(&shown, &records)?;
                    bump(&mut params, page_param, 1);
                    Some(NextRequest::Params(params))
                } else {
                    None
                }
            }
            (
                Pagination::Offset {
                    offset_param, size, ..
                },
                NextRequest::Params(mut params),
            ) => {
                if full_page(*size) {
                    self.guard_repeat(&shown, &records)?;
                    bump(&mut params, offset_param, records.len() as u64);
                    Some(NextRequest::Params(params))
                } else {
                    None
                }
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
            (Pagination::Link, _) => match next_link(&headers) {
                Some(link) => Some(NextRequest::Url(resolve_next(&shown, &url, &link)?)),
                None => None,
            },
            (Pagination::NextUrl { next }, _) => match body.pointer(next) {
                Some(Value::String(s)) if !s.is_empty() => {
                    Some(NextRequest::Url(resolve_next(&shown, &url, s)?))
                }
                _ => None,
            },
            _ => None,
        };
        Ok(Some(records))
    }

    /// A page/offset provider that ignores the page parameter returns the
    /// same full page forever; stop instead of looping to max_pages.
    fn guard_repeat(&mut self, shown: &str, records: &[Value]) -> Result<(), FetchError> {
        let mut h = Sha256::new();
        for r in records {
            h.update(crate::detect::canonical_json(r));
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
        let mut refreshed_token = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.client
                .rate_limit(&self.provider.name, self.provider.rate_limit)
                .await;
            let result = self.send_once(url, refreshed_token).await;
            let retry_after = match result {
                Ok(Response::Body(headers, bytes)) => return Ok((headers, bytes)),
                Ok(Response::Unauthorized)
                    if !refreshed_token && matches!(self.account.auth, Auth::OAuth2 { .. }) =>
                {
                    refreshed_token = true;
                    attempt -= 1;
                    continue;
                }
                Ok(Response::Unauthorized) => {
                    return Err(FetchError::Status {
                        url: shown,
                        status: 401,
                        hint: " (check the account's credentials)",
                    });
                }
                Ok(Response::Status(status, retry_after)) => {
                    let transient = status == StatusCode::TOO_MANY_REQUESTS
                        || status == StatusCode::REQUEST_TIMEOUT
                        || status.is_server_error();
                    let err = FetchError::Status {
                        url: shown.clone(),
                        status: status.as_u16(),
                        hint: match status.as_u16() {
                            403 => " (check the account's credentials and scopes)",
                            404 => " (check base_url and the resource path)",
                            429 => " (rate limited; consider rate_limit)",
                            _ => "",
                        },
                    };
                    if !transient || attempt >= REQUEST_ATTEMPTS {
                        return Err(err);
                    }
                    if retry_after.is_some_and(|d| d > MAX_RETRY_AFTER) {
                        return Err(err);
                    }
                    tracing::warn!(account = %self.account.id, resource = %self.resource.name,
                        url = %shown, status = status.as_u16(), attempt, "provider request failed; retrying");
                    retry_after
                }
                Err(e) => {
                    if attempt >= REQUEST_ATTEMPTS || !e.transient {
                        return Err(e.error);
                    }
                    tracing::warn!(account = %self.account.id, resource = %self.resource.name,
                        url = %shown, error = %e.error, attempt, "provider request failed; retrying");
                    None
                }
            };
            let backoff = backoff(self.client.retry_base, attempt);
            tokio::time::sleep(retry_after.map_or(backoff, |r| r.max(backoff))).await;
        }
    }

    async fn send_once(&self, url: &Url, force_token: bool) -> Result<Response, SendError> {
        let shown = redact_url(url);
        let mut req = self
            .client
            .http
            .get(url.clone())
            .timeout(self.provider.timeout);
        req = req.header(reqwest::header::ACCEPT, "application/json");
        for (k, v) in &self.resource.headers {
            if let (Ok(k), Ok(v)) = (
                HeaderName::try_from(k.as_str()),
                HeaderValue::try_from(v.as_str()),
            ) {
                req = req.header(k, v);
            }
        }
        req = match &self.account.auth {
            Auth::None | Auth::Query { .. } => req,
            Auth::Bearer { token } => req.bearer_auth(token.expose()),
            Auth::Basic { username, password } => req.basic_auth(username, Some(password.expose())),
            Auth::Header { name, value } => req.header(name.as_str(), value.expose()),
            Auth::OAuth2 { .. } => {
                let token = self
                    .client
                    .oauth_token(&self.account.auth, force_token)
                    .await
                    .map_err(|error| SendError {
                        error,
                        transient: false,
                    })?;
                req.bearer_auth(token.unwrap_or_default())
            }
        };
        let resp = req.send().await.map_err(|e| transport(&shown, e))?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED {
            return Ok(Response::Unauthorized);
        }
        if !status.is_success() {
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            return Ok(Response::Status(status, retry_after));
        }
        let limit = self.provider.max_page_bytes;
        if resp.content_length().is_some_and(|n| n > limit) {
            return Err(SendError {
                error: FetchError::TooLarge { url: shown, limit },
                transient: false,
            });
        }
        let headers = resp.headers().clone();
        let mut resp = resp;
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| transport(&shown, e))? {
            if bytes.len() as u64 + chunk.len() as u64 > limit {
                return Err(SendError {
                    error: FetchError::TooLarge { url: shown, limit },
                    transient: false,
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Response::Body(headers, bytes))
    }
}

enum Response {
    Body(HeaderMap, Vec<u8>),
    Unauthorized,
    Status(StatusCode, Option<Duration>),
}

struct SendError {
    error: FetchError,
    transient: bool,
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

/// Exponential backoff with ±25 % jitter: base, 2·base, 4·base…
fn backoff(base: Duration, attempt: u32) -> Duration {
    let exp = base * 2u32.saturating_pow(attempt.saturating_sub(1));
    let jitter = rand::random_range(0.75..1.25);
    exp.mul_f64(jitter)
}

/// `Retry-After` as seconds or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = DateTime::parse_from_rfc2822(v.trim()).ok()?;
    (when.with_timezone(&Utc) - Utc::now()).to_std().ok()
}

fn parse_json(shown: &str, headers: &HeaderMap, bytes: &[u8]) -> Result<Value, FetchError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let content_type = headers
            .get(reqwest::header::CONTENT_TYPE)
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
    if url.host_str() != current.host_str() || url.scheme() != current.scheme() {
        // Following a next link to another host would send our credentials
        // there.
        return Err(FetchError::BadNext {
            url: shown.to_string(),
            detail: format!("points at another host ({})", redact_url(&url)),
        });
    }
    Ok(url)
}

/// The `rel="next"` target of an RFC 8288 `Link` header.
pub fn next_link(headers: &HeaderMap) -> Option<String> {
    for value in headers.get_all(reqwest::header::LINK) {
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
    let mut depth = false;
    let mut start = 0;
    for (i, c) in value.char_indices() {
        match c {
            '<' => depth = true,
            '>' => depth = false,
            ',' if !depth => {
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
            reqwest::header::LINK,
            HeaderValue::from_static(
                "<https://api.x/items?page=1>; rel=\"prev\", <https://api.x/items?page=3&a=1,2>; rel=\"next\"",
            ),
        );
        assert_eq!(
            next_link(&h).as_deref(),
            Some("https://api.x/items?page=3&a=1,2")
        );
        h.insert(
            reqwest::header::LINK,
            HeaderValue::from_static("<https://api.x/items?page=1>; rel=\"prev\""),
        );
        assert_eq!(next_link(&h), None);
    }

    #[test]
    fn retry_after_seconds_parse() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("soon"), None);
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
    fn next_links_to_other_hosts_are_refused() {
        let cur = Url::parse("https://api.example.com/v1/items?page=1").unwrap();
        assert!(resolve_next("u", &cur, "/v1/items?page=2").is_ok());
        assert!(resolve_next("u", &cur, "https://evil.example.net/x").is_err());
    }
}
