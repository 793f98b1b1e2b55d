//! The canonical form of one record, written in a single pass over its raw
//! text: RFC 8785 (JCS) with exact large integers, minus the `ignore`d
//! fields, plus the record's id read on the way.
//!
//! The output is byte for byte what `serde_jcs` wrote over a parsed
//! `serde_json::Value` before this writer existed (a property test holds the
//! two together), so stored hashes stay valid. It also covers what that
//! path refused: nesting deeper than 128 levels, lone surrogates (written
//! as a lowercase `\udxxx` escape) and numbers beyond the double range
//! (written as their normalised decimal, `1e+400`).
//!
//! Objects are written member by member into one buffer; when an object
//! closes, its members are put in key order (UTF-16 code units, as JCS
//! says) only if they were not already in it, and a repeated key keeps its
//! last value, as a JSON object read into a map does.

use crate::json::{self, Event, Parser, Piece, Pointer, Str};

/// Deeper records are refused (counted and skipped) rather than tracked:
/// the writer keeps a few words per open level.
pub const MAX_DEPTH: usize = 10_000;

/// What shapes a record's hash and id besides its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    pub id: Pointer,
    /// At most [`MAX_IGNORE`] pointers.
    pub ignore: Vec<Pointer>,
}

/// Pointers are tracked in a 64-bit mask: bit 0 is the id, the rest ignores.
pub const MAX_IGNORE: usize = 63;

/// The id found at the id pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdValue {
    Text(String),
    /// A number, in its canonical text (`1`, `1.0` and `1e0` are all `1`).
    Number(String),
    /// Anything else: its kind, for the error message.
    Other(&'static str),
}

/// Why a record could not be canonicalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Nested deeper than [`MAX_DEPTH`]; carries the id if it was found
    /// outside the deep part.
    TooDeep(Option<IdValue>),
    Syntax(json::SyntaxError),
}

#[derive(Debug, Clone, Copy)]
struct Frame {
    object: bool,
    /// Where this container's `{` or `[` is in `out`.
    out_start: usize,
    /// Objects: where this object's members begin in `members`.
    members_start: usize,
    /// Arrays: the index of the next element.
    next_index: usize,
    /// Pointers whose tokens match the path down to this container.
    mask: u64,
}

/// One member of an open object: spans of `"key"` and of the value in `out`.
#[derive(Debug, Clone, Copy)]
struct Member {
    key: (usize, usize),
    end: usize,
    /// The key's text has no escape and no character at or above U+E000,
    /// so byte order is UTF-16 order.
    simple: bool,
}

/// What is known about the value that comes next.
#[derive(Debug, Clone, Copy, Default)]
struct Next {
    skip: bool,
    id: bool,
    mask: u64,
}

/// Reusable buffers for canonicalising records one after another.
#[derive(Default)]
pub struct Canonicalizer {
    out: Vec<u8>,
    tmp: Vec<u8>,
    frames: Vec<Frame>,
    members: Vec<Member>,
    order: Vec<usize>,
}

