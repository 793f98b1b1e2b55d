//! `synthd providers` and `synthd providers show NAME`: the built-in
//! catalog, read from the binary (no config needed).

use std::fmt::Write as _;
use std::process::ExitCode;

use super::Failure;
use crate::config::catalog::{self, Entry};
use crate::config::{Pagination, Provider, catalog_provider};

/// One catalog row, validated.
fn provider(entry: &Entry) -> Result<Provider, Failure> {
    catalog_provider(entry).map_err(Failure::Config)
}

fn pagination_name(p: &Pagination) -> &'static str {
    match p {
        Pagination::Page { .. } => "page",
        Pagination::Offset { .. } => "offset",
        Pagination::Cursor { .. } => "cursor",
        Pagination::AfterLast { .. } => "after_last",
        Pagination::Link => "link",
        Pagination::NextUrl { .. } => "next_url",
        Pagination::None => "none",
    }
}

/// The table `synthd providers` prints (or its JSON).
pub fn list(json: bool) -> Result<ExitCode, Failure> {
    let mut rows = Vec::new();
    for entry in catalog::entries() {
        let p = provider(&entry)?;
        let incremental: Vec<&str> = p
            .resources
            .values()
            .filter(|r| r.updated_since.is_some())
            .map(|r| r.name.as_str())
            .collect();
        let mut styles: Vec<&str> = p
            .resources
            .values()
            .map(|r| pagination_name(&r.pagination))
            .collect();
        styles.dedup();
        rows.push(serde_json::json!({
            "name": entry.name,
            "title": entry.meta.title,
            "category": entry.meta.category,
            "resources": p.resources.keys().collect::<Vec<_>>(),
            "auth": entry.auth_type(),
            "incremental": incremental,
            "pagination": styles,
            "params": p.params,
            "rate_limit": entry.rate_limit(),
            "rate_limit_doc": entry.meta.rate_limit_doc,
        }));
    }
    if json {
        crate::outln!("{}", serde_json::Value::Array(rows));
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<18} {:<10} {:<8} {:<12} {:<50} RATE LIMIT (vendor's documentation)",
        "NAME", "CATEGORY", "AUTH", "INCREMENTAL", "RESOURCES"
    );
    for r in &rows {
        let list = |k: &str| {
            r[k].as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default()
        };
        let resources = list("resources");
        let incremental = match (list("incremental"), resources.as_str()) {
            (i, _) if i.is_empty() => "no".to_string(),
            (i, all) if i == all => "yes".to_string(),
            _ => "some".to_string(),
        };
        let _ = writeln!(
            out,
            "{:<18} {:<10} {:<8} {:<12} {:<50} {} ({})",
            r["name"].as_str().unwrap_or(""),
            r["category"].as_str().unwrap_or(""),
            r["auth"].as_str().unwrap_or(""),
            incremental,
            resources,
            r["rate_limit"].as_str().unwrap_or("none"),
            r["rate_limit_doc"].as_str().unwrap_or("")
        );
    }
    out.push_str("\n`synthd providers show NAME` prints an entry's full block to copy and edit.\n");
    crate::out!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// The whole catalog file (doc pages, dates, the block) and an account
/// that uses it.
pub fn show(name: &str) -> Result<ExitCode, Failure> {
    let Some(entry) = catalog::get(name) else {
        let known: Vec<&str> = catalog::names().collect();
        return Err(Failure::Usage(format!(
            "no built-in provider {:?} (built in: {})",
            crate::redact::printable(name),
            known.join(", ")
        )));
    };
    let p = provider(&entry)?;
    let params: Vec<String> = p.params.iter().map(|n| format!("{n} = \"…\"")).collect();
    let mut out = String::from(entry.text);
    if !out.ends_with('\n') {
        out.push('\n');
    }
    let _ = write!(
        out,
        "\n# An account using it (a [providers.{name}] block of your own overrides\n\
         # the built-in one key by key):\n\
         [[accounts]]\n\
         id = \"acme\"\n\
         provider = \"{name}\"\n\
         params = {{ {} }}\n\
         auth = {}\n\
         resources = [{}]\n\
         interval = \"15m\"\n",
        params.join(", "),
        entry.auth_example(),
        p.resources
            .keys()
            .map(|r| format!("{r:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    crate::out!("{out}");
    Ok(ExitCode::SUCCESS)
}
