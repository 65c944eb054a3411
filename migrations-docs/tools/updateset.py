#!/usr/bin/env python3
"""Builds and checks the companion's update set (Python 3.11 standard library only).

    python3 migrations-docs/tools/updateset.py build   # rewrite the update set XML from sources
    python3 migrations-docs/tools/updateset.py check   # what CI runs; exits 1 on any problem

The update set is generated, never edited by hand, so it cannot drift from the readable sources
(the scripts in migrations-docs/companion/). `check` proves that the committed XML
  * is well-formed, and so is every record payload inside it;
  * is exactly what `build` produces from the current sources;
  * embeds every script of migrations-docs/companion/ byte for byte, each in its record, and no
    other script;
  * contains exactly the records that migrations-docs/README.md documents (the records table and
    the ACL table between their <!-- ...:begin/end --> markers), no more, no fewer;
  * is consistent: every ACL is bound to the role, the API's base path is /api/<namespace>/<id>,
    each resource is authenticated and authorised by the REST_Endpoint ACL of its path, and no
    Script Include is client callable.
"""

from __future__ import annotations

import hashlib
import re
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

HERE = Path(__file__).resolve().parent
DOCS = HERE.parent
SCRIPTS = DOCS / "companion"
OUTPUT = DOCS / "update-set" / "sn-oauth-keeper-companion.xml"
README = DOCS / "README.md"

VERSION = "1.0.0"
STAMP = "2026-11-28 12:00:00"
ROLE = "snok_oauth_keeper"
NAMESPACE = "snok"
API_ID = "oauth_keeper"
API_NAME = "OAuth Keeper Companion"
BASE_URI = f"/api/{NAMESPACE}/{API_ID}"


@dataclass(frozen=True)
class Resource:
    """One resource (sys_ws_operation) of the Scripted REST API."""
    key: str            # fixes its sys_id
    name: str
    method: str
    path: str           # relative to BASE_URI; its REST_Endpoint ACL is named BASE_URI + path
    script: str         # file in companion/
    summary: str


@dataclass(frozen=True)
class ScriptInclude:
    """A global Script Include the resources call (never client callable)."""
    name: str
    description: str

    @property
    def script(self) -> str:
        return f"{self.name}.js"


RESOURCES = [
    Resource("secrets", "secrets", "GET", "/secrets", "secrets.js",
             "GET ?sys_id=<refresh row>[,...][&include=client_secret]"),
    Resource("verify", "verify", "POST", "/verify", "verify.js",
             'POST {"tokens":[{"sys_id","sha256"}]}: whether stored tokens hash to the digests'),
    Resource("lease", "lease", "POST", "/lease", "lease.js",
             'POST {"holder","ttl_seconds"[,"claims"][,"pid"]}: one keeper per instance'),
    Resource("lease_release", "lease release", "DELETE", "/lease", "lease-release.js",
             "DELETE ?holder=<id>: release the lease"),
    Resource("claims_release", "claims release", "DELETE", "/lease/claims", "claims-release.js",
             "DELETE ?holder=<id>&sys_id=<id>[,...]: drop claims"),
    # Added after 1.0.0's first five; read-only, under the REST ACL of /lease like its siblings.
    Resource("lease_status", "lease status", "GET", "/lease", "lease-status.js",
             "GET: who holds the lease (fence, time left, pid) and every claim; changes nothing"),
]
SCRIPT_INCLUDES = [
    ScriptInclude("SnokOAuthKeeperCompanion",
                  "sn-oauth-keeper companion: who may call, the audit line, the JSON answer and "
                  "the error envelope every resource of the OAuth Keeper Companion shares."),
    ScriptInclude("SnokOAuthKeeperLease",
                  "sn-oauth-keeper companion: the lease (one keeper per instance) and the claims, "
                  "in table u_snok_oauth_keeper_lease, changed inside one GlideMutex section."),
]

