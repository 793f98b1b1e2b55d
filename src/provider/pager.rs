//! Walking one resource through its pagination: which request comes next,
//! and when the scan is complete.
//!
//! `page` and `offset` stop at a short or empty page, or earlier at an
//! explicit end signal when one is configured (`total`, `last_page`,
//! `has_more`, or a status in `end_status` after a full page). `cursor`,
//! `link` and `next_url` stop when the provider gives no next step (or a
//! `has_more` flag is false); a cursor may travel in the query or in the
//! JSON body of a POST, optionally to a continuation path. `after_last`
//! sends a value of the page's last record (`starting_after=<id>`) and
//! stops at an empty page or a false `has_more`. Every
//! style refuses to loop: a URL fetched twice in one scan, or a page/offset
//! page byte-identical to the one before it (a provider ignoring the page
//! parameter), is a "pagination loop" error.

use std::collections::HashSet;
use std::hash::{Hash as _, Hasher as _};

use chrono::{DateTime, Utc};
use reqwest::header::{self, HeaderMap};
use url::Url;

use super::page::{self, Page, Probe, RecordsProblem, ScanError};
use super::{FetchError, Fetched, ProviderClient, Request, format_since, shown_url};
use crate::config::{
    Account, Auth, EndSignals, Method, Pagination, ParamPlace, Provider, Resource,
};
use crate::json::Pointer;
use crate::redact::redact_url;

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
    /// Records received so far in this scan (for a `total` end signal).
    records: u64,
    /// Hashes of every URL fetched in this scan, for the loop guard.
    fetched: HashSet<u64>,
    /// A hash of the previous page's body, for the repeated-page guard.
    last_body: Option<u128>,
    probes: Probes,
}

#[derive(Clone)]
enum NextRequest {
    /// Our own URL plus pagination parameters.
    Params(Vec<(String, String)>),
    /// A URL handed to us by the provider (Link header or next_url).
    Url(Url),
    /// A cursor that goes into the JSON body of a POST.
    BodyCursor(String),
}

/// The body values pagination reads, and where each is in the probe list.
#[derive(Default)]
struct Probes {
    pointers: Vec<Pointer>,
    cursor: Option<usize>,
    next_url: Option<usize>,
    total: Option<usize>,
    last_page: Option<usize>,
    has_more: Option<usize>,
}

impl Probes {
    fn add(&mut self, p: &Pointer) -> usize {
        self.pointers.push(p.clone());
        self.pointers.len() - 1
    }