impl Canonicalizer {
    /// The canonical bytes of `record` (valid until the next call) and the
    /// value at the shape's id pointer, if any.
    pub fn write(
        &mut self,
        record: &str,
        shape: &Shape,
    ) -> Result<(&[u8], Option<IdValue>), Refusal> {
        self.out.clear();
        self.frames.clear();
        self.members.clear();
        let pointers: Vec<&Pointer> = std::iter::once(&shape.id).chain(&shape.ignore).collect();
        let mut id = None;
        let mut too_deep = false;
        let mut parser = Parser::new(record);
        let root_mask = mask_of(&pointers, |p| !p.is_root());
        let mut next = Next {
            skip: false,
            id: shape.id.is_root(),
            mask: root_mask,
        };
        while let Some((_, event)) = parser.next_event().map_err(Refusal::Syntax)? {
            match event {
                Event::Key(key) => {
                    let frame = *self.frames.last().expect("a key is inside an object");
                    next = self.child(&pointers, frame.mask, |t| {
                        json::key_is(&record[key.span.start..key.span.end], key.escaped, t)
                    });
                    if next.skip {
                        continue;
                    }
                    if self.members.len() > frame.members_start {
                        self.out.push(b',');
                    }
                    let start = self.out.len();
                    write_str(record, key, &mut self.out);
                    let end = self.out.len();
                    self.out.push(b':');
                    let simple = !self.out[start + 1..end - 1]
                        .iter()
                        .any(|&c| c == b'\\' || c >= 0xEE);
                    self.members.push(Member {
                        key: (start, end),
                        end: 0,
                        simple,
                    });
                }
                Event::EndObject => {
                    self.close_object();
                    self.value_done();
                }
                Event::EndArray => {
                    self.out.push(b']');
                    self.frames.pop();
                    self.value_done();
                }
                value => {
                    if let Some(frame) = self.frames.last_mut()
                        && !frame.object
                    {
                        let index = frame.next_index;
                        frame.next_index += 1;
                        let mask = frame.mask;
                        next = self.child(&pointers, mask, |t| json::token_is_index(t, index));
                        if !next.skip && index > 0 && self.element_written_before() {
                            self.out.push(b',');
                        }
                    }
                    if next.id {
                        id = Some(id_value(record, &value));
                    }
                    let container = matches!(value, Event::StartObject | Event::StartArray);
                    if next.skip {
                        if container {
                            parser.skip_container().map_err(Refusal::Syntax)?;
                        }
                        continue;
                    }
                    if container && self.frames.len() >= MAX_DEPTH {
                        // Keep reading (the id may come later) but write
                        // nothing more: this record cannot be hashed.
                        too_deep = true;
                        parser.skip_container().map_err(Refusal::Syntax)?;
                        continue;
                    }
                    if container {
                        let object = value == Event::StartObject;
                        self.frames.push(Frame {
                            object,
                            out_start: self.out.len(),
                            members_start: self.members.len(),
                            next_index: 0,
                            mask: next.mask,
                        });
                        self.out.push(if object { b'{' } else { b'[' });
                    } else {
                        write_scalar(record, &value, &mut self.out);
                        self.value_done();
                    }
                }
            }
        }
        if too_deep {
            return Err(Refusal::TooDeep(id));
        }
        Ok((&self.out, id))
    }

    /// The first value at `id`, without writing the canonical form and
    /// without reading the rest of the record: for the raw-bytes fast path.
    /// That path trusts the answer only when the record's bytes hash to
    /// what is stored under this id, i.e. when these exact bytes already
    /// went through [`write`](Self::write) and gave this id. So where the
    /// two could disagree (a repeated key on the path, where `write` keeps
    /// the last value; text that is not JSON, since containers off the path
    /// are stepped over unchecked) the stored hash cannot match and the
    /// record simply takes the slow path. `None` means the same.
    pub fn read_id(&mut self, record: &str, id: &Pointer) -> Option<IdValue> {
        let tokens = id.tokens();
        // Through objects only (the usual case), member by member: the
        // members before the id are stepped over, not read.
        let mut at = 0;
        let mut through_objects = true;
        for token in tokens {
            match json::member(&record[at..], token) {
                json::Member::At(i) => at += i,
                json::Member::Missing => return None,
                json::Member::NotAnObject => {
                    through_objects = false;
                    break;
                }
            }
        }
        if through_objects {
            let value = &record[at..];
            let (_, event) = Parser::new(value).next_event().ok()??;
            return Some(id_value(value, &event));
        }
        let mut parser = Parser::new(record);
        // The open containers on the pointer's path (each one is at
        // `tokens[..depth]`): an array's next index, or `OBJECT`.
        const OBJECT: usize = usize::MAX;
        let path = &mut self.order;
        path.clear();
        let mut key_matches = false;
        loop {
            let (_, event) = parser.next_event().ok()??;
            match event {
                Event::Key(key) => {
                    key_matches = json::key_is(
                        &record[key.span.start..key.span.end],
                        key.escaped,
                        &tokens[path.len() - 1],
                    );
                }
                Event::EndObject | Event::EndArray => {
                    path.pop();
                    if path.is_empty() {
                        return None;
                    }
                }
                value => {
                    let depth = path.len();
                    let on_path = match path.last_mut() {
                        None => true,
                        Some(&mut OBJECT) => key_matches,
                        Some(index) => {
                            *index += 1;
                            json::token_is_index(&tokens[depth - 1], *index - 1)
                        }
                    };
                    let container = matches!(value, Event::StartObject | Event::StartArray);
                    if on_path && depth == tokens.len() {
                        return Some(id_value(record, &value));
                    } else if on_path && container {
                        path.push(if value == Event::StartObject {
                            OBJECT
                        } else {
                            0
                        });
                        continue;
                    }
                    if depth == 0 {
                        return None;
                    }
                    if container {
                        parser.skip_container_unchecked().ok()?;
                    }
                }
            }
        }
    }

