//! Sealing: each record's tokens are encrypted with XChaCha20-Poly1305, with the record id and
//! its credential as associated data (a sealed record cannot be moved to another row), and
//! carry the key's id (a record sealed with another key is named as such, not as corrupt). The
//! one place token values are serialized.
//!
//! The configured key is never used directly: HKDF-SHA256 derives from it, with distinct info
//! strings, the sealing key, the key of the digests the journal keeps of configuration secrets,
//! and the key id. Records sealed before that (under the configured key itself, format v1) still
//! open — their key id says so — so an upgrade strands no token; new records and `journal
//! rekey` write format v2 only.

use super::JournalError;
use super::outbox::{AccessTemplate, Delivery, Rotated};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use jiff::Timestamp;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use serde::{Deserialize, Serialize};
use std::fmt;
use zeroize::Zeroizing;

/// A 32-byte journal key.
pub struct JournalKey(SecretBox<[u8; 32]>);

impl Clone for JournalKey {
    fn clone(&self) -> Self {
        // Copied straight into the new box: no stray copy on the stack.
        JournalKey(SecretBox::init_with_mut(|bytes: &mut [u8; 32]| {
            bytes.copy_from_slice(self.0.expose_secret());
        }))
    }
}

/// Compared in constant time: how long two keys share a prefix must not show in how long the
/// comparison takes.
impl PartialEq for JournalKey {
    fn eq(&self, other: &Self) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(self.bytes(), other.bytes()).is_ok()
    }
}

impl Eq for JournalKey {}

impl fmt::Debug for JournalKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JournalKey([REDACTED])")
    }
}

impl JournalKey {
    /// A fresh random key (the demo's).
    pub fn random() -> Result<JournalKey, getrandom::Error> {
        let mut filled = Ok(());
        let key = SecretBox::init_with_mut(|bytes: &mut [u8; 32]| filled = getrandom::fill(bytes));
        filled.map(|()| JournalKey(key))
    }

    /// Decodes 64 hex characters, base64 (standard or URL-safe, padded or not) of 32 bytes, or,
    /// from a file, exactly 32 raw bytes. Surrounding whitespace is ignored. Every buffer the
    /// key bytes pass through is wiped.
    pub fn decode(raw: &[u8]) -> Result<JournalKey, String> {
        use base64::Engine;
        let text = std::str::from_utf8(raw).map(str::trim).unwrap_or("");
        if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(JournalKey::from_bytes(|bytes| {
                for (byte, pair) in bytes.iter_mut().zip(text.as_bytes().chunks(2)) {
                    *byte = (hex_value(pair[0]) << 4) | hex_value(pair[1]);
                }
            }));
        }
        let engines = [
            base64::engine::general_purpose::STANDARD,
            base64::engine::general_purpose::STANDARD_NO_PAD,
            base64::engine::general_purpose::URL_SAFE,
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ];
        for engine in engines {
            if let Ok(decoded) = engine.decode(text).map(Zeroizing::new)
                && decoded.len() == 32
            {
                return Ok(JournalKey::from_bytes(|bytes| {
                    bytes.copy_from_slice(&decoded)
                }));
            }
        }
        if raw.len() == 32 {
            return Ok(JournalKey::from_bytes(|bytes| bytes.copy_from_slice(raw)));
        }
        Err(
            "the key must be 32 bytes: 64 hex characters or base64 (e.g. `openssl rand -hex 32`)"
                .into(),
        )
    }

    /// A key whose bytes `fill` writes in place, in the box that keeps (and wipes) them.
    fn from_bytes(fill: impl FnOnce(&mut [u8; 32])) -> JournalKey {
        JournalKey(SecretBox::init_with_mut(fill))
    }

    /// The key bytes.
    pub fn bytes(&self) -> &[u8; 32] {
        self.0.expose_secret()
    }
}

/// The value of one hexadecimal digit (checked by the caller).
fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        b'A'..=b'F' => digit - b'A' + 10,
        _ => 0,
    }
}

/// The sealed part of a record.
#[derive(Serialize, Deserialize)]
struct Sealed {
    access_token: String,
    refresh_token: Option<String>,
    #[serde(default)]
    previous_refresh_token: Option<String>,
    access_expires: i64,
    refresh_expires: Option<i64>,
    access_row: Option<String>,
    template: AccessTemplate,
}

/// What the journal stores in the clear beside a sealed record.
pub(super) struct Envelope<'a> {
    /// The record id.
    pub id: &'a str,
    /// The refresh row's sys_id.
    pub credential: &'a str,
    /// The registry's name.
    pub registry: &'a str,
    /// The refresh row's `sys_mod_count` when refreshed.
    pub refresh_mod_count: u64,
}

