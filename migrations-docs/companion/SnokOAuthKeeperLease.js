/*
 * sn-oauth-keeper companion: Script Include "SnokOAuthKeeperLease" (global scope, not client
 * callable, accessible from this scope only).
 *
 * The lease that lets one keeper at a time work on an instance, and the claims keepers hold on
 * credentials, kept in the table u_snok_oauth_keeper_lease the update set creates: one row of
 * kind "lease" (holder, fence, expiry) and one row of kind "claim" per (holder, credential).
 * A table rather than a system property: the lease is renewed every cycle, and every change of a
 * system property flushes the cache of every node of the instance.
 *
 * Every read-then-write runs inside one GlideMutex section, so two callers on two nodes never
 * interleave: the second waits for the first (up to SPIN_WAIT_MS x MAX_SPINS) and then sees its
 * result. A caller that cannot get the mutex in that time is told to retry (503), never answered
 * from a half-read state. The read-only status (GET /lease) takes the same section: the lease row
 * and the claim rows are written one after the other, and only the section shows them as they
 * stand between two calls.
 *
 * ES5, as global server scripts run in ES5 mode. The wire contract is fixed in
 * migrations-docs/README.md, and tests/contract/companion.json holds its cases.
 */
var SnokOAuthKeeperLease = Class.create();

SnokOAuthKeeperLease.TABLE = 'u_snok_oauth_keeper_lease';
SnokOAuthKeeperLease.MUTEX = 'snok.oauth_keeper.lease';
SnokOAuthKeeperLease.SPIN_WAIT_MS = 50;
SnokOAuthKeeperLease.MAX_SPINS = 100;
SnokOAuthKeeperLease.MAX_HOLDER = 100;
SnokOAuthKeeperLease.MIN_TTL = 10;
SnokOAuthKeeperLease.MAX_TTL = 600;
SnokOAuthKeeperLease.MAX_CLAIMS = 1000;
/** The largest process id a holder may give: every OS's pids are unsigned 32-bit or smaller. */
SnokOAuthKeeperLease.MAX_PID = 4294967295;

/** What a refused holder is told, wherever it was sent. */
SnokOAuthKeeperLease.HOLDER_RULE = 'holder must be a string of 1 to ' + SnokOAuthKeeperLease.MAX_HOLDER +
    ' characters without control characters';

/** What a refused process id is told. */
SnokOAuthKeeperLease.PID_RULE = 'pid must be a whole number from 1 to ' + SnokOAuthKeeperLease.MAX_PID;

/**
 * A holder id: 1 to 100 characters (Unicode code points), none of them a control character
 * (C0, DEL, C1, the line and paragraph separators) or half of a surrogate pair.
 */
SnokOAuthKeeperLease.isHolder = function (value) {
    if (typeof value !== 'string') {
        return false;
    }
    var characters = 0;
    for (var i = 0; i < value.length; i++) {
        var unit = value.charCodeAt(i);
        if (unit >= 0xD800 && unit <= 0xDBFF) {
            var next = i + 1 < value.length ? value.charCodeAt(i + 1) : 0;
            if (next < 0xDC00 || next > 0xDFFF) {
                return false;
            }
            i++;
        } else if ((unit >= 0xDC00 && unit <= 0xDFFF) || unit < 0x20 || (unit >= 0x7F && unit <= 0x9F) ||
                unit === 0x2028 || unit === 0x2029) {
            return false;
        }
        characters++;
    }
    return characters >= 1 && characters <= SnokOAuthKeeperLease.MAX_HOLDER;
};

/** Whether a JSON value is a whole number from `min` to `max` (60.0 is 60; "60" is no number). */
SnokOAuthKeeperLease.isWholeNumber = function (value, min, max) {
    return typeof value === 'number' && isFinite(value) && Math.floor(value) === value &&
        value >= min && value <= max;
};

/** A lease time to live: a whole number of seconds from 10 to 600. */
SnokOAuthKeeperLease.isTtl = function (value) {
    return SnokOAuthKeeperLease.isWholeNumber(value, SnokOAuthKeeperLease.MIN_TTL, SnokOAuthKeeperLease.MAX_TTL);
};

/** A holder's process id: a whole number from 1 to MAX_PID. */
SnokOAuthKeeperLease.isPid = function (value) {
    return SnokOAuthKeeperLease.isWholeNumber(value, 1, SnokOAuthKeeperLease.MAX_PID);
};

/** How a holder appears in an audit line: JSON-quoted, so any character it may hold reads plainly. */
SnokOAuthKeeperLease.quoted = function (holder) {
    return JSON.stringify(holder);
};

/** Whether `a` sorts before `b`, by UTF-16 code units (JavaScript's own string order). */
SnokOAuthKeeperLease.byHolderThenId = function (a, b) {
    if (a.holder !== b.holder) {
        return a.holder < b.holder ? -1 : 1;
    }
    if (a.sys_id !== b.sys_id) {
        return a.sys_id < b.sys_id ? -1 : 1;
    }
    return 0;
};

