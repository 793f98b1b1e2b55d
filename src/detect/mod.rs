//! Change detection, as pure functions: the canonical hash of a record, its
//! id, and the rules that turn (stored hash, new hash) into created / updated
//! / unchanged and a complete scan's missing ids into deletions.
//!
//! The canonical form is RFC 8785 (JCS): object keys sorted by UTF-16 code
//! units, no insignificant whitespace, strings with minimal escaping, and
//! numbers in their ECMAScript shortest form, so `1`, `1.0` and `1e0` are all
//! `1`, `0.1e1` is `1` and `-0` is `0`. Two departures from JCS, both for
//! text JCS cannot express: an integer beyond 2^53 that fits in 64 bits
//! keeps its exact digits instead of being rounded to a double (so an id or a
//! nanosecond timestamp that changes by one is still a change), and a number
//! beyond the double range is written as its normalised decimal (`1e+400`).
//! A lone surrogate in a string is written as a lowercase `\udxxx` escape.
//! Fields listed in `ignore` are removed before hashing. See [`canonical`].
//!
//! Record ids have one canonical text too: a string id is itself, a numeric
//! id is its canonical number (`1`, `1.0` and `1e0` are the id `1`).

pub mod canonical;

use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};

use canonical::{Canonicalizer, Refusal};
pub use canonical::{IdValue, Shape};

/// Bumped when the canonical form changes; part of every resource's shape
/// fingerprint, so such a change re-baselines silently instead of
/// announcing every record as updated.
pub const CANONICAL_VERSION: &str = "jcs-exact-int-1";

/// What is stored for a record: the first [`CANONICAL_BYTES`] bytes of
/// SHA-256 (or HMAC-SHA256) over the canonical record, which decide whether
/// it changed, then 8 bytes of a hash of its raw text as the provider sent
/// it ([`Hasher::raw`]), which let a later scan skip canonicalising a record
/// whose bytes are the same (see [`Digester`]).
pub type Hash = [u8; 32];

/// How much of the canonical SHA-256 a [`Hash`] keeps: 192 bits, far beyond
/// any chance of two versions of one record colliding.
pub const CANONICAL_BYTES: usize = 24;

/// The raw-text part of a stored hash.
pub fn raw_part(hash: &Hash) -> u64 {
    u64::from_le_bytes(hash[CANONICAL_BYTES..].try_into().expect("8 bytes"))
}

/// Hashes records, keyed or not. Exists so the `hash_key_file` choice is made
/// once, not per record: the keyed state is set up once and copied.
#[derive(Clone)]
pub struct Hasher {
    key: Option<hmac::Hmac<Sha256>>,
    /// With a hash key, the raw-text hash is keyed too (SipHash-1-3 under a
    /// key derived from it), or it would undo what the key protects.
    raw_key: Option<[u8; 16]>,
    scheme: String,
}

impl Hasher {
    pub fn new(key: Option<&[u8]>) -> Self {
        let scheme = match key {
            None => "sha256".into(),
            Some(k) => {
                let id = Sha256::new()
                    .chain_update(b"synthd hash key id\0")
                    .chain_update(k)
                    .finalize();
                format!("hmac-sha256:{}", crate::signing::hex(&id[..8]))
            }
        };
        let raw_key = key.map(|k| {
            let derived = Sha256::new()
                .chain_update(b"synthd raw hash key\0")
                .chain_update(k)
                .finalize();
            derived[..16].try_into().expect("16 bytes")
        });
        Hasher {
            key: key.map(|k| hmac::Hmac::<Sha256>::new_from_slice(k).expect("any key length")),
            raw_key,
            scheme,
        }
    }

    /// Names the hash function without revealing the key: `sha256`, or
    /// `hmac-sha256:` and a short digest of the key.
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// The hash of canonical bytes.
    pub fn hash(&self, canonical: &[u8]) -> Hash {
        match &self.key {
            None => Sha256::digest(canonical).into(),
            Some(mac) => {
                let mut mac = mac.clone();
                mac.update(canonical);
                mac.finalize().into_bytes().into()
            }
        }
    }

    /// A record's raw text, hashed fast (XXH3, or keyed SipHash-1-3): equal
    /// means the provider sent the very same bytes. Never decides a change
    /// on its own; it only lets an unchanged record skip the canonical form.
    pub fn raw(&self, record: &str) -> u64 {
        match &self.raw_key {
            None => xxhash_rust::xxh3::xxh3_64(record.as_bytes()),
            Some(key) => siphasher::sip::SipHasher13::new_with_key(key).hash(record.as_bytes()),
        }
    }

