//! Change detection, as pure functions: the canonical hash of a record, its
//! id, and the rules that turn (stored hash, new hash) into created / updated
//! / unchanged and a complete scan's missing ids into deletions.
//!
//! The canonical form is RFC 8785 (JCS, scalars via `serde_jcs`): object keys
//! sorted by UTF-16 code units, no insignificant whitespace, strings with
//! minimal escaping, and numbers in their ECMAScript shortest form, so `1`,
//! `1.0` and `1e0` are all `1`, `0.1e1` is `1` and `-0` is `0`. One departure
//! from JCS: an integer beyond 2^53 that fits in 64 bits keeps its exact
//! digits instead of being rounded to a double, so an id or a nanosecond
//! timestamp that changes by one is still a change (the same value written
//! as a fraction, `9007199254740993.0`, is the double it parses to). Fields
//! listed in `ignore` are removed before hashing.

use hmac::{KeyInit, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// 32 bytes of SHA-256 (or HMAC-SHA256) over the canonical record.
pub type Hash = [u8; 32];

/// Hashes records, keyed or not. Exists so the `hash_key_file` choice is made
/// once, not per record.
#[derive(Clone)]
pub struct Hasher {
    key: Option<Vec<u8>>,
}

impl Hasher {
    pub fn new(key: Option<&[u8]>) -> Self {
        Hasher {
            key: key.map(<[u8]>::to_vec),
        }
    }

    /// Names the hash function without revealing the key: `sha256`, or
    /// `hmac-sha256:` and a short digest of the key.
    pub fn scheme(&self) -> String {
        match &self.key {
            None => "sha256".into(),
            Some(k) => {
                let id = Sha256::new()
                    .chain_update(b"synthd hash key id\0")
                    .chain_update(k)
                    .finalize();
                format!("hmac-sha256:{}", crate::signing::hex(&id[..8]))
            }
        }
    }

    pub fn hash(&self, value: &Value) -> Hash {
        let canonical = canonical_json(value);
        match &self.key {
            None => Sha256::digest(&canonical).into(),
            Some(k) => {
                let mut mac = hmac::Hmac::<Sha256>::new_from_slice(k).expect("any key length");
                mac.update(&canonical);
                mac.finalize().into_bytes().into()
            }
        }
    }
}

/// RFC 8785 bytes of `value`, with exact large integers (see the module doc).
pub fn canonical_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_canonical(value, &mut out);
    out
}

/// Integers up to this magnitude are exact as doubles; JCS rounds larger ones.
const EXACT_IN_DOUBLE: u64 = 1 << 53;

fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_jcs::to_writer(&mut *out, key.as_str()).expect("a string always serialises");
                out.push(b':');
                write_canonical(item, out);
            }
            out.push(b'}');
        }
        Value::Number(n)
            if n.as_u64().is_some_and(|u| u > EXACT_IN_DOUBLE)
                || n.as_i64()
                    .is_some_and(|i| i.unsigned_abs() > EXACT_IN_DOUBLE) =>
        {
            out.extend_from_slice(n.to_string().as_bytes());
        }
        scalar => serde_jcs::to_writer(out, scalar).expect("a serde_json::Value always serialises"),
    }
}

/// What one record came down to: its id and hash. Nothing else of the record
/// leaves this module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordDigest {
    pub id: String,
    pub hash: Hash,
}

/// A record that cannot be tracked. The message names the pointer and the
/// position, never a field value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record {index} has no id at {pointer:?}")]
    MissingId { index: usize, pointer: String },
    #[error("record {index} has an id at {pointer:?} that is {kind}, not a string or number")]
    BadId {
        index: usize,
        pointer: String,
        kind: &'static str,
    },
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "an empty string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Id and hash of one record; `index` is its position on the page, for errors.
pub fn digest(
    mut record: Value,
    index: usize,
    id_pointer: &str,
    ignore: &[String],
    hasher: &Hasher,
) -> Result<RecordDigest, RecordError> {
    let id = match record.pointer(id_pointer) {
        None => {
            return Err(RecordError::MissingId {
                index,
                pointer: id_pointer.to_string(),
            });
        }
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => {
            return Err(RecordError::BadId {
                index,
                pointer: id_pointer.to_string(),
                kind: kind_of(other),
            });
        }
    };
    for pointer in ignore {
        remove_pointer(&mut record, pointer);
    }
    Ok(RecordDigest {
        id,
        hash: hasher.hash(&record),
    })
}

