//! Showing URLs and text without their secrets, and text from outside
//! without its control characters.
//!
//! URLs: a password in the userinfo is always `***`. Query values are shown
//! unless their key looks like a credential (`token`, `api_key`,
//! `signature`, `password`, …) or is a key the caller knows is one (an
//! account's `query` auth parameter): `?page=3&token=***`. Webhook URLs are
//! the operator's own secret endpoints, so every query value of theirs is
//! hidden ([`redact_url_all`]).
//!
//! Text a provider or receiver controls (response excerpts, error texts,
//! record ids) goes through [`printable`] before it reaches a terminal, so
//! an ANSI escape or a bidirectional override shows as an escape, not as an
//! effect.

use std::borrow::Cow;

use url::Url;

/// Parts of query keys that mark a credential (compared lowercase).
const SECRET_KEY_PARTS: &[&str] = &[
    "token",
    "secret",
    "key",
    "sig",
    "pass",
    "pwd",
    "auth",
    "credential",
    "session",
    "jwt",
    "bearer",
    "code",
];

/// Whether a query key looks like it carries a credential.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_KEY_PARTS.iter().any(|p| key.contains(p))
}

/// `https://h/p?token=abc&page=1` → `https://h/p?token=***&page=1`.
pub fn redact_url(url: &Url) -> String {
    redact_url_with(url, &[])
}

/// As [`redact_url`], also hiding the values of `secret_keys`.
pub fn redact_url_with(url: &Url, secret_keys: &[&str]) -> String {
    redact(url, |k| is_secret_key(k) || secret_keys.contains(&k))
}

/// Every query value hidden: for webhook URLs.
pub fn redact_url_all(url: &Url) -> String {
    redact(url, |_| true)
}

fn redact(url: &Url, hide: impl Fn(&str) -> bool) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("***"));
    }
    if shown.query() == Some("") {
        shown.set_query(None);
    } else if let Some(query) = url.query() {
        let pairs: Vec<String> = url
            .query_pairs()
            .map(|(k, v)| {
                let k_enc = encode(&k);
                if hide(&k) {
                    format!("{k_enc}=***")
                } else {
                    format!("{k_enc}={}", encode(&v))
                }
            })
            .collect();
        if pairs.is_empty() {
            shown.set_query(Some("***"));
        } else if !query.is_empty() {
            shown.set_query(Some(&pairs.join("&")));
        }
    }
    shown.set_fragment(None);
    shown.to_string()
}

fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A URL that did not parse, shown without the userinfo and query it may
/// carry: `https://user:pw@h/p?t=x` → `https://***@h/p?***`.
pub fn redact_unparsed(s: &str) -> String {
    let (head, query) = match s.split_once('?') {
        Some((head, _)) => (head, "?***"),
        None => (s, ""),
    };
    let head = match head.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
                None => head.to_string(),
            }
        }
        // No scheme: an `@` anywhere may be userinfo.
        None => match head.rfind('@') {
            Some(at) => format!("***@{}", &head[at + 1..]),
            None => head.to_string(),
        },
    };
    printable(&format!("{head}{query}")).into_owned()
}

/// Redacts every `http(s)://…` URL inside free text, such as a reqwest error
/// message, which embeds the request URL.
pub fn redact_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("http") {
        out.push_str(&rest[..start]);
        let candidate = &rest[start..];
        let end = candidate
            .find(|c: char| c.is_whitespace() || matches!(c, ')' | '"' | '\'' | '>' | '<'))
            .unwrap_or(candidate.len());
        let token = &candidate[..end];
        match Url::parse(token) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => out.push_str(&redact_url(&u)),
            _ => out.push_str(token),
        }
        rest = &candidate[end..];
    }
    out.push_str(rest);
    out
}

/// Text from outside with control characters (C0, DEL, C1) and Unicode
/// bidirectional and invisible formatting characters shown as escapes
/// (`\u{1b}`), so it cannot move the cursor, recolour the terminal or
/// reorder what is shown. Newlines and tabs are escaped too: one item stays
/// on one line.
pub fn printable(text: &str) -> Cow<'_, str> {
    let unsafe_char = |c: char| {
        c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
    };
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_query_values_and_passwords_are_hidden_the_rest_shown() {
        let u = Url::parse("https://user:pw@h.example/hook?token=s3cret&x=1&page=2#frag").unwrap();
        assert_eq!(
            redact_url(&u),
            "https://user:***@h.example/hook?token=***&x=1&page=2"
        );
        let u =
            Url::parse("http://h/e?_page=3&_per_page=10&api_key=k&X-Amz-Signature=s&cursor=abc")
                .unwrap();
        assert_eq!(
            redact_url(&u),
            "http://h/e?_page=3&_per_page=10&api_key=***&X-Amz-Signature=***&cursor=abc"
        );
        let u = Url::parse("http://h/e?u=me&q=1").unwrap();
        assert_eq!(redact_url_with(&u, &["u"]), "http://h/e?u=***&q=1");
        assert_eq!(redact_url_all(&u), "http://h/e?u=***&q=***");
        let bare = Url::parse("http://h.example/v1/e?").unwrap();
        assert_eq!(redact_url(&bare), "http://h.example/v1/e");
    }

    #[test]
    fn unparsable_urls_lose_userinfo_and_query() {
        assert_eq!(
            redact_unparsed("https://user:hunter2@exa mple.com/x?t=1"),
            "https://***@exa mple.com/x?***"
        );
        assert_eq!(redact_unparsed("user:hunter2@host"), "***@host");
        assert_eq!(redact_unparsed("not a url"), "not a url");
    }

    #[test]
    fn urls_inside_text_are_redacted() {
        let text = "error sending request for url (http://127.0.0.1:9/a?token=s3cret): timed out";
        let shown = redact_text(text);
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("http://127.0.0.1:9/a?token=***"), "{shown}");
        assert!(shown.ends_with("): timed out"));
    }

    #[test]
    fn control_and_bidi_characters_are_escaped() {
        assert_eq!(printable("ok"), "ok");
        assert_eq!(printable("\u{1b}[31mred\u{7}"), "\\u{1b}[31mred\\u{7}");
        assert_eq!(
            printable("a\nb\u{202e}c\u{9b}"),
            "a\\u{a}b\\u{202e}c\\u{9b}"
        );
        assert_eq!(printable("café ✓"), "café ✓");
    }
}
