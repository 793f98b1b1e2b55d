//! Validation: raw structs in, typed [`Config`] out, and every operator
//! mistake caught here with its key path.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use url::Url;

use super::raw::*;
use super::secrets::*;
use super::*;
use crate::redact::{redact_unparsed, redact_url};

pub const MIN_INTERVAL: Duration = Duration::from_secs(5 * 60);
pub const MAX_INTERVAL: Duration = Duration::from_secs(60 * 60);
const DEFAULT_INTERVAL: Duration = MAX_INTERVAL;
const MAX_FULL_SCAN_EVERY: Duration = Duration::from_secs(7 * 86400);
const DEFAULT_MAX_PAGE_BYTES: u64 = 64 << 20;
const MIN_MAX_PAGE_BYTES: u64 = 1 << 10;
const MAX_MAX_PAGE_BYTES: u64 = 1 << 30;

pub(super) fn validate(raw: RawConfig, base_dir: &Path) -> Result<Config, ConfigError> {
    let secrets = &Secrets::new(base_dir);
    let daemon = validate_daemon(raw.daemon, secrets)?;
    let store = validate_store(raw.store, secrets)?;
    let console = validate_console(raw.console, secrets)?;

    let mut providers = BTreeMap::new();
    for (name, p) in raw.providers {
        let provider = validate_provider(&name, p, secrets)?;
        providers.insert(name, provider);
    }

    let mut accounts: Vec<Account> = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, a) in raw.accounts.into_iter().enumerate() {
        let path = format!("accounts[{i}]");
        let account = validate_account(&path, a, &providers, secrets)?;
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
        let webhook = validate_webhook(&path, w, &providers, &accounts, secrets)?;
        if !seen.insert(webhook.id.clone()) {
            return Err(ConfigError::new(
                format!("{path}.id"),
                format!("duplicate webhook id {:?}", webhook.id),
            ));
        }
        webhooks.push(webhook);
    }

    // Every unset variable at once, not one per run of `check`.
    secrets.finish()?;
    Ok(Config {
        daemon,
        store,
        providers,
        accounts,
        webhooks,
        console,
    })
}

/// The shortest console token accepted: it guards actions over HTTP.
const MIN_CONSOLE_TOKEN: usize = 16;

fn validate_console(raw: RawConsole, secrets: &Secrets<'_>) -> Result<Console, ConfigError> {
    if raw.token.is_none() && raw.token_env.is_none() && raw.token_file.is_none() {
        return Ok(Console { token: None });
    }
    let token = secrets.resolve("console", "token", raw.token, raw.token_env, raw.token_file)?;
    if token.expose().len() < MIN_CONSOLE_TOKEN {
        return Err(ConfigError::new(
            "console.token",
            format!(
                "is shorter than {MIN_CONSOLE_TOKEN} characters; generate one with `synthd secret` (not shown here)"
            ),
        ));
    }
    Ok(Console { token: Some(token) })
}

