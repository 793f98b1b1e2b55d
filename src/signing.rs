//! Webhook signatures, and nothing else: Standard Webhooks
//! (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64>`) plus
//! the plain hex HMAC of the body that simpler receivers check.
//!
//! Keys are the decoded bytes of `whsec_` secrets. With several secrets
//! (rotation), `webhook-signature` carries one `v1,` entry per key,
//! space-separated, as the Standard Webhooks spec allows.

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = hmac::Hmac<Sha256>;

fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().to_vec()
}

/// The `webhook-signature` header value for one attempt.
pub fn standard_signature(keys: &[Vec<u8>], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    keys.iter()
        .map(|k| {
            let sig = hmac(k, &[msg_id.as_bytes(), b".", ts.as_bytes(), b".", body]);
            format!(
                "v1,{}",
                base64::engine::general_purpose::STANDARD.encode(sig)
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `x-synthd-signature` value: lowercase hex HMAC-SHA256 of the raw body
/// with the newest key.
pub fn hex_signature(key: &[u8], body: &[u8]) -> String {
    hex(&hmac(key, &[body]))
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh `whsec_` secret: 32 random bytes, base64.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// Why a received webhook was rejected.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("webhook-timestamp is not a number")]
    BadTimestamp,
    #[error("webhook-timestamp is more than 5 minutes away from now")]
    StaleTimestamp,
    #[error("no signature matches")]
    NoMatch,
}

/// Receiver-side check, used by the demo's embedded receiver. Mirrors what
/// the `standardwebhooks` libraries do (the tests verify with those).
pub fn verify(
    key: &[u8],
    msg_id: Option<&str>,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_unix: i64,
) -> Result<(), VerifyError> {
    let msg_id = msg_id.ok_or(VerifyError::MissingHeader("webhook-id"))?;
    let ts = timestamp.ok_or(VerifyError::MissingHeader("webhook-timestamp"))?;
    let sigs = signature.ok_or(VerifyError::MissingHeader("webhook-signature"))?;
    let ts: i64 = ts.parse().map_err(|_| VerifyError::BadTimestamp)?;
    if (now_unix - ts).abs() > 300 {
        return Err(VerifyError::StaleTimestamp);
    }
    let mut mac = HmacSha256::new_from_slice(key).expect("any key length");
    for part in [
        msg_id.as_bytes(),
        b".",
        ts.to_string().as_bytes(),
        b".",
        body,
    ] {
        mac.update(part);
    }
    for candidate in sigs.split(' ') {
        // The MAC's own verify compares in constant time.
        if let Some(b64) = candidate.strip_prefix("v1,")
            && let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64)
            && mac.clone().verify_slice(&raw).is_ok()
        {
            return Ok(());
        }
    }
    Err(VerifyError::NoMatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answer_from_the_standard_webhooks_spec() {
        // Test vector from the Standard Webhooks reference implementations.
        let key = base64::engine::general_purpose::STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap();
        let sig = standard_signature(
            &[key],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn rotation_signs_with_every_key_and_each_verifies() {
        let body = b"{}";
        let sig = standard_signature(
            &[b"new-key".to_vec(), b"old-key".to_vec()],
            "evt_1",
            100,
            body,
        );
        assert_eq!(sig.split(' ').count(), 2);
        for key in [b"new-key", b"old-key"] {
            verify(key, Some("evt_1"), Some("100"), Some(&sig), body, 100).unwrap();
        }
        assert_eq!(
            verify(b"other", Some("evt_1"), Some("100"), Some(&sig), body, 100),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            verify(
                b"new-key",
                Some("evt_1"),
                Some("100"),
                Some(&sig),
                b"{ }",
                100
            ),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            verify(
                b"new-key",
                Some("evt_1"),
                Some("100"),
                Some(&sig),
                body,
                1000
            ),
            Err(VerifyError::StaleTimestamp)
        );
    }

    #[test]
    fn hex_signature_is_lowercase_hex_of_the_body_hmac() {
        let s = hex_signature(b"key", b"The quick brown fox jumps over the lazy dog");
        assert_eq!(
            s,
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }

    #[test]
    fn new_secrets_are_distinct_whsec_of_32_bytes() {
        let a = new_secret();
        let b = new_secret();
        assert_ne!(a, b);
        let raw = base64::engine::general_purpose::STANDARD
            .decode(a.strip_prefix("whsec_").unwrap())
            .unwrap();
        assert_eq!(raw.len(), 32);
    }
}
