//! From [`Obtained`] to [`Released`](crate::transaction::Released), a batch at a time: one
//! batched race check, the writes (at most `concurrency` in flight), one batched verification,
//! then each answer released — or kept journaled, with the attempt noted. Fresh answers and
//! answers an earlier run left in the journal go the same way.

use super::Keeper;
use crate::domain::classify::FailureClass;
use crate::domain::credential::Credential;
use crate::domain::cycle::adopt_access_row;
use crate::domain::guidance;
use crate::domain::report::{Outcome, Settled};
use crate::journal::{BadRecord, Journal, Obtained};
use crate::servicenow::{COMPANION_BATCH, NotProven, RaceVerdict, SnError, Verified, Written};
use crate::transaction::Transition;
use std::collections::HashMap;
use std::sync::Arc;

/// Why an answer did not provably reach ServiceNow; it stays in custody.
#[derive(Debug, thiserror::Error)]
pub(super) enum DeliveryError {
    /// A write (or the race check before it) failed.
    #[error(transparent)]
    Instance(#[from] SnError),
    /// The writes were answered, but do not prove the answer stored.
    #[error("{0}")]
    NotProven(NotProven),
}

impl DeliveryError {
    /// The failure class and what to do.
    fn verdict(&self) -> (FailureClass, String) {
        match self {
            DeliveryError::NotProven(NotProven::NotStored(why)) => (
                FailureClass::WriteNotStored,
                guidance::write_not_stored(why),
            ),
            DeliveryError::NotProven(NotProven::Unconfirmed(e)) => (
                FailureClass::Instance,
                guidance::unverifiable(&e.to_string(), e.endpoint_missing()),
            ),
            DeliveryError::Instance(e) => (FailureClass::Instance, e.to_string()),
        }
    }
}

/// Whether a batch holds fresh answers or answers an earlier run journaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    /// Answered by the provider in this cycle.
    Fresh,
    /// Read back from the journal.
    Journaled,
}

