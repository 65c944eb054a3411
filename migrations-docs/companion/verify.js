/*
 * sn-oauth-keeper companion: resource "verify" of the Scripted REST API "OAuth Keeper Companion"
 * POST /api/snok/oauth_keeper/verify  {"tokens":[{"sys_id":"<32 hex>","sha256":"<64 hex>"}]}
 *
 * Proves what the instance stores without handing anything out: for each oauth_credential row
 * asked about (refresh or access row), whether its decrypted token_received hashes (SHA-256 of
 * its UTF-8 bytes) to the digest the keeper sent. It never returns a token, and unknown ids are
 * left out. Global scope and ES5 for the same reasons as secrets.js; who may call, the audit line
 * and the answer's shape live in the Script Include SnokOAuthKeeperCompanion.
 *
 * GlideDigest.getSHA256Hex() answers hexadecimal without saying which case; digests are compared
 * case-insensitively, so an uppercase answer (or an uppercase digest sent) still matches.
 */
(function process(/*RESTAPIRequest*/ request, /*RESTAPIResponse*/ response) {
    var MAX_TOKENS = 100;
    var SHAPE = 'Send {"tokens":[{"sys_id":"<32 hex>","sha256":"<64 hex>"}]} with 1 to 100 entries';
    var call = new SnokOAuthKeeperCompanion(request, response, 'POST /verify');
    if (!call.admit()) {
        return;
    }

    function malformed(detail) {
        call.refuse(400, 'Invalid request body', detail, 'bad_body');
    }

    var body = call.jsonObject();
    var tokens = body === null ? null : body.tokens;
    if (Object.prototype.toString.call(tokens) !== '[object Array]' || tokens.length === 0) {
        malformed(SHAPE);
        return;
    }
    if (tokens.length > MAX_TOKENS) {
        call.refuse(400, 'Too many tokens',
            'At most ' + MAX_TOKENS + ' tokens per request, got ' + tokens.length, 'too_many_tokens');
        return;
    }

    // The digest asked for each sys_id, in the order first asked; a sys_id repeated with the same
    // digest is asked once, with another digest it makes the request ambiguous.
    var order = [];
    var digests = {};
    for (var i = 0; i < tokens.length; i++) {
        var entry = tokens[i];
        var where = 'tokens[' + i + ']';
        if (entry === null || typeof entry !== 'object' ||
                Object.prototype.toString.call(entry) === '[object Array]') {
            malformed(where + ' must be an object {"sys_id":"<32 hex>","sha256":"<64 hex>"}');
            return;
        }
        if (typeof entry.sys_id !== 'string') {
            malformed(where + '.sys_id must be a string');
            return;
        }
        if (typeof entry.sha256 !== 'string' || !/^[0-9a-fA-F]{64}$/.test(entry.sha256)) {
            malformed(where + '.sha256 must be 64 hexadecimal digits');
            return;
        }
        // Keys carry a prefix, so no sys_id sent can collide with an Object property.
        var key = 'id:' + entry.sys_id;
        var digest = entry.sha256.toLowerCase();
        if (!Object.prototype.hasOwnProperty.call(digests, key)) {
            digests[key] = digest;
            order.push(entry.sys_id);
        } else if (digests[key] !== digest) {
            malformed(where + ' repeats sys_id ' + entry.sys_id + ' with another sha256');
            return;
        }
    }

    var result = [];
    var answered = [];
    var matched = 0;
    for (var n = 0; n < order.length; n++) {
        var id = order[n];
        // Anything but a sys_id cannot name a row: left out like an unknown id.
        if (!SnokOAuthKeeperCompanion.isSysId(id)) {
            continue;
        }
        var credential = new GlideRecord('oauth_credential');
        if (!credential.get('sys_id', id)) {
            continue;
        }
        // A row whose token does not decrypt (empty, or not stored encrypted) matches nothing.
        var token = SnokOAuthKeeperCompanion.decrypted(credential, 'token_received');
        var match = token !== '' &&
            ('' + new GlideDigest().getSHA256Hex(token)).toLowerCase() === digests['id:' + id];
        if (match) {
            matched++;
        }
        result.push({ sys_id: id, match: match });
        answered.push(id);
    }

    call.audit('requested=' + order.length + ' answered=' + answered.length + ' matched=' + matched +
        ' ids=' + answered.join(','));
    call.send(200, { result: result });
})(request, response);
