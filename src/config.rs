//! Configuration: the TOML file (plus `SYNTHD_…__…` environment overrides),
//! deserialised into raw structs and then validated into the typed [`Config`]
//! the rest of the daemon uses.
//!
//! Validation is where every operator mistake should be caught, so every
//! failure is a [`ConfigError`] carrying the key path (`accounts[2].interval`)
//! and a sentence saying what is wrong. Secrets are resolved here too (inline,
//! `_env` or `_file`) and wrapped in [`Secret`], whose `Debug` never prints
//! the value.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use base64::Engine as _;
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;
use url::Url;

use crate::redact::redact_url;
use crate::schedule::Schedule;

/// Default location of the config file when neither `--config` nor
/// `$SYNTHD_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/synthd/synthd.toml";

/// A config problem: the key path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: escape_controls(path.into()),
            message: escape_controls(message.into()),
        }
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
pub struct Secret(String);

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
    pub providers: BTreeMap<String, Provider>,
    pub accounts: Vec<Account>,
    pub webhooks: Vec<Webhook>,
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
    pub base_url: Url,
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
    pub records: String,
    pub id: String,
    pub pagination: Pagination,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub ignore: Vec<String>,
    pub updated_since: Option<UpdatedSince>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pagination {
    Page {
        page_param: String,
        size_param: String,
        size: u64,
        first_page: u64,
    },
    Offset {
        offset_param: String,
        limit_param: String,
        size: u64,
    },
    Cursor {
        cursor_param: String,
        next: String,
    },
    Link,
    NextUrl {
        next: String,
    },
    None,
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
    Basic { username: String, password: Secret },
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
    pub base_url: Url,
    pub auth: Auth,
    pub resources: Vec<String>,
    pub schedule: Schedule,
    pub emit_initial: bool,
    pub enabled: bool,
}

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
}

impl Webhook {
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

    pub fn db_path(&self) -> PathBuf {
        self.daemon.state_dir.join("synthd.db")
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
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => {}
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
    }
    let figment = Figment::new()
        .merge(Toml::file_exact(path))
        .merge(env_overrides());
    let raw: RawConfig = figment.extract().map_err(figment_error)?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    validate(raw, base_dir)
}

/// Parses and validates a config held in a string (used by `demo` and tests).
pub fn from_toml_str(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
    let raw: RawConfig = Figment::new()
        .merge(Toml::string(text))
        .extract()
        .map_err(figment_error)?;
    validate(raw, base_dir)
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
    let mut message = one_line(&err.kind.to_string());
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

// ---------------------------------------------------------------------------
// Raw (as written) configuration
// ---------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    daemon: RawDaemon,
    #[serde(default)]
    providers: BTreeMap<String, RawProvider>,
    #[serde(default)]
    accounts: Vec<RawAccount>,
    #[serde(default)]
    webhooks: Vec<RawWebhook>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    state_dir: Option<PathBuf>,
    log_format: Option<LogFormat>,
    max_concurrent_polls: Option<i64>,
    listen: Option<String>,
    hash_key_file: Option<PathBuf>,
    retention: Option<RawRetention>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    delivered: Option<String>,
    failed: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    base_url: String,
    #[serde(default)]
    auth: Option<RawAuth>,
    pagination: Option<RawPagination>,
    records: Option<String>,
    id: Option<String>,
    #[serde(default)]
    query: BTreeMap<String, String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    rate_limit: Option<String>,
    timeout: Option<String>,
    retries: Option<i64>,
    retry_backoff: Option<String>,
    max_pages: Option<i64>,
    max_page_bytes: Option<RawBytes>,
    #[serde(default)]
    resources: BTreeMap<String, RawResource>,
}