/**
 * The one `holder` query parameter of a DELETE; null after refusing the call (400) when it is
 * missing, given twice, or not a holder id.
 */
SnokOAuthKeeperLease.holderParam = function (call) {
    var given = call.rawValues('holder');
    if (given.length === 0 || (given.length === 1 && given[0] === '')) {
        call.refuse(400, 'Missing parameter holder', 'Provide holder=<id>', 'no_holder');
        return null;
    }
    if (given.length > 1) {
        call.refuse(400, 'Invalid parameter holder', 'Provide holder=<id> once', 'bad_holder');
        return null;
    }
    if (!SnokOAuthKeeperLease.isHolder(given[0])) {
        call.refuse(400, 'Invalid parameter holder', SnokOAuthKeeperLease.HOLDER_RULE, 'bad_holder');
        return null;
    }
    return given[0];
};

/** The answer when the lease mutex could not be had in time: retry. `holder`: null for a read. */
SnokOAuthKeeperLease.busy = function (call, holder) {
    call.audit((holder === null ? '' : 'holder=' + SnokOAuthKeeperLease.quoted(holder) + ' ') + 'outcome=busy');
    call.send(503, SnokOAuthKeeperCompanion.failure('Lease busy',
        'Another call is changing the lease; retry in a moment'));
};

/** Deletes one row of the lease table. */
SnokOAuthKeeperLease.deleteRow = function (sysId) {
    var row = new GlideRecord(SnokOAuthKeeperLease.TABLE);
    if (row.get('sys_id', sysId)) {
        SnokOAuthKeeperLease.written(row.deleteRecord());
    }
};

/** The lease row, or null before the first lease ever. */
SnokOAuthKeeperLease.leaseRow = function () {
    var row = new GlideRecord(SnokOAuthKeeperLease.TABLE);
    return row.get('u_kind', 'lease') ? row : null;
};

/** The process id the lease row stores, or null when it stores none (or nothing that is one). */
SnokOAuthKeeperLease.storedPid = function (row) {
    // '' + a Java string is a JavaScript string; '' + null is 'null', which is no number.
    var pid = Number('' + row.getValue('u_pid'));
    return SnokOAuthKeeperLease.isPid(pid) ? pid : null;
};

/** Every claim row, as {holder, sys_id, id} (id: the row's own sys_id). */
SnokOAuthKeeperLease.claimRows = function () {
    var rows = [];
    var row = new GlideRecord(SnokOAuthKeeperLease.TABLE);
    row.addQuery('u_kind', 'claim');
    row.query();
    while (row.next()) {
        rows.push({
            holder: row.getValue('u_holder'),
            sys_id: row.getValue('u_credential'),
            id: row.getUniqueValue()
        });
    }
    return rows;
};

/**
 * Fails the call (the platform answers 500) when the database refused a write, say a business
 * rule aborted it: a lease or claim that was not stored must never be answered as held.
 */
SnokOAuthKeeperLease.written = function (outcome) {
    if (!outcome) {
        throw new Error('sn-oauth-keeper companion: a write to ' + SnokOAuthKeeperLease.TABLE + ' was refused');
    }
};

/** Makes `ids` the claim set of `holder`, less what other holders claim; how many it holds. */
SnokOAuthKeeperLease.replaceClaims = function (holder, ids) {
    var rows = SnokOAuthKeeperLease.claimRows();
    var taken = {};
    var mine = {};
    // Keys carry a prefix, so no id can collide with an Object property.
    for (var i = 0; i < rows.length; i++) {
        var key = 'id:' + rows[i].sys_id;
        if (rows[i].holder === holder) {
            mine[key] = rows[i].id;
        } else {
            taken[key] = true;
        }
    }
    var wanted = {};
    var held = 0;
    for (var j = 0; j < ids.length; j++) {
        var id = 'id:' + ids[j];
        if (taken[id] || wanted[id]) {
            continue;
        }
        wanted[id] = true;
        held++;
        if (!mine[id]) {
            var claim = new GlideRecord(SnokOAuthKeeperLease.TABLE);
            claim.initialize();
            claim.setValue('u_kind', 'claim');
            claim.setValue('u_holder', holder);
            claim.setValue('u_credential', ids[j]);
            SnokOAuthKeeperLease.written(claim.insert());
        }
    }
    for (var k in mine) {
        if (Object.prototype.hasOwnProperty.call(mine, k) && !wanted[k]) {
            SnokOAuthKeeperLease.deleteRow(mine[k]);
        }
    }
    return held;
};

/** Removes the claims of `holder` on `ids`; how many there were. */
SnokOAuthKeeperLease.dropClaims = function (holder, ids) {
    var rows = SnokOAuthKeeperLease.claimRows();
    var removed = 0;
    for (var i = 0; i < rows.length; i++) {
        if (rows[i].holder === holder && ids.indexOf(rows[i].sys_id) >= 0) {
            SnokOAuthKeeperLease.deleteRow(rows[i].id);
            removed++;
        }
    }
    return removed;
};