    /// What is stored for a record: its canonical hash's first
    /// [`CANONICAL_BYTES`], then the hash of its raw text.
    pub fn record_hash(&self, canonical: &[u8], record: &str) -> Hash {
        let mut hash = self.hash(canonical);
        hash[CANONICAL_BYTES..].copy_from_slice(&self.raw(record).to_le_bytes());
        hash
    }
}

/// What one record came down to: its id and hash. Nothing else of the record
/// leaves this module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordDigest {
    pub id: String,
    /// The id was a JSON number (so `1` and `"1"` can be told apart when
    /// both appear in one scan).
    pub numeric: bool,
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
    /// The id is known but the record cannot be hashed (nested deeper than
    /// [`canonical::MAX_DEPTH`]): the record is kept as it was.
    #[error("record {index} (id {id:?}) is nested deeper than {max} levels and cannot be hashed", max = canonical::MAX_DEPTH)]
    Unhashable { index: usize, id: String },
    #[error("record {index} is not valid JSON ({detail})")]
    Syntax { index: usize, detail: String },
}

impl RecordError {
    /// The id of a record that was read but could not be hashed.
    pub fn unhashable_id(&self) -> Option<&str> {
        match self {
            RecordError::Unhashable { id, .. } => Some(id),
            _ => None,
        }
    }
}

/// Digests records of one resource one after another, reusing its buffers.
pub struct Digester {
    shape: Shape,
    hasher: Hasher,
    canon: Canonicalizer,
}

impl Digester {
    pub fn new(shape: Shape, hasher: Hasher) -> Self {
        Digester {
            shape,
            hasher,
            canon: Canonicalizer::default(),
        }
    }

    /// Id and hash of one record given as its JSON text; `index` is its
    /// position on the page, for errors.
    pub fn digest(&mut self, record: &str, index: usize) -> Result<RecordDigest, RecordError> {
        let pointer = || self.shape.id.to_string();
        let written = self.canon.write(record, &self.shape);
        let (canonical, id) = match written {
            Ok(w) => w,
            Err(Refusal::Syntax(e)) => {
                return Err(RecordError::Syntax {
                    index,
                    detail: e.to_string(),
                });
            }
            Err(Refusal::TooDeep(id)) => {
                // The id was still read (deep parts are skipped, not
                // written), so the record is kept as it was, not deleted.
                return Err(match id {
                    Some(IdValue::Text(id) | IdValue::Number(id)) => {
                        RecordError::Unhashable { index, id }
                    }
                    _ => RecordError::MissingId {
                        index,
                        pointer: pointer(),
                    },
                });
            }
        };
        let (id, numeric) = match id {
            None => {
                return Err(RecordError::MissingId {
                    index,
                    pointer: pointer(),
                });
            }
            Some(IdValue::Other(kind)) => {
                return Err(RecordError::BadId {
                    index,
                    pointer: pointer(),
                    kind,
                });
            }
            Some(IdValue::Text(id)) => (id, false),
            Some(IdValue::Number(id)) => (id, true),
        };
        Ok(RecordDigest {
            id,
            numeric,
            hash: self.hasher.record_hash(canonical, record),
        })
    }

    /// The raw-bytes fast path, first half: the record's id and the hash of
    /// its raw text, read without canonicalising. `None` when no usable id
    /// is found (the slow path then says why).
    pub fn identify(&mut self, record: &str) -> Option<Identified> {
        let (id, numeric) = match self.canon.read_id(record, &self.shape.id)? {
            IdValue::Text(id) => (id, false),
            IdValue::Number(id) => (id, true),
            IdValue::Other(_) => return None,
        };
        Some(Identified {
            id,
            numeric,
            raw: self.hasher.raw(record),
        })
    }

    /// The fast path's second half: when the stored hash of the identified
    /// id ends with the same raw-text hash, the provider sent the same bytes
    /// that were digested before, so their digest is the stored one and
    /// the canonical form need not be written again. Otherwise (changed,
    /// new, or only reformatted) the record is digested in full.
    pub fn digest_known(
        &mut self,
        record: &str,
        index: usize,
        known: Option<(&Identified, Option<&Hash>)>,
    ) -> Result<RecordDigest, RecordError> {
        match known {
            Some((seen, Some(stored))) if raw_part(stored) == seen.raw => Ok(RecordDigest {
                id: seen.id.clone(),
                numeric: seen.numeric,
                hash: *stored,
            }),
            _ => self.digest(record, index),
        }
    }
}

