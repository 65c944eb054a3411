//! Writes of `oauth_credential` rows: the only place the keeper sends a token to the instance.
//! The write methods take an [`Obtained`] — an answer already in the journal's custody — and
//! return receipts of what the instance says it stored, which [`super::verify`] checks before
//! the journal may release the answer.

use super::client::{Instance, TOKEN_COLUMN};
use super::companion::TokenDigest;
use super::error::SnError;
use crate::domain::time::{format_sn_in_zone, format_sn_utc, parse_sn_datetime};
use crate::journal::{AccessTemplate, Obtained};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use url::Url;

/// The integration user's time zone as the keeper learned it.
#[derive(Debug, Clone)]
pub struct Zone {
    /// The zone date-times are written in.
    pub tz: TimeZone,
    /// Whether it is the user's own, or assumed because the user's was empty or unknown.
    pub known: bool,
}

impl Zone {
    fn assumed_utc() -> Zone {
        Zone {
            tz: TimeZone::UTC,
            known: false,
        }
    }
}

/// What the instance answered to one token write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowReceipt {
    sys_id: String,
    expires: Option<Timestamp>,
    created: bool,
    /// The digest of the token written, for `/verify`.
    digest: TokenDigest,
    /// For a created row: the references it should carry and does not (after a repair).
    wrong_references: Vec<&'static str>,
}

impl RowReceipt {
    /// The row written.
    pub fn sys_id(&self) -> &str {
        &self.sys_id
    }

    /// `expires` as the instance stored it (after any correction), in UTC.
    pub fn expires(&self) -> Option<Timestamp> {
        self.expires
    }

    /// Whether the row was created by this write.
    pub fn created(&self) -> bool {
        self.created
    }

    /// The digest of the token written.
    pub fn digest(&self) -> &TokenDigest {
        &self.digest
    }

    /// The references of a created row that still do not hold the sys_ids sent (empty: all
    /// right).
    pub fn wrong_references(&self) -> &[&'static str] {
        &self.wrong_references
    }
}

/// The race check's verdict on overwriting one refresh row; made only by
/// [`Instance::race_check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaceVerdict(Race);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Race {
    /// Nobody else wrote the row, or only other fields: the rotated token goes in.
    Overwrite,
    /// Someone else stored a newer token: theirs is kept.
    KeepTheirs,
}

/// What became of the refresh row of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRowReceipt(RefreshRow);

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RefreshRow {
    /// The provider did not rotate the token: the row keeps it.
    NotRotated,
    /// The rotated token was written now.
    Written(RowReceipt),
    /// Someone else wrote a newer token meanwhile (a re-authorisation, the instance's own
    /// refresh): theirs is kept, ours is not written.
    KeptNewer,
}

impl RefreshRowReceipt {
    /// Whether the rotated token was written to the row.
    pub fn holds_rotated(&self) -> bool {
        matches!(self.0, RefreshRow::Written(_))
    }

    /// Whether this attempt wrote the row.
    pub fn written_now(&self) -> bool {
        matches!(self.0, RefreshRow::Written(_))
    }

    pub(super) fn state(&self) -> &RefreshRow {
        &self.0
    }
}

impl Instance {
    /// The integration user's time zone, learned once (concurrent writes share one lookup).
    /// Unknown or empty falls back to UTC; every write is verified anyway.
    pub async fn zone(&self) -> Zone {
        self.zone
            .get_or_init(|| async {
                match self.integration_user().await {
                    Ok(user) if !user.time_zone.is_empty() => {
                        match TimeZone::get(&user.time_zone) {
                            Ok(tz) => Zone { tz, known: true },
                            Err(_) => {
                                tracing::warn!(event = "instance.time_zone_unknown", time_zone = %user.time_zone, "unknown time zone name; assuming UTC and verifying every write");
                                Zone::assumed_utc()
                            }
                        }
                    }
                    Ok(_) => Zone::assumed_utc(),
                    Err(e) => {
                        tracing::warn!(event = "instance.user_unreadable", error = %e, "cannot read the integration user's time zone; assuming UTC and verifying every write");
                        Zone::assumed_utc()
                    }
                }
            })
            .await
            .clone()
    }