/// A byte size: a number, or a string such as "64MiB".
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawBytes {
    Number(i64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResource {
    path: String,
    records: Option<String>,
    id: Option<String>,
    pagination: Option<RawPagination>,
    #[serde(default)]
    query: BTreeMap<String, String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    ignore: Vec<String>,
    updated_since: Option<RawUpdatedSince>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpdatedSince {
    param: String,
    #[serde(default = "default_time_format")]
    format: TimeFormat,
    lookback: Option<String>,
    full_scan_every: Option<String>,
}

fn default_time_format() -> TimeFormat {
    TimeFormat::Rfc3339
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum RawPagination {
    Page {
        #[serde(default = "default_page_param")]
        page_param: String,
        #[serde(default = "default_size_param")]
        size_param: String,
        #[serde(default = "default_page_size")]
        size: i64,
        #[serde(default = "default_first_page")]
        first_page: i64,
    },
    Offset {
        #[serde(default = "default_offset_param")]
        offset_param: String,
        #[serde(default = "default_limit_param")]
        limit_param: String,
        #[serde(default = "default_page_size")]
        size: i64,
    },
    Cursor {
        #[serde(default = "default_cursor_param")]
        cursor_param: String,
        next: String,
    },
    // Braces, not unit variants, so that deny_unknown_fields rejects
    // `{ type = "link", next = "…" }` instead of ignoring `next`.
    Link {},
    NextUrl {
        next: String,
    },
    None {},
}

fn default_page_param() -> String {
    "page".into()
}
fn default_size_param() -> String {
    "per_page".into()
}
fn default_page_size() -> i64 {
    100
}
fn default_first_page() -> i64 {
    1
}
fn default_offset_param() -> String {
    "offset".into()
}
fn default_limit_param() -> String {
    "limit".into()
}
fn default_cursor_param() -> String {
    "cursor".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum RawAuth {
    None {},
    Bearer {
        token: Option<String>,
        token_env: Option<String>,
        token_file: Option<PathBuf>,
    },
    Basic {
        username: String,
        password: Option<String>,
        password_env: Option<String>,
        password_file: Option<PathBuf>,
    },
    Header {
        name: String,
        value: Option<String>,
        value_env: Option<String>,
        value_file: Option<PathBuf>,
    },
    Query {
        name: String,
        value: Option<String>,
        value_env: Option<String>,
        value_file: Option<PathBuf>,
    },
    Oauth2 {
        token_url: String,
        client_id: String,
        client_secret: Option<String>,
        client_secret_env: Option<String>,
        client_secret_file: Option<PathBuf>,
        scope: Option<String>,
        #[serde(default)]
        client_auth: ClientAuth,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccount {
    id: String,
    provider: String,
    base_url: Option<String>,
    auth: Option<RawAuth>,
    resources: Option<Vec<String>>,
    interval: Option<String>,
    cron: Option<String>,
    #[serde(default)]
    emit_initial: bool,
    #[serde(default = "yes")]
    enabled: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    id: String,
    name: Option<String>,
    url: String,
    events: Vec<String>,
    secret: Option<String>,
    secret_env: Option<String>,
    secret_file: Option<PathBuf>,
    secrets: Option<Vec<String>>,
    secrets_env: Option<Vec<String>>,
    secrets_file: Option<Vec<PathBuf>>,
    accounts: Option<Vec<String>>,
    #[serde(default = "yes")]
    enabled: bool,
    timeout: Option<String>,
    signature_header: Option<String>,
}

fn yes() -> bool {
    true
}

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

pub const MIN_INTERVAL: Duration = Duration::from_secs(5 * 60);
pub const MAX_INTERVAL: Duration = Duration::from_secs(60 * 60);
const DEFAULT_INTERVAL: Duration = MAX_INTERVAL;
const MAX_FULL_SCAN_EVERY: Duration = Duration::from_secs(7 * 86400);
const DEFAULT_MAX_PAGE_BYTES: u64 = 64 << 20;
const MIN_MAX_PAGE_BYTES: u64 = 1 << 10;
const MAX_MAX_PAGE_BYTES: u64 = 1 << 30;

fn validate(raw: RawConfig, base_dir: &Path) -> Result<Config, ConfigError> {
    let daemon = validate_daemon(raw.daemon, base_dir)?;

    let mut providers = BTreeMap::new();
    for (name, p) in raw.providers {
        let provider = validate_provider(&name, p, base_dir)?;
        providers.insert(name, provider);
    }

    let mut accounts: Vec<Account> = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, a) in raw.accounts.into_iter().enumerate() {
        let path = format!("accounts[{i}]");
        let account = validate_account(&path, a, &providers, base_dir)?;
        if !seen.insert(account.id.clone()) {
            return Err(ConfigError::new(
                format!("{path}.id"),
                format!("duplicate account id {:?}", account.id),
            ));
        }
        accounts.push(account);
    }

    let mut webhooks: Vec<Webhook> = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, w) in raw.webhooks.into_iter().enumerate() {
        let path = format!("webhooks[{i}]");
        let webhook = validate_webhook(&path, w, &accounts, base_dir)?;
        if !seen.insert(webhook.id.clone()) {
            return Err(ConfigError::new(
                format!("{path}.id"),
                format!("duplicate webhook id {:?}", webhook.id),
            ));
        }
        webhooks.push(webhook);
    }

    Ok(Config {
        daemon,
        providers,
        accounts,
        webhooks,
    })
}

fn validate_daemon(raw: RawDaemon, base_dir: &Path) -> Result<Daemon, ConfigError> {
    let state_dir = raw
        .state_dir
        .unwrap_or_else(|| PathBuf::from("/var/lib/synthd"));
    if state_dir.as_os_str().is_empty() {
        return Err(ConfigError::new("daemon.state_dir", "must not be empty"));
    }
    let max_concurrent_polls = match raw.max_concurrent_polls {
        None => 8,
        Some(n) if (1..=1024).contains(&n) => n as usize,
        Some(n) => {
            return Err(ConfigError::new(
                "daemon.max_concurrent_polls",
                format!("{n} is outside 1..=1024"),
            ));
        }
    };
    let listen = match raw.listen {
        None => None,
        Some(s) => Some(s.parse::<SocketAddr>().map_err(|_| {
            ConfigError::new(
                "daemon.listen",
                format!("{s:?} is not an address like \"127.0.0.1:9464\""),
            )
        })?),
    };
    let hash_key = match raw.hash_key_file {
        None => None,
        Some(f) => {
            let key = read_secret_file("daemon.hash_key_file", &f, base_dir)?;
            if key.expose().len() < 16 {
                return Err(ConfigError::new(
                    "daemon.hash_key_file",
                    "the key is shorter than 16 bytes; generate one with `synthd secret`",
                ));
            }
            Some(key)
        }
    };
    let retention = raw.retention.unwrap_or_default();
    let retention = Retention {
        delivered: duration_or(
            "daemon.retention.delivered",
            retention.delivered,
            Duration::from_secs(7 * 86400),
        )?,
        failed: duration_or(
            "daemon.retention.failed",
            retention.failed,
            Duration::from_secs(30 * 86400),
        )?,
    };
    Ok(Daemon {
        state_dir,
        log_format: raw.log_format.unwrap_or(LogFormat::Json),
        max_concurrent_polls,
        listen,
        hash_key,
        retention,
    })
}

fn validate_provider(
    name: &str,
    raw: RawProvider,
    base_dir: &Path,
) -> Result<Provider, ConfigError> {
    let path = format!("providers.{name}");
    check_name(&path, name)?;
    let base_url = parse_url(&format!("{path}.base_url"), &raw.base_url)?;
    let auth = match raw.auth {
        None => Auth::None,
        Some(a) => validate_auth(&format!("{path}.auth"), a, base_dir)?,
    };
    let default_pagination = match raw.pagination {
        None => Pagination::None,
        Some(p) => validate_pagination(&format!("{path}.pagination"), p)?,
    };
    let records = pointer(&format!("{path}.records"), raw.records.unwrap_or_default())?;
    let id = pointer(
        &format!("{path}.id"),
        raw.id.unwrap_or_else(|| "/id".into()),
    )?;
    let query = pairs(&format!("{path}.query"), raw.query, false)?;
    let headers = pairs(&format!("{path}.headers"), raw.headers, true)?;
    let rate_limit = match raw.rate_limit {
        None => None,
        Some(s) => Some(parse_rate_limit(&format!("{path}.rate_limit"), &s)?),
    };
    let timeout = duration_or(
        &format!("{path}.timeout"),
        raw.timeout,
        Duration::from_secs(30),
    )?;
    if timeout < Duration::from_secs(1) || timeout > Duration::from_secs(300) {
        return Err(ConfigError::new(
            format!("{path}.timeout"),
            format!("{} is outside 1s..=5m", humantime::format_duration(timeout)),
        ));
    }
    let retries = match raw.retries {
        None => 3,
        Some(n) if (0..=10).contains(&n) => n as u32,
        Some(n) => {
            return Err(ConfigError::new(
                format!("{path}.retries"),
                format!("{n} is outside 0..=10"),
            ));
        }
    };
    let retry_backoff = duration_or(
        &format!("{path}.retry_backoff"),
        raw.retry_backoff,
        Duration::from_millis(500),
    )?;
    if retry_backoff.is_zero() || retry_backoff > Duration::from_secs(60) {
        return Err(ConfigError::new(
            format!("{path}.retry_backoff"),
            format!(
                "{} is outside 1ms..=1m",
                humantime::format_duration(retry_backoff)
            ),
        ));
    }
    let max_pages = positive(&format!("{path}.max_pages"), raw.max_pages, 100_000)?;
    let max_page_bytes = match raw.max_page_bytes {
        None => DEFAULT_MAX_PAGE_BYTES,
        Some(b) => page_bytes(&format!("{path}.max_page_bytes"), b)?,
    };
    if raw.resources.is_empty() {
        return Err(ConfigError::new(
            format!("{path}.resources"),
            "a provider needs at least one resource ([providers.NAME.resources.RESOURCE] with a path)",
        ));
    }
    let mut resources = BTreeMap::new();
    for (rname, r) in raw.resources {
        let rpath = format!("{path}.resources.{rname}");
        check_name(&rpath, &rname)?;
        if rname == "account" || rname == "webhook" {
            return Err(ConfigError::new(
                rpath,
                "this name is reserved for account.* and webhook.* events",
            ));
        }
        if !r.path.starts_with('/') && Url::parse(&r.path).is_err() {
            return Err(ConfigError::new(
                format!("{rpath}.path"),
                format!("{:?} must start with / (relative to base_url)", r.path),
            ));
        }
        if r.path.starts_with('/') && r.path.contains(['?', '#']) {
            return Err(ConfigError::new(
                format!("{rpath}.path"),
                format!(
                    "{:?} has a query; put its parameters in query = {{ … }}",
                    r.path
                ),
            ));
        }
        let pagination = match r.pagination {
            None => default_pagination.clone(),
            Some(p) => validate_pagination(&format!("{rpath}.pagination"), p)?,
        };
        let records = match r.records {
            None => records.clone(),
            Some(p) => pointer(&format!("{rpath}.records"), p)?,
        };
        let id = match r.id {
            None => id.clone(),
            Some(p) => pointer(&format!("{rpath}.id"), p)?,
        };
        let rq = overlay(
            &query,
            pairs(&format!("{rpath}.query"), r.query, false)?,
            false,
        );
        let rh = overlay(
            &headers,
            pairs(&format!("{rpath}.headers"), r.headers, true)?,
            true,
        );
        let mut ignore = Vec::new();
        for (i, p) in r.ignore.into_iter().enumerate() {
            let p = pointer(&format!("{rpath}.ignore[{i}]"), p)?;
            if p.is_empty() {
                return Err(ConfigError::new(
                    format!("{rpath}.ignore[{i}]"),
                    "\"\" would ignore the whole record",
                ));
            }
            ignore.push(p);
        }
        let updated_since = match r.updated_since {
            None => None,
            Some(u) => {
                let upath = format!("{rpath}.updated_since");
                if u.param.is_empty() {
                    return Err(ConfigError::new(
                        format!("{upath}.param"),
                        "must not be empty",
                    ));
                }
                let lookback = duration_or(
                    &format!("{upath}.lookback"),
                    u.lookback,
                    Duration::from_secs(300),
                )?;
                let full_scan_every = duration_or(
                    &format!("{upath}.full_scan_every"),
                    u.full_scan_every,
                    Duration::from_secs(86400),
                )?;
                if full_scan_every < MIN_INTERVAL || full_scan_every > MAX_FULL_SCAN_EVERY {
                    return Err(ConfigError::new(
                        format!("{upath}.full_scan_every"),
                        format!(
                            "{} is outside 5m..=7d; deletions are only seen by a full scan",
                            humantime::format_duration(full_scan_every)
                        ),
                    ));
                }
                if lookback > full_scan_every {
                    return Err(ConfigError::new(
                        format!("{upath}.lookback"),
                        format!(
                            "{} is longer than full_scan_every",
                            humantime::format_duration(lookback)
                        ),
                    ));
                }
                Some(UpdatedSince {
                    param: u.param,
                    format: u.format,
                    lookback,
                    full_scan_every,
                })
            }
        };
        resources.insert(
            rname.clone(),
            Resource {
                name: rname,
                path: r.path,
                records,
                id,
                pagination,
                query: rq,
                headers: rh,
                ignore,
                updated_since,
            },
        );
    }
    Ok(Provider {
        name: name.to_string(),
        base_url,
        auth,
        rate_limit,
        timeout,
        retries,
        retry_backoff,
        max_pages,
        max_page_bytes,
        resources,
    })
}

fn validate_pagination(path: &str, raw: RawPagination) -> Result<Pagination, ConfigError> {
    let size_ok = |size: i64| -> Result<u64, ConfigError> {
        if (1..=100_000).contains(&size) {
            Ok(size as u64)
        } else {
            Err(ConfigError::new(
                format!("{path}.size"),
                format!("{size} is outside 1..=100000"),
            ))
        }
    };
    Ok(match raw {
        RawPagination::Page {
            page_param,
            size_param,
            size,
            first_page,
        } => {
            if first_page < 0 {
                return Err(ConfigError::new(
                    format!("{path}.first_page"),
                    "must be 0 or more",
                ));
            }
            Pagination::Page {
                page_param,
                size_param,
                size: size_ok(size)?,
                first_page: first_page as u64,
            }
        }
        RawPagination::Offset {
            offset_param,
            limit_param,
            size,
        } => Pagination::Offset {
            offset_param,
            limit_param,
            size: size_ok(size)?,
        },
        RawPagination::Cursor { cursor_param, next } => Pagination::Cursor {
            cursor_param,
            next: pointer(&format!("{path}.next"), next)?,
        },
        RawPagination::Link {} => Pagination::Link,
        RawPagination::NextUrl { next } => Pagination::NextUrl {
            next: pointer(&format!("{path}.next"), next)?,
        },
        RawPagination::None {} => Pagination::None,
    })
}

fn validate_auth(path: &str, raw: RawAuth, base_dir: &Path) -> Result<Auth, ConfigError> {
    Ok(match raw {
        RawAuth::None {} => Auth::None,
        RawAuth::Bearer {
            token,
            token_env,
            token_file,
        } => Auth::Bearer {
            token: resolve_secret(path, "token", token, token_env, token_file, base_dir)?,
        },
        RawAuth::Basic {
            username,
            password,
            password_env,
            password_file,
        } => Auth::Basic {
            username,
            password: resolve_secret(
                path,
                "password",
                password,
                password_env,
                password_file,
                base_dir,
            )?,
        },
        RawAuth::Header {
            name,
            value,
            value_env,
            value_file,
        } => {
            if reqwest::header::HeaderName::from_str(&name).is_err() {
                return Err(ConfigError::new(
                    format!("{path}.name"),
                    format!("{name:?} is not a valid HTTP header name"),
                ));
            }
            Auth::Header {
                name,
                value: resolve_secret(path, "value", value, value_env, value_file, base_dir)?,
            }
        }
        RawAuth::Query {
            name,
            value,
            value_env,
            value_file,
        } => {
            if name.is_empty() {
                return Err(ConfigError::new(
                    format!("{path}.name"),
                    "must not be empty",
                ));
            }
            Auth::Query {
                name,
                value: resolve_secret(path, "value", value, value_env, value_file, base_dir)?,
            }
        }
        RawAuth::Oauth2 {
            token_url,
            client_id,
            client_secret,
            client_secret_env,
            client_secret_file,
            scope,
            client_auth,
        } => Auth::OAuth2(OAuth2 {
            token_url: parse_url(&format!("{path}.token_url"), &token_url)?,
            client_id: if client_id.is_empty() {
                return Err(ConfigError::new(
                    format!("{path}.client_id"),
                    "must not be empty",
                ));
            } else {
                client_id
            },
            client_secret: resolve_secret(
                path,
                "client_secret",
                client_secret,
                client_secret_env,
                client_secret_file,
                base_dir,
            )?,
            scope,
            client_auth,
        }),
    })
}

fn validate_account(
    path: &str,
    raw: RawAccount,
    providers: &BTreeMap<String, Provider>,
    base_dir: &Path,
) -> Result<Account, ConfigError> {
    check_name(&format!("{path}.id"), &raw.id)?;
    let Some(provider) = providers.get(&raw.provider) else {
        let known: Vec<&str> = providers.keys().map(String::as_str).collect();
        return Err(ConfigError::new(
            format!("{path}.provider"),
            format!(
                "unknown provider {:?} (defined: {})",
                raw.provider,
                list_or_none(&known)
            ),
        ));
    };
    let base_url = match raw.base_url {
        None => provider.base_url.clone(),
        Some(u) => parse_url(&format!("{path}.base_url"), &u)?,
    };
    let auth = match raw.auth {
        None => provider.auth.clone(),
        Some(a) => validate_auth(&format!("{path}.auth"), a, base_dir)?,
    };
    let resources = match raw.resources {
        None => provider.resources.keys().cloned().collect(),
        Some(list) => {
            if list.is_empty() {
                return Err(ConfigError::new(
                    format!("{path}.resources"),
                    "an empty list polls nothing; remove the key to poll every resource, or set enabled = false",
                ));
            }
            let mut seen = BTreeSet::new();
            for (i, r) in list.iter().enumerate() {
                if !provider.resources.contains_key(r) {
                    let known: Vec<&str> = provider.resources.keys().map(String::as_str).collect();
                    return Err(ConfigError::new(
                        format!("{path}.resources[{i}]"),
                        format!(
                            "provider {:?} has no resource {r:?} (it has: {})",
                            provider.name,
                            list_or_none(&known)
                        ),
                    ));
                }
                if !seen.insert(r) {
                    return Err(ConfigError::new(
                        format!("{path}.resources[{i}]"),
                        format!("{r:?} is listed twice"),
                    ));
                }
            }
            list
        }
    };
    let schedule = match (raw.interval, raw.cron) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                format!("{path}.cron"),
                "set either interval or cron, not both",
            ));
        }
        (Some(i), None) => {
            let key = format!("{path}.interval");
            let d = parse_duration(&key, &i)?;
            if d < MIN_INTERVAL {
                return Err(ConfigError::new(
                    key,
                    format!("{i:?} is below the 5m minimum"),
                ));
            }
            if d > MAX_INTERVAL {
                return Err(ConfigError::new(
                    key,
                    format!("{i:?} is above the 1h maximum"),
                ));
            }
            Schedule::Every(d)
        }
        (None, Some(c)) => {
            let key = format!("{path}.cron");
            Schedule::cron(&c, MIN_INTERVAL).map_err(|m| ConfigError::new(key, m))?
        }
        (None, None) => Schedule::Every(DEFAULT_INTERVAL),
    };
    Ok(Account {
        id: raw.id,
        provider: raw.provider,
        base_url,
        auth,
        resources,
        schedule,
        emit_initial: raw.emit_initial,
        enabled: raw.enabled,
    })
}

fn validate_webhook(
    path: &str,
    raw: RawWebhook,
    accounts: &[Account],
    base_dir: &Path,
) -> Result<Webhook, ConfigError> {
    check_name(&format!("{path}.id"), &raw.id)?;
    let url = parse_url(&format!("{path}.url"), &raw.url)?;
    if raw.events.is_empty() {
        return Err(ConfigError::new(
            format!("{path}.events"),
            "empty: list event types, \"<resource>.*\" or \"*\"",
        ));
    }
    let mut events = Vec::new();
    for (i, e) in raw.events.iter().enumerate() {
        events.push(parse_event_filter(&format!("{path}.events[{i}]"), e)?);
    }
    let forms = [
        raw.secret.is_some(),
        raw.secret_env.is_some(),
        raw.secret_file.is_some(),
        raw.secrets.is_some(),
        raw.secrets_env.is_some(),
        raw.secrets_file.is_some(),
    ];
    let mut secrets = Vec::new();
    match forms.iter().filter(|x| **x).count() {
        0 => {
            return Err(ConfigError::new(
                format!("{path}.secret"),
                "missing: set secret_env (recommended), secret_file or secret; `synthd secret` makes one",
            ));
        }
        1 => {}
        _ => {
            return Err(ConfigError::new(
                format!("{path}.secret"),
                "set only one of secret, secret_env, secret_file, secrets, secrets_env, secrets_file",
            ));
        }
    }
    if raw.secret.is_some() || raw.secret_env.is_some() || raw.secret_file.is_some() {
        // Name the key the operator actually set.
        let field = if raw.secret_env.is_some() {
            "secret_env"
        } else if raw.secret_file.is_some() {
            "secret_file"
        } else {
            "secret"
        };
        let s = resolve_secret(
            path,
            "secret",
            raw.secret,
            raw.secret_env,
            raw.secret_file,
            base_dir,
        )?;
        secrets.push(decode_whsec(&secret_key_path(path, field), &s)?);
    }
    for (i, v) in raw.secrets.into_iter().flatten().enumerate() {
        let key = format!("{path}.secrets[{i}]");
        secrets.push(decode_whsec(&key, &Secret(v))?);
    }
    for (i, v) in raw.secrets_env.into_iter().flatten().enumerate() {
        let key = format!("{path}.secrets_env[{i}]");
        let s = read_secret_env(&key, &v)?;
        secrets.push(decode_whsec(&key, &s)?);
    }
    for (i, v) in raw.secrets_file.into_iter().flatten().enumerate() {
        let key = format!("{path}.secrets_file[{i}]");
        let s = read_secret_file(&key, &v, base_dir)?;
        secrets.push(decode_whsec(&key, &s)?);
    }
    if secrets.is_empty() {
        return Err(ConfigError::new(
            format!("{path}.secrets"),
            "the list is empty",
        ));
    }
    if let Some(list) = &raw.accounts {
        for (i, a) in list.iter().enumerate() {
            if !accounts.iter().any(|x| &x.id == a) {
                return Err(ConfigError::new(
                    format!("{path}.accounts[{i}]"),
                    format!("unknown account {a:?}"),
                ));
            }
        }
    }
    let timeout = duration_or(
        &format!("{path}.timeout"),
        raw.timeout,
        Duration::from_secs(10),
    )?;
    if timeout < Duration::from_secs(1) || timeout > Duration::from_secs(30) {
        return Err(ConfigError::new(
            format!("{path}.timeout"),
            format!(
                "{} is outside 1s..=30s",
                humantime::format_duration(timeout)
            ),
        ));
    }
    let signature_header = raw
        .signature_header
        .unwrap_or_else(|| "x-synthd-signature".into())
        .to_ascii_lowercase();
    if reqwest::header::HeaderName::from_str(&signature_header).is_err()
        || signature_header.starts_with("webhook-")
        || signature_header == "content-type"
    {
        return Err(ConfigError::new(
            format!("{path}.signature_header"),
            format!("{signature_header:?} is not a usable header name"),
        ));
    }
    Ok(Webhook {
        name: raw.name.unwrap_or_else(|| raw.id.clone()),
        id: raw.id,
        url,
        events,
        secrets,
        accounts: raw.accounts,
        enabled: raw.enabled,
        timeout,
        signature_header,
    })
}

// ---------------------------------------------------------------------------
// Field helpers
// ---------------------------------------------------------------------------

fn list_or_none(items: &[&str]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// Ids become event types, log fields and database keys; keep them plain.
fn check_name(path: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            path,
            format!("{name:?} must be 1-128 characters of A-Z a-z 0-9 _ - ."),
        ))
    }
}