/// A record's id and raw-text hash (see [`Digester::identify`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identified {
    pub id: String,
    pub numeric: bool,
    pub raw: u64,
}

/// The ids seen so far in one scan, for duplicates, type collisions and,
/// at the end, deletions (stored ids not seen).
///
/// Each id is kept as a 63-bit keyed hash plus one bit for "was a number":
/// 8 bytes a record (about 18 bytes with the table's slack), however long
/// the ids. The hash keys are drawn at random for every scan, so two ids
/// that collide (about one chance in 10^7 for a million records) do so in
/// one scan only; the effect of a collision is conservative (the second id
/// counts as a repeat: its change waits for the next scan, and the scan
/// deletes nothing).
pub struct SeenIds {
    ids: std::collections::HashSet<u64, std::hash::BuildHasherDefault<PreHashed>>,
    keys: std::collections::hash_map::RandomState,
}

/// How an id compares with the ids seen before it in the same scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sighting {
    First,
    /// The same id again, of the same kind: the listing shifted between
    /// pages, so a record may have been skipped.
    Duplicate,
    /// The same canonical id from a number and from a string (`1`, `"1"`).
    Collision,
}

impl SeenIds {
    /// Room for `expected` ids without growing (a doubling table would
    /// briefly hold both copies).
    pub fn with_capacity(expected: usize) -> Self {
        SeenIds {
            ids: std::collections::HashSet::with_capacity_and_hasher(expected, Default::default()),
            keys: Default::default(),
        }
    }

    fn key(&self, id: &str) -> u64 {
        use std::hash::BuildHasher;
        self.keys.hash_one(id) & !1
    }

    pub fn see(&mut self, id: &str, numeric: bool) -> Sighting {
        let key = self.key(id);
        let (same, other) = if numeric {
            (key | 1, key)
        } else {
            (key, key | 1)
        };
        if self.ids.contains(&other) {
            Sighting::Collision
        } else if !self.ids.insert(same) {
            Sighting::Duplicate
        } else {
            Sighting::First
        }
    }

