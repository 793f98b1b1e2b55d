//! JSON read straight from the bytes of a response, without building a
//! tree: a pull parser that yields one event per token, the pieces of text
//! the canonical form is written from, and JSON pointers (RFC 6901).
//!
//! Exists because a `serde_json::Value` per page costs about fifty times the
//! page's bytes, recurses (so a record nested deeper than 128 levels failed
//! the whole page), and refuses some valid RFC 8259 text (a lone surrogate
//! such as `"\ud800"`, a number such as `1e400`). This parser keeps no
//! tree, tracks nesting in one bit per level, and accepts every text the
//! RFC's grammar accepts.
//!
//! The input is `&str`, so it is valid UTF-8 before the parser sees it.

use std::borrow::Cow;

/// Where in the text a token starts, and what it is. String and number
/// events carry the span of their raw text (strings: between the quotes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    StartObject,
    EndObject,
    StartArray,
    EndArray,
    /// An object key.
    Key(Str),
    Str(Str),
    Num(Span),
    Bool(bool),
    Null,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

/// The raw text of a string between its quotes; `escaped` when it holds a
/// backslash escape (otherwise the raw text is the value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Str {
    pub span: Span,
    pub escaped: bool,
}

/// Why a text is not JSON. `Eof` means it stopped early (a truncated body);
/// everything else is a wrong character at `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SyntaxError {
    #[error("the text ends early, at byte {0}")]
    Eof(usize),
    #[error("unexpected character at byte {0}")]
    Unexpected(usize),
    #[error("a control character inside a string at byte {0}")]
    Control(usize),
    #[error("a bad escape sequence at byte {0}")]
    Escape(usize),
    #[error("a malformed number at byte {0}")]
    Number(usize),
    #[error("more text after the JSON value, at byte {0}")]
    Trailing(usize),
}

impl SyntaxError {
    pub fn is_eof(&self) -> bool {
        matches!(self, SyntaxError::Eof(_))
    }
}

/// One bit per level of nesting: objects are 1, arrays 0. A page of
/// `max_page_bytes` can nest at most that many levels, so this costs at
/// most an eighth of the page.
#[derive(Default, Debug)]
struct Nesting {
    words: Vec<u64>,
    depth: usize,
}

impl Nesting {
    fn push(&mut self, object: bool) {
        let (w, b) = (self.depth / 64, self.depth % 64);
        if w == self.words.len() {
            self.words.push(0);
        }
        if object {
            self.words[w] |= 1 << b;
        } else {
            self.words[w] &= !(1 << b);
        }
        self.depth += 1;
    }

    fn pop(&mut self) {
        self.depth -= 1;
    }

    /// `Some(true)` inside an object, `Some(false)` inside an array.
    fn top(&self) -> Option<bool> {
        let d = self.depth.checked_sub(1)?;
        Some(self.words[d / 64] >> (d % 64) & 1 == 1)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A value: at the top, after a colon or after a comma in an array.
    Value,
    /// A value or `]`, right after `[`.
    ValueOrEnd,
    /// A key or `}`, right after `{`.
    KeyOrEnd,
    /// A key, after a comma in an object.
    Key,
    Colon,
    CommaOrEnd,
    Done,
}

/// A pull parser over one JSON text.
pub struct Parser<'a> {
    text: &'a str,
    pos: usize,
    nesting: Nesting,
    expect: Expect,
}

impl<'a> Parser<'a> {
    pub fn new(text: &'a str) -> Self {
        // RFC 8259 §8.1: a parser may ignore a byte order mark.
        let pos = if text.starts_with('\u{feff}') { 3 } else { 0 };
        Parser {
            text,
            pos,
            nesting: Nesting::default(),
            expect: Expect::Value,
        }
    }

