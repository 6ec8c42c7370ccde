// A subscription to one log stream, shared by the tabs of an origin and kept across reloads.
//
//   import { LogsSubscription } from '/static/logs-subscription.js';
//   const sub = new LogsSubscription({ url, key: channel, history: { tail: 100 } });
//   render(sub.records);                          // rows kept from before a reload, once
//   sub.on('records', (fresh) => render(fresh));  // then only new ones, in seq order
//   sub.on('state', ({ state, detail, role }) => ...);
//   sub.start();  ...  sub.stop();                // stop() = the user disconnected
//
// One tab per key is the leader (a Web Lock, `navigator.locks`): it alone holds the stream (a
// LogsSseClient) and relays what it reads over a BroadcastChannel; the other tabs follow. When
// the leader closes or disconnects, its lock is released and a follower takes over, resuming
// from the last id it was given, so no record is lost or shown twice. This keeps one connection
// per stream however many tabs show it (browsers allow six per origin over HTTP/1.1).
//
// sessionStorage (per tab) keeps the key, the last id, whether the user was connected and the
// last records: a reload shows those rows again and resumes from the cursor, which fills in
// what was published while the page was away.

import { Emitter } from './emitter.js';
import { ConnectionState, LogsSseClient } from './logs-sse-client.js';

// Records kept in memory (and so the longest list a page can show): a long run's tail, while
// the DOM stays quick.
export const DEFAULT_MAX_RECORDS = 2000;
// Records that survive a reload. sessionStorage holds about 5 MB per origin and a message may
// be 64 KiB, so this is a ceiling: a save that does not fit is retried with half as many.
export const DEFAULT_PERSISTED_RECORDS = 500;
export const DEFAULT_STORAGE_KEY = 'logstream.subscription.v1';
export const Role = Object.freeze({ LEADER: 'leader', FOLLOWER: 'follower', SOLO: 'solo' });
// Saves are coalesced to one write per this many ms (and one when the page is hidden).
const SAVE_EVERY_MS = 300;
// A follower nobody has answered yet asks again, at most this often.
const HELLO_EVERY_MS = 1000;
const LOCK_PREFIX = 'logstream:leader:';
const RELAY_PREFIX = 'logstream:relay:';

const seqOf = (id) => (/^\d+$/.test(String(id ?? '')) ? Number(id) : -1);

function defaultStorage() {
  try {
    return globalThis.sessionStorage || null;
  } catch (error) {  // storage disabled (a sandboxed frame, some privacy settings)
    return null;
  }
}

/** What a tab saved before its last reload (or null): {key, url, meta, active, lastEventId, records}. */
export function loadSavedSubscription(storage = defaultStorage(),
                                      storageKey = DEFAULT_STORAGE_KEY) {
  try {
    const saved = JSON.parse(storage?.getItem(storageKey) || 'null');
    return saved && saved.v === 1 && Array.isArray(saved.records) ? saved : null;
  } catch (error) {
    return null;
  }
}

export class LogsSubscription extends Emitter {
  /**
   * @param {object} options  those of LogsSseClient (url, history, headers, credentials,
   *   renewCredential, backoff, stallMs), plus: key (what tabs share; default the url),
   *   maxRecords, persistedRecords, storage (default sessionStorage; null: none), storageKey,
   *   meta (anything JSON the page wants back after a reload), share (default true).
   */
  constructor(options) {
    super('logs subscription');
    this.options = options;
    this.url = options.url;
    this.key = options.key || options.url;
    this.meta = options.meta ?? null;
    this.maxRecords = options.maxRecords || DEFAULT_MAX_RECORDS;
    this._persisted = Math.min(options.persistedRecords || DEFAULT_PERSISTED_RECORDS,
                               this.maxRecords);
    this._storage = options.storage === undefined ? defaultStorage() : options.storage;
    this._storageKey = options.storageKey || DEFAULT_STORAGE_KEY;
    this._env = options.environment || globalThis;
    this._share = options.share !== false && Boolean(this._env.navigator?.locks)
      && typeof this._env.BroadcastChannel === 'function';
    this._tab = Math.random().toString(36).slice(2, 10);
    this.records = [];
    this.lastEventId = null;
    this.state = ConnectionState.DISCONNECTED;
    this.detail = '';
    this.role = null;
    this.error = null;
    this.active = false;
    this._floor = -1;  // the seq of the last record this tab let go of (a follower's hole)
    const saved = this._storage ? loadSavedSubscription(this._storage, this._storageKey) : null;
    this.restored = saved && saved.key === this.key ? saved : null;
    if (this.restored) {
      this.records = this.restored.records.slice(-this.maxRecords);
      this.lastEventId = this.restored.lastEventId || null;
    }
    this._lastSeq = Math.max(seqOf(this.lastEventId), ...this.records.map((r) => seqOf(r.seq)));
    this._onPageHide = () => this._saveNow();
  }

