//! `private_key_jwt` client authentication (RFC 7523 §2.2, OpenID Connect Core §9), as Microsoft
//! Entra certificate credentials need it: a JWT signed with the application's private key, whose
//! header names the certificate registered at the provider.
//!
//! Signed with `aws-lc-rs` directly — already compiled for rustls — rather than through
//! `jsonwebtoken`: one JWT shape with two algorithms is a few lines, and it keeps the `rsa` crate
//! (RUSTSEC-2023-0071, no fixed version) out of the tree. PEM is read with `rustls-pki-types`
//! (`PemObject`), not the unmaintained `rustls-pemfile`.
//!
//! Key material never leaves this module: [`AssertionKey`]'s `Debug` shows the algorithm and the
//! certificate thumbprint only, errors name the file and what is wrong with it but never quote
//! it, PEM and DER buffers are zeroized after parsing, and an assertion is handed out as a
//! [`SecretString`].

use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, KeyPair, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::Timestamp;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use secrecy::SecretString;
use std::fmt;
use std::path::Path;
use zeroize::{Zeroize, Zeroizing};

/// The lifetime of one assertion: Entra asks for "5-10 minutes after `nbf` at most".
pub const ASSERTION_LIFETIME_SECS: i64 = 300;

/// How far `nbf` lies before now, so a provider whose clock runs a little behind ours does not
/// reject the assertion as not yet valid.
pub const NOT_BEFORE_SKEW_SECS: i64 = 30;

/// `client_assertion_type` for a JWT client assertion (RFC 7523 §2.2).
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The signature algorithm of the assertion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JwtAlg {
    /// RSASSA-PSS with SHA-256: what Entra's certificate-credentials page asks for today.
    #[default]
    Ps256,
    /// RSASSA-PKCS1-v1_5 with SHA-256: older Entra pages, MSAL's long-time default, and what
    /// many other servers accept.
    Rs256,
}

impl JwtAlg {
    /// The JOSE `alg` value.
    pub fn as_str(self) -> &'static str {
        match self {
            JwtAlg::Ps256 => "PS256",
            JwtAlg::Rs256 => "RS256",
        }
    }

    /// Parses a config value (`"PS256"` or `"RS256"`).
    pub fn parse(text: &str) -> Option<JwtAlg> {
        match text {
            "PS256" => Some(JwtAlg::Ps256),
            "RS256" => Some(JwtAlg::Rs256),
            _ => None,
        }
    }

    fn encoding(self) -> &'static dyn signature::RsaEncoding {
        match self {
            JwtAlg::Ps256 => &signature::RSA_PSS_SHA256,
            JwtAlg::Rs256 => &signature::RSA_PKCS1_SHA256,
        }
    }
}

/// Why a key or certificate cannot be used. The text never quotes the files' content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The private key file could not be read.
    #[error("cannot read {path}: {reason}")]
    ReadKey {
        /// The file.
        path: String,
        /// The I/O error.
        reason: String,
    },
    /// The file holds no PEM private key block.
    #[error(
        "{path} holds no PEM private key (expected \"-----BEGIN PRIVATE KEY-----\", PKCS#8, or \"-----BEGIN RSA PRIVATE KEY-----\")"
    )]
    NoPrivateKey {
        /// The file.
        path: String,
    },
    /// The key is not an RSA key (Entra certificate credentials are RSA).
    #[error("{path} holds an {kind} key; PS256 and RS256 need an RSA key")]
    NotRsa {
        /// The file.
        path: String,
        /// What it holds instead.
        kind: &'static str,
    },
    /// The key was rejected (malformed, or not 2048 to 8192 bits).
    #[error("{path}: the RSA key is unusable ({reason}); use a 2048-bit or larger RSA key")]
    Rejected {
        /// The file.
        path: String,
        /// aws-lc-rs' reason (a fixed phrase, never key data).
        reason: String,
    },
    /// The certificate file could not be read.
    #[error("cannot read {path}: {reason}")]
    ReadCertificate {
        /// The file.
        path: String,
        /// The I/O error.
        reason: String,
    },
    /// The file holds no PEM certificate, or not a parseable one.
    #[error("{path} holds no usable PEM certificate (expected \"-----BEGIN CERTIFICATE-----\")")]
    NoCertificate {
        /// The file.
        path: String,
    },
    /// The certificate's public key is not the private key's.
    #[error(
        "the certificate {certificate} does not belong to the private key {key}: the provider would reject every assertion"
    )]
    Mismatch {
        /// The certificate file.
        certificate: String,
        /// The key file.
        key: String,
    },
}

