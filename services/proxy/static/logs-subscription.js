// A subscription to log channels, shared by the tabs of an origin and kept across reloads.
//
//   import { LogsSubscription } from '/static/logs-subscription.js';
//   const sub = new LogsSubscription({
//     streamUrl: (channels) => `/api/logs/stream?channels=${encodeURIComponent(channels.join(','))}`,
//     historyUrl: (channels, before, limit) => `/api/logs/history?channels=` +
//       `${encodeURIComponent(channels.join(','))}&before=${before}&limit=${limit}`,
//     channels: ['logs:etl:workspace123:wf1'],   // what THIS tab watches
//     key: 'filters:',                           // tabs with the same key share one connection
//     historyLimit: 100,                         // records shown first for a newly watched channel
//   });
//   render(sub.records);                            // rows kept from before a reload, once
//   sub.on('records', (fresh) => append(fresh));    // then new ones, ascending, this tab's only
//   sub.on('reset', ({ records }) => render(records));  // the whole list changed (see below)
//   sub.on('older', (page) => prepend(page));       // sub.loadOlder(): the page before the oldest
//   sub.on('state', ({ state, detail, role }) => ...);
//   sub.start();  sub.setChannels([...]);  ...  sub.stop();   // stop() = the user disconnected
//
// One tab per key is the leader (a Web Lock, `navigator.locks`): it alone holds the stream (a
// LogsSseClient) and relays what it reads over a BroadcastChannel; the other tabs follow. This
// keeps one connection per key however many tabs are open (browsers allow six per origin over
// HTTP/1.1).
//
// With `streamUrl` (the union mode) the leader streams the UNION of the channels all tabs watch.
// Each tab tells the leader its channels ('hello', again on every 'ping' and when they change,
// 'bye' when it goes); the leader forgets a tab that missed FORGET_AFTER_ROUNDS pings. When the
// union changes the leader stops its client, takes its exact cursor C, opens streamUrl(union)
// with Last-Event-ID C, and once connected says 'sync' {union, cursor}: every record of the
// union after that cursor follows on the relay. A tab that has a channel new in the union fetches
// that channel's history up to the cursor (historyUrl(channels, cursor + 1, historyLimit)) before
// it takes more live records, so nothing is missed or shown twice; a tab whose position lags the
// cursor (a reload, a restart) fills the lag the same way. Records are relayed with their
// channel and each tab keeps those of its own channels. When the leader goes, a follower takes
// over with the union and tabs it last heard, from its own cursor (every tab sees the union in
// one seq order, so any tab's cursor is a valid resume point). A union the gateway refuses as
// the tabs' fault (400, 403, 404: too many channels, a bad or forbidden channel) is answered
// with 'refused' to the tabs that changed since the last union that connected: they drop the
// new channels and get the 'error'; the others go on (the leader reopens the previous union).
//
// Without `streamUrl` (the `url` option: one fixed stream) tabs share only when they have the
// same key (default: the url), relaying every record, as before the union mode existed.
//
// Events: 'records' (fresh, ascending, newer than everything already in sub.records), 'reset'
// {records, reason} (sub.records changed other than by appending: a new channel's history
// interleaves with the rows shown, or a channel was removed: render sub.records again),
// 'older' (records prepended by loadOlder), 'state' {state, detail, role}, 'error' {status, code,
// message, details}, 'notice' {kind: 'gap' | 'overflow' | 'history', ...}, 'connected',
// 'channels' (this tab's channels changed: setChannels, or a refusal took some back).
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
// Records of a newly watched channel shown first (the union mode).
export const DEFAULT_HISTORY_LIMIT = 100;
// The union leader pings the tabs this often; each answers with its channels ('hello').
export const ANNOUNCE_EVERY_MS = 2000;
// A tab that answered none of this many pings in a row has gone (closed without 'bye').
// Counted in pings, not in time: a throttled background leader pings late, not its tabs.
export const FORGET_AFTER_ROUNDS = 3;
export const Role = Object.freeze({ LEADER: 'leader', FOLLOWER: 'follower', SOLO: 'solo' });
// Saves are coalesced to one write per this many ms (and one when the page is hidden).
const SAVE_EVERY_MS = 300;
// A follower nobody has answered yet asks again, at most this often.
const HELLO_EVERY_MS = 1000;
// The union leader waits this long after a change, so that several tabs' changes open once.
const RECONCILE_DELAY_MS = 30;
// A history page when filling a lag; a lag longer than maxRecords is cut (a 'gap' notice).
const FILL_PAGE = 1000;
// Tries of a history request that failed for a reason that may pass (network, 5xx, 429).
const HISTORY_TRIES = 3;
// Refusals of a union that are the fault of a channel in it (not of the user or the server).
const CHANNEL_REFUSALS = [400, 403, 404, 422];
const LOCK_PREFIX = 'logstream:leader:';
const RELAY_PREFIX = 'logstream:relay:';
const UNION_LOCK_PREFIX = 'logstream:union-leader:';
const UNION_RELAY_PREFIX = 'logstream:union-relay:';