fn parse_url(path: &str, s: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(s).map_err(|e| {
        ConfigError::new(path, format!("{:?} is not a URL: {e}", redact_str_url(s)))
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ConfigError::new(
            path,
            format!(
                "{} must be an http:// or https:// URL with a host",
                redact_url(&url)
            ),
        ));
    }
    Ok(url)
}

/// For a string that failed to parse we cannot redact by structure, so cut
/// it at the query.
fn redact_str_url(s: &str) -> String {
    match s.split_once('?') {
        Some((head, _)) => format!("{head}?***"),
        None => s.to_string(),
    }
}

/// A JSON pointer (RFC 6901): "" or "/a/b".
fn pointer(path: &str, p: String) -> Result<String, ConfigError> {
    if p.is_empty() || p.starts_with('/') {
        let bad_escape = p
            .match_indices('~')
            .any(|(i, _)| !matches!(p.as_bytes().get(i + 1), Some(b'0') | Some(b'1')));
        if !bad_escape {
            return Ok(p);
        }
    }
    Err(ConfigError::new(
        path,
        format!("{p:?} is not a JSON pointer (use \"\" or \"/field/sub\")"),
    ))
}

fn pairs(
    path: &str,
    map: BTreeMap<String, String>,
    headers: bool,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for (k, v) in map {
        if headers {
            if reqwest::header::HeaderName::from_str(&k).is_err() {
                return Err(ConfigError::new(
                    format!("{path}.{k}"),
                    "not a valid HTTP header name",
                ));
            }
            if reqwest::header::HeaderValue::from_str(&v).is_err() {
                return Err(ConfigError::new(
                    format!("{path}.{k}"),
                    "not a valid HTTP header value",
                ));
            }
        }
        out.push((k, v));
    }
    Ok(out)
}