/// Why an assertion could not be made. Practically unreachable once a key has loaded (loading
/// signs a probe), but never a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssertionError {
    /// The operating system gave no randomness for the `jti`.
    #[error("no randomness for the client assertion's jti")]
    Random,
    /// Signing failed.
    #[error("the client assertion could not be signed")]
    Sign,
}

/// A loaded private key with its certificate's thumbprints: makes one fresh client assertion
/// per token request.
pub struct AssertionKey {
    key: RsaKeyPair,
    alg: JwtAlg,
    /// base64url SHA-256 of the certificate DER: the `x5t#S256` header.
    x5t_s256: String,
    /// base64url SHA-1 of the certificate DER: the legacy `x5t` header, sent with RS256 only.
    x5t_sha1: String,
}

impl fmt::Debug for AssertionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AssertionKey")
            .field("alg", &self.alg.as_str())
            .field("x5t#S256", &self.x5t_s256)
            .finish_non_exhaustive()
    }
}

impl AssertionKey {
    /// Reads a private key (PKCS#8 or PKCS#1 PEM) and its certificate (PEM) from files, and
    /// checks that they belong together.
    pub fn load(key_file: &Path, certificate_file: &Path, alg: JwtAlg) -> Result<Self, KeyError> {
        let key_name = key_file.display().to_string();
        let cert_name = certificate_file.display().to_string();
        let key_pem = Zeroizing::new(std::fs::read(key_file).map_err(|e| KeyError::ReadKey {
            path: key_name.clone(),
            reason: e.to_string(),
        })?);
        let cert_pem = std::fs::read(certificate_file).map_err(|e| KeyError::ReadCertificate {
            path: cert_name.clone(),
            reason: e.to_string(),
        })?;
        Self::from_pem(&key_pem, &key_name, &cert_pem, &cert_name, alg)
    }

