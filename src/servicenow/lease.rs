//! The companion's lease: one keeper per instance, enforced by the instance (`POST`, `DELETE` and
//! `GET {companion_path}/lease`, `DELETE {companion_path}/lease/claims`; the contract is in
//! `migrations-docs/README.md`). The keeper's side of it — when to take, renew and release it,
//! what to claim — is [`crate::lease`].

use super::client::{Decode, Instance};
use super::error::SnError;
use reqwest::Method;
use serde_json::Value;
use std::time::Duration;

/// Most claims one `POST /lease` carries.
pub const MAX_CLAIMS: usize = 1_000;

/// A credential another keeper (or this one) has claimed: it holds, or may hold, the only valid
/// refresh token of that credential in its journal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Claim {
    /// The claiming keeper's holder id.
    pub holder: String,
    /// The refresh row's sys_id.
    pub sys_id: String,
}

/// The answer to taking (or renewing) the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseAnswer {
    /// The caller holds the lease now.
    Held {
        /// The lease's fence: the previous one + 1 when newly acquired, unchanged on a renewal.
        fence: u64,
        /// The claims of every other holder.
        others: Vec<Claim>,
    },
    /// Another keeper holds it.
    HeldElsewhere {
        /// Its holder id.
        holder: String,
        /// How long its lease has left.
        expires_in: Duration,
        /// The companion's explanation (names the holder's process when it told the instance).
        detail: String,
        /// The claims of every other holder.
        others: Vec<Claim>,
    },
}

/// The lease as the instance has it, read without taking it (`GET /lease`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseView {
    /// The holder while its lease has not expired.
    pub holder: Option<String>,
    /// The last fence (0 when there never was a lease).
    pub fence: u64,
    /// How long the holder's lease has left.
    pub expires_in: Duration,
    /// The holder's process id, when it told the instance.
    pub pid: Option<u64>,
    /// Every holder's claims.
    pub claims: Vec<Claim>,
}

fn claims_of(body: &Value) -> Result<Vec<Claim>, SnError> {
    let Some(items) = body.get("claims").and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    items
        .iter()
        .map(|item| {
            match (
                item.get("holder").and_then(Value::as_str),
                item.get("sys_id").and_then(Value::as_str),
            ) {
                (Some(holder), Some(sys_id)) => Ok(Claim {
                    holder: holder.to_string(),
                    sys_id: sys_id.to_string(),
                }),
                _ => Err(SnError::Malformed(
                    "lease answer with a claim without holder and sys_id".into(),
                )),
            }
        })
        .collect()
}

fn seconds(value: Option<&Value>) -> Duration {
    Duration::from_secs(value.and_then(Value::as_u64).unwrap_or(0))
}

impl Instance {
    /// Takes or renews the lease for `holder` for `ttl`, telling the instance this process's
    /// `pid`; with `claims`, they become the holder's claim set (at most [`MAX_CLAIMS`]).
    /// A lease held by another keeper is an answer, not an error.
    pub async fn take_lease(
        &self,
        holder: &str,
        ttl: Duration,
        pid: u32,
        claims: Option<&[String]>,
    ) -> Result<LeaseAnswer, SnError> {
        let url = self.url(&format!("{}/lease", self.companion_path));
        let mut body = serde_json::json!({
            "holder": holder,
            "ttl_seconds": ttl.as_secs(),
            "pid": pid,
        });
        if let Some(claims) = claims {
            body["claims"] = Value::from(claims.to_vec());
        }
        // Taking or renewing twice is the same as once: safe to send again.
        let answer = self
            .call_as(Method::POST, url, Some(body), true, Decode::Conflict)
            .await?;
        let others = claims_of(&answer.body)?;
        let result = answer.body.get("result");
        if answer.status == 409 {
            let holder = result
                .and_then(|r| r.get("holder"))
                .and_then(Value::as_str)
                .ok_or_else(|| SnError::Malformed("409 lease answer without a holder".into()))?;
            let detail = answer
                .body
                .get("error")
                .and_then(|e| e.get("detail"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .chars()
                .take(300)
                .collect();
            return Ok(LeaseAnswer::HeldElsewhere {
                holder: holder.to_string(),
                expires_in: seconds(result.and_then(|r| r.get("expires_in"))),
                detail,
                others,
            });
        }
        let fence = result
            .and_then(|r| r.get("fence"))
            .and_then(Value::as_u64)
            .ok_or_else(|| SnError::Malformed("lease answer without a fence".into()))?;
        Ok(LeaseAnswer::Held { fence, others })
    }

    /// Releases the lease if `holder` holds it (its claims stay).
    pub async fn release_lease(&self, holder: &str) -> Result<(), SnError> {
        let mut url = self.url(&format!("{}/lease", self.companion_path));
        url.query_pairs_mut().append_pair("holder", holder);
        self.call(Method::DELETE, url, None, true).await.map(|_| ())
    }

    /// Removes `holder`'s claims on `sys_ids`, whether or not it holds the lease.
    pub async fn drop_claims(&self, holder: &str, sys_ids: &[String]) -> Result<(), SnError> {
        for batch in sys_ids.chunks(super::COMPANION_BATCH) {
            let mut url = self.url(&format!("{}/lease/claims", self.companion_path));
            url.query_pairs_mut()
                .append_pair("holder", holder)
                .append_pair("sys_id", &batch.join(","));
            self.call(Method::DELETE, url, None, true).await?;
        }
        Ok(())
    }

    /// The lease and every claim as the instance has them, without taking anything.
    pub async fn read_lease(&self) -> Result<LeaseView, SnError> {
        let url = self.url(&format!("{}/lease", self.companion_path));
        let answer = self.call(Method::GET, url, None, true).await?;
        let result = answer.body.get("result");
        Ok(LeaseView {
            holder: result
                .and_then(|r| r.get("holder"))
                .and_then(Value::as_str)
                .map(str::to_string),
            fence: result
                .and_then(|r| r.get("fence"))
                .and_then(Value::as_u64)
                .unwrap_or(0),
            expires_in: seconds(result.and_then(|r| r.get("expires_in"))),
            pid: result.and_then(|r| r.get("pid")).and_then(Value::as_u64),
            claims: claims_of(&answer.body)?,
        })
    }
}
