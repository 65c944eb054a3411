//! The dictionary of the emulated tables: column types, display fields and the roles their ACLs
//! demand. Kept static because the instance's dictionary is fixed for the simulator's purposes.

/// What a column holds; drives storage conversion, comparison and display rendering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A 32-hex GUID (only `sys_id`).
    SysId,
    /// Free text.
    Text,
    /// A choice list: (stored value, display label).
    Choice(&'static [(&'static str, &'static str)]),
    /// A reference to a row of the named table; the database holds the bare sys_id.
    Reference(&'static str),
    /// A glide_date_time, stored as UTC `YYYY-MM-DD HH:MM:SS`.
    DateTime,
    /// A password2 (two-way encrypted) column.
    Password2,
    /// A boolean, stored as `"true"`/`"false"`.
    Boolean,
    /// An integer, stored as decimal digits.
    Integer,
}

/// One column of a table.
#[derive(Debug)]
pub(crate) struct Column {
    pub name: &'static str,
    pub kind: Kind,
}

/// One emulated table.
#[derive(Debug)]
pub(crate) struct TableSchema {
    pub name: &'static str,
    /// The column whose value is a reference's display value.
    pub display_field: &'static str,
    pub columns: &'static [Column],
    /// Roles any of which lets a user read rows (empty = any authenticated user).
    pub read_roles: &'static [&'static str],
    /// Roles any of which lets a user insert, update or delete rows.
    pub write_roles: &'static [&'static str],
    /// Values a new row gets for columns the insert does not set.
    pub defaults: &'static [(&'static str, &'static str)],
}

const fn col(name: &'static str, kind: Kind) -> Column {
    Column { name, kind }
}

/// System columns every table carries.
const SYS_COLUMNS: &[Column] = &[
    col("sys_id", Kind::SysId),
    col("sys_created_on", Kind::DateTime),
    col("sys_created_by", Kind::Text),
    col("sys_updated_on", Kind::DateTime),
    col("sys_updated_by", Kind::Text),
    col("sys_mod_count", Kind::Integer),
];

const CREDENTIAL_TYPES: &[(&str, &str)] = &[
    ("access_token", "Access Token"),
    ("refresh_token", "Refresh Token"),
];

const GRANT_TYPES: &[(&str, &str)] = &[
    ("authorization_code", "Authorization Code"),
    ("client_credentials", "Client Credentials"),
    ("password", "Resource Owner Password Credentials"),
    ("urn:ietf:params:oauth:grant-type:jwt-bearer", "JWT Bearer"),
];

const ENTITY_TYPES: &[(&str, &str)] = &[
    ("client", "OAuth Client"),
    ("oauth_provider", "OAuth Provider"),
    ("consumer", "OAuth Consumer"),
];

const OAUTH_ROLES: &[&str] = &["admin", "oauth_admin"];

