//! The estate of the `demo` and `simulate` commands: every state a credential can be in, over
//! the provider kinds the keeper meets, plus the rows discovery must leave alone.

use super::{
    ADMIN_SYS_ID, CredentialSpec, DAY, Estate, ExpiresInFormat, HOUR, Planned, PlannedRow,
    ProviderKind, RegistrySpec, secs,
};
use crate::state::new_sys_id;

impl Estate {
    /// The demo estate: 24 live refresh-token credentials over six provider registries
    /// (Entra-like v2 and v1-style with string `expires_in`, Okta-like strict rotation,
    /// Google-like and Salesforce-like (no `expires_in`) non-rotating, and an Entra app whose
    /// stored secret is wrong) in every state, plus rows discovery must skip: a refresh row
    /// the instance considers expired, a refresh row on a client-credentials registry, and an
    /// access token the instance issued for itself (no requestor profile).
    pub fn demo(seed: u64) -> Estate {
        let mut estate = Estate::empty(seed);
        let entra = estate.add_registry(
            RegistrySpec::new("Microsoft Entra ID (Graph mail)", ProviderKind::EntraLike)
                .provider_id("entra"),
        );
        let okta = estate.add_registry(
            RegistrySpec::new("Okta Workforce", ProviderKind::RotatingReuseDetection)
                .provider_id("okta"),
        );
        let google = estate.add_registry(
            RegistrySpec::new("Google Workspace", ProviderKind::NonRotating).provider_id("google"),
        );
        let entra_v1 = estate.add_registry(
            RegistrySpec::new(
                "Microsoft Entra ID v1 (SharePoint)",
                ProviderKind::EntraLike,
            )
            .provider_id("entra-v1")
            .expires_in_format(ExpiresInFormat::String),
        );
        let salesforce = estate.add_registry(
            RegistrySpec::new("Salesforce Connected App", ProviderKind::NonRotating)
                .provider_id("salesforce")
                .expires_in_format(ExpiresInFormat::Missing),
        );
        let legacy = estate.add_registry(
            RegistrySpec::new("Entra Legacy Mail App", ProviderKind::EntraLike)
                .provider_id("entra-legacy")
                .wrong_stored_secret("Q8~expired-secret-rotated-in-azure-last-year"),
        );
        let mut cc = RegistrySpec::new(
            "Azure Monitor (client credentials)",
            ProviderKind::EntraLike,
        )
        .provider_id("azure-monitor");
        cc.default_grant_type = "client_credentials".to_owned();
        let client_credentials = estate.add_registry(cc);

        let fresh = |reg: &str, name: &str| CredentialSpec::new(reg, name).label("fresh");
        let stale = |reg: &str, name: &str| {
            CredentialSpec::new(reg, name)
                .access_expires_in(secs(3 * 60))
                .refresh_last_updated_ago(secs(57 * 60))
                .label("stale")
        };
        let missing = |reg: &str, name: &str| {
            CredentialSpec::new(reg, name)
                .access_missing()
                .refresh_last_updated_ago(secs(2 * DAY))
                .label("access row missing")
        };
        let expired = |reg: &str, name: &str| {
            CredentialSpec::new(reg, name)
                .access_expires_in(secs(-2 * HOUR))
                .refresh_last_updated_ago(secs(3 * HOUR))
                .label("access expired")
        };
        let idle = |reg: &str, name: &str| {
            CredentialSpec::new(reg, name)
                .access_expires_in(secs(-(85 * DAY - HOUR)))
                .refresh_last_updated_ago(secs(85 * DAY))
                .refresh_expires_in(secs(5 * DAY))
                .label("idle (85 days)")
        };
        let revoked = |reg: &str, name: &str| {
            CredentialSpec::new(reg, name)
                .access_expires_in(secs(-30 * 60))
                .refresh_last_updated_ago(secs(DAY))
                .revoked()
                .label("revoked at provider")
        };

        let specs = vec![
            fresh(&entra, "Mailbox helpdesk@contoso.com"),
            fresh(&entra, "Mailbox hr@contoso.com"),
            stale(&entra, "Mailbox it-alerts@contoso.com"),
            missing(&entra, "SharePoint sync (Graph spoke)"),
            expired(&entra, "Teams notifications"),
            idle(&entra, "Mailbox archive@contoso.com"),
            revoked(&entra, "Mailbox former.employee@contoso.com"),
            fresh(&okta, "Okta user sync"),
            stale(&okta, "Okta group import"),
            missing(&okta, "Okta SCIM bridge"),
            expired(&okta, "Okta MFA audit"),
            revoked(&okta, "Okta legacy connector"),
            fresh(&google, "Gmail relay noreply@example.org"),
            stale(&google, "Gmail relay alerts@example.org"),
            missing(&google, "Google Drive attachments"),
            expired(&google, "Google Calendar sync"),
            idle(&google, "Gmail relay quarterly@example.org"),
            revoked(&google, "Gmail relay intern@example.org"),
            stale(&entra_v1, "SharePoint document library")
                .scopes("https://contoso.sharepoint.com/.default offline_access"),
            expired(&entra_v1, "SharePoint intranet news")
                .scopes("https://contoso.sharepoint.com/.default offline_access"),
            stale(&salesforce, "Salesforce case bridge").scopes("api refresh_token"),
            missing(&salesforce, "Salesforce account sync").scopes("api refresh_token"),
            stale(&legacy, "Mailbox legacy-support@contoso.com").label("wrong client secret"),
            missing(&legacy, "Mailbox legacy-billing@contoso.com").label("wrong client secret"),
            CredentialSpec::new(&entra, "Mailbox closed@contoso.com")
                .access_missing()
                .refresh_last_updated_ago(secs(120 * DAY))
                .refresh_expires_in(secs(-30 * DAY))
                .label("refresh row expired"),
        ];
        for spec in specs {
            estate.add_credential(spec);
        }
        // A refresh row left behind on a client-credentials registry: discovery should skip
        // registries whose grant type never uses refresh tokens.
        estate.add_credential(
            CredentialSpec::new(&client_credentials, "Azure Monitor leftover")
                .scopes("https://monitor.azure.com/.default")
                .access_expires_in(secs(20 * 60))
                .label("client_credentials registry"),
        );
        estate.add_instance_issued_token();
        estate
    }