/// The provider's entries with the resource's laid over them: a key set in
/// both takes the resource's value (header names compare case-insensitively).
fn overlay(
    base: &[(String, String)],
    over: Vec<(String, String)>,
    headers: bool,
) -> Vec<(String, String)> {
    let same = |a: &str, b: &str| {
        if headers {
            a.eq_ignore_ascii_case(b)
        } else {
            a == b
        }
    };
    let mut out: Vec<(String, String)> = base
        .iter()
        .filter(|(k, _)| !over.iter().any(|(o, _)| same(k, o)))
        .cloned()
        .collect();
    out.extend(over);
    out
}

/// `67108864`, `"64MiB"`, `"512KiB"`, `"1GiB"` (also KB/MB/GB, as powers of
/// 1000), within 1KiB..=1GiB.
fn page_bytes(path: &str, raw: RawBytes) -> Result<u64, ConfigError> {
    let bad = |shown: String| {
        ConfigError::new(
            path,
            format!(
                "{shown} is not a size in 1KiB..=1GiB (examples: 67108864, \"64MiB\", \"512KiB\")"
            ),
        )
    };
    let n = match &raw {
        RawBytes::Number(n) => u64::try_from(*n).ok(),
        RawBytes::Text(s) => {
            let s = s.trim();
            let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let (digits, unit) = s.split_at(split);
            let scale: Option<u64> = match unit.trim() {
                "" | "B" => Some(1),
                "KiB" => Some(1 << 10),
                "MiB" => Some(1 << 20),
                "GiB" => Some(1 << 30),
                "KB" | "kB" => Some(1_000),
                "MB" => Some(1_000_000),
                "GB" => Some(1_000_000_000),
                _ => None,
            };
            digits
                .parse::<u64>()
                .ok()
                .zip(scale)
                .and_then(|(d, k)| d.checked_mul(k))
        }
    };
    let shown = match raw {
        RawBytes::Number(n) => n.to_string(),
        RawBytes::Text(s) => format!("{s:?}"),
    };
    match n {
        Some(n) if (MIN_MAX_PAGE_BYTES..=MAX_MAX_PAGE_BYTES).contains(&n) => Ok(n),
        _ => Err(bad(shown)),
    }
}

