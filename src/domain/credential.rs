//! `oauth_credential` rows and how they pair into credentials.
//!
//! ServiceNow keeps one row per token. A *credential* here is a refresh-token row plus the
//! access-token row that belongs to it: same `oauth_requestor_profile` and same `peer`
//! (Application Registry). Where several access rows match, the one that expires last wins.

use jiff::Timestamp;
use std::collections::HashMap;
use std::sync::Arc;

/// Whether `text` is a ServiceNow sys_id: 32 hexadecimal characters. Row ids go into URLs and
/// the companion's comma-separated query, so nothing else is taken for one.
pub fn is_sys_id(text: &str) -> bool {
    text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The `type` column of `oauth_credential`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenType {
    /// `access_token`
    Access,
    /// `refresh_token`
    Refresh,
}

/// The Application Registry (`oauth_entity`) a row points to through `peer`, as dot-walked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registry {
    /// `oauth_entity.sys_id` (the row's `peer`).
    pub sys_id: String,
    /// `oauth_entity.name`.
    pub name: String,
    /// `oauth_entity.client_id`.
    pub client_id: String,
    /// `oauth_entity.token_url`.
    pub token_url: String,
    /// `oauth_entity.default_grant_type`: `client_credentials` registries never use refresh
    /// tokens (ServiceNow requests a new token by itself), so their rows are left alone.
    pub default_grant_type: String,
    /// `oauth_entity.sys_updated_on` as sent: it changes when an admin fixes the registry, which
    /// unparks a registry parked for a configuration error.
    pub updated: String,
}

/// One `oauth_credential` row, without any secret (encrypted columns are never read through the
/// Table API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialRow {
    /// `sys_id`.
    pub sys_id: String,
    /// `type`.
    pub token_type: TokenType,
    /// `oauth_requestor_profile` (sys_id).
    pub requestor_profile: String,
    /// `user` (sys_id), copied onto a newly created access row.
    pub user: String,
    /// `scopes`, the scope string sent on refresh when the registry config gives none.
    pub scopes: String,
    /// `name`.
    pub name: String,
    /// `expires` (UTC); `None` when empty.
    pub expires: Option<Timestamp>,
    /// `sys_updated_on` (UTC): for a refresh row, when it was last rotated or written.
    pub updated: Option<Timestamp>,
    /// `sys_mod_count`: moves whenever anyone writes the row.
    pub mod_count: u64,
    /// The registry behind `peer`, shared by the rows of one registry (the same six strings on
    /// every row of an estate of tens of thousands would be a third of its memory).
    pub registry: Arc<Registry>,
}

/// A refresh-token row with its matching access-token row, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The refresh-token row; its sys_id identifies the credential everywhere.
    pub refresh: CredentialRow,
    /// The access-token row that belongs to it; `None` is the common SharePoint case.
    pub access: Option<CredentialRow>,
}

impl Credential {
    /// The credential's id: the refresh row's sys_id.
    pub fn id(&self) -> &str {
        &self.refresh.sys_id
    }

    /// When a token was last minted from this refresh token, as far as the instance shows it:
    /// the later of the two rows' `sys_updated_on`. Providers count inactivity from the last use,
    /// and every successful refresh writes at least the access row.
    pub fn last_used(&self) -> Option<Timestamp> {
        let access = self.access.as_ref().and_then(|a| a.updated);
        match (self.refresh.updated, access) {
            (Some(r), Some(a)) => Some(r.max(a)),
            (r, a) => r.or(a),
        }
    }
}

/// The result of pairing: the credentials and the refresh rows left out because a newer refresh
/// row for the same requestor profile and registry exists (a re-authorisation that did not remove
/// the old row). Refreshing both would write the same access row twice.
#[derive(Debug, Clone, Default)]
pub struct Estate {
    /// One entry per refresh-token credential, ordered by refresh row sys_id.
    pub credentials: Vec<Credential>,
    /// Refresh rows superseded by a newer one for the same profile and registry.
    pub superseded: Vec<CredentialRow>,
}

