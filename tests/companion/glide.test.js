'use strict';
// The stand-in behaves as the platform is documented to (glide.js cites each source), and the
// companion's scripts cope where the platform differs from what a fixture would suggest: empty
// fields read as null, a column an instance lacks has no element, a property may be missing.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { Instance } = require('./glide');

const root = path.resolve(__dirname, '..', '..');
const contract = JSON.parse(fs.readFileSync(path.join(root, 'tests', 'contract', 'companion.json'), 'utf8'));
const companion = (file) => ({
  name: file,
  source: fs.readFileSync(path.join(root, 'migrations-docs', 'companion', file), 'utf8'),
});
const includes = [companion('SnokOAuthKeeperCompanion.js'), companion('SnokOAuthKeeperLease.js')];

function instance(options = {}) {
  return new Instance(contract.fixture, {
    userName: contract.user_name,
    allowedUser: contract.instance.allowed_user,
    roleAssignableBy: contract.instance.role_assignable_by,
    ...options,
  });
}

/** Runs `body` (ES5, in the instance's global scope) and answers what it wrote with `out(x)`. */
function probe(on, body, roles = []) {
  const source = `(function () { function out(x) { response.getStreamWriter().writeString(JSON.stringify(x)); }
${body}
})();`;
  return JSON.parse(on.call({ scripts: [{ name: 'probe.js', source }], roles, request: {} }).body);
}

test('getValue() is null for an empty field and for a column the table lacks', () => {
  const seen = probe(instance(), `
    var gr = new GlideRecord('oauth_credential');
    gr.get('sys_id', 'a0000000000000000000000000000007');
    out([gr.getValue('peer'), gr.getValue('no_such_column'), gr.getValue('type')]);`);
  assert.deepEqual(seen, [null, null, 'refresh_token']);
});

test('getValue() of a password2 column is its ciphertext, never clear text', () => {
  const seen = probe(instance(), `
    var gr = new GlideRecord('oauth_credential');
    gr.get('sys_id', 'a0000000000000000000000000000001');
    out(gr.getValue('token_received'));`);
  assert.ok(!seen.includes('rt-graph-8c1d9e2f-refresh'));
});

test('getElement() is null for a column the table lacks', () => {
  const seen = probe(instance(), `
    var gr = new GlideRecord('oauth_entity');
    gr.get('sys_id', 'e0000000000000000000000000000001');
    out([gr.getElement('no_such_column') === null, gr.getElement('client_secret') === null]);`);
  assert.deepEqual(seen, [true, false]);
});

test('getDecryptedValue(): clear text of a ciphertext, nothing of a plain value in a password2 column, a plain column as it is', () => {
  const seen = probe(instance(), `
    var gr = new GlideRecord('oauth_credential');
    gr.get('sys_id', 'a0000000000000000000000000000001');
    var good = gr.getElement('token_received').getDecryptedValue();
    var type = gr.getElement('type').getDecryptedValue();
    gr.get('sys_id', 'a0000000000000000000000000000003');
    var plain = gr.getElement('token_received').getDecryptedValue();
    gr.get('sys_id', 'a0000000000000000000000000000005');
    var empty = gr.getElement('token_received').getDecryptedValue();
    out([good, type, plain, empty]);`);
  assert.deepEqual(seen, ['rt-graph-8c1d9e2f-refresh', 'refresh_token', null, null]);
});

test('addQuery() on a column the table lacks is dropped, as the platform drops invalid conditions', () => {
  const seen = probe(instance(), `
    var gr = new GlideRecord('oauth_entity');
    gr.addQuery('no_such_column', 'x');
    gr.query();
    var n = 0;
    while (gr.next()) { n++; }
    out(n);`);
  assert.equal(seen, contract.fixture.oauth_entity.length);
});

test('hasRole() takes a comma-separated list and is true for admin', () => {
  const ask = (roles) => probe(instance(), "out([gs.hasRole('itil, snok_oauth_keeper'), gs.hasRole('itil')]);", roles);
  assert.deepEqual(ask(['snok_oauth_keeper']), [true, false]);
  assert.deepEqual(ask(['admin']), [true, true]);
  assert.deepEqual(ask([]), [false, false]);
});

const secretsCall = { method: 'GET', query: 'sys_id=a0000000000000000000000000000001&include=client_secret' };

test('where an instance lacks the registry column, /secrets still answers the token, without a secret', () => {
  const on = instance({ withoutColumns: { oauth_entity: ['client_secret'] } });
  const answer = on.call({ scripts: [...includes, companion('secrets.js')], roles: contract.default_roles, request: secretsCall });
  assert.equal(answer.status, 200);
  assert.deepEqual(JSON.parse(answer.body), {
    result: [{ sys_id: 'a0000000000000000000000000000001', refresh_token: 'rt-graph-8c1d9e2f-refresh' }],
  });
});

test('a missing or valueless allowed-user property refuses everyone, with the guidance', () => {
  for (const allowedUser of [undefined, null, '']) {
    const on = instance({ allowedUser });
    const answer = on.call({ scripts: [...includes, companion('secrets.js')], roles: contract.default_roles, request: secretsCall });
    assert.equal(answer.status, 403, String(allowedUser));
    assert.equal(JSON.parse(answer.body).error.message, 'Companion allowed user not set');
  }
});