    fn of(pagination: &Pagination) -> Probes {
        let mut probes = Probes::default();
        match pagination {
            Pagination::Page { end, .. } | Pagination::Offset { end, .. } => {
                probes.total = end.total.as_ref().map(|p| probes.add(p));
                probes.last_page = end.last_page.as_ref().map(|p| probes.add(p));
                probes.has_more = end.has_more.as_ref().map(|p| probes.add(p));
            }
            Pagination::Cursor { next, has_more, .. } => {
                probes.cursor = Some(probes.add(next));
                probes.has_more = has_more.as_ref().map(|p| probes.add(p));
            }
            Pagination::AfterLast { has_more, .. } => {
                probes.has_more = has_more.as_ref().map(|p| probes.add(p));
            }
            Pagination::NextUrl { next } => probes.next_url = Some(probes.add(next)),
            Pagination::Link | Pagination::None => {}
        }
        probes
    }
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
                ..
            } => vec![
                (page_param.clone(), first_page.to_string()),
                (size_param.clone(), size.to_string()),
            ],
            Pagination::Offset {
                offset_param,
                limit_param,
                size,
                ..
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
            records: 0,
            fetched: HashSet::new(),
            last_body: None,
            probes: Probes::of(&resource.pagination),
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

    /// The URL and (for POST) the JSON body of the request `next`.
    fn build(&self, next: &NextRequest) -> (Url, Option<Vec<u8>>) {
        let template = || self.resource.body.clone().unwrap_or_default();
        let (url, body) = match next {
            NextRequest::BodyCursor(cursor) => {
                let (param, continue_path) = match &self.resource.pagination {
                    Pagination::Cursor {
                        cursor_param,
                        continue_path,
                        ..
                    } => (cursor_param.as_str(), continue_path.as_deref()),
                    _ => ("cursor", None),
                };
                match continue_path {
                    // Only the cursor goes to the continuation endpoint.
                    Some(path) => {
                        let mut url = self.account.base_url.clone();
                        let full = format!("{}{path}", url.path().trim_end_matches('/'));
                        url.set_path(&full);
                        url.set_query(None);
                        let mut body = serde_json::Map::new();
                        body.insert(param.to_string(), cursor.clone().into());
                        (url, Some(body))
                    }
                    None => {
                        let mut body = template();
                        body.insert(param.to_string(), cursor.clone().into());
                        (self.build_url(&NextRequest::Params(Vec::new())), Some(body))
                    }
                }
            }
            other => (
                self.build_url(other),
                (self.resource.method == Method::Post).then(template),
            ),
        };
        let body = body.map(|b| {
            serde_json::to_vec(&serde_json::Value::Object(b)).expect("JSON values serialise")
        });
        (self.with_query_auth(url), body)
    }

    fn build_url(&self, next: &NextRequest) -> Url {
        match next {
            NextRequest::Url(u) => u.clone(),
            NextRequest::BodyCursor(_) => self.base_url(),
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
        }
    }

    fn with_query_auth(&self, mut url: Url) -> Url {
        if let Auth::Query { name, value } = &self.account.auth
            && !url.query_pairs().any(|(k, _)| k == name.as_str())
        {
            url.query_pairs_mut().append_pair(name, value.expose());
        }
        url
    }

    /// The next page, or `None` when the scan is complete.
    pub async fn next_page(&mut self) -> Result<Option<Page>, FetchError> {
        let Some(next) = self.next.clone() else {
            return Ok(None);
        };
        if self.pages >= self.provider.max_pages {
            return Err(FetchError::MaxPages {
                max: self.provider.max_pages,
            });
        }
        let (url, body) = self.build(&next);
        let shown = format!(
            "{} {}",
            self.resource.method.as_str(),
            shown_url(self.account, &url)
        );
        let url_hash = {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            url.as_str().hash(&mut h);
            body.hash(&mut h);
            h.finish()
        };
        if self.fetched.contains(&url_hash) {
            return Err(FetchError::Loop {
                url: shown,
                what: match self.resource.pagination {
                    Pagination::Cursor { .. } => "cursor",
                    Pagination::AfterLast { .. } => "last record",
                    _ => "next-page URL",
                },
            });
        }
        // A status that means "no more" only counts after a page.
        let end_status: &[u16] = match &self.resource.pagination {
            Pagination::Page { end, .. } | Pagination::Offset { end, .. } if self.pages > 0 => {
                &end.end_status
            }
            _ => &[],
        };
        let fetched = self
            .client
            .get(&Request {
                account: self.account,
                provider: self.provider,
                resource: self.resource,
                url: &url,
                method: self.resource.method,
                body: body.as_deref(),
                end_status,
            })
            .await?;
        let (headers, bytes) = match fetched {
            Fetched::End => {
                self.next = None;
                return Ok(None);
            }
            Fetched::Body(headers, bytes) => (headers, bytes),
        };
        let body_hash = xxhash_rust::xxh3::xxh3_128(&bytes);
        let content_type = || {
            headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_string()
        };
        let first_byte = bytes.iter().copied().find(|b| !b.is_ascii_whitespace());
        let probe_refs: Vec<&Pointer> = self.probes.pointers.iter().collect();
        let mut page = page::scan(bytes, &self.resource.records, &probe_refs).map_err(|e| {
            body_error(
                &shown,
                &self.resource.records,
                content_type(),
                first_byte,
                e,
            )
        })?;
        page.url = shown.clone();
        self.records += page.len() as u64;
        self.next = self.following(&shown, &url, next, &headers, &page, body_hash)?;
        self.fetched.insert(url_hash);
        self.pages += 1;
        Ok(Some(page))
    }

    /// What to request after the page just fetched, if anything.
    fn following(
        &mut self,
        shown: &str,
        url: &Url,
        current: NextRequest,
        headers: &HeaderMap,
        page: &Page,
        body_hash: u128,
    ) -> Result<Option<NextRequest>, FetchError> {
        let signal_err =
            |key: &'static str, pointer: &Pointer, what: &'static str| FetchError::EndSignal {
                url: shown.to_string(),
                key,
                pointer: pointer.to_string(),
                what,
            };
        Ok(match (&self.resource.pagination, current) {
            (
                Pagination::Page {
                    page_param,
                    size,
                    end,
                    ..
                },
                NextRequest::Params(mut params),
            ) => {
                let current_page = param_number(&params, page_param);
                if !self.more_after(page, *size, end, current_page, &signal_err)? {
                    return Ok(None);
                }
                self.guard_repeat(shown, body_hash)?;
                bump(&mut params, page_param, 1);
                Some(NextRequest::Params(params))
            }
            (
                Pagination::Offset {
                    offset_param,
                    size,
                    end,
                    ..
                },
                NextRequest::Params(mut params),
            ) => {
                if !self.more_after(page, *size, end, None, &signal_err)? {
                    return Ok(None);
                }
                self.guard_repeat(shown, body_hash)?;
                bump(&mut params, offset_param, page.len() as u64);
                Some(NextRequest::Params(params))
            }
            (
                Pagination::AfterLast {
                    param,
                    from,
                    has_more,
                },
                _,
            ) => {
                if page.is_empty() {
                    return Ok(None);
                }
                if let (Some(i), Some(p)) = (self.probes.has_more, has_more)
                    && !flag(page, i)
                        .ok_or_else(|| signal_err("has_more", p, "is not true or false"))?
                {
                    return Ok(None);
                }
                let last = page
                    .last_record()
                    .and_then(|r| page::value_at(r, from))
                    .and_then(|v| v.as_text().map(str::to_string))
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| {
                        signal_err("from", from, "is not a string or number in the last record")
                    })?;
                Some(NextRequest::Params(vec![(param.clone(), last)]))
            }
            (
                Pagination::Cursor {
                    cursor_param,
                    has_more,
                    place,
                    ..
                },
                _,
            ) => {
                if let (Some(i), Some(p)) = (self.probes.has_more, has_more)
                    && !flag(page, i)
                        .ok_or_else(|| signal_err("has_more", p, "is not true or false"))?
                {
                    return Ok(None);
                }
                let cursor = self.probes.cursor.and_then(|i| page.probe(i));
                match cursor.and_then(Probe::as_text) {
                    Some(c) if !c.is_empty() && *place == ParamPlace::Body => {
                        Some(NextRequest::BodyCursor(c.to_string()))
                    }
                    Some(c) if !c.is_empty() => Some(NextRequest::Params(vec![(
                        cursor_param.clone(),
                        c.to_string(),
                    )])),
                    _ => None,
                }
            }
            (Pagination::Link, _) => match next_link(headers) {
                Some(link) => Some(NextRequest::Url(resolve_next(shown, url, &link)?)),
                None => None,
            },
            (Pagination::NextUrl { .. }, _) => {
                match self.probes.next_url.and_then(|i| page.probe(i)) {
                    Some(Probe::Str(s)) if !s.is_empty() => {
                        Some(NextRequest::Url(resolve_next(shown, url, s)?))
                    }
                    _ => None,
                }
            }
            _ => None,
        })
    }

    /// Whether a page/offset scan goes on after `page`: an empty page always
    /// ends it; an explicit end signal decides when configured; otherwise a
    /// short page ends it.
    fn more_after(
        &self,
        page: &Page,
        size: u64,
        end: &EndSignals,
        current_page: Option<u64>,
        signal_err: &dyn Fn(&'static str, &Pointer, &'static str) -> FetchError,
    ) -> Result<bool, FetchError> {
        if page.is_empty() {
            return Ok(false);
        }
        if let (Some(i), Some(p)) = (self.probes.has_more, &end.has_more) {
            return flag(page, i).ok_or_else(|| signal_err("has_more", p, "is not true or false"));
        }
        if let (Some(i), Some(p)) = (self.probes.total, &end.total) {
            let total =
                count(page, i).ok_or_else(|| signal_err("total", p, "is not a record count"))?;
            return Ok(self.records < total);
        }
        if let (Some(i), Some(p)) = (self.probes.last_page, &end.last_page) {
            let last =
                count(page, i).ok_or_else(|| signal_err("last_page", p, "is not a page number"))?;
            return Ok(current_page.is_some_and(|c| c < last));
        }
        Ok(page.len() as u64 >= size)
    }

    /// A page/offset provider that ignores the page parameter returns the
    /// same full page forever; stop instead of looping to max_pages.
    fn guard_repeat(&mut self, shown: &str, body_hash: u128) -> Result<(), FetchError> {
        if self.last_body == Some(body_hash) {
            return Err(FetchError::Loop {
                url: shown.to_string(),
                what: "page",
            });
        }
        self.last_body = Some(body_hash);
        Ok(())
    }
}