/// Pairs rows into credentials. Access rows with an empty profile or peer (tokens the instance
/// issued for itself) never match anything; rows of `client_credentials` registries are left
/// out.
pub fn pair(rows: Vec<CredentialRow>) -> Estate {
    // Discovery hands over the whole estate every cycle (tens of thousands of rows), so pairing
    // must cost little more than reading them: decide on borrowed keys, then move each row once.
    // Sized for the usual estate, half refresh rows and half access rows.
    let mut best_access: HashMap<(&str, &str), usize> = HashMap::with_capacity(rows.len() / 2);
    // Per key, the live refresh row: the newest, then the smallest sys_id.
    let mut live: HashMap<(&str, &str), usize> = HashMap::with_capacity(rows.len() / 2);
    let mut refresh_rows = Vec::new();
    for (position, row) in rows.iter().enumerate() {
        if row.registry.default_grant_type == "client_credentials" {
            continue;
        }
        let key = (row.requestor_profile.as_str(), row.registry.sys_id.as_str());
        let (chosen, better): (_, fn(&CredentialRow, &CredentialRow) -> bool) = match row.token_type
        {
            TokenType::Access if key.0.is_empty() || key.1.is_empty() => continue,
            TokenType::Access => (&mut best_access, expires_later),
            TokenType::Refresh => {
                refresh_rows.push(position);
                (&mut live, newer)
            }
        };
        match chosen.get_mut(&key) {
            Some(best) if !better(row, &rows[*best]) => {}
            Some(best) => *best = position,
            None => {
                chosen.insert(key, position);
            }
        }
    }
    // (refresh row, its access row) per live refresh row.
    let mut pairs: Vec<(usize, Option<usize>)> = live
        .iter()
        .map(|(key, &refresh)| {
            let access = if key.0.is_empty() || key.1.is_empty() {
                None
            } else {
                best_access.get(key).copied()
            };
            (refresh, access)
        })
        .collect();
    pairs.sort_unstable();
    let mut is_live = vec![false; rows.len()];
    for &(refresh, _) in &pairs {
        is_live[refresh] = true;
    }
    let superseded: Vec<usize> = refresh_rows.into_iter().filter(|p| !is_live[*p]).collect();
    drop((best_access, live));
    let mut slots: Vec<Option<CredentialRow>> = rows.into_iter().map(Some).collect();
    let mut estate = Estate {
        credentials: pairs
            .into_iter()
            .filter_map(|(refresh, access)| {
                Some(Credential {
                    refresh: slots.get_mut(refresh)?.take()?,
                    access: access.and_then(|a| slots.get_mut(a)?.take()),
                })
            })
            .collect(),
        superseded: superseded
            .into_iter()
            .filter_map(|p| slots.get_mut(p)?.take())
            .collect(),
    };
    // Discovery reads rows ordered by sys_id, so these are usually sorted already (and then
    // cost one comparison per credential).
    estate
        .credentials
        .sort_by(|a, b| a.refresh.sys_id.cmp(&b.refresh.sys_id));
    estate.superseded.sort_by(|a, b| a.sys_id.cmp(&b.sys_id));
    estate
}

/// Whether refresh row `a` is the live one rather than `b` of the same profile and registry:
/// the most recently written wins (a row never written loses), then the smaller sys_id.
fn newer(a: &CredentialRow, b: &CredentialRow) -> bool {
    b.updated.cmp(&a.updated).then(a.sys_id.cmp(&b.sys_id)) == std::cmp::Ordering::Less
}

