'use strict';
// A small stand-in for the Glide APIs the companion's resource script calls, so the script
// itself runs under Node: GlideRecord over in-memory tables (get, getValue, getElement with
// getDecryptedValue), gs (getUserName, hasRole, log), and the scripted REST request and
// response objects. Anything the script calls that is not here throws, so a script that grows a
// new platform dependency fails this test until the stand-in (and the simulator) learn it.

const vm = require('node:vm');

/** Stored values: {encrypted: x} decrypts to x; a plain string is not a ciphertext. */
function decrypt(stored) {
  if (stored && typeof stored === 'object' && typeof stored.encrypted === 'string') {
    return stored.encrypted;
  }
  // The platform cannot decrypt what it did not encrypt: nothing comes back.
  return null;
}

function strict(name, object) {
  return new Proxy(object, {
    get(target, prop) {
      if (prop in target || typeof prop === 'symbol') {
        return target[prop];
      }
      throw new Error(`the stand-in has no ${name}.${String(prop)}: teach it (and the simulator) first`);
    },
  });
}

function makeGlideRecord(tables) {
  return function GlideRecord(table) {
    if (!(table in tables)) {
      throw new Error(`no table ${table} in the fixture`);
    }
    let current = null;
    return strict('GlideRecord', {
      get(field, value) {
        const column = value === undefined ? 'sys_id' : field;
        const wanted = value === undefined ? field : value;
        current = tables[table].find((row) => row[column] === wanted) || null;
        return current !== null;
      },
      getValue(column) {
        if (current === null || !(column in current)) {
          return null;
        }
        const value = current[column];
        // getValue() hands out the stored value, never clear text of an encrypted field.
        return typeof value === 'object' ? '<ciphertext>' : value;
      },
      getElement(column) {
        const row = current;
        return strict('GlideElement', {
          getDecryptedValue() {
            return row === null ? null : decrypt(row[column]);
          },
        });
      },
    });
  };
}

/** One call of the resource script with `roles` and a query string; what it answered and logged. */
function call(script, fixture, { userName, roles, query }) {
  const tables = {
    oauth_credential: fixture.oauth_credential,
    oauth_entity: fixture.oauth_entity,
  };
  const logs = [];
  const params = new URLSearchParams(query);
  const queryParams = {};
  for (const key of new Set(params.keys())) {
    queryParams[key] = params.getAll(key);
  }
  const answer = { status: null, contentType: null, body: '' };
  const gs = strict('gs', {
    getUserName: () => userName,
    hasRole: (role) => roles.includes(role) || roles.includes('admin'),
    log: (message, source) => logs.push({ level: 'log', message: String(message), source }),
    info: (message) => logs.push({ level: 'info', message: String(message) }),
    warn: (message) => logs.push({ level: 'warn', message: String(message) }),
    error: (message) => logs.push({ level: 'error', message: String(message) }),
    print: (message) => logs.push({ level: 'print', message: String(message) }),
  });
  const request = strict('request', { queryParams, queryString: query, headers: {} });
  const response = strict('response', {
    setStatus: (status) => { answer.status = status; },
    setContentType: (type) => { answer.contentType = type; },
    getStreamWriter: () => strict('RESTAPIResponseStream', {
      writeString: (text) => { answer.body += text; },
    }),
  });
  const sandbox = {
    gs,
    request,
    response,
    GlideRecord: makeGlideRecord(tables),
    JSON,
  };
  vm.runInNewContext(script, sandbox, { filename: 'secrets.js', timeout: 1000 });
  return { answer, logs };
}

module.exports = { call };
