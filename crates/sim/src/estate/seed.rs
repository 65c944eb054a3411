//! Turns an [`Estate`] plan into the running instance's state: rows stamped relative to the
//! start instant, secrets encrypted with the instance's key, and providers that know the seeded
//! clients and refresh tokens.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};

use super::{
    ADMIN_SYS_ID, AccessSpec, CredentialPlan, DAY, Estate, Planned, PlannedRow, SeededCredential,
    SeededRegistry, UserPlan, secs,
};
use crate::cipher::Cipher;
use crate::datetime;
use crate::db::{Db, Row};
use crate::provider::{ClientReg, Provider};
use crate::state::{State, UserAccount};

impl Estate {
    /// Turns the plan into a running instance's state.
    pub(crate) fn materialize(self, now: Timestamp, base_url: &str) -> State {
        let Estate {
            rng,
            cipher_key,
            user,
            system_tz,
            max_page_rows,
            registries,
            credentials,
            plans,
            extra_rows,
            instance,
            companion_path: _,
        } = self;
        let mut seeder = Seeder {
            db: Db::new(),
            rng,
            cipher: Cipher::new(cipher_key),
            now,
        };
        seeder.seed_users(&user);
        let mut providers: BTreeMap<String, Provider> = BTreeMap::new();
        for reg in &registries {
            seeder.seed_registry(reg, base_url);
            let provider = providers
                .entry(reg.provider_id.clone())
                .or_insert_with(|| Provider::new(&reg.provider_id, reg.kind));
            provider.add_client(
                &reg.client_id,
                ClientReg {
                    secret: reg.client_secret.clone(),
                    access_lifetime_secs: reg.access_token_lifetime_secs,
                    expires_in_format: reg.expires_in_format,
                    certificate_der: reg.certificate_pem.as_deref().and_then(|pem| {
                        use rustls_pki_types::pem::PemObject;
                        rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
                            .ok()
                            .map(|der| der.as_ref().to_vec())
                    }),
                },
            );
        }
        for (cred, plan) in credentials.iter().zip(&plans) {
            let registry = registries.iter().find(|r| r.sys_id == cred.registry);
            seeder.seed_credential(cred, plan, registry);
            if let Some(reg) = registry
                && let Some(provider) = providers.get_mut(&reg.provider_id)
            {
                let last_used = now
                    .checked_sub(plan.refresh_last_updated_ago)
                    .unwrap_or(now)
                    .as_second();
                provider.seed_token(
                    &cred.refresh_token,
                    &reg.client_id,
                    &cred.scopes,
                    last_used,
                    plan.revoked,
                );
            }
        }
        for row in extra_rows {
            seeder.seed_planned(row);
        }
        let Seeder {
            db, rng, cipher, ..
        } = seeder;
        State {
            db,
            rng,
            cipher,
            providers,
            faults: Vec::new(),
            log: Vec::new(),
            next_seq: 0,
            user: UserAccount {
                sys_id: user.sys_id,
                password: user.password,
                roles: user.roles,
            },
            system_tz,
            max_page_rows,
            clock_offset: SignedDuration::ZERO,
            instance,
        }
    }
}

struct Seeder {
    db: Db,
    rng: fastrand::Rng,
    cipher: Cipher,
    now: Timestamp,
}

impl Seeder {
    fn at(&self, offset: SignedDuration) -> String {
        datetime::format_utc(self.now.checked_add(offset).unwrap_or(self.now))
    }

    fn encrypt(&mut self, plain: &str) -> String {
        let nonce = self.rng.u32(..);
        self.cipher.encrypt(plain, nonce)
    }

    /// Inserts a row with system columns stamped `created_ago`/`updated_ago` before now.
    fn insert(
        &mut self,
        table: &str,
        fields: Vec<(&str, String)>,
        created_ago: SignedDuration,
        updated_ago: SignedDuration,
        mod_count: u32,
    ) {
        let mut row: Row = fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        row.insert("sys_created_on".to_owned(), self.at(-created_ago));
        row.insert("sys_updated_on".to_owned(), self.at(-updated_ago));
        row.insert("sys_created_by".to_owned(), "system".to_owned());
        row.insert("sys_updated_by".to_owned(), "system".to_owned());
        row.insert("sys_mod_count".to_owned(), mod_count.to_string());
        self.db.insert(table, row);
    }

