//! Properties of the canonical hash, and hostile configs.
//!
//! Hashing (proptest over generated JSON records, rendered to text the way a
//! provider might send them):
//!
//! - the single-pass canonical writer produces exactly the bytes the former
//!   path produced (`serde_json::Value` + `serde_jcs`, with exact large
//!   integers), so hashes stored before it stay valid;
//! - key order, whitespace, string escapes (`\u00e9` for `é`, `\/`) and
//!   equivalent number spellings never change the hash;
//! - changing any leaf value, or adding or removing a field, always does —
//!   unless the field is in `ignore`;
//! - numbers hash in RFC 8785 form: `1`, `1.0`, `1e0`, `0.1e1`, `10E-1` are
//!   one number, `-0` is `0`; integers keep their exact digits even beyond
//!   2^53, so `9007199254740993` and `9007199254740992` differ (an id or a
//!   nanosecond timestamp changing by one is a change).
//!
//! Configs: random text and mutations of a valid config never panic the
//! loader; every rejection is one line naming a key path; the real binary
//! answers `check` on 61 hostile configs exactly as written down for each
//! (exit 0, or exit 2 with one line naming the key), and on random
//! mutations as the loader does.

use std::path::Path;
use std::process::Command;

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRng};
use serde_json::{Map, Number, Value, json};
use synthd::detect::canonical::{Canonicalizer, Shape};
use synthd::detect::{CANONICAL_BYTES, Digester, Hasher, raw_part};
use synthd::json::Pointer;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

// ---------------------------------------------------------------------------
// Generated records
// ---------------------------------------------------------------------------

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(|i| json!(i)),
        any::<u64>().prop_map(|u| json!(u)),
        (-1000i64..1000).prop_map(|i| json!(i)),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        (-1000i32..1000).prop_map(|i| json!(f64::from(i) / 8.0)),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        "\\PC{0,10}".prop_map(Value::String),
        "[\\x00-\\x1f\"\\\\/]{0,4}".prop_map(Value::String),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z_]{1,8}", "\\PC{1,4}"]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 40, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn record() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(key(), value(), 1..8).prop_map(|m| {
        let mut obj: Map<String, Value> = m.into_iter().collect();
        obj.insert("id".into(), json!("rec-1"));
        Value::Object(obj)
    })
}

fn shape(ignore: &[&str]) -> Shape {
    Shape {
        id: Pointer::parse("/id").unwrap(),
        ignore: ignore.iter().map(|p| Pointer::parse(p).unwrap()).collect(),
    }
}

/// The part of a record's hash that decides a change (the rest is the
/// hash of its raw text), for a record given as JSON text.
fn hash_text(text: &str, ignore: &[&str]) -> [u8; CANONICAL_BYTES] {
    Digester::new(shape(ignore), Hasher::new(None))
        .digest(text, 0)
        .unwrap_or_else(|e| panic!("{e}: {text}"))
        .hash[..CANONICAL_BYTES]
        .try_into()
        .unwrap()
}

fn hash(v: &Value) -> [u8; CANONICAL_BYTES] {
    hash_text(&v.to_string(), &[])
}

/// The canonical bytes the writer produces for a JSON text.
fn canonical_text(text: &str) -> Vec<u8> {
    Canonicalizer::default()
        .write(text, &shape(&[]))
        .unwrap_or_else(|e| panic!("{e:?}: {text}"))
        .0
        .to_vec()
}

fn canonical_json(v: &Value) -> Vec<u8> {
    canonical_text(&v.to_string())
}

/// The canonical form as synthd computed it before the single-pass writer:
/// a parsed `serde_json::Value` written by `serde_jcs`, except integers
/// beyond 2^53 that fit in 64 bits, which keep their digits. Kept here as
/// the reference the writer must match byte for byte.
fn reference_canonical(value: &Value, out: &mut Vec<u8>) {
    const EXACT_IN_DOUBLE: u64 = 1 << 53;
    match value {
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                reference_canonical(item, out);
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
                serde_jcs::to_writer(&mut *out, key.as_str()).unwrap();
                out.push(b':');
                reference_canonical(item, out);
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
        scalar => serde_jcs::to_writer(out, scalar).unwrap(),
    }
}

