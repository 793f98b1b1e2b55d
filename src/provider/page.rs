//! One response body, read without building a tree: its record array as
//! spans of the body's text, and the few values pagination needs (a next
//! cursor, a next URL, a total, a `has_more` flag) read at their pointers.
//!
//! Memory is the body plus eight bytes per record, whatever the records
//! hold; the body is validated as JSON in the same pass.

use std::ops::Range;

use crate::json::{self, Event, Parser, Pointer, SyntaxError};

/// A scalar found at a probed pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Str(String),
    /// A number's raw text.
    Num(String),
    Bool(bool),
    Null,
    /// An object or an array.
    Container,
}

impl Probe {
    /// A string or number as text (cursors and counts come as either).
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Probe::Str(s) | Probe::Num(s) => Some(s),
            _ => None,
        }
    }

    /// A non-negative whole number, from a number or a numeric string.
    pub fn as_count(&self) -> Option<u64> {
        let text = self.as_text()?.trim();
        text.parse::<u64>().ok().or_else(|| {
            text.parse::<f64>()
                .ok()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                .map(|f| f as u64)
        })
    }

    /// `true`/`false`, also written as a string.
    pub fn as_flag(&self) -> Option<bool> {
        match self {
            Probe::Bool(b) => Some(*b),
            Probe::Str(s) if s.eq_ignore_ascii_case("true") => Some(true),
            Probe::Str(s) if s.eq_ignore_ascii_case("false") => Some(false),
            _ => None,
        }
    }
}

/// What the records pointer found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordsProblem {
    Missing,
    NotArray,
}

/// Why a body is not a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanError {
    NotUtf8,
    Syntax(SyntaxError),
    Records(RecordsProblem),
}

/// A page: the body's text, where each record is in it, and the probes.
#[derive(Debug)]
pub struct Page {
    /// The (redacted) URL it came from, for errors about its records.
    pub url: String,
    text: String,
    records: Vec<Range<usize>>,
    probes: Vec<Option<Probe>>,
}

