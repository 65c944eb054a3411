/*
 * sn-oauth-keeper companion: resource "lease status" of the Scripted REST API
 * "OAuth Keeper Companion"
 * GET /api/snok/oauth_keeper/lease
 *
 * Who holds the lease, its fence, the time it has left and the holder's process id, with every
 * holder's claims: what a keeper's status and check show without ever taking the lease. It
 * writes nothing and takes nothing (query parameters are ignored, as every resource ignores those
 * it does not know). It reads inside the lease's GlideMutex section, because a lease call writes
 * the lease row and the claim rows one after the other: only inside the section are they seen as
 * they stand between two calls. Global scope, ES5.
 */
(function process(/*RESTAPIRequest*/ request, /*RESTAPIResponse*/ response) {
    var call = new SnokOAuthKeeperCompanion(request, response, 'GET /lease');
    if (!call.admit()) {
        return;
    }
    var status = new SnokOAuthKeeperLease().exclusive(function () {
        return this.status();
    });
    if (status === null) {
        SnokOAuthKeeperLease.busy(call, null);
        return;
    }
    call.audit('holder=' + SnokOAuthKeeperLease.quoted(status.holder) + ' fence=' + status.fence +
        ' expires_in=' + status.expiresIn + ' claims=' + status.claims.length);
    call.send(200, {
        result: { holder: status.holder, fence: status.fence, expires_in: status.expiresIn, pid: status.pid },
        claims: status.claims
    });
})(request, response);
