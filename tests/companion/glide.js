'use strict';
// A stand-in for the Glide APIs the companion's scripts call, so the scripts themselves run under
// Node. It follows the platform as ServiceNow documents it, not the fixture: each behaviour below
// cites its source, and says so where it is only inferred. Anything a script calls that is not
// here throws, so a script that grows a new platform dependency fails these tests until the
// stand-in (and the simulator) learn it.
//
// Sources (ServiceNow documentation, repository ServiceNow/ServiceNowDocs, markdown/…):
//   [GR]   api-reference/server-api-reference/c_GlideRecordAPI.md        GlideRecord - Global
//   [GE]   api-reference/server-api-reference/c_GlideElementScopedAPI.md getDecryptedValue()
//   [P2]   platform-security/platform-encryption/password-2way-encrypted-fields.md
//   [GS]   api-reference/server-api-reference/c_GlideSystemAPI.md        GlideSystem - Global
//   [GDT]  api-reference/server-api-reference/c_GlideDateTimeAPI.md      getNumericValue()
//   [GD]   api-reference/server-api-reference/c_GlideDigestScopedAPI.md  GlideDigest
//   [PKG]  api-reference/scripts/c_PackagesCallRemovalTool.md            GlideMutex
//   [REQ]  api-reference/server-api-reference/c_ScriptableServiceRequest.md, …RequestBody.md
//   [RESP] api-reference/server-api-reference/c_ScriptableServiceResponseBuilder.md,
//          …RespStreamWriter.md
// and [C-3p] for what only third-party code that runs on instances shows.

const crypto = require('node:crypto');
const vm = require('node:vm');

/** The system columns every table has. */
const SYSTEM_COLUMNS = ['sys_id', 'sys_created_by', 'sys_created_on', 'sys_updated_by', 'sys_updated_on', 'sys_mod_count'];

/**
 * The dictionary of the tables the scripts read or write: each column's kind. A password2 column
 * stores ciphertext (fixture values {encrypted: x}); the rest store strings.
 */
const SCHEMA = {
  oauth_credential: {
    type: 'choice', token_received: 'password2', expires: 'glide_date_time', peer: 'reference',
    oauth_requestor_profile: 'reference', user: 'reference', scopes: 'string', name: 'string',
  },
  oauth_entity: {
    name: 'string', client_id: 'string', client_secret: 'password2', token_url: 'string',
    default_grant_type: 'choice', type: 'choice', active: 'boolean',
  },
  sys_user: { user_name: 'string' },
  sys_user_role: { name: 'string', assignable_by: 'reference' },
  u_snok_oauth_keeper_lease: {
    u_kind: 'string', u_holder: 'string', u_fence: 'integer', u_expires_ms: 'string', u_credential: 'string',
    u_pid: 'string',
  },
};

/** Whether `table` of `schema` has `column`. */
function hasColumn(schema, table, column) {
  return SYSTEM_COLUMNS.includes(column) || column in schema[table];
}