    /// Whether the open array already has an element in `out` (an ignored
    /// first element leaves it empty, so the next one needs no comma).
    fn element_written_before(&self) -> bool {
        let frame = self.frames.last().expect("inside an array");
        self.out.len() > frame.out_start + 1
    }

    /// What the pointers say about a child of a container with `mask`,
    /// reached through a token that `matches`.
    fn child(&self, pointers: &[&Pointer], mask: u64, matches: impl Fn(&str) -> bool) -> Next {
        let mut next = Next::default();
        if mask == 0 {
            return next;
        }
        let depth = self.frames.len() - 1;
        for (i, p) in pointers.iter().enumerate() {
            if mask & (1 << i) == 0 || !matches(&p.tokens()[depth]) {
                continue;
            }
            if p.tokens().len() == depth + 1 {
                if i == 0 {
                    next.id = true;
                } else {
                    next.skip = true;
                }
            } else {
                next.mask |= 1 << i;
            }
        }
        next
    }

    /// A value just ended: if it was an object member, note where.
    fn value_done(&mut self) {
        if let Some(frame) = self.frames.last()
            && frame.object
        {
            let end = self.out.len();
            if let Some(m) = self.members.last_mut() {
                m.end = end;
            }
        }
    }

    fn close_object(&mut self) {
        let frame = self.frames.pop().expect("an object is open");
        let members = &self.members[frame.members_start..];
        let out = &self.out;
        let key = |m: &Member| &out[m.key.0 + 1..m.key.1 - 1];
        let order = |a: &Member, b: &Member| {
            if a.simple && b.simple {
                key(a).cmp(key(b))
            } else {
                key_order(key(a), key(b))
            }
        };
        let ordered = members
            .windows(2)
            .all(|w| order(&w[0], &w[1]) == std::cmp::Ordering::Less);
        if ordered {
            self.out.push(b'}');
        } else {
            self.order.clear();
            self.order.extend(0..members.len());
            // Stable, so among repeated keys the last one stays last.
            self.order.sort_by(|&a, &b| order(&members[a], &members[b]));
            self.tmp.clear();
            self.tmp.push(b'{');
            for (n, &i) in self.order.iter().enumerate() {
                let repeated = self
                    .order
                    .get(n + 1)
                    .is_some_and(|&j| key(&members[j]) == key(&members[i]));
                if repeated {
                    continue;
                }
                if self.tmp.len() > 1 {
                    self.tmp.push(b',');
                }
                self.tmp
                    .extend_from_slice(&out[members[i].key.0..members[i].end]);
            }
            self.tmp.push(b'}');
            self.out.truncate(frame.out_start);
            self.out.extend_from_slice(&self.tmp);
        }
        self.members.truncate(frame.members_start);
    }
}

fn mask_of(pointers: &[&Pointer], keep: impl Fn(&Pointer) -> bool) -> u64 {
    pointers
        .iter()
        .enumerate()
        .filter(|(_, p)| keep(p))
        .fold(0, |m, (i, _)| m | 1 << i)
}

/// Orders two canonical keys (their text between the quotes) by UTF-16
/// code units. UTF-8 byte order agrees with it unless an escape is involved
/// or a character at or above U+E000 meets one beyond U+FFFF.
fn key_order(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let simple = |k: &[u8]| !k.iter().any(|&c| c == b'\\' || c >= 0xEE);
    if simple(a) && simple(b) {
        return a.cmp(b);
    }
    fn units(k: &[u8]) -> impl Iterator<Item = u16> + '_ {
        let text = std::str::from_utf8(k).expect("canonical keys are UTF-8");
        json::unescape(text).flat_map(|piece| {
            let mut buf = [0u16; 2];
            let units: Vec<u16> = match piece {
                Piece::Text(t) => t.encode_utf16().collect(),
                Piece::Char(c) => c.encode_utf16(&mut buf).to_vec(),
                Piece::Lone(u) => vec![u],
            };
            units
        })
    }
    units(a).cmp(units(b))
}