  start() {
    if (this.active) return;
    this.active = true;
    this._run = (this._run || 0) + 1;
    this.error = null;
    this._env.addEventListener?.('pagehide', this._onPageHide);
    this._save();
    if (!this._share) {
      this._lead(Role.SOLO);
      return;
    }
    this._relay = new this._env.BroadcastChannel(RELAY_PREFIX + this.key);
    this._relay.onmessage = (event) => this._onMessage(event.data);
    const run = this._run;
    this._env.navigator.locks.request(LOCK_PREFIX + this.key, { ifAvailable: true }, (lock) => {
      if (!this._current(run)) return undefined;
      if (lock) return this._holdLock();
      this._follow();
      this._queueForLock(run);
      return undefined;
    }).catch((error) => this._lockFailed(error, run));
  }

  /** Whether a lock callback still belongs to this run (not to one stopped and restarted). */
  _current(run) {
    return this.active && run === this._run;
  }

  /** The user disconnected: stop, and remember that a reload should not reconnect. */
  stop() {
    this.dispose();
    this._setState(ConnectionState.DISCONNECTED, '');
    this._saveNow();
  }

  /** Stop this tab's part (a page going away, a component unmounting); the saved state stays. */
  dispose() {
    if (!this.active) return;
    this.active = false;
    this._env.removeEventListener?.('pagehide', this._onPageHide);
    const client = this._client;
    this._client = null;
    if (client) client.stop();
    if (this._lockQueue) this._lockQueue.abort();
    this._lockQueue = null;
    if (this._releaseLock) this._releaseLock();
    this._releaseLock = null;
    if (this._relay) this._relay.close();
    this._relay = null;
    clearTimeout(this._saveTimer);
    this._saveTimer = null;
    this.role = null;
  }

  /** Reconnect at once from the cursor (e.g. the user signed in again). */
  reconnect() {
    if (this._client) this._client.reconnect();
  }

  /** Forget the records (the cursor stays: cleared rows do not come back). */
  clear() {
    this.records = [];
    this._saveNow();
  }

  // -- leading ---------------------------------------------------------------------------------

  _holdLock() {
    this._lead(Role.LEADER);
    return new Promise((resolve) => { this._releaseLock = resolve; });
  }

  _queueForLock(run) {
    this._lockQueue = new AbortController();
    this._env.navigator.locks.request(LOCK_PREFIX + this.key, { signal: this._lockQueue.signal },
      () => {
        if (!this._current(run)) return undefined;
        this._lockQueue = null;
        return this._holdLock();
      }).catch((error) => { if (error.name !== 'AbortError') this._lockFailed(error, run); });
  }

  _lockFailed(error, run) {
    console.warn('logs subscription: no Web Lock, streaming without sharing', error);
    if (this._current(run) && !this._client) this._lead(Role.SOLO);
  }

  _lead(role) {
    this.role = role;
    const client = new LogsSseClient({ ...this.options, lastEventId: this.lastEventId });
    this._client = client;
    // A client we have let go of (dispose) may still report its last state: not ours anymore.
    const on = (type, handler) => client.on(type, (detail) => {
      if (this._client === client) handler(detail);
    });
    on('state', ({ state, detail }) => {
      this._setState(state, detail);
      this._post({ t: 'state', state, detail });
    });
    on('records', (records) => {
      const fresh = this._accept(records, client.lastEventId);
      if (fresh.length) this._post({ t: 'records', records: fresh, cursor: this.lastEventId });
    });
    on('connected', (info) => {
      this._accept([], client.lastEventId);
      this._post({ t: 'cursor', cursor: this.lastEventId });
      this._emit('connected', info);
    });
    on('gap', (gap) => this._notice({ kind: 'gap', ...gap }));
    on('overflow', () => this._notice({ kind: 'overflow' }));
    on('error', (error) => {
      this._post({ t: 'error', error });
      this._fail(error);
    });
    client.start();
  }