    /// Stores the rotated refresh token of `obtained` in its refresh row — unless it did not
    /// rotate, or the race check (`verdict`, from [`Instance::race_check`]; `None` when the row
    /// could not be read, and is then written) found a newer token from someone else. An
    /// earlier attempt's write is no reason to skip it: only a verification proves a write, and
    /// writing the same token again changes nothing.
    pub async fn write_refresh_row(
        &self,
        obtained: &Obtained,
        verdict: Option<RaceVerdict>,
    ) -> Result<RefreshRowReceipt, SnError> {
        let d = obtained.delivery();
        let Some(rotated) = &d.rotated else {
            return Ok(RefreshRowReceipt(RefreshRow::NotRotated));
        };
        if verdict == Some(RaceVerdict(Race::KeepTheirs)) {
            return Ok(RefreshRowReceipt(RefreshRow::KeptNewer));
        }
        let receipt = self
            .write_token(Some(&d.credential), &rotated.token, rotated.expires, None)
            .await?;
        Ok(RefreshRowReceipt(RefreshRow::Written(receipt)))
    }

    /// Stores the access token of `obtained`: in its access row, or in a new one when it has
    /// none (or the instance's cleanup job deleted it meanwhile). A row an earlier attempt of
    /// this answer created has its references checked again (and repaired): it carries them
    /// only because the keeper put them there.
    pub async fn write_access_row(&self, obtained: &Obtained) -> Result<RowReceipt, SnError> {
        let d = obtained.delivery();
        if let Some(row) = &d.access_row {
            let ours = obtained.access_row_created().then_some(&d.template);
            match self
                .write_token(Some(row), &d.access_token, d.access_expires, ours)
                .await
            {
                Ok(receipt) => return Ok(receipt),
                // The access row vanished meanwhile: create a new one.
                Err(SnError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        self.write_token(None, &d.access_token, d.access_expires, Some(&d.template))
            .await
    }

    /// The race check before overwriting refresh rows: ServiceNow itself (an integration using
    /// the credential) or a person re-authorising may have written a row since discovery. One
    /// batched read of the rows' versions (100 a call); where a row moved and its last writer is
    /// not the keeper, the row's token decides (one batched companion call): if it is still the
    /// one the keeper used, only other fields changed and the rotated token must be stored (the
    /// old one may be dead at a rotating provider); if it is another token, the other writer's
    /// is newer (a re-authorisation or the instance's own refresh) and is kept. Answers that
    /// did not rotate need no check and are left out.
    pub async fn race_check(
        &self,
        batch: &[&Obtained],
    ) -> Result<HashMap<String, RaceVerdict>, SnError> {
        let pending: Vec<&Obtained> = batch
            .iter()
            .copied()
            .filter(|o| o.delivery().rotated.is_some())
            .collect();
        let mut verdicts = HashMap::with_capacity(pending.len());
        if pending.is_empty() {
            return Ok(verdicts);
        }
        let ids: Vec<&str> = pending.iter().map(|o| o.credential()).collect();
        let versions = self.credential_versions(&ids).await?;
        let mut moved = Vec::new();
        for o in &pending {
            let d = o.delivery();
            match versions.get(&d.credential) {
                Some(v) if v.mod_count != d.refresh_mod_count && v.updated_by != self.username => {
                    moved.push(*o);
                }
                // Unchanged, or only the keeper wrote it since (an earlier attempt).
                Some(_) => {
                    verdicts.insert(d.credential.clone(), RaceVerdict(Race::Overwrite));
                }
                // Unreadable now: the write will tell (a deleted row answers 404).
                None => {}
            }
        }
        if moved.is_empty() {
            return Ok(verdicts);
        }
        let moved_ids: Vec<String> = moved.iter().map(|o| o.credential().to_string()).collect();
        let mut current = self.fetch_secrets(&moved_ids).await?;
        for o in moved {
            let d = o.delivery();
            let row_token = current.remove(&d.credential).map(|s| s.refresh_token);
            let unchanged = match (&row_token, &d.previous_refresh_token) {
                (Some(row), Some(used)) => row.expose_secret() == used.expose_secret(),
                (None, _) => true,
                (Some(_), None) => false,
            };
            let writer = versions
                .get(&d.credential)
                .map_or("", |v| v.updated_by.as_str());
            tracing::warn!(
                event = "credential.concurrent_writer",
                credential = %d.credential,
                registry = %d.registry,
                writer = %writer,
                kept = if unchanged { "ours" } else { "theirs" },
                "the refresh row was written by someone else since the keeper read it"
            );
            let race = if unchanged {
                Race::Overwrite
            } else {
                Race::KeepTheirs
            };
            verdicts.insert(d.credential.clone(), RaceVerdict(race));
        }
        Ok(verdicts)
    }

    /// PATCHes (`row = Some`) or creates (`row = None`, from `template`) a token row, then
    /// makes sure `expires` landed right in UTC whatever the integration user's time zone (a
    /// mismatch costs one corrective PATCH without display-value input). With a `template`, the
    /// row's references are checked against it too.
    async fn write_token(
        &self,
        row: Option<&str>,
        token: &SecretString,
        expires: Timestamp,
        template: Option<&AccessTemplate>,
    ) -> Result<RowReceipt, SnError> {
        let zone = self.zone().await;
        let mut fields = Map::new();
        if let (None, Some(t)) = (row, template) {
            fields.insert("type".into(), Value::from("access_token"));
            fields.insert("peer".into(), Value::from(t.peer.clone()));
            fields.insert(
                "oauth_requestor_profile".into(),
                Value::from(t.requestor_profile.clone()),
            );
            fields.insert("user".into(), Value::from(t.user.clone()));
            fields.insert("scopes".into(), Value::from(t.scopes.clone()));
            fields.insert("name".into(), Value::from(t.name.clone()));
        }
        fields.insert(TOKEN_COLUMN.into(), Value::from(token.expose_secret()));
        fields.insert(
            "expires".into(),
            Value::from(format_sn_in_zone(expires, &zone.tz)),
        );
        let record = match (row, template) {
            (Some(id), None) => self.patch_credential(id, fields, true).await?,
            // The answer shows the references, so they are checked without a read.
            (Some(id), Some(_)) => {
                self.patch_credential_fields(id, fields, true, CREATE_FIELDS)
                    .await?
            }
            (None, _) => self.insert_credential(fields).await?,
        };
        let sys_id = match row {
            Some(id) => id.to_string(),
            None => super::decode::field(&Value::Object(record.clone()), "sys_id"),
        };
        if sys_id.is_empty() {
            return Err(SnError::Malformed("created row without sys_id".into()));
        }
        let stored = stored_expires(&record);
        let wrong_references = match template {
            Some(t) => self.check_references(&sys_id, &record, t).await?,
            None => Vec::new(),
        };
        let mut receipt = RowReceipt {
            digest: TokenDigest::of(&sys_id, token),
            sys_id,
            expires: stored,
            created: row.is_none(),
            wrong_references,
        };
        if stored != Some(expires) {
            if !self.zone_warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    event = "instance.time_zone_mismatch",
                    time_zone = %zone.tz.iana_name().unwrap_or("unknown"),
                    known = zone.known,
                    "the instance stored another expiry than intended (integration user's time zone or date format differs); correcting each write with a second PATCH — set the integration user's time zone to UTC to avoid it"
                );
            }
            let mut fix = Map::new();
            fix.insert("expires".into(), Value::from(format_sn_utc(expires)));
            let fixed = self.patch_credential(&receipt.sys_id, fix, false).await?;
            receipt.expires = stored_expires(&fixed);
        }
        Ok(receipt)
    }

    /// The references of a row just created, from the POST's own answer: `peer`,
    /// `oauth_requestor_profile` and `user` must hold the sys_ids sent (a business rule, a data
    /// policy or display-value input may have stored others, or nothing). Wrong ones are
    /// repaired with one PATCH of just those fields as database values; what is still wrong
    /// after it is returned, to be reported.
    async fn check_references(
        &self,
        sys_id: &str,
        record: &Map<String, Value>,
        template: &AccessTemplate,
    ) -> Result<Vec<&'static str>, SnError> {
        let wrong = |record: &Map<String, Value>| -> Vec<(&'static str, String)> {
            references(template)
                .into_iter()
                .filter(|(column, sent)| {
                    super::decode::field(&Value::Object(record.clone()), column) != *sent
                })
                .collect()
        };
        let to_repair = wrong(record);
        if to_repair.is_empty() {
            return Ok(Vec::new());
        }
        let columns: Vec<&str> = to_repair.iter().map(|(c, _)| *c).collect();
        tracing::warn!(event = "credential.reference_repaired", row = %sys_id, columns = %columns.join(","), "a created access row does not hold the references sent; writing them again as database values");
        let mut fix = Map::new();
        for (column, sent) in to_repair {
            fix.insert(column.into(), Value::from(sent));
        }
        let repaired = self
            .patch_credential_fields(sys_id, fix, false, REFERENCE_FIELDS)
            .await?;
        Ok(wrong(&repaired).into_iter().map(|(c, _)| c).collect())
    }

