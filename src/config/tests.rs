//! The whole file through [`parse`]: what is accepted, what is refused, and what an error says.

use super::*;
use crate::client_auth::JwtAlg;
use crate::journal::JournalKey;
use secrecy::ExposeSecret;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

const GOOD: &str = r#"
[instance]
url = "https://acme.service-now.com/"
username = "svc_oauth_keeper"
password_env = "SN_PASSWORD"
companion_path = "/api/x_acme/oauth_keeper"

[refresh]
interval = "3m"
lead_time = "10m"
keepalive = "7d"
concurrency = 8

[state]
dir = "/var/lib/sn-oauth-keeper"
key_env = "SN_OAUTH_KEEPER_KEY"

[server]
listen = "127.0.0.1:9464"

[[registry]]
name = "SharePoint Online"
client_secret_env = "SP_CLIENT_SECRET"
scope = "https://contoso.sharepoint.com/.default offline_access"
client_auth = "post"
"#;

fn env() -> HashMap<String, String> {
    HashMap::from([
        ("SN_PASSWORD".to_string(), "hunter2-password".to_string()),
        (
            "SP_CLIENT_SECRET".to_string(),
            "sp-secret-value".to_string(),
        ),
    ])
}

fn error_of(text: &str) -> String {
    match parse(text, "keeper.toml", &env()) {
        Ok(_) => panic!("accepted: {text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_contract_example_parses() {
    let s = parse(GOOD, "keeper.toml", &env()).unwrap();
    assert_eq!(s.instance.url.as_str(), "https://acme.service-now.com/");
    assert_eq!(s.refresh.interval, Duration::from_secs(180));
    assert_eq!(s.refresh.keepalive, Duration::from_secs(7 * 86_400));
    assert_eq!(s.registries[0].client_auth, ClientAuth::Post);
    assert!(s.registry("SharePoint Online", "x").is_some());
    assert_eq!(password_of(&s), "hunter2-password");
}

#[test]
fn debug_output_has_no_secrets() {
    let s = parse(GOOD, "keeper.toml", &env()).unwrap();
    let dump = format!("{s:?}");
    assert!(!dump.contains("hunter2-password"));
    assert!(!dump.contains("sp-secret-value"));
    let key = JournalKey::random().unwrap();
    assert_eq!(format!("{key:?}"), "JournalKey([REDACTED])");
}

#[test]
fn every_bad_value_names_its_key_and_file() {
    let cases = [
        (
            GOOD.replace("lead_time = \"10m\"", "lead_time = \"ten\""),
            "refresh.lead_time",
        ),
        (
            GOOD.replace("interval = \"3m\"", "interval = \"3\""),
            "refresh.interval",
        ),
        (
            GOOD.replace("keepalive = \"7d\"", "keepalive = \"1s\""),
            "refresh.keepalive",
        ),
        (
            GOOD.replace("concurrency = 8", "concurrency = 0"),
            "refresh.concurrency",
        ),
        (GOOD.replace("https://acme", "http://acme"), "instance.url"),
        (
            GOOD.replace("https://acme.service-now.com/", "not a url"),
            "instance.url",
        ),
        (
            GOOD.replace("SN_PASSWORD", "MISSING_VAR"),
            "instance.password_env",
        ),
        (
            GOOD.replace("username = \"svc_oauth_keeper\"", "username = \"\""),
            "instance.username",
        ),
        (
            GOOD.replace("/api/x_acme/oauth_keeper", "api/x"),
            "instance.companion_path",
        ),
        (GOOD.replace("127.0.0.1:9464", "localhost"), "server.listen"),
        (
            GOOD.replace("client_auth = \"post\"", "client_auth = \"jwt\""),
            "registry[0].client_auth",
        ),
        (
            GOOD.replace("SP_CLIENT_SECRET", "NOPE"),
            "registry[0].client_secret_env",
        ),
        (
            GOOD.replace("name = \"SharePoint Online\"", ""),
            "registry[0].name",
        ),
        (
            GOOD.replace("concurrency = 8", "concurrency = 8\ncuncurrency = 2"),
            "cuncurrency",
        ),
        (
            GOOD.replace("concurrency = 8", "concurrency = \"eight\""),
            "concurrency",
        ),
    ];
    let more = [
        (
            GOOD.replace(
                "concurrency = 8",
                "concurrency = 8\nper_host_concurrency = 999",
            ),
            "refresh.per_host_concurrency",
        ),
        (
            format!("{GOOD}\n[report]\ntable = \"sysevent\"\n"),
            "report.table",
        ),
        (
            format!("{GOOD}\n[report]\nsource = \"\"\n"),
            "report.source",
        ),
        (format!("{GOOD}\n[report]\nsevrity = 1\n"), "sevrity"),
        (
            GOOD.replace(
                "password_env = \"SN_PASSWORD\"",
                "password_env = \"SN_PASSWORD\"\ntimeout = \"0s\"",
            ),
            "instance.timeout",
        ),
        (
            GOOD.replace(
                "password_env = \"SN_PASSWORD\"",
                "password_env = \"SN_PASSWORD\"\npage_size = 20000",
            ),
            "instance.page_size",
        ),
        (
            GOOD.replace(
                "password_env = \"SN_PASSWORD\"",
                "password_file = \"/nonexistent/pw\"",
            ),
            "instance.password_file",
        ),
        (
            GOOD.replace(
                "password_env = \"SN_PASSWORD\"",
                "password_env = \"SN_PASSWORD\"\npassword_file = \"/x\"",
            ),
            "instance.password_env",
        ),
        (
            GOOD.replace("concurrency = 8", "concurrency = 8\ntimeout = \"forever\""),
            "refresh.timeout",
        ),
        (
            GOOD.replace(
                "key_env = \"SN_OAUTH_KEEPER_KEY\"",
                "key_env = \"K\"\nkey_file = \"/k\"",
            ),
            "state.key_env",
        ),
        (
            GOOD.replace(
                "client_auth = \"post\"",
                "client_auth = \"post\"\ndefault_expires_in = \"1\"",
            ),
            "registry[0].default_expires_in",
        ),
        (
            GOOD.replace(
                "client_auth = \"post\"",
                "client_auth = \"post\"\nrefresh_token_lifetime = \"5m\"",
            ),
            "registry[0].refresh_token_lifetime",
        ),
        (
            GOOD.replace(
                "client_secret_env = \"SP_CLIENT_SECRET\"",
                "client_secret_file = \"/nonexistent/s\"",
            ),
            "registry[0].client_secret_file",
        ),
        (
            GOOD.replace("url = \"https://acme.service-now.com/\"\n", ""),
            "instance.url",
        ),
        (
            GOOD.replace("listen = \"127.0.0.1:9464\"", "listen = 9464"),
            "listen",
        ),
    ];
    for (text, key) in cases.into_iter().chain(more) {
        let msg = error_of(&text);
        assert!(msg.contains(key), "{key} not in: {msg}");
        assert!(msg.starts_with("keeper.toml"), "{msg}");
    }
}

fn keys_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc/keys")
}

fn jwt_registry(extra: &str) -> String {
    let dir = keys_dir();
    GOOD.replace(
        "client_secret_env = \"SP_CLIENT_SECRET\"\nscope = \"https://contoso.sharepoint.com/.default offline_access\"\nclient_auth = \"post\"",
        &format!(
            "client_auth = \"private_key_jwt\"\nprivate_key_file = \"{}\"\ncertificate_file = \"{}\"\n{extra}",
            dir.join("client-a.key.pem").display(),
            dir.join("client-a.cert.pem").display()
        ),
    )
}

#[test]
fn private_key_jwt_reads_its_key_at_load_and_names_every_bad_key() {
    let s = parse(&jwt_registry(""), "keeper.toml", &env()).unwrap();
    let reg = &s.registries[0];
    assert_eq!(reg.client_auth, ClientAuth::PrivateKeyJwt);
    let key = reg.assertion_key.as_ref().expect("key loaded");
    assert_eq!(key.alg(), JwtAlg::Ps256, "PS256 unless told");
    let pem = std::fs::read_to_string(keys_dir().join("client-a.key.pem")).unwrap();
    let dump = format!("{s:?}");
    for line in pem.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!dump.contains(line), "key material in Debug");
    }
    let rs = parse(&jwt_registry("jwt_alg = \"RS256\""), "keeper.toml", &env()).unwrap();
    assert_eq!(
        rs.registries[0].assertion_key.as_ref().unwrap().alg(),
        JwtAlg::Rs256
    );

    let dir = keys_dir();
    let a_key = dir.join("client-a.key.pem").display().to_string();
    let a_cert = dir.join("client-a.cert.pem").display().to_string();
    let b_cert = dir.join("client-b.cert.pem").display().to_string();
    let cases = [
        (jwt_registry("jwt_alg = \"HS256\""), "registry[0].jwt_alg"),
        (
            jwt_registry("").replace(&format!("private_key_file = \"{a_key}\"\n"), ""),
            "registry[0].private_key_file",
        ),
        (
            jwt_registry("").replace(&format!("certificate_file = \"{a_cert}\"\n"), ""),
            "registry[0].certificate_file",
        ),
        (
            jwt_registry("").replace(&a_key, "/nonexistent/key.pem"),
            "registry[0].private_key_file",
        ),
        (
            jwt_registry("").replace(&a_cert, "/nonexistent/cert.pem"),
            "registry[0].certificate_file",
        ),
        (
            jwt_registry("").replace(&a_key, &a_cert),
            "registry[0].private_key_file",
        ),
        (
            jwt_registry("").replace(&a_cert, &a_key),
            "registry[0].certificate_file",
        ),
        (
            jwt_registry("").replace(&a_cert, &b_cert),
            "registry[0].private_key_file",
        ),
        (
            jwt_registry("client_secret_env = \"SP_CLIENT_SECRET\""),
            "registry[0].client_secret_env",
        ),
        (
            GOOD.replace(
                "client_auth = \"post\"",
                &format!("client_auth = \"post\"\nprivate_key_file = \"{a_key}\""),
            ),
            "registry[0].private_key_file",
        ),
        (
            GOOD.replace(
                "client_auth = \"post\"",
                "client_auth = \"basic\"\njwt_alg = \"PS256\"",
            ),
            "registry[0].jwt_alg",
        ),
    ];
    for (text, key) in cases {
        let msg = error_of(&text);
        assert!(msg.contains(key), "{key} not in: {msg}");
        for line in pem.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!msg.contains(line), "key material in: {msg}");
        }
    }
    let mismatch = error_of(&jwt_registry("").replace(&a_cert, &b_cert));
    assert!(mismatch.contains("does not belong"), "{mismatch}");
}

