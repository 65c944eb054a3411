//! The serde shapes of the TOML file, before any validation.
//!
//! Every key is optional here and may hold any type: a value of another type than the one
//! wanted becomes [`Field::WrongType`], and a key a table does not know lands in its `unknown`
//! map. Serde stops at its first error; this way validation sees every problem of a file and
//! reports them all at once.

use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A key's value as the file has it: of the wanted type, or of another one.
pub(super) enum Field<T> {
    /// A value of the wanted type.
    Value(T),
    /// A value of another type, by its TOML type name (`integer`, `table`, …).
    WrongType(&'static str),
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Field<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Any TOML value is accepted here; whether it has the wanted type is decided below, so
        // a mismatch becomes one problem among others instead of the end of the parse.
        let value = toml::Value::deserialize(deserializer)?;
        let found = value.type_str();
        Ok(T::deserialize(value).map_or(Field::WrongType(found), Field::Value))
    }
}

/// The keys of a table that it does not know, by name. Their values are never even kept: one may
/// be a secret pasted in the wrong place.
pub(super) type Unknown = BTreeMap<String, IgnoredAny>;

/// A table of the file: each key an optional [`Field`], the keys it does not know in `unknown`,
/// and `KEYS`, the names it knows, to list in the message about one it does not.
macro_rules! table {
    ($(#[$doc:meta])* $name:ident { $($key:ident: $ty:ty,)* }) => {
        $(#[$doc])*
        #[derive(Default, Deserialize)]
        pub(super) struct $name {
            $(pub(super) $key: Option<Field<$ty>>,)*
            #[serde(flatten)]
            pub(super) unknown: Unknown,
        }

        impl $name {
            /// The keys this table knows.
            pub(super) const KEYS: &'static [&'static str] = &[$(stringify!($key)),*];
        }
    };
}

table! {
    /// The whole file.
    RawConfig {
        instance: RawInstance,
        refresh: RawRefresh,
        state: RawState,
        server: RawServer,
        lease: RawLease,
        registry: Vec<RawRegistry>,
        report: RawReport,
    }
}

table! {
    /// `[instance]`.
    RawInstance {
        url: String,
        username: String,
        password_env: String,
        password_file: PathBuf,
        companion_path: String,
        timeout: String,
        page_size: i64,
        auth: String,
        oauth_grant: String,
        client_id: String,
        client_secret_env: String,
        client_secret_file: PathBuf,
    }
}

table! {
    /// `[refresh]`.
    RawRefresh {
        interval: String,
        lead_time: String,
        keepalive: String,
        concurrency: i64,
        per_host_concurrency: i64,
        timeout: String,
        shutdown_grace: String,
    }
}

table! {
    /// `[state]`.
    RawState {
        dir: PathBuf,
        key_env: String,
        key_file: PathBuf,
    }
}

table! {
    /// `[server]`.
    RawServer {
        listen: String,
    }
}

table! {
    /// `[lease]`.
    RawLease {
        ttl: String,
    }
}

table! {
    /// One `[[registry]]`.
    RawRegistry {
        name: String,
        client_secret_env: String,
        client_secret_file: PathBuf,
        scope: String,
        client_auth: String,
        default_expires_in: String,
        refresh_token_lifetime: String,
        private_key_file: PathBuf,
        certificate_file: PathBuf,
        jwt_alg: String,
        kind: String,
        resource: String,
        token_url: String,
    }
}

table! {
    /// `[report]`.
    RawReport {
        table: String,
        source: String,
        node: String,
    }
}
