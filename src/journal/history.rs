//! What the keeper remembers between cycles: each credential's last outcome (for `status`, for
//! parking a dead credential, for saying a recovery once), the registries parked after a
//! configuration error, and what was said about registries' routes (to say it once per change).
//! Not secret: classes, messages, sys_ids, digests and token endpoint URLs.

use super::{Journal, JournalError};
use crate::domain::classify::FailureClass;
use crate::domain::endpoint::{RouteNotice, Topic};
use crate::domain::history::{OutcomeRecord, StoredOutcome};
use crate::domain::park::RegistryPark;
use jiff::Timestamp;
use rusqlite::params;
use std::collections::HashMap;

/// Stores a credential's outcome; a success (`?7`) also moves `last_success`.
const OUTCOME_UPSERT: &str = "INSERT INTO outcome (credential, registry, class, message, at, refresh_mod_count, last_success)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, CASE WHEN ?7 THEN ?5 ELSE NULL END)
     ON CONFLICT(credential) DO UPDATE SET registry = ?2, class = ?3, message = ?4, at = ?5,
       refresh_mod_count = ?6, last_success = CASE WHEN ?7 THEN ?5 ELSE last_success END";

fn timestamp(secs: i64) -> Timestamp {
    Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH)
}

impl Journal {
    /// Remembers a cycle's outcomes in one write (one fsync for a whole cycle).
    pub async fn record_outcomes(&self, records: Vec<OutcomeRecord>) -> Result<(), JournalError> {
        let now = self.clock.now().as_second();
        self.write(move |c| {
            for r in &records {
                let mod_count = i64::try_from(r.refresh_mod_count).unwrap_or(i64::MAX);
                let message = r
                    .message
                    .as_ref()
                    .map(|m| m.chars().take(500).collect::<String>());
                c.execute(
                    OUTCOME_UPSERT,
                    params![
                        r.credential,
                        r.registry,
                        r.class.map(FailureClass::label),
                        message,
                        now,
                        mod_count,
                        r.class.is_none()
                    ],
                )?;
            }
            Ok(())
        })
        .await
    }

    /// Every remembered outcome, by credential.
    pub fn outcomes(&self) -> Result<HashMap<String, StoredOutcome>, JournalError> {
        self.with_conn(|c| {
            let mut stmt = c.prepare(
                "SELECT credential, class, message, at, refresh_mod_count, last_success FROM outcome",
            )?;
            let rows = stmt
                .query_map([], |r| {
                    let class: Option<String> = r.get(1)?;
                    Ok((
                        r.get::<_, String>(0)?,
                        StoredOutcome {
                            class: class.as_deref().and_then(FailureClass::from_label),
                            message: r.get(2)?,
                            at: timestamp(r.get(3)?),
                            refresh_mod_count: u64::try_from(r.get::<_, i64>(4)?).unwrap_or(0),
                            last_success: r.get::<_, Option<i64>>(5)?.map(timestamp),
                        },
                    ))
                })?
                .collect::<Result<HashMap<_, _>, _>>()?;
            Ok(rows)
        })
    }

    /// The other keepers' claims this keeper has seen, by credential: the claiming holder and
    /// the refresh row's `sys_mod_count` when first seen (a later change makes the claim stale).
    pub fn foreign_claims_seen(&self) -> Result<HashMap<String, (String, u64)>, JournalError> {
        self.with_conn(|c| {
            let mut stmt = c.prepare("SELECT credential, holder, mod_count FROM foreign_claim")?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        (
                            r.get::<_, String>(1)?,
                            u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                        ),
                    ))
                })?
                .collect::<Result<HashMap<_, _>, _>>()?;
            Ok(rows)
        })
    }

    /// Replaces the other keepers' claims seen (one write).
    pub async fn note_foreign_claims(
        &self,
        seen: HashMap<String, (String, u64)>,
    ) -> Result<(), JournalError> {
        self.write(move |c| {
            c.execute("DELETE FROM foreign_claim", [])?;
            for (credential, (holder, mods)) in &seen {
                c.execute(
                    "INSERT INTO foreign_claim (credential, holder, mod_count) VALUES (?1, ?2, ?3)",
                    params![credential, holder, i64::try_from(*mods).unwrap_or(i64::MAX)],
                )?;
            }
            Ok(())
        })
        .await
    }

    /// Parks a registry after a configuration error, with the fingerprint of the configuration
    /// that failed: it stays parked until that fingerprint changes.
    pub async fn park_registry(&self, park: &RegistryPark) -> Result<(), JournalError> {
        let p = park.clone();
        self.write(move |c| {
            c.execute(
                "INSERT INTO registry_park (registry, name, class, message, fingerprint, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(registry) DO UPDATE SET name = ?2, class = ?3, message = ?4, fingerprint = ?5, at = ?6",
                params![p.registry, p.name, p.class.label(), p.message, p.fingerprint, p.at.as_second()],
            )?;
            Ok(())
        })
        .await
    }

    /// Unparks a registry.
    pub async fn unpark_registry(&self, registry: &str) -> Result<(), JournalError> {
        let registry = registry.to_string();
        self.write(move |c| {
            c.execute(
                "DELETE FROM registry_park WHERE registry = ?1",
                params![registry],
            )?;
            Ok(())
        })
        .await
    }

    /// Every parked registry, by sys_id.
    pub fn parked_registries(&self) -> Result<HashMap<String, RegistryPark>, JournalError> {
        self.with_conn(|c| {
            let mut stmt = c.prepare(
                "SELECT registry, name, class, message, fingerprint, at FROM registry_park",
            )?;
            let rows = stmt
                .query_map([], |r| {
                    let class: String = r.get(2)?;
                    Ok(RegistryPark {
                        registry: r.get(0)?,
                        name: r.get(1)?,
                        class: FailureClass::from_label(&class)
                            .unwrap_or(FailureClass::Configuration),
                        message: r.get(3)?,
                        fingerprint: r.get(4)?,
                        at: timestamp(r.get(5)?),
                    })
                })?
                .filter_map(Result::ok)
                .map(|p| (p.registry.clone(), p))
                .collect();
            Ok(rows)
        })
    }
}

