/*
 * sn-oauth-keeper companion: resource "lease release" of the Scripted REST API
 * "OAuth Keeper Companion"
 * DELETE /api/snok/oauth_keeper/lease?holder=<id>
 *
 * Releases the lease if that holder holds it, so the next keeper need not wait for it to expire;
 * the holder's claims stay. 204 whether or not it held it. Global scope, ES5.
 */
(function process(/*RESTAPIRequest*/ request, /*RESTAPIResponse*/ response) {
    var call = new SnokOAuthKeeperCompanion(request, response, 'DELETE /lease');
    if (!call.admit()) {
        return;
    }
    var holder = SnokOAuthKeeperLease.holderParam(call);
    if (holder === null) {
        return;
    }
    var released = new SnokOAuthKeeperLease().exclusive(function () {
        return this.release(holder);
    });
    if (released === null) {
        SnokOAuthKeeperLease.busy(call, holder);
        return;
    }
    call.audit('holder=' + SnokOAuthKeeperLease.quoted(holder) + ' outcome=' + (released ? 'released' : 'not_held'));
    call.sendEmpty(204);
})(request, response);