fn positive(path: &str, value: Option<i64>, default: u64) -> Result<u64, ConfigError> {
    match value {
        None => Ok(default),
        Some(n) if n >= 1 => Ok(n as u64),
        Some(n) => Err(ConfigError::new(path, format!("{n} must be 1 or more"))),
    }
}

fn parse_duration(path: &str, s: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(s).map_err(|_| {
        ConfigError::new(
            path,
            format!("{s:?} is not a duration (examples: \"30s\", \"5m\", \"1h\", \"7d\")"),
        )
    })
}

fn duration_or(path: &str, s: Option<String>, default: Duration) -> Result<Duration, ConfigError> {
    match s {
        None => Ok(default),
        Some(s) => parse_duration(path, &s),
    }
}

fn parse_rate_limit(path: &str, s: &str) -> Result<RateLimit, ConfigError> {
    let bad = || {
        ConfigError::new(
            path,
            format!("{s:?} is not a rate like \"10/s\", \"600/m\", \"5000/h\" or \"50/10s\""),
        )
    };
    let (n, unit) = s.split_once('/').ok_or_else(bad)?;
    let requests: u32 = n.trim().parse().map_err(|_| bad())?;
    if requests == 0 {
        return Err(bad());
    }
    let per = match unit.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        // A window such as "10s" or "15m" for limits like "50/10s".
        other => humantime::parse_duration(other).map_err(|_| bad())?,
    };
    if per.is_zero() || per > Duration::from_secs(86400) {
        return Err(bad());
    }
    Ok(RateLimit { requests, per })
}