impl Journal {
    /// What was last said about registries' routes, by registry and topic: what once-per-change
    /// notices compare against.
    pub fn route_notices(&self) -> Result<HashMap<(String, Topic), String>, JournalError> {
        self.with_conn(|c| {
            let mut stmt = c.prepare("SELECT registry, topic, said FROM route_notice")?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })?
                .filter_map(Result::ok)
                .filter_map(|(registry, topic, said)| {
                    Topic::parse(&topic).map(|t| ((registry, t), said))
                })
                .collect();
            Ok(rows)
        })
    }

    /// Remembers that `notice` was said.
    pub async fn remember_route_notice(&self, notice: &RouteNotice) -> Result<(), JournalError> {
        let (registry, topic, said) = (
            notice.registry.clone(),
            notice.topic.as_str(),
            notice.said.clone(),
        );
        let now = self.clock.now().as_second();
        self.write(move |c| {
            c.execute(
                "INSERT INTO route_notice (registry, topic, said, at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(registry, topic) DO UPDATE SET said = ?3, at = ?4",
                params![registry, topic, said, now],
            )?;
            Ok(())
        })
        .await
    }

    /// Forgets a notice that no longer holds.
    pub async fn forget_route_notice(
        &self,
        registry: &str,
        topic: Topic,
    ) -> Result<(), JournalError> {
        let registry = registry.to_string();
        self.write(move |c| {
            c.execute(
                "DELETE FROM route_notice WHERE registry = ?1 AND topic = ?2",
                params![registry, topic.as_str()],
            )?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::domain::endpoint::HeldBack;
    use crate::journal::JournalKey;

    #[tokio::test]
    async fn outcomes_remember_failures_and_successes() {
        let dir = tempfile::tempdir().unwrap();
        let t1 = Timestamp::from_second(100).unwrap();
        let clock = ManualClock::new(t1);
        let j = Journal::open(dir.path(), Some(&JournalKey::random().unwrap()))
            .unwrap()
            .with_clock(clock.clone());
        let record = |class, message: Option<&str>, mods| OutcomeRecord {
            credential: "r1".into(),
            registry: "G".into(),
            class,
            message: message.map(str::to_string),
            refresh_mod_count: mods,
        };
        j.record_outcomes(vec![record(None, None, 1)])
            .await
            .unwrap();
        clock.advance(std::time::Duration::from_secs(100));
        j.record_outcomes(vec![record(
            Some(FailureClass::NeedsReauth),
            Some("invalid_grant"),
            2,
        )])
        .await
        .unwrap();
        let o = &j.outcomes().unwrap()["r1"];
        assert_eq!(o.class, Some(FailureClass::NeedsReauth));
        assert_eq!(o.last_success, Some(t1));
        assert_eq!(o.at.as_second(), 200);
        assert_eq!(o.refresh_mod_count, 2);
    }

    #[tokio::test]
    async fn route_notices_are_remembered_until_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), Some(&JournalKey::random().unwrap())).unwrap();
        let notice = RouteNotice {
            registry: "e1".into(),
            name: "Graph".into(),
            topic: Topic::HeldBack,
            said: "held back: evil.example/a".into(),
            verdict: Err(HeldBack::Unpinned {
                host: "evil.example".into(),
                rule: 0,
                entra_only: false,
            }),
        };
        j.remember_route_notice(&notice).await.unwrap();
        j.remember_route_notice(&RouteNotice {
            said: "held back: evil.example/b".into(),
            ..notice.clone()
        })
        .await
        .unwrap();
        let said = j.route_notices().unwrap();
        assert_eq!(
            said.get(&("e1".to_string(), Topic::HeldBack))
                .map(String::as_str),
            Some("held back: evil.example/b")
        );
        j.forget_route_notice("e1", Topic::HeldBack).await.unwrap();
        assert!(j.route_notices().unwrap().is_empty());
    }
}