// ---------------------------------------------------------------------------
// Rendering a value as a provider might: any key order, any whitespace, any
// escapes, any spelling of a number
// ---------------------------------------------------------------------------

fn pick(rng: &mut TestRng, n: u32) -> u32 {
    rng.next_u32() % n
}

fn ws(rng: &mut TestRng, out: &mut String) {
    for _ in 0..pick(rng, 3) {
        out.push([' ', '\n', '\t', '\r'][pick(rng, 4) as usize]);
    }
}

fn render_str(s: &str, rng: &mut TestRng, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '/' if pick(rng, 2) == 0 => out.push_str("\\/"),
            c if (c as u32) < 0x20 || pick(rng, 4) == 0 => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&if pick(rng, 2) == 0 {
                        format!("\\u{u:04x}")
                    } else {
                        format!("\\u{u:04X}")
                    });
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The same number, spelled one of the ways JSON allows.
fn render_number(n: &Number, rng: &mut TestRng) -> String {
    const EXACT: u64 = 1 << 53;
    if let Some(i) = n.as_i64().filter(|i| i.unsigned_abs() <= EXACT) {
        return match pick(rng, 5) {
            0 => format!("{i}.0"),
            1 => format!("{i}e0"),
            // Not "{i}0E-1": for 0 that is "00E-1", which JSON forbids.
            2 => format!("{}E-1", i * 10),
            3 => format!("{i}.000e+0"),
            _ => i.to_string(),
        };
    }
    if n.is_i64() || n.is_u64() {
        return n.to_string();
    }
    let f = n.as_f64().unwrap();
    match pick(rng, 3) {
        0 => format!("{f:e}"),
        1 => format!("{f:.17e}"),
        _ => format!("{f:?}"),
    }
}

/// `v` as JSON text spelled one of the many ways `seed` picks.
fn rendered(v: &Value, seed: &[u8; 32]) -> String {
    let mut rng = TestRng::from_seed(proptest::test_runner::RngAlgorithm::ChaCha, seed);
    let mut text = String::new();
    render(v, &mut rng, &mut text);
    text
}

fn render(v: &Value, rng: &mut TestRng, out: &mut String) {
    ws(rng, out);
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&render_number(n, rng)),
        Value::String(s) => render_str(s, rng, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                render(item, rng, out);
            }
            ws(rng, out);
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            // Fisher-Yates with the test's rng: any key order.
            for i in (1..entries.len()).rev() {
                entries.swap(i, pick(rng, i as u32 + 1) as usize);
            }
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                ws(rng, out);
                render_str(k, rng, out);
                ws(rng, out);
                out.push(':');
                render(v, rng, out);
            }
            ws(rng, out);
            out.push('}');
        }
    }
    ws(rng, out);
}

// ---------------------------------------------------------------------------
// Mutations that must change the hash
// ---------------------------------------------------------------------------

/// Paths (as JSON pointers) to every leaf.
fn leaves(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Array(items) if !items.is_empty() => {
            for (i, item) in items.iter().enumerate() {
                leaves(item, format!("{at}/{i}"), out);
            }
        }
        Value::Object(map) if !map.is_empty() => {
            for (k, item) in map {
                let k = k.replace('~', "~0").replace('/', "~1");
                leaves(item, format!("{at}/{k}"), out);
            }
        }
        _ => out.push(at),
    }
}

/// A value that is different from `v` in every canonical sense.
fn different(v: &Value) -> Value {
    match v {
        Value::Null => json!(false),
        Value::Bool(b) => json!(!b),
        Value::String(s) => json!(format!("{s}x")),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                json!(if u == u64::MAX { u - 1 } else { u + 1 })
            } else if let Some(i) = n.as_i64() {
                json!(i + 1)
            } else {
                let f = n.as_f64().unwrap();
                if f == 0.0 {
                    json!(1.0)
                } else if (f * 2.0).is_finite() {
                    json!(f * 2.0)
                } else {
                    json!(f / 2.0)
                }
            }
        }
        Value::Array(_) => json!([null]),
        Value::Object(_) => json!({"k": null}),
    }
}