const seqOf = (id) => (/^\d+$/.test(String(id ?? '')) ? Number(id) : -1);
const bySeq = (a, b) => seqOf(a.seq) - seqOf(b.seq);
const uniqueChannels = (list) => [...new Set((list || []).map((c) => String(c).trim()).filter(Boolean))];
const sameChannels = (a, b) => a.length === b.length && a.every((c) => b.includes(c));

/** Whether a channel (or pattern) `pattern` covers `channel`: equal, or `*` for one segment. */
export function channelMatches(pattern, channel) {
  if (pattern === channel) return true;
  if (!pattern.includes('*') || typeof channel !== 'string') return false;
  const want = pattern.split(':');
  const have = channel.split(':');
  return want.length === have.length && want.every((segment, i) => segment === '*' || segment === have[i]);
}

function defaultStorage() {
  try {
    return globalThis.sessionStorage || null;
  } catch (error) {  // storage disabled (a sandboxed frame, some privacy settings)
    return null;
  }
}

/** What a tab saved before its last reload (or null): {key, url, meta, active, resume (stopped by
 *  a 401: resume once signed in again), lastEventId, records}
 *  (the union mode adds mode: 'union', channels, positions, floors). */
export function loadSavedSubscription(storage = defaultStorage(),
                                      storageKey = DEFAULT_STORAGE_KEY) {
  try {
    const saved = JSON.parse(storage?.getItem(storageKey) || 'null');
    return saved && saved.v === 1 && Array.isArray(saved.records) ? saved : null;
  } catch (error) {
    return null;
  }
}

/** A history request the server answered with an error (or not at all: status 0). */
class HistoryRefused extends Error {
  constructor(status, body) {
    super(body.message || `HTTP ${status}`);
    this.status = status;
    this.code = body.error || '';
    this.details = Array.isArray(body.details) ? body.details : [];
  }

  get transient() {
    return this.status === 0 || this.status >= 500 || [408, 429].includes(this.status);
  }

  toJSON() {
    return { status: this.status, code: this.code, message: this.message, details: this.details };
  }
}

export class LogsSubscription extends Emitter {
  /**
   * @param {object} options  those of LogsSseClient (headers, credentials, renewCredential,
   *   backoff, stallMs, fetch), plus: maxRecords, persistedRecords, storage (default
   *   sessionStorage; null: none), storageKey, meta (anything JSON the page wants back after a
   *   reload), share (default true); then EITHER the union mode: streamUrl(channels),
   *   historyUrl(channels, before, limit), channels, key (tabs with the same key share; default
   *   ''), historyLimit (default 100); OR one fixed stream: url, history, key (default the url).
   */
  constructor(options) {
    super('logs subscription');
    this.options = options;
    this._union = typeof options.streamUrl === 'function';
    this.url = this._union ? null : options.url;
    this.key = this._union ? `union:${options.key || ''}` : options.key || options.url;
    this.channels = this._union ? uniqueChannels(options.channels) : null;
    this.historyLimit = options.historyLimit ?? DEFAULT_HISTORY_LIMIT;
    this.meta = options.meta ?? null;
    this.maxRecords = options.maxRecords || DEFAULT_MAX_RECORDS;
    this._persisted = Math.min(options.persistedRecords || DEFAULT_PERSISTED_RECORDS,
                               this.maxRecords);
    this._storage = options.storage === undefined ? defaultStorage() : options.storage;
    this._storageKey = options.storageKey || DEFAULT_STORAGE_KEY;
    this._env = options.environment || globalThis;
    this._fetch = options.fetch || ((...args) => globalThis.fetch(...args));
    this._share = options.share !== false && Boolean(this._env.navigator?.locks)
      && typeof this._env.BroadcastChannel === 'function';
    this._tab = Math.random().toString(36).slice(2, 10);
    this._lockName = (this._union ? UNION_LOCK_PREFIX : LOCK_PREFIX) + this.key;
    this.records = [];
    this.lastEventId = null;
    this.state = ConnectionState.DISCONNECTED;
    this.detail = '';
    this.role = null;
    this.error = null;
    this.active = false;
    this._floor = -1;  // the seq of the last record this tab let go of (a follower's hole)
    // The union mode: channels of this tab complete up to the union position (_lastSeq), those
    // complete up to an older position (not in the union for a while, or restored), and per
    // channel the seq from which its records are all here (for loadOlder; 0: all of them).
    this._live = new Set();
    this._frozen = new Map();
    this._floors = new Map();
    this._trimmedTo = -1;  // the highest seq trimmed off the front of sub.records
    this._rev = 0;
    this._queue = Promise.resolve();
    const saved = this._storage ? loadSavedSubscription(this._storage, this._storageKey) : null;
    this.restored = saved && saved.key === this.key
      && (saved.mode === 'union') === this._union ? saved : null;
    if (this.restored && this._union) {
      this.records = this.restored.records.filter((r) => this._mine(r.channel))
        .slice(-this.maxRecords);
      this.lastEventId = this.restored.lastEventId || null;
      for (const channel of this.channels) {
        const position = this.restored.positions?.[channel];
        if (Number.isInteger(position)) this._frozen.set(channel, position);
        const floor = this.restored.floors?.[channel];
        if (Number.isInteger(floor)) this._floors.set(channel, floor);
      }
    } else if (this.restored) {
      this.records = this.restored.records.slice(-this.maxRecords);
      this.lastEventId = this.restored.lastEventId || null;
    }
    this._lastSeq = Math.max(seqOf(this.lastEventId), ...this.records.map((r) => seqOf(r.seq)));
    this._onPageHide = () => {
      if (this._union && this.active) this._post({ t: 'bye', from: this._tab });
      this._saveNow();
    };
    this._onPageShow = (event) => {
      if (event.persisted && this.active && this.role === Role.FOLLOWER) this._announce(true);
    };
  }

