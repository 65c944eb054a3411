//! Table API reads: discovery of `oauth_credential` (paged), the integration user, a row's
//! version for the race check, samples for `check`, and status events.

use super::client::{Decode, Instance};
use super::decode::{decode_credential_row, field};
use super::error::SnError;
use crate::domain::credential::CredentialRow;
use reqwest::Method;
use serde_json::{Map, Value};
use std::collections::HashMap;
use url::Url;

/// The columns discovery reads: the row itself and its registry, dot-walked through `peer`.
pub const CREDENTIAL_FIELDS: &str = "sys_id,type,peer,oauth_requestor_profile,user,scopes,expires,name,sys_updated_on,sys_mod_count,peer.name,peer.client_id,peer.token_url,peer.default_grant_type,peer.sys_updated_on";

/// Most rows one version read asks for (the length of a `sys_idIN` list stays far below URL
/// limits at 100 sys_ids).
pub const VERSION_BATCH: usize = 100;

/// Most rows discovery reserves room for up front, whatever `X-Total-Count` says.
const MAX_RESERVED_ROWS: usize = 1_000_000;

/// The integration user's `sys_user` record, as far as the keeper needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntegrationUser {
    /// `sys_id`.
    pub sys_id: String,
    /// `time_zone`: empty means the instance's system default.
    pub time_zone: String,
    /// `date_format`: empty means the system default.
    pub date_format: String,
}

/// The version of a row, as the race check reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowVersion {
    /// `sys_mod_count`.
    pub mod_count: u64,
    /// `sys_updated_by`: the user name of the last writer.
    pub updated_by: String,
}

impl Instance {
    /// Reads every `oauth_credential` row of type access or refresh token, following
    /// `Link: rel="next"` (a page may be short while more rows exist: paging never stops on a
    /// short page).
    pub async fn list_credentials(&self) -> Result<Vec<CredentialRow>, SnError> {
        let mut url = self.table_url("oauth_credential", None);
        url.query_pairs_mut()
            .append_pair(
                "sysparm_query",
                "typeINaccess_token,refresh_token^ORDERBYsys_id",
            )
            .append_pair("sysparm_fields", CREDENTIAL_FIELDS)
            .append_pair("sysparm_display_value", "false")
            .append_pair("sysparm_exclude_reference_link", "true")
            .append_pair("sysparm_limit", &self.page_size.to_string())
            .append_pair("sysparm_offset", "0");
        let mut rows = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut offset = 0usize;
        loop {
            if !seen.insert(url.to_string()) {
                return Err(SnError::Malformed(
                    "the Link header points back to a page already read".into(),
                ));
            }
            let answer = self
                .call_as(Method::GET, url.clone(), None, true, Decode::CredentialPage)
                .await?;
            if rows.is_empty()
                && let Some(total) = answer.total_count
            {
                // One allocation for the whole estate instead of doubling through it; bounded,
                // so a wrong header cannot make the keeper reserve gigabytes.
                rows.reserve_exact(total.min(MAX_RESERVED_ROWS));
            }
            let page_len = match answer.rows {
                Some(decoded) => {
                    let len = decoded.len();
                    rows.extend(decoded);
                    len
                }
                None => match answer.body.get("result") {
                    Some(Value::Array(items)) => {
                        rows.extend(items.iter().filter_map(decode_credential_row));
                        items.len()
                    }
                    _ => {
                        return Err(SnError::Malformed(
                            "list answer without a result array".into(),
                        ));
                    }
                },
            };
            let next = match answer.next {
                Some(link) => Some(self.same_origin(&link)?),
                // No Link header (a one-page answer, or pagination headers suppressed): fall
                // back to X-Total-Count so a short page never ends paging early.
                None => match answer.total_count {
                    Some(total) if offset + self.page_size < total => {
                        let mut next = url.clone();
                        set_offset(&mut next, offset + self.page_size);
                        Some(next)
                    }
                    _ => None,
                },
            };
            match next {
                Some(next) => {
                    offset = offset_of(&next).unwrap_or(offset + page_len.max(1));
                    url = next;
                }
                None => return Ok(rows),
            }
        }
    }

    /// Follows a `Link` target on our own origin: the host the instance names may differ behind a
    /// proxy, and credentials must never go to another host.
    fn same_origin(&self, link: &str) -> Result<Url, SnError> {
        let target = Url::parse(link)
            .or_else(|_| self.base.join(link))
            .map_err(|_| SnError::Malformed("unparseable Link header target".into()))?;
        let mut url = self.base.clone();
        url.set_path(target.path());
        url.set_query(target.query());
        Ok(url)
    }

