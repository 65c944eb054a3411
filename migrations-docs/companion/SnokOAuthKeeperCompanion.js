/*
 * sn-oauth-keeper companion: Script Include "SnokOAuthKeeperCompanion" (global scope, not client
 * callable, accessible from this scope only).
 *
 * What every resource of the Scripted REST API "OAuth Keeper Companion" shares, so that the
 * resource scripts beside this file stay short and cannot drift apart on it: who may call, the one
 * audit line per call, the JSON answer and ServiceNow's error envelope, and the parsers of query
 * parameters and JSON bodies.
 *
 * ES5, as global server scripts run in ES5 mode. The wire contract is fixed in
 * migrations-docs/README.md; tests/contract/companion.json holds the cases the resource scripts
 * (with this Script Include) and the keeper's simulator must both answer alike.
 *
 * Never logs a token or a secret: audit lines name the caller, the resource, counts and sys_ids.
 */
var SnokOAuthKeeperCompanion = Class.create();

/** The role the update set creates; the resources' REST_Endpoint ACLs demand it too. */
SnokOAuthKeeperCompanion.ROLE = 'snok_oauth_keeper';

/** The system log source of the audit lines (System Logs > System Log > All, Source). */
SnokOAuthKeeperCompanion.AUDIT_SOURCE = 'sn-oauth-keeper companion';

/** A platform sys_id: 32 lowercase hex digits. */
SnokOAuthKeeperCompanion.isSysId = function (value) {
    return typeof value === 'string' && /^[0-9a-f]{32}$/.test(value);
};

/** ServiceNow's error envelope, as the Table API writes it. */
SnokOAuthKeeperCompanion.failure = function (message, detail) {
    return { error: { message: message, detail: detail }, status: 'failure' };
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
     * anything else, so a caller who may not learns nothing about its parameters.
     */
    admit: function () {
        if (!gs.hasRole(SnokOAuthKeeperCompanion.ROLE)) {
            this.refuse(403, 'Insufficient rights to query records',
                'The caller lacks role ' + SnokOAuthKeeperCompanion.ROLE, 'no_role');
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

    /** A refusal in ServiceNow's error envelope, after its audit line. */
    refuse: function (status, message, detail, why) {
        this.audit('refused=' + why);
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
