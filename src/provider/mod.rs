//! Fetching a resource from a provider's REST API, one page at a time.
//!
//! [`ProviderClient`] holds what is shared across polls: the HTTP client with
//! its connection pool, OAuth2 tokens and the per-provider rate limiters, and
//! makes one authenticated GET with retries. [`Pager`] walks one resource of
//! one account through its pagination and hands back each [`page::Page`];
//! it never holds more than one page.
//!
//! Real APIs are slow, rate-limited and sometimes return garbage, so every
//! request is bounded (timeout, `max_page_bytes`), transient failures are
//! retried a bounded number of times with backoff, and anything the pager
//! cannot trust (a non-JSON body, a pagination loop, a records pointer that
//! is not an array, a redirect to another origin) is an error. An error ends
//! the scan, and a scan that did not finish deletes nothing.
//!
//! Every error names a redacted URL, never a response body or a credential.

pub mod page;
mod pager;

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;
use url::Url;

use crate::config::{Account, Auth, ClientAuth, Method, OAuth2, Provider, Resource, TimeFormat};
use crate::net::{self, ReadError};
use crate::redact::redact_url;

pub use page::Page;
pub use pager::Pager;

/// The longest `Retry-After` synthd waits for inside a poll; a longer one
/// fails the poll and the next scheduled poll tries again.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);
/// The longest single backoff step between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// An OAuth2 token response larger than this is not a token response.
const MAX_TOKEN_BYTES: u64 = 1 << 20;
/// A token without `expires_in` is assumed to last this long.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// Why fetching a resource failed. Messages carry the method and a redacted
/// URL (`url` is "GET https://…"), never a body or credential.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: HTTP {status}{hint}")]
    Status {
        url: String,
        status: u16,
        hint: &'static str,
    },
    #[error("{url}: {kind}: {detail}")]
    Transport {
        url: String,
        kind: &'static str,
        detail: String,
    },
    #[error("{url}: {detail}")]
    Redirect { url: String, detail: String },
    #[error(
        "{url}: HTTP {status} asks to wait {wait_secs}s (Retry-After), longer than the {}s a poll waits; the next scheduled poll tries again",
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
    #[error("{url}: response is not JSON (content-type {content_type:?}, {what})")]
    NotJson {
        url: String,
        content_type: String,
        what: String,
    },
    #[error(
        "{url}: record {index} of the response is not JSON ({detail}); the page was not applied"
    )]
    RecordNotJson {
        url: String,
        index: usize,
        detail: String,
    },
    #[error("{url}: response JSON is truncated ({detail})")]
    TruncatedJson { url: String, detail: String },
    #[error("{url}: response is larger than the {limit}-byte page limit (max_page_bytes)")]
    TooLarge { url: String, limit: u64 },
    #[error("{url}: records pointer {pointer:?} {what}")]
    Records {
        url: String,
        pointer: String,
        what: &'static str,
    },
    #[error("{url}: pagination {key} {pointer:?} {what}")]
    EndSignal {
        url: String,
        key: &'static str,
        pointer: String,
        what: &'static str,
    },
    #[error("{url}: pagination loop: the provider returned the same {what} twice")]
    Loop { url: String, what: &'static str },
    #[error(
        "stopped after max_pages = {max} pages with more to fetch; raise max_pages or narrow the resource"
    )]
    MaxPages { max: u64 },
    #[error("{url}: next page URL {detail}")]
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

/// One page request: whose, and where.
pub(crate) struct Request<'a> {
    pub account: &'a Account,
    pub provider: &'a Provider,
    pub resource: &'a Resource,
    pub url: &'a Url,
    pub method: Method,
    /// The JSON body of a POST.
    pub body: Option<&'a [u8]>,
    /// Statuses that mean "no more pages" (`end_status`).
    pub end_status: &'a [u16],
}

/// What a GET came back with.
pub(crate) enum Fetched {
    Body(HeaderMap, Vec<u8>),
    /// A status listed in `end_status`.
    End,
}

