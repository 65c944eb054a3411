//! From [`Obtained`] to [`Released`](crate::transaction::Released): the writes, their
//! verification, and the journal's release — for a fresh answer and for one an earlier run left
//! in the journal.

use super::Keeper;
use crate::domain::classify::FailureClass;
use crate::domain::credential::Credential;
use crate::domain::cycle::adopt_access_row;
use crate::domain::guidance;
use crate::domain::report::{Outcome, Settled};
use crate::journal::{Journal, Obtained};
use crate::servicenow::{SnError, Verified, Written};
use crate::transaction::Transition;

/// Why an answer did not reach ServiceNow provably; it stays in custody.
#[derive(Debug, thiserror::Error)]
pub(super) enum DeliveryError {
    /// A write failed.
    #[error(transparent)]
    Instance(#[from] SnError),
    /// The writes were answered, but the answers do not show what was written.
    #[error("ServiceNow did not store what was written: {0}")]
    NotStored(String),
}

impl Keeper {
    /// Delivers an answer: Obtained → Written → Verified → Released. On any failure the answer
    /// stays journaled (the attempt is noted) and the next cycle re-delivers it.
    pub(super) async fn deliver(
        &self,
        journal: &Journal,
        obtained: Obtained,
    ) -> Result<Verified, DeliveryError> {
        match self.write_and_verify(journal, obtained).await {
            Ok(verified) => {
                match journal.release(verified.clone()).await {
                    Ok(_) => {
                        self.reached(verified.credential(), Transition::Released)
                            .await
                    }
                    // The record stays and is delivered again next cycle: harmless.
                    Err(e) => {
                        tracing::error!(event = "journal.write_failed", credential = %verified.credential(), error = %e, "could not update the journal record");
                    }
                }
                Ok(verified)
            }
            Err((mut obtained, error)) => {
                if let Err(e) = journal
                    .note_failure(&mut obtained, &error.to_string())
                    .await
                {
                    tracing::error!(event = "journal.write_failed", credential = %obtained.credential(), error = %e, "could not update the journal record");
                }
                Err(error)
            }
        }
    }

    async fn write_and_verify(
        &self,
        journal: &Journal,
        mut obtained: Obtained,
    ) -> Result<Verified, (Obtained, DeliveryError)> {
        let refresh = match self.instance.write_refresh_row(&obtained).await {
            Ok(receipt) => receipt,
            Err(e) => return Err((obtained, e.into())),
        };
        if refresh.written_now() {
            if let Err(e) = journal.note_refresh_row_written(&mut obtained).await {
                tracing::error!(event = "journal.write_failed", credential = %obtained.credential(), error = %e, "could not note the refresh-row delivery");
            }
            self.reached(obtained.credential(), Transition::RefreshRowWritten)
                .await;
        }
        let access = match self.instance.write_access_row(&obtained).await {
            Ok(receipt) => receipt,
            Err(e) => return Err((obtained, e.into())),
        };
        self.reached(obtained.credential(), Transition::Written)
            .await;
        let verified = self
            .instance
            .verify(Written::new(obtained, refresh, access))
            .await
            .map_err(|u| (u.obtained, DeliveryError::NotStored(u.reason)))?;
        self.reached(verified.credential(), Transition::Verified)
            .await;
        Ok(verified)
    }

    /// Re-delivers an answer an earlier run journaled. `current` is the credential as this
    /// cycle read it, to find an access row an interrupted POST created.
    pub(super) async fn redeliver(
        &self,
        journal: &Journal,
        mut obtained: Obtained,
        current: Option<&Credential>,
    ) -> Settled {
        let row = adopt_access_row(
            obtained.delivery().access_row.as_deref(),
            obtained.created_at(),
            current,
        );
        obtained.target_access_row(row);
        let credential = obtained.credential().to_string();
        let registry = obtained.delivery().registry.clone();
        let record = obtained.record().unwrap_or_default().to_string();
        let attempts = obtained.attempts() + 1;
        match self.deliver(journal, obtained).await {
            Ok(verified) => {
                tracing::info!(event = "journal.redelivered", credential = %credential, registry = %registry, record = %record, attempts, "journaled answer delivered to ServiceNow");
                Settled {
                    outcome: Outcome::Redelivered,
                    access_expires: Some(verified.access_expires),
                    refresh_expires: verified.refresh_expires,
                }
            }
            Err(e) => {
                tracing::error!(event = "journal.redelivery_failed", credential = %credential, registry = %registry, record = %record, error = %e, "journaled answer still not delivered");
                Settled::only(Outcome::Failed {
                    class: FailureClass::Instance,
                    message: guidance::redelivery_failed(&e.to_string()),
                })
            }
        }
    }
}