    pub fn text(&self) -> &'a str {
        self.text
    }

    /// The offset just after the last token returned.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// How many containers enclose the next token.
    pub fn depth(&self) -> usize {
        self.nesting.depth
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn skip_ws(&mut self) {
        let b = self.bytes();
        while let Some(&c) = b.get(self.pos) {
            if !matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
                break;
            }
            self.pos += 1;
        }
    }

    /// The next event with the offset where its token starts, or `None`
    /// after the one top-level value has ended (and only whitespace
    /// follows).
    pub fn next_event(&mut self) -> Result<Option<(usize, Event)>, SyntaxError> {
        loop {
            self.skip_ws();
            let start = self.pos;
            let Some(&c) = self.bytes().get(start) else {
                return if self.expect == Expect::Done {
                    Ok(None)
                } else {
                    Err(SyntaxError::Eof(start))
                };
            };
            match self.expect {
                Expect::Done => return Err(SyntaxError::Trailing(start)),
                Expect::Colon => {
                    if c != b':' {
                        return Err(SyntaxError::Unexpected(start));
                    }
                    self.pos += 1;
                    self.expect = Expect::Value;
                }
                Expect::CommaOrEnd => {
                    let object = self.nesting.top() == Some(true);
                    match c {
                        b',' => {
                            self.pos += 1;
                            self.expect = if object { Expect::Key } else { Expect::Value };
                        }
                        b'}' if object => return Ok(Some((start, self.close(Event::EndObject)))),
                        b']' if !object => return Ok(Some((start, self.close(Event::EndArray)))),
                        _ => return Err(SyntaxError::Unexpected(start)),
                    }
                }
                Expect::KeyOrEnd | Expect::Key => {
                    if c == b'}' && self.expect == Expect::KeyOrEnd {
                        return Ok(Some((start, self.close(Event::EndObject))));
                    }
                    if c != b'"' {
                        return Err(SyntaxError::Unexpected(start));
                    }
                    let s = self.string()?;
                    self.expect = Expect::Colon;
                    return Ok(Some((start, Event::Key(s))));
                }
                Expect::Value | Expect::ValueOrEnd => {
                    if c == b']' && self.expect == Expect::ValueOrEnd {
                        return Ok(Some((start, self.close(Event::EndArray))));
                    }
                    let event = match c {
                        b'{' => {
                            self.pos += 1;
                            self.nesting.push(true);
                            self.expect = Expect::KeyOrEnd;
                            return Ok(Some((start, Event::StartObject)));
                        }
                        b'[' => {
                            self.pos += 1;
                            self.nesting.push(false);
                            self.expect = Expect::ValueOrEnd;
                            return Ok(Some((start, Event::StartArray)));
                        }
                        b'"' => Event::Str(self.string()?),
                        b'-' | b'0'..=b'9' => Event::Num(self.number()?),
                        b't' => self.literal("true", Event::Bool(true))?,
                        b'f' => self.literal("false", Event::Bool(false))?,
                        b'n' => self.literal("null", Event::Null)?,
                        _ => return Err(SyntaxError::Unexpected(start)),
                    };
                    self.after_value();
                    return Ok(Some((start, event)));
                }
            }
        }
    }

    fn close(&mut self, event: Event) -> Event {
        self.pos += 1;
        self.nesting.pop();
        self.after_value();
        event
    }

    fn after_value(&mut self) {
        self.expect = if self.nesting.depth == 0 {
            Expect::Done
        } else {
            Expect::CommaOrEnd
        };
    }

    fn literal(&mut self, word: &str, event: Event) -> Result<Event, SyntaxError> {
        let rest = &self.bytes()[self.pos..];
        if rest.starts_with(word.as_bytes()) {
            self.pos += word.len();
            return Ok(event);
        }
        // A prefix of the word at the very end is a truncated text.
        if word.as_bytes().starts_with(rest) {
            return Err(SyntaxError::Eof(self.bytes().len()));
        }
        Err(SyntaxError::Unexpected(self.pos))
    }

    /// From an opening quote to just past the closing one.
    fn string(&mut self) -> Result<Str, SyntaxError> {
        let b = self.bytes();
        let start = self.pos + 1;
        let mut i = start;
        let mut escaped = false;
        loop {
            // Plain text runs are the common case: skip them a byte at a
            // time without branching on each kind of special character.
            while let Some(&c) = b.get(i) {
                if c == b'"' || c == b'\\' || c < 0x20 {
                    break;
                }
                i += 1;
            }
            match b.get(i) {
                None => return Err(SyntaxError::Eof(b.len())),
                Some(b'"') => {
                    self.pos = i + 1;
                    return Ok(Str {
                        span: Span { start, end: i },
                        escaped,
                    });
                }
                Some(b'\\') => {
                    escaped = true;
                    match b.get(i + 1) {
                        None => return Err(SyntaxError::Eof(b.len())),
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                        Some(b'u') => {
                            for k in 0..4 {
                                match b.get(i + 2 + k) {
                                    None => return Err(SyntaxError::Eof(b.len())),
                                    Some(h) if h.is_ascii_hexdigit() => {}
                                    Some(_) => return Err(SyntaxError::Escape(i)),
                                }
                            }
                            i += 6;
                        }
                        Some(_) => return Err(SyntaxError::Escape(i)),
                    }
                }
                Some(_) => return Err(SyntaxError::Control(i)),
            }
        }
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Result<Span, SyntaxError> {
        let b = self.bytes();
        let start = self.pos;
        let mut i = start;
        let digits = |i: &mut usize| {
            let from = *i;
            while b.get(*i).is_some_and(u8::is_ascii_digit) {
                *i += 1;
            }
            *i - from
        };
        let need_digit = |i: usize| match b.get(i) {
            None => Err(SyntaxError::Eof(b.len())),
            Some(c) if c.is_ascii_digit() => Ok(()),
            Some(_) => Err(SyntaxError::Number(start)),
        };
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        need_digit(i)?;
        if b[i] == b'0' {
            i += 1;
        } else {
            digits(&mut i);
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            need_digit(i)?;
            digits(&mut i);
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            need_digit(i)?;
            digits(&mut i);
        }
        // `01` or `1.5.2`: a digit or a dot right after a number is wrong.
        if matches!(b.get(i), Some(b'0'..=b'9' | b'.')) {
            return Err(SyntaxError::Number(start));
        }
        self.pos = i;
        Ok(Span { start, end: i })
    }

    /// Skips the container whose start was just returned by finding its
    /// matching end, without checking the grammar inside: for callers that
    /// parse that text fully later (each record is canonicalised from its
    /// span, which checks every byte). Returns the offset after it.
    pub fn skip_container_unchecked(&mut self) -> Result<usize, SyntaxError> {
        let b = self.bytes();
        let mut depth = 1usize;
        let mut i = self.pos;
        while depth > 0 {
            let Some(&c) = b.get(i) else {
                return Err(SyntaxError::Eof(b.len()));
            };
            match c {
                b'"' => {
                    // To the closing quote, stepping over escapes.
                    i += 1;
                    loop {
                        match memchr::memchr2(b'"', b'\\', &b[i..]) {
                            None => return Err(SyntaxError::Eof(b.len())),
                            Some(off) if b[i + off] == b'\\' => i += off + 2,
                            Some(off) => {
                                i += off + 1;
                                break;
                            }
                        }
                    }
                    continue;
                }
                b'{' | b'[' => depth += 1,
                b'}' | b']' => depth -= 1,
                _ => {}
            }
            i += 1;
        }
        self.pos = i;
        self.nesting.pop();
        self.after_value();
        Ok(i)
    }

    /// Skips the value whose first event was just returned (a container's
    /// start; a scalar needs no skipping). Returns the offset after it.
    pub fn skip_container(&mut self) -> Result<usize, SyntaxError> {
        let depth = self.nesting.depth;
        while self.nesting.depth >= depth {
            if self.next_event()?.is_none() {
                return Err(SyntaxError::Eof(self.pos));
            }
        }
        Ok(self.pos)
    }
}

