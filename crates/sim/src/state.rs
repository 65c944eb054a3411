//! The simulator's mutable state, behind one mutex: database, providers, faults, request log.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, Weak};

use jiff::{SignedDuration, Timestamp, tz::TimeZone};

use crate::RecordedRequest;
use crate::cipher::Cipher;
use crate::clock;
use crate::datetime;
use crate::db::{Db, Row};
use crate::fault::FaultSlot;
use crate::instance::InstanceSide;
use crate::provider::Provider;
use crate::server::ConnCtl;

/// The integration user's credentials and roles (kept outside `sys_user`, as
/// `sys_user_has_role` would be).
#[derive(Debug, Clone)]
pub(crate) struct UserAccount {
    pub sys_id: String,
    pub password: String,
    pub roles: Vec<String>,
}

/// Everything that changes while the simulator runs.
#[derive(Debug)]
pub(crate) struct State {
    pub db: Db,
    pub rng: fastrand::Rng,
    pub cipher: Cipher,
    pub providers: BTreeMap<String, Provider>,
    pub faults: Vec<FaultSlot>,
    pub log: Vec<(u64, RecordedRequest)>,
    pub next_seq: u64,
    pub user: UserAccount,
    pub system_tz: String,
    pub max_page_rows: Option<usize>,
    /// Added to the wall clock, so tests can age tokens without sleeping.
    pub clock_offset: SignedDuration,
    /// The runbook's instance-side setup (ACLs, companion, web-service access, OAuth server).
    pub instance: InstanceSide,
}

impl State {
    /// The simulator's time: the wall clock plus the offset tests moved it by.
    pub(crate) fn now(&self) -> Timestamp {
        let wall = clock::wall_now();
        wall.checked_add(self.clock_offset).unwrap_or(wall)
    }

    pub(crate) fn now_db(&self) -> String {
        datetime::format_utc(self.now())
    }

    /// A fresh 32-hex sys_id from the seeded RNG.
    pub(crate) fn new_sys_id(&mut self) -> String {
        new_sys_id(&mut self.rng)
    }

    pub(crate) fn encrypt(&mut self, plaintext: &str) -> String {
        let nonce = self.rng.u32(..);
        self.cipher.encrypt(plaintext, nonce)
    }

    pub(crate) fn decrypt(&self, stored: &str) -> Option<String> {
        self.cipher.decrypt(stored)
    }

    pub(crate) fn user_row(&self) -> Option<&Row> {
        self.db.get("sys_user", &self.user.sys_id)
    }

    fn user_field(&self, column: &str) -> String {
        self.user_row()
            .and_then(|r| r.get(column))
            .cloned()
            .unwrap_or_default()
    }

    pub(crate) fn user_name(&self) -> String {
        self.user_field("user_name")
    }

    /// The integration user's effective time zone.
    pub(crate) fn user_tz(&self) -> TimeZone {
        datetime::resolve_tz(&self.user_field("time_zone"), &self.system_tz)
    }

    pub(crate) fn user_date_format(&self) -> String {
        self.user_field("date_format")
    }

    /// Whether the integration user holds `role`; `admin` holds every role, as on the platform.
    pub(crate) fn has_role(&self, role: &str) -> bool {
        self.user.roles.iter().any(|r| r == role || r == "admin")
    }

    /// Whether the user holds one of `roles` (empty = no role needed).
    pub(crate) fn has_any_role(&self, roles: &[&str]) -> bool {
        roles.is_empty() || roles.iter().any(|r| self.has_role(r))
    }

    /// A direct database write, as another writer (a business rule, the UI) would make it.
    pub(crate) fn write_field(
        &mut self,
        table: &str,
        sys_id: &str,
        column: &str,
        value: String,
    ) -> bool {
        let now = self.now_db();
        let Some(row) = self.db.get_mut(table, sys_id) else {
            return false;
        };
        if !row.contains_key(column) {
            return false;
        }
        row.insert(column.to_owned(), value);
        if !column.starts_with("sys_") {
            bump(row, &now, "system");
        }
        true
    }

    pub(crate) fn transaction_id(&mut self) -> String {
        (0..12)
            .map(|_| char::from_digit(self.rng.u32(..16), 16).unwrap_or('0'))
            .collect()
    }
}

/// Marks a row as updated: `sys_mod_count + 1`, `sys_updated_on`, `sys_updated_by`.
pub(crate) fn bump(row: &mut Row, now: &str, by: &str) {
    let count = row
        .get("sys_mod_count")
        .and_then(|c| c.parse::<u64>().ok())
        .unwrap_or(0);
    row.insert("sys_mod_count".to_owned(), (count + 1).to_string());
    row.insert("sys_updated_on".to_owned(), now.to_owned());
    row.insert("sys_updated_by".to_owned(), by.to_owned());
}

/// 32 lowercase hex characters, like a platform GUID.
pub(crate) fn new_sys_id(rng: &mut fastrand::Rng) -> String {
    format!("{:016x}{:016x}", rng.u64(..), rng.u64(..))
}

/// A GUID as Microsoft writes its ids (client ids, trace and correlation ids): 32 lowercase hex
/// characters laid out `8-4-4-4-12`.
pub(crate) fn new_guid(rng: &mut fastrand::Rng) -> String {
    let hex = new_sys_id(rng);
    let (a, rest) = hex.split_at(8);
    let (b, rest) = rest.split_at(4);
    let (c, rest) = rest.split_at(4);
    let (d, e) = rest.split_at(4);
    format!("{a}-{b}-{c}-{d}-{e}")
}

/// State plus what the serving side shares but never mutates.
#[derive(Debug)]
pub(crate) struct Shared {
    pub state: Mutex<State>,
    pub base_url: String,
    pub companion_path: String,
    /// Live connections, so shutdown can cut in-flight ones.
    pub conns: Mutex<Vec<Weak<ConnCtl>>>,
}

impl Shared {
    /// Locks the state; a panic while holding the lock leaves consistent-enough data for a
    /// simulator, so poisoning is ignored.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}