#[test]
fn kind_and_resource_are_checked_together() {
    let with = |extra: &str| {
        GOOD.replace(
            "client_auth = \"post\"",
            &format!("client_auth = \"post\"\n{extra}"),
        )
    };
    let s = parse(&with("kind = \"entra_v2\""), "keeper.toml", &env()).unwrap();
    assert_eq!(s.registries[0].kind, Some(TokenEndpointKind::EntraV2));
    assert_eq!(
        parse(GOOD, "keeper.toml", &env()).unwrap().registries[0].kind,
        None
    );
    let generic = parse(
        &with("kind = \"generic\"\nresource = \"https://api.example.com/\""),
        "keeper.toml",
        &env(),
    )
    .unwrap();
    assert_eq!(
        generic.registries[0].resource.as_deref(),
        Some("https://api.example.com/")
    );
    let v1 = parse(
        &GOOD
            .replace("scope = \"https://contoso.sharepoint.com/.default offline_access\"\n", "")
            .replace("client_auth = \"post\"", "client_auth = \"post\"\nkind = \"entra_v1\"\nresource = \"https://contoso.sharepoint.com\""),
        "keeper.toml",
        &env(),
    )
    .unwrap();
    assert_eq!(v1.registries[0].kind, Some(TokenEndpointKind::EntraV1));
    for (text, key) in [
        (with("kind = \"entra\""), "registry[0].kind"),
        (
            with("kind = \"entra_v2\"\nresource = \"https://graph.microsoft.com\""),
            "registry[0].resource",
        ),
        (with("kind = \"entra_v1\""), "registry[0].scope"),
    ] {
        let msg = error_of(&text);
        assert!(msg.contains(key), "{key} not in: {msg}");
    }
}