/// Removes the value at a JSON pointer, if present.
fn remove_pointer(value: &mut Value, pointer: &str) {
    let Some((parent, last)) = pointer.rsplit_once('/') else {
        return;
    };
    let last = last.replace("~1", "/").replace("~0", "~");
    let parent = if parent.is_empty() {
        Some(value)
    } else {
        value.pointer_mut(parent)
    };
    match parent {
        Some(Value::Object(map)) => {
            map.remove(&last);
        }
        Some(Value::Array(items)) => {
            if let Ok(i) = last.parse::<usize>()
                && i < items.len()
            {
                items.remove(i);
            }
        }
        _ => {}
    }
}

/// How a record seen in a scan compares with what the store knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Created,
    Updated,
    Unchanged,
    /// Already seen earlier in this same scan (a provider repeating a record
    /// across pages). Counted and otherwise ignored.
    Duplicate,
}

/// What the store knows about a record id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known {
    pub hash: Hash,
    pub seen_scan: i64,
}

pub fn classify(known: Option<Known>, new_hash: &Hash, scan: i64) -> Change {
    match known {
        None => Change::Created,
        Some(k) if k.seen_scan == scan => Change::Duplicate,
        Some(k) if &k.hash != new_hash => Change::Updated,
        Some(_) => Change::Unchanged,
    }
}

/// What to do with the ids a complete scan did not see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteDecision {
    /// Delete them and emit `deleted` events.
    Apply,
    /// Mass-deletion guard: keep them until the next consecutive complete
    /// scan confirms.
    Hold,
}