    /// Like [`AssertionKey::load`], from PEM text; the names are only used in errors.
    pub fn from_pem(
        key_pem: &[u8],
        key_name: &str,
        cert_pem: &[u8],
        cert_name: &str,
        alg: JwtAlg,
    ) -> Result<Self, KeyError> {
        let key = parse_private_key(key_pem, key_name)?;
        let no_cert = || KeyError::NoCertificate {
            path: cert_name.to_string(),
        };
        let cert = CertificateDer::from_pem_slice(cert_pem).map_err(|_| no_cert())?;
        let cert_key = certificate_public_key(cert.as_ref()).ok_or_else(no_cert)?;
        if cert_key != key.public_key().as_ref() {
            return Err(KeyError::Mismatch {
                certificate: cert_name.to_string(),
                key: key_name.to_string(),
            });
        }
        let loaded = AssertionKey {
            x5t_s256: URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, cert.as_ref())),
            x5t_sha1: URL_SAFE_NO_PAD.encode(digest::digest(
                &digest::SHA1_FOR_LEGACY_USE_ONLY,
                cert.as_ref(),
            )),
            key,
            alg,
        };
        // A key that cannot sign is found now, at load, not at the first refresh.
        loaded
            .sign(b"sn-oauth-keeper probe")
            .map_err(|_| KeyError::Rejected {
                path: key_name.to_string(),
                reason: "it cannot sign".into(),
            })?;
        Ok(loaded)
    }

    /// The signature algorithm.
    pub fn alg(&self) -> JwtAlg {
        self.alg
    }

    /// The certificate's SHA-256 thumbprint, base64url (the `x5t#S256` header).
    pub fn thumbprint_s256(&self) -> &str {
        &self.x5t_s256
    }

    /// A fresh client assertion for one token request: `iss` = `sub` = the client id, `aud` =
    /// the token endpoint, a random `jti`, `iat` now, `nbf` a little earlier, `exp` in five
    /// minutes. Call it for every request, retries included: providers refuse a `jti` twice.
    pub fn assertion(
        &self,
        client_id: &str,
        audience: &str,
        now: Timestamp,
    ) -> Result<SecretString, AssertionError> {
        let now = now.as_second();
        // Entra names the certificate with `x5t#S256` today. With RS256 the SHA-1 `x5t` goes
        // along too: older Entra pages and MSAL's RS256 assertions carry only `x5t`, and a
        // server that knows only that header still finds the certificate. SHA-1 serves as a
        // certificate name here, not as a signature digest.
        let mut header = serde_json::json!({
            "alg": self.alg.as_str(),
            "typ": "JWT",
            "x5t#S256": self.x5t_s256,
        });
        if self.alg == JwtAlg::Rs256 {
            header["x5t"] = serde_json::Value::String(self.x5t_sha1.clone());
        }
        let claims = serde_json::json!({
            "aud": audience,
            "iss": client_id,
            "sub": client_id,
            "jti": new_jti()?,
            "iat": now,
            "nbf": now - NOT_BEFORE_SKEW_SECS,
            "exp": now + ASSERTION_LIFETIME_SECS,
        });
        let mut input = URL_SAFE_NO_PAD.encode(header.to_string());
        input.push('.');
        input.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
        let signature = self.sign(input.as_bytes())?;
        input.push('.');
        input.push_str(&URL_SAFE_NO_PAD.encode(signature));
        Ok(SecretString::from(input))
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, AssertionError> {
        let mut signature = vec![0u8; self.key.public_modulus_len()];
        self.key
            .sign(
                self.alg.encoding(),
                &SystemRandom::new(),
                message,
                &mut signature,
            )
            .map_err(|_| AssertionError::Sign)?;
        Ok(signature)
    }
}

fn parse_private_key(pem: &[u8], name: &str) -> Result<RsaKeyPair, KeyError> {
    let mut der = PrivateKeyDer::from_pem_slice(pem).map_err(|_| KeyError::NoPrivateKey {
        path: name.to_string(),
    })?;
    let parsed = match &der {
        PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
        PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
        PrivateKeyDer::Sec1(_) => {
            der.zeroize();
            return Err(KeyError::NotRsa {
                path: name.to_string(),
                kind: "EC (SEC1)",
            });
        }
        _ => {
            der.zeroize();
            return Err(KeyError::NoPrivateKey {
                path: name.to_string(),
            });
        }
    };
    let is_pkcs8 = matches!(der, PrivateKeyDer::Pkcs8(_));
    der.zeroize();
    parsed.map_err(|e| {
        let reason = e.description_();
        if is_pkcs8 && reason.contains("WrongAlgorithm") {
            KeyError::NotRsa {
                path: name.to_string(),
                kind: "non-RSA (PKCS#8)",
            }
        } else {
            KeyError::Rejected {
                path: name.to_string(),
                reason: reason.to_string(),
            }
        }
    })
}

/// A UUID-shaped random `jti` (version 4 layout), as Entra asks for a GUID.
fn new_jti() -> Result<String, AssertionError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|_| AssertionError::Random)?;
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(crate::wire::guid_layout(&hex))
}