#[test]
fn loopback_http_is_accepted() {
    for ok in [
        "http://127.0.0.1:8080",
        "http://localhost:1",
        "http://[::1]:9",
    ] {
        assert!(parse_instance_url(ok).is_ok(), "{ok}");
    }
    assert!(parse_instance_url("https://u:p@acme.service-now.com").is_err());
}

/// The password of a config that signs in with one.
fn password_of(s: &Settings) -> &str {
    match &s.instance.auth {
        InstanceAuthSettings::Basic { password }
        | InstanceAuthSettings::OAuth {
            grant: InstanceGrant::Password { password },
            ..
        } => password.expose_secret(),
        InstanceAuthSettings::OAuth { .. } => panic!("no password"),
    }
}

#[test]
fn instance_auth_defaults_to_basic_and_oauth_needs_its_keys() {
    let basic = parse(GOOD, "keeper.toml", &env()).unwrap();
    assert!(matches!(
        basic.instance.auth,
        InstanceAuthSettings::Basic { .. }
    ));
    let oauth_text = GOOD.replace(
        "password_env = \"SN_PASSWORD\"",
        "auth = \"oauth\"\nclient_id = \"keeper-client\"\nclient_secret_env = \"SN_CLIENT_SECRET\"",
    );
    let mut vars = env();
    vars.insert("SN_CLIENT_SECRET".into(), "instance-client-secret".into());
    let oauth = parse(&oauth_text, "keeper.toml", &vars).unwrap();
    match &oauth.instance.auth {
        InstanceAuthSettings::OAuth {
            client_id,
            client_secret,
            grant: InstanceGrant::ClientCredentials,
        } => {
            assert_eq!(client_id, "keeper-client");
            assert_eq!(client_secret.expose_secret(), "instance-client-secret");
        }
        other => panic!("client credentials expected: {other:?}"),
    }
    assert!(!format!("{oauth:?}").contains("instance-client-secret"));
    let cases = [
        (
            oauth_text.replace("auth = \"oauth\"", "auth = \"kerberos\""),
            "instance.auth",
        ),
        (
            oauth_text.replace("client_id = \"keeper-client\"\n", ""),
            "instance.client_id",
        ),
        (
            oauth_text.replace("client_secret_env = \"SN_CLIENT_SECRET\"", ""),
            "instance.client_secret_env",
        ),
        (
            oauth_text.replace("auth = \"oauth\"\n", ""),
            "instance.client_id",
        ),
        (
            oauth_text.replace(
                "client_secret_env = \"SN_CLIENT_SECRET\"",
                "client_secret_env = \"SN_CLIENT_SECRET\"\noauth_grant = \"implicit\"",
            ),
            "instance.oauth_grant",
        ),
        (
            oauth_text.replace(
                "client_secret_env = \"SN_CLIENT_SECRET\"",
                "client_secret_file = \"/nonexistent/secret\"",
            ),
            "instance.client_secret_file",
        ),
    ];
    for (text, key) in cases {
        let msg = match parse(&text, "keeper.toml", &vars) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        };
        assert!(msg.contains(key), "{key} not in: {msg}");
    }
    // A missing variable names the key, not the secret.
    let msg = error_of(&oauth_text);
    assert!(msg.contains("instance.client_secret_env"), "{msg}");
}