/// All emulated tables.
pub(crate) static TABLES: &[TableSchema] = &[
    TableSchema {
        name: "oauth_credential",
        display_field: "name",
        columns: &[
            col("type", Kind::Choice(CREDENTIAL_TYPES)),
            col("token_received", Kind::Password2),
            col("expires", Kind::DateTime),
            col("peer", Kind::Reference("oauth_entity")),
            col(
                "oauth_requestor_profile",
                Kind::Reference("oauth_requestor_profile"),
            ),
            col("user", Kind::Reference("sys_user")),
            col("scopes", Kind::Text),
            col("name", Kind::Text),
        ],
        read_roles: OAUTH_ROLES,
        write_roles: OAUTH_ROLES,
        defaults: &[],
    },
    TableSchema {
        name: "oauth_entity",
        display_field: "name",
        columns: &[
            col("name", Kind::Text),
            col("client_id", Kind::Text),
            col("client_secret", Kind::Password2),
            col("token_url", Kind::Text),
            col("default_grant_type", Kind::Choice(GRANT_TYPES)),
            col("type", Kind::Choice(ENTITY_TYPES)),
            col("active", Kind::Boolean),
        ],
        read_roles: OAUTH_ROLES,
        write_roles: OAUTH_ROLES,
        defaults: &[
            ("active", "true"),
            ("type", "oauth_provider"),
            ("default_grant_type", "authorization_code"),
        ],
    },
    TableSchema {
        name: "oauth_entity_profile",
        display_field: "name",
        columns: &[
            col("name", Kind::Text),
            col("oauth_entity", Kind::Reference("oauth_entity")),
            col("grant_type", Kind::Choice(GRANT_TYPES)),
            col("default", Kind::Boolean),
        ],
        read_roles: OAUTH_ROLES,
        write_roles: OAUTH_ROLES,
        defaults: &[("default", "false")],
    },
    TableSchema {
        name: "oauth_requestor_profile",
        display_field: "requestor_id",
        columns: &[
            col("requestor_id", Kind::Text),
            col("requestor_context", Kind::Text),
            col(
                "oauth_entity_profile",
                Kind::Reference("oauth_entity_profile"),
            ),
        ],
        read_roles: OAUTH_ROLES,
        write_roles: OAUTH_ROLES,
        defaults: &[],
    },
    TableSchema {
        name: "sys_user",
        display_field: "name",
        columns: &[
            col("user_name", Kind::Text),
            col("name", Kind::Text),
            col("email", Kind::Text),
            col("time_zone", Kind::Text),
            col("date_format", Kind::Text),
            col("web_service_access_only", Kind::Boolean),
            col("active", Kind::Boolean),
        ],
        read_roles: &[],
        write_roles: &["admin", "user_admin"],
        defaults: &[("active", "true"), ("web_service_access_only", "false")],
    },
    TableSchema {
        name: "em_event",
        display_field: "description",
        columns: &[
            col("source", Kind::Text),
            col("event_class", Kind::Text),
            col("node", Kind::Text),
            col("type", Kind::Text),
            col("resource", Kind::Text),
            col("metric_name", Kind::Text),
            col("message_key", Kind::Text),
            col("severity", Kind::Text),
            col("description", Kind::Text),
            col("additional_info", Kind::Text),
            col("time_of_event", Kind::DateTime),
            col("state", Kind::Text),
        ],
        read_roles: &["admin", "evt_mgmt_admin", "evt_mgmt_integration"],
        write_roles: &["admin", "evt_mgmt_admin", "evt_mgmt_integration"],
        defaults: &[("state", "Ready")],
    },
];

/// Looks a table up by name.
pub(crate) fn table(name: &str) -> Option<&'static TableSchema> {
    TABLES.iter().find(|t| t.name == name)
}

impl TableSchema {
    /// Every column, table-specific ones first, then the system columns.
    pub(crate) fn all_columns(&self) -> impl Iterator<Item = &'static Column> {
        self.columns.iter().chain(SYS_COLUMNS.iter())
    }

    /// The type of a direct (not dot-walked) column.
    pub(crate) fn column(&self, name: &str) -> Option<Kind> {
        self.all_columns().find(|c| c.name == name).map(|c| c.kind)
    }

    /// Resolves a possibly dot-walked field (`peer.client_id`) to the type of its last column;
    /// `None` when a segment is unknown or walks through a non-reference column.
    pub(crate) fn resolve_path(&'static self, path: &str) -> Option<Kind> {
        let mut schema = self;
        let mut segments = path.split('.').peekable();
        while let Some(segment) = segments.next() {
            let kind = schema.column(segment)?;
            if segments.peek().is_none() {
                return Some(kind);
            }
            match kind {
                Kind::Reference(target) => schema = table(target)?,
                _ => return None,
            }
        }
        None
    }
}

/// Whether a column name belongs to the system-maintained set clients cannot write.
pub(crate) fn is_system_column(name: &str) -> bool {
    name.starts_with("sys_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_walks_through_references_only() {
        let cred = table("oauth_credential").map(|t| t.resolve_path("peer.client_id"));
        assert_eq!(cred, Some(Some(Kind::Text)));
        let walked = table("oauth_credential")
            .and_then(|t| t.resolve_path("oauth_requestor_profile.oauth_entity_profile.name"));
        assert_eq!(walked, Some(Kind::Text));
        assert_eq!(
            table("oauth_credential").and_then(|t| t.resolve_path("name.foo")),
            None
        );
        assert_eq!(
            table("oauth_credential").and_then(|t| t.resolve_path("nope")),
            None
        );
    }
}