/// More than half of the known records (and more than 10) missing at once
/// is held for confirmation unless the previous complete scan already held.
pub fn deletion_decision(known: u64, missing: u64, previous_scan_held: bool) -> DeleteDecision {
    let massive = missing > 10 && missing * 2 > known;
    if massive && !previous_scan_held {
        DeleteDecision::Hold
    } else {
        DeleteDecision::Apply
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn h(v: &Value) -> Hash {
        Hasher::new(None).hash(v)
    }

    #[test]
    fn key_order_and_whitespace_do_not_change_the_hash() {
        let a: Value = serde_json::from_str(r#"{"a":1,"b":{"x":[1,2],"y":"z"}}"#).unwrap();
        let b: Value =
            serde_json::from_str("{ \"b\" : { \"y\":\"z\", \"x\":[1, 2] },\n \"a\" : 1 }").unwrap();
        assert_eq!(h(&a), h(&b));
    }

    #[test]
    fn numbers_hash_in_their_canonical_form() {
        let one: Value = serde_json::from_str(r#"{"n":1}"#).unwrap();
        for same in [r#"{"n":1.0}"#, r#"{"n":1e0}"#, r#"{"n":0.1e1}"#] {
            let v: Value = serde_json::from_str(same).unwrap();
            assert_eq!(canonical_json(&v), br#"{"n":1}"#, "{same}");
            assert_eq!(h(&v), h(&one), "{same}");
        }
        let other: Value = serde_json::from_str(r#"{"n":1.5}"#).unwrap();
        assert_ne!(h(&other), h(&one));
    }

    #[test]
    fn large_integers_keep_every_digit() {
        let a: Value = serde_json::from_str(r#"{"n":9007199254740993}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"n":9007199254740992}"#).unwrap();
        assert_eq!(canonical_json(&a), br#"{"n":9007199254740993}"#);
        assert_ne!(h(&a), h(&b));
        let min: Value = serde_json::from_str(r#"[-9223372036854775808]"#).unwrap();
        assert_eq!(canonical_json(&min), b"[-9223372036854775808]");
    }

    #[test]
    fn any_value_change_changes_the_hash() {
        let base = json!({"name": "Ada", "tags": ["a"], "nested": {"k": true}});
        for changed in [
            json!({"name": "Ada ", "tags": ["a"], "nested": {"k": true}}),
            json!({"name": "Ada", "tags": ["a", "b"], "nested": {"k": true}}),
            json!({"name": "Ada", "tags": ["a"], "nested": {"k": false}}),
            json!({"name": "Ada", "tags": ["a"], "nested": {"k": true}, "extra": null}),
            json!({"name": "Ada", "tags": ["a"]}),
        ] {
            assert_ne!(h(&base), h(&changed), "{changed}");
        }
    }

    #[test]
    fn scheme_names_the_key_without_revealing_it() {
        assert_eq!(Hasher::new(None).scheme(), "sha256");
        let a = Hasher::new(Some(b"0123456789abcdef")).scheme();
        assert!(a.starts_with("hmac-sha256:") && !a.contains("0123456789abcdef"));
        assert_ne!(a, Hasher::new(Some(b"0123456789abcdeX")).scheme());
    }

    #[test]
    fn keyed_hash_differs_from_plain() {
        let v = json!({"a": 1});
        assert_ne!(Hasher::new(Some(b"k")).hash(&v), h(&v));
        assert_eq!(
            Hasher::new(Some(b"k")).hash(&v),
            Hasher::new(Some(b"k")).hash(&v)
        );
    }

    #[test]
    fn ignored_fields_do_not_count() {
        let hasher = Hasher::new(None);
        let ignore = vec!["/last_seen_at".to_string(), "/meta/etag".to_string()];
        let a = json!({"id": 1, "n": "x", "last_seen_at": "t1", "meta": {"etag": "1", "v": 2}});
        let b = json!({"id": 1, "n": "x", "last_seen_at": "t2", "meta": {"etag": "2", "v": 2}});
        let c = json!({"id": 1, "n": "y", "last_seen_at": "t2", "meta": {"etag": "2", "v": 2}});
        let da = digest(a, 0, "/id", &ignore, &hasher).unwrap();
        let db = digest(b, 0, "/id", &ignore, &hasher).unwrap();
        let dc = digest(c, 0, "/id", &ignore, &hasher).unwrap();
        assert_eq!(da.hash, db.hash);
        assert_ne!(da.hash, dc.hash);
        assert_eq!(da.id, "1");
    }

    #[test]
    fn ids_are_strings_or_numbers() {
        let hasher = Hasher::new(None);
        let d = digest(json!({"emp": {"id": "E-7"}}), 0, "/emp/id", &[], &hasher).unwrap();
        assert_eq!(d.id, "E-7");
        assert_eq!(
            digest(json!({"x": 1}), 3, "/id", &[], &hasher),
            Err(RecordError::MissingId {
                index: 3,
                pointer: "/id".into()
            })
        );
        let err = digest(json!({"id": {"secret": "v"}}), 0, "/id", &[], &hasher).unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
        assert!(digest(json!({"id": ""}), 0, "/id", &[], &hasher).is_err());
    }

    #[test]
    fn classification_follows_the_rules() {
        let a = [1u8; 32];
        let b = [2u8; 32];
        assert_eq!(classify(None, &a, 5), Change::Created);
        assert_eq!(
            classify(
                Some(Known {
                    hash: a,
                    seen_scan: 4
                }),
                &a,
                5
            ),
            Change::Unchanged
        );
        assert_eq!(
            classify(
                Some(Known {
                    hash: a,
                    seen_scan: 4
                }),
                &b,
                5
            ),
            Change::Updated
        );
        assert_eq!(
            classify(
                Some(Known {
                    hash: a,
                    seen_scan: 5
                }),
                &b,
                5
            ),
            Change::Duplicate
        );
    }

    #[test]
    fn mass_deletion_is_held_once() {
        assert_eq!(deletion_decision(100, 10, false), DeleteDecision::Apply);
        assert_eq!(deletion_decision(100, 50, false), DeleteDecision::Apply);
        assert_eq!(deletion_decision(100, 51, false), DeleteDecision::Hold);
        assert_eq!(deletion_decision(100, 51, true), DeleteDecision::Apply);
        // Small sets are never held: 10 of 12 is fine.
        assert_eq!(deletion_decision(12, 10, false), DeleteDecision::Apply);
        assert_eq!(deletion_decision(12, 11, false), DeleteDecision::Hold);
    }
}