fn id_value(record: &str, value: &Event) -> IdValue {
    match value {
        Event::Str(s) => match json::decode(&record[s.span.start..s.span.end], s.escaped) {
            Ok(text) if !text.is_empty() => IdValue::Text(text.into_owned()),
            Ok(_) => IdValue::Other("an empty string"),
            Err(_) => IdValue::Other("a string with a lone surrogate"),
        },
        Event::Num(n) => {
            let mut out = Vec::new();
            write_number(&record[n.start..n.end], &mut out);
            IdValue::Number(String::from_utf8(out).expect("numbers are ASCII"))
        }
        Event::Bool(_) => IdValue::Other("a boolean"),
        Event::Null => IdValue::Other("null"),
        Event::StartObject => IdValue::Other("an object"),
        _ => IdValue::Other("an array"),
    }
}

fn write_scalar(record: &str, value: &Event, out: &mut Vec<u8>) {
    match value {
        Event::Str(s) => write_str(record, *s, out),
        Event::Num(n) => write_number(&record[n.start..n.end], out),
        Event::Bool(true) => out.extend_from_slice(b"true"),
        Event::Bool(false) => out.extend_from_slice(b"false"),
        _ => out.extend_from_slice(b"null"),
    }
}

/// A string as JCS writes it: only `"`, `\` and control characters are
/// escaped (`\b \f \n \r \t`, else `\u00xx`), everything else is literal.
fn write_str(record: &str, s: Str, out: &mut Vec<u8>) {
    let raw = &record[s.span.start..s.span.end];
    out.push(b'"');
    if !s.escaped {
        // Unescaped JSON string text holds no quote, backslash or control
        // character: it already is its canonical form.
        out.extend_from_slice(raw.as_bytes());
    } else {
        for piece in json::unescape(raw) {
            match piece {
                Piece::Text(t) => out.extend_from_slice(t.as_bytes()),
                Piece::Char(c) => write_char(c, out),
                Piece::Lone(u) => out.extend_from_slice(format!("\\u{u:04x}").as_bytes()),
            }
        }
    }
    out.push(b'"');
}

fn write_char(c: char, out: &mut Vec<u8>) {
    match c {
        '"' => out.extend_from_slice(b"\\\""),
        '\\' => out.extend_from_slice(b"\\\\"),
        '\u{8}' => out.extend_from_slice(b"\\b"),
        '\u{c}' => out.extend_from_slice(b"\\f"),
        '\n' => out.extend_from_slice(b"\\n"),
        '\r' => out.extend_from_slice(b"\\r"),
        '\t' => out.extend_from_slice(b"\\t"),
        c if (c as u32) < 0x20 => out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes()),
        c => {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
    }
}

/// Integers up to this magnitude are exact as doubles; JCS rounds larger
/// ones, which would hide a change of one in an id or a nanosecond time.
const EXACT_IN_DOUBLE: u64 = 1 << 53;

/// A number token in its canonical text: ECMAScript's shortest form of the
/// double (`1.0` → `1`, `1e21` → `1e+21`), except that an integer beyond
/// 2^53 that fits in 64 bits keeps its exact digits, and a number beyond
/// the double range is its normalised decimal (`10e399` → `1e+400`).
pub fn write_number(token: &str, out: &mut Vec<u8>) {
    let integer = !token.bytes().any(|c| matches!(c, b'.' | b'e' | b'E'));
    let digits = token.len() - usize::from(token.starts_with('-'));
    if integer && digits <= 15 {
        // Below 10^15 < 2^53: exact as a double, and ECMAScript writes it
        // as its digits, which JSON already has without leading zeros.
        if token == "-0" {
            out.push(b'0');
        } else {
            out.extend_from_slice(token.as_bytes());
        }
        return;
    }
    if integer {
        let big = match token.parse::<i64>() {
            Ok(v) => v.unsigned_abs() > EXACT_IN_DOUBLE,
            Err(_) => token.parse::<u64>().is_ok(),
        };
        if big {
            out.extend_from_slice(token.as_bytes());
            return;
        }
    }
    let value: f64 = token.parse().expect("a JSON number parses as f64");
    if value.is_finite() {
        let mut buf = ryu_js::Buffer::new();
        out.extend_from_slice(buf.format_finite(value).as_bytes());
    } else {
        write_huge(token, out);
    }
}