    /// Whether `id` (as stored: its kind no longer matters) was seen.
    pub fn contains(&self, id: &str) -> bool {
        let key = self.key(id);
        self.ids.contains(&key) || self.ids.contains(&(key | 1))
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// The keys of [`SeenIds`] are already random: hashing them again would
/// only cost time.
#[derive(Default)]
pub struct PreHashed(u64);

impl std::hash::Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed; fold anything else in to stay correct.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// How a record seen in a scan compares with what the store knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Created,
    Updated,
    /// The same content in different bytes (key order, spacing, number
    /// format, or a hash stored before the raw part existed): no event, but
    /// the stored raw part is brought up to date so the next scan is fast.
    Reformatted,
    Unchanged,
}

/// A record is created when its id is not stored, updated when the
/// canonical part of its hash differs from the stored one.
pub fn classify(stored: Option<&Hash>, new_hash: &Hash) -> Change {
    match stored {
        None => Change::Created,
        Some(h) if h[..CANONICAL_BYTES] != new_hash[..CANONICAL_BYTES] => Change::Updated,
        Some(h) if h != new_hash => Change::Reformatted,
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
    use crate::json::Pointer;

    fn shape(id: &str, ignore: &[&str]) -> Shape {
        Shape {
            id: Pointer::parse(id).unwrap(),
            ignore: ignore.iter().map(|p| Pointer::parse(p).unwrap()).collect(),
        }
    }

    fn digest(text: &str) -> RecordDigest {
        Digester::new(shape("/id", &[]), Hasher::new(None))
            .digest(text, 0)
            .unwrap()
    }

    /// The part of the hash that decides a change.
    fn h(text: &str) -> [u8; CANONICAL_BYTES] {
        digest(text).hash[..CANONICAL_BYTES].try_into().unwrap()
    }

    #[test]
    fn key_order_and_whitespace_do_not_change_the_hash() {
        assert_eq!(
            h(r#"{"id":1,"a":1,"b":{"x":[1,2],"y":"z"}}"#),
            h("{ \"b\" : { \"y\":\"z\", \"x\":[1, 2] },\n \"a\" : 1, \"id\": 1 }")
        );
    }

    #[test]
    fn numbers_hash_in_their_canonical_form() {
        let one = h(r#"{"id":1,"n":1}"#);
        for same in [
            r#"{"id":1,"n":1.0}"#,
            r#"{"id":1,"n":1e0}"#,
            r#"{"id":1,"n":0.1e1}"#,
        ] {
            assert_eq!(h(same), one, "{same}");
        }
        assert_ne!(h(r#"{"id":1,"n":1.5}"#), one);
        assert_ne!(
            h(r#"{"id":1,"n":9007199254740993}"#),
            h(r#"{"id":1,"n":9007199254740992}"#)
        );
    }

    #[test]
    fn any_value_change_changes_the_hash() {
        let base = h(r#"{"id":1,"name":"Ada","tags":["a"],"nested":{"k":true}}"#);
        for changed in [
            r#"{"id":1,"name":"Ada ","tags":["a"],"nested":{"k":true}}"#,
            r#"{"id":1,"name":"Ada","tags":["a","b"],"nested":{"k":true}}"#,
            r#"{"id":1,"name":"Ada","tags":["a"],"nested":{"k":false}}"#,
            r#"{"id":1,"name":"Ada","tags":["a"],"nested":{"k":true},"extra":null}"#,
            r#"{"id":1,"name":"Ada","tags":["a"]}"#,
        ] {
            assert_ne!(h(changed), base, "{changed}");
        }
    }

    #[test]
    fn scheme_names_the_key_without_revealing_it() {
        assert_eq!(Hasher::new(None).scheme(), "sha256");
        let a = Hasher::new(Some(b"0123456789abcdef")).scheme().to_string();
        assert!(a.starts_with("hmac-sha256:") && !a.contains("0123456789abcdef"));
        assert_ne!(a, Hasher::new(Some(b"0123456789abcdeX")).scheme());
    }

    #[test]
    fn keyed_hash_differs_from_plain_and_is_stable() {
        let keyed = Hasher::new(Some(b"k"));
        assert_ne!(keyed.hash(b"{}"), Hasher::new(None).hash(b"{}"));
        assert_eq!(keyed.hash(b"{}"), Hasher::new(Some(b"k")).hash(b"{}"));
        assert_eq!(
            keyed.hash(b"{}"),
            keyed.hash(b"{}"),
            "the keyed state is reused, not consumed"
        );
    }

    #[test]
    fn the_raw_part_tells_the_same_bytes_from_a_reformatting() {
        let a = digest(r#"{"id":1,"a":1,"b":[1,2]}"#).hash;
        let reformatted = digest(r#"{ "b": [1, 2], "a": 1.0, "id": 1 }"#).hash;
        let changed = digest(r#"{"id":1,"a":2,"b":[1,2]}"#).hash;
        assert_eq!(a, digest(r#"{"id":1,"a":1,"b":[1,2]}"#).hash);
        assert_eq!(a[..CANONICAL_BYTES], reformatted[..CANONICAL_BYTES]);
        assert_ne!(raw_part(&a), raw_part(&reformatted));
        assert_eq!(classify(None, &a), Change::Created);
        assert_eq!(classify(Some(&a), &a), Change::Unchanged);
        assert_eq!(classify(Some(&a), &reformatted), Change::Reformatted);
        assert_eq!(classify(Some(&a), &changed), Change::Updated);
        // A hash stored before the raw part existed (all 32 bytes canonical)
        // still compares: only a reformatting, never an update.
        let mut old = a;
        old[CANONICAL_BYTES..].copy_from_slice(&[0xAB; 8]);
        assert_eq!(classify(Some(&old), &a), Change::Reformatted);
    }

    #[test]
    fn the_raw_hash_is_keyed_with_the_hash_key() {
        let text = r#"{"id":1}"#;
        let plain = Hasher::new(None).raw(text);
        let keyed = Hasher::new(Some(b"k1")).raw(text);
        assert_ne!(plain, keyed);
        assert_ne!(keyed, Hasher::new(Some(b"k2")).raw(text));
        assert_eq!(keyed, Hasher::new(Some(b"k1")).raw(text));
        assert_ne!(plain, Hasher::new(None).raw(r#"{"id":2}"#));
    }

    #[test]
    fn the_fast_path_reads_ids_as_the_writer_does() {
        for (pointer, record) in [
            ("/id", r#"{"id":7}"#),
            ("/id", r#"{"a":{"id":1,"x":[{"id":2}]},"id":"E-7","z":[1]}"#),
            ("/id", r#"{"\u0069d":1.0}"#),
            ("/id", r#"{"id":"\u0041"}"#),
            (
                "/emp/id",
                r#"{"x":{"id":9},"emp":{"n":[1,{"id":3}],"id":4e0},"y":{}}"#,
            ),
            ("/list/1", r#"{"list":[[5,{"a":1}],"b","c"]}"#),
            ("/list/1/id", r#"{"list":[{"id":1},{"id":2}]}"#),
            ("", r#""root""#),
        ] {
            let mut d = Digester::new(shape(pointer, &[]), Hasher::new(None));
            let full = d.digest(record, 0).unwrap();
            let fast = d.identify(record).expect(record);
            assert_eq!(
                (&fast.id, fast.numeric),
                (&full.id, full.numeric),
                "{record}"
            );
            assert_eq!(fast.raw, raw_part(&full.hash), "{record}");
        }
        for (pointer, record) in [
            ("/id", r#"{"x":1}"#),
            ("/id", r#"{"id":{"id":1}}"#),
            ("/id", r#"{"id":""}"#),
            ("/id", r#"{"id":null}"#),
            ("/id", r#"[1]"#),
            ("/id", "7"),
            ("/list/2", r#"{"list":[1,2]}"#),
        ] {
            let mut d = Digester::new(shape(pointer, &[]), Hasher::new(None));
            assert_eq!(d.identify(record), None, "{record}");
        }
        // A repeated id key: the fast path reads the first, the writer keeps
        // the last. What is stored under the first id came from other bytes
        // (ones the writer gave that id), so their raw part never matches
        // and such a record is always digested in full.
        let mut d = Digester::new(shape("/id", &[]), Hasher::new(None));
        let text = r#"{"id":1,"id":2}"#;
        let fast = d.identify(text).unwrap();
        let full = d.digest(text, 0).unwrap();
        assert_eq!((fast.id.as_str(), full.id.as_str()), ("1", "2"));
        let stored_under_1 = d.digest(r#"{"id":1}"#, 0).unwrap().hash;
        assert_eq!(
            d.digest_known(text, 0, Some((&fast, Some(&stored_under_1)))),
            Ok(full),
            "digested in full"
        );
    }

    #[test]
    fn a_stored_digest_is_trusted_only_when_its_raw_part_matches() {
        let text = r#"{"id":1,"a":1}"#;
        let mut d = Digester::new(shape("/id", &[]), Hasher::new(None));
        let full = d.digest(text, 0).unwrap();
        let fast = d.identify(text).unwrap();
        // A stored hash whose canonical part is not this record's but whose
        // raw part is: trusted as is (these bytes were digested before).
        let mut stored = [0u8; 32];
        stored[CANONICAL_BYTES..].copy_from_slice(&fast.raw.to_le_bytes());
        let got = d
            .digest_known(text, 0, Some((&fast, Some(&stored))))
            .unwrap();
        assert_eq!((got.hash, got.id.as_str()), (stored, "1"));
        // Any other raw part, no stored hash or no identification: the
        // record is digested in full.
        stored[31] ^= 1;
        assert_eq!(
            d.digest_known(text, 0, Some((&fast, Some(&stored)))),
            Ok(full.clone())
        );
        assert_eq!(
            d.digest_known(text, 0, Some((&fast, None))),
            Ok(full.clone())
        );
        assert_eq!(d.digest_known(text, 0, None), Ok(full));
    }

    #[test]
    fn ignored_fields_do_not_count() {
        let mut d = Digester::new(
            shape("/id", &["/last_seen_at", "/meta/etag"]),
            Hasher::new(None),
        );
        let a = d
            .digest(
                r#"{"id":1,"n":"x","last_seen_at":"t1","meta":{"etag":"1","v":2}}"#,
                0,
            )
            .unwrap();
        let b = d
            .digest(
                r#"{"id":1,"n":"x","last_seen_at":"t2","meta":{"etag":"2","v":2}}"#,
                0,
            )
            .unwrap();
        let c = d
            .digest(
                r#"{"id":1,"n":"y","last_seen_at":"t2","meta":{"etag":"2","v":2}}"#,
                0,
            )
            .unwrap();
        assert_eq!(a.hash[..CANONICAL_BYTES], b.hash[..CANONICAL_BYTES]);
        assert_ne!(a.hash[..CANONICAL_BYTES], c.hash[..CANONICAL_BYTES]);
        assert_eq!(a.id, "1");
    }

    #[test]
    fn ids_are_strings_or_numbers_in_one_canonical_text() {
        let mut d = Digester::new(shape("/emp/id", &[]), Hasher::new(None));
        let got = d.digest(r#"{"emp":{"id":"E-7"}}"#, 0).unwrap();
        assert_eq!((got.id.as_str(), got.numeric), ("E-7", false));
        for same in ["1", "1.0", "1e0", "0.1e1"] {
            let got = digest(&format!("{{\"id\":{same}}}"));
            assert_eq!((got.id.as_str(), got.numeric), ("1", true), "{same}");
        }
        assert_eq!(digest(r#"{"id":"1"}"#).id, "1");
        assert!(!digest(r#"{"id":"1"}"#).numeric);
        let mut d = Digester::new(shape("/id", &[]), Hasher::new(None));
        assert_eq!(
            d.digest(r#"{"x":1}"#, 3),
            Err(RecordError::MissingId {
                index: 3,
                pointer: "/id".into()
            })
        );
        let err = d.digest(r#"{"id":{"secret":"v"}}"#, 0).unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
        assert!(d.digest(r#"{"id":""}"#, 0).is_err());
    }

    #[test]
    fn records_json_once_refused_now_hash_stably() {
        let deep = format!("{{\"id\":1,\"x\":{}0{}}}", "[".repeat(200), "]".repeat(200));
        assert_eq!(h(&deep), h(&deep.replace("0]", " 0 ]")));
        assert_ne!(h(r#"{"id":1,"s":"\ud800"}"#), h(r#"{"id":1,"s":"\ud801"}"#));
        assert_eq!(h(r#"{"id":1,"n":1e400}"#), h(r#"{"id":1,"n":10E399}"#));
        assert_ne!(h(r#"{"id":1,"n":1e400}"#), h(r#"{"id":1,"n":1e401}"#));
    }

    #[test]
    fn a_record_too_deep_to_hash_still_gives_its_id() {
        let depth = canonical::MAX_DEPTH + 5;
        let text = format!(
            "{{\"id\":\"x\",\"d\":{}{}}}",
            "[".repeat(depth),
            "]".repeat(depth)
        );
        let err = Digester::new(shape("/id", &[]), Hasher::new(None))
            .digest(&text, 2)
            .unwrap_err();
        assert_eq!(err.unhashable_id(), Some("x"));
    }

    #[test]
    fn classification_follows_the_rules() {
        let a = [1u8; 32];
        let b = [2u8; 32];
        assert_eq!(classify(None, &a), Change::Created);
        assert_eq!(classify(Some(&a), &a), Change::Unchanged);
        assert_eq!(classify(Some(&a), &b), Change::Updated);
    }

    #[test]
    fn seen_ids_tell_repeats_from_type_collisions() {
        let mut seen = SeenIds::with_capacity(4);
        assert!(seen.is_empty());
        assert_eq!(seen.see("1", true), Sighting::First);
        assert!(!seen.is_empty());
        assert_eq!(seen.see("2", false), Sighting::First);
        assert_eq!(seen.see("1", true), Sighting::Duplicate);
        assert_eq!(seen.see("1", false), Sighting::Collision);
        assert_eq!(seen.see("2", true), Sighting::Collision);
        assert_eq!(seen.see("2", false), Sighting::Duplicate);
        assert!(seen.contains("1") && seen.contains("2") && !seen.contains("3"));
        assert_eq!(
            seen.len(),
            2,
            "a collision is not remembered as a second id"
        );
    }

    #[test]
    fn the_pre_hashed_hasher_keeps_u64_keys_and_tells_byte_strings_apart() {
        use std::hash::Hasher as _;
        let mut h = PreHashed::default();
        h.write_u64(0xDEAD_BEEF_0000_0042);
        assert_eq!(
            h.finish(),
            0xDEAD_BEEF_0000_0042,
            "a u64 key is its own hash"
        );
        let of = |bytes: &[u8]| {
            let mut h = PreHashed::default();
            h.write(bytes);
            h.finish()
        };
        // Past eight bytes the fold wraps onto itself: still distinct.
        let (eight, nine) = (of(&[0xFF; 8]), of(&[0xFF; 9]));
        assert_ne!(eight, 0);
        assert_ne!(eight, nine);
        assert_ne!(of(b"ab"), of(b"ba"));
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
