'use strict';
// A small stand-in for the Glide APIs the companion's scripts call, so the scripts themselves run
// under Node: GlideRecord over in-memory tables (get, getValue, getElement with
// getDecryptedValue), GlideDigest, gs (getUserName, hasRole, log), Class.create() for the Script
// Includes, and the scripted REST request and response objects. Anything a script calls that is
// not here throws, so a script that grows a new platform dependency fails these tests until the
// stand-in (and the simulator) learn it.

const crypto = require('node:crypto');
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

/**
 * GlideDigest: SHA-256 of the string's UTF-8 bytes. The documentation says "hexadecimal" without
 * a case; the stand-in answers uppercase, the case a Java hex encoder commonly writes, so the
 * scripts' case-insensitive comparison is exercised.
 */
function GlideDigest() {
  return strict('GlideDigest', {
    getSHA256Hex(text) {
      return crypto.createHash('sha256').update(String(text), 'utf8').digest('hex').toUpperCase();
    },
  });
}

/** Prototype's Class.create(), which global Script Includes are written against. */
const Class = {
  create() {
    return function created(...args) {
      this.initialize(...args);
    };
  },
};

/** A simulated instance: the fixture's tables, the system log, and the calls made against it. */
class Instance {
  constructor(fixture, { userName }) {
    // Each instance owns a copy, so a case's writes never leak into the next case.
    this.tables = structuredClone({
      oauth_credential: fixture.oauth_credential,
      oauth_entity: fixture.oauth_entity,
    });
    this.userName = userName;
    this.logs = [];
  }

  /**
   * One call of a resource script, after the Script Includes it needs, as `roles`; what it
   * answered. `request` is {method, query, body} with the body as raw text.
   */
  call({ scripts, roles, request }) {
    const params = new URLSearchParams(request.query || '');
    const queryParams = {};
    for (const key of new Set(params.keys())) {
      queryParams[key] = params.getAll(key);
    }
    const answer = { status: null, contentType: null, body: '' };
    const logs = this.logs;
    const gs = strict('gs', {
      getUserName: () => this.userName,
      hasRole: (role) => roles.includes(role) || roles.includes('admin'),
      log: (message, source) => logs.push({ level: 'log', message: String(message), source }),
      info: (message) => logs.push({ level: 'info', message: String(message) }),
      warn: (message) => logs.push({ level: 'warn', message: String(message) }),
      error: (message) => logs.push({ level: 'error', message: String(message) }),
      print: (message) => logs.push({ level: 'print', message: String(message) }),
    });
    const body = strict('RESTAPIRequestBody', { dataString: request.body === undefined ? '' : request.body });
    const restRequest = strict('request', {
      queryParams,
      queryString: request.query || '',
      headers: {},
      body,
    });
    const response = strict('response', {
      setStatus: (status) => { answer.status = status; },
      setContentType: (type) => { answer.contentType = type; },
      getStreamWriter: () => strict('RESTAPIResponseStream', {
        writeString: (text) => { answer.body += text; },
      }),
    });
    const context = vm.createContext({
      gs,
      request: restRequest,
      response,
      GlideRecord: makeGlideRecord(this.tables),
      GlideDigest,
      Class,
    });
    for (const { name, source } of scripts) {
      vm.runInContext(source, context, { filename: name, timeout: 1000 });
    }
    return answer;
  }
}

module.exports = { Instance };