/// One DER element: its tag, its content and what follows it.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The `RSAPublicKey` inside an X.509 certificate's `subjectPublicKeyInfo` (RFC 5280 §4.1),
/// found by walking the DER: enough to check that a certificate belongs to a key without an
/// X.509 crate.
pub(crate) fn certificate_public_key(cert: &[u8]) -> Option<&[u8]> {
    const SEQUENCE: u8 = 0x30;
    const BIT_STRING: u8 = 0x03;
    const VERSION: u8 = 0xa0;
    let (SEQUENCE, certificate, _) = der_element(cert)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = der_element(certificate)? else {
        return None;
    };
    let mut rest = tbs;
    if der_element(rest)?.0 == VERSION {
        rest = der_element(rest)?.2;
    }
    // serialNumber, signature, issuer, validity, subject.
    for _ in 0..5 {
        rest = der_element(rest)?.2;
    }
    let (SEQUENCE, spki, _) = der_element(rest)? else {
        return None;
    };
    let (SEQUENCE, _algorithm, rest) = der_element(spki)? else {
        return None;
    };
    let (BIT_STRING, bits, _) = der_element(rest)? else {
        return None;
    };
    let (&unused_bits, key) = bits.split_first()?;
    (unused_bits == 0).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use signature::UnparsedPublicKey;

    const KEY_A: &str = include_str!("../tests/oidc/keys/client-a.key.pem");
    const CERT_A: &str = include_str!("../tests/oidc/keys/client-a.cert.pem");
    const KEY_B_PKCS1: &str = include_str!("../tests/oidc/keys/client-b.pkcs1.key.pem");
    const CERT_B: &str = include_str!("../tests/oidc/keys/client-b.cert.pem");
    const EC_KEY: &str = include_str!("../tests/oidc/keys/ec.key.pem");

    fn key(alg: JwtAlg) -> AssertionKey {
        AssertionKey::from_pem(KEY_A.as_bytes(), "a.key", CERT_A.as_bytes(), "a.crt", alg).unwrap()
    }

    fn decode(part: &str) -> serde_json::Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    fn pem_der(pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec()
    }

    #[test]
    fn an_assertion_has_the_entra_shape_and_verifies_with_the_certificate() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        for (alg, verify) in [
            (
                JwtAlg::Ps256,
                &signature::RSA_PSS_2048_8192_SHA256 as &dyn signature::VerificationAlgorithm,
            ),
            (JwtAlg::Rs256, &signature::RSA_PKCS1_2048_8192_SHA256),
        ] {
            let k = key(alg);
            let jwt = k
                .assertion("client-1", "https://login.example/t/oauth2/v2.0/token", now)
                .unwrap();
            let parts: Vec<&str> = jwt.expose_secret().split('.').collect();
            assert_eq!(parts.len(), 3);
            let header = decode(parts[0]);
            let claims = decode(parts[1]);
            assert_eq!(header["alg"], alg.as_str());
            assert_eq!(header["typ"], "JWT");
            let der = pem_der(CERT_A);
            let expected = URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, &der));
            assert_eq!(header["x5t#S256"], expected.as_str());
            assert_eq!(k.thumbprint_s256(), expected);
            assert_eq!(header.get("x5t").is_some(), alg == JwtAlg::Rs256);
            assert!(header.get("kid").is_none());
            assert_eq!(claims["aud"], "https://login.example/t/oauth2/v2.0/token");
            assert_eq!(claims["iss"], "client-1");
            assert_eq!(claims["sub"], "client-1");
            assert_eq!(claims["iat"], 1_800_000_000);
            assert_eq!(claims["nbf"], 1_800_000_000 - NOT_BEFORE_SKEW_SECS);
            assert_eq!(claims["exp"], 1_800_000_000 + ASSERTION_LIFETIME_SECS);
            let jti = claims["jti"].as_str().unwrap();
            assert_eq!(jti.len(), 36);
            assert_eq!(&jti[14..15], "4", "a version-4 UUID layout");
            let public = certificate_public_key(&der).unwrap();
            let signed = format!("{}.{}", parts[0], parts[1]);
            UnparsedPublicKey::new(verify, public)
                .verify(
                    signed.as_bytes(),
                    &URL_SAFE_NO_PAD.decode(parts[2]).unwrap(),
                )
                .expect("the signature verifies with the certificate's key");
        }
    }

    #[test]
    fn every_assertion_is_fresh() {
        let k = key(JwtAlg::Ps256);
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let jtis: std::collections::HashSet<String> = (0..50)
            .map(|_| {
                let jwt = k.assertion("c", "https://idp/token", now).unwrap();
                let claims = decode(jwt.expose_secret().split('.').nth(1).unwrap());
                claims["jti"].as_str().unwrap().to_string()
            })
            .collect();
        assert_eq!(jtis.len(), 50);
    }

    #[test]
    fn pkcs1_keys_load_and_mismatched_or_wrong_files_are_named() {
        assert!(
            AssertionKey::from_pem(
                KEY_B_PKCS1.as_bytes(),
                "b.key",
                CERT_B.as_bytes(),
                "b.crt",
                JwtAlg::Rs256
            )
            .is_ok()
        );
        let mismatch = AssertionKey::from_pem(
            KEY_A.as_bytes(),
            "a.key",
            CERT_B.as_bytes(),
            "b.crt",
            JwtAlg::Ps256,
        )
        .unwrap_err();
        assert_eq!(
            mismatch,
            KeyError::Mismatch {
                certificate: "b.crt".into(),
                key: "a.key".into()
            }
        );
        let ec = AssertionKey::from_pem(
            EC_KEY.as_bytes(),
            "ec.key",
            CERT_A.as_bytes(),
            "a.crt",
            JwtAlg::Ps256,
        )
        .unwrap_err();
        assert!(matches!(ec, KeyError::NotRsa { .. }), "{ec:?}");
        let swapped = AssertionKey::from_pem(
            CERT_A.as_bytes(),
            "a.crt",
            KEY_A.as_bytes(),
            "a.key",
            JwtAlg::Ps256,
        )
        .unwrap_err();
        assert!(
            matches!(swapped, KeyError::NoPrivateKey { .. }),
            "{swapped}"
        );
        let no_cert = AssertionKey::from_pem(
            KEY_A.as_bytes(),
            "a.key",
            KEY_A.as_bytes(),
            "a.crt",
            JwtAlg::Ps256,
        )
        .unwrap_err();
        assert!(matches!(no_cert, KeyError::NoCertificate { .. }));
        let missing = AssertionKey::load(
            Path::new("/nonexistent/k.pem"),
            Path::new("/nonexistent/c.pem"),
            JwtAlg::Ps256,
        )
        .unwrap_err();
        assert!(missing.to_string().contains("/nonexistent/k.pem"));
    }

    #[test]
    fn no_key_material_in_debug_or_errors() {
        let k = key(JwtAlg::Ps256);
        let dump = format!("{k:?}");
        assert!(dump.contains("PS256") && dump.contains(k.thumbprint_s256()));
        let body_line = KEY_A.lines().nth(1).unwrap();
        assert!(!dump.contains(body_line));
        let truncated = &KEY_A[..KEY_A.len() / 2];
        let err = AssertionKey::from_pem(
            truncated.as_bytes(),
            "a.key",
            CERT_A.as_bytes(),
            "a.crt",
            JwtAlg::Ps256,
        )
        .unwrap_err()
        .to_string();
        assert!(!err.contains(body_line), "{err}");
        assert!(err.contains("a.key"), "{err}");
    }

    #[test]
    fn der_walker_refuses_garbage() {
        assert_eq!(certificate_public_key(&[]), None);
        assert_eq!(certificate_public_key(&[0x30, 0x82, 0xff]), None);
        assert_eq!(certificate_public_key(&[0x30, 0x00]), None);
        assert_eq!(der_element(&[0x02, 0x85, 1, 2, 3, 4, 5]), None);
    }
}
