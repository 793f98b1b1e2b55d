//! The built-in provider catalog: `providers/<name>.toml` files embedded at
//! build time (see `build.rs`), so `provider = "greenhouse"` needs no
//! `[providers.greenhouse]` block.
//!
//! Each file holds a `[catalog]` table (what `synthd providers` shows, and
//! an example `auth`) and one `[providers.<name>]` block written exactly as
//! an operator would write it. Loading a config merges the built-in blocks
//! its accounts name under the user's own blocks of the same name, key by
//! key, before the one validator sees them: a built-in is checked by the
//! same code as user config, and a unit test validates every file.

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Value};
use serde::Deserialize;

#[cfg(test)]
use super::raw::RawAuth;

/// `(name, file text)` for every `providers/*.toml`, sorted by name.
static FILES: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/catalog.rs"));

/// What the catalog says about an entry beyond its provider block.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    /// The vendor and product, e.g. "Greenhouse Harvest API v1".
    pub title: String,
    /// hris, ats, crm, lms or documents (the event-name prefix family).
    pub category: String,
    /// The auth an account gives, as a TOML table to copy.
    auth: figment::value::Dict,
    /// The vendor's documented rate limit, in words.
    pub rate_limit_doc: String,
}

/// One built-in provider.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: &'static str,
    /// The whole file: comments (doc pages, dates) and blocks.
    pub text: &'static str,
    pub meta: Meta,
    /// The `[providers.<name>]` table.
    provider: Value,
}

impl Entry {
    /// The example auth as an inline TOML table.
    pub fn auth_example(&self) -> String {
        inline_table(&self.meta.auth)
    }

    /// The auth type the vendor uses (`basic`, `bearer`, `oauth2`, …).
    pub fn auth_type(&self) -> String {
        self.meta
            .auth
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("none")
            .to_string()
    }

    /// The `rate_limit` the entry sets (the vendor's figure where one is
    /// published), as written.
    pub fn rate_limit(&self) -> Option<String> {
        self.provider
            .as_dict()?
            .get("rate_limit")?
            .as_str()
            .map(str::to_string)
    }

    /// The `[providers.<name>]` table as written.
    pub(super) fn provider_value(&self) -> Value {
        self.provider.clone()
    }

    /// The example auth, parsed (checked by the catalog test).
    #[cfg(test)]
    pub(super) fn auth_raw(&self) -> Result<RawAuth, String> {
        Figment::from(Serialized::defaults(self.meta.auth.clone()))
            .extract()
            .map_err(|e| e.to_string())
    }
}

/// Every catalog entry, sorted by name. A file that does not parse is a
/// build defect caught by the catalog test; it is left out here.
pub fn entries() -> Vec<Entry> {
    FILES.iter().filter_map(|(n, t)| parse(n, t).ok()).collect()
}

/// The entry called `name`.
pub fn get(name: &str) -> Option<Entry> {
    FILES
        .iter()
        .find(|(n, _)| *n == name)
        .and_then(|(n, t)| parse(n, t).ok())
}

/// Names of every file, parsed or not (for the catalog test).
pub fn names() -> impl Iterator<Item = &'static str> {
    FILES.iter().map(|(n, _)| *n)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    catalog: Meta,
    providers: Dict,
}

fn parse(name: &'static str, text: &'static str) -> Result<Entry, String> {
    let file: File = Figment::from(Toml::string(text))
        .extract()
        .map_err(|e| format!("providers/{name}.toml: {e}"))?;
    if file.providers.len() != 1 || !file.providers.contains_key(name) {
        return Err(format!(
            "providers/{name}.toml: must hold exactly one block, [providers.{name}]"
        ));
    }
    let provider = file.providers.into_iter().next().expect("one block").1;
    Ok(Entry {
        name,
        text,
        meta: file.catalog,
        provider,
    })
}

/// Adds to `user` the built-in blocks its accounts (or its own provider
/// blocks) name, each overridden key by key by the user's block of the
/// same name.
pub(super) fn with_builtins(user: Figment) -> Figment {
    #[derive(Deserialize)]
    struct AccountRef {
        provider: Option<String>,
    }
    let mut wanted: Vec<String> = user
        .extract_inner::<Vec<AccountRef>>("accounts")
        .unwrap_or_default()
        .into_iter()
        .filter_map(|a| a.provider)
        .collect();
    if let Ok(Value::Dict(_, own)) = user.find_value("providers") {
        wanted.extend(own.keys().cloned());
    }
    wanted.sort();
    wanted.dedup();
    let mut merged = Dict::new();
    for name in wanted {
        let Some(entry) = get(&name) else { continue };
        let own = user.find_value(&format!("providers.{name}")).ok();
        let value = match own {
            Some(own) => overlay(entry.provider, own),
            None => entry.provider,
        };
        merged.insert(name, value);
    }
    if merged.is_empty() {
        return user;
    }
    let mut root = Dict::new();
    root.insert("providers".into(), Value::from(merged));
    // The merged blocks already hold every user key, so figment's own
    // union with the user's blocks changes nothing further.
    user.merge(Serialized::defaults(root))
}

