//! Configuration: the TOML file (plus `SYNTHD_…__…` environment overrides),
//! deserialised into raw structs and then validated into the typed [`Config`]
//! the rest of the daemon uses.
//!
//! Validation is where every operator mistake should be caught, so every
//! failure is a [`ConfigError`] carrying the key path (`accounts[2].interval`)
//! and a sentence saying what is wrong. Secrets are resolved here too (inline,
//! `_env` or `_file`) and wrapped in [`Secret`], whose `Debug` never prints
//! the value.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;
use url::Url;

use crate::json::Pointer;
use crate::schedule::Schedule;

pub mod catalog;
mod raw;
mod secrets;
mod validate;

use raw::RawConfig;
pub(crate) use validate::catalog_provider;
pub use validate::{MAX_INTERVAL, MIN_INTERVAL};

/// Default location of the config file when neither `--config` nor
/// `$SYNTHD_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/synthd/synthd.toml";

/// A config problem: the key path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    pub path: String,
    pub message: String,
    /// Further problems found in the same pass (every unset environment
    /// variable, not just the first). `Display` shows the first only.
    pub others: Vec<ConfigError>,
}

impl ConfigError {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: escape_controls(path.into()),
            message: escape_controls(message.into()),
            others: Vec::new(),
        }
    }

    /// This error and the others found with it, one line each.
    pub fn lines(&self) -> Vec<String> {
        std::iter::once(self.to_string())
            .chain(self.others.iter().map(ToString::to_string))
            .collect()
    }
}

/// Keys and values quoted in an error (a path, a cron expression) may hold
/// newlines; an error stays one line.
fn escape_controls(s: String) -> String {
    if !s.contains(char::is_control) {
        return s;
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A secret value. Exists so that secrets cannot be printed by accident:
/// `Debug` shows `Secret(***)`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub(crate) String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

// ---------------------------------------------------------------------------
// The validated configuration
// ---------------------------------------------------------------------------

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub daemon: Daemon,
    pub store: StoreConfig,
    pub providers: BTreeMap<String, Provider>,
    pub accounts: Vec<Account>,
    pub webhooks: Vec<Webhook>,
    pub console: Console,
}

/// The web console on `daemon.listen`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Console {
    /// Signs in a browser (`/login`) and authorises scripts (`Authorization:
    /// Bearer`). Without it the console is read-only, and only on a
    /// loopback listener.
    pub token: Option<Secret>,
}

/// Where the state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// `<state_dir>/synthd.db`, owned by one process.
    Sqlite,
    /// A database several synthd processes share.
    Postgres {
        /// The connection URL; a secret (it may hold a password).
        url: Secret,
        pool_size: usize,
        /// How long a claimed poll or delivery stays claimed unrenewed.
        lease: Duration,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone)]
pub struct Daemon {
    pub state_dir: PathBuf,
    pub log_format: LogFormat,
    pub max_concurrent_polls: usize,
    pub listen: Option<SocketAddr>,
    /// Key for HMAC-SHA256 record hashes; plain SHA-256 when absent.
    pub hash_key: Option<Secret>,
    pub retention: Retention,
}

#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub delivered: Duration,
    pub failed: Duration,
}

/// A REST API shape shared by accounts.
#[derive(Debug, Clone)]
pub struct Provider {
    pub name: String,
    /// The base URL as written; `{name}` placeholders are filled from each
    /// account's `params` (see [`Provider::params`]).
    pub base_url: String,
    /// The placeholder names in `base_url`, in order of appearance.
    pub params: Vec<String>,
    /// Whether it came from the built-in catalog (possibly overridden).
    pub builtin: bool,
    pub auth: Auth,
    pub rate_limit: Option<RateLimit>,
    /// Per request, including reading the body.
    pub timeout: Duration,
    /// Retries of a request after a transient failure (5xx, 408, 429, a
    /// timeout, a broken connection) before the poll fails.
    pub retries: u32,
    /// The first retry waits this long, each further one twice as long
    /// (±25 % jitter); a longer `Retry-After` wins.
    pub retry_backoff: Duration,
    pub max_pages: u64,
    pub max_page_bytes: u64,
    pub resources: BTreeMap<String, Resource>,
}

