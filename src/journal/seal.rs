//! Sealing: each record's tokens are encrypted with XChaCha20-Poly1305 under the configured
//! key, with the record id and its credential as associated data (a sealed record cannot be
//! moved to another row), and carry the key's id (a record sealed with another key is named as
//! such, not as corrupt). The one place token values are serialized.

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
        JournalKey(SecretBox::new(Box::new(*self.0.expose_secret())))
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
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        Ok(JournalKey(SecretBox::new(Box::new(bytes))))
    }

    /// Decodes 64 hex characters, base64 (standard or URL-safe, padded or not) of 32 bytes, or,
    /// from a file, exactly 32 raw bytes. Surrounding whitespace is ignored.
    pub fn decode(raw: &[u8]) -> Result<JournalKey, String> {
        use base64::Engine;
        let text = std::str::from_utf8(raw).map(str::trim).unwrap_or("");
        let mut bytes = [0u8; 32];
        if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            for (i, chunk) in text.as_bytes().chunks(2).enumerate() {
                let pair = std::str::from_utf8(chunk).map_err(|_| "bad hex".to_string())?;
                bytes[i] = u8::from_str_radix(pair, 16).map_err(|_| "bad hex".to_string())?;
            }
            return Ok(JournalKey(SecretBox::new(Box::new(bytes))));
        }
        let engines = [
            base64::engine::general_purpose::STANDARD,
            base64::engine::general_purpose::STANDARD_NO_PAD,
            base64::engine::general_purpose::URL_SAFE,
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ];
        for engine in engines {
            if let Ok(decoded) = engine.decode(text)
                && decoded.len() == 32
            {
                bytes.copy_from_slice(&decoded);
                return Ok(JournalKey(SecretBox::new(Box::new(bytes))));
            }
        }
        if raw.len() == 32 {
            bytes.copy_from_slice(raw);
            return Ok(JournalKey(SecretBox::new(Box::new(bytes))));
        }
        Err(
            "the key must be 32 bytes: 64 hex characters or base64 (e.g. `openssl rand -hex 32`)"
                .into(),
        )
    }

    /// The key bytes.
    pub fn bytes(&self) -> &[u8; 32] {
        self.0.expose_secret()
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

/// Seals and opens records under one key.
pub(super) struct Sealer {
    aead: XChaCha20Poly1305,
    key_id: String,
    /// For digests of configuration secrets (a parked registry's fingerprint): keyed, so a
    /// digest on disk reveals nothing about a low-entropy secret without the key.
    digest_key: aws_lc_rs::hmac::Key,
}

impl Sealer {
    pub(super) fn new(key: &JournalKey) -> Sealer {
        let aead = XChaCha20Poly1305::new(key.bytes().into());
        // A key id that identifies the key without revealing it: the tag of an empty message
        // under a fixed nonce.
        let tag = aead
            .encrypt(
                &XNonce::default(),
                Payload {
                    msg: b"",
                    aad: b"sn-oauth-keeper key id",
                },
            )
            .unwrap_or_default();
        let key_id = tag.iter().take(6).map(|b| format!("{b:02x}")).collect();
        let digest_key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key.bytes());
        Sealer {
            aead,
            key_id,
            digest_key,
        }
    }

    /// The key's id.
    pub(super) fn key_id(&self) -> &str {
        &self.key_id
    }

    /// An HMAC-SHA256 of `data` under the key, hex.
    pub(super) fn keyed_digest(&self, data: &[u8]) -> String {
        let tag = aws_lc_rs::hmac::sign(&self.digest_key, data);
        tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
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
        let aad = aad(id, &delivery.credential);
        let ciphertext = self
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

    /// Opens a record sealed by [`Sealer::seal`] with key `key_id`.
    pub(super) fn open(
        &self,
        envelope: &Envelope<'_>,
        key_id: &str,
        nonce: &[u8],
        sealed: &[u8],
    ) -> Result<Delivery, JournalError> {
        let id = envelope.id;
        if key_id != self.key_id {
            return Err(JournalError::WrongKey {
                id: id.to_string(),
                found: key_id.to_string(),
                configured: self.key_id.clone(),
            });
        }
        let nonce: [u8; 24] = nonce
            .try_into()
            .map_err(|_| JournalError::Corrupt(id.to_string()))?;
        let aad = aad(id, envelope.credential);
        let plaintext = Zeroizing::new(
            self.aead
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

fn aad(id: &str, credential: &str) -> Vec<u8> {
    format!("sn-oauth-keeper/journal/v1/{id}/{credential}").into_bytes()
}