impl Keeper {
    /// Delivers a batch of answers (at most one per credential). Results by credential.
    /// `writes` bounds the writes in flight across every batch of the cycle.
    pub(super) async fn deliver_batch(
        &self,
        journal: &Arc<Journal>,
        batch: Vec<Obtained>,
        origin: Origin,
        writes: &Arc<tokio::sync::Semaphore>,
    ) -> Vec<(String, Settled)> {
        let refs: Vec<&Obtained> = batch.iter().collect();
        let verdicts = match self.instance.race_check(&refs).await {
            Ok(verdicts) => verdicts,
            Err(e) => {
                let mut settled = Vec::with_capacity(batch.len());
                for obtained in batch {
                    settled.push(
                        self.undelivered(journal, obtained, e.clone().into(), origin)
                            .await,
                    );
                }
                return settled;
            }
        };
        let mut tasks = tokio::task::JoinSet::new();
        for obtained in batch {
            let verdict = verdicts.get(obtained.credential()).copied();
            let (keeper, journal, semaphore) =
                (self.clone(), Arc::clone(journal), Arc::clone(writes));
            // The write's future is boxed once its permit is taken: the tasks that wait for a
            // permit (a whole batch, while the batch before it writes) stay small.
            tasks.spawn(async move {
                let _permit = semaphore.acquire_owned().await;
                Box::pin(keeper.write(&journal, obtained, verdict)).await
            });
        }
        let mut written = Vec::new();
        let mut settled = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(w)) => written.push(w),
                Ok(Err((obtained, e))) => {
                    settled.push(self.undelivered(journal, obtained, e.into(), origin).await);
                }
                Err(e) => {
                    tracing::error!(event = "credential.task_failed", error = %e, "a write task ended abnormally; its answer stays in the journal");
                }
            }
        }
        // One verification for the whole batch (100 rows a call). Its answers are released (or
        // their attempts noted) together: the journal commits concurrent writes as one group,
        // one fsync, where one after the other they took one each.
        let mut settling = tokio::task::JoinSet::new();
        for result in self.instance.verify(written).await {
            let (keeper, journal) = (self.clone(), Arc::clone(journal));
            settling.spawn(async move {
                match result {
                    Ok(verified) => keeper.delivered(&journal, verified, origin).await,
                    Err(u) => {
                        keeper
                            .undelivered(
                                &journal,
                                *u.obtained,
                                DeliveryError::NotProven(u.reason),
                                origin,
                            )
                            .await
                    }
                }
            });
        }
        while let Some(joined) = settling.join_next().await {
            match joined {
                Ok(result) => settled.push(result),
                Err(e) => {
                    tracing::error!(event = "credential.task_failed", error = %e, "a settling task ended abnormally; an answer it had not released stays in the journal");
                }
            }
        }
        settled
    }

    /// A cycle's bound on writes in flight: `concurrency`, like its token requests.
    pub(super) fn write_limit(&self) -> Arc<tokio::sync::Semaphore> {
        Arc::new(tokio::sync::Semaphore::new(
            self.settings.refresh.concurrency,
        ))
    }

    /// One answer's writes: the refresh row (as the race check allows), then the access row.
    async fn write(
        &self,
        journal: &Journal,
        mut obtained: Obtained,
        verdict: Option<RaceVerdict>,
    ) -> Result<Written, (Obtained, SnError)> {
        let refresh = match self.instance.write_refresh_row(&obtained, verdict).await {
            Ok(receipt) => receipt,
            Err(e) => return Err((obtained, e)),
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
            Err(e) => return Err((obtained, e)),
        };
        if access.created()
            && let Err(e) = journal
                .note_access_row_created(&mut obtained, access.sys_id())
                .await
        {
            tracing::error!(event = "journal.write_failed", credential = %obtained.credential(), error = %e, "could not note the created access row");
        }
        self.reached(obtained.credential(), Transition::Written)
            .await;
        Ok(Written::new(obtained, refresh, access))
    }

    /// A verified answer: released from the journal and reported.
    async fn delivered(
        &self,
        journal: &Journal,
        verified: Verified,
        origin: Origin,
    ) -> (String, Settled) {
        let credential = verified.credential().to_string();
        self.reached(&credential, Transition::Verified).await;
        match journal.release(verified.clone()).await {
            Ok(_) => self.reached(&credential, Transition::Released).await,
            // The record stays and is delivered again next cycle: harmless.
            Err(e) => {
                tracing::error!(event = "journal.write_failed", credential = %credential, error = %e, "could not update the journal record");
            }
        }
        let settled = match origin {
            Origin::Fresh => {
                tracing::info!(
                    event = "credential.refreshed",
                    credential = %credential,
                    registry = %verified.registry(),
                    rotated = verified.rotated_stored,
                    created_access_row = verified.created_access_row,
                    access_expires = %crate::domain::time::format_sn_utc(verified.access_expires),
                    "credential refreshed"
                );
                Outcome::Refreshed {
                    rotated: verified.rotated_stored,
                    created_access_row: verified.created_access_row,
                }
            }
            Origin::Journaled => {
                tracing::info!(event = "journal.redelivered", credential = %credential, registry = %verified.registry(), record = %verified.record().unwrap_or_default(), "journaled answer delivered to ServiceNow");
                Outcome::Redelivered
            }
        };
        (
            credential,
            Settled {
                outcome: settled,
                access_expires: Some(verified.access_expires),
                refresh_expires: verified.refresh_expires,
            },
        )
    }

    /// An answer that did not provably reach ServiceNow: it stays journaled (the attempt is
    /// noted) and is delivered again next cycle.
    async fn undelivered(
        &self,
        journal: &Journal,
        mut obtained: Obtained,
        error: DeliveryError,
        origin: Origin,
    ) -> (String, Settled) {
        let credential = obtained.credential().to_string();
        let registry = obtained.delivery().registry.clone();
        let (class, advice) = error.verdict();
        if let Err(e) = journal
            .note_failure(&mut obtained, &error.to_string())
            .await
        {
            tracing::error!(event = "journal.write_failed", credential = %credential, error = %e, "could not update the journal record");
        }
        let message = match (origin, class) {
            (_, FailureClass::WriteNotStored) => advice,
            (Origin::Fresh, _) => guidance::write_failed(&advice),
            (Origin::Journaled, _) => guidance::redelivery_failed(&advice),
        };
        match origin {
            Origin::Fresh => {
                tracing::error!(event = "credential.write_failed", credential = %credential, registry = %registry, class = class.label(), who = class.who_acts(), error = %error, guidance = %message, "write-back not proven; answer kept in the journal");
            }
            Origin::Journaled => {
                tracing::error!(event = "journal.redelivery_failed", credential = %credential, registry = %registry, record = %obtained.record().unwrap_or_default(), class = class.label(), who = class.who_acts(), error = %error, guidance = %message, "journaled answer still not delivered");
            }
        }
        (
            credential,
            Settled::only(Outcome::Failed { class, message }),
        )
    }

    /// Re-delivers what an earlier run left in the journal, 100 answers a batch; a record that
    /// does not open is reported and holds back only its own credential. Returns the results
    /// and the credentials held (every one with a record).
    pub(super) async fn redeliver_all(
        &self,
        journal: &Arc<Journal>,
        records: Vec<Result<Obtained, Box<BadRecord>>>,
        current: &HashMap<&str, &Credential>,
        stop: &tokio_util::sync::CancellationToken,
    ) -> (Vec<(String, Settled)>, Vec<String>) {
        let mut held = Vec::with_capacity(records.len());
        let mut settled = Vec::new();
        let mut good = Vec::new();
        for record in records {
            match record {
                Ok(mut obtained) => {
                    held.push(obtained.credential().to_string());
                    let row = adopt_access_row(
                        obtained.delivery().access_row.as_deref(),
                        obtained.created_at(),
                        current.get(obtained.credential()).copied(),
                    );
                    obtained.target_access_row(row);
                    good.push(obtained);
                }
                Err(bad) => {
                    held.push(bad.credential.clone());
                    let message = guidance::unreadable_record(&bad.id, &bad.error.to_string());
                    tracing::error!(event = "journal.record_unreadable", credential = %bad.credential, registry = %bad.registry, record = %bad.id, error = %bad.error, guidance = %message, "a journal record does not open; its credential is held back");
                    settled.push((
                        bad.credential,
                        Settled::only(Outcome::Failed {
                            class: FailureClass::Configuration,
                            message,
                        }),
                    ));
                }
            }
        }
        let writes = self.write_limit();
        let mut good = good.into_iter().peekable();
        while good.peek().is_some() {
            if stop.is_cancelled() {
                break;
            }
            let batch: Vec<Obtained> = good.by_ref().take(COMPANION_BATCH).collect();
            settled.extend(
                self.deliver_batch(journal, batch, Origin::Journaled, &writes)
                    .await,
            );
        }
        (settled, held)
    }
}