/// One listable collection of a provider; its name is the event prefix.
#[derive(Debug, Clone)]
pub struct Resource {
    pub name: String,
    pub path: String,
    /// POST for list endpoints that take their parameters in a JSON body.
    pub method: Method,
    /// The JSON object sent as the body of a POST list request.
    pub body: Option<serde_json::Map<String, serde_json::Value>>,
    pub records: Pointer,
    pub id: Pointer,
    pub pagination: Pagination,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub ignore: Vec<Pointer>,
    pub updated_since: Option<UpdatedSince>,
}

impl Resource {
    /// What shapes this resource's record hashes and ids, for detection.
    pub fn shape(&self) -> crate::detect::Shape {
        crate::detect::Shape {
            id: self.id.clone(),
            ignore: self.ignore.clone(),
        }
    }

    /// A digest of everything that decides how a record becomes an (id,
    /// hash): records pointer, id pointer, ignore list and the canonical
    /// form. When it changes, the resource re-baselines silently.
    pub fn shape_fingerprint(&self) -> String {
        let mut h = Fingerprint::default();
        h.field(crate::detect::CANONICAL_VERSION);
        h.field(self.records.as_str());
        h.field(self.id.as_str());
        let mut ignore: Vec<&str> = self.ignore.iter().map(Pointer::as_str).collect();
        ignore.sort_unstable();
        ignore.dedup();
        for p in ignore {
            h.field(p);
        }
        h.finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pagination {
    Page {
        page_param: String,
        size_param: String,
        size: u64,
        first_page: u64,
        end: EndSignals,
    },
    Offset {
        offset_param: String,
        limit_param: String,
        size: u64,
        end: EndSignals,
    },
    Cursor {
        cursor_param: String,
        next: Pointer,
        /// A flag that must be true for another page to follow.
        has_more: Option<Pointer>,
        /// Query parameter or top-level key of the JSON body.
        place: ParamPlace,
        /// Later pages are POSTed here with only the cursor in the body.
        continue_path: Option<String>,
    },
    /// The next page starts after the last record of this one
    /// (`starting_after=<last id>`), Stripe style.
    AfterLast {
        param: String,
        /// Pointer into the last record for the value to send.
        from: Pointer,
        /// A flag that must be true for another page to follow.
        has_more: Option<Pointer>,
    },
    Link,
    NextUrl {
        next: Pointer,
    },
    None,
}

impl Pagination {
    /// The query parameters pagination writes on each request.
    pub fn params(&self) -> Vec<&str> {
        match self {
            Pagination::Page {
                page_param,
                size_param,
                ..
            } => vec![page_param, size_param],
            Pagination::Offset {
                offset_param,
                limit_param,
                ..
            } => vec![offset_param, limit_param],
            Pagination::Cursor {
                cursor_param,
                place: ParamPlace::Query,
                ..
            } => vec![cursor_param],
            Pagination::AfterLast { param, .. } => vec![param],
            _ => Vec::new(),
        }
    }
}

/// Where a cursor is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamPlace {
    Query,
    /// A top-level key of the JSON body (POST list endpoints).
    Body,
}

/// The HTTP method of a list request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }
}

/// How a page/offset scan learns that the page it just read was the last,
/// besides a short or empty page.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EndSignals {
    /// Pointer to the total number of records.
    pub total: Option<Pointer>,
    /// Pointer to the number of the last page (page pagination only).
    pub last_page: Option<Pointer>,
    /// Pointer to a flag that is true while more pages follow.
    pub has_more: Option<Pointer>,
    /// Statuses that, after a full page, mean "no more pages".
    pub end_status: Vec<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    Rfc3339,
    Unix,
    UnixMs,
    Date,
}

#[derive(Debug, Clone)]
pub struct UpdatedSince {
    pub param: String,
    pub format: TimeFormat,
    pub lookback: Duration,
    pub full_scan_every: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: u32,
    pub per: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    None,
    Bearer { token: Secret },
    Basic { username: Secret, password: Secret },
    Header { name: String, value: Secret },
    Query { name: String, value: Secret },
    OAuth2(OAuth2),
}

