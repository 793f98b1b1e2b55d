//! Outbound HTTP, shared by everything that talks to the network (provider
//! pages, OAuth2 token endpoints, webhooks): the clients and their redirect
//! policy, bounded body reads, error texts that say what happened, and
//! `Retry-After` read with checked arithmetic.
//!
//! Redirect policy: a credential never travels to another origin. Provider
//! pages and token endpoints follow at most five redirects within the same
//! origin (scheme, host and port) and refuse any other; webhooks follow none
//! (a 3xx is a failed attempt).

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use url::Url;

use crate::redact::redact_text;

/// The longest wait synthd takes from a server's `Retry-After` or an
/// `expires_in` at face value; anything longer is clamped to this before
/// any arithmetic, so no external number can overflow a clock.
pub const MAX_EXTERNAL_WAIT: Duration = Duration::from_secs(7 * 86400);

/// Idle keep-alive connections kept per host: enough for a webhook's full
/// concurrency, few enough that hundreds of hosts cannot exhaust file
/// descriptors.
const IDLE_PER_HOST: usize = 64;

/// Which redirects a client follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redirects {
    /// None: a 3xx is returned as it is.
    None,
    /// Up to five, each to the same origin as the request.
    SameOrigin,
}

/// Why a redirect was refused, carried in the reqwest error's source chain.
#[derive(Debug, thiserror::Error)]
#[error(
    "redirected to another origin ({to}); refused so that no credential leaves the configured origin \
     (point the URL at the final host instead)"
)]
pub struct CrossOriginRedirect {
    pub to: String,
}

/// An HTTP client with synthd's user agent, pool limits and `redirects`.
pub fn client(redirects: Redirects) -> reqwest::Client {
    let policy = match redirects {
        Redirects::None => reqwest::redirect::Policy::none(),
        Redirects::SameOrigin => reqwest::redirect::Policy::custom(|attempt| {
            let first = &attempt.previous()[0];
            if !same_origin(first, attempt.url()) {
                let to = crate::redact::redact_url(attempt.url());
                attempt.error(CrossOriginRedirect { to })
            } else if attempt.previous().len() > 5 {
                attempt.error("more than 5 redirects")
            } else {
                attempt.follow()
            }
        }),
    };
    reqwest::Client::builder()
        .user_agent(concat!("synthd/", env!("CARGO_PKG_VERSION")))
        .redirect(policy)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(IDLE_PER_HOST)
        .build()
        .expect("TLS backend initialises")
}

/// Same scheme, host and port.
pub fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// The cross-origin redirect behind a reqwest error, if that is what it is.
pub fn refused_redirect(e: &reqwest::Error) -> Option<String> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<CrossOriginRedirect>() {
            return Some(r.to_string());
        }
        source = s.source();
    }
    None
}

pub enum ReadError {
    TooLarge,
    Http(reqwest::Error),
}

/// Reads the (decompressed) body, failing as soon as it passes `limit`, so
/// a huge or endless response never sits in memory. The buffer is sized
/// from `Content-Length` when the server gives one, so a page is held once,
/// not in a doubling buffer.
pub async fn read_limited(mut resp: reqwest::Response, limit: u64) -> Result<Vec<u8>, ReadError> {
    let declared = resp.content_length();
    if declared.is_some_and(|n| n > limit) {
        return Err(ReadError::TooLarge);
    }
    let mut bytes = Vec::with_capacity(declared.unwrap_or(0).min(limit) as usize);
    while let Some(chunk) = resp.chunk().await.map_err(ReadError::Http)? {
        if bytes.len() as u64 + chunk.len() as u64 > limit {
            return Err(ReadError::TooLarge);
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// 408, 429 and 5xx may succeed when tried again; other statuses will not.
pub fn transient_status(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
}

/// The error and its sources, joined, so "connection refused" is not lost,
/// with URLs redacted and a hint where the raw text means little to an
/// operator (TLS trust failures).
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
    if let Some(hint) = tls_hint(&out) {
        out.push_str(" (");
        out.push_str(hint);
        out.push(')');
    }
    redact_text(&out)
}

/// What a rustls certificate error means for the operator.
fn tls_hint(text: &str) -> Option<&'static str> {
    const UNTRUSTED: &str = "the server's TLS certificate is not trusted: it is self-signed or issued by a private CA; \
         add that CA to the system trust store (e.g. copy it to /usr/local/share/ca-certificates/ and run update-ca-certificates), \
         or give the server a certificate from a public CA";
    if [
        "CaUsedAsEndEntity",
        "UnknownIssuer",
        "invalid peer certificate: BadSignature",
    ]
    .iter()
    .any(|k| text.contains(k))
    {
        return Some(UNTRUSTED);
    }
    if text.contains("NotValidForName") {
        return Some(
            "the server's TLS certificate is for another host name; use the host name the certificate names",
        );
    }
    if text.contains("Expired") && text.contains("certificate") {
        return Some("the server's TLS certificate has expired (or this machine's clock is wrong)");
    }
    None
}

/// `Retry-After` as delay-seconds or an HTTP date, relative to `now`, with
/// checked arithmetic: a value beyond [`MAX_EXTERNAL_WAIT`] becomes that, a
/// date in the past becomes zero, and garbage is `None`.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits for u64 is still "very long".
        let secs = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs).min(MAX_EXTERNAL_WAIT));
    }
    let when = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    let wait = when.signed_duration_since(now).to_std().unwrap_or_default();
    Some(wait.min(MAX_EXTERNAL_WAIT))
}

