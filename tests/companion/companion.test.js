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
const scriptIncludes = [script('SnokOAuthKeeperCompanion.js'), script('SnokOAuthKeeperLease.js')];

/** Each resource (method and path under the companion path) and its script. */
const resources = {
  'GET /secrets': script('secrets.js'),
  'POST /verify': script('verify.js'),
  'POST /lease': script('lease.js'),
  'GET /lease': script('lease-status.js'),
  'DELETE /lease': script('lease-release.js'),
  'DELETE /lease/claims': script('claims-release.js'),
};

/** The n-th generated sys_id: 32 hex digits that name no fixture row. */
function generatedId(n) {
  return n.toString(16).padStart(32, '0');
}

/** A contract request as the stand-in takes it: generators expanded, the body as raw text. */
function requestOf(r) {
  let query = r.query || '';
  if (r.query_ids !== undefined) {
    const ids = `sys_id=${Array.from({ length: r.query_ids }, (_, i) => generatedId(i)).join(',')}`;
    query = query === '' ? ids : `${query}&${ids}`;
  }
  let body = r.body;
  if (r.body_tokens !== undefined) {
    body = { tokens: Array.from({ length: r.body_tokens }, (_, i) => ({ sys_id: generatedId(i), sha256: '0'.repeat(64) })) };
  }
  if (r.body_claims !== undefined) {
    body = { ...body, claims: Array.from({ length: r.body_claims }, (_, i) => generatedId(i)) };
  }
  const text = r.body_text !== undefined ? r.body_text : body === undefined ? undefined : JSON.stringify(body);
  return { method: r.method, query, body: text };
}

test('there are enough cases to mean something', () => {
  assert.ok(contract.cases.length >= 60);
});

/** One call of the resource a contract request names. */
function callOf(instance, roles, request) {
  const resource = resources[`${request.method} ${request.path}`];
  assert.ok(resource, `no script for ${request.method} ${request.path}`);
  return instance.call({ scripts: [...scriptIncludes, resource], roles, request: requestOf(request) });
}

/** A fresh instance as a case sets it up: the contract's defaults, then the case's own. */
function instanceFor(c = {}) {
  const setup = { ...contract.instance, ...c.instance };
  return new Instance(contract.fixture, {
    userName: contract.user_name,
    allowedUser: setup.allowed_user,
    roleAssignableBy: setup.role_assignable_by,
  });
}

for (const c of contract.cases) {
  test(c.name, () => {
    const instance = instanceFor(c);
    for (const step of c.steps) {
      if (step.advance_seconds !== undefined) {
        instance.advance(step.advance_seconds);
        continue;
      }
      const before = instance.logs.length;
      const eventsBefore = instance.events.length;
      const answer = callOf(instance, c.roles || contract.default_roles, step.request);
      const queued = instance.events.slice(eventsBefore);
      const expected = step.event === undefined
        ? []
        : [{ name: contract.event_name, record: instance.userId, ...step.event }];
      assert.deepEqual(queued, expected, 'the refused-call event, and only then');
      assert.equal(answer.status, step.status);
      if (step.body === null) {
        assert.equal(answer.contentType, null);
        assert.equal(answer.body, '');
      } else {
        assert.equal(answer.contentType, 'application/json');
        assert.deepEqual(JSON.parse(answer.body), step.body);
      }
      const logs = instance.logs.slice(before);
      assert.equal(logs.length, 1, 'exactly one log line per call');
      assert.deepEqual(logs[0], { level: 'log', message: step.audit, source: contract.audit_source });
      for (const secret of contract.secrets) {
        assert.ok(!logs[0].message.includes(secret), 'no secret in the audit line');
        assert.ok(!JSON.stringify(queued).includes(secret), 'no secret in an event');
        if (step.request.path !== '/secrets') {
          assert.ok(!answer.body.includes(secret), 'only /secrets ever answers a secret');
        }
      }
    }
  });
}