# The companion's own table: the lease row and the claim rows. Global custom tables take the u_
# prefix, and so do their columns. (element, label, type, max_length)
LEASE_TABLE = "u_snok_oauth_keeper_lease"
LEASE_TABLE_LABEL = "sn-oauth-keeper lease"
LEASE_COLUMNS = [
    ("u_kind", "Kind", "string", "16"),
    ("u_holder", "Holder", "string", "100"),
    ("u_fence", "Fence", "integer", ""),
    ("u_expires_ms", "Expires (epoch milliseconds)", "string", "20"),
    ("u_credential", "Credential (refresh row sys_id)", "string", "32"),
    # A string, as u_expires_ms: pids reach 4294967295, past a 32-bit signed integer column.
    ("u_pid", "Holder's process id", "string", "10"),
]
GLIDE_TYPES = {"collection": "Collection", "string": "String", "integer": "Integer"}
# The API's default ACL: the REST_Endpoint ACL of the first resource, as in release 1.0.0.
DEFAULT_ACL_PATH = RESOURCES[0].path

# (name, operation) of the record ACLs, in the order the README lists them.
RECORD_ACLS = [
    ("oauth_credential", "read"),
    *[(f"oauth_credential.{f}", "read") for f in
      ("type", "peer", "oauth_requestor_profile", "user", "scopes", "expires", "name")],
    ("oauth_entity", "read"),
    *[(f"oauth_entity.{f}", "read") for f in ("name", "client_id", "token_url", "default_grant_type")],
    ("oauth_credential", "write"),
    ("oauth_credential.token_received", "write"),
    ("oauth_credential.expires", "write"),
    ("oauth_credential", "create"),
    *[(f"oauth_credential.{f}", "create") for f in
      ("type", "peer", "oauth_requestor_profile", "user", "scopes", "name", "token_received", "expires")],
]

# Record ACLs whose script narrows them to some rows: (name, operation) -> script in companion/.
ACL_SCRIPTS = {
    # Only the rows the integration user created: the scratch row of `check --round-trip`.
    ("oauth_credential", "delete"): "acl-delete-own-credential.js",
}

# Who may call the companion: the system property naming the one user it answers, and the event
# every refused call queues.
ALLOWED_USER_PROPERTY = "snok.oauth_keeper.allowed_user"
REFUSED_EVENT = "snok.oauth_keeper.refused"

# The scratch Application Registry `check --round-trip` attaches its scratch credential to: no
# secret, and a token URL in the reserved .invalid domain (RFC 2606), which resolves nowhere.
ROUND_TRIP_REGISTRY = "sn-oauth-keeper round-trip"
ROUND_TRIP_TOKEN_URL = "https://round-trip.invalid/oauth_token"


def sys_id(key: str) -> str:
    """A fixed sys_id per record, so re-importing updates the same records."""
    return hashlib.md5(f"sn-oauth-keeper|{key}".encode()).hexdigest()


GLOBAL = [("sys_package", {"display_value": "Global", "source": "global"}, "global"),
          ("sys_scope", {"display_value": "Global"}, "global")]


def element(name: str, value: str = "", attrs: dict[str, str] | None = None) -> str:
    attr = "".join(f" {k}={quoteattr(v)}" for k, v in (attrs or {}).items())
    if value == "":
        return f"<{name}{attr}/>"
    return f"<{name}{attr}>{escape(value)}</{name}>"


def record(table: str, rid: str, fields: list) -> str:
    """One record_update payload; fields are (name, value) or (name, attrs, value)."""
    common = [
        ("sys_class_name", table),
        ("sys_created_by", "admin"),
        ("sys_created_on", STAMP),
        ("sys_id", rid),
        ("sys_mod_count", "0"),
        ("sys_update_name", f"{table}_{rid}"),
        ("sys_updated_by", "admin"),
        ("sys_updated_on", STAMP),
    ]
    parts = []
    for f in sorted([*fields, *common, *GLOBAL], key=lambda f: f[0]):
        if len(f) == 2:
            parts.append(element(f[0], f[1]))
        else:
            parts.append(element(f[0], f[2], f[1]))
    body = "".join(parts)
    return (f'<?xml version="1.0" encoding="UTF-8"?><record_update table="{table}">'
            f'<{table} action="INSERT_OR_UPDATE">{body}</{table}></record_update>')


