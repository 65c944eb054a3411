//! The companion Scripted REST API: decrypted refresh tokens and client secrets, 100 rows a call.

use super::client::Instance;
use super::error::SnError;
use reqwest::Method;
use secrecy::SecretString;
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

impl Instance {
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