  _welcome(hello) {
    const after = seqOf(hello.after);
    const records = after < 0 ? this.records : this.records.filter((r) => seqOf(r.seq) > after);
    this._post({ t: 'welcome', to: hello.from, records, cursor: this.lastEventId,
                 floor: this._floor, state: this.state, detail: this.detail });
  }

  // -- following -------------------------------------------------------------------------------

  _follow() {
    this.role = Role.FOLLOWER;
    this._welcomed = false;
    this._setState(ConnectionState.CONNECTING, 'joining the stream of another tab');
    this._hello();
  }

  _hello() {
    this._helloAt = Date.now();
    this._post({ t: 'hello', from: this._tab, after: this.lastEventId });
  }

  _onMessage(message) {
    if (!this.active || !message || typeof message !== 'object') return;
    if (this.role === Role.LEADER) {
      if (message.t === 'hello') this._welcome(message);
      return;
    }
    if (this.role !== Role.FOLLOWER) return;
    if (message.t === 'welcome') {
      if (message.to !== this._tab) return;
      this._welcomed = true;
      const mine = seqOf(this.lastEventId);
      if (mine >= 0 && message.floor > mine) {
        this._notice({ kind: 'gap', from: mine + 1, to: message.floor, relayed: true });
      }
      this._accept(message.records, message.cursor);
      this._setState(message.state, message.detail);
    } else if (!this._welcomed) {
      if (Date.now() - this._helloAt >= HELLO_EVERY_MS) this._hello();
    } else if (message.t === 'records' || message.t === 'cursor') {
      this._accept(message.records || [], message.cursor);
    } else if (message.t === 'state') {
      this._setState(message.state, message.detail);
    } else if (message.t === 'notice') {
      this._emit('notice', message.notice);
    } else if (message.t === 'error') {
      this._fail(message.error);
    }
  }

  // -- shared ----------------------------------------------------------------------------------

  _post(message) {
    if (!this._relay || (this.role !== Role.LEADER && message.t !== 'hello')) return;
    try { this._relay.postMessage(message); } catch (error) { /* closed meanwhile */ }
  }

  /** Keep the records newer than what we have; move the cursor to `cursor` (the sender's). */
  _accept(records, cursor) {
    const fresh = [];
    for (const record of records) {
      const seq = seqOf(record.seq);
      if (seq >= 0 && seq <= this._lastSeq) continue;
      if (seq >= 0) this._lastSeq = seq;
      fresh.push(record);
    }
    if (fresh.length) {
      this.records.push(...fresh);
      const excess = this.records.length - this.maxRecords;
      if (excess > 0) {
        this._floor = Math.max(this._floor, seqOf(this.records[excess - 1].seq));
        this.records.splice(0, excess);
      }
      this.lastEventId = String(this._lastSeq);
    }
    if (seqOf(cursor) > this._lastSeq) {
      this._lastSeq = seqOf(cursor);
      this.lastEventId = String(cursor);
    }
    if (fresh.length) this._emit('records', fresh);
    this._save();
    return fresh;
  }

  _notice(notice) {
    this._post({ t: 'notice', notice });
    this._emit('notice', notice);
  }

  _setState(state, detail) {
    this.state = state;
    this.detail = detail;
    this._emit('state', { state, detail, role: this.role });
  }

  _fail(error) {
    this.error = error;
    this.dispose();
    this._setState(ConnectionState.DISCONNECTED, `HTTP ${error.status}`);
    this._saveNow();
    this._emit('error', error);
  }

  _save() {
    if (!this._storage || this._saveTimer) return;
    this._saveTimer = setTimeout(() => { this._saveTimer = null; this._saveNow(); }, SAVE_EVERY_MS);
  }

  _saveNow() {
    if (!this._storage) return;
    clearTimeout(this._saveTimer);
    this._saveTimer = null;
    const state = { v: 1, key: this.key, url: this.url, meta: this.meta, active: this.active,
                    lastEventId: this.lastEventId, records: [] };
    for (let keep = this._persisted; ; keep = Math.floor(keep / 2)) {
      state.records = keep ? this.records.slice(-keep) : [];
      try {
        this._storage.setItem(this._storageKey, JSON.stringify(state));
        return;
      } catch (error) {
        if (!keep) return;  // not even the cursor fits: nothing to keep
      }
    }
  }
}