fn proptest_config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(proptest_config(512))]

    #[test]
    fn the_single_pass_writer_matches_the_former_canonical_form_byte_for_byte(
        v in record(),
        seed in any::<[u8; 32]>(),
    ) {
        let text = rendered(&v, &seed);
        let parsed: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        let mut want = Vec::new();
        reference_canonical(&parsed, &mut want);
        let got = canonical_text(&text);
        prop_assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want),
            "{}",
            text
        );
    }

    #[test]
    fn key_order_whitespace_escapes_and_number_spelling_never_change_the_hash(
        v in record(),
        seed in any::<[u8; 32]>(),
    ) {
        let text = rendered(&v, &seed);
        prop_assert_eq!(hash_text(&text, &[]), hash(&v), "{}", text);
    }

    #[test]
    fn the_fast_path_reads_the_id_the_writer_reads(
        v in record(),
        seed in any::<[u8; 32]>(),
    ) {
        let text = rendered(&v, &seed);
        let mut d = Digester::new(shape(&[]), Hasher::new(None));
        let full = d.digest(&text, 0);
        let fast = d.identify(&text);
        match (full, fast) {
            (Ok(full), Some(fast)) => {
                prop_assert_eq!((&fast.id, fast.numeric), (&full.id, full.numeric), "{}", text);
                prop_assert_eq!(fast.raw, raw_part(&full.hash), "{}", text);
                // The same bytes with their stored hash: the stored digest
                // comes back without canonicalising.
                prop_assert_eq!(d.digest_known(&text, 0, Some((&fast, Some(&full.hash)))), Ok(full));
            }
            (Err(_), None) => {}
            (full, fast) => prop_assert!(false, "writer {:?} but fast path {:?}: {}", full, fast, text),
        }
    }

    #[test]
    fn changing_any_leaf_changes_the_hash(v in record(), pick in any::<prop::sample::Index>()) {
        let mut paths = Vec::new();
        leaves(&v, String::new(), &mut paths);
        let path = pick.get(&paths);
        let mut changed = v.clone();
        let slot = changed.pointer_mut(path).unwrap();
        *slot = different(slot);
        prop_assert_ne!(
            hash(&changed),
            hash(&v),
            "{} -> {}",
            String::from_utf8_lossy(&canonical_json(&v)),
            String::from_utf8_lossy(&canonical_json(&changed))
        );
    }

    #[test]
    fn adding_or_removing_a_field_changes_the_hash_unless_ignored(
        v in record(),
        new_key in "[a-z]{9,12}",
        new_value in value(),
        pick in any::<prop::sample::Index>(),
    ) {
        let ignore = ["/last_seen_at"];
        let digest = |v: &Value| hash_text(&v.to_string(), &ignore);
        let base = digest(&v);

        let mut added = v.clone();
        added.as_object_mut().unwrap().insert(new_key.clone(), new_value.clone());
        prop_assert_ne!(digest(&added), base);

        let keys: Vec<String> = v.as_object().unwrap().keys().filter(|k| *k != "id").cloned().collect();
        if !keys.is_empty() {
            let mut removed = v.clone();
            removed.as_object_mut().unwrap().remove(pick.get(&keys));
            prop_assert_ne!(digest(&removed), base);
        }

        let mut noise = v.clone();
        noise.as_object_mut().unwrap().insert("last_seen_at".into(), new_value);
        prop_assert_eq!(digest(&noise), base);
    }
}