#[test]
fn the_password_grant_needs_saying_so_and_old_oauth_configs_must_choose() {
    let mut vars = env();
    vars.insert("SN_CLIENT_SECRET".into(), "instance-client-secret".into());
    let with = |extra: &str| {
        GOOD.replace(
            "password_env = \"SN_PASSWORD\"",
            &format!("auth = \"oauth\"\nclient_id = \"c\"\nclient_secret_env = \"SN_CLIENT_SECRET\"\n{extra}"),
        )
    };
    let password = parse(
        &with("oauth_grant = \"password\"\npassword_env = \"SN_PASSWORD\""),
        "keeper.toml",
        &vars,
    )
    .unwrap();
    assert_eq!(password_of(&password), "hunter2-password");
    for (text, key, says) in [
        // Written for the password grant before client credentials existed: refused, naming
        // both ways out.
        (
            with("password_env = \"SN_PASSWORD\""),
            "instance.oauth_grant",
            "oauth_grant = \"password\"",
        ),
        (
            with("oauth_grant = \"password\""),
            "instance.password_env",
            "required",
        ),
        (
            with("oauth_grant = \"client_credentials\"\npassword_file = \"/run/pw\""),
            "instance.password_file",
            "not used with the client-credentials grant",
        ),
        (
            GOOD.replace("password_env", "oauth_grant = \"password\"\npassword_env"),
            "instance.oauth_grant",
            "only used with auth = \"oauth\"",
        ),
    ] {
        let msg = match parse(&text, "keeper.toml", &vars) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        };
        assert!(
            msg.contains(key) && msg.contains(says),
            "{key}, {says} not in: {msg}"
        );
        assert!(!msg.contains("hunter2"), "{msg}");
    }
}

#[test]
fn shutdown_grace_has_a_default_and_names_its_key() {
    let s = parse(GOOD, "keeper.toml", &env()).unwrap();
    assert_eq!(s.refresh.shutdown_grace, Duration::from_secs(90));
    let set = GOOD.replace(
        "concurrency = 8",
        "concurrency = 8\nshutdown_grace = \"2m\"",
    );
    let s = parse(&set, "keeper.toml", &env()).unwrap();
    assert_eq!(s.refresh.shutdown_grace, Duration::from_secs(120));
    for bad in ["\"soon\"", "\"0s\""] {
        let text = GOOD.replace(
            "concurrency = 8",
            &format!("concurrency = 8\nshutdown_grace = {bad}"),
        );
        let msg = error_of(&text);
        assert!(msg.contains("refresh.shutdown_grace"), "{msg}");
    }
}