/// An OAuth2 `expires_in`: seconds as a JSON number or numeric string,
/// clamped to `[0, MAX_EXTERNAL_WAIT]`; `None` when absent or not a number.
pub fn parse_expires_in(value: Option<&serde_json::Value>) -> Option<Duration> {
    let secs = match value? {
        serde_json::Value::Number(n) => n.as_f64()?,
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    if secs.is_nan() {
        return None;
    }
    let max = MAX_EXTERNAL_WAIT.as_secs_f64();
    Some(Duration::from_secs_f64(secs.clamp(0.0, max)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-29T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn retry_after_is_clamped_and_never_overflows() {
        assert_eq!(parse_retry_after("7", now()), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 ", now()), Some(Duration::ZERO));
        for huge in [
            "9000000000000",
            "18446744073709551615",
            "99999999999999999999999",
        ] {
            assert_eq!(
                parse_retry_after(huge, now()),
                Some(MAX_EXTERNAL_WAIT),
                "{huge}"
            );
        }
        assert_eq!(parse_retry_after("soon", now()), None);
        assert_eq!(parse_retry_after("-5", now()), None);
        let past = "Wed, 21 Oct 2015 07:28:00 GMT";
        assert_eq!(parse_retry_after(past, now()), Some(Duration::ZERO));
        let soon = "Sun, 29 Nov 2026 12:00:30 GMT";
        assert_eq!(
            parse_retry_after(soon, now()),
            Some(Duration::from_secs(30))
        );
        let far = "Fri, 31 Dec 9999 23:59:59 GMT";
        assert_eq!(parse_retry_after(far, now()), Some(MAX_EXTERNAL_WAIT));
    }

    #[test]
    fn expires_in_is_clamped() {
        use serde_json::json;
        let p = |v: serde_json::Value| parse_expires_in(Some(&v));
        assert_eq!(p(json!(3600)), Some(Duration::from_secs(3600)));
        assert_eq!(p(json!("120")), Some(Duration::from_secs(120)));
        assert_eq!(p(json!(u64::MAX)), Some(MAX_EXTERNAL_WAIT));
        assert_eq!(p(json!(1e300)), Some(MAX_EXTERNAL_WAIT));
        assert_eq!(p(json!(-5)), Some(Duration::ZERO));
        assert_eq!(p(json!("x")), None);
        assert_eq!(parse_expires_in(None), None);
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        let u = |s: &str| Url::parse(s).unwrap();
        assert!(same_origin(
            &u("https://a.example/x"),
            &u("https://a.example:443/y?z")
        ));
        assert!(!same_origin(
            &u("https://a.example/x"),
            &u("http://a.example/x")
        ));
        assert!(!same_origin(
            &u("https://a.example/x"),
            &u("https://b.example/x")
        ));
        assert!(!same_origin(
            &u("http://127.0.0.1:1/x"),
            &u("http://127.0.0.1:2/x")
        ));
    }

    #[test]
    fn tls_trust_failures_say_what_to_do() {
        let text = "invalid peer certificate: Other(CaUsedAsEndEntity)";
        assert!(tls_hint(text).unwrap().contains("trust store"));
        assert!(tls_hint("connection refused").is_none());
    }
}