#[test]
fn numbers_hash_in_their_documented_canonical_form() {
    let canonical = |text: &str| {
        let v: Value = serde_json::from_str(&format!("{{\"n\":{text}}}")).unwrap();
        String::from_utf8(canonical_json(&v)).unwrap()
    };
    let same = [
        (
            "1",
            &["1.0", "1e0", "1E0", "0.1e1", "10e-1", "1.000", "1e+0"][..],
        ),
        ("0", &["-0", "0.0", "-0.0", "0e10"][..]),
        ("100", &["1e2", "100.0", "1E+2"][..]),
        ("0.5", &["5e-1", "0.50", "50E-2"][..]),
        ("1e+21", &["1000000000000000000000", "1e21"][..]),
        ("1e-7", &["0.0000001", "1E-7"][..]),
        (
            "9007199254740992",
            &["9007199254740992.0", "9.007199254740992e15"][..],
        ),
        (
            "1152921504606847000",
            &["1152921504606846976.0", "1.152921504606846976e18"][..],
        ),
    ];
    for (form, spellings) in same {
        assert_eq!(canonical(form), format!("{{\"n\":{form}}}"), "{form}");
        for s in spellings {
            assert_eq!(canonical(s), canonical(form), "{s} should hash like {form}");
        }
    }
    // Integers keep every digit, so neighbours beyond 2^53 stay distinct...
    for (a, b) in [
        ("9007199254740993", "9007199254740992"),
        ("18446744073709551615", "18446744073709551614"),
        ("-9223372036854775808", "-9223372036854775807"),
        ("1732356000123456789", "1732356000123456790"),
    ] {
        assert_eq!(canonical(a), format!("{{\"n\":{a}}}"));
        assert_ne!(canonical(a), canonical(b), "{a} vs {b}");
    }
    // ...while a fraction is the double it parses to, so the same large
    // value spelled as a fraction is the double's shortest form.
    assert_eq!(canonical("0.30000000000000000001"), canonical("0.3"));
    assert_eq!(
        canonical("1152921504606846976"),
        "{\"n\":1152921504606846976}"
    );
    assert_ne!(
        canonical("1152921504606846976"),
        canonical("1152921504606846976.0")
    );
}

// ---------------------------------------------------------------------------
// Hostile configs
// ---------------------------------------------------------------------------

fn base_config(state: &Path) -> String {
    format!(
        r#"
[daemon]
state_dir = "{state}"
log_format = "json"
max_concurrent_polls = 8
listen = "127.0.0.1:9464"
hash_key_file = "hash.key"
retention = {{ delivered = "7d", failed = "30d" }}

[providers.bamboo]
base_url = "https://api.example.com/v1"
auth = {{ type = "bearer", token = "tok-123" }}
pagination = {{ type = "page", page_param = "page", size_param = "per_page", size = 100, first_page = 1 }}
records = "/data"
id = "/id"
query = {{ include_deleted = "false" }}
headers = {{ "Accept-Language" = "en" }}
rate_limit = "10/s"
timeout = "30s"
max_pages = 100000

[providers.bamboo.resources.hris_employees]
path = "/employees"
updated_since = {{ param = "updated_after", format = "rfc3339", lookback = "5m", full_scan_every = "24h" }}
ignore = ["/last_login_at", "/meta/etag"]

[providers.bamboo.resources.hris_employments]
path = "/employments"
pagination = {{ type = "cursor", cursor_param = "cursor", next = "/meta/next_cursor" }}

[providers.gh]
base_url = "https://harvest.example.com/v1"
auth = {{ type = "oauth2", token_url = "https://auth.example.com/token", client_id = "c", client_secret = "s", scope = "read" }}
pagination = {{ type = "link" }}
records = ""

[providers.gh.resources.ats_jobs]
path = "/jobs"

[[accounts]]
id = "acme"
provider = "bamboo"
interval = "15m"
resources = ["hris_employees"]
emit_initial = false

[[accounts]]
id = "globex"
provider = "gh"
cron = "0 */30 * * * *"
base_url = "https://globex.example.com/v1"
auth = {{ type = "query", name = "api_key", value = "k-1" }}

[[webhooks]]
id = "hr-sync"
name = "HR sync"
url = "https://hooks.example.com/synthd?token=unique_secret_token"
events = ["hris_employees.*", "account.*"]
secret = "{SECRET}"
accounts = ["acme"]
enabled = true
timeout = "10s"
signature_header = "x-synthd-signature"

[[webhooks]]
id = "all"
url = "http://127.0.0.1:8080/hook"
events = ["*"]
secret_file = "hook.secret"
"#,
        state = state.display()
    )
}

