'use strict';
// Runs the companion's resource script (migrations-docs/companion/secrets.js) under Node against
// the shared contract cases in tests/contract/companion.json: the same cases the keeper's
// simulator must answer alike (crates/sim/tests/it/companion_contract.rs).

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { call } = require('./glide');

const root = path.resolve(__dirname, '..', '..');
const script = fs.readFileSync(path.join(root, 'migrations-docs', 'companion', 'secrets.js'), 'utf8');
const contract = JSON.parse(fs.readFileSync(path.join(root, 'tests', 'contract', 'companion.json'), 'utf8'));

function queryOf(c) {
  if (c.repeat_ids !== undefined) {
    const ids = [];
    for (let i = 0; i < c.repeat_ids; i++) {
      ids.push(i.toString(16).padStart(32, '0'));
    }
    return `sys_id=${ids.join(',')}`;
  }
  return c.query;
}

test('there are enough cases to mean something', () => {
  assert.ok(contract.cases.length >= 10);
});

for (const c of contract.cases) {
  test(c.name, () => {
    const { answer, logs } = call(script, contract.fixture, {
      userName: contract.user_name,
      roles: c.roles || contract.default_roles,
      query: queryOf(c),
    });
    assert.equal(answer.status, c.status);
    assert.equal(answer.contentType, 'application/json');
    assert.deepEqual(JSON.parse(answer.body), c.body);
    assert.equal(logs.length, 1, 'exactly one log line per call');
    assert.deepEqual(logs[0], { level: 'log', message: c.audit, source: contract.audit_source });
    for (const secret of contract.secrets) {
      assert.ok(!logs[0].message.includes(secret), 'no secret in the audit line');
    }
  });
}

test('the script refuses to run without the role even when asked nothing', () => {
  const { answer } = call(script, contract.fixture, {
    userName: contract.user_name,
    roles: [],
    query: 'sys_id=a0000000000000000000000000000001',
  });
  assert.equal(answer.status, 403);
  for (const secret of contract.secrets) {
    assert.ok(!answer.body.includes(secret));
  }
});