/// The value of a string's raw text. `Err` when it holds a lone surrogate
/// (valid JSON, but not a Unicode string).
pub fn decode(raw: &str, escaped: bool) -> Result<Cow<'_, str>, LoneSurrogate> {
    if !escaped {
        return Ok(Cow::Borrowed(raw));
    }
    let mut out = String::with_capacity(raw.len());
    for piece in unescape(raw) {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Char(c) => out.push(c),
            Piece::Lone(_) => return Err(LoneSurrogate),
        }
    }
    Ok(Cow::Owned(out))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoneSurrogate;

/// Pieces of a string's raw text after escapes are resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    Text(&'a str),
    Char(char),
    /// A `\uD800`–`\uDFFF` escape that is not half of a pair.
    Lone(u16),
}

/// Resolves the escapes of an already validated string body.
pub fn unescape(raw: &str) -> impl Iterator<Item = Piece<'_>> {
    let b = raw.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        if i >= b.len() {
            return None;
        }
        if b[i] != b'\\' {
            let end = b[i..]
                .iter()
                .position(|&c| c == b'\\')
                .map_or(b.len(), |p| i + p);
            let text = &raw[i..end];
            i = end;
            return Some(Piece::Text(text));
        }
        let c = b[i + 1];
        i += 2;
        let simple = match c {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            _ => {
                let unit = hex4(&b[i..i + 4]);
                i += 4;
                if (0xD800..0xDC00).contains(&unit)
                    && b.get(i) == Some(&b'\\')
                    && b.get(i + 1) == Some(&b'u')
                {
                    let low = hex4(&b[i + 2..i + 6]);
                    if (0xDC00..0xE000).contains(&low) {
                        i += 6;
                        let c = 0x10000
                            + ((u32::from(unit) - 0xD800) << 10)
                            + (u32::from(low) - 0xDC00);
                        return Some(Piece::Char(char::from_u32(c).expect("a valid pair")));
                    }
                }
                return Some(match char::from_u32(u32::from(unit)) {
                    Some(c) => Piece::Char(c),
                    None => Piece::Lone(unit),
                });
            }
        };
        Some(Piece::Char(simple))
    })
}