/// The user's value over the built-in one. Tables merge key by key
/// (`query`, `headers`, `resources`, each resource); a table with a `type`
/// (`auth`, `pagination`) replaces the built-in one whole, since its keys
/// only make sense together.
pub(super) fn overlay(base: Value, over: Value) -> Value {
    match (base, over) {
        (Value::Dict(tag, mut base), Value::Dict(_, over)) if !over.contains_key("type") => {
            for (k, v) in over {
                let v = match base.remove(&k) {
                    Some(b) => overlay(b, v),
                    None => v,
                };
                base.insert(k, v);
            }
            Value::Dict(tag, base)
        }
        (_, over) => over,
    }
}

/// A figment dict as an inline TOML table (for examples shown to users).
fn inline_table(dict: &Dict) -> String {
    // `type` first: it says how to read the rest.
    let mut keys: Vec<&String> = dict.keys().collect();
    keys.sort_by_key(|k| *k != "type");
    let parts: Vec<String> = keys
        .into_iter()
        .map(|k| format!("{k} = {}", inline_value(&dict[k])))
        .collect();
    if parts.is_empty() {
        "{ }".into()
    } else {
        format!("{{ {} }}", parts.join(", "))
    }
}

fn inline_value(v: &Value) -> String {
    match v {
        Value::String(_, s) => format!("{s:?}"),
        Value::Dict(_, d) => inline_table(d),
        Value::Array(_, a) => format!(
            "[{}]",
            a.iter().map(inline_value).collect::<Vec<_>>().join(", ")
        ),
        Value::Bool(_, b) => b.to_string(),
        Value::Num(_, n) => n
            .to_i128()
            .map(|i| i.to_string())
            .or_else(|| n.to_f64().map(|f| f.to_string()))
            .unwrap_or_default(),
        Value::Char(_, c) => format!("{:?}", c.to_string()),
        Value::Empty(..) => "\"\"".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_toml_str;
    use std::path::Path;

    const CATEGORIES: &[&str] = &["hris", "ats", "crm", "lms", "documents"];

    /// The example auth with every `X_env` written inline, so the check
    /// needs no environment.
    fn inline_auth(entry: &Entry) -> String {
        let mut auth = entry.meta.auth.clone();
        let envs: Vec<String> = auth
            .keys()
            .filter(|k| k.ends_with("_env"))
            .cloned()
            .collect();
        for k in envs {
            auth.remove(&k);
            auth.insert(k.trim_end_matches("_env").to_string(), "placeholder".into());
        }
        inline_table(&auth)
    }

    #[test]
    fn every_catalog_file_parses_and_validates() {
        let names: Vec<&str> = names().collect();
        assert!(names.len() >= 16, "{} catalog entries", names.len());
        let mut categories = std::collections::BTreeSet::new();
        for name in names {
            let text = FILES.iter().find(|(n, _)| *n == name).unwrap().1;
            let entry = parse(name, text).unwrap_or_else(|e| panic!("{e}"));
            assert!(
                text.starts_with('#')
                    && text.contains("https://")
                    && text.to_lowercase().contains("checked 2026-"),
                "providers/{name}.toml must open with a comment citing its doc pages and the date checked"
            );
            assert!(
                CATEGORIES.contains(&entry.meta.category.as_str()),
                "{name}: category {:?}",
                entry.meta.category
            );
            categories.insert(entry.meta.category.clone());
            entry
                .auth_raw()
                .unwrap_or_else(|e| panic!("{name}: catalog.auth: {e}"));
            let provider = crate::config::validate::catalog_provider(&entry)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(provider.rate_limit.is_some(), "{name}: no rate_limit");
            for rname in provider.resources.keys() {
                let family = rname.split('_').next().unwrap();
                assert_eq!(family, entry.meta.category, "{name}: resource {rname}");
            }
            // An account with only provider, params and credentials.
            let params: Vec<String> = provider
                .params
                .iter()
                .map(|p| format!("{p} = \"acme\""))
                .collect();
            let config = format!(
                "[[accounts]]\nid = \"a\"\nprovider = \"{name}\"\nparams = {{ {} }}\nauth = {}\n",
                params.join(", "),
                inline_auth(&entry)
            );
            let c = from_toml_str(&config, Path::new("."))
                .unwrap_or_else(|e| panic!("{name}: {e}\n{config}"));
            assert!(c.providers[name].builtin);
            assert!(!c.accounts[0].base_url.as_str().contains('{'));
        }
        for c in CATEGORIES {
            assert!(categories.contains(*c), "no {c} vendor in the catalog");
        }
    }

    #[test]
    fn overlay_merges_tables_and_replaces_typed_ones() {
        let base: Value = Figment::from(Toml::string(
            r#"
a = 1
query = { x = "1", y = "2" }
pagination = { type = "page", size = 100 }
"#,
        ))
        .extract()
        .unwrap();
        let over: Value = Figment::from(Toml::string(
            r#"
query = { y = "3" }
pagination = { type = "cursor", next = "/n" }
"#,
        ))
        .extract()
        .unwrap();
        let merged = overlay(base, over);
        let d = merged.as_dict().unwrap();
        assert_eq!(d["a"].to_i128(), Some(1));
        let q = d["query"].as_dict().unwrap();
        assert_eq!(q["x"].as_str(), Some("1"));
        assert_eq!(q["y"].as_str(), Some("3"));
        let p = d["pagination"].as_dict().unwrap();
        assert_eq!(p["type"].as_str(), Some("cursor"));
        assert!(!p.contains_key("size"));
    }
}