/**
 * The claims of every holder but `except` (null: of every holder), as the answers carry them, in a
 * stable order.
 */
SnokOAuthKeeperLease.listedClaims = function (except) {
    var rows = SnokOAuthKeeperLease.claimRows();
    var out = [];
    for (var i = 0; i < rows.length; i++) {
        if (rows[i].holder !== except) {
            out.push({ holder: rows[i].holder, sys_id: rows[i].sys_id });
        }
    }
    out.sort(SnokOAuthKeeperLease.byHolderThenId);
    return out;
};

SnokOAuthKeeperLease.prototype = {
    initialize: function () {
        this.now = new GlideDateTime().getNumericValue();
    },

    /**
     * Runs `work` with the lease table to itself and returns what it returns; null when the mutex
     * could not be had in time (the caller answers 503).
     */
    exclusive: function (work) {
        var mutex = new GlideMutex(SnokOAuthKeeperLease.MUTEX, 'sn-oauth-keeper companion lease');
        mutex.setSpinWait(SnokOAuthKeeperLease.SPIN_WAIT_MS);
        mutex.setMaxSpins(SnokOAuthKeeperLease.MAX_SPINS);
        if (!mutex.get()) {
            return null;
        }
        try {
            // The clock is read inside the section, so expiry is judged after any earlier call.
            this.now = new GlideDateTime().getNumericValue();
            return work.call(this);
        } finally {
            mutex.release();
        }
    },

    /** Whether the lease row is held by someone now. */
    isLive: function (row) {
        return row !== null && parseInt(row.getValue('u_expires_ms'), 10) > this.now;
    },

    /** The time a live lease row has left, in whole seconds rounded up (at least 1). */
    expiresIn: function (row) {
        return Math.ceil((parseInt(row.getValue('u_expires_ms'), 10) - this.now) / 1000);
    },

    /**
     * Acquires or renews the lease for `holder`, then (when it holds it and `claims` is an array)
     * makes `claims` its claim set, less the ids other holders claim. `pid` (null: not sent) is
     * stored with the lease; a renewal without one keeps the stored one, an acquisition without
     * one stores none. Answers {held: true, outcome: 'acquired'|'renewed', fence, claimed} or
     * {held: false, holder, expiresIn, pid} when another holder's lease has not expired.
     */
    acquire: function (holder, ttlSeconds, claims, pid) {
        var row = SnokOAuthKeeperLease.leaseRow();
        var first = row === null;
        var outcome = 'acquired';
        var fence = 1;
        if (first) {
            row = new GlideRecord(SnokOAuthKeeperLease.TABLE);
            row.initialize();
            row.setValue('u_kind', 'lease');
        } else {
            var current = row.getValue('u_holder');
            if (this.isLive(row) && current !== holder) {
                return {
                    held: false, holder: current, expiresIn: this.expiresIn(row),
                    pid: SnokOAuthKeeperLease.storedPid(row)
                };
            }
            // A renewal only while unexpired: after an expiry or a release even the same holder
            // acquires anew, so it learns from the fence that its lease lapsed.
            fence = parseInt(row.getValue('u_fence'), 10);
            if (this.isLive(row)) {
                outcome = 'renewed';
            } else {
                fence++;
            }
        }
        row.setValue('u_holder', holder);
        row.setValue('u_fence', fence);
        row.setValue('u_expires_ms', String(this.now + ttlSeconds * 1000));
        if (pid !== null) {
            row.setValue('u_pid', String(pid));
        } else if (outcome === 'acquired') {
            // A new holder never inherits the process id of the one before.
            row.setValue('u_pid', '');
        }
        SnokOAuthKeeperLease.written(first ? row.insert() : row.update());
        var claimed = claims === null ? null : SnokOAuthKeeperLease.replaceClaims(holder, claims);
        return { held: true, outcome: outcome, fence: fence, claimed: claimed };
    },

    /**
     * The lease as it stands and every holder's claims, changing nothing: {holder, fence,
     * expiresIn, pid, claims}. While no one holds it, holder and pid are null, expiresIn 0, and
     * fence the last one (0 before the first lease ever).
     */
    status: function () {
        var row = SnokOAuthKeeperLease.leaseRow();
        var live = this.isLive(row);
        return {
            holder: live ? row.getValue('u_holder') : null,
            fence: row === null ? 0 : parseInt(row.getValue('u_fence'), 10),
            expiresIn: live ? this.expiresIn(row) : 0,
            pid: live ? SnokOAuthKeeperLease.storedPid(row) : null,
            claims: SnokOAuthKeeperLease.listedClaims(null)
        };
    },

    /** Releases the lease if `holder` holds it (its claims stay); whether it did. */
    release: function (holder) {
        var row = SnokOAuthKeeperLease.leaseRow();
        if (!this.isLive(row) || row.getValue('u_holder') !== holder) {
            return false;
        }
        row.setValue('u_expires_ms', String(this.now));
        SnokOAuthKeeperLease.written(row.update());
        return true;
    },

    type: 'SnokOAuthKeeperLease'
};
