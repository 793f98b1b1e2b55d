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
        let i = container_end(b, self.pos).ok_or(SyntaxError::Eof(b.len()))?;
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

/// Where [`member`] found a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Member {
    /// The value starts at this offset.
    At(usize),
    Missing,
    /// The text is not an object (an array, say).
    NotAnObject,
}

/// The value of `key` in the object `text` holds, found by stepping over
/// the members before it without checking their grammar (for callers that
/// check it some other way). The first of repeated keys wins.
pub fn member(text: &str, key: &str) -> Member {
    let b = text.as_bytes();
    let ws = |mut i: usize| {
        while b
            .get(i)
            .is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
        {
            i += 1;
        }
        i
    };
    // The closing quote of the string whose text starts at `i`, and whether
    // the text holds an escape.
    let string_end = |mut i: usize| {
        let mut escaped = false;
        loop {
            let off = memchr::memchr2(b'"', b'\\', b.get(i..)?)?;
            if b[i + off] == b'"' {
                return Some((i + off, escaped));
            }
            escaped = true;
            i += off + 2;
        }
    };
    let walk = || {
        let mut i = ws(0);
        match b.get(i) {
            Some(b'{') => i += 1,
            Some(_) => return Some(Member::NotAnObject),
            None => return None,
        }
        loop {
            i = ws(i);
            if b.get(i) != Some(&b'"') {
                return None;
            }
            let (end, escaped) = string_end(i + 1)?;
            let name = text.get(i + 1..end)?;
            i = ws(end + 1);
            if b.get(i) != Some(&b':') {
                return None;
            }
            i = ws(i + 1);
            if key_is(name, escaped, key) {
                return Some(Member::At(i));
            }
            i = match b.get(i)? {
                b'"' => string_end(i + 1)?.0 + 1,
                b'{' | b'[' => container_end(b, i + 1)?,
                // A number or a literal: it holds none of these.
                _ => i + memchr::memchr3(b',', b'}', b']', &b[i..])?,
            };
            i = ws(i);
            if b.get(i) != Some(&b',') {
                return None;
            }
            i += 1;
        }
    };
    walk().unwrap_or(Member::Missing)
}

/// Where the container whose opening bracket ends just before `start`
/// ends (the offset after its closing bracket), by counting brackets outside
/// strings; the grammar in between is not checked. `None`: the text ends
/// first.
fn container_end(b: &[u8], start: usize) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    {
        container_end_sse2(b, start)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        container_end_scalar(b, start)
    }
}

/// Where a walk over a container stands between two stretches of bytes.
#[derive(Debug, Clone, Copy)]
struct Walk {
    /// Containers open, the one being skipped included.
    depth: usize,
    in_string: bool,
}

/// [`container_end`] one byte at a time over `b[i..end]` from `walk`:
/// `Ok` with the offset after the container's end when it is there, else
/// `Err` with where to go on (past `end` by one when an escape straddles it).
fn walk_bytes(b: &[u8], mut i: usize, end: usize, walk: &mut Walk) -> Result<usize, usize> {
    while i < end {
        let c = b[i];
        if walk.in_string {
            match c {
                b'\\' => i += 1,
                b'"' => walk.in_string = false,
                _ => {}
            }
        } else {
            match c {
                b'"' => walk.in_string = true,
                b'{' | b'[' => walk.depth += 1,
                b'}' | b']' => {
                    walk.depth -= 1;
                    if walk.depth == 0 {
                        return Ok(i + 1);
                    }
                }
                _ => {}
            }
        }
        i += 1;
    }
    Err(i)
}

/// [`container_end`] one byte at a time (off x86-64, and the tests'
/// reference for the block walk).
#[cfg(any(test, not(target_arch = "x86_64")))]
fn container_end_scalar(b: &[u8], start: usize) -> Option<usize> {
    let mut walk = Walk {
        depth: 1,
        in_string: false,
    };
    walk_bytes(b, start, b.len(), &mut walk).ok()
}