def rest_acl_name(path: str) -> str:
    return f"{BASE_URI}{path}"


def rest_acl_id(path: str) -> str:
    # The first REST ACL keeps the sys_id it had when it was the only one.
    return sys_id("acl|rest") if path == DEFAULT_ACL_PATH else sys_id(f"acl|rest|{path}")


def script_text(file: str) -> str:
    return (SCRIPTS / file).read_text(encoding="utf-8")


def records() -> list[tuple[str, str, str, str, str]]:
    """(table, sys_id, update type, target name, payload) of every record, in commit order."""
    role_id = sys_id("role")
    api_id = sys_id("api")
    default_acl = rest_acl_name(DEFAULT_ACL_PATH)
    out = []
    out.append(("sys_user_role", role_id, "Role", ROLE, record("sys_user_role", role_id, [
        ("name", ROLE),
        ("sys_name", ROLE),
        ("suffix", ROLE),
        ("description", "sn-oauth-keeper integration user: reads and renews oauth_credential rows "
                        "and calls the OAuth Keeper Companion. Grant it to the integration user only."),
        ("elevated_privilege", "false"),
        ("grantable", "true"),
        ("can_delegate", "false"),
        # No assignable_by: a reference to security_admin needs that role's sys_id, which this
        # update set cannot know; security_admin sets it (runbook), the companion refuses every
        # call until it is set, and leaving the field out keeps it when the set is re-imported.
        ("includes_roles", ""),
        ("requires_subscription", ""),
        ("scoped_admin", "false"),
    ])))
    table_id = sys_id(f"sys_db_object|{LEASE_TABLE}")
    out.append(("sys_db_object", table_id, "Table", LEASE_TABLE, record("sys_db_object", table_id, [
        ("name", LEASE_TABLE),
        ("sys_name", LEASE_TABLE_LABEL),
        ("label", LEASE_TABLE_LABEL),
        ("super_class", ""),
        ("is_extendable", "false"),
        # No generated ACLs and no REST access: only the companion's scripts (GlideRecord) and
        # administrators touch it.
        ("create_access_controls", "false"),
        ("ws_access", "false"),
        ("access", "package_private"),
    ])))
    for element, label, kind, length in [("", LEASE_TABLE_LABEL, "collection", "40"), *LEASE_COLUMNS]:
        column_id = sys_id(f"sys_dictionary|{LEASE_TABLE}|{element}")
        out.append(("sys_dictionary", column_id, "Dictionary", f"{LEASE_TABLE}.{element}".rstrip("."),
                    record("sys_dictionary", column_id, [
                        ("name", LEASE_TABLE),
                        ("element", element),
                        ("column_label", label),
                        ("internal_type", {"display_value": GLIDE_TYPES[kind]}, kind),
                        ("max_length", length),
                        ("active", "true"),
                        ("mandatory", "false"),
                        ("read_only", "false"),
                    ])))
    for include in SCRIPT_INCLUDES:
        include_id = sys_id(f"script_include|{include.name}")
        out.append(("sys_script_include", include_id, "Script Include", include.name,
                    record("sys_script_include", include_id, [
                        ("name", include.name),
                        ("sys_name", include.name),
                        ("api_name", f"global.{include.name}"),
                        ("description", include.description),
                        ("script", script_text(include.script)),
                        ("active", "true"),
                        # Never callable from the browser (GlideAjax), and only from this scope.
                        ("client_callable", "false"),
                        ("access", "package_private"),
                    ])))
    out.append(("sys_ws_definition", api_id, "Scripted REST Service", API_NAME,
                record("sys_ws_definition", api_id, [
                    ("name", API_NAME),
                    ("sys_name", API_NAME),
                    ("service_id", API_ID),
                    ("namespace", NAMESPACE),
                    ("base_uri", BASE_URI),
                    ("active", "true"),
                    ("is_versioned", "false"),
                    ("short_description", "Hands sn-oauth-keeper the decrypted refresh tokens "
                                          "(and, when asked, client secrets) it needs."),
                    ("doc_link", "migrations-docs/README.md of sn-oauth-keeper"),
                    ("consumes", "application/json"),
                    ("consumes_customized", "true"),
                    ("produces", "application/json"),
                    ("produces_customized", "true"),
                    ("enforce_acl", {"display_value": default_acl}, rest_acl_id(DEFAULT_ACL_PATH)),
                    ("default_operation_uri", ""),
                ])))
    for resource in RESOURCES:
        # The first resource keeps the sys_id it had when it was the only one.
        op_id = sys_id(f"operation|{resource.key}")
        acl_name = rest_acl_name(resource.path)
        out.append(("sys_ws_operation", op_id, "Scripted REST Resource", resource.name,
                    record("sys_ws_operation", op_id, [
                        ("name", resource.name),
                        ("sys_name", resource.name),
                        ("web_service_definition", {"display_value": API_NAME}, api_id),
                        ("web_service_version", ""),
                        ("http_method", resource.method),
                        ("relative_path", resource.path),
                        ("operation_uri", f"{BASE_URI}{resource.path}"),
                        ("operation_script", script_text(resource.script)),
                        ("active", "true"),
                        ("requires_authentication", "true"),
                        ("requires_acl_authorization", "true"),
                        ("requires_snc_internal_role", "false"),
                        ("enforce_acl", {"display_value": acl_name}, rest_acl_id(resource.path)),
                        ("consumes", "application/json"),
                        ("consumes_customized", "true"),
                        ("produces", "application/json"),
                        ("produces_customized", "true"),
                        ("short_description", resource.summary),
                        ("request_example", ""),
                    ])))
    paths = list(dict.fromkeys(r.path for r in RESOURCES))
    acls = [(rest_acl_name(p), "execute", "rest_endpoint", rest_acl_id(p)) for p in paths]
    acls += [(n, o, "record", sys_id(f"acl|{n}|{o}")) for n, o in [*RECORD_ACLS, *ACL_SCRIPTS]]
    for name, operation, kind, acl_id in acls:
        script_file = ACL_SCRIPTS.get((name, operation))
        rows = " it created" if script_file else ""
        out.append(("sys_security_acl", acl_id, "Access Control", f"{name}.{operation}",
                    record("sys_security_acl", acl_id, [
                        ("name", name),
                        ("sys_name", name),
                        ("operation", {"display_value": operation}, operation),
                        ("type", {"display_value": kind}, kind),
                        ("active", "true"),
                        ("admin_overrides", "true"),
                        ("advanced", "true" if script_file else "false"),
                        ("condition", ""),
                        ("script", script_text(script_file) if script_file else ""),
                        ("decision_type", "allow"),
                        ("description", f"sn-oauth-keeper: role {ROLE} may {operation} {name}{rows}."),
                    ])))
    for name, operation, _kind, acl_id in acls:
        link_id = sys_id(f"acl_role|{name}|{operation}")
        out.append(("sys_security_acl_role", link_id, "Access Roles", f"{name}.{operation}",
                    record("sys_security_acl_role", link_id, [
                        ("sys_security_acl", {"display_value": name}, acl_id),
                        ("sys_user_role", {"display_value": ROLE}, role_id),
                    ])))
    property_id = sys_id(f"sys_properties|{ALLOWED_USER_PROPERTY}")
    out.append(("sys_properties", property_id, "System Property", ALLOWED_USER_PROPERTY,
                record("sys_properties", property_id, [
                    ("name", ALLOWED_USER_PROPERTY),
                    ("sys_name", ALLOWED_USER_PROPERTY),
                    ("type", "string"),
                    # No value: installed empty (the companion refuses everyone until it is set),
                    # and re-importing the update set keeps the value security_admin set.
                    ("description", "sn-oauth-keeper: the User ID (user_name) of the only user the "
                                    "OAuth Keeper Companion answers, the keeper's integration user. "
                                    "Empty: the companion refuses every call."),
                    ("write_roles", "security_admin"),
                    ("read_roles", ""),
                    ("is_private", "false"),
                    ("ignore_cache", "false"),
                ])))
    event_id = sys_id(f"sysevent_register|{REFUSED_EVENT}")
    out.append(("sysevent_register", event_id, "Event Registration", REFUSED_EVENT,
                record("sysevent_register", event_id, [
                    ("event_name", REFUSED_EVENT),
                    ("sys_name", REFUSED_EVENT),
                    ("table", "sys_user"),
                    ("queue", ""),
                    ("priority", "100"),
                    ("fired_by", "Script Include SnokOAuthKeeperCompanion, on every refused call"),
                    ("description", "The OAuth Keeper Companion refused a call. Record: the caller's "
                                    "sys_user. parm1: the caller's user_name. parm2: the resource "
                                    "and the reason (no_role, no_allowed_user, not_allowed_user, "
                                    "role_not_locked, or a malformed request). Alert on it."),
                ])))
    registry_id = sys_id("oauth_entity|round-trip")
    out.append(("oauth_entity", registry_id, "Application Registry", ROUND_TRIP_REGISTRY,
                record("oauth_entity", registry_id, [
                    ("name", ROUND_TRIP_REGISTRY),
                    ("sys_name", ROUND_TRIP_REGISTRY),
                    ("type", "oauth_provider"),
                    # A grant the keeper never refreshes, should a scratch row ever be left over.
                    ("default_grant_type", "client_credentials"),
                    ("client_id", "sn-oauth-keeper-round-trip"),
                    ("client_secret", ""),
                    ("token_url", ROUND_TRIP_TOKEN_URL),
                    ("active", "true"),
                    ("comments", "Scratch registry of sn-oauth-keeper check --round-trip: the keeper "
                                 "attaches a scratch oauth_credential row to it and deletes the row. "
                                 "Never used to obtain tokens: its token URL resolves nowhere."),
                ])))
    return out