/// Values that have broken parsers before.
const HOSTILE: &[&str] = &[
    "\"\"",
    "\"0s\"",
    "\"-5m\"",
    "\"1ns\"",
    "\"99999999999999999999h\"",
    "\"584942417355y\"",
    "18446744073709551616",
    "9223372036854775807",
    "-9223372036854775808",
    "-1",
    "0",
    "1e309",
    "nan",
    "-inf",
    "true",
    "[]",
    "[[]]",
    "{}",
    "{ type = \"page\", size = 0 }",
    "{ type = \"offset\", size = -1 }",
    "{ type = \"cursor\", next = \"\" }",
    "{ type = \"bogus\" }",
    "\"\\u0000\"",
    "\"🙂\"",
    "\"http://\"",
    "\"ftp://x\"",
    "\"not a url\"",
    "\"/\"",
    "\"~\"",
    "\"/a~2\"",
    "\"*/1 * * * * *\"",
    "\"* * * * * * * *\"",
    "\"0 0 0 31 2 *\"",
    "\"0/s\"",
    "\"1000000000/s\"",
    "\"5/fortnight\"",
    "\"whsec_\"",
    "\"whsec_!!!\"",
    "\"../../../../etc/shadow\"",
    "\"/dev/zero\"",
    "\"/nonexistent/secret\"",
    "\"ENV_THAT_IS_NOT_SET_4242\"",
    "1979-05-27T07:32:00Z",
    "'''\nmulti\n'''",
    "\"a\\\"b\"",
];

fn mutate(text: &str, rng: &mut TestRng) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for _ in 0..1 + pick(rng, 3) {
        if lines.is_empty() {
            break;
        }
        let i = pick(rng, lines.len() as u32) as usize;
        match pick(rng, 10) {
            0 => {
                lines.remove(i);
            }
            1 => {
                let l = lines[i].clone();
                lines.insert(i, l);
            }
            2 => {
                let j = pick(rng, lines.len() as u32) as usize;
                lines.swap(i, j);
            }
            3 => {
                // Truncate the line at a random char boundary.
                let cut = lines[i]
                    .char_indices()
                    .map(|(n, _)| n)
                    .nth(pick(rng, lines[i].chars().count() as u32 + 1) as usize)
                    .unwrap_or(lines[i].len());
                lines[i].truncate(cut);
            }
            4 => {
                let garbage: String = (0..pick(rng, 6))
                    .map(|_| char::from_u32(pick(rng, 0x250)).unwrap_or('?'))
                    .collect();
                lines[i].push_str(&garbage);
            }
            5 => {
                // Misspell the key.
                if let Some(eq) = lines[i].find(" =") {
                    lines[i].insert(eq, 'x');
                }
            }
            _ => {
                // Replace a value with a hostile one.
                if let Some(eq) = lines[i].find(" = ") {
                    let v = HOSTILE[pick(rng, HOSTILE.len() as u32) as usize];
                    lines[i] = format!("{}{v}", &lines[i][..eq + 3]);
                }
            }
        }
    }
    lines.join("\n")
}

struct Fixture {
    dir: tempfile::TempDir,
    base: String,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hash.key"), "0123456789abcdef0123").unwrap();
    std::fs::write(dir.path().join("hook.secret"), SECRET).unwrap();
    let base = base_config(&dir.path().join("state"));
    synthd::config::from_toml_str(&base, dir.path()).expect("the base config is valid");
    Fixture { dir, base }
}

/// The loader's answer: Ok, or one line naming a key path.
fn load(text: &str, dir: &Path) -> Result<(), String> {
    match synthd::config::from_toml_str(text, dir) {
        Ok(_) => Ok(()),
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.trim().is_empty(), "empty error for:\n{text}");
            assert!(!msg.contains('\n'), "multi-line error {msg:?} for:\n{text}");
            Err(msg)
        }
    }
}

