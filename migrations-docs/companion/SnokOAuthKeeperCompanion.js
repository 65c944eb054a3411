/*
 * sn-oauth-keeper companion: Script Include "SnokOAuthKeeperCompanion" (global scope, not client
 * callable, accessible from this scope only).
 *
 * What every resource of the Scripted REST API "OAuth Keeper Companion" shares, so that the
 * resource scripts beside this file stay short and cannot drift apart on it: who may call (the
 * role, the one allowed user, a role only security_admin can assign), the one audit line per call
 * and the event of every refused call, the JSON answer and ServiceNow's error envelope, and the
 * parsers of query parameters and JSON bodies.
 *
 * ES5, as global server scripts run in ES5 mode. The wire contract is fixed in
 * migrations-docs/README.md; tests/contract/companion.json holds the cases the resource scripts
 * (with this Script Include) and the keeper's simulator must both answer alike.
 *
 * Never logs a token or a secret: audit lines and events name the caller, the resource, counts,
 * sys_ids and reasons.
 */
var SnokOAuthKeeperCompanion = Class.create();

/** The role the update set creates; the resources' REST_Endpoint ACLs demand it too. */
SnokOAuthKeeperCompanion.ROLE = 'snok_oauth_keeper';

/** The system log source of the audit lines (System Logs > System Log > All, Source). */
SnokOAuthKeeperCompanion.AUDIT_SOURCE = 'sn-oauth-keeper companion';

/** The system property naming the one user the companion answers; empty refuses everyone. */
SnokOAuthKeeperCompanion.ALLOWED_USER_PROPERTY = 'snok.oauth_keeper.allowed_user';

/** The role that alone may assign ROLE (sys_user_role.assignable_by). */
SnokOAuthKeeperCompanion.ASSIGNABLE_BY = 'security_admin';

/** The event (registered by the update set) every refused call queues, for admins to alert on. */
SnokOAuthKeeperCompanion.REFUSED_EVENT = 'snok.oauth_keeper.refused';

/** A platform sys_id: 32 lowercase hex digits. */
SnokOAuthKeeperCompanion.isSysId = function (value) {
    return typeof value === 'string' && /^[0-9a-f]{32}$/.test(value);
};

/** ServiceNow's error envelope, as the Table API writes it. */
SnokOAuthKeeperCompanion.failure = function (message, detail) {
    return { error: { message: message, detail: detail }, status: 'failure' };
};

/** The name of the role that may assign ROLE, or '' when any role admin may. */
SnokOAuthKeeperCompanion.roleAssignableBy = function () {
    var role = new GlideRecord('sys_user_role');
    if (!role.get('name', SnokOAuthKeeperCompanion.ROLE)) {
        return '';
    }
    var assigner = new GlideRecord('sys_user_role');
    var by = role.getValue('assignable_by');
    return by !== null && assigner.get('sys_id', by) ? '' + assigner.getValue('name') : '';
};

/**
 * The clear text of an encrypted column, or '' when there is none: an empty field, a value
 * that does not decrypt, or a column this table does not have (getElement() answers null).
 */
SnokOAuthKeeperCompanion.decrypted = function (record, column) {
    var element = record.getElement(column);
    if (element === null) {
        return '';
    }
    var value = element.getDecryptedValue();
    return value ? '' + value : '';
};