/// Whether `a` expires later than `b`; a row without expiry never wins over one with it. Ties
/// go to the larger sys_id so the choice does not depend on the order rows arrived in.
fn expires_later(a: &CredentialRow, b: &CredentialRow) -> bool {
    match (a.expires, b.expires) {
        (Some(x), Some(y)) if x != y => x > y,
        (Some(_), None) => true,
        (None, Some(_)) => false,
        _ => a.sys_id > b.sys_id,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn row(
        id: &str,
        token_type: TokenType,
        profile: &str,
        peer: &str,
        expires: Option<i64>,
    ) -> CredentialRow {
        CredentialRow {
            sys_id: id.into(),
            token_type,
            requestor_profile: profile.into(),
            user: "u1".into(),
            scopes: "offline_access".into(),
            name: format!("cred {id}"),
            expires: expires.map(|s| Timestamp::from_second(s).unwrap()),
            updated: Some(Timestamp::from_second(1_000).unwrap()),
            mod_count: 0,
            registry: Arc::new(Registry {
                sys_id: peer.into(),
                name: format!("reg {peer}"),
                client_id: "cid".into(),
                token_url: "https://idp.example/token".into(),
                default_grant_type: "authorization_code".into(),
                updated: String::new(),
            }),
        }
    }

    #[test]
    fn pairs_by_profile_and_peer_choosing_the_latest_expiry() {
        let rows = vec![
            row("r1", TokenType::Refresh, "p1", "e1", Some(9_000)),
            row("a1", TokenType::Access, "p1", "e1", Some(5_000)),
            row("a2", TokenType::Access, "p1", "e1", Some(7_000)),
            row("a3", TokenType::Access, "p1", "e2", Some(8_000)),
            row("r2", TokenType::Refresh, "p2", "e1", None),
            row("a4", TokenType::Access, "", "", Some(8_000)),
        ];
        let estate = pair(rows);
        assert_eq!(estate.credentials.len(), 2);
        let c1 = &estate.credentials[0];
        assert_eq!(c1.id(), "r1");
        assert_eq!(c1.access.as_ref().map(|a| a.sys_id.as_str()), Some("a2"));
        assert!(estate.credentials[1].access.is_none());
    }

    #[test]
    fn newest_refresh_row_wins_and_older_is_superseded() {
        let mut old = row("r1", TokenType::Refresh, "p1", "e1", None);
        old.updated = Some(Timestamp::from_second(10).unwrap());
        let mut new = row("r2", TokenType::Refresh, "p1", "e1", None);
        new.updated = Some(Timestamp::from_second(20).unwrap());
        let estate = pair(vec![old, new]);
        assert_eq!(estate.credentials.len(), 1);
        assert_eq!(estate.credentials[0].id(), "r2");
        assert_eq!(estate.superseded[0].sys_id, "r1");
    }

    #[test]
    fn client_credentials_registries_are_left_out() {
        let mut r = row("r1", TokenType::Refresh, "p1", "e1", None);
        Arc::make_mut(&mut r.registry).default_grant_type = "client_credentials".into();
        assert!(pair(vec![r]).credentials.is_empty());
    }

    #[test]
    fn last_used_is_the_later_update() {
        let mut refresh = row("r1", TokenType::Refresh, "p1", "e1", None);
        refresh.updated = Some(Timestamp::from_second(100).unwrap());
        let mut access = row("a1", TokenType::Access, "p1", "e1", None);
        access.updated = Some(Timestamp::from_second(200).unwrap());
        let c = Credential {
            refresh,
            access: Some(access),
        };
        assert_eq!(c.last_used(), Some(Timestamp::from_second(200).unwrap()));
    }

    /// Pairing as it was first written (group refresh rows per key, sort each group newest
    /// first): the reference the one-pass version must match.
    fn pair_by_groups(rows: Vec<CredentialRow>) -> Estate {
        let mut access_by_key: HashMap<(String, String), CredentialRow> = HashMap::new();
        let mut refresh_by_key: HashMap<(String, String), Vec<CredentialRow>> = HashMap::new();
        for row in rows {
            if row.registry.default_grant_type == "client_credentials" {
                continue;
            }
            let key = (row.requestor_profile.clone(), row.registry.sys_id.clone());
            match row.token_type {
                TokenType::Access => {
                    if key.0.is_empty() || key.1.is_empty() {
                        continue;
                    }
                    match access_by_key.get(&key) {
                        Some(existing) if !expires_later(&row, existing) => {}
                        _ => {
                            access_by_key.insert(key, row);
                        }
                    }
                }
                TokenType::Refresh => refresh_by_key.entry(key).or_default().push(row),
            }
        }
        let mut estate = Estate::default();
        for (key, mut group) in refresh_by_key {
            group.sort_by(|a, b| b.updated.cmp(&a.updated).then(a.sys_id.cmp(&b.sys_id)));
            let mut group = group.into_iter();
            let Some(live) = group.next() else { continue };
            let access = if key.0.is_empty() || key.1.is_empty() {
                None
            } else {
                access_by_key.get(&key).cloned()
            };
            estate.credentials.push(Credential {
                refresh: live,
                access,
            });
            estate.superseded.extend(group);
        }
        estate
            .credentials
            .sort_by(|a, b| a.refresh.sys_id.cmp(&b.refresh.sys_id));
        estate.superseded.sort_by(|a, b| a.sys_id.cmp(&b.sys_id));
        estate
    }

    proptest::proptest! {
        #[test]
        fn a_sys_id_is_exactly_32_hex_characters(text in "[0-9a-fA-F/.,?%g-]{0,34}") {
            let expected = text.len() == 32 && text.chars().all(|c| c.is_ascii_hexdigit());
            proptest::prop_assert_eq!(is_sys_id(&text), expected);
        }

        #[test]
        fn one_pass_pairing_matches_grouping(
            specs in proptest::collection::vec(
                (
                    proptest::bool::ANY,
                    0usize..3,
                    0usize..3,
                    proptest::option::of(0i64..4),
                    proptest::option::of(0i64..4),
                    0usize..8,
                ),
                0..24,
            )
        ) {
            let profiles = ["", "p1", "p2"];
            let peers = ["", "e1", "e2"];
            let rows: Vec<CredentialRow> = specs
                .iter()
                .enumerate()
                .map(|(i, (is_access, profile, peer, expires, updated, grant))| {
                    let token_type = if *is_access { TokenType::Access } else { TokenType::Refresh };
                    // Distinct sys_ids, not in sorted order.
                    let mut r = row(&format!("{:02}", (i * 7) % 97), token_type, profiles[*profile], peers[*peer], expires.map(|e| e * 1_000));
                    r.updated = updated.map(|u| Timestamp::from_second(u * 100).unwrap());
                    if *grant == 0 {
                        Arc::make_mut(&mut r.registry).default_grant_type = "client_credentials".into();
                    }
                    r
                })
                .collect();
            let one = pair(rows.clone());
            let reference = pair_by_groups(rows);
            proptest::prop_assert_eq!(one.credentials, reference.credentials);
            proptest::prop_assert_eq!(one.superseded, reference.superseded);
        }
    }
}