function isCiphertext(stored) {
  return stored !== null && typeof stored === 'object' && typeof stored.encrypted === 'string';
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

/**
 * GlideElement of `column` of the record in hand ([GR] getElement: "the GlideElement for the
 * specified column of the current record").
 */
function makeElement(schema, table, row, column) {
  return strict('GlideElement', {
    // [GE] "Returns the clear text value for Password (2 way encrypted) fields"; [P2]
    // "getDecryptedValue() to decrypt and read the value" of password2 fields. Inferred: a value
    // a password2 column holds that is no ciphertext (stored without encryption) decrypts to
    // nothing, an empty field to nothing, and a column that is not encrypted at all answers its
    // value as is.
    getDecryptedValue() {
      const stored = row === null ? undefined : row[column];
      if (stored === undefined || stored === '') {
        return null;
      }
      if (schema[table][column] === 'password2') {
        return isCiphertext(stored) ? stored.encrypted : null;
      }
      return stored;
    },
  });
}

function makeGlideRecord(instance) {
  const { tables, schema } = instance;
  return function GlideRecord(table) {
    if (!(table in tables)) {
      throw new Error(`no table ${table} in the stand-in`);
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
    const at = () => rows.findIndex((r) => r.sys_id === current.sys_id);
    return strict('GlideRecord', {
      // [GR] get(name, value): "the first is the name of the column … The second is the value
      // to search for"; true when found. (The one-argument form, which also matches display
      // values, is not taught: the scripts never use it.)
      get(column, value) {
        if (arguments.length !== 2) {
          throw new Error('the stand-in knows get(name, value) only');
        }
        const row = rows.find((r) => r[column] === value);
        current = row === undefined ? null : { ...row };
        return current !== null;
      },
      // [GR] addQuery(name, value): "The operator in this case is assumed to be 'equal to'";
      // conditions are AND'ed; "an invalid field name … the invalid part of the query condition
      // is dropped".
      addQuery(column, value) {
        if (arguments.length !== 2) {
          throw new Error('the stand-in knows addQuery(name, value) only');
        }
        if (hasColumn(schema, table, column)) {
          conditions.push([column, value]);
        }
      },
      // [GR] query() runs the query built with addQuery(); next() moves to each record in turn
      // and answers whether there was one.
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
      // [GR] initialize(): "an empty record … suitable for population before an insert".
      initialize() {
        current = {};
      },
      // [GR] setValue(name, value) sets the field; values are stored as strings. Inferred: a name
      // that is no column of the table is dropped, as the platform drops unknown fields.
      setValue(column, value) {
        if (hasColumn(schema, table, column) && value !== null) {
          current[column] = String(value);
        }
      },
      // [GR] insert(): "The sys_id of the inserted record, or null if the record is not
      // inserted"; sys_created_by is the session's user (a system column, stamped by the
      // platform).
      insert() {
        if (!write()) {
          return null;
        }
        const row = { ...current, sys_id: newSysId(), sys_created_by: instance.userName };
        rows.push(row);
        current = { ...row };
        return row.sys_id;
      },
      // [GR] update(): "The sys_id of the new or update record. Returns null if the update fails."
      update() {
        if (at() < 0 || !write()) {
          return null;
        }
        rows[at()] = { ...current };
        return current.sys_id;
      },
      // [GR] deleteRecord(): true when deleted, false when there was no record to delete.
      deleteRecord() {
        if (at() < 0 || !write()) {
          return false;
        }
        rows.splice(at(), 1);
        return true;
      },
      // [GR] getUniqueValue(): "the primary key of the record, which is usually the sys_id".
      getUniqueValue() {
        return current.sys_id;
      },
      // [GR] getValue(): "Returns null if the field is empty or the field doesn't exist." A
      // password2 column answers what it stores, the ciphertext, never clear text ([P2]).
      getValue(column) {
        const stored = current === null ? undefined : current[column];
        if (!hasColumn(schema, table, column) || stored === undefined || stored === '') {
          return null;
        }
        return isCiphertext(stored) ? `ciphertext:${crypto.createHash('sha256').update(stored.encrypted).digest('hex')}` : stored;
      },
      // [GR] getElement(): the column's GlideElement. Inferred (not documented): null for a
      // name that is no column of the table, as GlideRecord exposes only its table's fields.
      getElement(column) {
        return hasColumn(schema, table, column) ? makeElement(schema, table, current, column) : null;
      },
    });
  };
}

/** [GDT] GlideDateTime(): now; getNumericValue(): "the number of milliseconds since January 1, 1970". */
function makeGlideDateTime(instance) {
  return function GlideDateTime() {
    return strict('GlideDateTime', {
      getNumericValue: () => instance.clock,
    });
  };
}

/**
 * [PKG] GlideMutex: the scriptable name of com.glide.sys.lock.Mutex, a named lock shared by every
 * call on the instance; get() answers whether the caller got it, release() gives it back
 * ([C-3p]: ServiceNow's own scripts, with setSpinWait() and setMaxSpins()). A caller that finds it
 * held gets false at once: the stand-in runs calls on one stack, so the holder cannot finish
 * while another call spins (on the platform the second caller waits, up to its spins).
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
 * [GD] getSHA256Hex(): the SHA-256 digest of a string, "in hexadecimal" — of its UTF-8 bytes
 * (inferred: the platform's strings are Java strings). The documentation does not say which case;
 * the stand-in answers uppercase, as Java hex encoders commonly write, so the scripts' case-blind
 * comparison is exercised.
 */
function GlideDigest() {
  return strict('GlideDigest', {
    getSHA256Hex(text) {
      return crypto.createHash('sha256').update(String(text), 'utf8').digest('hex').toUpperCase();
    },
  });
}

/** Prototype's Class.create(), which global Script Includes are written against ([C-3p]). */
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
 * A simulated instance: the fixture's tables and the companion's lease table, system properties,
 * the system log and the event queue, the clock and named mutexes, and the calls made against it.
 */
class Instance {
  /**
   * `allowedUser`: the system property snok.oauth_keeper.allowed_user (undefined: no such
   * property); `roleAssignableBy`: the name of the role in the companion role's Assignable by
   * field ('' for none); `withoutColumns`: columns this instance's dictionary lacks,
   * {table: [column]} (a release or a customisation without them).
   */
  constructor(fixture, { userName, allowedUser, roleAssignableBy, withoutColumns = {} }) {
    this.schema = structuredClone(SCHEMA);
    for (const [table, columns] of Object.entries(withoutColumns)) {
      for (const column of columns) {
        delete this.schema[table][column];
      }
    }
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
    for (const [table, rows] of Object.entries(this.tables)) {
      for (const row of rows) {
        for (const column of Object.keys(row)) {
          if (withoutColumns[table]?.includes(column)) {
            delete row[column];
          } else if (!hasColumn(this.schema, table, column)) {
            throw new Error(`the fixture's ${table} has a column ${column} the dictionary lacks`);
          }
        }
      }
    }
    this.properties = allowedUser === undefined ? {} : { 'snok.oauth_keeper.allowed_user': allowedUser };
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
    // [REQ] queryParams: each parameter's values as an array ("queryParams.name; // ['now']").
    const params = new URLSearchParams(request.query || '');
    const queryParams = {};
    for (const key of new Set(params.keys())) {
      queryParams[key] = params.getAll(key);
    }
    const answer = { status: null, contentType: null, body: '' };
    const { logs, events, properties } = this;
    const gs = strict('gs', {
      // [GS] getUserName(), getUserID(): the session user's user_name and sys_id.
      getUserName: () => this.userName,
      getUserID: () => this.userId,
      // [GS] hasRole(): "Comma-separated list of roles"; true for "at least one of the passed-in
      // roles. Also returns true if the user has the administrator role."
      hasRole: (names) => roles.includes('admin') || String(names).split(',').some((n) => roles.includes(n.trim())),
      // [GS] getProperty(key, alt): the property's value; "If the property is not found,
      // returns the specified alt value."
      getProperty: (key, alt) => (key in properties ? properties[key] : alt),
      // [GS] eventQueue(name, glideRecord, parm1, parm2). A null record: [C-3p].
      eventQueue: (name, record, parm1, parm2) => {
        events.push({ name, record: record === null ? null : record.getUniqueValue(), parm1, parm2 });
      },
      // [GS] log(message, source): the system log. The levelled variants are here so a script
      // calling them shows in the one-line-per-call check rather than crashing.
      log: (message, source) => logs.push({ level: 'log', message: String(message), source }),
      info: (message) => logs.push({ level: 'info', message: String(message) }),
      warn: (message) => logs.push({ level: 'warn', message: String(message) }),
      error: (message) => logs.push({ level: 'error', message: String(message) }),
      print: (message) => logs.push({ level: 'print', message: String(message) }),
    });
    // [REQ] RESTAPIRequestBody.dataString: "The content of the request body, as a String."
    const body = strict('RESTAPIRequestBody', { dataString: request.body === undefined ? '' : request.body });
    const restRequest = strict('request', {
      queryParams,
      queryString: request.query || '',
      headers: {},
      body,
    });
    // [RESP] setStatus(), setContentType(), getStreamWriter().writeString().
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