    fn seed_users(&mut self, user: &UserPlan) {
        let long_ago = secs(400 * DAY);
        self.insert(
            "sys_user",
            vec![
                ("sys_id", ADMIN_SYS_ID.to_owned()),
                ("user_name", "admin".to_owned()),
                ("name", "System Administrator".to_owned()),
                ("email", "admin@example.com".to_owned()),
                ("active", "true".to_owned()),
                ("web_service_access_only", "false".to_owned()),
            ],
            long_ago,
            long_ago,
            12,
        );
        self.insert(
            "sys_user",
            vec![
                ("sys_id", user.sys_id.clone()),
                ("user_name", user.user_name.clone()),
                ("name", "OAuth Keeper Service".to_owned()),
                ("email", "svc_oauth_keeper@example.com".to_owned()),
                ("time_zone", user.time_zone.clone()),
                ("date_format", user.date_format.clone()),
                ("active", "true".to_owned()),
                (
                    "web_service_access_only",
                    user.web_service_access_only.to_string(),
                ),
            ],
            secs(30 * DAY),
            secs(30 * DAY),
            1,
        );
    }

    fn seed_registry(&mut self, reg: &SeededRegistry, base_url: &str) {
        let stored = reg
            .stored_client_secret
            .clone()
            .unwrap_or_else(|| reg.client_secret.clone());
        let secret = self.encrypt(&stored);
        let age = secs(200 * DAY);
        self.insert(
            "oauth_entity",
            vec![
                ("sys_id", reg.sys_id.clone()),
                ("name", reg.name.clone()),
                ("client_id", reg.client_id.clone()),
                ("client_secret", secret),
                ("token_url", reg.token_url_at(base_url)),
                ("default_grant_type", reg.default_grant_type.clone()),
                ("type", "oauth_provider".to_owned()),
                ("active", "true".to_owned()),
            ],
            age,
            secs(20 * DAY),
            3,
        );
        self.insert(
            "oauth_entity_profile",
            vec![
                ("sys_id", reg.entity_profile.clone()),
                ("name", format!("{} default_profile", reg.name)),
                ("oauth_entity", reg.sys_id.clone()),
                ("grant_type", reg.default_grant_type.clone()),
                ("default", "true".to_owned()),
            ],
            age,
            age,
            0,
        );
    }

    fn seed_credential(
        &mut self,
        cred: &SeededCredential,
        plan: &CredentialPlan,
        registry: Option<&SeededRegistry>,
    ) {
        let updated_ago = plan.refresh_last_updated_ago;
        let created_ago = updated_ago + secs(30 * DAY);
        self.insert(
            "oauth_requestor_profile",
            vec![
                ("sys_id", cred.requestor_profile.clone()),
                ("requestor_id", cred.requestor_id.clone()),
                ("requestor_context", plan.requestor_context.clone()),
                (
                    "oauth_entity_profile",
                    registry
                        .map(|r| r.entity_profile.clone())
                        .unwrap_or_default(),
                ),
            ],
            created_ago,
            created_ago,
            0,
        );
        let token = self.encrypt(&cred.refresh_token);
        let common = |this: &Self| {
            vec![
                ("peer", cred.registry.clone()),
                ("oauth_requestor_profile", cred.requestor_profile.clone()),
                ("user", ADMIN_SYS_ID.to_owned()),
                ("scopes", cred.scopes.clone()),
                ("name", cred.name.clone()),
                ("expires", this.at(plan.refresh_expires_in)),
            ]
        };
        let mut fields = common(self);
        fields.extend([
            ("sys_id", cred.refresh_sys_id.clone()),
            ("type", "refresh_token".to_owned()),
            ("token_received", token),
        ]);
        self.insert("oauth_credential", fields, created_ago, updated_ago, 4);
        if let (Some(id), Some(access), AccessSpec::ExpiresIn(expires_in)) =
            (&cred.access_sys_id, &cred.access_token, &plan.access)
        {
            let lifetime = registry.map_or(3600, |r| r.access_token_lifetime_secs);
            let lifetime = secs(i64::try_from(lifetime).unwrap_or(3600));
            // The access row was last written when its token was issued.
            let issued_ago = lifetime - *expires_in;
            let token = self.encrypt(access);
            let mut fields = common(self);
            fields.retain(|(k, _)| *k != "expires");
            fields.extend([
                ("sys_id", id.clone()),
                ("type", "access_token".to_owned()),
                ("token_received", token),
                ("expires", self.at(*expires_in)),
            ]);
            self.insert("oauth_credential", fields, created_ago, issued_ago, 4);
        }
    }

    fn seed_planned(&mut self, row: PlannedRow) {
        let mut fields = Vec::new();
        let mut created = SignedDuration::ZERO;
        let mut updated = SignedDuration::ZERO;
        for (column, value) in row.fields {
            match (column, value) {
                ("sys_created_on", Planned::At(d)) => created = -d,
                ("sys_updated_on", Planned::At(d)) => updated = -d,
                (column, Planned::Raw(v)) => fields.push((column, v)),
                (column, Planned::Encrypted(v)) => fields.push((column, self.encrypt(&v))),
                (column, Planned::At(d)) => fields.push((column, self.at(d))),
            }
        }
        self.insert(row.table, fields, created, updated, 0);
    }
}