fn flag(page: &Page, i: usize) -> Option<bool> {
    match page.probe(i) {
        Some(Probe::Null) => Some(false),
        Some(p) => p.as_flag(),
        None => None,
    }
}

fn count(page: &Page, i: usize) -> Option<u64> {
    page.probe(i).and_then(Probe::as_count)
}

/// Turns a body that is not a page into the error that says why, without
/// quoting the body.
fn body_error(
    shown: &str,
    records: &Pointer,
    content_type: String,
    first_byte: Option<u8>,
    e: ScanError,
) -> FetchError {
    let not_json = |what: String| FetchError::NotJson {
        url: shown.to_string(),
        content_type: content_type.clone(),
        what,
    };
    match e {
        ScanError::Records(problem) => FetchError::Records {
            url: shown.to_string(),
            pointer: records.to_string(),
            what: match problem {
                RecordsProblem::Missing => "does not exist in the response",
                RecordsProblem::NotArray => "does not point at an array",
            },
        },
        ScanError::NotUtf8 => not_json("not UTF-8 text".into()),
        ScanError::Syntax(_) if first_byte.is_none() => not_json("empty body".into()),
        ScanError::Syntax(_) if first_byte == Some(b'<') => not_json("looks like HTML".into()),
        ScanError::Syntax(s) if s.is_eof() => FetchError::TruncatedJson {
            url: shown.to_string(),
            detail: s.to_string(),
        },
        ScanError::Syntax(s) => not_json(s.to_string()),
    }
}