/// HKDF's salt: fixed, as RFC 5869 allows for a key that is uniformly random already.
const HKDF_SALT: &[u8] = b"sn-oauth-keeper journal key derivation";
/// HKDF info of the key that seals records (format v2).
const SEAL_INFO: &[u8] = b"sn-oauth-keeper/journal/v2/seal";
/// HKDF info of the key of digests of configuration secrets.
const DIGEST_INFO: &[u8] = b"sn-oauth-keeper/journal/v2/digest";
/// HKDF info of the key id.
const KEY_ID_INFO: &[u8] = b"sn-oauth-keeper/journal/v2/key-id";
/// What a format v2 key id starts with: the record's format is told by its key id.
const KEY_ID_V2: &str = "v2:";
/// The associated data's prefix of format v2 records.
const AAD_V2: &str = "sn-oauth-keeper/journal/v2";
/// The associated data's prefix of format v1 records (sealed under the configured key itself).
const AAD_V1: &str = "sn-oauth-keeper/journal/v1";

/// Six bytes out of HKDF: a key id's length.
struct KeyIdLength;

impl aws_lc_rs::hkdf::KeyType for KeyIdLength {
    fn len(&self) -> usize {
        6
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One format's cipher and the id its records carry.
struct Format {
    aead: XChaCha20Poly1305,
    key_id: String,
    aad_prefix: &'static str,
}

/// Seals records under the keys derived from one journal key, and opens them — and records
/// sealed under the journal key itself before keys were derived.
pub(super) struct Sealer {
    /// Format v2: what every record is sealed with now.
    current: Format,
    /// Format v1: opened only, so that records from before the upgrade are delivered.
    legacy: Format,
    /// For digests of configuration secrets (a parked registry's fingerprint): keyed, so a
    /// digest on disk reveals nothing about a low-entropy secret without the key.
    digest_key: aws_lc_rs::hmac::Key,
}

impl Sealer {
    /// The sealer of `key`: its derived keys, and its format v1 cipher.
    pub(super) fn new(key: &JournalKey) -> Result<Sealer, JournalError> {
        use aws_lc_rs::hkdf;
        let derivation = |_| JournalError::Db("deriving the journal's keys failed".into());
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(key.bytes());
        let mut seal_key = Zeroizing::new([0u8; 32]);
        prk.expand(&[SEAL_INFO], hkdf::HKDF_SHA256)
            .and_then(|okm| okm.fill(seal_key.as_mut_slice()))
            .map_err(derivation)?;
        let digest_key = prk
            .expand(&[DIGEST_INFO], aws_lc_rs::hmac::HMAC_SHA256)
            .map(aws_lc_rs::hmac::Key::from)
            .map_err(derivation)?;
        let mut id = [0u8; 6];
        prk.expand(&[KEY_ID_INFO], KeyIdLength)
            .and_then(|okm| okm.fill(&mut id))
            .map_err(derivation)?;
        let legacy_aead = XChaCha20Poly1305::new(key.bytes().into());
        Ok(Sealer {
            current: Format {
                aead: XChaCha20Poly1305::new((&*seal_key).into()),
                key_id: format!("{KEY_ID_V2}{}", hex(&id)),
                aad_prefix: AAD_V2,
            },
            legacy: Format {
                key_id: legacy_key_id(&legacy_aead),
                aead: legacy_aead,
                aad_prefix: AAD_V1,
            },
            digest_key,
        })
    }

    /// The id new records carry: the key's, in format v2.
    pub(super) fn key_id(&self) -> &str {
        &self.current.key_id
    }

    /// An HMAC-SHA256 of `data` under the key, hex.
    pub(super) fn keyed_digest(&self, data: &[u8]) -> String {
        hex(aws_lc_rs::hmac::sign(&self.digest_key, data).as_ref())
    }

    /// Seals a delivery for record `id`: a fresh random nonce and the ciphertext, bound to the
    /// record and its credential.
    pub(super) fn seal(
        &self,
        id: &str,
        delivery: &Delivery,
    ) -> Result<([u8; 24], Vec<u8>), JournalError> {
        let exposed = |t: &Option<SecretString>| t.as_ref().map(|t| t.expose_secret().to_string());
        let sealed = Sealed {
            access_token: delivery.access_token.expose_secret().to_string(),
            refresh_token: delivery
                .rotated
                .as_ref()
                .map(|r| r.token.expose_secret().to_string()),
            previous_refresh_token: exposed(&delivery.previous_refresh_token),
            access_expires: delivery.access_expires.as_second(),
            refresh_expires: delivery.rotated.as_ref().map(|r| r.expires.as_second()),
            access_row: delivery.access_row.clone(),
            template: delivery.template.clone(),
        };
        let plaintext = Zeroizing::new(
            serde_json::to_vec(&sealed).map_err(|e| JournalError::Db(e.to_string()))?,
        );
        drop(Zeroizing::new(sealed.access_token));
        drop(sealed.refresh_token.map(Zeroizing::new));
        drop(sealed.previous_refresh_token.map(Zeroizing::new));
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut nonce).map_err(|e| JournalError::Db(format!("no randomness: {e}")))?;
        let aad = aad(self.current.aad_prefix, id, &delivery.credential);
        let ciphertext = self
            .current
            .aead
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plaintext.as_slice(),
                    aad: &aad,
                },
            )
            .map_err(|_| JournalError::Db("sealing failed".into()))?;
        Ok((nonce, ciphertext))
    }

    /// Opens a record sealed with key `key_id`: by [`Sealer::seal`] (format v2), or under the
    /// configured key itself before keys were derived (format v1).
    pub(super) fn open(
        &self,
        envelope: &Envelope<'_>,
        key_id: &str,
        nonce: &[u8],
        sealed: &[u8],
    ) -> Result<Delivery, JournalError> {
        let id = envelope.id;
        let format = [&self.current, &self.legacy]
            .into_iter()
            .find(|f| f.key_id == key_id)
            .ok_or_else(|| JournalError::WrongKey {
                id: id.to_string(),
                found: key_id.to_string(),
                // The configured key's id in the record's own format, so the two compare.
                configured: if key_id.starts_with(KEY_ID_V2) {
                    self.current.key_id.clone()
                } else {
                    self.legacy.key_id.clone()
                },
            })?;
        let nonce: [u8; 24] = nonce
            .try_into()
            .map_err(|_| JournalError::Corrupt(id.to_string()))?;
        let aad = aad(format.aad_prefix, id, envelope.credential);
        let plaintext = Zeroizing::new(
            format
                .aead
                .decrypt(
                    &XNonce::from(nonce),
                    Payload {
                        msg: sealed,
                        aad: &aad,
                    },
                )
                .map_err(|_| JournalError::Corrupt(id.to_string()))?,
        );
        let inner: Sealed = serde_json::from_slice(&plaintext)
            .map_err(|_| JournalError::Corrupt(id.to_string()))?;
        let ts = |s: i64| Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH);
        Ok(Delivery {
            credential: envelope.credential.to_string(),
            registry: envelope.registry.to_string(),
            access_token: SecretString::from(inner.access_token),
            // Both are written together; a record without the expiry gets the access token's
            // (conservative: the next rotation sets it right).
            rotated: inner.refresh_token.map(|token| Rotated {
                token: SecretString::from(token),
                expires: inner.refresh_expires.map_or(ts(inner.access_expires), ts),
            }),
            previous_refresh_token: inner.previous_refresh_token.map(SecretString::from),
            access_expires: ts(inner.access_expires),
            access_row: inner.access_row,
            template: inner.template,
            refresh_mod_count: envelope.refresh_mod_count,
        })
    }
}