def build() -> str:
    set_id = sys_id("remote_update_set")
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             f'<unload unload_date="{STAMP}">',
             '<sys_remote_update_set action="INSERT_OR_UPDATE">'
             + element("application", "global", {"display_value": "Global"})
             + element("application_name", "Global")
             + element("application_scope", "global")
             + element("description", "sn-oauth-keeper companion: the OAuth Keeper Companion "
                                      "Scripted REST API (global scope), its Script Includes and "
                                      "lease table, role snok_oauth_keeper and its ACLs, the "
                                      "allowed-user property, the refused-call event, the "
                                      "scratch registry of check --round-trip. "
                                      "See migrations-docs/README.md.")
             + element("name", f"sn-oauth-keeper companion {VERSION}")
             + element("release_date", "")
             + element("remote_sys_id", set_id)
             + element("state", "loaded")
             + element("sys_class_name", "sys_remote_update_set")
             + element("sys_created_by", "admin")
             + element("sys_created_on", STAMP)
             + element("sys_id", set_id)
             + element("sys_mod_count", "0")
             + element("sys_updated_by", "admin")
             + element("sys_updated_on", STAMP)
             + "</sys_remote_update_set>"]
    for table, rid, kind, target, payload in records():
        lines.append(
            '<sys_update_xml action="INSERT_OR_UPDATE">'
            + element("action", "INSERT_OR_UPDATE")
            + element("application", "global", {"display_value": "Global"})
            + element("category", "customer")
            + element("name", f"{table}_{rid}")
            + element("payload", payload)
            + element("remote_update_set", set_id,
                      {"display_value": f"sn-oauth-keeper companion {VERSION}"})
            + element("replace_on_upgrade", "false")
            + element("sys_created_by", "admin")
            + element("sys_created_on", STAMP)
            + element("sys_id", sys_id(f"update|{table}|{rid}"))
            + element("sys_mod_count", "0")
            + element("sys_updated_by", "admin")
            + element("sys_updated_on", STAMP)
            + element("table", "")
            + element("target_name", target)
            + element("type", kind)
            + element("update_domain", "global")
            + "</sys_update_xml>")
    lines.append("</unload>")
    return "\n".join(lines) + "\n"