    /// A write that changes nothing, to prove the integration user may write `sys_id` (used by
    /// `check`): its `expires` written back as read, without display-value input.
    pub async fn rewrite_expires(&self, sys_id: &str, expires: &str) -> Result<(), SnError> {
        let mut change = Map::new();
        change.insert("expires".into(), Value::from(expires));
        self.patch_credential(sys_id, change, false)
            .await
            .map(|_| ())
    }

    /// PATCHes an `oauth_credential` row. `display_values` sends
    /// `sysparm_input_display_value=true`, without which an encrypted column is stored unusable;
    /// it also makes the instance read date-times in the user's time zone. Returns the record.
    async fn patch_credential(
        &self,
        sys_id: &str,
        fields: Map<String, Value>,
        display_values: bool,
    ) -> Result<Map<String, Value>, SnError> {
        self.patch_credential_fields(sys_id, fields, display_values, WRITE_FIELDS)
            .await
    }

    /// [`Instance::patch_credential`], answered with the columns `answer_fields`.
    async fn patch_credential_fields(
        &self,
        sys_id: &str,
        fields: Map<String, Value>,
        display_values: bool,
        answer_fields: &str,
    ) -> Result<Map<String, Value>, SnError> {
        let mut url = self.table_url("oauth_credential", Some(sys_id));
        write_params(&mut url, display_values, answer_fields);
        let answer = self
            .call(Method::PATCH, url, Some(Value::Object(fields)), true)
            .await?;
        record_of(answer.body)
    }