fn aad(prefix: &str, id: &str, credential: &str) -> Vec<u8> {
    format!("{prefix}/{id}/{credential}").into_bytes()
}

/// The id of a format v1 key: the tag of an empty message under a fixed nonce, which identifies
/// the key without revealing it.
fn legacy_key_id(aead: &XChaCha20Poly1305) -> String {
    let tag = aead
        .encrypt(
            &XNonce::default(),
            Payload {
                msg: b"",
                aad: b"sn-oauth-keeper key id",
            },
        )
        .unwrap_or_default();
    hex(&tag[..tag.len().min(6)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::outbox::tests::delivery;

    fn envelope<'a>(id: &'a str, credential: &'a str) -> Envelope<'a> {
        Envelope {
            id,
            credential,
            registry: "Graph",
            refresh_mod_count: 3,
        }
    }

    /// A record in format v1, sealed by the sealer's own v1 cipher (that the format is the one
    /// the keeper wrote before keys were derived, `tests/it/journal.rs` checks with a record
    /// written as the old code did).
    fn sealed_in_format_v1(sealer: &Sealer, id: &str) -> ([u8; 24], Vec<u8>) {
        let plaintext = serde_json::json!({
            "access_token": "at-secret-value",
            "refresh_token": "rt-secret-value",
            "access_expires": 2_000_000_000,
            "refresh_expires": 2_100_000_000,
            "access_row": null,
            "template": {"requestor_profile": "p", "peer": "e", "user": "u", "scopes": "s", "name": "n"},
        })
        .to_string();
        let nonce = [7u8; 24];
        let aad = aad(AAD_V1, id, "r1");
        let payload = Payload {
            msg: plaintext.as_bytes(),
            aad: &aad,
        };
        let sealed = sealer.legacy.aead.encrypt(&XNonce::from(nonce), payload);
        (nonce, sealed.unwrap())
    }

    #[test]
    fn a_record_sealed_before_derivation_still_opens() {
        let sealer = Sealer::new(&JournalKey::random().unwrap()).unwrap();
        let (nonce, sealed) = sealed_in_format_v1(&sealer, "rec1");
        let key_id = sealer.legacy.key_id.clone();
        assert!(!key_id.starts_with(KEY_ID_V2));
        let opened = sealer
            .open(&envelope("rec1", "r1"), &key_id, &nonce, &sealed)
            .unwrap();
        assert_eq!(opened.access_token.expose_secret(), "at-secret-value");
        let rotated = opened.rotated.unwrap();
        assert_eq!(rotated.token.expose_secret(), "rt-secret-value");
        assert_eq!(rotated.expires.as_second(), 2_100_000_000);
        assert_eq!(opened.refresh_mod_count, 3);
        // Bound to its row as before.
        assert!(matches!(
            sealer.open(&envelope("rec2", "r1"), &key_id, &nonce, &sealed),
            Err(JournalError::Corrupt(_))
        ));
    }

    #[test]
    fn new_records_are_sealed_under_a_derived_key_in_format_v2() {
        let key = JournalKey::random().unwrap();
        let sealer = Sealer::new(&key).unwrap();
        assert!(sealer.key_id().starts_with(KEY_ID_V2));
        let (nonce, sealed) = sealer.seal("rec1", &delivery("r1")).unwrap();
        let opened = sealer
            .open(&envelope("rec1", "r1"), sealer.key_id(), &nonce, &sealed)
            .unwrap();
        assert_eq!(opened.access_token.expose_secret(), "at-secret-value");
        // Not the configured key itself, under either format's associated data.
        let raw = XChaCha20Poly1305::new(key.bytes().into());
        for prefix in [AAD_V1, AAD_V2] {
            let aad = format!("{prefix}/rec1/r1");
            let attempt = raw.decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &sealed,
                    aad: aad.as_bytes(),
                },
            );
            assert!(attempt.is_err(), "{prefix}");
        }
        // Nor does a v2 record pass for a v1 one.
        let legacy_id = sealer.legacy.key_id.clone();
        assert!(
            sealer
                .open(&envelope("rec1", "r1"), &legacy_id, &nonce, &sealed)
                .is_err()
        );
    }

    #[test]
    fn the_digest_key_is_derived_apart_from_the_sealing_key() {
        let key = JournalKey::random().unwrap();
        let sealer = Sealer::new(&key).unwrap();
        let raw = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key.bytes());
        assert_ne!(
            sealer.keyed_digest(b"secret"),
            hex(aws_lc_rs::hmac::sign(&raw, b"secret").as_ref())
        );
        assert_eq!(
            sealer.keyed_digest(b"secret"),
            Sealer::new(&key).unwrap().keyed_digest(b"secret")
        );
        let other = Sealer::new(&JournalKey::random().unwrap()).unwrap();
        assert_ne!(
            sealer.keyed_digest(b"secret"),
            other.keyed_digest(b"secret")
        );
    }

    #[test]
    fn a_record_of_another_key_names_both_ids_in_its_own_format() {
        let (key, other) = (JournalKey::random().unwrap(), JournalKey::random().unwrap());
        let sealer = Sealer::new(&key).unwrap();
        let foreign = Sealer::new(&other).unwrap();
        let (nonce, sealed) = sealed_in_format_v1(&foreign, "rec1");
        let old_id = foreign.legacy.key_id.clone();
        match sealer.open(&envelope("rec1", "r1"), &old_id, &nonce, &sealed) {
            Err(JournalError::WrongKey { configured, .. }) => {
                assert_eq!(configured, sealer.legacy.key_id);
            }
            other => panic!("{other:?}"),
        }
        let (nonce, sealed) = foreign.seal("rec1", &delivery("r1")).unwrap();
        match sealer.open(&envelope("rec1", "r1"), foreign.key_id(), &nonce, &sealed) {
            Err(JournalError::WrongKey { configured, .. }) => {
                assert_eq!(configured, sealer.key_id());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_encoding_of_a_key_decodes_to_the_same_bytes() {
        use base64::Engine;
        let key = JournalKey::random().unwrap();
        let bytes = *key.bytes();
        let lower = hex(&bytes);
        for text in [
            lower.clone(),
            lower.to_ascii_uppercase(),
            format!("  {lower}\n"),
            base64::engine::general_purpose::STANDARD.encode(bytes),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
        ] {
            assert_eq!(JournalKey::decode(text.as_bytes()).unwrap(), key, "{text}");
        }
        assert_eq!(JournalKey::decode(&bytes).unwrap(), key);
        assert_eq!(key.clone(), key);
        assert!(JournalKey::decode(b"too short").is_err());
    }
}