fn parse_event_filter(path: &str, s: &str) -> Result<EventFilter, ConfigError> {
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
    };
    if s == "*" {
        return Ok(EventFilter::All);
    }
    if let Some(prefix) = s.strip_suffix(".*")
        && part_ok(prefix)
    {
        return Ok(EventFilter::Prefix(prefix.to_string()));
    }
    if let Some((a, b)) = s.split_once('.')
        && part_ok(a)
        && part_ok(b)
    {
        return Ok(EventFilter::Exact(s.to_string()));
    }
    Err(ConfigError::new(
        path,
        format!(
            "{s:?} is not an event filter: use \"hris_employees.created\", \"hris_employees.*\" or \"*\""
        ),
    ))
}

fn secret_key_path(path: &str, field: &str) -> String {
    format!("{path}.{field}")
}

/// Exactly one of `X`, `X_env`, `X_file` must be set.
fn resolve_secret(
    path: &str,
    field: &str,
    inline: Option<String>,
    env: Option<String>,
    file: Option<PathBuf>,
    base_dir: &Path,
) -> Result<Secret, ConfigError> {
    let key = secret_key_path(path, field);
    match (inline, env, file) {
        (Some(v), None, None) => {
            if v.is_empty() {
                Err(ConfigError::new(key, "is empty"))
            } else {
                Ok(Secret(v))
            }
        }
        (None, Some(var), None) => read_secret_env(&format!("{key}_env"), &var),
        (None, None, Some(f)) => read_secret_file(&format!("{key}_file"), &f, base_dir),
        (None, None, None) => Err(ConfigError::new(
            key,
            format!(
                "missing: set {field}_env (an environment variable name), {field}_file or {field}"
            ),
        )),
        _ => Err(ConfigError::new(
            key,
            format!("set only one of {field}, {field}_env and {field}_file"),
        )),
    }
}