#[test]
fn credential_paths_expand_braced_variables() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sn_password"), "from-a-credential\n").unwrap();
    let mut vars = env();
    vars.insert(
        "CREDENTIALS_DIRECTORY".into(),
        dir.path().display().to_string(),
    );
    let text = GOOD
        .replace(
            "password_env = \"SN_PASSWORD\"",
            "password_file = \"${CREDENTIALS_DIRECTORY}/sn_password\"",
        )
        .replace(
            "key_env = \"SN_OAUTH_KEEPER_KEY\"",
            "key_file = \"${CREDENTIALS_DIRECTORY}/journal_key\"",
        )
        .replace(
            "dir = \"/var/lib/sn-oauth-keeper\"",
            "dir = \"${CREDENTIALS_DIRECTORY}/state$1\"",
        );
    let s = parse(&text, "keeper.toml", &vars).unwrap();
    assert_eq!(password_of(&s), "from-a-credential");
    assert_eq!(s.state.dir, dir.path().join("state$1"), "a bare $ stays");
    match &s.state.key {
        KeySource::File(p) => assert_eq!(p, &dir.path().join("journal_key")),
        other => panic!("{other:?}"),
    }
    // Unset, unclosed or malformed references name the key and never become a path.
    let unset = parse(&text, "keeper.toml", &env()).unwrap_err().to_string();
    assert!(
        unset.contains("instance.password_file") && unset.contains("CREDENTIALS_DIRECTORY"),
        "{unset}"
    );
    for bad in ["${CREDENTIALS_DIRECTORY/x", "${}/x", "${A-B}/x"] {
        let text = GOOD.replace(
            "dir = \"/var/lib/sn-oauth-keeper\"",
            &format!("dir = \"{bad}\""),
        );
        let msg = error_of(&text);
        assert!(msg.contains("state.dir"), "{msg}");
    }
}

#[test]
fn keys_decode_in_hex_base64_and_raw() {
    let hex = "00".repeat(31) + "ff";
    assert_eq!(
        JournalKey::decode(hex.as_bytes()).unwrap().bytes()[31],
        0xff
    );
    let b64 = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE=";
    assert_eq!(JournalKey::decode(b64.as_bytes()).unwrap().bytes()[31], 1);
    assert!(JournalKey::decode(&[7u8; 32]).is_ok());
    assert!(JournalKey::decode(b"short").is_err());
    let missing = KeySource::Env("NOPE".into()).resolve("k.toml", &env());
    assert!(missing.unwrap_err().to_string().contains("state.key_env"));
}

/// A config with only what is required, plus an empty `[report]` (whose keys have defaults)
/// and two registries: one with a client secret, one signing with a certificate key.
fn minimal() -> String {
    let dir = keys_dir();
    format!(
        "[instance]\nurl = \"https://acme.service-now.com\"\nusername = \"svc\"\npassword_env = \"SN_PASSWORD\"\n\n[report]\n\n[[registry]]\nname = \"with a secret\"\n\n[[registry]]\nname = \"with a certificate\"\nclient_auth = \"private_key_jwt\"\nprivate_key_file = \"{}\"\ncertificate_file = \"{}\"\n",
        dir.join("client-a.key.pem").display(),
        dir.join("client-a.cert.pem").display()
    )
}

#[test]
fn what_the_file_leaves_out_takes_the_section_defaults() {
    let s = parse(&minimal(), "keeper.toml", &env()).unwrap();
    assert_eq!(s.refresh, RefreshSettings::default());
    assert_eq!(s.state, StateSettings::default());
    assert_eq!(s.server, ServerSettings::default());
    assert_eq!(s.report, Some(ReportSettings::default()));
    assert_eq!(s.instance.companion_path, DEFAULT_COMPANION_PATH);
    assert_eq!(s.instance.timeout, InstanceSettings::DEFAULT_TIMEOUT);
    assert_eq!(s.instance.page_size, InstanceSettings::DEFAULT_PAGE_SIZE);
    assert!(matches!(
        s.instance.auth,
        InstanceAuthSettings::Basic { .. }
    ));
    let reg = &s.registries[0];
    assert_eq!(reg.client_auth, ClientAuth::default());
    assert_eq!(reg.default_expires_in, DEFAULT_EXPIRES_IN);
    assert_eq!(reg.refresh_token_lifetime, DEFAULT_REFRESH_LIFETIME);
    let jwt = s.registries[1].assertion_key.as_ref().unwrap();
    assert_eq!(jwt.alg(), JwtAlg::default());
}

