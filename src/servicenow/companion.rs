//! The companion Scripted REST API: decrypted refresh tokens and client secrets, 100 rows a call.

use super::client::Instance;
use super::error::SnError;
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;

/// The companion's limit of sys_ids per call.
pub const COMPANION_BATCH: usize = 100;

/// The companion's query parameter that asks for more than the refresh token.
pub const COMPANION_INCLUDE: &str = "include";

/// The value of [`COMPANION_INCLUDE`] that asks for the registry's client secret.
pub const COMPANION_INCLUDE_SECRET: &str = "client_secret";

/// One refresh row whose secrets the keeper needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRequest {
    /// The refresh row's sys_id.
    pub sys_id: String,
    /// Whether the registry's client secret is needed too (the config supplies none).
    pub client_secret: bool,
}

/// Secrets the companion hands out for one refresh row.
pub struct CompanionSecrets {
    /// The decrypted refresh token.
    pub refresh_token: SecretString,
    /// The registry's decrypted client secret, when the instance has one.
    pub client_secret: Option<SecretString>,
}

impl fmt::Debug for CompanionSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CompanionSecrets([REDACTED])")
    }
}

/// Most tokens one `/verify` call checks.
pub const VERIFY_BATCH: usize = 100;

/// A row's token as the keeper wrote it: the row and the SHA-256 of the token's UTF-8 bytes
/// (lowercase hex). What `/verify` compares with what the instance stores — the token itself
/// never travels for it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenDigest {
    /// The `oauth_credential` row.
    pub sys_id: String,
    /// SHA-256 of the token as written, 64 lowercase hex characters.
    pub sha256: String,
}

impl TokenDigest {
    /// The digest of `token` as written to `sys_id`.
    pub fn of(sys_id: &str, token: &SecretString) -> TokenDigest {
        TokenDigest {
            sys_id: sys_id.to_string(),
            sha256: sha256_hex(token.expose_secret()),
        }
    }
}