fn read_secret_env(path: &str, var: &str) -> Result<Secret, ConfigError> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Ok(Secret(v.trim().to_string())),
        Ok(_) => Err(ConfigError::new(
            path,
            format!("environment variable {var} is empty"),
        )),
        Err(_) => Err(ConfigError::new(
            path,
            format!("environment variable {var} is not set"),
        )),
    }
}

/// A relative path is looked up in `$CREDENTIALS_DIRECTORY` (systemd
/// `LoadCredential=`) first, then next to the config file.
fn read_secret_file(path: &str, file: &Path, base_dir: &Path) -> Result<Secret, ConfigError> {
    let mut candidates = Vec::new();
    if file.is_absolute() {
        candidates.push(file.to_path_buf());
    } else {
        if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
            candidates.push(PathBuf::from(dir).join(file));
        }
        candidates.push(base_dir.join(file));
    }
    let mut last_err = None;
    for c in &candidates {
        match read_small_file(c) {
            Ok(v) if !v.trim().is_empty() => return Ok(Secret(v.trim().to_string())),
            Ok(_) => return Err(ConfigError::new(path, format!("{} is empty", c.display()))),
            Err(e) => last_err = Some((c.clone(), e)),
        }
    }
    let (c, e) = last_err.expect("at least one candidate");
    Err(ConfigError::new(
        path,
        format!("cannot read {}: {e}", c.display()),
    ))
}

