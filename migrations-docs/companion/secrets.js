/*
 * sn-oauth-keeper companion: resource "secrets" of the Scripted REST API "OAuth Keeper Companion"
 * GET /api/snok/oauth_keeper/secrets?sys_id=<id>[,<id>...][&include=client_secret]
 *
 * Global scope, ES5 (global server scripts do not run in ES2021 mode), because
 * GlideElement.getDecryptedValue() is only available to global scripts. GlideEncrypter is not
 * used: it returns null on new (Zurich and later) instances.
 *
 * The wire contract is fixed in migrations-docs/README.md; tests/contract/companion.json holds the
 * cases this script and the keeper's simulator must both answer alike.
 *
 * Security: the platform checks the resource's REST_Endpoint ACL first; this script checks the
 * role again, because a GlideRecord here reads oauth_credential regardless of table ACLs. It
 * never logs a token or a secret: the one audit line per call names the caller, the counts and
 * the sys_ids it answered for.
 */
(function process(/*RESTAPIRequest*/ request, /*RESTAPIResponse*/ response) {
    var ROLE = 'snok_oauth_keeper';
    var MAX_IDS = 100;
    var AUDIT_SOURCE = 'sn-oauth-keeper companion';
    var SYS_ID = /^[0-9a-f]{32}$/;
    var user = '' + gs.getUserName();

    function audit(text) {
        gs.log('user=' + user + ' ' + text, AUDIT_SOURCE);
    }

    // Bodies are written as they are meant to be read, not through setBody(), which wraps them
    // in another "result" object.
    function send(status, body) {
        response.setStatus(status);
        response.setContentType('application/json');
        response.getStreamWriter().writeString(JSON.stringify(body));
    }

    function refuse(status, message, detail, why) {
        audit('refused=' + why);
        send(status, { error: { message: message, detail: detail }, status: 'failure' });
    }

    // Every value of a repeated or comma-separated parameter, trimmed, without empties.
    function values(name) {
        var raw = request.queryParams[name];
        var out = [];
        if (!raw) {
            return out;
        }
        for (var i = 0; i < raw.length; i++) {
            var parts = ('' + raw[i]).split(',');
            for (var j = 0; j < parts.length; j++) {
                var value = parts[j].trim();
                if (value !== '') {
                    out.push(value);
                }
            }
        }
        return out;
    }

    function decrypted(record, column) {
        var value = record.getElement(column).getDecryptedValue();
        return value ? '' + value : '';
    }

    if (!gs.hasRole(ROLE)) {
        refuse(403, 'Insufficient rights to query records', 'The caller lacks role ' + ROLE, 'no_role');
        return;
    }

    var includes = values('include');
    for (var k = 0; k < includes.length; k++) {
        if (includes[k] !== 'client_secret') {
            refuse(400, 'Invalid parameter include', 'include accepts only client_secret', 'bad_include');
            return;
        }
    }
    var withSecret = includes.length > 0;

    var ids = [];
    var requested = values('sys_id');
    for (var r = 0; r < requested.length; r++) {
        if (ids.indexOf(requested[r]) < 0) {
            ids.push(requested[r]);
        }
    }
    if (ids.length === 0) {
        refuse(400, 'Missing parameter sys_id',
            'Provide one or more oauth_credential sys_ids as sys_id=<id>[,<id>...]', 'no_ids');
        return;
    }
    if (ids.length > MAX_IDS) {
        refuse(400, 'Too many sys_ids',
            'At most ' + MAX_IDS + ' sys_id values per request, got ' + ids.length, 'too_many_ids');
        return;
    }

    var result = [];
    var answered = [];
    for (var n = 0; n < ids.length; n++) {
        // Anything but a sys_id cannot name a row; checking first keeps odd input away from
        // the query layer.
        if (!SYS_ID.test(ids[n])) {
            continue;
        }
        var credential = new GlideRecord('oauth_credential');
        if (!credential.get('sys_id', ids[n]) || credential.getValue('type') !== 'refresh_token') {
            continue;
        }
        var token = decrypted(credential, 'token_received');
        if (token === '') {
            continue;
        }
        var entry = { sys_id: ids[n], refresh_token: token };
        if (withSecret) {
            var registry = new GlideRecord('oauth_entity');
            if (registry.get('sys_id', '' + credential.getValue('peer'))) {
                var secret = decrypted(registry, 'client_secret');
                if (secret !== '') {
                    entry.client_secret = secret;
                }
            }
        }
        result.push(entry);
        answered.push(ids[n]);
    }

    audit('requested=' + ids.length + ' returned=' + answered.length +
        ' client_secret=' + (withSecret ? 'yes' : 'no') + ' ids=' + answered.join(','));
    send(200, { result: result });
})(request, response);