/// Every default the reference table of `docs/configuration.md` states, written into the file
/// explicitly, gives the same settings as leaving the key out: the table cannot drift from the
/// `Default`s. Rows whose default is prose ("required", "the companion's") are not checked; a
/// row whose default is one literal in backticks is.
#[test]
fn the_documented_reference_table_states_the_defaults() {
    let reference = include_str!("../../docs/configuration.md");
    let table = reference
        .split("## Keys and defaults")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("docs/configuration.md has a table of keys and defaults");
    // Section → lines to add to it; `registry-jwt` is the registry whose client signs with a
    // key, the only one where `jwt_alg` may be set.
    let mut added: Vec<(String, String)> = Vec::new();
    for row in table.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.trim_matches('|').split(" | ").map(str::trim).collect();
        let (keys, default) = (cells[0], cells[1]);
        let Some(literal) = default
            .strip_prefix('`')
            .and_then(|d| d.strip_suffix('`'))
            .filter(|d| !d.contains('`'))
        else {
            continue;
        };
        for key in keys.split(" / ") {
            let key = key.trim_matches('`');
            let (section, name) = key.split_once('.').expect("section.key");
            let section = match (section, name) {
                ("registry[]", "jwt_alg") => "registry-jwt",
                ("registry[]", _) => "registry",
                (s, _) => s,
            };
            let line = if literal.contains(" = ") {
                // The default is a whole assignment (`key_env = "…"` for a pair of keys).
                literal.to_string()
            } else if literal.parse::<i64>().is_ok() {
                format!("{name} = {literal}")
            } else {
                format!("{name} = \"{literal}\"")
            };
            if !added.iter().any(|(s, l)| s == section && l == &line) {
                added.push((section.to_string(), line));
            }
        }
    }
    let mut explicit = minimal();
    for (section, line) in &added {
        let header = match section.as_str() {
            "registry" => "name = \"with a secret\"\n".to_string(),
            "registry-jwt" => "name = \"with a certificate\"\n".to_string(),
            "instance" => "password_env = \"SN_PASSWORD\"\n".to_string(),
            "report" => "[report]\n".to_string(),
            other => {
                if !explicit.contains(&format!("[{other}]\n")) {
                    explicit = format!("[{other}]\n{explicit}");
                }
                format!("[{other}]\n")
            }
        };
        explicit = explicit.replacen(&header, &format!("{header}{line}\n"), 1);
    }
    assert!(
        added.len() >= 19,
        "only {} documented defaults found: {added:?}",
        added.len()
    );
    let implicit = parse(&minimal(), "keeper.toml", &env()).unwrap();
    let explicit =
        parse(&explicit, "keeper.toml", &env()).unwrap_or_else(|e| panic!("{e}\n{explicit}"));
    assert_eq!(
        format!("{explicit:?}"),
        format!("{implicit:?}"),
        "{added:?}"
    );
}

/// The example config is valid, and the values it sets without a comment are the defaults.
#[test]
fn the_example_config_parses_and_shows_the_defaults() {
    let example = include_str!("../../deploy/config.example.toml");
    let s = parse(example, "config.example.toml", &env()).unwrap();
    assert_eq!(s.refresh, RefreshSettings::default());
    assert_eq!(s.state, StateSettings::default());
    assert_eq!(s.server, ServerSettings::default());
    assert_eq!(s.instance.companion_path, DEFAULT_COMPANION_PATH);
}

#[test]
fn every_problem_of_a_file_is_reported_at_once_one_line_each() {
    let text = GOOD
        .replace("username = \"svc_oauth_keeper\"\n", "")
        .replace(
            "password_env = \"SN_PASSWORD\"",
            "password_env = \"SN_PASSWORD\"\npassword_file = \"/run/pw\"\ntimeout = 5",
        )
        .replace("lead_time = \"10m\"", "lead_time = \"soon\"")
        .replace("concurrency = 8", "concurrency = 0\ncuncurrency = 2")
        .replace("listen = \"127.0.0.1:9464\"", "listen = 9464")
        .replace("client_auth = \"post\"", "client_auth = \"jwt\"")
        + "\n[[registry]]\nscope = \"x\"\n\n[report]\ntable = \"sysevent\"\n\n[refersh]\ninterval = \"1m\"\n";
    let err = parse(&text, "keeper.toml", &env()).unwrap_err();
    let keys: Vec<&str> = err.problems().iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "refersh",
            "instance.username",
            "instance.password_env",
            "instance.timeout",
            "refresh.cuncurrency",
            "refresh.lead_time",
            "refresh.concurrency",
            "server.listen",
            "registry[0].client_auth",
            "registry[1].name",
            "report.table",
        ],
        "{err}"
    );
    assert_eq!(err.key(), Some("refersh"));
    let shown = err.to_string();
    assert_eq!(shown.lines().count(), keys.len(), "{shown}");
    for (line, key) in shown.lines().zip(&keys) {
        assert!(line.starts_with(&format!("keeper.toml: {key}: ")), "{line}");
    }
    // Today's wording where it existed.
    assert!(
        shown.contains("keeper.toml: refresh.lead_time: invalid duration \"soon\""),
        "{shown}"
    );
    assert!(
        shown.contains("refresh.concurrency: 0 is out of range (1 to 256)"),
        "{shown}"
    );
    assert!(
        shown.contains("instance.timeout: expected a string, found an integer"),
        "{shown}"
    );
    assert!(
        shown.contains("server.listen: expected a string, found an integer"),
        "{shown}"
    );
    assert!(
        shown.contains("refresh.cuncurrency: unknown key (known here: interval, lead_time, keepalive, concurrency, per_host_concurrency, timeout, shutdown_grace)"),
        "{shown}"
    );
}

