'use strict';
// A small stand-in for the Glide APIs the companion's scripts call, so the scripts themselves run
// under Node: GlideRecord over in-memory tables (get, query, insert, update, deleteRecord,
// getValue, getElement with getDecryptedValue), GlideDateTime (now), GlideMutex, GlideDigest,
// gs (getUserName, getUserID, hasRole, getProperty, eventQueue, log), Class.create() for the
// Script Includes, and the scripted REST request and response objects. Anything a script calls that is
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

/** A fresh sys_id: 32 lowercase hex digits. */
function newSysId() {
  return crypto.randomBytes(16).toString('hex');
}

function makeGlideRecord(instance) {
  const tables = instance.tables;
  return function GlideRecord(table) {
    if (!(table in tables)) {
      throw new Error(`no table ${table} in the fixture`);
    }
    const rows = tables[table];
    // The record in hand is a copy: nothing reaches the table before insert() or update().
    let current = null;
    let conditions = [];
    let results = [];
    let cursor = -1;
    const write = () => {
      instance.beforeWrite(table);
      return !instance.refuseWrites;
    };
    return strict('GlideRecord', {
      get(field, value) {
        const column = value === undefined ? 'sys_id' : field;
        const wanted = value === undefined ? field : value;
        const row = rows.find((r) => r[column] === wanted);
        current = row === undefined ? null : { ...row };
        return current !== null;
      },
      addQuery(column, value) {
        if (arguments.length !== 2) {
          throw new Error('the stand-in knows addQuery(name, value) only');
        }
        conditions.push([column, value]);
      },
      query() {
        results = rows.filter((r) => conditions.every(([c, v]) => r[c] === v)).map((r) => ({ ...r }));
        cursor = -1;
        conditions = [];
      },
      next() {
        cursor += 1;
        current = cursor < results.length ? results[cursor] : null;
        return current !== null;
      },
      initialize() {
        current = {};
      },
      setValue(column, value) {
        current[column] = String(value);
      },
      insert() {
        if (!write()) {
          return null;
        }
        const row = { ...current, sys_id: newSysId(), sys_created_by: instance.userName };
        rows.push(row);
        current = { ...row };
        return row.sys_id;
      },
      update() {
        const at = rows.findIndex((r) => r.sys_id === current.sys_id);
        if (at < 0 || !write()) {
          return null;
        }
        rows[at] = { ...current };
        return current.sys_id;
      },
      deleteRecord() {
        const at = rows.findIndex((r) => r.sys_id === current.sys_id);
        if (at < 0 || !write()) {
          return false;
        }
        rows.splice(at, 1);
        return true;
      },
      getUniqueValue() {
        return current.sys_id;
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

/** GlideDateTime, now: the instance's clock, which tests move. */
function makeGlideDateTime(instance) {
  return function GlideDateTime() {
    return strict('GlideDateTime', {
      getNumericValue: () => instance.clock,
    });
  };
}

/**
 * GlideMutex: a named lock shared by every call on the instance. A caller that finds it held
 * gets false at once: the stand-in runs calls on one stack, so the holder cannot finish while
 * another call spins (on the platform the second caller waits, up to its spins).
 */
function makeGlideMutex(instance) {
  return function GlideMutex(name) {
    let held = false;
    return strict('GlideMutex', {
      setSpinWait() {},
      setMaxSpins() {},
      get() {
        if (instance.mutexes.has(name)) {
          return false;
        }
        instance.mutexes.add(name);
        held = true;
        return true;
      },
      release() {
        if (held) {
          instance.mutexes.delete(name);
          held = false;
        }
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

/** The instance's clock when a test starts it: 2026-01-01T00:00:00Z. */
const START = Date.UTC(2026, 0, 1);

/**
 * A simulated instance: the fixture's tables and the companion's lease table, the system log,
 * the clock and named mutexes, and the calls made against it.
 */
class Instance {
  /**
   * `allowedUser`: the system property snok.oauth_keeper.allowed_user; `roleAssignableBy`: the
   * name of the role in the companion role's Assignable by field ('' for none).
   */
  constructor(fixture, { userName, allowedUser, roleAssignableBy }) {
    this.userId = newSysId();
    const keeperRole = { sys_id: newSysId(), name: 'snok_oauth_keeper', assignable_by: '' };
    const roles = [keeperRole];
    if (roleAssignableBy !== '') {
      const assigner = { sys_id: newSysId(), name: roleAssignableBy };
      keeperRole.assignable_by = assigner.sys_id;
      roles.push(assigner);
    }
    // Each instance owns a copy, so a case's writes never leak into the next case.
    this.tables = structuredClone({
      oauth_credential: fixture.oauth_credential,
      oauth_entity: fixture.oauth_entity,
      sys_user: [{ sys_id: this.userId, user_name: userName }],
      sys_user_role: roles,
      u_snok_oauth_keeper_lease: [],
    });
    this.properties = { 'snok.oauth_keeper.allowed_user': allowedUser };
    this.userName = userName;
    this.logs = [];
    // Events queued with gs.eventQueue(): {name, record (its sys_id, or null), parm1, parm2}.
    this.events = [];
    this.clock = START;
    this.mutexes = new Set();
    // Whether the database refuses every write, as an aborting business rule would.
    this.refuseWrites = false;
    // Called before each write to a table: tests run another call from here, mid-call.
    this.beforeWrite = () => {};
  }

  /** Moves the instance's clock forward. */
  advance(seconds) {
    this.clock += seconds * 1000;
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
    const events = this.events;
    const properties = this.properties;
    const gs = strict('gs', {
      getUserName: () => this.userName,
      getUserID: () => this.userId,
      getProperty: (key, alt) => (key in properties ? properties[key] : alt),
      eventQueue: (name, record, parm1, parm2) => {
        events.push({ name, record: record === null ? null : record.getUniqueValue(), parm1, parm2 });
      },
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
      GlideRecord: makeGlideRecord(this),
      GlideDateTime: makeGlideDateTime(this),
      GlideMutex: makeGlideMutex(this),
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