fn validate_daemon(raw: RawDaemon, secrets: &Secrets<'_>) -> Result<Daemon, ConfigError> {
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
            let key = secrets.file("daemon.hash_key_file", &f)?;
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

/// Leases shorter than this would expire between two pages of a healthy
/// scan; longer than an hour would leave a dead process's work stuck.
const MIN_LEASE: Duration = Duration::from_secs(5);
const MAX_LEASE: Duration = Duration::from_secs(3600);

fn validate_store(raw: RawStore, secrets: &Secrets<'_>) -> Result<StoreConfig, ConfigError> {
    match raw.backend.as_deref() {
        None | Some("sqlite") => {
            let set: Vec<&str> = [
                (
                    "url",
                    raw.url.is_some() || raw.url_env.is_some() || raw.url_file.is_some(),
                ),
                ("pool_size", raw.pool_size.is_some()),
                ("lease", raw.lease.is_some()),
            ]
            .into_iter()
            .filter(|(_, on)| *on)
            .map(|(k, _)| k)
            .collect();
            if let Some(key) = set.first() {
                return Err(ConfigError::new(
                    format!("store.{key}"),
                    "only applies to backend = \"postgres\"; the SQLite store lives in daemon.state_dir",
                ));
            }
            Ok(StoreConfig::Sqlite)
        }
        Some("postgres") => {
            let url = secrets.resolve("store", "url", raw.url, raw.url_env, raw.url_file)?;
            let scheme_ok = ["postgres://", "postgresql://"]
                .iter()
                .any(|p| url.expose().starts_with(p))
                || url.expose().contains("host=");
            if !scheme_ok && !url.expose().starts_with("whsec_") {
                // The placeholder of an unset variable is reported with it.
                return Err(ConfigError::new(
                    "store.url",
                    "is not a PostgreSQL connection URL (postgres://user@host:5432/db); it is not shown because it may hold a password",
                ));
            }
            let pool_size = match raw.pool_size {
                None => 8,
                Some(n) if (1..=64).contains(&n) => n as usize,
                Some(n) => {
                    return Err(ConfigError::new(
                        "store.pool_size",
                        format!("{n} is outside 1..=64"),
                    ));
                }
            };
            let lease = duration_or("store.lease", raw.lease, Duration::from_secs(120))?;
            if !(MIN_LEASE..=MAX_LEASE).contains(&lease) {
                return Err(ConfigError::new(
                    "store.lease",
                    format!("{} is outside 5s..=1h", humantime::format_duration(lease)),
                ));
            }
            Ok(StoreConfig::Postgres {
                url,
                pool_size,
                lease,
            })
        }
        Some(other) => Err(ConfigError::new(
            "store.backend",
            format!(
                "{other:?} is not a store backend; use \"sqlite\" (the default) or \"postgres\""
            ),
        )),
    }
}

fn validate_provider(
    name: &str,
    raw: RawProvider,
    secrets: &Secrets<'_>,
) -> Result<Provider, ConfigError> {
    let path = format!("providers.{name}");
    check_name(&path, name)?;
    let Some(base_url) = raw.base_url else {
        return Err(ConfigError::new(
            format!("{path}.base_url"),
            format!(
                "missing; a provider block needs base_url unless {name:?} is a built-in provider (synthd providers lists them)"
            ),
        ));
    };
    let params = placeholders(&format!("{path}.base_url"), &base_url)?;
    // Checked with every placeholder filled by a sample value.
    parse_url(
        &format!("{path}.base_url"),
        &fill(&base_url, &params, |_| "x"),
    )?;
    let auth = match raw.auth {
        None => Auth::None,
        Some(a) => validate_auth(&format!("{path}.auth"), a, secrets)?,
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
    let auth_param = match &auth {
        Auth::Query { name, .. } => Some(name.as_str()),
        _ => None,
    };
    check_params_free(&path, &default_pagination, &query, auth_param, None)?;
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
        check_resource_name(&rpath, &rname)?;
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
        let method = match r.method.as_deref() {
            None => Method::Get,
            Some(m) if m.eq_ignore_ascii_case("GET") => Method::Get,
            Some(m) if m.eq_ignore_ascii_case("POST") => Method::Post,
            Some(m) => {
                return Err(ConfigError::new(
                    format!("{rpath}.method"),
                    format!("{m:?} is not a list method; use \"GET\" (the default) or \"POST\""),
                ));
            }
        };
        let body = match r.body {
            None => None,
            Some(serde_json::Value::Object(map)) if method == Method::Post => Some(map),
            Some(serde_json::Value::Object(_)) => {
                return Err(ConfigError::new(
                    format!("{rpath}.body"),
                    "a body is only sent with method = \"POST\"",
                ));
            }
            Some(_) => {
                return Err(ConfigError::new(
                    format!("{rpath}.body"),
                    "must be a table (sent as a JSON object)",
                ));
            }
        };
        if let Pagination::Cursor {
            place: ParamPlace::Body,
            continue_path,
            ..
        } = &pagination
        {
            if method != Method::Post {
                return Err(ConfigError::new(
                    format!("{rpath}.pagination.in"),
                    "a cursor in the body needs method = \"POST\"",
                ));
            }
            if let Some(c) = continue_path
                && !c.starts_with('/')
            {
                return Err(ConfigError::new(
                    format!("{rpath}.pagination.continue_path"),
                    format!("{c:?} must start with / (relative to base_url)"),
                ));
            }
        }
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
        if let Auth::Header { name, .. } = &auth
            && rh.iter().any(|(k, _)| k.eq_ignore_ascii_case(name))
        {
            return Err(ConfigError::new(
                format!("{rpath}.headers"),
                format!("{name:?} is also the auth header; set it in one place"),
            ));
        }
        if r.ignore.len() > crate::detect::canonical::MAX_IGNORE {
            return Err(ConfigError::new(
                format!("{rpath}.ignore"),
                format!(
                    "{} pointers; at most {} are supported",
                    r.ignore.len(),
                    crate::detect::canonical::MAX_IGNORE
                ),
            ));
        }
        let mut ignore = Vec::new();
        for (i, p) in r.ignore.into_iter().enumerate() {
            let p = pointer(&format!("{rpath}.ignore[{i}]"), p)?;
            if p.is_root() {
                return Err(ConfigError::new(
                    format!("{rpath}.ignore[{i}]"),
                    "\"\" would ignore the whole record",
                ));
            }
            ignore.push(p);
        }
        check_params_free(&rpath, &pagination, &rq, None, None)?;
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
                check_params_free(&rpath, &pagination, &rq, None, Some(&u.param))?;
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
                method,
                body,
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
        params,
        builtin: catalog::get(name).is_some(),
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

/// A catalog entry's provider block alone, validated (for `synthd
/// providers` and the catalog test).
pub(crate) fn catalog_provider(entry: &catalog::Entry) -> Result<Provider, ConfigError> {
    let mut root = figment::value::Dict::new();
    let mut providers = figment::value::Dict::new();
    providers.insert(entry.name.to_string(), entry.provider_value());
    root.insert("providers".into(), providers.into());
    let raw: RawConfig = figment::Figment::from(figment::providers::Serialized::defaults(root))
        .extract()
        .map_err(figment_error)?;
    let secrets = Secrets::new(Path::new("."));
    let mut out = None;
    for (name, p) in raw.providers {
        out = Some(validate_provider(&name, p, &secrets)?);
    }
    secrets.finish()?;
    out.ok_or_else(|| ConfigError::new(format!("providers.{}", entry.name), "empty"))
}

/// The `{name}` placeholders of a base URL, in order, each once.
fn placeholders(path: &str, template: &str) -> Result<Vec<String>, ConfigError> {
    let mut out: Vec<String> = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find(['{', '}']) {
        if rest.as_bytes()[open] == b'}' {
            return Err(ConfigError::new(path, "has a '}' without its '{'"));
        }
        let Some(len) = rest[open + 1..].find('}') else {
            return Err(ConfigError::new(path, "has a '{' without its '}'"));
        };
        let name = &rest[open + 1..open + 1 + len];
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(ConfigError::new(
                path,
                format!("placeholder {{{name}}} must be lowercase letters, digits or _"),
            ));
        }
        if !out.iter().any(|n| n == name) {
            out.push(name.to_string());
        }
        rest = &rest[open + len + 2..];
    }
    Ok(out)
}

/// The template with each `{name}` replaced by `value(name)`.
fn fill<'v>(template: &str, names: &[String], value: impl Fn(&str) -> &'v str) -> String {
    let mut out = template.to_string();
    for n in names {
        out = out.replace(&format!("{{{n}}}"), value(n));
    }
    out
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
    let optional = |key: &str, p: Option<String>| -> Result<Option<Pointer>, ConfigError> {
        p.map(|p| pointer(&format!("{path}.{key}"), p)).transpose()
    };
    let statuses = |list: Option<Vec<i64>>| -> Result<Vec<u16>, ConfigError> {
        let mut out = Vec::new();
        for (i, code) in list.into_iter().flatten().enumerate() {
            match code {
                400..=499 => out.push(code as u16),
                _ => {
                    return Err(ConfigError::new(
                        format!("{path}.end_status[{i}]"),
                        format!(
                            "{code} is not a 4xx status; end_status lists the statuses that mean \"no more pages\", such as 404"
                        ),
                    ));
                }
            }
        }
        Ok(out)
    };
    Ok(match raw {
        RawPagination::Page {
            page_param,
            size_param,
            size,
            first_page,
            total,
            last_page,
            has_more,
            end_status,
        } => {
            if first_page < 0 {
                return Err(ConfigError::new(
                    format!("{path}.first_page"),
                    "must be 0 or more",
                ));
            }
            distinct_params(
                path,
                &[("page_param", &page_param), ("size_param", &size_param)],
            )?;
            Pagination::Page {
                page_param,
                size_param,
                size: size_ok(size)?,
                first_page: first_page as u64,
                end: one_signal(
                    path,
                    EndSignals {
                        total: optional("total", total)?,
                        last_page: optional("last_page", last_page)?,
                        has_more: optional("has_more", has_more)?,
                        end_status: statuses(end_status)?,
                    },
                )?,
            }
        }
        RawPagination::Offset {
            offset_param,
            limit_param,
            size,
            total,
            has_more,
            end_status,
        } => {
            distinct_params(
                path,
                &[
                    ("offset_param", &offset_param),
                    ("limit_param", &limit_param),
                ],
            )?;
            Pagination::Offset {
                offset_param,
                limit_param,
                size: size_ok(size)?,
                end: one_signal(
                    path,
                    EndSignals {
                        total: optional("total", total)?,
                        last_page: None,
                        has_more: optional("has_more", has_more)?,
                        end_status: statuses(end_status)?,
                    },
                )?,
            }
        }
        RawPagination::Cursor {
            cursor_param,
            next,
            has_more,
            place,
            continue_path,
        } => {
            let place = match place.as_deref() {
                None | Some("query") => ParamPlace::Query,
                Some("body") => ParamPlace::Body,
                Some(other) => {
                    return Err(ConfigError::new(
                        format!("{path}.in"),
                        format!(
                            "{other:?} is not a place; use \"query\" (the default) or \"body\""
                        ),
                    ));
                }
            };
            if continue_path.is_some() && place != ParamPlace::Body {
                return Err(ConfigError::new(
                    format!("{path}.continue_path"),
                    "continue_path sends the cursor in the body; set in = \"body\"",
                ));
            }
            if cursor_param.is_empty() {
                return Err(ConfigError::new(
                    format!("{path}.cursor_param"),
                    "must not be empty",
                ));
            }
            Pagination::Cursor {
                cursor_param,
                next: pointer(&format!("{path}.next"), next)?,
                has_more: optional("has_more", has_more)?,
                place,
                continue_path,
            }
        }
        RawPagination::AfterLast {
            param,
            from,
            has_more,
        } => {
            if param.is_empty() {
                return Err(ConfigError::new(
                    format!("{path}.param"),
                    "must not be empty",
                ));
            }
            let from = pointer(&format!("{path}.from"), from)?;
            if from.is_root() {
                return Err(ConfigError::new(
                    format!("{path}.from"),
                    "must point into the record (such as \"/id\"), not be the whole record",
                ));
            }
            Pagination::AfterLast {
                param,
                from,
                has_more: optional("has_more", has_more)?,
            }
        }
        RawPagination::Link {} => Pagination::Link,
        RawPagination::NextUrl { next } => Pagination::NextUrl {
            next: pointer(&format!("{path}.next"), next)?,
        },
        RawPagination::None {} => Pagination::None,
    })
}

/// `total`, `last_page` and `has_more` each decide alone when a scan ends;
/// two of them could disagree, so one at most.
fn one_signal(path: &str, end: EndSignals) -> Result<EndSignals, ConfigError> {
    let set: Vec<&str> = [
        ("total", end.total.is_some()),
        ("last_page", end.last_page.is_some()),
        ("has_more", end.has_more.is_some()),
    ]
    .iter()
    .filter(|(_, on)| *on)
    .map(|(k, _)| *k)
    .collect();
    if set.len() > 1 {
        return Err(ConfigError::new(
            format!("{path}.{}", set[1]),
            format!(
                "set only one of total, last_page and has_more (both {} and {} are set)",
                set[0], set[1]
            ),
        ));
    }
    Ok(end)
}

fn distinct_params(path: &str, params: &[(&str, &String)]) -> Result<(), ConfigError> {
    for (key, value) in params {
        if value.is_empty() {
            return Err(ConfigError::new(
                format!("{path}.{key}"),
                "must not be empty",
            ));
        }
    }
    if params.len() == 2 && params[0].1 == params[1].1 {
        return Err(ConfigError::new(
            format!("{path}.{}", params[1].0),
            format!("{:?} is also {}", params[1].1, params[0].0),
        ));
    }
    Ok(())
}

/// A query parameter that pagination, `updated_since` or query auth writes
/// must not also be a static `query` key (it would be sent twice, and which
/// one a provider reads is anyone's guess), nor be written by two of them.
fn check_params_free(
    path: &str,
    pagination: &Pagination,
    query: &[(String, String)],
    auth_param: Option<&str>,
    since_param: Option<&str>,
) -> Result<(), ConfigError> {
    let mut writers: Vec<(&str, String)> = pagination
        .params()
        .into_iter()
        .map(|p| (p, "the pagination".to_string()))
        .collect();
    if let Some(a) = auth_param {
        writers.push((a, "query auth".into()));
    }
    if let Some(u) = since_param {
        writers.push((u, "updated_since".into()));
    }
    for (i, (param, by)) in writers.iter().enumerate() {
        if query.iter().any(|(k, _)| k == param) {
            return Err(ConfigError::new(
                format!("{path}.query.{param}"),
                format!("{param:?} is written by {by} on every request; remove it from query"),
            ));
        }
        if let Some((_, other)) = writers[..i].iter().find(|(p, _)| p == param) {
            return Err(ConfigError::new(
                path,
                format!(
                    "the query parameter {param:?} is written by both {other} and {by}; rename one"
                ),
            ));
        }
    }
    Ok(())
}

fn validate_auth(path: &str, raw: RawAuth, secrets: &Secrets<'_>) -> Result<Auth, ConfigError> {
    Ok(match raw {
        RawAuth::None {} => Auth::None,
        RawAuth::Bearer {
            token,
            token_env,
            token_file,
        } => Auth::Bearer {
            token: secrets.resolve(path, "token", token, token_env, token_file)?,
        },
        RawAuth::Basic {
            username,
            username_env,
            username_file,
            password,
            password_env,
            password_file,
        } => Auth::Basic {
            username: secrets.resolve(path, "username", username, username_env, username_file)?,
            // Some APIs take the key as the username and no password
            // (Greenhouse): `password = ""` says so explicitly.
            password: match (&password, &password_env, &password_file) {
                (Some(p), None, None) if p.is_empty() => Secret::new(""),
                _ => secrets.resolve(path, "password", password, password_env, password_file)?,
            },
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
            refuse_reserved_header(&format!("{path}.name"), &name, PROVIDER_RESERVED)?;
            Auth::Header {
                name,
                value: secrets.resolve(path, "value", value, value_env, value_file)?,
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
                value: secrets.resolve(path, "value", value, value_env, value_file)?,
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
            client_secret: secrets.resolve(
                path,
                "client_secret",
                client_secret,
                client_secret_env,
                client_secret_file,
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
    secrets: &Secrets<'_>,
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
    let (template, template_key) = match &raw.base_url {
        None => (
            provider.base_url.clone(),
            format!("providers.{}.base_url", provider.name),
        ),
        Some(u) => (u.clone(), format!("{path}.base_url")),
    };
    let needed = placeholders(&template_key, &template)?;
    for name in &needed {
        let Some(value) = raw.params.get(name) else {
            return Err(ConfigError::new(
                format!("{path}.params.{name}"),
                format!(
                    "missing: provider {:?} needs params = {{ {name} = \"…\" }} (its base_url is {template:?})",
                    provider.name
                ),
            ));
        };
        if value.is_empty()
            || !value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(ConfigError::new(
                format!("{path}.params.{name}"),
                "must be non-empty letters, digits, '-', '_' or '.' (it becomes part of the URL)",
            ));
        }
    }
    if let Some(extra) = raw.params.keys().find(|k| !needed.contains(k)) {
        return Err(ConfigError::new(
            format!("{path}.params.{extra}"),
            format!(
                "not a placeholder of the base_url {template:?} (placeholders: {})",
                list_or_none(&needed.iter().map(String::as_str).collect::<Vec<_>>())
            ),
        ));
    }
    let base_url = parse_url(
        &template_key,
        &fill(&template, &needed, |n| raw.params[n].as_str()),
    )?;
    let auth = match raw.auth {
        None => provider.auth.clone(),
        Some(a) => validate_auth(&format!("{path}.auth"), a, secrets)?,
    };
    if auth == Auth::None
        && let Some(entry) = catalog::get(&provider.name)
        && entry.auth_type() != "none"
    {
        return Err(ConfigError::new(
            format!("{path}.auth"),
            format!(
                "provider {:?} needs credentials, e.g. auth = {}",
                provider.name,
                entry.auth_example()
            ),
        ));
    }
    if let Auth::Query { name, .. } = &auth {
        for r in provider.resources.values() {
            let since = r.updated_since.as_ref().map(|u| u.param.as_str());
            check_params_free(
                &format!("{path}.auth"),
                &r.pagination,
                &r.query,
                Some(name),
                since,
            )?;
        }
    }
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
        params: raw.params,
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
    providers: &BTreeMap<String, Provider>,
    accounts: &[Account],
    secrets: &Secrets<'_>,
) -> Result<Webhook, ConfigError> {
    check_name(&format!("{path}.id"), &raw.id)?;
    let url = parse_url(&format!("{path}.url"), &raw.url)?;
    if raw.events.is_empty() {
        return Err(ConfigError::new(
            format!("{path}.events"),
            "empty: list event types, \"<resource>.*\" or \"*\"",
        ));
    }
    let catalog = EventCatalog::of(providers);
    let mut events = Vec::new();
    for (i, e) in raw.events.iter().enumerate() {
        let key = format!("{path}.events[{i}]");
        let filter = parse_event_filter(&key, e)?;
        catalog.check(&key, &filter)?;
        events.push(filter);
    }
    let forms = [
        raw.secret.is_some(),
        raw.secret_env.is_some(),
        raw.secret_file.is_some(),
        raw.secrets.is_some(),
        raw.secrets_env.is_some(),
        raw.secrets_file.is_some(),
    ];
    let mut keys = Vec::new();
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
        let s = secrets.resolve(path, "secret", raw.secret, raw.secret_env, raw.secret_file)?;
        keys.push(decode_whsec(&secret_key_path(path, field), &s)?);
    }
    for (i, v) in raw.secrets.into_iter().flatten().enumerate() {
        let key = format!("{path}.secrets[{i}]");
        keys.push(decode_whsec(&key, &Secret::new(v))?);
    }
    for (i, v) in raw.secrets_env.into_iter().flatten().enumerate() {
        let key = format!("{path}.secrets_env[{i}]");
        let s = secrets.env(&key, &v)?;
        keys.push(decode_whsec(&key, &s)?);
    }
    for (i, v) in raw.secrets_file.into_iter().flatten().enumerate() {
        let key = format!("{path}.secrets_file[{i}]");
        let s = secrets.file(&key, &v)?;
        keys.push(decode_whsec(&key, &s)?);
    }
    if keys.is_empty() {
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
    if reqwest::header::HeaderName::from_str(&signature_header).is_err() {
        return Err(ConfigError::new(
            format!("{path}.signature_header"),
            format!("{signature_header:?} is not a valid header name"),
        ));
    }
    refuse_reserved_header(
        &format!("{path}.signature_header"),
        &signature_header,
        WEBHOOK_RESERVED,
    )?;
    let concurrency = match raw.concurrency {
        None => DEFAULT_WEBHOOK_CONCURRENCY,
        Some(n) if (1..=MAX_WEBHOOK_CONCURRENCY as i64).contains(&n) => n as usize,
        Some(n) => {
            return Err(ConfigError::new(
                format!("{path}.concurrency"),
                format!("{n} is outside 1..={MAX_WEBHOOK_CONCURRENCY}"),
            ));
        }
    };
    Ok(Webhook {
        name: raw.name.unwrap_or_else(|| raw.id.clone()),
        id: raw.id,
        url,
        events,
        secrets: keys,
        accounts: raw.accounts,
        enabled: raw.enabled,
        timeout,
        signature_header,
        concurrency,
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

/// Resource names become the first segment of event types, so they hold
/// no dot: `hris.salaries.created` would be ambiguous.
fn check_resource_name(path: &str, name: &str) -> Result<(), ConfigError> {
    check_name(path, name)?;
    if name.contains('.') {
        return Err(ConfigError::new(
            path,
            format!(
                "{name:?} contains a dot; resource names are the first segment of event types \
                 (\"<resource>.created\"), so use _ instead (e.g. {:?})",
                name.replace('.', "_")
            ),
        ));
    }
    Ok(())
}

fn parse_url(path: &str, s: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(s).map_err(|e| {
        ConfigError::new(path, format!("{:?} is not a URL: {e}", redact_unparsed(s)))
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

/// A JSON pointer (RFC 6901): "" or "/a/b".
fn pointer(path: &str, p: String) -> Result<Pointer, ConfigError> {
    Pointer::parse(&p).ok_or_else(|| {
        ConfigError::new(
            path,
            format!("{p:?} is not a JSON pointer (use \"\" or \"/field/sub\")"),
        )
    })
}

/// Headers the HTTP layer owns: hop-by-hop headers (RFC 9110 §7.6.1), the
/// framing and host headers, and the encodings the client negotiates.
/// Setting any of them by hand mangles the request.
const PROVIDER_RESERVED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "expect",
    "accept-encoding",
    "content-encoding",
];

/// For a webhook's signature header, also the headers synthd writes itself.
const WEBHOOK_RESERVED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "expect",
    "accept-encoding",
    "content-encoding",
    "content-type",
    "user-agent",
    "authorization",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
];

fn refuse_reserved_header(path: &str, name: &str, reserved: &[&str]) -> Result<(), ConfigError> {
    let lower = name.to_ascii_lowercase();
    if reserved.contains(&lower.as_str())
        || (reserved == WEBHOOK_RESERVED && lower.starts_with("webhook-"))
    {
        return Err(ConfigError::new(
            path,
            format!(
                "{name:?} is a header the HTTP layer or synthd sets itself; choose another name"
            ),
        ));
    }
    Ok(())
}

/// Every event type the config can produce, for checking filters.
struct EventCatalog {
    resources: BTreeSet<String>,
}

const ACTIONS: [&str; 3] = ["created", "updated", "deleted"];

impl EventCatalog {
    fn of(providers: &BTreeMap<String, Provider>) -> Self {
        let mut resources: BTreeSet<String> = providers
            .values()
            .flat_map(|p| p.resources.keys().cloned())
            .collect();
        resources.insert("account".into());
        EventCatalog { resources }
    }

    fn types(&self) -> impl Iterator<Item = String> + '_ {
        self.resources
            .iter()
            .flat_map(|r| ACTIONS.iter().map(move |a| format!("{r}.{a}")))
    }

    /// A filter that can never match is refused, with the closest event
    /// type or prefix as a hint.
    fn check(&self, path: &str, filter: &EventFilter) -> Result<(), ConfigError> {
        let (ok, candidates): (bool, Vec<String>) = match filter {
            EventFilter::All => return Ok(()),
            EventFilter::Prefix(p) => (
                self.resources.contains(p),
                self.resources.iter().map(|r| format!("{r}.*")).collect(),
            ),
            EventFilter::Exact(e) => (self.types().any(|t| &t == e), self.types().collect()),
        };
        if ok {
            return Ok(());
        }
        let shown = filter.to_string();
        let best = candidates
            .iter()
            .map(|c| (strsim::jaro_winkler(&shown, c), c))
            .filter(|(score, _)| *score > 0.8)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, c)| c.clone());
        let known: Vec<&str> = self.resources.iter().map(String::as_str).collect();
        let hint = match best {
            Some(b) => format!("did you mean {b:?}?"),
            None => format!(
                "event types are <resource>.created|updated|deleted with a resource from: {}",
                known.join(", ")
            ),
        };
        Err(ConfigError::new(
            path,
            format!("{shown:?} matches no event this config can produce; {hint}"),
        ))
    }
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
            refuse_reserved_header(&format!("{path}.{k}"), &k, PROVIDER_RESERVED)?;
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

#[cfg(test)]
mod placeholder_tests {
    use super::*;

    #[test]
    fn placeholders_are_found_once_each_and_malformed_ones_refused() {
        let p = |s: &str| placeholders("k", s);
        assert_eq!(
            p("https://{sub}.x.com/{a_1}/v1/{sub}").unwrap(),
            vec!["sub".to_string(), "a_1".to_string()]
        );
        assert!(p("https://x.com/v1").unwrap().is_empty());
        assert!(
            p("https://{sub.x.com")
                .unwrap_err()
                .message
                .contains("without its '}'")
        );
        assert!(
            p("https://sub}.x.com")
                .unwrap_err()
                .message
                .contains("without its '{'")
        );
        assert!(p("https://{}.x.com").is_err());
        assert!(p("https://{Sub}.x.com").is_err());
        let names = vec!["sub".to_string()];
        assert_eq!(
            fill("https://{sub}.x.com/{sub}", &names, |_| "acme"),
            "https://acme.x.com/acme"
        );
    }
}

#[cfg(test)]
mod list_request_tests {
    use crate::config::from_toml_str;
    use std::path::Path;

    fn error(resource: &str) -> String {
        let text = format!(
            "[providers.p]\nbase_url = \"http://127.0.0.1:1\"\n[providers.p.resources.crm_contacts]\npath = \"/c\"\n{resource}\n"
        );
        from_toml_str(&text, Path::new("."))
            .map(|_| String::new())
            .unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn post_bodies_and_the_new_pagination_keys_are_checked() {
        assert!(error("method = \"POST\"\nbody = { limit = 1 }").is_empty());
        assert!(error("method = \"PUT\"").contains("crm_contacts.method"));
        assert!(error("body = { limit = 1 }").contains("only sent with method = \"POST\""));
        assert!(error("method = \"POST\"\nbody = 3").contains("must be a table"));
        assert!(
            error("pagination = { type = \"cursor\", next = \"/n\", in = \"body\" }")
                .contains("pagination.in: a cursor in the body needs method")
        );
        assert!(
            error("pagination = { type = \"cursor\", next = \"/n\", in = \"header\" }")
                .contains("pagination.in")
        );
        assert!(
            error("pagination = { type = \"cursor\", next = \"/n\", continue_path = \"/c\" }")
                .contains("set in = \"body\"")
        );
        assert!(
            error("method = \"POST\"\npagination = { type = \"cursor\", next = \"/n\", in = \"body\", continue_path = \"c\" }")
                .contains("continue_path")
        );
        assert!(
            error(
                "pagination = { type = \"after_last\", param = \"starting_after\", from = \"\" }"
            )
            .contains("pagination.from")
        );
        assert!(
            error("pagination = { type = \"after_last\", param = \"\" }")
                .contains("pagination.param")
        );
        assert!(
            error("query = { starting_after = \"x\" }\npagination = { type = \"after_last\", param = \"starting_after\" }")
                .contains("query.starting_after")
        );
    }
}