/// OAuth2 client credentials (RFC 6749 §4.4): a token is fetched from
/// `token_url` and sent as a bearer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuth2 {
    pub token_url: Url,
    pub client_id: String,
    pub client_secret: Secret,
    pub scope: Option<String>,
    pub client_auth: ClientAuth,
}

/// How an OAuth2 client authenticates to the token endpoint (RFC 6749
/// §2.3.1): form fields in the body, or HTTP Basic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    #[default]
    Body,
    Basic,
}

/// A linked account: one tenant of a provider.
#[derive(Debug, Clone)]
pub struct Account {
    pub id: String,
    pub provider: String,
    /// The provider's base URL with this account's `params` filled in, or
    /// the account's own `base_url`.
    pub base_url: Url,
    /// Values for the `{placeholders}` of the base URL.
    pub params: BTreeMap<String, String>,
    pub auth: Auth,
    pub resources: Vec<String>,
    pub schedule: Schedule,
    pub emit_initial: bool,
    pub enabled: bool,
}

/// Requests in flight to one webhook unless `concurrency` says otherwise.
pub const DEFAULT_WEBHOOK_CONCURRENCY: usize = 4;
/// The largest `concurrency` a webhook may ask for.
pub const MAX_WEBHOOK_CONCURRENCY: usize = 64;

/// A subscriber URL and what it wants.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub id: String,
    pub name: String,
    pub url: Url,
    pub events: Vec<EventFilter>,
    /// Signing keys (decoded `whsec_` secrets), newest first.
    pub secrets: Vec<Secret>,
    pub accounts: Option<Vec<String>>,
    pub enabled: bool,
    pub timeout: Duration,
    pub signature_header: String,
    /// Requests in flight to this webhook at once (per-record order kept).
    pub concurrency: usize,
}

impl Webhook {
    /// The URL as shown anywhere: every query value hidden (a webhook's
    /// query is the receiver's own credential, such as `?token=`).
    pub fn shown_url(&self) -> String {
        crate::redact::redact_url_all(&self.url)
    }

    /// Whether an event of `event_type` for `account_id` goes to this webhook.
    pub fn wants(&self, event_type: &str, account_id: &str) -> bool {
        self.enabled
            && self
                .accounts
                .as_ref()
                .is_none_or(|a| a.iter().any(|x| x == account_id))
            && self.events.iter().any(|f| f.matches(event_type))
    }

    /// A digest of the webhook's settings; when it changes on reload, a
    /// paused webhook is resumed. Only the digest is stored.
    pub fn fingerprint(&self) -> String {
        let mut h = Fingerprint::default();
        let mut field = |s: &str| h.field(s);
        field(self.url.as_str());
        for e in &self.events {
            field(&e.to_string());
        }
        for s in &self.secrets {
            field(s.expose());
        }
        for a in self.accounts.iter().flatten() {
            field(a);
        }
        field(&format!(
            "{}|{:?}|{}",
            self.enabled, self.timeout, self.signature_header
        ));
        // Only a non-default concurrency is part of the digest, so adding
        // the key did not change every stored fingerprint.
        if self.concurrency != DEFAULT_WEBHOOK_CONCURRENCY {
            field(&format!("concurrency={}", self.concurrency));
        }
        h.finish()
    }
}

/// SHA-256 over length-prefixed fields (so `["ab", "c"]` and `["a", "bc"]`
/// differ), as lowercase hex: how config fingerprints are made.
#[derive(Default)]
struct Fingerprint(sha2::Sha256);

impl Fingerprint {
    fn field(&mut self, s: &str) {
        use sha2::Digest;
        self.0.update((s.len() as u64).to_be_bytes());
        self.0.update(s.as_bytes());
    }

    fn finish(self) -> String {
        use sha2::Digest;
        crate::signing::hex(&self.0.finalize())
    }
}

/// An entry of a webhook's `events` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventFilter {
    All,
    Prefix(String),
    Exact(String),
}

