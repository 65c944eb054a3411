//! Writes of `oauth_credential` rows: the only place the keeper sends a token to the instance.

use super::client::Instance;
use super::error::SnError;
use reqwest::Method;
use serde_json::{Map, Value};
use url::Url;

impl Instance {
    /// PATCHes an `oauth_credential` row. `display_values` sends
    /// `sysparm_input_display_value=true`, without which an encrypted column is stored unusable;
    /// it also makes the instance read date-times in the user's time zone. Returns the record.
    pub async fn patch_credential(
        &self,
        sys_id: &str,
        fields: Map<String, Value>,
        display_values: bool,
    ) -> Result<Map<String, Value>, SnError> {
        let mut url = self.table_url("oauth_credential", Some(sys_id));
        write_params(&mut url, display_values);
        let answer = self
            .call(Method::PATCH, url, Some(Value::Object(fields)), true)
            .await?;
        record_of(answer.body)
    }

    /// Creates an `oauth_credential` row (always with display-value input: it carries a token).
    /// Returns the record.
    pub async fn insert_credential(
        &self,
        fields: Map<String, Value>,
    ) -> Result<Map<String, Value>, SnError> {
        let mut url = self.table_url("oauth_credential", None);
        write_params(&mut url, true);
        let answer = self
            .call(Method::POST, url, Some(Value::Object(fields)), false)
            .await?;
        record_of(answer.body)
    }

}

fn write_params(url: &mut Url, display_values: bool) {
    url.query_pairs_mut()
        .append_pair(
            "sysparm_input_display_value",
            if display_values { "true" } else { "false" },
        )
        .append_pair("sysparm_display_value", "false")
        .append_pair("sysparm_exclude_reference_link", "true")
        .append_pair(
            "sysparm_fields",
            "sys_id,type,expires,sys_mod_count,sys_updated_on",
        );
}

pub(super) fn record_of(body: Value) -> Result<Map<String, Value>, SnError> {
    match body {
        Value::Object(mut map) => match map.remove("result") {
            Some(Value::Object(record)) => Ok(record),
            _ => Err(SnError::Malformed(
                "write answer without a result record".into(),
            )),
        },
        _ => Err(SnError::Malformed("write answer is not an object".into())),
    }
}