  start() {
    if (this.active) return;
    this.active = true;
    this._resumeOnReload = false;
    this._run = (this._run || 0) + 1;
    this.error = null;
    this._env.addEventListener?.('pagehide', this._onPageHide);
    this._save();
    if (this._union) {
      this._startUnion();
      return;
    }
    if (!this._share) {
      this._lead(Role.SOLO);
      return;
    }
    this._relay = new this._env.BroadcastChannel(RELAY_PREFIX + this.key);
    this._relay.onmessage = (event) => this._onMessage(event.data);
    this._requestLock();
  }

  _requestLock() {
    const run = this._run;
    this._env.navigator.locks.request(this._lockName, { ifAvailable: true }, (lock) => {
      if (!this._current(run)) return undefined;
      if (lock) return this._holdLock();
      if (this._union) this._followUnion(); else this._follow();
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
    this._resumeOnReload = false;
    this.dispose();
    this._setState(ConnectionState.DISCONNECTED, '');
    this._saveNow();
  }

  /** Stop this tab's part (a page going away, a component unmounting); the saved state stays. */
  dispose() {
    if (!this.active) return;
    if (this._union) this._post({ t: 'bye', from: this._tab });
    this.active = false;
    this._env.removeEventListener?.('pagehide', this._onPageHide);
    this._env.removeEventListener?.('pageshow', this._onPageShow);
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
    clearInterval(this._ticker);
    this._ticker = null;
    clearTimeout(this._reconcileTimer);
    this._reconcileTimer = null;
    if (this._union) {
      // What was live is complete up to here: a restart fills from this position.
      for (const channel of this._live) this._frozen.set(channel, this._lastSeq);
      this._live.clear();
      this._leaderState = null;
    }
    this.role = null;
  }

  /** Reconnect at once from the cursor (e.g. the user signed in again). */
  reconnect() {
    if (this._client) this._client.reconnect();
    else if (this._union && this.active && this.role === Role.FOLLOWER) {
      this._post({ t: 'reconnect', from: this._tab });
    }
  }

  /** Forget the records (the cursor stays: cleared rows do not come back). */
  clear() {
    this.records = [];
    if (this._union) {
      for (const channel of this.channels) {
        if (this._floors.has(channel)) this._floors.set(channel, this._lastSeq + 1);
      }
    }
    this._saveNow();
  }

  // -- leading ---------------------------------------------------------------------------------

  _holdLock() {
    if (this._union) this._leadUnion(Role.LEADER); else this._lead(Role.LEADER);
    return new Promise((resolve) => { this._releaseLock = resolve; });
  }

  _queueForLock(run) {
    this._lockQueue = new AbortController();
    this._env.navigator.locks.request(this._lockName, { signal: this._lockQueue.signal },
      () => {
        if (!this._current(run)) return undefined;
        this._lockQueue = null;
        return this._holdLock();
      }).catch((error) => { if (error.name !== 'AbortError') this._lockFailed(error, run); });
  }

  _lockFailed(error, run) {
    console.warn('logs subscription: no Web Lock, streaming without sharing', error);
    if (!this._current(run) || this._client) return;
    if (this._union) {
      if (this.role !== Role.LEADER) this._leadUnion(Role.SOLO);
    } else {
      this._lead(Role.SOLO);
    }
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

  // -- the union mode: this tab's channels --------------------------------------------------------

  /** Watch these channels instead (the union mode). Removed channels' rows go at once ('reset');
   *  added ones show their history, then live records, once the leader has them in the union. */
  setChannels(channels) {
    if (!this._union) throw new Error('setChannels needs the streamUrl option');
    const next = uniqueChannels(channels);
    if (sameChannels(next, this.channels)) return;
    this.error = null;
    this._refused = false;
    this._changeChannels(next);
    if (this.active) this._channelsChanged();
  }

  /** The page of this tab's channels before the records it has (historyUrl), prepended to
   *  sub.records and emitted as 'older'. -> {records, done} (done: nothing older is left). */
  loadOlder(limit = DEFAULT_HISTORY_LIMIT) {
    if (!this._union) return Promise.reject(new Error('loadOlder needs the historyUrl option'));
    // After what the relay has already delivered (a new channel's first page, say).
    const queued = this._queue;
    const next = (this._older || Promise.resolve()).then(() => queued)
      .then(() => this._loadOlder(limit));
    this._older = next.catch(() => {});
    return next;
  }

  async _loadOlder(limit) {
    const floors = new Map();
    for (const channel of this.channels) {
      const floor = this._floorOf(channel);
      if (floor !== null && floor > 1) floors.set(channel, floor);
    }
    if (!floors.size) return { records: [], done: true };
    const channels = [...floors.keys()];
    const before = Math.max(...floors.values());
    const page = await this._history(channels, before, limit);
    const reached = page.next_before ?? 0;
    for (const channel of channels) {
      // The page holds every record of these channels in [reached, before).
      if (this.channels.includes(channel)) {
        this._floors.set(channel, Math.min(this._floorOf(channel) ?? before, reached));
      }
    }
    const have = new Set(this.records.map((r) => seqOf(r.seq)));
    const fresh = page.records.filter((r) => !have.has(seqOf(r.seq)) && this._mine(r.channel))
      .sort(bySeq);
    if (fresh.length) {
      const first = this.records.length ? seqOf(this.records[0].seq) : Infinity;
      if (seqOf(fresh[fresh.length - 1].seq) < first) {
        this.records.unshift(...fresh);
        this._emit('older', fresh);
      } else {
        this.records = [...this.records, ...fresh].sort(bySeq);
        this._emit('reset', { records: this.records, reason: 'older' });
      }
      this._save();
    }
    const done = this.channels.every((c) => { const f = this._floorOf(c); return f !== null && f <= 1; });
    return { records: fresh, done };
  }

  _floorOf(channel) {
    if (!this._floors.has(channel)) return null;
    return Math.max(this._floors.get(channel), this._trimmedTo + 1);
  }

  /** Whether this tab keeps a record of `channel` (one of its channels covers it). */
  _mine(channel) {
    return this.channels.some((pattern) => channelMatches(pattern, channel));
  }

  _changeChannels(next) {
    const removed = this.channels.filter((c) => !next.includes(c));
    this.channels = next;
    this._rev++;
    for (const channel of removed) {
      this._live.delete(channel);
      this._frozen.delete(channel);
      this._floors.delete(channel);
    }
    const kept = this.records.filter((r) => this._mine(r.channel));
    if (kept.length !== this.records.length) {
      this.records = kept;
      this._emit('reset', { records: this.records, reason: 'channels' });
    }
    this._emit('channels', this.channels.slice());
    this._save();
  }

  /** Tell the leader (or be it) about this tab's new channels. */
  _channelsChanged() {
    if (this.role === Role.LEADER || this.role === Role.SOLO) {
      this._tabs.set(this._tab, { channels: this.channels, round: this._round, rev: this._rev });
      this._scheduleReconcile();
    } else if (this.role === Role.FOLLOWER) {
      this._announce(true);
    }
    this._renderState();
  }

  // -- the union mode: every tab ------------------------------------------------------------------

  _startUnion() {
    this._leaderState = null;
    this._refused = false;
    this._synced = false;
    this._heard = this._lastSeq;
    this._heardTabs = {};
    this._queue = Promise.resolve();
    this._env.addEventListener?.('pageshow', this._onPageShow);
    if (!this._share) {
      this._leadUnion(Role.SOLO);
      return;
    }
    this._relay = new this._env.BroadcastChannel(UNION_RELAY_PREFIX + this.key);
    this._relay.onmessage = (event) => this._onUnionMessage(event.data);
    this._requestLock();
  }

  _followUnion() {
    this.role = Role.FOLLOWER;
    this._renderState();
    this._announce(true);
  }

  /** Whether this tab waits for a sync point: some channel of it is not streaming yet. */
  _needsSync() {
    return !this._synced || this.channels.some((c) => !this._live.has(c));
  }

  _announce(force = false) {
    if (!force && Date.now() - (this._helloAt || 0) < HELLO_EVERY_MS / 4) return;
    this._helloAt = Date.now();
    this._post({ t: 'hello', from: this._tab, channels: this.channels, rev: this._rev,
                 need: this._needsSync() });
  }

  _onUnionMessage(message) {
    if (!this.active || !message || typeof message !== 'object' || message.from === this._tab) return;
    if (this.role === Role.LEADER || this.role === Role.SOLO) {
      this._leaderHears(message);
      return;
    }
    if (this.role !== Role.FOLLOWER) return;
    switch (message.t) {
      case 'ping':
        this._announce(true);
        return;
      case 'leader':
        this._leaderState = null;
        this._announce(true);
        return;
      case 'bye':
        delete this._heardTabs[message.from];
        return;
      case 'hello':
      case 'reconnect':
        return;
      default:
        this._hear(message);
        this._enqueue(message);
    }
  }

  /** What a future leader needs from the relayed messages: the union's tabs and position. */
  _hear(message) {
    if (message.cursor !== undefined) this._heard = Math.max(this._heard, seqOf(message.cursor));
    for (const record of message.records || []) this._heard = Math.max(this._heard, seqOf(record.seq));
    if (message.t === 'sync') this._heardTabs = { ...message.tabs };
  }

  /** Apply the leader's messages one at a time, in order (a sync may wait for history). */
  _enqueue(message) {
    const run = this._run;
    this._queue = this._queue.then(() => (this._current(run) ? this._apply(message, run) : null))
      .catch((error) => console.error('logs subscription', error));
  }

  async _apply(message, run) {
    switch (message.t) {
      case 'sync':
        await this._applySync(message, run);
        break;
      case 'records':
      case 'cursor':
        this._take(message.records || [], message.cursor);
        break;
      case 'state':
        this._leaderState = { state: message.state, detail: message.detail };
        this._renderState();
        break;
      case 'connected':
        if (!this._refused) this._emit('connected', message.info);
        break;
      case 'notice':
        this._emit('notice', message.notice);
        break;
      case 'refused':
        if (message.tabs.includes(this._tab)) this._applyRefusal(message);
        break;
      case 'error':
        this._fail(message.error);
        break;
      default:
        break;
    }
  }

  /** Live records of the union: keep this tab's; the position moves past all of them. */
  _take(records, cursor) {
    const fresh = [];
    let top = this._lastSeq;
    const live = [...this._live];
    for (const record of records) {
      const seq = seqOf(record.seq);
      if (seq >= 0 && seq <= this._lastSeq) continue;
      if (seq > top) top = seq;
      if (live.some((pattern) => channelMatches(pattern, record.channel))) {
        fresh.push(record);
      }
    }
    top = Math.max(top, seqOf(cursor));
    if (top > this._lastSeq) {
      this._lastSeq = top;
      this.lastEventId = String(top);
    }
    if (fresh.length) {
      this.records.push(...fresh);
      this._trim();
      this._emit('records', fresh);
    }
    this._save();
  }

  /** The union is `union` from `cursor` on: fill what this tab lacks up to there, then go live. */
  async _applySync(message, run) {
    const union = message.union || [];
    if (message.state) this._leaderState = message.state;
    const position = this._lastSeq;
    const target = Math.max(seqOf(message.cursor), position);
    for (const channel of [...this._live]) {
      if (!union.includes(channel)) {
        this._live.delete(channel);
        this._frozen.set(channel, position);
      }
    }
    if (target < 0) {  // no stream position yet (nothing streams): nothing to fill from
      this._synced = true;
      this._renderState();
      return;
    }
    const mine = this.channels.filter((c) => union.includes(c));
    const initial = [];
    const lags = new Map();  // from -> channels complete up to `from`
    const lag = (from, channel) => lags.set(from, [...(lags.get(from) || []), channel]);
    for (const channel of mine) {
      if (this._live.has(channel)) {
        if (target > position) lag(position, channel);
      } else if (this._frozen.has(channel)) {
        if (target > this._frozen.get(channel)) lag(this._frozen.get(channel), channel);
      } else {
        initial.push(channel);
      }
    }
    const pages = await Promise.all([
      ...initial.map((channel) => this._fillInitial(channel, target)),
      ...[...lags].map(([from, channels]) => this._fillLag(channels, from, target)),
    ]);
    if (!this._current(run)) return;
    for (const channel of mine) {
      if (!this.channels.includes(channel)) continue;  // removed meanwhile
      this._live.add(channel);
      this._frozen.delete(channel);
    }
    for (const { channel, floor } of pages) {
      if (channel && this.channels.includes(channel)) this._floors.set(channel, floor);
    }
    if (target > this._lastSeq) {
      this._lastSeq = target;
      this.lastEventId = String(target);
    }
    this._synced = true;
    this._merge(pages.flatMap((page) => page.records), 'channels');
    this._renderState();
    this._save();
  }

  async _fillInitial(channel, target) {
    if (this.historyLimit <= 0) return { channel, floor: target + 1, records: [] };
    try {
      const page = await this._history([channel], target + 1, this.historyLimit);
      return { channel, floor: page.next_before ?? 0,
               records: page.records.filter((r) => seqOf(r.seq) <= target) };
    } catch (error) {
      this._emit('notice', { kind: 'history', channels: [channel], ...this._errorOf(error) });
      return { channel, floor: target + 1, records: [] };
    }
  }

  /** The records of `channels` in (from, target], paging back; cut at maxRecords. */
  async _fillLag(channels, from, target) {
    const records = [];
    let before = target + 1;
    try {
      for (;;) {
        const page = await this._history(channels, before, FILL_PAGE);
        records.push(...page.records.filter((r) => seqOf(r.seq) > from && seqOf(r.seq) <= target));
        const reached = page.next_before;
        if (reached === null || reached <= from + 1 || page.records.some((r) => seqOf(r.seq) <= from)) {
          break;
        }
        if (records.length >= this.maxRecords) {
          this._emit('notice', { kind: 'gap', from: from + 1, to: reached - 1, channels });
          break;
        }
        before = reached;
      }
    } catch (error) {
      const lowest = records.length ? Math.min(...records.map((r) => seqOf(r.seq))) : target + 1;
      this._emit('notice', { kind: 'gap', from: from + 1, to: lowest - 1, channels,
                             ...this._errorOf(error) });
    }
    return { records };
  }

  _errorOf(error) {
    return error instanceof HistoryRefused ? error.toJSON()
      : { status: 0, code: 'network', message: String(error && error.message || error) };
  }

  /** GET historyUrl(channels, before, limit) -> {records, next_before}; retries what may pass. */
  async _history(channels, before, limit) {
    let renewed = false;
    for (let attempt = 1; ; attempt++) {
      let refusal;
      try {
        return await this._historyOnce(channels, before, limit);
      } catch (error) {
        refusal = error instanceof HistoryRefused ? error : new HistoryRefused(0, {
          error: 'network', message: String(error && error.message || error) });
      }
      if (refusal.status === 401 && !renewed && this.options.renewCredential) {
        renewed = true;
        let ok = false;
        try { ok = await this.options.renewCredential(refusal); } catch (error) { ok = false; }
        if (ok) continue;
      }
      if (!refusal.transient || attempt >= HISTORY_TRIES) throw refusal;
      await new Promise((resolve) => setTimeout(resolve, 250 * 2 ** attempt));
    }
  }

  async _historyOnce(channels, before, limit) {
    const url = new URL(this.options.historyUrl(channels, before, limit), this._env.location?.href);
    const headers = typeof this.options.headers === 'function' ? await this.options.headers()
      : this.options.headers;
    const response = await this._fetch(url.href, {
      headers: { Accept: 'application/json', ...(headers || {}) },
      credentials: this.options.credentials || 'same-origin', cache: 'no-store' });
    let body = null;
    try { body = await response.json(); } catch (error) { body = null; }
    if (!response.ok || !body || !Array.isArray(body.records)) {
      throw new HistoryRefused(response.ok ? 502 : response.status,
                               body && typeof body === 'object' ? body : {});
    }
    const nextBefore = Number.isInteger(body.next_before) ? body.next_before : null;
    return { records: body.records, next_before: nextBefore };
  }

  /** Put records (history) where they belong in sub.records: appended ('records') when they
   *  are all newer than the rows shown, otherwise in place ('reset'). */
  _merge(records, reason) {
    const have = new Set(this.records.map((r) => seqOf(r.seq)));
    const fresh = [];
    for (const record of records.slice().sort(bySeq)) {
      const seq = seqOf(record.seq);
      if (have.has(seq) || !this._mine(record.channel)) continue;
      have.add(seq);
      fresh.push(record);
    }
    if (!fresh.length) return;
    const last = this.records.length ? seqOf(this.records[this.records.length - 1].seq) : -1;
    if (seqOf(fresh[0].seq) > last) {
      this.records.push(...fresh);
      this._trim();
      this._emit('records', fresh);
    } else {
      this.records = [...this.records, ...fresh].sort(bySeq);
      this._trim();
      this._emit('reset', { records: this.records, reason });
    }
  }

  _trim() {
    const excess = this.records.length - this.maxRecords;
    if (excess <= 0) return;
    this._trimmedTo = Math.max(this._trimmedTo, seqOf(this.records[excess - 1].seq));
    this.records.splice(0, excess);
  }

  _applyRefusal(message) {
    const keep = this.channels.filter((c) => (message.keep || []).includes(c));
    if (!keep.length) {
      this._fail(message.error);
      return;
    }
    this._changeChannels(keep);
    this._refused = true;
    this.error = message.error;
    this._channelsChanged();
    this._emit('error', message.error);
  }

  /** The state this tab shows: the leader's stream, or CONNECTING while its channels join. */
  _renderState() {
    if (!this.active) return;
    const leader = this._leaderState;
    let state = leader ? leader.state : ConnectionState.CONNECTING;
    let detail = leader ? leader.detail : (this.role === Role.FOLLOWER
      ? 'joining the stream of another tab' : '');
    if (state === ConnectionState.CONNECTED && this.channels.some((c) => !this._live.has(c))) {
      state = ConnectionState.CONNECTING;
      detail = 'adding channels';
    }
    if (state !== this.state || detail !== this.detail || this.role !== this._shownRole) {
      this._shownRole = this.role;
      this._setState(state, detail);
    }
  }

  // -- the union mode: the leader -------------------------------------------------------------

  _leadUnion(role) {
    this.role = role;
    this._round = 0;
    this._tabs = new Map();
    for (const [tab, channels] of Object.entries(this._heardTabs || {})) {
      if (tab !== this._tab) this._tabs.set(tab, { channels: uniqueChannels(channels), round: 0, rev: -1 });
    }
    this._tabs.set(this._tab, { channels: this.channels, round: 0, rev: this._rev });
    this._opened = null;  // the union the client streams
    this._streamState = null;
    this._good = null;    // the last union that connected
    const from = Math.max(this._heard ?? -1, this._lastSeq);
    this._streamCursor = from >= 0 ? String(from) : null;
    this._post({ t: 'leader', from: this._tab });
    if (role === Role.LEADER) this._ticker = setInterval(() => this._tick(), ANNOUNCE_EVERY_MS);
    this._renderState();
    this._reconcile();
  }

  /** Ping the tabs; forget those that answered none of the last pings. */
  _tick() {
    this._round++;
    let changed = false;
    for (const [tab, entry] of this._tabs) {
      if (tab === this._tab) entry.round = this._round;
      else if (this._round - entry.round > FORGET_AFTER_ROUNDS) changed = this._tabs.delete(tab);
    }
    this._post({ t: 'ping', from: this._tab, round: this._round });
    if (changed) this._scheduleReconcile();
  }

  _leaderHears(message) {
    if (message.t === 'hello') {
      const channels = uniqueChannels(message.channels);
      const entry = this._tabs.get(message.from);
      if (entry && entry.blocked !== undefined && message.rev <= entry.blocked) {
        entry.round = this._round;  // an answer sent before it heard of its refusal
        return;
      }
      const changed = !entry || !sameChannels(entry.channels, channels);
      this._tabs.set(message.from, { channels, round: this._round, rev: message.rev });
      if (changed || message.need) this._scheduleReconcile();
    } else if (message.t === 'bye') {
      if (this._tabs.delete(message.from)) this._scheduleReconcile();
    } else if (message.t === 'reconnect') {
      this.reconnect();
    }
  }

  _scheduleReconcile() {
    if (this._reconcileTimer) return;
    const run = this._run;
    this._reconcileTimer = setTimeout(() => {
      this._reconcileTimer = null;
      if (this._current(run) && this._tabs) this._reconcile();
    }, RECONCILE_DELAY_MS);
  }

  /** A sync point: the union, where it stands, the tabs in it and the stream's state (for tabs
   *  that joined after the last state change). */
  _sync(union, cursor) {
    this._send({ t: 'sync', from: this._tab, union, cursor, tabs: this._tabsObject(),
                 state: this._streamState || null });
  }

  _tabsObject() {
    return Object.fromEntries([...this._tabs].map(([tab, entry]) => [tab, entry.channels]));
  }

  /** Open the union of the tabs' channels if it changed; else give the tabs a sync point. */
  _reconcile() {
    const union = uniqueChannels([...this._tabs.values()].flatMap((entry) => entry.channels)).sort();
    if (this._opened && sameChannels(union, this._opened)) {
      const cursor = this._client ? this._client.lastEventId : this._streamCursor;
      // A client that has not connected yet says where it starts when it does.
      if (!this._client || this._client.state === ConnectionState.CONNECTED) {
        this._sync(union, cursor);
      }
      return;
    }
    const old = this._client;
    this._client = null;
    if (old) {
      old.stop();
      this._streamCursor = old.lastEventId || this._streamCursor;
    }
    this._opened = union;
    if (!union.length) {
      this._streamState = { state: ConnectionState.CONNECTED, detail: 'no channels' };
      this._sync(union, this._streamCursor);
      return;
    }
    this._openUnion(union);
  }

  _openUnion(union) {
    const client = new LogsSseClient({ ...this.options, url: this.options.streamUrl(union),
                                       history: null, lastEventId: this._streamCursor });
    this._client = client;
    const on = (type, handler) => client.on(type, (detail) => {
      if (this._client === client) handler(detail);
    });
    on('state', ({ state, detail }) => {
      this._streamState = { state, detail };
      this._send({ t: 'state', from: this._tab, state, detail });
    });
    on('records', (records) => {
      this._streamCursor = client.lastEventId;
      this._send({ t: 'records', from: this._tab, records, cursor: client.lastEventId });
    });
    on('connected', (info) => {
      this._streamCursor = client.lastEventId;
      this._good = union;
      this._sync(union, client.lastEventId);
      this._send({ t: 'connected', from: this._tab, info: { ...info, union } });
    });
    on('gap', (gap) => this._send({ t: 'notice', from: this._tab, notice: { kind: 'gap', ...gap } }));
    on('overflow', () => this._send({ t: 'notice', from: this._tab, notice: { kind: 'overflow' } }));
    on('error', (error) => this._unionRefused(client, error));
    client.start();
  }

  /** The gateway refused the union: the tabs that brought new channels since the last union
   *  that connected take them back (and get the error); the rest go on. Other refusals (401
   *  after a failed renewal, a refusal of a union that worked) end every tab, as one stream. */
  _unionRefused(client, error) {
    this._client = null;
    this._streamCursor = client.lastEventId || this._streamCursor;
    const good = this._good || [];
    const suspects = [...this._tabs].filter(([, entry]) =>
      entry.channels.some((c) => !good.includes(c))).map(([tab]) => tab);
    if (!CHANNEL_REFUSALS.includes(error.status) || !suspects.length) {
      this._send({ t: 'error', from: this._tab, error });
      return;
    }
    for (const tab of suspects) {
      const entry = this._tabs.get(tab);
      entry.blocked = entry.rev;
      entry.channels = entry.channels.filter((c) => good.includes(c));
    }
    this._opened = null;
    this._send({ t: 'refused', from: this._tab, tabs: suspects, keep: good, error });
    if (this.active && this._tabs) this._reconcile();
  }

  /** A message of the leader: to the other tabs, and applied here in the same order. */
  _send(message) {
    this._post(message);
    this._hear(message);
    this._enqueue(message);
  }

  // -- shared ----------------------------------------------------------------------------------

  _post(message) {
    if (!this._relay) return;
    if (!this._union && this.role !== Role.LEADER && message.t !== 'hello') return;
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
    // Stopped for want of a sign-in (401): once the user has signed in again (the product's
    // login page sends them back here), a reload of this view resumes from the cursor.
    this._resumeOnReload = Boolean(error && error.status === 401);
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
                    resume: Boolean(this._resumeOnReload), lastEventId: this.lastEventId,
                    records: [] };
    if (this._union) {
      state.mode = 'union';
      state.channels = this.channels;
      state.positions = {};
      for (const [channel, position] of this._frozen) state.positions[channel] = position;
      for (const channel of this._live) state.positions[channel] = this._lastSeq;
      state.floors = {};
      for (const channel of this._floors.keys()) state.floors[channel] = this._floorOf(channel);
    }
    for (let keep = this._persisted; ; keep = Math.floor(keep / 2)) {
      state.records = keep ? this.records.slice(-keep) : [];
      if (this._union && state.records.length < this.records.length) {
        // The rows before the first one saved come back with Load older.
        const first = state.records.length ? seqOf(state.records[0].seq) : this._lastSeq + 1;
        for (const channel of Object.keys(state.floors)) {
          state.floors[channel] = Math.max(state.floors[channel], first);
        }
      }
      try {
        this._storage.setItem(this._storageKey, JSON.stringify(state));
        return;
      } catch (error) {
        if (!keep) return;  // not even the cursor fits: nothing to keep
      }
    }
  }
}