test('the scripts refuse to run without the role even when asked nothing', () => {
  for (const [name, resource] of Object.entries(resources)) {
    const instance = instanceFor();
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

const holderA = { method: 'POST', path: '/lease', body: { holder: 'keeper-a', ttl_seconds: 60, claims: [generatedId(1)] } };
const holderB = { method: 'POST', path: '/lease', body: { holder: 'keeper-b', ttl_seconds: 60, claims: [generatedId(1)] } };

/**
 * Calls `outer`, and `inner` while `outer` is between reading the lease and writing it (at its
 * first write); both answers.
 */
function callDuring(instance, outer, inner) {
  let innerAnswer = null;
  instance.beforeWrite = () => {
    if (innerAnswer === null) {
      innerAnswer = callOf(instance, contract.default_roles, inner);
    }
  };
  const outerAnswer = callOf(instance, contract.default_roles, outer);
  instance.beforeWrite = () => {};
  return { outer: outerAnswer, inner: innerAnswer };
}

test('a second caller never runs inside the lease section of the first', () => {
  const instance = instanceFor();
  // Keeper B calls while keeper A is between reading the lease and writing it.
  const { outer, inner } = callDuring(instance, holderA, holderB);
  assert.equal(outer.status, 200);
  assert.equal(JSON.parse(outer.body).result.fence, 1);
  // B found the section taken: told to retry, never answered from a half-written lease.
  assert.equal(inner.status, 503);
  assert.equal(JSON.parse(inner.body).error.message, 'Lease busy');
  // Retried once A is done, B sees A's lease, and A's claim stays A's.
  const retried = callOf(instance, contract.default_roles, holderB);
  assert.equal(retried.status, 409);
  assert.deepEqual(JSON.parse(retried.body).claims, [{ holder: 'keeper-a', sys_id: generatedId(1) }]);
});

const leaseStatus = { method: 'GET', path: '/lease' };

test('a lease status read never runs inside a lease call, and so never sees it half written', () => {
  const instance = instanceFor();
  // The read comes while keeper A is between reading the lease and writing it.
  const { outer, inner } = callDuring(instance, holderA, leaseStatus);
  assert.equal(outer.status, 200);
  assert.equal(inner.status, 503);
  assert.deepEqual(JSON.parse(inner.body).error,
    { message: 'Lease busy', detail: 'Another call is changing the lease; retry in a moment' });
  assert.ok(instance.logs.some((l) => l.message === `user=${contract.user_name} GET /lease outcome=busy`));
  const retried = callOf(instance, contract.default_roles, leaseStatus);
  assert.deepEqual(JSON.parse(retried.body), {
    result: { holder: 'keeper-a', fence: 1, expires_in: 60, pid: null },
    claims: [{ holder: 'keeper-a', sys_id: generatedId(1) }],
  });
});

test('a lease status read writes nothing', () => {
  const instance = instanceFor();
  callOf(instance, contract.default_roles, holderA);
  instance.advance(60);
  const tables = structuredClone(instance.tables);
  instance.beforeWrite = (table) => {
    throw new Error(`GET /lease wrote to ${table}`);
  };
  assert.equal(callOf(instance, contract.default_roles, leaseStatus).status, 200);
  assert.deepEqual(instance.tables, tables);
  assert.equal(instance.mutexes.size, 0, 'the mutex is released');
});

test('a write the database refuses fails the call, and the lease section is left', () => {
  const instance = instanceFor();
  instance.refuseWrites = true;
  // The script throws; the platform answers 500. No lease was answered as held.
  assert.throws(() => callOf(instance, contract.default_roles, holderA), /was refused/);
  assert.equal(instance.mutexes.size, 0, 'the mutex is released');
  instance.refuseWrites = false;
  const next = callOf(instance, contract.default_roles, holderB);
  assert.equal(next.status, 200);
  assert.equal(JSON.parse(next.body).result.fence, 1);
});

test('every script of migrations-docs/companion is linted', () => {
  const lint = JSON.parse(fs.readFileSync(path.join(__dirname, 'package.json'), 'utf8')).scripts.lint;
  for (const file of fs.readdirSync(companionDir).filter((f) => f.endsWith('.js'))) {
    assert.ok(lint.includes(`/companion/${file}`), `${file} is not in the lint script`);
  }
});