fn hex4(b: &[u8]) -> u16 {
    b.iter().fold(0u16, |acc, &h| {
        let v = match h {
            b'0'..=b'9' => h - b'0',
            b'a'..=b'f' => h - b'a' + 10,
            _ => h - b'A' + 10,
        };
        (acc << 4) | u16::from(v)
    })
}

/// A JSON pointer (RFC 6901) split into its unescaped reference tokens.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pointer {
    text: String,
    tokens: Vec<String>,
}

impl Pointer {
    /// `""` is the whole document; otherwise it starts with `/`, and `~` is
    /// only ever `~0` or `~1`.
    pub fn parse(text: &str) -> Option<Pointer> {
        if text.is_empty() {
            return Some(Pointer::default());
        }
        let rest = text.strip_prefix('/')?;
        let bad_escape = text
            .match_indices('~')
            .any(|(i, _)| !matches!(text.as_bytes().get(i + 1), Some(b'0' | b'1')));
        if bad_escape {
            return None;
        }
        let tokens = rest
            .split('/')
            .map(|t| t.replace("~1", "/").replace("~0", "~"))
            .collect();
        Some(Pointer {
            text: text.to_string(),
            tokens,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    pub fn is_root(&self) -> bool {
        self.tokens.is_empty()
    }
}

impl std::fmt::Display for Pointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Whether a reference token names array element `index`, as
/// `serde_json::Value::pointer` reads it: decimal, no sign, no leading zero.
pub fn token_is_index(token: &str, index: usize) -> bool {
    if token.starts_with('+') || (token.starts_with('0') && token.len() != 1) {
        return false;
    }
    token.parse::<usize>() == Ok(index)
}

/// Whether an object key (raw text of a string) equals a reference token.
pub fn key_is(raw: &str, escaped: bool, token: &str) -> bool {
    if !escaped {
        return raw == token;
    }
    decode(raw, true).is_ok_and(|k| k == token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(text: &str) -> Result<Vec<Event>, SyntaxError> {
        let mut p = Parser::new(text);
        let mut out = Vec::new();
        while let Some((_, e)) = p.next_event()? {
            out.push(e);
        }
        Ok(out)
    }

    #[test]
    fn every_rfc_8259_value_parses() {
        for ok in [
            "0",
            "-0",
            "1.5e-3",
            "1E400",
            "\"\\ud800\"",
            "\"\\u00e9\\/\\n\"",
            " [ ] ",
            "{}",
            "{\"a\":[1,{\"b\":null}],\"c\":true}",
            "\u{feff}[1]",
        ] {
            assert!(events(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn malformed_text_is_refused_and_truncation_is_told_apart() {
        for (bad, eof) in [
            ("[1,", true),
            ("{\"a\"", true),
            ("{\"a\":tr", true),
            ("\"abc", true),
            ("", true),
            ("[1,]", false),
            ("{\"a\" 1}", false),
            ("01", false),
            ("1.", true),
            ("1.x", false),
            ("-", true),
            ("[1] [2]", false),
            ("\"\\x\"", false),
            ("\"a\u{1}\"", false),
            ("<html>", false),
            ("{\"a\":1,}", false),
            ("nul!", false),
        ] {
            let err = events(bad).expect_err(bad);
            assert_eq!(err.is_eof(), eof, "{bad}: {err}");
        }
    }

    #[test]
    fn nesting_is_not_limited_by_recursion() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(events(&deep).unwrap().len(), 200_000);
    }

    #[test]
    fn an_unchecked_skip_finds_the_end_and_the_grammar_goes_on() {
        let text = r#"[{"a":"}]\"{[","b":[1,{"c":2}]},3]"#;
        let mut p = Parser::new(text);
        assert_eq!(p.next_event().unwrap().unwrap().1, Event::StartArray);
        assert_eq!(p.next_event().unwrap().unwrap().1, Event::StartObject);
        let end = p.skip_container_unchecked().unwrap();
        assert_eq!(&text[1..end], r#"{"a":"}]\"{[","b":[1,{"c":2}]}"#);
        assert!(matches!(p.next_event().unwrap().unwrap().1, Event::Num(_)));
        assert_eq!(p.next_event().unwrap().unwrap().1, Event::EndArray);
        assert_eq!(p.next_event().unwrap(), None);
        let mut cut = Parser::new(r#"[{"a":"x"#);
        cut.next_event().unwrap();
        cut.next_event().unwrap();
        assert!(cut.skip_container_unchecked().unwrap_err().is_eof());
    }

    #[test]
    fn escapes_decode_and_lone_surrogates_are_reported() {
        assert_eq!(decode("a\\u00e9\\n", true).unwrap(), "a\u{e9}\n");
        assert_eq!(decode("\\ud83d\\ude00", true).unwrap(), "\u{1f600}");
        assert_eq!(decode("\\ud800x", true), Err(LoneSurrogate));
        assert_eq!(decode("\\udc00", true), Err(LoneSurrogate));
        assert_eq!(decode("plain", false).unwrap(), "plain");
    }

    #[test]
    fn pointers_follow_rfc_6901() {
        let p = Pointer::parse("/a~1b/m~0n/0").unwrap();
        assert_eq!(p.tokens(), ["a/b", "m~n", "0"]);
        assert!(Pointer::parse("").unwrap().is_root());
        assert!(Pointer::parse("a").is_none());
        assert!(Pointer::parse("/a~2").is_none());
        assert!(token_is_index("0", 0) && token_is_index("12", 12));
        assert!(!token_is_index("01", 1) && !token_is_index("+1", 1));
        assert!(key_is("a\\u0062", true, "ab"));
    }
}