#[test]
fn a_table_of_the_wrong_shape_is_one_problem_and_the_rest_is_still_checked() {
    let text = GOOD
        .replace("[[registry]]", "[registry]")
        .replace("[server]\nlisten = \"127.0.0.1:9464\"", "")
        .replace("lead_time = \"10m\"", "lead_time = \"soon\"");
    // Keys before the first table belong to the file itself.
    let text = format!("server = 9464\n{text}");
    let err = parse(&text, "keeper.toml", &env()).unwrap_err();
    let keys: Vec<&str> = err.problems().iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["refresh.lead_time", "server", "registry"], "{err}");
    assert!(
        err.to_string()
            .contains("registry: expected an array of tables ([[registry]]), found a table"),
        "{err}"
    );
    let none = parse("[refresh]\nlead_time = \"1m\"\n", "keeper.toml", &env()).unwrap_err();
    assert_eq!(
        none.to_string(),
        "keeper.toml: instance: the [instance] table is required"
    );
}

#[test]
fn a_bad_switch_is_reported_alone_without_guesses_about_its_keys() {
    // An unknown client_auth: whether private_key_file belongs cannot be judged.
    let text = GOOD.replace(
        "client_auth = \"post\"",
        "client_auth = \"jwt\"\nprivate_key_file = \"/k.pem\"",
    );
    let keys: Vec<String> = parse(&text, "keeper.toml", &env())
        .unwrap_err()
        .problems()
        .iter()
        .map(|p| p.key.clone())
        .collect();
    assert_eq!(keys, ["registry[0].client_auth"]);
    // Stray keys of another mode are each named.
    let text = GOOD.replace(
        "password_env = \"SN_PASSWORD\"",
        "password_env = \"SN_PASSWORD\"\nclient_id = \"x\"\nclient_secret_env = \"Y\"",
    );
    let keys: Vec<String> = parse(&text, "keeper.toml", &env())
        .unwrap_err()
        .problems()
        .iter()
        .map(|p| p.key.clone())
        .collect();
    assert_eq!(keys, ["instance.client_id", "instance.client_secret_env"]);
}

#[test]
fn unknown_keys_are_named_and_their_values_never_shown() {
    let secret = "hunter2-Pasted-S3cret";
    let text = GOOD
        .replace(
            "password_env = \"SN_PASSWORD\"",
            &format!("password_env = \"SN_PASSWORD\"\npassword = \"{secret}\""),
        )
        .replace(
            "client_auth = \"post\"",
            &format!("client_auth = \"post\"\nclient_secret = \"{secret}\""),
        );
    // Keys before the first table belong to the file itself.
    let text = format!("token = \"{secret}\"\n\"odd\\nkey\" = {{ value = \"{secret}\" }}\n{text}");
    let err = parse(&text, "keeper.toml", &env()).unwrap_err();
    let shown = format!("{err}\n{err:?}");
    assert!(!shown.contains(secret), "{shown}");
    let keys: Vec<&str> = err.problems().iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "\"odd\\nkey\"",
            "token",
            "instance.password",
            "registry[0].client_secret",
        ],
        "{shown}"
    );
    assert_eq!(
        err.to_string().lines().count(),
        4,
        "a key cannot forge a line"
    );
}

#[test]
fn a_syntax_error_says_where_and_what_but_never_the_text_there() {
    let secret = "hunter2-Pasted-S3cret";
    let cases = [
        format!("password = {secret}"),
        format!("password = \"{secret}"),
        format!("password = \"{secret}\\q\""),
        format!("username = \"{secret}\""),
        secret.to_string(),
        format!("password = 12{secret}"),
        format!("password = [\"{secret}\" \"{secret}\"]"),
        format!("password = {{ value = \"{secret}\" other = 1 }}"),
    ];
    for case in cases {
        // Line 7: GOOD opens with an empty line, then [instance] and four keys.
        let text = GOOD.replace(
            "companion_path = \"/api/x_acme/oauth_keeper\"\n",
            &format!("companion_path = \"/api/x_acme/oauth_keeper\"\n{case}\n"),
        );
        let err = parse(&text, "keeper.toml", &env()).unwrap_err();
        let shown = format!("{err}\n{err:?}");
        assert!(!shown.contains("hunter2"), "{case}: {shown}");
        let ConfigError::Syntax {
            position: Some((line, column)),
            ..
        } = err
        else {
            panic!("{case}: {shown}")
        };
        assert_eq!(line, 7, "{case}: {shown}");
        assert!(
            err.to_string().starts_with(&format!(
                "keeper.toml: line 7, column {column}: not valid TOML: "
            )),
            "{shown}"
        );
        assert_eq!(err.key(), None);
    }
    let err = parse("[refresh]\npassword = hunter2\n", "k.toml", &env()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "k.toml: line 2, column 12: not valid TOML: string values must be quoted, expected literal string"
    );
}

