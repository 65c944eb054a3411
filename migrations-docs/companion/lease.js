/*
 * sn-oauth-keeper companion: resource "lease" of the Scripted REST API "OAuth Keeper Companion"
 * POST /api/snok/oauth_keeper/lease
 *   {"holder":"<id>","ttl_seconds":<10-600>[,"claims":[...]][,"pid":<process id>]}
 *
 * One keeper per instance: the caller gets (or renews) the lease unless another holder's lease has
 * not expired, and, holding it, may replace its claims on credentials and store its process id,
 * which a refused keeper's 409 and GET /lease name. Every answer (200 and 409) carries the claims
 * of every other holder. The lease itself lives in the Script Include SnokOAuthKeeperLease; who
 * may call, the audit line and the answer's shape in SnokOAuthKeeperCompanion. Global scope, ES5.
 */
(function process(/*RESTAPIRequest*/ request, /*RESTAPIResponse*/ response) {
    var call = new SnokOAuthKeeperCompanion(request, response, 'POST /lease');
    if (!call.admit()) {
        return;
    }

    var body = call.jsonObject();
    if (body === null) {
        call.refuse(400, 'Invalid request body',
            'Send {"holder":"<id>","ttl_seconds":<10 to 600>[,"claims":["<sys_id>",...]]}', 'bad_body');
        return;
    }
    if (!SnokOAuthKeeperLease.isHolder(body.holder)) {
        call.refuse(400, 'Invalid parameter holder', SnokOAuthKeeperLease.HOLDER_RULE, 'bad_holder');
        return;
    }
    if (!SnokOAuthKeeperLease.isTtl(body.ttl_seconds)) {
        call.refuse(400, 'Invalid parameter ttl_seconds',
            'ttl_seconds must be a whole number from ' + SnokOAuthKeeperLease.MIN_TTL + ' to ' +
            SnokOAuthKeeperLease.MAX_TTL, 'bad_ttl');
        return;
    }
    var claims = null;
    if (Object.prototype.hasOwnProperty.call(body, 'claims')) {
        claims = body.claims;
        if (Object.prototype.toString.call(claims) !== '[object Array]') {
            call.refuse(400, 'Invalid parameter claims',
                'claims must be an array of oauth_credential sys_ids (32 lowercase hex digits)', 'bad_claims');
            return;
        }
        if (claims.length > SnokOAuthKeeperLease.MAX_CLAIMS) {
            call.refuse(400, 'Too many claims', 'At most ' + SnokOAuthKeeperLease.MAX_CLAIMS +
                ' claims per request, got ' + claims.length, 'too_many_claims');
            return;
        }
        for (var i = 0; i < claims.length; i++) {
            if (!SnokOAuthKeeperCompanion.isSysId(claims[i])) {
                call.refuse(400, 'Invalid parameter claims', 'claims[' + i +
                    '] is not an oauth_credential sys_id (32 lowercase hex digits)', 'bad_claims');
                return;
            }
        }
    }

    var pid = null;
    if (Object.prototype.hasOwnProperty.call(body, 'pid')) {
        pid = body.pid;
        if (!SnokOAuthKeeperLease.isPid(pid)) {
            call.refuse(400, 'Invalid parameter pid', SnokOAuthKeeperLease.PID_RULE, 'bad_pid');
            return;
        }
    }

    var holder = body.holder;
    var ttl = body.ttl_seconds;
    var lease = new SnokOAuthKeeperLease();
    var answer = lease.exclusive(function () {
        var outcome = this.acquire(holder, ttl, claims, pid);
        outcome.others = SnokOAuthKeeperLease.listedClaims(holder);
        return outcome;
    });
    if (answer === null) {
        SnokOAuthKeeperLease.busy(call, holder);
        return;
    }
    if (!answer.held) {
        call.audit('holder=' + SnokOAuthKeeperLease.quoted(holder) + ' outcome=held_by_other other=' +
            SnokOAuthKeeperLease.quoted(answer.holder) + ' expires_in=' + answer.expiresIn);
        var conflict = SnokOAuthKeeperCompanion.failure('Lease held by another keeper',
            'Another keeper' + (answer.pid === null ? '' : ' (process ' + answer.pid + ')') +
            ' holds the lease for ' + answer.expiresIn + ' more second(s); only one ' +
            'keeper may work on an instance. Retry after it expires or is released.');
        conflict.result = { holder: answer.holder, expires_in: answer.expiresIn };
        conflict.claims = answer.others;
        call.send(409, conflict);
        return;
    }
    call.audit('holder=' + SnokOAuthKeeperLease.quoted(holder) + ' outcome=' + answer.outcome +
        ' fence=' + answer.fence + ' ttl_seconds=' + ttl +
        (answer.claimed === null ? '' : ' claims=' + answer.claimed + '/' + claims.length) +
        (pid === null ? '' : ' pid=' + pid));
    call.send(200, { result: { holder: holder, fence: answer.fence, ttl_seconds: ttl }, claims: answer.others });
})(request, response);