fn param_number(params: &[(String, String)], name: &str) -> Option<u64> {
    params.iter().find(|(k, _)| k == name)?.1.parse().ok()
}

fn bump(params: &mut [(String, String)], name: &str, by: u64) {
    for (k, v) in params.iter_mut() {
        if k == name {
            let n: u64 = v.parse().unwrap_or(0);
            *v = n.saturating_add(by).to_string();
        }
    }
}

fn resolve_next(shown: &str, current: &Url, next: &str) -> Result<Url, FetchError> {
    let url = current.join(next).map_err(|_| FetchError::BadNext {
        url: shown.to_string(),
        detail: "is not a URL".into(),
    })?;
    if !crate::net::same_origin(current, &url) {
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
    use reqwest::header::HeaderValue;

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
    fn html_truncated_and_misshapen_bodies_are_told_apart() {
        let records = Pointer::parse("/data").unwrap();
        let err = |body: &[u8]| {
            let first = body.iter().copied().find(|b| !b.is_ascii_whitespace());
            let e = page::scan(body.to_vec(), &records, &[]).unwrap_err();
            body_error("u", &records, "text/html".into(), first, e)
        };
        let html = err(b"<html><body>login</body></html>");
        assert!(html.to_string().contains("looks like HTML"), "{html}");
        assert!(!html.to_string().contains("login"));
        assert!(matches!(
            err(br#"{"data":[{"id":1},"#),
            FetchError::TruncatedJson { .. }
        ));
        assert!(err(b"  ").to_string().contains("empty body"));
        assert!(matches!(
            err(br#"{"data":{"x":1}}"#),
            FetchError::Records {
                what: "does not point at an array",
                ..
            }
        ));
        assert!(matches!(
            err(br#"{"list":[]}"#),
            FetchError::Records {
                what: "does not exist in the response",
                ..
            }
        ));
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
}