    /// Creates an `oauth_credential` row (always with display-value input: it carries a token).
    /// Returns the record.
    async fn insert_credential(
        &self,
        fields: Map<String, Value>,
    ) -> Result<Map<String, Value>, SnError> {
        let mut url = self.table_url("oauth_credential", None);
        // A created row's answer shows its references, so they are checked without a read.
        write_params(&mut url, true, CREATE_FIELDS);
        let answer = self
            .call(Method::POST, url, Some(Value::Object(fields)), false)
            .await?;
        record_of(answer.body)
    }
}

/// `expires` of a write's answer (the instance answers in UTC with `sysparm_display_value=false`).
fn stored_expires(record: &Map<String, Value>) -> Option<Timestamp> {
    record
        .get("expires")
        .and_then(Value::as_str)
        .and_then(|v| parse_sn_datetime(v).ok().flatten())
}

/// The columns a write is answered with.
const WRITE_FIELDS: &str = "sys_id,type,expires,sys_mod_count,sys_updated_on";
/// The columns a create is answered with: the write's, and the references.
const CREATE_FIELDS: &str =
    "sys_id,type,expires,sys_mod_count,sys_updated_on,peer,oauth_requestor_profile,user";
/// The columns a reference repair is answered with.
const REFERENCE_FIELDS: &str = "sys_id,peer,oauth_requestor_profile,user";

/// The references a created access row carries, with the sys_ids sent.
fn references(t: &AccessTemplate) -> [(&'static str, String); 3] {
    [
        ("peer", t.peer.clone()),
        ("oauth_requestor_profile", t.requestor_profile.clone()),
        ("user", t.user.clone()),
    ]
}

fn write_params(url: &mut Url, display_values: bool, answer_fields: &str) {
    url.query_pairs_mut()
        .append_pair(
            "sysparm_input_display_value",
            if display_values { "true" } else { "false" },
        )
        .append_pair("sysparm_display_value", "false")
        .append_pair("sysparm_exclude_reference_link", "true")
        .append_pair("sysparm_fields", answer_fields);
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