#[test]
fn mutated_configs_never_panic_the_loader() {
    let f = fixture();
    let seed: u8 = std::env::var("SYNTHD_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let mut rng = TestRng::from_seed(proptest::test_runner::RngAlgorithm::ChaCha, &[seed; 32]);
    let (mut accepted, mut rejected) = (0, 0);
    for _ in 0..2000 {
        let text = mutate(&f.base, &mut rng);
        match std::panic::catch_unwind(|| load(&text, f.dir.path())) {
            Ok(Ok(())) => accepted += 1,
            Ok(Err(_)) => rejected += 1,
            Err(_) => panic!("the loader panicked (or gave a bad error) on:\n{text}"),
        }
    }
    println!("config fuzz: 2000 mutated configs, {rejected} rejected, {accepted} accepted");
    assert!(rejected > 1000);
}

proptest! {
    #![proptest_config(proptest_config(256))]

    #[test]
    fn random_text_never_panics_the_loader(text in "\\PC{0,200}", bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let dir = tempfile::tempdir().unwrap();
        let _ = load(&text, dir.path());
        let lossy = String::from_utf8_lossy(&bytes);
        let _ = load(&lossy, dir.path());
    }
}

/// What `synthd check` must answer.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Exit 0.
    Valid,
    /// Exit 2 with one line naming this key path (`config` for the file
    /// as a whole).
    Invalid(&'static str),
}

/// One hostile config: the base config with its first line `key = …`
/// replaced by `key = value` (`key` empty: `value` is the whole file, or
/// the base config when `value` is empty too), run with `env`.
struct Hostile {
    key: &'static str,
    value: &'static str,
    env: &'static [(&'static str, &'static str)],
    expect: Expect,
}

fn hostile_cases() -> Vec<Hostile> {
    use Expect::{Invalid, Valid};
    let set = |key, value, expect| Hostile {
        key,
        value,
        env: &[],
        expect,
    };
    let env = |env, expect| Hostile {
        key: "",
        value: "",
        env,
        expect,
    };
    vec![
        // [daemon]
        set(
            "max_concurrent_polls",
            "18446744073709551616",
            Invalid("config"),
        ),
        set(
            "max_concurrent_polls",
            "-1",
            Invalid("daemon.max_concurrent_polls"),
        ),
        set(
            "max_concurrent_polls",
            "0",
            Invalid("daemon.max_concurrent_polls"),
        ),
        set(
            "max_concurrent_polls",
            "nan",
            Invalid("daemon.max_concurrent_polls"),
        ),
        set(
            "max_concurrent_polls",
            "\"8\"",
            Invalid("daemon.max_concurrent_polls"),
        ),
        set("log_format", "\"🙂\"", Invalid("daemon.log_format")),
        set(
            "log_format",
            "'''\nmulti\n'''",
            Invalid("daemon.log_format"),
        ),
        set("listen", "\"not a url\"", Invalid("daemon.listen")),
        set(
            "hash_key_file",
            "\"/dev/zero\"",
            Invalid("daemon.hash_key_file"),
        ),
        set(
            "hash_key_file",
            "\"/nonexistent/secret\"",
            Invalid("daemon.hash_key_file"),
        ),
        set(
            "retention",
            "{ delivered = \"-5m\" }",
            Invalid("daemon.retention.delivered"),
        ),
        set(
            "retention",
            "{ delivered = \"99999999999999999999h\" }",
            Invalid("daemon.retention.delivered"),
        ),
        set("retention", "{}", Valid),
        set("state_dir", "\"\"", Invalid("daemon.state_dir")),
        // [providers.bamboo]
        set(
            "base_url",
            "\"http://\"",
            Invalid("providers.bamboo.base_url"),
        ),
        set(
            "base_url",
            "\"ftp://x\"",
            Invalid("providers.bamboo.base_url"),
        ),
        set(
            "base_url",
            "\"not a url\"",
            Invalid("providers.bamboo.base_url"),
        ),
        set(
            "pagination",
            "{ type = \"page\", size = 0 }",
            Invalid("providers.bamboo.pagination.size"),
        ),
        set(
            "pagination",
            "{ type = \"offset\", size = -1 }",
            Invalid("providers.bamboo.pagination.size"),
        ),
        set(
            "pagination",
            "{ type = \"bogus\" }",
            Invalid("providers.bamboo.pagination.type"),
        ),
        set("records", "\"~\"", Invalid("providers.bamboo.records")),
        set("id", "\"/a~2\"", Invalid("providers.bamboo.id")),
        set(
            "rate_limit",
            "\"0/s\"",
            Invalid("providers.bamboo.rate_limit"),
        ),
        set(
            "rate_limit",
            "\"5/fortnight\"",
            Invalid("providers.bamboo.rate_limit"),
        ),
        set("rate_limit", "\"1000000000/s\"", Valid),
        set("timeout", "\"1ns\"", Invalid("providers.bamboo.timeout")),
        set(
            "timeout",
            "\"584942417355y\"",
            Invalid("providers.bamboo.timeout"),
        ),
        set("max_pages", "0", Invalid("providers.bamboo.max_pages")),
        set("max_pages", "9223372036854775807", Valid),
        set(
            "headers",
            "{ \"Bad Header\" = \"x\" }",
            Invalid("providers.bamboo.headers.Bad Header"),
        ),
        set(
            "path",
            "\"employees\"",
            Invalid("providers.bamboo.resources.hris_employees.path"),
        ),
        set(
            "ignore",
            "[\"~\"]",
            Invalid("providers.bamboo.resources.hris_employees.ignore[0]"),
        ),
        // [[accounts]]
        set("interval", "\"0s\"", Invalid("accounts[0].interval")),
        set("interval", "\"-5m\"", Invalid("accounts[0].interval")),
        set(
            "interval",
            "1979-05-27T07:32:00Z",
            Invalid("accounts[0].interval"),
        ),
        set("interval", "\"1h\"", Valid),
        set(
            "emit_initial",
            "\"yes\"",
            Invalid("accounts[0].emit_initial"),
        ),
        set("cron", "\"* * * * * * * *\"", Invalid("accounts[1].cron")),
        set("cron", "\"0 0 0 31 2 *\"", Invalid("accounts[1].cron")),
        set("cron", "\"*/1 * * * * *\"", Invalid("accounts[1].cron")),
        // [[webhooks]]
        set("secret", "\"whsec_\"", Invalid("webhooks[0].secret")),
        set("secret", "\"whsec_!!!\"", Invalid("webhooks[0].secret")),
        set(
            "secret_file",
            "\"/dev/zero\"",
            Invalid("webhooks[1].secret_file"),
        ),
        set(
            "secret_file",
            "\"/nonexistent/secret\"",
            Invalid("webhooks[1].secret_file"),
        ),
        set("url", "\"not a url\"", Invalid("webhooks[0].url")),
        set("url", "\"ftp://x\"", Invalid("webhooks[0].url")),
        set(
            "accounts",
            "[\"nobody\"]",
            Invalid("webhooks[0].accounts[0]"),
        ),
        set(
            "signature_header",
            "\"a b\"",
            Invalid("webhooks[0].signature_header"),
        ),
        set("enabled", "\"true\"", Invalid("webhooks[0].enabled")),
        set("name", "\"🙂\"", Valid),
        // The file as a whole.
        set("", "\u{feff}[daemon]\0\u{1}", Invalid("config")),
        set(
            "",
            "[daemon]\nlog_format = \"json\"\nlog_format = \"json\"\n",
            Invalid("config"),
        ),
        set("", "[daemon]\nlog_format = \"json\n", Invalid("config")),
        set("", "colour = \"blue\"\n", Invalid("colour")),
        // Environment overrides (lists cannot be overridden item by item).
        env(
            &[("SYNTHD_DAEMON__MAX_CONCURRENT_POLLS", "lots")],
            Invalid("daemon.max_concurrent_polls"),
        ),
        env(
            &[(
                "SYNTHD_DAEMON__MAX_CONCURRENT_POLLS",
                "99999999999999999999999",
            )],
            Invalid("daemon.max_concurrent_polls"),
        ),
        env(&[("SYNTHD_DAEMON__MAX_CONCURRENT_POLLS", "16")], Valid),
        env(
            &[("SYNTHD_DAEMON__LOG_FORMAT", "[1,2")],
            Invalid("daemon.log_format"),
        ),
        env(
            &[("SYNTHD_ACCOUNTS__0__INTERVAL", "1s")],
            Invalid("accounts"),
        ),
        env(&[("SYNTHD_NOPE__NOPE", "1")], Invalid("nope")),
    ]
}

/// Runs `synthd check` on the config file at `path` with `env` (and no
/// other `SYNTHD_` variable).
fn check(path: &Path, env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin!("synthd"));
    cmd.arg("--config").arg(path).arg("check");
    for (k, _) in std::env::vars() {
        if k.starts_with("SYNTHD_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd.envs(env.iter().copied()).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Checks one answer of `check` against what was expected of it.
fn assert_answer(what: &str, expect: Expect, answer: (Option<i32>, String, String)) {
    let (code, stdout, stderr) = answer;
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{what}: a panic:\n{stderr}"
    );
    match expect {
        Expect::Valid => {
            assert_eq!(code, Some(0), "{what}: expected valid:\n{stderr}");
            assert!(stdout.contains(" is valid"), "{what}: {stdout}");
        }
        Expect::Invalid(key) => {
            assert_eq!(code, Some(2), "{what}: expected exit 2:\n{stdout}{stderr}");
            let prefix = format!("synthd: config error: {key}: ");
            assert!(
                stderr.starts_with(&prefix) && stderr.trim_end().lines().count() == 1,
                "{what}: expected one line starting {prefix:?}, got {stderr:?}"
            );
        }
    }
}

#[test]
fn hostile_configs_exit_2_with_one_line_from_the_binary() {
    let f = fixture();
    let path = f.dir.path().join("synthd.toml");
    let cases = hostile_cases();
    for c in &cases {
        let text = match (c.key, c.value) {
            ("", "") => f.base.clone(),
            ("", whole) => whole.to_string(),
            (key, value) => {
                let mut lines: Vec<String> = f.base.lines().map(str::to_string).collect();
                let line = lines
                    .iter_mut()
                    .find(|l| l.starts_with(&format!("{key} = ")))
                    .unwrap_or_else(|| panic!("no {key} in the base config"));
                *line = format!("{key} = {value}");
                lines.join("\n")
            }
        };
        std::fs::write(&path, &text).unwrap();
        let what = format!("{} = {:?} with {:?}", c.key, c.value, c.env);
        assert_answer(&what, c.expect, check(&path, c.env));
    }
    // Not UTF-8 at all.
    std::fs::write(&path, [0xff, 0xfe, b'[', 0x80, b']']).unwrap();
    assert_answer("not UTF-8", Expect::Invalid("config"), check(&path, &[]));

    // Random mutations of the base config: the binary answers each as the
    // loader does (exit 0, or exit 2 naming the loader's key path).
    let mut rng = TestRng::from_seed(proptest::test_runner::RngAlgorithm::ChaCha, &[7u8; 32]);
    let (mut rejected, mut accepted) = (0, 0);
    for _ in 0..40 {
        let text = mutate(&f.base, &mut rng);
        std::fs::write(&path, &text).unwrap();
        let expect = match synthd::config::from_toml_str(&text, f.dir.path()) {
            Ok(_) => {
                accepted += 1;
                Expect::Valid
            }
            Err(e) => {
                rejected += 1;
                Expect::Invalid(Box::leak(e.path.into_boxed_str()))
            }
        };
        assert_answer(&text, expect, check(&path, &[]));
    }
    println!(
        "hostile configs: {} with a written-down answer, 40 random mutations ({rejected} rejected, {accepted} accepted)",
        cases.len() + 1
    );
    assert!(rejected > 0 && accepted > 0);
}