#[test]
fn a_secret_pasted_where_a_name_url_or_path_belongs_is_not_shown() {
    let secret = "hunter2 Pasted/S3cret!";
    for (key, name) in [
        ("instance.password_env", "SN_PASSWORD"),
        ("registry[0].client_secret_env", "SP_CLIENT_SECRET"),
    ] {
        let msg = error_of(&GOOD.replace(name, secret));
        assert!(msg.contains(key), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
    }
    // A variable's name is shown: it is what the operator has to set.
    let missing = error_of(&GOOD.replace("SN_PASSWORD", "SN_MISSING"));
    assert!(
        missing.contains("instance.password_env: environment variable SN_MISSING is not set"),
        "{missing}"
    );
    let key = KeySource::Env(secret.into())
        .resolve("k.toml", &env())
        .unwrap_err()
        .to_string();
    assert!(
        key.contains("state.key_env") && !key.contains("hunter2"),
        "{key}"
    );
    for url in [
        "https://acme.service-now.com/?token=hunter2",
        "https://acme.service-now.com/#hunter2",
        "hunter2",
        "https://svc:hunter2@acme.service-now.com/",
    ] {
        let msg = error_of(&GOOD.replace("https://acme.service-now.com/", url));
        assert!(msg.contains("instance.url"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
    }
    let msg = error_of(&GOOD.replace("/api/x_acme/oauth_keeper", "/api/x?key=hunter2"));
    assert!(msg.contains("instance.companion_path"), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
}

#[test]
fn positions_count_lines_and_characters_from_1() {
    assert_eq!(line_and_column("", 0), (1, 1));
    assert_eq!(line_and_column("äb", 2), (1, 2), "columns in characters");
    assert_eq!(line_and_column("ä\nab", 4), (2, 2));
    assert_eq!(line_and_column("a\n", 2), (2, 1), "the end of the file");
}

#[test]
fn per_host_concurrency_follows_concurrency_unless_set() {
    let parsed = |text: &str| parse(text, "keeper.toml", &env()).unwrap().refresh;
    let unset = parsed(&GOOD.replace("concurrency = 8", "concurrency = 32"));
    assert_eq!(
        (unset.concurrency, unset.per_host_concurrency),
        (32, 32),
        "an estate at one host (Entra) runs at the configured concurrency"
    );
    let set = parsed(&GOOD.replace(
        "concurrency = 8",
        "concurrency = 32\nper_host_concurrency = 4",
    ));
    assert_eq!((set.concurrency, set.per_host_concurrency), (32, 4));
}

#[test]
fn a_pinned_token_url_is_taken_exactly_and_only_when_safe() {
    let pinned = |url: &str| {
        GOOD.replace(
            "client_auth = \"post\"",
            &format!("client_auth = \"post\"\ntoken_url = \"{url}\""),
        )
    };
    let s = parse(
        &pinned("https://login.microsoftonline.com/contoso/oauth2/v2.0/token/"),
        "keeper.toml",
        &env(),
    )
    .unwrap();
    let url = s.registries[0].token_url.as_ref().unwrap();
    assert_eq!(
        url.as_str(),
        "https://login.microsoftonline.com/contoso/oauth2/v2.0/token/",
        "kept exactly, trailing slash and all"
    );
    let rule = s.registries[0].rule();
    assert!(rule.keeper_secret && rule.pin.is_some());
    let local = parse(
        &pinned("http://127.0.0.1:8080/token"),
        "keeper.toml",
        &env(),
    )
    .unwrap();
    assert!(local.registries[0].token_url.is_some());
    for (bad, says) in [
        ("http://idp.example/token", "loopback"),
        ("ftp://idp.example/token", "scheme"),
        ("https://user:sekrit@idp.example/token", "credentials"),
        ("https://idp.example/token?client_secret=sekrit", "query"),
        ("https://idp.example/token#x", "fragment"),
        ("not a url", "not a URL"),
    ] {
        let e = error_of(&pinned(bad));
        assert!(
            e.contains("registry[0].token_url") && e.contains(says),
            "{bad}: {e}"
        );
        assert!(!e.contains("sekrit"), "{e}");
    }
}

#[test]
fn a_registry_configured_twice_is_refused_naming_both() {
    let twice = format!("{GOOD}\n[[registry]]\nname = \"SharePoint Online\"\n");
    let e = error_of(&twice);
    assert!(
        e.contains("registry[1].name") && e.contains("registry[0]"),
        "{e}"
    );
}

#[test]
fn a_registry_is_matched_by_sys_id_before_name() {
    let id = "0123456789abcdef0123456789abcdef";
    let two = format!("{GOOD}\n[[registry]]\nname = \"{id}\"\nscope = \"by-id\"\n");
    let s = parse(&two, "keeper.toml", &env()).unwrap();
    let found = s.registry("SharePoint Online", id).unwrap();
    assert_eq!(found.scope.as_deref(), Some("by-id"));
    let by_name = s.registry("SharePoint Online", "another").unwrap();
    assert_eq!(by_name.name, "SharePoint Online");
}