impl EventFilter {
    pub fn matches(&self, event_type: &str) -> bool {
        match self {
            EventFilter::All => true,
            EventFilter::Prefix(p) => event_type
                .strip_prefix(p.as_str())
                .is_some_and(|rest| rest.starts_with('.')),
            EventFilter::Exact(e) => e == event_type,
        }
    }
}

impl fmt::Display for EventFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventFilter::All => f.write_str("*"),
            EventFilter::Prefix(p) => write!(f, "{p}.*"),
            EventFilter::Exact(e) => f.write_str(e),
        }
    }
}

impl Config {
    pub fn provider(&self, name: &str) -> &Provider {
        &self.providers[name]
    }

    /// The ids of the enabled webhooks: the ones a replay may queue for.
    pub fn enabled_webhook_ids(&self) -> Vec<String> {
        self.webhooks
            .iter()
            .filter(|w| w.enabled)
            .map(|w| w.id.clone())
            .collect()
    }

    pub fn db_path(&self) -> PathBuf {
        self.daemon.state_dir.join("synthd.db")
    }

    /// Where the state lives, as shown to operators (no password).
    pub fn describe_store(&self) -> String {
        match &self.store {
            StoreConfig::Sqlite => format!("sqlite {}", self.db_path().display()),
            StoreConfig::Postgres { url, .. } => format!(
                "postgres {} (shared)",
                crate::store::postgres::redact_db_url(url.expose())
            ),
        }
    }
}

// ---------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------

/// Where to read the config from: `--config`, else `$SYNTHD_CONFIG`, else
/// [`DEFAULT_CONFIG_PATH`]. Clap fills the first two.
pub fn config_path(arg: Option<PathBuf>) -> PathBuf {
    arg.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
}

/// Reads, merges (file, then `SYNTHD_` environment overrides) and validates.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file_key = "config";
    let size = match std::fs::metadata(path) {
        Ok(m) if m.is_file() => m.len(),
        Ok(_) => {
            return Err(ConfigError::new(
                file_key,
                format!("{} is not a file", path.display()),
            ));
        }
        Err(e) => {
            return Err(ConfigError::new(
                file_key,
                format!(
                    "cannot read {}: {e} (pass --config PATH or set SYNTHD_CONFIG)",
                    path.display()
                ),
            ));
        }
    };
    // The parsed document is many times the size of the Config and
    // short-lived; parsed on the caller's thread, its freed pieces would
    // sit between the Config's and keep the heap's pages resident for
    // good. Parsed on a thread of its own (its own malloc arena), only a
    // compact copy of the Config is made here and the rest goes back to
    // the system. That thread and its arena cost about 1 MiB of peak
    // memory: a small file is parsed here.
    if size < SMALL_CONFIG {
        return parse_file(path);
    }
    let parsed = std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("synthd-config".into())
            .stack_size(CONFIG_THREAD_STACK)
            .spawn_scoped(s, || parse_file(path))
            .map(|t| t.join())
    });
    match parsed {
        Ok(Ok(Ok(parsed))) => {
            let config = parsed.clone();
            drop(parsed);
            crate::memory::trim();
            Ok(config)
        }
        Ok(Ok(Err(e))) => Err(e),
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        // No thread to be had: parse here; compactness is no reason to fail.
        Err(_) => parse_file(path),
    }
}

/// Below this size (a few hundred accounts) a config's parse leaves less
/// behind than a parsing thread costs.
const SMALL_CONFIG: u64 = 64 << 10;

/// The parsing thread's stack: as large as a main thread's, so that no
/// config that loads on one fails on the other.
const CONFIG_THREAD_STACK: usize = 8 << 20;

/// Reads, merges and validates the file (see [`load`]).
fn parse_file(path: &Path) -> Result<Config, ConfigError> {
    let figment = catalog::with_builtins(
        Figment::new()
            .merge(Toml::file_exact(path))
            .merge(env_overrides()),
    );
    let raw: RawConfig = figment.extract().map_err(figment_error)?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    validate::validate(raw, base_dir)
}

