//! Showing URLs without their secrets. Query values (`?token=…`) and
//! passwords in the userinfo are replaced by `***` wherever a URL is logged,
//! printed or put in an error.

use url::Url;

/// `https://h/p?token=abc&x=1` → `https://h/p?token=***&x=***`.
pub fn redact_url(url: &Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("***"));
    }
    if shown.query() == Some("") {
        shown.set_query(None);
    } else if shown.query().is_some() {
        let pairs: Vec<String> = url.query_pairs().map(|(k, _)| format!("{k}=***")).collect();
        if pairs.is_empty() {
            shown.set_query(Some("***"));
        } else {
            shown.set_query(Some(&pairs.join("&")));
        }
    }
    shown.set_fragment(None);
    shown.to_string()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_and_passwords_are_hidden() {
        let u = Url::parse("https://user:pw@h.example/hook?token=s3cret&x=1#frag").unwrap();
        let shown = redact_url(&u);
        assert_eq!(shown, "https://user:***@h.example/hook?token=***&x=***");
        let bare = Url::parse("http://h.example/v1/e?").unwrap();
        assert_eq!(redact_url(&bare), "http://h.example/v1/e");
    }

    #[test]
    fn urls_inside_text_are_redacted() {
        let text = "error sending request for url (http://127.0.0.1:9/a?token=s3cret): timed out";
        let shown = redact_text(text);
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("http://127.0.0.1:9/a?token=***"), "{shown}");
        assert!(shown.ends_with("): timed out"));
    }
}
