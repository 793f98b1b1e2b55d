//! The configuration as written: serde structs that mirror the TOML, with
//! `deny_unknown_fields` everywhere so a misspelt key is an error.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::{ClientAuth, LogFormat, TimeFormat};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) daemon: RawDaemon,
    #[serde(default)]
    pub(super) providers: BTreeMap<String, RawProvider>,
    #[serde(default)]
    pub(super) accounts: Vec<RawAccount>,
    #[serde(default)]
    pub(super) webhooks: Vec<RawWebhook>,
    #[serde(default)]
    pub(super) store: RawStore,
    #[serde(default)]
    pub(super) console: RawConsole,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConsole {
    pub(super) token: Option<String>,
    pub(super) token_env: Option<String>,
    pub(super) token_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    pub(super) backend: Option<String>,
    pub(super) url: Option<String>,
    pub(super) url_env: Option<String>,
    pub(super) url_file: Option<PathBuf>,
    pub(super) pool_size: Option<i64>,
    pub(super) lease: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDaemon {
    pub(super) state_dir: Option<PathBuf>,
    pub(super) log_format: Option<LogFormat>,
    pub(super) max_concurrent_polls: Option<i64>,
    pub(super) listen: Option<String>,
    pub(super) hash_key_file: Option<PathBuf>,
    pub(super) retention: Option<RawRetention>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetention {
    pub(super) delivered: Option<String>,
    pub(super) failed: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProvider {
    /// Required once a built-in catalog entry (if any) is merged in.
    pub(super) base_url: Option<String>,
    #[serde(default)]
    pub(super) auth: Option<RawAuth>,
    pub(super) pagination: Option<RawPagination>,
    pub(super) records: Option<String>,
    pub(super) id: Option<String>,
    #[serde(default)]
    pub(super) query: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) headers: BTreeMap<String, String>,
    pub(super) rate_limit: Option<String>,
    pub(super) timeout: Option<String>,
    pub(super) retries: Option<i64>,
    pub(super) retry_backoff: Option<String>,
    pub(super) max_pages: Option<i64>,
    pub(super) max_page_bytes: Option<RawBytes>,
    #[serde(default)]
    pub(super) resources: BTreeMap<String, RawResource>,
}

/// A byte size: a number, or a string such as "64MiB".
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawBytes {
    Number(i64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawResource {
    pub(super) path: String,
    /// "GET" (default) or "POST" (list endpoints that take a JSON body).
    pub(super) method: Option<String>,
    /// The JSON body of a POST list request (a TOML table).
    pub(super) body: Option<serde_json::Value>,
    pub(super) records: Option<String>,
    pub(super) id: Option<String>,
    pub(super) pagination: Option<RawPagination>,
    #[serde(default)]
    pub(super) query: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) headers: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) ignore: Vec<String>,
    pub(super) updated_since: Option<RawUpdatedSince>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpdatedSince {
    pub(super) param: String,
    #[serde(default = "default_time_format")]
    pub(super) format: TimeFormat,
    pub(super) lookback: Option<String>,
    pub(super) full_scan_every: Option<String>,
}

pub(super) fn default_time_format() -> TimeFormat {
    TimeFormat::Rfc3339
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum RawPagination {
    Page {
        #[serde(default = "default_page_param")]
        page_param: String,
        #[serde(default = "default_size_param")]
        size_param: String,
        #[serde(default = "default_page_size")]
        size: i64,
        #[serde(default = "default_first_page")]
        first_page: i64,
        total: Option<String>,
        last_page: Option<String>,
        has_more: Option<String>,
        end_status: Option<Vec<i64>>,
    },
    Offset {
        #[serde(default = "default_offset_param")]
        offset_param: String,
        #[serde(default = "default_limit_param")]
        limit_param: String,
        #[serde(default = "default_page_size")]
        size: i64,
        total: Option<String>,
        has_more: Option<String>,
        end_status: Option<Vec<i64>>,
    },
    Cursor {
        #[serde(default = "default_cursor_param")]
        cursor_param: String,
        next: String,
        has_more: Option<String>,
        /// Where the cursor goes: "query" (default) or "body".
        #[serde(rename = "in")]
        place: Option<String>,
        /// Later pages go to this path with only the cursor in the body
        /// (Dropbox `list_folder/continue`).
        continue_path: Option<String>,
    },
    AfterLast {
        param: String,
        #[serde(default = "default_after_from")]
        from: String,
        has_more: Option<String>,
    },
    // Braces, not unit variants, so that deny_unknown_fields rejects
    // `{ type = "link", next = "…" }` instead of ignoring `next`.
    Link {},
    NextUrl {
        next: String,
    },
    None {},
}

pub(super) fn default_page_param() -> String {
    "page".into()
}
pub(super) fn default_size_param() -> String {
    "per_page".into()
}
pub(super) fn default_page_size() -> i64 {
    100
}
pub(super) fn default_first_page() -> i64 {
    1
}
pub(super) fn default_offset_param() -> String {
    "offset".into()
}
pub(super) fn default_limit_param() -> String {
    "limit".into()
}
pub(super) fn default_cursor_param() -> String {
    "cursor".into()
}
pub(super) fn default_after_from() -> String {
    "/id".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum RawAuth {
    None {},
    Bearer {
        token: Option<String>,
        token_env: Option<String>,
        token_file: Option<PathBuf>,
    },
    Basic {
        username: Option<String>,
        username_env: Option<String>,
        username_file: Option<PathBuf>,
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
pub(super) struct RawAccount {
    pub(super) id: String,
    pub(super) provider: String,
    /// Values for the provider's `base_url` `{placeholders}`.
    #[serde(default)]
    pub(super) params: BTreeMap<String, String>,
    pub(super) base_url: Option<String>,
    pub(super) auth: Option<RawAuth>,
    pub(super) resources: Option<Vec<String>>,
    pub(super) interval: Option<String>,
    pub(super) cron: Option<String>,
    #[serde(default)]
    pub(super) emit_initial: bool,
    #[serde(default = "yes")]
    pub(super) enabled: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebhook {
    pub(super) id: String,
    pub(super) name: Option<String>,
    pub(super) url: String,
    pub(super) events: Vec<String>,
    pub(super) secret: Option<String>,
    pub(super) secret_env: Option<String>,
    pub(super) secret_file: Option<PathBuf>,
    pub(super) secrets: Option<Vec<String>>,
    pub(super) secrets_env: Option<Vec<String>>,
    pub(super) secrets_file: Option<Vec<PathBuf>>,
    pub(super) accounts: Option<Vec<String>>,
    #[serde(default = "yes")]
    pub(super) enabled: bool,
    pub(super) timeout: Option<String>,
    pub(super) signature_header: Option<String>,
    pub(super) concurrency: Option<i64>,
}

pub(super) fn yes() -> bool {
    true
}