# The field that names a record, where it is not `name`.
NAME_FIELDS = {"sysevent_register": "event_name"}


def documented(marker: str) -> list[list[str]]:
    """Rows (cells as written) of the README table between the marker comments."""
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"<!-- {marker}:begin -->(.*?)<!-- {marker}:end -->", text, re.S)
    if not match:
        raise SystemExit(f"README.md has no <!-- {marker}:begin/end --> table")
    rows = []
    for line in match.group(1).splitlines():
        if line.startswith("|") and not re.match(r"^\|\s*-", line):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows.append(cells)
    return rows[1:]  # without the header row


def code_spans(cell: str) -> list[str]:
    """The `code` spans of a table cell: the names it gives."""
    return re.findall(r"`([^`]*)`", cell)


def check() -> list[str]:
    problems = []
    try:
        committed = OUTPUT.read_text(encoding="utf-8")
    except OSError as e:
        return [f"{OUTPUT}: {e}"]
    try:
        root = ET.fromstring(committed)
    except ET.ParseError as e:
        return [f"{OUTPUT.name} is not well-formed XML: {e}"]
    if root.tag != "unload":
        problems.append(f"root element is <{root.tag}>, not <unload>")
    if len(root.findall("sys_remote_update_set")) != 1:
        problems.append("there must be exactly one sys_remote_update_set")
    found: dict[str, list[ET.Element]] = {}
    for update in root.findall("sys_update_xml"):
        payload = update.findtext("payload") or ""
        try:
            inner = ET.fromstring(payload.encode("utf-8"))
        except ET.ParseError as e:
            problems.append(f"{update.findtext('name')}: payload is not well-formed: {e}")
            continue
        table = inner.get("table", "")
        rec = inner.find(table)
        if rec is None:
            problems.append(f"{update.findtext('name')}: payload has no <{table}> record")
            continue
        if update.findtext("name") != f"{table}_{rec.findtext('sys_id')}":
            problems.append(f"{update.findtext('name')}: name does not match its record")
        found.setdefault(table, []).append(rec)
    if committed != build():
        problems.append(f"{OUTPUT.name} is not what `updateset.py build` makes from the current "
                        "sources: run it and commit the result")

    # Every script of companion/ is embedded, byte for byte, in the record that runs it.
    ops = found.get("sys_ws_operation", [])
    includes = found.get("sys_script_include", [])
    embedded: dict[str, str] = {}
    for resource in RESOURCES:
        match = [r for r in ops if r.findtext("http_method") == resource.method
                 and r.findtext("relative_path") == resource.path]
        if len(match) != 1:
            problems.append(f"the update set must hold one resource {resource.method} {resource.path}")
            continue
        embedded[resource.script] = match[0].findtext("operation_script") or ""
    for include in SCRIPT_INCLUDES:
        match = [r for r in includes if r.findtext("name") == include.name]
        if len(match) != 1:
            problems.append(f"the update set must hold one Script Include {include.name}")
            continue
        embedded[include.script] = match[0].findtext("script") or ""
    for (name, operation), file in ACL_SCRIPTS.items():
        match = [r for r in found.get("sys_security_acl", [])
                 if r.findtext("name") == name and r.findtext("operation") == operation]
        if len(match) != 1 or match[0].findtext("advanced") != "true":
            problems.append(f"the update set must hold one scripted ACL {name} {operation}")
            continue
        embedded[file] = match[0].findtext("script") or ""
    for file in sorted(p.name for p in SCRIPTS.glob("*.js")):
        if file not in embedded:
            problems.append(f"companion/{file} is in no record of the update set")
        elif embedded[file] != script_text(file):
            problems.append(f"the update set's copy of companion/{file} differs from the file")

    # Exactly the documented records: counts per table and the named records.
    for table, count, names_cell, *_ in documented("records"):
        table = table.strip("`")
        have = found.get(table, [])
        if str(len(have)) != count:
            problems.append(f"README documents {count} {table} record(s); the update set has {len(have)}")
        if not names_cell.startswith("("):
            names = sorted(r.findtext(NAME_FIELDS.get(table, "name")) or "" for r in have)
            if names != sorted(code_spans(names_cell)):
                problems.append(f"README names the {table} records {names_cell}; the update set has {names}")
    undocumented = set(found) - {row[0].strip("`") for row in documented("records")}
    if undocumented:
        problems.append(f"records of undocumented tables: {sorted(undocumented)}")
    acls_doc = sorted((name.strip("`"), op, kind) for name, op, kind, *_ in documented("acls"))
    acls_xml = sorted((r.findtext("name"), r.findtext("operation"), r.findtext("type"))
                      for r in found.get("sys_security_acl", []))
    if acls_doc != acls_xml:
        problems.append("the README's ACL table and the update set's ACLs differ:\n"
                        f"  only documented: {sorted(set(acls_doc) - set(acls_xml))}\n"
                        f"  only in the XML: {sorted(set(acls_xml) - set(acls_doc))}")

    # Consistency.
    role_ids = {r.findtext("sys_id") for r in found.get("sys_user_role", []) if r.findtext("name") == ROLE}
    acl_ids = {r.findtext("sys_id") for r in found.get("sys_security_acl", [])}
    bound = [r.findtext("sys_security_acl") for r in found.get("sys_security_acl_role", [])
             if r.findtext("sys_user_role") in role_ids]
    if sorted(bound) != sorted(acl_ids):
        problems.append(f"every ACL must be bound to role {ROLE} exactly once")
    for api in found.get("sys_ws_definition", []):
        expected = f"/api/{api.findtext('namespace')}/{api.findtext('service_id')}"
        if api.findtext("base_uri") != expected or expected != BASE_URI:
            problems.append(f"base_uri {api.findtext('base_uri')!r} is not {expected!r} / {BASE_URI!r}")
    rest = {r.findtext("sys_id"): r.findtext("name") for r in found.get("sys_security_acl", [])
            if r.findtext("type") == "rest_endpoint"}
    for op in ops:
        where = f"{op.findtext('http_method')} {op.findtext('relative_path')}"
        if (op.findtext("requires_acl_authorization") != "true"
                or rest.get(op.findtext("enforce_acl")) != f"{BASE_URI}{op.findtext('relative_path')}"):
            problems.append(f"{where} must require authorization by the REST_Endpoint ACL of its path")
        if op.findtext("requires_authentication") != "true":
            problems.append(f"{where} must require authentication")
    for role in found.get("sys_user_role", []):
        if role.find("assignable_by") is not None:
            problems.append("the role must not carry assignable_by: a re-import would clear it")
    for prop in found.get("sys_properties", []):
        if prop.find("value") is not None or prop.findtext("write_roles") != "security_admin":
            problems.append(f"property {prop.findtext('name')} must carry no value and be written "
                            "by security_admin only")
    tables = found.get("sys_db_object", [])
    if [t.findtext("name") for t in tables] != [LEASE_TABLE] or tables[0].findtext("ws_access") != "false":
        problems.append(f"the update set must create table {LEASE_TABLE}, closed to web services")
    columns = sorted(r.findtext("element") or "" for r in found.get("sys_dictionary", [])
                     if r.findtext("name") == LEASE_TABLE)
    if columns != sorted(["", *(c[0] for c in LEASE_COLUMNS)]):
        problems.append(f"the dictionary of {LEASE_TABLE} must hold exactly its columns: {columns}")
    for registry in found.get("oauth_entity", []):
        if registry.findtext("client_secret") or not (registry.findtext("token_url") or "").startswith(
                "https://round-trip.invalid/"):
            problems.append("the scratch registry must have no client secret and an unroutable token URL")
    for include in includes:
        if include.findtext("client_callable") != "false" or include.findtext("access") != "package_private":
            problems.append(f"Script Include {include.findtext('name')} must be neither client callable "
                            "nor accessible from other scopes")
    return problems


def main(argv: list[str]) -> int:
    if argv[1:] == ["build"]:
        OUTPUT.parent.mkdir(parents=True, exist_ok=True)
        OUTPUT.write_text(build(), encoding="utf-8")
        print(f"wrote {OUTPUT.relative_to(DOCS.parent)}")
        return 0
    if argv[1:] == ["check"]:
        problems = check()
        for p in problems:
            print(f"updateset: {p}", file=sys.stderr)
        if problems:
            return 1
        print(f"updateset: {OUTPUT.name} is well-formed, current, and holds exactly the "
              f"{len(records())} documented records")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