/// [`container_end`] 32 bytes at a time with SSE2 (part of every x86-64
/// CPU): a block's quotes give, by a prefix XOR, which of its bytes lie
/// inside strings; only brackets outside strings are then looked at, one by
/// one. A block holding a backslash is walked byte by byte (escapes are
/// rare in records), and so is the tail shorter than a block.
#[cfg(target_arch = "x86_64")]
fn container_end_sse2(b: &[u8], start: usize) -> Option<usize> {
    use std::arch::x86_64::*;
    let mut i = start;
    let mut walk = Walk {
        depth: 1,
        in_string: false,
    };
    while i + 32 <= b.len() {
        // SAFETY: SSE2 is part of x86-64; the two unaligned 16-byte loads
        // read b[i..i + 32], which the loop condition keeps in bounds.
        let (quotes, backslashes, opens, closes) = unsafe {
            let eq = |v: __m128i, c: u8| {
                _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(c as i8))) as u32
            };
            let lo = _mm_loadu_si128(b.as_ptr().add(i) as *const __m128i);
            let hi = _mm_loadu_si128(b.as_ptr().add(i + 16) as *const __m128i);
            let mask = |c: u8| eq(lo, c) | (eq(hi, c) << 16);
            // `{` and `[` differ only in bit 5, as do `}` and `]`: one
            // compare of the byte with that bit set finds both.
            let lo_case = _mm_or_si128(lo, _mm_set1_epi8(0x20));
            let hi_case = _mm_or_si128(hi, _mm_set1_epi8(0x20));
            let either = |c: u8| eq(lo_case, c) | (eq(hi_case, c) << 16);
            (mask(b'"'), mask(b'\\'), either(b'{'), either(b'}'))
        };
        if backslashes != 0 {
            match walk_bytes(b, i, i + 32, &mut walk) {
                Ok(end) => return Some(end),
                Err(next) => i = next,
            }
            continue;
        }
        // Bit k set: byte k is inside a string (an opening quote counts as
        // inside, a closing one as outside; neither is a bracket).
        let mut inside = quotes;
        inside ^= inside << 1;
        inside ^= inside << 2;
        inside ^= inside << 4;
        inside ^= inside << 8;
        inside ^= inside << 16;
        if walk.in_string {
            inside = !inside;
        }
        walk.in_string = inside >> 31 == 1;
        let mut brackets = (opens | closes) & !inside;
        while brackets != 0 {
            let k = brackets.trailing_zeros();
            brackets &= brackets - 1;
            if opens >> k & 1 == 1 {
                walk.depth += 1;
            } else {
                walk.depth -= 1;
                if walk.depth == 0 {
                    return Some(i + k as usize + 1);
                }
            }
        }
        i += 32;
    }
    walk_bytes(b, i, b.len(), &mut walk).ok()
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

    #[test]
    fn container_ends_agree_with_the_byte_by_byte_walk() {
        // Blocks with and without escapes, brackets inside strings, quotes
        // and escapes across the 32-byte block edges, deep nesting.
        let mut texts = vec![
            r#"{"a":"}","b":["]",{"c":"\\"}],"d":"\"}"}"#.to_string(),
            format!(
                r#"{{"x":"{}\"{}","y":[{}]}}"#,
                "a".repeat(30),
                "b".repeat(40),
                "[".repeat(70) + &"]".repeat(70)
            ),
            format!(
                r#"[{}]"#,
                (0..40)
                    .map(|i| format!(r#"{{"k{i}":"v\\{}"}}"#, "}".repeat(i % 7)))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        ];
        for n in 0..64 {
            texts.push(format!(
                r#"{{"{}":"{}\"","z":{{}}}}"#,
                "q".repeat(n),
                "\\\\".repeat(n % 5)
            ));
        }
        for text in &texts {
            let b = text.as_bytes();
            for start in 0..b.len() {
                if b[start] != b'{' && b[start] != b'[' {
                    continue;
                }
                // Only starts outside strings are real container starts.
                let want = container_end_scalar(b, start + 1);
                if is_outside_strings(b, start) {
                    assert_eq!(container_end(b, start + 1), want, "{text} at {start}");
                }
            }
            assert_eq!(container_end(b, 1), Some(b.len()), "{text}");
            assert_eq!(container_end(&b[..b.len() - 1], 1), None, "{text}");
        }
    }

    #[test]
    fn members_are_found_by_stepping_over_the_others() {
        let text = r#" { "a" : {"id":1,"s":"}"}, "b":[1,{"id":2}], "n": -1.5e3 ,"t":true, "e\u0069":"x\"y", "c":"a,]}\"" , "id" :7 ,"id":8}"#;
        let at = |key: &str| match member(text, key) {
            Member::At(i) => Some(&text[i..i + 1]),
            _ => None,
        };
        assert_eq!(at("a"), Some("{"));
        assert_eq!(at("b"), Some("["));
        assert_eq!(at("n"), Some("-"));
        assert_eq!(at("t"), Some("t"));
        assert_eq!(at("ei"), Some("\""), "an escaped key");
        assert_eq!(at("c"), Some("\""));
        assert_eq!(at("id"), Some("7"), "the first of repeated keys");
        assert_eq!(member(text, "zz"), Member::Missing);
        assert_eq!(member("[1]", "id"), Member::NotAnObject);
        assert_eq!(member(r#"{"a":1"#, "id"), Member::Missing);
        assert_eq!(member(r#"{"a":"#, "id"), Member::Missing);
        assert_eq!(member("", "id"), Member::Missing);
    }

    #[test]
    fn container_ends_agree_on_any_bytes() {
        // The block walk must be the byte walk's exact equal on any input,
        // JSON or not: random texts over the bytes that matter.
        // Half without backslashes, so most blocks take the quote path.
        let alphabets: [&[u8]; 2] = [b"\"\\{}[]a ", b"\"{}[]aaaa"];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let alphabet = alphabets[(next() % 2) as usize];
            let len = (next() % 160) as usize;
            let text: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let start = (next() % (len as u64 + 1)) as usize;
            assert_eq!(
                container_end(&text, start),
                container_end_scalar(&text, start),
                "{:?} from {start}",
                String::from_utf8_lossy(&text)
            );
        }
    }

    fn is_outside_strings(b: &[u8], at: usize) -> bool {
        let mut in_string = false;
        let mut i = 0;
        while i < at {
            match b[i] {
                b'\\' if in_string => i += 1,
                b'"' => in_string = !in_string,
                _ => {}
            }
            i += 1;
        }
        !in_string
    }

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