/// The `{param}` names a built-in provider's base URL needs (empty for an
/// unknown name).
pub fn catalog_params(name: &str) -> Vec<String> {
    catalog::get(name)
        .and_then(|e| catalog_provider(&e).ok())
        .map(|p| p.params)
        .unwrap_or_default()
}

/// Parses and validates a config held in a string (used by `demo` and tests).
pub fn from_toml_str(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
    let raw: RawConfig = catalog::with_builtins(Figment::new().merge(Toml::string(text)))
        .extract()
        .map_err(figment_error)?;
    validate::validate(raw, base_dir)
}

/// `SYNTHD_DAEMON__STATE_DIR=/x` overrides `daemon.state_dir`. Only names with
/// `__` count, so `SYNTHD_CONFIG` or a secret in `SYNTHD_HR_SECRET` is never
/// taken for a key.
fn env_overrides() -> Env {
    Env::prefixed("SYNTHD_")
        .filter(|key| key.as_str().contains("__"))
        .split("__")
}

fn figment_error(err: figment::Error) -> ConfigError {
    let err = err
        .into_iter()
        .next()
        .expect("figment errors are non-empty");
    let path = display_path(&err.path);
    let mut message = one_line(&match &err.kind {
        // serde's message quotes the value, which may be a secret written
        // into the wrong key: name its kind only.
        figment::error::Kind::InvalidType(actual, expected) => {
            format!(
                "invalid type: found {}, expected {expected}",
                kind_only(actual)
            )
        }
        figment::error::Kind::InvalidValue(actual, expected) => {
            format!(
                "invalid value: found {}, expected {expected}",
                kind_only(actual)
            )
        }
        figment::error::Kind::UnknownVariant(_, expected) => {
            format!("unknown variant, expected one of: {}", expected.join(", "))
        }
        kind => kind.to_string(),
    });
    if let figment::error::Kind::UnknownField(field, _) = &err.kind {
        message = format!(
            "unknown key `{field}` (check the spelling against config/synthd.example.toml)"
        );
        let mut full = err.path.clone();
        // figment already ends the path with the unknown field.
        if full.last() != Some(field) {
            full.push(field.clone());
        }
        return ConfigError::new(display_path(&full), message);
    }
    if let Some(meta) = &err.metadata
        && meta.name.contains("environment")
    {
        message.push_str(" (set by a SYNTHD_…__… environment variable)");
    }
    ConfigError::new(
        if path.is_empty() {
            "config".into()
        } else {
            path
        },
        message,
    )
}

/// The kind of a value from serde's error, without the value.
fn kind_only(actual: &figment::error::Actual) -> &'static str {
    use figment::error::Actual;
    match actual {
        Actual::Bool(_) => "a boolean",
        Actual::Unsigned(_) | Actual::Signed(_) => "an integer",
        Actual::Float(_) => "a float",
        Actual::Char(_) | Actual::Str(_) => "a string",
        Actual::Bytes(_) => "bytes",
        Actual::Seq => "a list",
        Actual::Map => "a table",
        _ => "another kind of value",
    }
}

/// The TOML parser's message spans lines: the position, the offending line
/// of the file (which may hold an inline secret) with a caret under it, and
/// the reason. Errors are one line and never echo the file: keep the
/// position and the reason.
fn one_line(message: &str) -> String {
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    match lines.as_slice() {
        [] => message.trim().to_string(),
        [only] => only.to_string(),
        [first, .., last] => format!("{first}: {last}"),
    }
}

