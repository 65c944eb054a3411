/*
 * sn-oauth-keeper companion: resource "claims release" of the Scripted REST API
 * "OAuth Keeper Companion"
 * DELETE /api/snok/oauth_keeper/lease/claims?holder=<id>&sys_id=<id>[,<id>...]
 *
 * Removes those claims of that holder, whether or not it holds the lease (a keeper clears what a
 * lapsed holder left behind). 204. Global scope, ES5.
 */
(function process(/*RESTAPIRequest*/ request, /*RESTAPIResponse*/ response) {
    var call = new SnokOAuthKeeperCompanion(request, response, 'DELETE /lease/claims');
    if (!call.admit()) {
        return;
    }
    var holder = SnokOAuthKeeperLease.holderParam(call);
    if (holder === null) {
        return;
    }
    var ids = call.requestedIds(SnokOAuthKeeperLease.MAX_CLAIMS);
    if (ids === null) {
        return;
    }
    for (var i = 0; i < ids.length; i++) {
        if (!SnokOAuthKeeperCompanion.isSysId(ids[i])) {
            call.refuse(400, 'Invalid parameter sys_id',
                'sys_id accepts only oauth_credential sys_ids (32 lowercase hex digits)', 'bad_ids');
            return;
        }
    }
    var removed = new SnokOAuthKeeperLease().exclusive(function () {
        return SnokOAuthKeeperLease.dropClaims(holder, ids);
    });
    if (removed === null) {
        SnokOAuthKeeperLease.busy(call, holder);
        return;
    }
    call.audit('holder=' + SnokOAuthKeeperLease.quoted(holder) + ' requested=' + ids.length + ' removed=' + removed);
    call.sendEmpty(204);
})(request, response);