    /// An OAuth client registry where the instance is the server, plus an access token the
    /// instance issued for itself (no requestor profile, no `token_received`).
    fn add_instance_issued_token(&mut self) {
        let entity = self.sys_id();
        let row = self.sys_id();
        self.extra_rows.push(PlannedRow {
            table: "oauth_entity",
            fields: vec![
                ("sys_id", Planned::Raw(entity.clone())),
                ("name", Planned::Raw("ServiceNow Mobile App".to_owned())),
                ("client_id", Planned::Raw(new_sys_id(&mut self.rng))),
                (
                    "client_secret",
                    Planned::Encrypted("mobile-app-secret".to_owned()),
                ),
                ("type", Planned::Raw("client".to_owned())),
                ("default_grant_type", Planned::Raw("password".to_owned())),
                ("active", Planned::Raw("true".to_owned())),
            ],
        });
        self.extra_rows.push(PlannedRow {
            table: "oauth_credential",
            fields: vec![
                ("sys_id", Planned::Raw(row)),
                ("type", Planned::Raw("access_token".to_owned())),
                ("peer", Planned::Raw(entity)),
                ("user", Planned::Raw(ADMIN_SYS_ID.to_owned())),
                ("scopes", Planned::Raw("useraccount".to_owned())),
                ("expires", Planned::At(secs(20 * 60))),
                ("sys_created_on", Planned::At(secs(-10 * 60))),
                ("sys_updated_on", Planned::At(secs(-10 * 60))),
            ],
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_is_deterministic_and_complete() {
        let a = Estate::demo(7);
        let b = Estate::demo(7);
        assert_eq!(a.credentials(), b.credentials());
        assert_eq!(a.registries(), b.registries());
        assert_ne!(Estate::demo(8).credentials(), a.credentials());
        assert!(a.credentials().len() >= 20);
        for label in [
            "fresh",
            "stale",
            "access row missing",
            "access expired",
            "idle (85 days)",
            "revoked at provider",
            "wrong client secret",
        ] {
            assert!(
                a.credentials().iter().any(|c| c.label == label),
                "missing {label}"
            );
        }
        for cred in a.credentials() {
            assert_eq!(cred.refresh_sys_id.len(), 32);
            assert!(
                cred.refresh_sys_id
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
        }
    }
}
