/*
 * sn-oauth-keeper: script of the record ACL "oauth_credential" delete for role snok_oauth_keeper.
 *
 * The keeper deletes only the oauth_credential rows it created itself (the scratch row of
 * `sn-oauth-keeper check --round-trip`), never a row of the instance's integrations: a row
 * passes when its creator (sys_created_by, a user_name) is the caller.
 */
(function decide() {
    var creator = current.getValue('sys_created_by');
    answer = creator !== null && creator === '' + gs.getUserName();
})();