impl Page {
    /// Each record's JSON text, in page order.
    pub fn records(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.records.iter().map(|r| &self.text[r.clone()])
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The value at the `i`th probed pointer, if the body has one there.
    pub fn probe(&self, i: usize) -> Option<&Probe> {
        self.probes.get(i)?.as_ref()
    }

    /// The last record's text, for cursors taken from it.
    pub fn last_record(&self) -> Option<&str> {
        self.records.last().map(|r| &self.text[r.clone()])
    }

    /// The whole body (for the repeated-page guard).
    pub fn body(&self) -> &str {
        &self.text
    }
}

/// Per open container: which pointers still match the path to it, and, for
/// the record array itself, that its elements are records.
#[derive(Clone, Copy)]
struct Frame {
    object: bool,
    next_index: usize,
    mask: u64,
    records: bool,
}

/// Reads `body` as a page: the array at `records` (`null` counts as empty)
/// and the values at each of `probes` (at most 62).
pub fn scan(body: Vec<u8>, records: &Pointer, probes: &[&Pointer]) -> Result<Page, ScanError> {
    let text = String::from_utf8(body).map_err(|_| ScanError::NotUtf8)?;
    let walked = walk(&text, Some(records), probes).map_err(ScanError::Syntax)?;
    match walked.records {
        None => Err(ScanError::Records(RecordsProblem::Missing)),
        Some(Err(problem)) => Err(ScanError::Records(problem)),
        Some(Ok(())) => Ok(Page {
            url: String::new(),
            text,
            records: walked.spans,
            probes: walked.probes,
        }),
    }
}

/// Reads one value at `pointer` inside a single JSON text (a record), for
/// cursors taken from the last record of a page.
pub fn value_at(text: &str, pointer: &Pointer) -> Option<Probe> {
    walk(text, None, &[pointer]).ok()?.probes.pop().flatten()
}

struct Walked {
    spans: Vec<Range<usize>>,
    records: Option<Result<(), RecordsProblem>>,
    probes: Vec<Option<Probe>>,
}

/// One pass over `text`: the record array's element spans (when `records`
/// is given) and the values at `probes`.
fn walk(text: &str, records: Option<&Pointer>, probes: &[&Pointer]) -> Result<Walked, SyntaxError> {
    // Bit 0 is the records pointer (masked out when there is none), bits
    // 1.. the probes.
    let root = Pointer::default();
    let pointers: Vec<&Pointer> = std::iter::once(records.unwrap_or(&root))
        .chain(probes.iter().copied())
        .collect();
    let mut found: Vec<Option<Probe>> = vec![None; probes.len()];
    let mut spans: Vec<Range<usize>> = Vec::new();
    let mut records_state: Option<Result<(), RecordsProblem>> = None;
    let mut frames: Vec<Frame> = Vec::new();
    let mut parser = Parser::new(text);
    let mask_where = |keep: &dyn Fn(&Pointer) -> bool| {
        pointers
            .iter()
            .enumerate()
            .filter(|(_, p)| keep(p))
            .fold(0u64, |m, (i, _)| m | 1 << i)
    };
    let wanted = if records.is_some() { !0 } else { !1 };
    let mut exact = mask_where(&|p| p.is_root()) & wanted;
    let mut child_mask = mask_where(&|p| !p.is_root()) & wanted;
    let step = |mask: u64, depth: usize, matches: &dyn Fn(&str) -> bool| {
        let (mut exact, mut deeper) = (0u64, 0u64);
        if mask != 0 {
            for (i, p) in pointers.iter().enumerate() {
                if mask & (1 << i) != 0 && matches(&p.tokens()[depth]) {
                    if p.tokens().len() == depth + 1 {
                        exact |= 1 << i;
                    } else {
                        deeper |= 1 << i;
                    }
                }
            }
        }
        (exact, deeper)
    };
    while let Some((start, event)) = parser.next_event()? {
        match event {
            Event::Key(k) => {
                let frame = *frames.last().expect("a key is inside an object");
                let raw = &text[k.span.start..k.span.end];
                (exact, child_mask) = step(frame.mask, frames.len() - 1, &|t| {
                    json::key_is(raw, k.escaped, t)
                });
                continue;
            }
            Event::EndObject | Event::EndArray => {
                frames.pop();
                continue;
            }
            _ => {}
        }
        // A value starts.
        if let Some(frame) = frames.last_mut()
            && !frame.object
        {
            if frame.records {
                // A record: find its end; nothing inside it is probed, and
                // its grammar is checked when it is canonicalised.
                let end = match event {
                    Event::StartObject | Event::StartArray => parser.skip_container_unchecked()?,
                    _ => parser.pos(),
                };
                spans.push(start..end);
                continue;
            }
            let index = frame.next_index;
            frame.next_index += 1;
            let mask = frame.mask;
            (exact, child_mask) = step(mask, frames.len() - 1, &|t| json::token_is_index(t, index));
        }
        let mut is_records = false;
        if exact & 1 != 0 {
            // A later duplicate key replaces an earlier one, as it would in
            // a parsed object.
            spans.clear();
            records_state = Some(match event {
                Event::StartArray => {
                    is_records = true;
                    Ok(())
                }
                Event::Null => Ok(()),
                _ => Err(RecordsProblem::NotArray),
            });
        }
        for (i, slot) in found.iter_mut().enumerate() {
            if exact & (1 << (i + 1)) != 0 {
                *slot = Some(probe_of(text, &event));
            }
        }
        if matches!(event, Event::StartObject | Event::StartArray) {
            if child_mask == 0 && !is_records {
                // Nothing of interest below: skip it in one go.
                parser.skip_container()?;
            } else {
                frames.push(Frame {
                    object: event == Event::StartObject,
                    next_index: 0,
                    mask: child_mask,
                    records: is_records,
                });
            }
        }
        exact = 0;
        child_mask = 0;
    }
    Ok(Walked {
        spans,
        records: records_state,
        probes: found,
    })
}

fn probe_of(text: &str, event: &Event) -> Probe {
    match event {
        Event::Str(s) => Probe::Str(
            json::decode(&text[s.span.start..s.span.end], s.escaped)
                .map(|c| c.into_owned())
                .unwrap_or_default(),
        ),
        Event::Num(n) => Probe::Num(text[n.start..n.end].to_string()),
        Event::Bool(b) => Probe::Bool(*b),
        Event::Null => Probe::Null,
        _ => Probe::Container,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pointer {
        Pointer::parse(s).unwrap()
    }

    fn texts(page: &Page) -> Vec<&str> {
        page.records().collect()
    }

    #[test]
    fn records_are_spans_of_the_body_and_probes_are_read() {
        let body = br#"{"meta":{"next":"c2","count":3,"more":true},"data":[{"id":1,"x":[1,{"a":"}"}]},2,"s",null],"z":{"data":[9]}}"#;
        let page = scan(
            body.to_vec(),
            &p("/data"),
            &[
                &p("/meta/next"),
                &p("/meta/count"),
                &p("/meta/more"),
                &p("/absent"),
            ],
        )
        .unwrap();
        assert_eq!(
            texts(&page),
            [r#"{"id":1,"x":[1,{"a":"}"}]}"#, "2", "\"s\"", "null"]
        );
        assert_eq!(page.probe(0), Some(&Probe::Str("c2".into())));
        assert_eq!(page.probe(1).and_then(Probe::as_count), Some(3));
        assert_eq!(page.probe(2).and_then(Probe::as_flag), Some(true));
        assert_eq!(page.probe(3), None);
        assert_eq!(page.last_record(), Some("null"));
    }

    #[test]
    fn a_bare_array_null_and_wrong_shapes() {
        let page = scan(b" [ {\"id\":1} , {\"id\":2} ] ".to_vec(), &p(""), &[]).unwrap();
        assert_eq!(texts(&page), [r#"{"id":1}"#, r#"{"id":2}"#]);
        assert!(
            scan(br#"{"data":null}"#.to_vec(), &p("/data"), &[])
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            scan(br#"{"data":{}}"#.to_vec(), &p("/data"), &[]).unwrap_err(),
            ScanError::Records(RecordsProblem::NotArray)
        );
        assert_eq!(
            scan(br#"{"x":[]}"#.to_vec(), &p("/data"), &[]).unwrap_err(),
            ScanError::Records(RecordsProblem::Missing)
        );
        assert!(
            matches!(scan(br#"{"data":[1,"#.to_vec(), &p("/data"), &[]), Err(ScanError::Syntax(e)) if e.is_eof())
        );
        assert_eq!(
            scan(vec![b'[', 0xff, b']'], &p(""), &[]).unwrap_err(),
            ScanError::NotUtf8
        );
    }

    #[test]
    fn records_pointers_go_through_arrays_and_escaped_keys() {
        let body = br#"{"r":[{"a/b":{"items":[{"id":7}]}}]}"#;
        let page = scan(body.to_vec(), &p("/r/0/a~1b/items"), &[]).unwrap();
        assert_eq!(texts(&page), [r#"{"id":7}"#]);
    }

    #[test]
    fn deep_records_do_not_recurse() {
        let deep = format!("[{}{}]", "[".repeat(200_000), "]".repeat(200_000));
        let page = scan(deep.into_bytes(), &p(""), &[]).unwrap();
        assert_eq!(page.len(), 1);
    }

    #[test]
    fn a_value_can_be_read_from_one_record() {
        assert_eq!(
            value_at(r#"{"id":"abc","n":{"k":5}}"#, &p("/id")),
            Some(Probe::Str("abc".into()))
        );
        assert_eq!(
            value_at(r#"{"id":"abc","n":{"k":5}}"#, &p("/n/k")),
            Some(Probe::Num("5".into()))
        );
        assert_eq!(value_at(r#"{"id":"abc"}"#, &p("/missing")), None);
    }
}