SnokOAuthKeeperCompanion.prototype = {
    /**
     * One call of one resource; `resource` names it in the audit line ('GET /secrets').
     */
    initialize: function (request, response, resource) {
        this.request = request;
        this.response = response;
        this.resource = resource;
        this.user = '' + gs.getUserName();
    },

    /**
     * Whether the caller may use the companion; refuses the call (403) when not. Checked before
     * anything else, so a caller who may not learns nothing about its parameters, and in this
     * order, so only the allowed user learns how the instance is set up:
     *   1. the caller holds ROLE (admin holds every role);
     *   2. the caller is the user the system property ALLOWED_USER_PROPERTY names (empty: no one);
     *   3. ROLE is assignable only by security_admin, so no user administrator can hand it out.
     */
    admit: function () {
        var companion = SnokOAuthKeeperCompanion;
        if (!gs.hasRole(companion.ROLE)) {
            this.refuse(403, 'Insufficient rights to query records',
                'The caller lacks role ' + companion.ROLE, 'no_role');
            return false;
        }
        // A property that is gone answers the alternative; one without a value may answer null.
        var allowed = gs.getProperty(companion.ALLOWED_USER_PROPERTY, '');
        allowed = allowed ? '' + allowed : '';
        if (allowed === '') {
            this.refuse(403, 'Companion allowed user not set', 'System property ' +
                companion.ALLOWED_USER_PROPERTY + ' is empty: as security_admin, set it to the ' +
                "integration user's User ID (user_name)", 'no_allowed_user');
            return false;
        }
        if (allowed !== this.user) {
            this.refuse(403, "Caller is not the companion's allowed user", 'Only the user named in ' +
                'system property ' + companion.ALLOWED_USER_PROPERTY + ' may call the companion',
                'not_allowed_user');
            return false;
        }
        if (companion.roleAssignableBy() !== companion.ASSIGNABLE_BY) {
            this.refuse(403, 'Companion role not locked down', 'Role ' + companion.ROLE +
                ' must be assignable only by ' + companion.ASSIGNABLE_BY + ': as ' +
                companion.ASSIGNABLE_BY + ', set its Assignable by field to ' + companion.ASSIGNABLE_BY,
                'role_not_locked');
            return false;
        }
        return true;
    },

    /** The call's one audit line. */
    audit: function (text) {
        gs.log('user=' + this.user + ' ' + this.resource + ' ' + text,
            SnokOAuthKeeperCompanion.AUDIT_SOURCE);
    },

    /**
     * A JSON answer, written as it is meant to be read: not through setBody(), which wraps it in
     * another "result" object.
     */
    send: function (status, body) {
        this.response.setStatus(status);
        this.response.setContentType('application/json');
        this.response.getStreamWriter().writeString(JSON.stringify(body));
    },

    /** An answer without a body (204). */
    sendEmpty: function (status) {
        this.response.setStatus(status);
    },

    /**
     * A refusal in ServiceNow's error envelope, after its audit line and the event REFUSED_EVENT
     * (on the caller's sys_user record; parm1 the caller, parm2 the resource and the reason).
     */
    refuse: function (status, message, detail, why) {
        this.audit('refused=' + why);
        // The session's user always has a record; were it gone, the event goes on no record.
        var caller = new GlideRecord('sys_user');
        var record = caller.get('sys_id', gs.getUserID()) ? caller : null;
        gs.eventQueue(SnokOAuthKeeperCompanion.REFUSED_EVENT, record, this.user, this.resource + ' ' + why);
        this.send(status, SnokOAuthKeeperCompanion.failure(message, detail));
    },

    /** Every value of a query parameter as sent (decoded), one per occurrence. */
    rawValues: function (name) {
        var raw = this.request.queryParams[name];
        var out = [];
        if (!raw) {
            return out;
        }
        for (var i = 0; i < raw.length; i++) {
            out.push('' + raw[i]);
        }
        return out;
    },

    /** Every value of a repeated or comma-separated query parameter, trimmed, without empties. */
    values: function (name) {
        var raw = this.rawValues(name);
        var out = [];
        for (var i = 0; i < raw.length; i++) {
            var parts = raw[i].split(',');
            for (var j = 0; j < parts.length; j++) {
                var value = parts[j].trim();
                if (value !== '') {
                    out.push(value);
                }
            }
        }
        return out;
    },

    /**
     * The distinct sys_id query parameter values (comma-separated or repeated, as sent), or null
     * after refusing the call (400) when there are none or more than `max`.
     */
    requestedIds: function (max) {
        var ids = [];
        var requested = this.values('sys_id');
        for (var r = 0; r < requested.length; r++) {
            if (ids.indexOf(requested[r]) < 0) {
                ids.push(requested[r]);
            }
        }
        if (ids.length === 0) {
            this.refuse(400, 'Missing parameter sys_id',
                'Provide one or more oauth_credential sys_ids as sys_id=<id>[,<id>...]', 'no_ids');
            return null;
        }
        if (ids.length > max) {
            this.refuse(400, 'Too many sys_ids',
                'At most ' + max + ' sys_id values per request, got ' + ids.length, 'too_many_ids');
            return null;
        }
        return ids;
    },

    /**
     * The request body parsed as a JSON object, or null when it is not one. Read once through
     * dataString (the body is a stream that can be consumed only once) and parsed here, so a
     * malformed body gets the companion's own 400 rather than whatever the platform answers.
     */
    jsonObject: function () {
        var parsed;
        try {
            parsed = JSON.parse('' + this.request.body.dataString);
        } catch (_dummyNotJson) {
            return null;
        }
        var isObject = parsed !== null && typeof parsed === 'object' &&
            Object.prototype.toString.call(parsed) !== '[object Array]';
        return isObject ? parsed : null;
    },

    type: 'SnokOAuthKeeperCompanion'
};