impl ProviderClient {
    pub fn new() -> Self {
        ProviderClient {
            http: net::client(net::Redirects::SameOrigin),
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
        // The lifetime is clamped, so this cannot overflow the clock.
        let margin = Duration::from_secs(60).min(lifetime / 2);
        let now = Instant::now();
        *slot = Some(CachedToken {
            token: token.clone(),
            refresh_at: now.checked_add(lifetime - margin).unwrap_or(now),
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
            .map_err(|e| match net::refused_redirect(&e) {
                Some(detail) => fail(detail, false),
                None => fail(net::error_chain(&e.without_url()), true),
            })?;
        let status = resp.status();
        let body = net::read_limited(resp, MAX_TOKEN_BYTES)
            .await
            .map_err(|e| match e {
                ReadError::TooLarge => fail("the response is too large".into(), false),
                ReadError::Http(e) => fail(net::error_chain(&e.without_url()), true),
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
                net::transient_status(status),
            ));
        }
        let Some(body) = body else {
            return Err(fail("the response is not JSON".into(), false));
        };
        let Some(token) = body.get("access_token").and_then(Value::as_str) else {
            return Err(fail("the response has no access_token".into(), false));
        };
        let lifetime =
            net::parse_expires_in(body.get("expires_in")).unwrap_or(DEFAULT_TOKEN_LIFETIME);
        Ok((token.to_string(), lifetime))
    }

    /// One list request (a GET, or a POST with a JSON body) with auth, rate
    /// limit, retries and the size limit. Retrying a POST is safe: list
    /// endpoints only read.
    pub(crate) async fn get(&self, req: &Request<'_>) -> Result<Fetched, FetchError> {
        let shown = format!(
            "{} {}",
            req.method.as_str(),
            shown_url(req.account, req.url)
        );
        let attempts = req.provider.retries + 1;
        let mut rejected_token: Option<String> = None;
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.wait_turn(req.provider).await;
            let (error, retry_after) = match self
                .send_once(req, &shown, rejected_token.as_deref())
                .await
            {
                Ok(Response::Body(headers, bytes)) => return Ok(Fetched::Body(headers, bytes)),
                Ok(Response::Status(status, _)) if req.end_status.contains(&status.as_u16()) => {
                    return Ok(Fetched::End);
                }
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
                    if !net::transient_status(status) {
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
                backoff(req.provider.retry_backoff, attempt).max(retry_after.unwrap_or_default());
            tracing::warn!(account = %req.account.id, resource = %req.resource.name,
                error = %error, attempt, retry_in_ms = wait.as_millis() as u64,
                "provider request failed; retrying");
            tokio::time::sleep(wait).await;
        }
    }

    async fn send_once(
        &self,
        req: &Request<'_>,
        shown: &str,
        rejected_token: Option<&str>,
    ) -> Result<Response, SendError> {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        for (k, v) in &req.resource.headers {
            // Validated in config; a resource's header replaces the default.
            if let (Ok(k), Ok(v)) = (HeaderName::try_from(k.as_str()), HeaderValue::try_from(v)) {
                headers.insert(k, v);
            }
        }
        let mut oauth_token = None;
        match &req.account.auth {
            Auth::None | Auth::Query { .. } => {}
            Auth::Bearer { token } => {
                headers.insert(
                    header::AUTHORIZATION,
                    sensitive(shown, &format!("Bearer {}", token.expose()))?,
                );
            }
            Auth::Basic { username, password } => {
                use base64::Engine as _;
                let pair = format!("{}:{}", username.expose(), password.expose());
                let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
                headers.insert(
                    header::AUTHORIZATION,
                    sensitive(shown, &format!("Basic {encoded}"))?,
                );
            }
            Auth::Header { name, value } => {
                if let Ok(name) = HeaderName::try_from(name.as_str()) {
                    headers.insert(name, sensitive(shown, value.expose())?);
                }
            }
            Auth::OAuth2(auth) => {
                let token = self
                    .oauth_token(auth, req.provider.timeout, rejected_token)
                    .await?;
                headers.insert(
                    header::AUTHORIZATION,
                    sensitive(shown, &format!("Bearer {token}"))?,
                );
                oauth_token = Some(token);
            }
        }
        let mut builder = match req.method {
            Method::Get => self.http.get(req.url.clone()),
            Method::Post => self.http.post(req.url.clone()),
        };
        if let Some(body) = req.body {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            builder = builder.body(body.to_vec());
        }
        let resp = builder
            .timeout(req.provider.timeout)
            .headers(headers)
            .send()
            .await
            .map_err(|e| transport(shown, e))?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED {
            return Ok(Response::Unauthorized { oauth_token });
        }
        if !status.is_success() {
            let retry_after = resp
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| net::parse_retry_after(v, Utc::now()));
            return Ok(Response::Status(status, retry_after));
        }
        let headers = resp.headers().clone();
        let limit = req.provider.max_page_bytes;
        let bytes = net::read_limited(resp, limit).await.map_err(|e| match e {
            ReadError::TooLarge => SendError {
                error: FetchError::TooLarge {
                    url: shown.to_string(),
                    limit,
                },
                transient: false,
            },
            ReadError::Http(e) => transport(shown, e),
        })?;
        Ok(Response::Body(headers, bytes))
    }
}

impl Default for ProviderClient {
    fn default() -> Self {
        Self::new()
    }
}

/// A provider URL as shown in logs and errors: secret-looking query values
/// and the account's own `query` auth parameter hidden.
pub fn shown_url(account: &Account, url: &Url) -> String {
    match &account.auth {
        Auth::Query { name, .. } => crate::redact::redact_url_with(url, &[name.as_str()]),
        _ => redact_url(url),
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

fn status_error(shown: &str, status: StatusCode) -> FetchError {
    FetchError::Status {
        url: shown.to_string(),
        status: status.as_u16(),
        hint: match status.as_u16() {
            403 => " (check the account's credentials and scopes)",
            404 => {
                " (check base_url and the resource path; a provider that answers 404 past the last page needs pagination.end_status = [404])"
            }
            429 => " (rate limited; consider the provider's rate_limit)",
            _ => "",
        },
    }
}

fn transport(shown: &str, e: reqwest::Error) -> SendError {
    if let Some(detail) = net::refused_redirect(&e) {
        return SendError {
            error: FetchError::Redirect {
                url: shown.to_string(),
                detail,
            },
            transient: false,
        };
    }
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
            detail: net::error_chain(&e.without_url()),
        },
        transient: true,
    }
}

/// Exponential backoff with ±25 % jitter: base, 2·base, 4·base… capped at a
/// minute.
fn backoff(base: Duration, attempt: u32) -> Duration {
    let exp = base
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
        .min(MAX_BACKOFF);
    exp.mul_f64(rand::random_range(0.75..1.25))
}

#[cfg(test)]
mod tests {
    use super::*;

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