/// `[-]d[.ddd]e+N` from the token's own digits, for magnitudes no double
/// holds. Equal values give equal text whatever their spelling.
fn write_huge(token: &str, out: &mut Vec<u8>) {
    let (negative, body) = match token.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, token),
    };
    let (mantissa, exp) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], body[i + 1..].parse::<i64>().unwrap_or(i64::MAX)),
        None => (body, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: String = int.chars().chain(frac.chars()).collect();
    let lead = digits.len() - digits.trim_start_matches('0').len();
    let digits = digits.trim_start_matches('0').trim_end_matches('0');
    // The value is 0.d1d2d3… × 10^(len(int) - lead + exp), i.e.
    // d1.d2d3… × 10^(len(int) - lead - 1 + exp).
    let exponent = (int.len() as i64 - lead as i64 - 1).saturating_add(exp);
    if negative {
        out.push(b'-');
    }
    let (first, rest) = digits.split_at(1);
    out.extend_from_slice(first.as_bytes());
    if !rest.is_empty() {
        out.push(b'.');
        out.extend_from_slice(rest.as_bytes());
    }
    out.extend_from_slice(
        format!("e{}{exponent}", if exponent >= 0 { "+" } else { "" }).as_bytes(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(id: &str, ignore: &[&str]) -> Shape {
        Shape {
            id: Pointer::parse(id).unwrap(),
            ignore: ignore.iter().map(|p| Pointer::parse(p).unwrap()).collect(),
        }
    }

    fn canon(text: &str) -> String {
        canon_with(text, &shape("/id", &[])).0
    }

    fn canon_with(text: &str, s: &Shape) -> (String, Option<IdValue>) {
        let mut c = Canonicalizer::default();
        let (bytes, id) = c.write(text, s).unwrap();
        (String::from_utf8(bytes.to_vec()).unwrap(), id)
    }

    #[test]
    fn objects_are_sorted_and_repeated_keys_keep_the_last_value() {
        assert_eq!(
            canon(r#"{"b":1,"a":{"d":[3,{"z":0,"y":1}],"c":2}}"#),
            r#"{"a":{"c":2,"d":[3,{"y":1,"z":0}]},"b":1}"#
        );
        assert_eq!(canon(r#"{"a":1,"b":2,"a":3}"#), r#"{"a":3,"b":2}"#);
        assert_eq!(canon(r#"{"a":1,"\u0061":2}"#), r#"{"a":2}"#);
        assert_eq!(canon(r#"{"a!":1,"a":2}"#), r#"{"a":2,"a!":1}"#);
    }

    #[test]
    fn keys_sort_by_utf16_code_units() {
        // U+FF61 sorts after U+1F600 in UTF-8 bytes' order of code points
        // but before it in UTF-16 (a surrogate pair starts 0xD83D).
        assert_eq!(
            canon("{\"\u{ff61}\":1,\"\u{1f600}\":2}"),
            "{\"\u{1f600}\":2,\"\u{ff61}\":1}"
        );
        // One key plain, the other with an escape: "\n" is U+000A, before
        // "!" (U+0021), although its canonical bytes (`\n`) sort after.
        assert_eq!(canon(r#"{"!":1,"\n":2}"#), r#"{"\n":2,"!":1}"#);
        assert_eq!(canon(r#"{"\n":2,"!":1}"#), r#"{"\n":2,"!":1}"#);
        // One key at U+E000, the other beyond U+FFFF.
        assert_eq!(
            canon("{\"\u{e000}\":1,\"\u{10000}\":2}"),
            "{\"\u{10000}\":2,\"\u{e000}\":1}"
        );
    }

    #[test]
    fn literals_stay_what_they_are() {
        assert_eq!(
            canon(r#"{"t":true,"f":false,"n":null,"l":[true,false,null]}"#),
            r#"{"f":false,"l":[true,false,null],"n":null,"t":true}"#
        );
    }

    #[test]
    fn strings_escape_only_what_jcs_escapes() {
        // U+001F is the last control character; a space is text, even
        // when the provider escaped it.
        assert_eq!(canon(r#"["\u001f\u0020~"]"#), r#"["\u001f ~"]"#);
        assert_eq!(
            canon(r#"["\/\u00e9\u0001\n\"\\\u007f"]"#),
            "[\"/\u{e9}\\u0001\\n\\\"\\\\\u{7f}\"]"
        );
        assert_eq!(
            canon(r#"["\ud800","\uDFFF","\ud83d\ude00"]"#),
            "[\"\\ud800\",\"\\udfff\",\"\u{1f600}\"]"
        );
    }

    #[test]
    fn numbers_take_their_canonical_form() {
        for (n, want) in [
            ("1", "1"),
            ("1.0", "1"),
            ("1e0", "1"),
            ("0.1e1", "1"),
            ("-0", "0"),
            ("1E2", "100"),
            ("1e21", "1e+21"),
            ("0.000001", "0.000001"),
            ("1e-7", "1e-7"),
            ("9007199254740993", "9007199254740993"),
            ("-9223372036854775808", "-9223372036854775808"),
            ("18446744073709551616", "18446744073709552000"),
            ("1e-400", "0"),
            ("1e400", "1e+400"),
            ("10e399", "1e+400"),
            ("-1.50e400", "-1.5e+400"),
            ("0.0001e400", "1e+396"),
            ("0.001e310", "1e+307"),
        ] {
            let mut out = Vec::new();
            write_number(n, &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), want, "{n}");
        }
    }

    #[test]
    fn ignored_fields_vanish_and_ids_are_read_on_the_way() {
        let s = shape("/meta/id", &["/seen", "/meta/etag", "/tags/0"]);
        let (text, id) = canon_with(
            r#"{"seen":"x","meta":{"etag":1,"id":42.0},"tags":["a","b"],"n":{"seen":1}}"#,
            &s,
        );
        assert_eq!(text, r#"{"meta":{"id":42},"n":{"seen":1},"tags":["b"]}"#);
        assert_eq!(id, Some(IdValue::Number("42".into())));
        let (_, id) = canon_with(r#"{"id":"E-7"}"#, &shape("/id", &["/id"]));
        assert_eq!(
            id,
            Some(IdValue::Text("E-7".into())),
            "an ignored id is still the id"
        );
        let (_, id) = canon_with(r#"{"x":1}"#, &shape("/id", &[]));
        assert_eq!(id, None);
        let (_, id) = canon_with(r#"{"id":{"secret":"v"}}"#, &shape("/id", &[]));
        assert_eq!(id, Some(IdValue::Other("an object")));
        // Every kind of unusable id is named as what it is.
        for (record, kind) in [
            (r#"{"id":[1]}"#, "an array"),
            (r#"{"id":true}"#, "a boolean"),
            (r#"{"id":null}"#, "null"),
            (r#"{"id":""}"#, "an empty string"),
        ] {
            let (_, id) = canon_with(record, &shape("/id", &[]));
            assert_eq!(id, Some(IdValue::Other(kind)), "{record}");
        }
    }

    #[test]
    fn deep_records_are_canonical_up_to_the_limit() {
        let deep = format!("{{\"id\":1,\"x\":{}1{}}}", "[".repeat(500), "]".repeat(500));
        assert_eq!(canon(&deep), deep);
        let too_deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        let mut c = Canonicalizer::default();
        assert_eq!(
            c.write(&too_deep, &shape("/id", &[])).err(),
            Some(Refusal::TooDeep(None))
        );
        let with_id = format!("{{\"x\":{},\"id\":7}}", too_deep);
        assert_eq!(
            c.write(&with_id, &shape("/id", &[])).err(),
            Some(Refusal::TooDeep(Some(IdValue::Number("7".into()))))
        );
    }
}
