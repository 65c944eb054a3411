'use strict';
// Runs the companion's resource scripts (migrations-docs/companion/*.js, with the Script Includes
// they call) under Node against the shared contract cases in tests/contract/companion.json: the
// same cases the keeper's simulator must answer alike (crates/sim/tests/it/companion_contract.rs).

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { Instance } = require('./glide');

const root = path.resolve(__dirname, '..', '..');
const companionDir = path.join(root, 'migrations-docs', 'companion');
const contract = JSON.parse(fs.readFileSync(path.join(root, 'tests', 'contract', 'companion.json'), 'utf8'));

function script(file) {
  return { name: file, source: fs.readFileSync(path.join(companionDir, file), 'utf8') };
}

/** The Script Includes, loaded before every resource script as the platform resolves them. */
const scriptIncludes = [script('SnokOAuthKeeperCompanion.js')];

/** Each resource (method and path under the companion path) and its script. */
const resources = {
  'GET /secrets': script('secrets.js'),
  'POST /verify': script('verify.js'),
};

/** The n-th generated sys_id: 32 hex digits that name no fixture row. */
function generatedId(n) {
  return n.toString(16).padStart(32, '0');
}

/** A contract request as the stand-in takes it: generators expanded, the body as raw text. */
function requestOf(r) {
  let query = r.query;
  if (r.query_ids !== undefined) {
    query = `sys_id=${Array.from({ length: r.query_ids }, (_, i) => generatedId(i)).join(',')}`;
  }
  let body = r.body;
  if (r.body_tokens !== undefined) {
    body = { tokens: Array.from({ length: r.body_tokens }, (_, i) => ({ sys_id: generatedId(i), sha256: '0'.repeat(64) })) };
  }
  const text = r.body_text !== undefined ? r.body_text : body === undefined ? undefined : JSON.stringify(body);
  return { method: r.method, query, body: text };
}

test('there are enough cases to mean something', () => {
  assert.ok(contract.cases.length >= 20);
});

for (const c of contract.cases) {
  test(c.name, () => {
    const instance = new Instance(contract.fixture, { userName: contract.user_name });
    for (const step of c.steps) {
      const resource = resources[`${step.request.method} ${step.request.path}`];
      assert.ok(resource, `no script for ${step.request.method} ${step.request.path}`);
      const before = instance.logs.length;
      const answer = instance.call({
        scripts: [...scriptIncludes, resource],
        roles: c.roles || contract.default_roles,
        request: requestOf(step.request),
      });
      assert.equal(answer.status, step.status);
      assert.equal(answer.contentType, 'application/json');
      assert.deepEqual(JSON.parse(answer.body), step.body);
      const logs = instance.logs.slice(before);
      assert.equal(logs.length, 1, 'exactly one log line per call');
      assert.deepEqual(logs[0], { level: 'log', message: step.audit, source: contract.audit_source });
      for (const secret of contract.secrets) {
        assert.ok(!logs[0].message.includes(secret), 'no secret in the audit line');
        if (step.request.path !== '/secrets') {
          assert.ok(!answer.body.includes(secret), 'only /secrets ever answers a secret');
        }
      }
    }
  });
}

test('the scripts refuse to run without the role even when asked nothing', () => {
  for (const [name, resource] of Object.entries(resources)) {
    const instance = new Instance(contract.fixture, { userName: contract.user_name });
    const answer = instance.call({
      scripts: [...scriptIncludes, resource],
      roles: [],
      request: { method: name.split(' ')[0], query: 'sys_id=a0000000000000000000000000000001' },
    });
    assert.equal(answer.status, 403, name);
    for (const secret of contract.secrets) {
      assert.ok(!answer.body.includes(secret));
    }
  }
});