/// A secret file is a small regular file: `/dev/zero`, a FIFO or a
/// multi-gigabyte file named by mistake must fail, not hang or fill memory.
fn read_small_file(file: &Path) -> std::io::Result<String> {
    use std::io::Read;
    const LIMIT: u64 = 64 * 1024;
    if !std::fs::metadata(file)?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut text = String::new();
    std::fs::File::open(file)?
        .take(LIMIT + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > LIMIT {
        return Err(std::io::Error::other(
            "larger than 64 KiB, too big for a secret",
        ));
    }
    Ok(text)
}

/// `whsec_<base64>` of 24–64 bytes → the raw key bytes (kept as a `Secret`
/// holding base64 so it stays a string; see [`Secret::key_bytes`]).
fn decode_whsec(path: &str, s: &Secret) -> Result<Secret, ConfigError> {
    let bad = |why: &str| {
        ConfigError::new(
            path,
            format!(
                "not a valid signing secret ({why}); expected whsec_<base64 of 24-64 bytes>, make one with `synthd secret`"
            ),
        )
    };
    let Some(b64) = s.expose().strip_prefix("whsec_") else {
        return Err(bad("missing the whsec_ prefix"));
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| bad("not base64"))?;
    if !(24..=64).contains(&bytes.len()) {
        return Err(bad(&format!("{} bytes", bytes.len())));
    }
    Ok(s.clone())
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
                field(username);
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
        assert_eq!(r.id, "/id");
        assert_eq!(r.records, "");
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

    #[test]
    fn display_path_formats_indices() {
        let p: Vec<String> = ["accounts", "2", "interval"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(display_path(&p), "accounts[2].interval");
    }
}
