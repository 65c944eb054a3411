//! The scratch credential of `check --round-trip`: an `oauth_credential` access row the keeper
//! creates under a registry that is never refreshed, writes exactly as it writes a real token,
//! reads back, and deletes.
//!
//! A scratch row is recognised by three things together: type `access_token`, a name starting
//! with [`SCRATCH_NAME_PREFIX`], and `sys_created_by` the integration user — so a leftover of a
//! crashed run is found and removed by the next one, and no other row ever is.

use super::client::Instance;
use super::decode::field;
use super::error::SnError;
use super::rows::record_of;
use crate::domain::time::{format_sn_in_zone, parse_sn_datetime};
use jiff::Timestamp;
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

/// Every scratch row's name starts with this.
pub const SCRATCH_NAME_PREFIX: &str = "sn-oauth-keeper round-trip";

/// The name of the Application Registry the update set provides for scratch rows (no secret, a
/// token URL that resolves nowhere, grant type client credentials: never refreshed).
pub const SCRATCH_REGISTRY: &str = "sn-oauth-keeper round-trip";

/// The fields a scratch row is read back with.
const SCRATCH_FIELDS: &str =
    "sys_id,type,name,peer,oauth_requestor_profile,user,expires,token_received,sys_created_by";

/// What the instance stored of a scratch row, as the Table API shows it to the integration user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScratchRow {
    /// `sys_id`.
    pub sys_id: String,
    /// `peer` as stored (a sys_id, or empty).
    pub peer: String,
    /// `user` as stored.
    pub user: String,
    /// `expires` in UTC; `None` when empty or unreadable.
    pub expires: Option<Timestamp>,
    /// `token_received` as the Table API returns it; `None` when the user's ACLs hide it.
    pub token_received: Option<String>,
}

/// What a scratch row is written with.
pub struct ScratchWrite<'a> {
    /// The registry's sys_id (`peer`).
    pub peer: &'a str,
    /// The integration user's sys_id (`user`).
    pub user: &'a str,
    /// The token written to `token_received`.
    pub token: &'a SecretString,
    /// The expiry written to `expires`, rendered in the integration user's zone.
    pub expires: Timestamp,
    /// The row's name; starts with [`SCRATCH_NAME_PREFIX`].
    pub name: &'a str,
}

impl Instance {
    /// The sys_id of the registry called `name`, if the integration user can see one.
    pub async fn registry_id(&self, name: &str) -> Result<Option<String>, SnError> {
        let rows = self
            .sample("oauth_entity", &format!("name={name}"), "sys_id,name", 1)
            .await?;
        Ok(rows
            .first()
            .map(|r| field(&Value::Object(r.clone()), "sys_id"))
            .filter(|id| !id.is_empty()))
    }

    /// The sys_ids of scratch rows left by earlier runs (see the module docs).
    pub async fn scratch_leftovers(&self) -> Result<Vec<String>, SnError> {
        let query = format!(
            "type=access_token^nameSTARTSWITH{SCRATCH_NAME_PREFIX}^sys_created_by={}",
            self.username
        );
        let rows = self
            .sample("oauth_credential", &query, "sys_id,name", 100)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| field(&Value::Object(r), "sys_id"))
            .filter(|id| !id.is_empty())
            .collect())
    }

    /// Creates a scratch row exactly as the keeper creates an access row (display-value input,
    /// `expires` in the integration user's zone); returns its sys_id.
    pub async fn create_scratch(&self, write: &ScratchWrite<'_>) -> Result<String, SnError> {
        let zone = self.zone().await;
        let mut fields = Map::new();
        fields.insert("type".into(), Value::from("access_token"));
        fields.insert("peer".into(), Value::from(write.peer));
        fields.insert("user".into(), Value::from(write.user));
        fields.insert("name".into(), Value::from(write.name));
        fields.insert(
            "token_received".into(),
            Value::from(write.token.expose_secret()),
        );
        fields.insert(
            "expires".into(),
            Value::from(format_sn_in_zone(write.expires, &zone.tz)),
        );
        let mut url = self.table_url("oauth_credential", None);
        url.query_pairs_mut()
            .append_pair("sysparm_input_display_value", "true")
            .append_pair("sysparm_display_value", "false")
            .append_pair("sysparm_exclude_reference_link", "true")
            .append_pair("sysparm_fields", "sys_id");
        let answer = self
            .call(Method::POST, url, Some(Value::Object(fields)), false)
            .await?;
        let sys_id = field(&Value::Object(record_of(answer.body)?), "sys_id");
        if sys_id.is_empty() {
            return Err(SnError::Malformed("created row without sys_id".into()));
        }
        Ok(sys_id)
    }

    /// Reads a scratch row back as stored (values, UTC).
    pub async fn read_scratch(&self, sys_id: &str) -> Result<ScratchRow, SnError> {
        let mut url = self.table_url("oauth_credential", Some(sys_id));
        url.query_pairs_mut()
            .append_pair("sysparm_fields", SCRATCH_FIELDS)
            .append_pair("sysparm_display_value", "false")
            .append_pair("sysparm_exclude_reference_link", "true");
        let answer = self.call(Method::GET, url, None, true).await?;
        let record = record_of(answer.body)?;
        let token_received = record
            .get("token_received")
            .map(|v| v.as_str().unwrap_or("").to_string());
        let record = Value::Object(record);
        Ok(ScratchRow {
            sys_id: field(&record, "sys_id"),
            peer: field(&record, "peer"),
            user: field(&record, "user"),
            expires: parse_sn_datetime(&field(&record, "expires")).ok().flatten(),
            token_received,
        })
    }

    /// Deletes an `oauth_credential` row; one already gone counts as deleted.
    pub async fn delete_credential(&self, sys_id: &str) -> Result<(), SnError> {
        let url = self.table_url("oauth_credential", Some(sys_id));
        match self.call(Method::DELETE, url, None, true).await {
            Ok(_) | Err(SnError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