/// SHA-256 of `text`'s UTF-8 bytes, 64 lowercase hex characters: the digest `/verify` takes.
pub(super) fn sha256_hex(text: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

impl Instance {
    /// Asks the companion whether each row's decrypted `token_received` is the token the keeper
    /// wrote (`POST {companion_path}/verify`, at most [`VERIFY_BATCH`] rows a call). Rows the
    /// answer leaves out do not exist (or the companion cannot read them): they are absent from
    /// the map, which is as good as a mismatch. Never sends or receives a token.
    pub async fn verify_tokens(
        &self,
        digests: &[TokenDigest],
    ) -> Result<HashMap<String, bool>, SnError> {
        // The calls of one batch go out together: their latency is paid once.
        let mut calls = tokio::task::JoinSet::new();
        for batch in digests.chunks(VERIFY_BATCH) {
            let (instance, batch) = (self.clone(), batch.to_vec());
            calls.spawn(async move { instance.verify_batch(&batch).await });
        }
        let mut matches = HashMap::with_capacity(digests.len());
        while let Some(joined) = calls.join_next().await {
            let answered =
                joined.map_err(|e| SnError::Malformed(format!("verify task failed: {e}")))??;
            matches.extend(answered);
        }
        Ok(matches)
    }

    /// One `/verify` call of at most [`VERIFY_BATCH`] rows.
    async fn verify_batch(&self, batch: &[TokenDigest]) -> Result<HashMap<String, bool>, SnError> {
        let url = self.url(&format!("{}/verify", self.companion_path));
        let tokens: Vec<Value> = batch
            .iter()
            .map(|d| serde_json::json!({ "sys_id": d.sys_id, "sha256": d.sha256 }))
            .collect();
        let body = serde_json::json!({ "tokens": tokens });
        // Verifying changes nothing: safe to send again.
        let answer = self.call(Method::POST, url, Some(body), true).await?;
        let Some(Value::Array(items)) = answer.body.get("result") else {
            return Err(SnError::Malformed(
                "verify answer without a result array".into(),
            ));
        };
        let mut matches = HashMap::with_capacity(batch.len());
        for item in items {
            let (Some(sys_id), Some(matched)) = (
                item.get("sys_id").and_then(Value::as_str),
                item.get("match").and_then(Value::as_bool),
            ) else {
                return Err(SnError::Malformed(
                    "verify answer entry without sys_id and match".into(),
                ));
            };
            // Only what was asked counts; an answer naming another row proves nothing.
            if batch.iter().any(|d| d.sys_id == sys_id) {
                matches.insert(sys_id.to_string(), matched);
            }
        }
        Ok(matches)
    }

    /// Proves the companion's `/verify` is there without touching a real row: an id that cannot
    /// exist must come back as an empty result.
    pub async fn probe_verify(&self) -> Result<(), SnError> {
        self.verify_batch(&[TokenDigest {
            sys_id: "00000000000000000000000000000000".into(),
            sha256: "0".repeat(64),
        }])
        .await
        .map(|_| ())
    }

    /// Asks the companion for the refresh tokens of refresh rows, never for a client secret.
    pub async fn fetch_secrets(
        &self,
        ids: &[String],
    ) -> Result<HashMap<String, CompanionSecrets>, SnError> {
        let requests: Vec<SecretRequest> = ids
            .iter()
            .map(|id| SecretRequest {
                sys_id: id.clone(),
                client_secret: false,
            })
            .collect();
        self.fetch_secrets_for(&requests).await
    }

    /// Asks the companion for the refresh token of each refresh row, and for the registry's
    /// client secret only where [`SecretRequest::client_secret`] says the config has none
    /// (`include=client_secret`), in batches of at most 100. Ids the companion leaves out are
    /// absent from the map.
    pub async fn fetch_secrets_for(
        &self,
        requests: &[SecretRequest],
    ) -> Result<HashMap<String, CompanionSecrets>, SnError> {
        let mut out = HashMap::new();
        for with_secret in [false, true] {
            let ids: Vec<&str> = requests
                .iter()
                .filter(|r| r.client_secret == with_secret)
                .map(|r| r.sys_id.as_str())
                .collect();
            for batch in ids.chunks(COMPANION_BATCH) {
                let mut url = self.url(&format!("{}/secrets", self.companion_path));
                url.query_pairs_mut()
                    .append_pair("sys_id", &batch.join(","));
                if with_secret {
                    url.query_pairs_mut()
                        .append_pair(COMPANION_INCLUDE, COMPANION_INCLUDE_SECRET);
                }
                let answer = self.call(Method::GET, url, None, true).await?;
                let Some(Value::Array(items)) = answer.body.get("result") else {
                    return Err(SnError::Malformed(
                        "companion answer without a result array".into(),
                    ));
                };
                for item in items {
                    let Some(sys_id) = item.get("sys_id").and_then(Value::as_str) else {
                        continue;
                    };
                    if !batch.contains(&sys_id) {
                        continue;
                    }
                    let Some(refresh) = item
                        .get("refresh_token")
                        .and_then(Value::as_str)
                        .filter(|t| !t.is_empty())
                    else {
                        continue;
                    };
                    // A secret the keeper did not ask for is not kept.
                    let client_secret = item
                        .get("client_secret")
                        .and_then(Value::as_str)
                        .filter(|s| with_secret && !s.is_empty())
                        .map(|s| SecretString::from(s.to_string()));
                    out.insert(
                        sys_id.to_string(),
                        CompanionSecrets {
                            refresh_token: SecretString::from(refresh.to_string()),
                            client_secret,
                        },
                    );
                }
            }
        }
        Ok(out)
    }

    /// Proves the companion is installed and our role is granted without asking for any real
    /// secret: an id that cannot exist must come back as an empty list.
    pub async fn probe_companion(&self) -> Result<(), SnError> {
        let mut url = self.url(&format!("{}/secrets", self.companion_path));
        url.query_pairs_mut()
            .append_pair("sys_id", "00000000000000000000000000000000");
        let answer = self.call(Method::GET, url, None, true).await?;
        match answer.body.get("result") {
            Some(Value::Array(_)) => Ok(()),
            _ => Err(SnError::Malformed(
                "companion answer without a result array".into(),
            )),
        }
    }
}
