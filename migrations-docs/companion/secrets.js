/*
 * sn-oauth-keeper companion: resource "secrets" of the Scripted REST API "OAuth Keeper Companion"
 * GET /api/snok/oauth_keeper/secrets?sys_id=<id>[,<id>...][&include=client_secret]
 *
 * Global scope, ES5 (global server scripts do not run in ES2021 mode), because
 * GlideElement.getDecryptedValue() is only available to global scripts. GlideEncrypter is not
 * used: it returns null on new (Zurich and later) instances.
 *
 * The wire contract is fixed in migrations-docs/README.md; tests/contract/companion.json holds the
 * cases this script and the keeper's simulator must both answer alike. Who may call, the audit
 * line and the answer's shape live in the Script Include SnokOAuthKeeperCompanion.
 *
 * Security: the platform checks the resource's REST_Endpoint ACL first; the Script Include checks
 * the caller again, because a GlideRecord here reads oauth_credential regardless of table ACLs.
 * It never logs a token or a secret: the one audit line per call names the caller, the counts
 * and the sys_ids it answered for.
 */
(function process(/*RESTAPIRequest*/ request, /*RESTAPIResponse*/ response) {
    var MAX_IDS = 100;
    var call = new SnokOAuthKeeperCompanion(request, response, 'GET /secrets');
    if (!call.admit()) {
        return;
    }

    var includes = call.values('include');
    for (var k = 0; k < includes.length; k++) {
        if (includes[k] !== 'client_secret') {
            call.refuse(400, 'Invalid parameter include', 'include accepts only client_secret', 'bad_include');
            return;
        }
    }
    var withSecret = includes.length > 0;

    var ids = call.requestedIds(MAX_IDS);
    if (ids === null) {
        return;
    }

    var result = [];
    var answered = [];
    for (var n = 0; n < ids.length; n++) {
        // Anything but a sys_id cannot name a row; checking first keeps odd input away from
        // the query layer.
        if (!SnokOAuthKeeperCompanion.isSysId(ids[n])) {
            continue;
        }
        var credential = new GlideRecord('oauth_credential');
        if (!credential.get('sys_id', ids[n]) || credential.getValue('type') !== 'refresh_token') {
            continue;
        }
        var token = SnokOAuthKeeperCompanion.decrypted(credential, 'token_received');
        if (token === '') {
            continue;
        }
        var entry = { sys_id: ids[n], refresh_token: token };
        var peer = credential.getValue('peer');
        if (withSecret && peer !== null) {
            var registry = new GlideRecord('oauth_entity');
            if (registry.get('sys_id', peer)) {
                var secret = SnokOAuthKeeperCompanion.decrypted(registry, 'client_secret');
                if (secret !== '') {
                    entry.client_secret = secret;
                }
            }
        }
        result.push(entry);
        answered.push(ids[n]);
    }

    call.audit('requested=' + ids.length + ' returned=' + answered.length +
        ' client_secret=' + (withSecret ? 'yes' : 'no') + ' ids=' + answered.join(','));
    call.send(200, { result: result });
})(request, response);