/// `["accounts", "2", "interval"]` → `accounts[2].interval`.
fn display_path(parts: &[String]) -> String {
    let mut out = String::new();
    for p in parts {
        if p.parse::<usize>().is_ok() {
            out.push_str(&format!("[{p}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(p);
        }
    }
    out
}

impl Secret {
    /// The HMAC key of a validated `whsec_` secret.
    pub fn key_bytes(&self) -> Vec<u8> {
        let b64 = self.0.strip_prefix("whsec_").unwrap_or(&self.0);
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap_or_else(|_| self.0.as_bytes().to_vec())
    }
}

impl Account {
    /// A digest of everything whose change is an `account.updated`:
    /// provider, base URL, resources, schedule and credentials. Only this
    /// digest is stored, never the credentials.
    pub fn fingerprint(&self) -> String {
        let mut h = Fingerprint::default();
        let mut field = |s: &str| h.field(s);
        field(&self.provider);
        field(self.base_url.as_str());
        for r in &self.resources {
            field(r);
        }
        field(&self.schedule.to_string());
        match &self.auth {
            Auth::None => field("none"),
            Auth::Bearer { token } => {
                field("bearer");
                field(token.expose());
            }
            Auth::Basic { username, password } => {
                field("basic");
                field(username.expose());
                field(password.expose());
            }
            Auth::Header { name, value } | Auth::Query { name, value } => {
                field("header/query");
                field(name);
                field(value.expose());
            }
            Auth::OAuth2(o) => {
                field("oauth2");
                field(o.token_url.as_str());
                field(&o.client_id);
                field(o.client_secret.expose());
                field(o.scope.as_deref().unwrap_or(""));
            }
        }
        h.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(s: &str) -> Result<Config, ConfigError> {
        from_toml_str(s, Path::new("."))
    }

    const MIN: &str = r#"
[providers.p]
base_url = "http://127.0.0.1:1/v1"
[providers.p.resources.hris_employees]
path = "/employees"
[[accounts]]
id = "a"
provider = "p"
[[webhooks]]
id = "w"
url = "http://127.0.0.1:2/hook?token=abc"
events = ["*"]
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
"#;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = load_str(MIN).unwrap();
        assert_eq!(
            c.accounts[0].schedule,
            Schedule::Every(Duration::from_secs(3600))
        );
        assert_eq!(c.accounts[0].resources, vec!["hris_employees"]);
        assert_eq!(c.webhooks[0].timeout, Duration::from_secs(10));
        assert_eq!(c.webhooks[0].signature_header, "x-synthd-signature");
        assert_eq!(c.daemon.max_concurrent_polls, 8);
        let r = &c.providers["p"].resources["hris_employees"];
        assert_eq!(r.id.as_str(), "/id");
        assert!(r.records.is_root());
    }

    #[test]
    fn event_filters_match_as_documented() {
        let p = EventFilter::Prefix("hris_employees".into());
        assert!(p.matches("hris_employees.created"));
        assert!(!p.matches("hris_employees_x.created"));
        assert!(EventFilter::All.matches("account.created"));
        assert!(EventFilter::Exact("a.b".into()).matches("a.b"));
        assert!(!EventFilter::Exact("a.b".into()).matches("a.c"));
    }

    #[test]
    fn secret_debug_is_redacted() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(***)");
    }

    /// `MIN` grown past [`SMALL_CONFIG`] with more accounts, so `load`
    /// parses it on its own thread.
    fn large(extra: &str) -> String {
        let mut text = MIN.to_string();
        let mut k = 0;
        while text.len() < SMALL_CONFIG as usize {
            text.push_str(&format!(
                "[[accounts]]\nid = \"tenant-{k}\"\nprovider = \"p\"\n"
            ));
            k += 1;
        }
        text + extra
    }

    #[test]
    fn a_large_file_loads_as_the_same_text_does() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("synthd.toml");
        let text = large("");
        std::fs::write(&path, &text).unwrap();
        let loaded = load(&path).unwrap();
        let parsed = from_toml_str(&text, dir.path()).unwrap();
        assert!(loaded.accounts.len() > 1000);
        let prints =
            |c: &Config| -> Vec<String> { c.accounts.iter().map(Account::fingerprint).collect() };
        assert_eq!(prints(&loaded), prints(&parsed));
        assert_eq!(
            loaded.webhooks[0].fingerprint(),
            parsed.webhooks[0].fingerprint()
        );

        std::fs::write(
            &path,
            large("[[accounts]]\nid = \"bad\"\nprovider = \"nope\"\n"),
        )
        .unwrap();
        let err = load(&path).unwrap_err();
        assert!(err.path.starts_with("accounts["), "{err}");
    }

    #[test]
    fn display_path_formats_indices() {
        let p: Vec<String> = ["accounts", "2", "interval"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(display_path(&p), "accounts[2].interval");
    }
}