    /// Reads the integration user's record.
    pub async fn integration_user(&self) -> Result<IntegrationUser, SnError> {
        let mut url = self.table_url("sys_user", None);
        url.query_pairs_mut()
            .append_pair("sysparm_query", &format!("user_name={}", self.username))
            .append_pair("sysparm_fields", "sys_id,user_name,time_zone,date_format")
            .append_pair("sysparm_display_value", "false")
            .append_pair("sysparm_limit", "1");
        let answer = self.call(Method::GET, url, None, true).await?;
        let Some(first) = answer
            .body
            .get("result")
            .and_then(Value::as_array)
            .and_then(|rows| rows.first())
        else {
            return Err(SnError::NotFound(format!(
                "no sys_user with user_name {} is readable",
                self.username
            )));
        };
        Ok(IntegrationUser {
            sys_id: field(first, "sys_id"),
            time_zone: field(first, "time_zone"),
            date_format: field(first, "date_format"),
        })
    }

    /// Reads what the race check needs of `oauth_credential` rows — who wrote each last and how
    /// often it was written — at most 100 rows a call (`sys_idIN…`). Rows the integration user
    /// cannot read (or that were deleted) are absent from the map.
    pub async fn credential_versions(
        &self,
        sys_ids: &[&str],
    ) -> Result<HashMap<String, RowVersion>, SnError> {
        let mut versions = HashMap::with_capacity(sys_ids.len());
        for batch in sys_ids.chunks(VERSION_BATCH) {
            let mut url = self.table_url("oauth_credential", None);
            url.query_pairs_mut()
                .append_pair("sysparm_query", &format!("sys_idIN{}", batch.join(",")))
                .append_pair("sysparm_fields", "sys_id,sys_mod_count,sys_updated_by")
                .append_pair("sysparm_display_value", "false")
                .append_pair("sysparm_exclude_reference_link", "true")
                .append_pair("sysparm_limit", &VERSION_BATCH.to_string());
            let answer = self.call(Method::GET, url, None, true).await?;
            let Some(Value::Array(rows)) = answer.body.get("result") else {
                return Err(SnError::Malformed(
                    "list answer without a result array".into(),
                ));
            };
            for row in rows {
                let sys_id = field(row, "sys_id");
                if !batch.contains(&sys_id.as_str()) {
                    continue;
                }
                versions.insert(
                    sys_id,
                    RowVersion {
                        mod_count: field(row, "sys_mod_count").trim().parse().unwrap_or(0),
                        updated_by: field(row, "sys_updated_by"),
                    },
                );
            }
        }
        Ok(versions)
    }

    /// Reads up to `limit` rows of a table with the given fields (used by `check`).
    pub async fn sample(
        &self,
        table: &str,
        query: &str,
        fields: &str,
        limit: usize,
    ) -> Result<Vec<Map<String, Value>>, SnError> {
        let mut url = self.table_url(table, None);
        url.query_pairs_mut()
            .append_pair("sysparm_query", query)
            .append_pair("sysparm_fields", fields)
            .append_pair("sysparm_display_value", "false")
            .append_pair("sysparm_exclude_reference_link", "true")
            .append_pair("sysparm_limit", &limit.to_string());
        let answer = self.call(Method::GET, url, None, true).await?;
        match answer.body.get("result") {
            Some(Value::Array(items)) => Ok(items
                .iter()
                .filter_map(|v| v.as_object().cloned())
                .collect()),
            _ => Err(SnError::Malformed(
                "list answer without a result array".into(),
            )),
        }
    }

    /// Creates a status event row (`[report]`). Not retried beyond what is safe for a POST: a
    /// duplicate event would open a duplicate alert.
    pub async fn create_event(
        &self,
        table: &str,
        fields: Map<String, Value>,
    ) -> Result<(), SnError> {
        let mut url = self.table_url(table, None);
        url.query_pairs_mut()
            .append_pair("sysparm_fields", "sys_id")
            .append_pair("sysparm_exclude_reference_link", "true");
        self.call(Method::POST, url, Some(Value::Object(fields)), false)
            .await
            .map(|_| ())
    }
}

fn set_offset(url: &mut Url, offset: usize) {
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != "sysparm_offset")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut q = url.query_pairs_mut();
    q.clear();
    for (k, v) in pairs {
        q.append_pair(&k, &v);
    }
    q.append_pair("sysparm_offset", &offset.to_string());
}

fn offset_of(url: &Url) -> Option<usize> {
    url.query_pairs()
        .find(|(k, _)| k == "sysparm_offset")
        .and_then(|(_, v)| v.parse().ok())
}
