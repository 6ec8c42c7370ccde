// One resumable log stream, read with fetch: an ES module with no build step and no framework.
//
//   import { LogsSseClient } from '/static/logs-sse-client.js';
//   const client = new LogsSseClient({ url: '/api/dapadmin/l5-etl/sse/logs/stream?workspace_id=w&workflow_id=f',
//                                      history: { tail: 100 } });
//   client.on('records', (records) => ...);   // new records, in seq order, never twice
//   client.on('state', ({ state, detail }) => ...);
//   client.on('error', ({ status, code, message }) => ...);   // gave up (401/403/400...)
//   client.start();  ...  client.stop();
//
// Why fetch and not EventSource: EventSource hides the HTTP status and body of a refusal (a 403
// looks like a network blip and it retries for ever), cannot send headers, and has no backoff.
// Here a refusal is read and explained, `Last-Event-ID` is sent as a header on every resume,
// reconnects back off exponentially with jitter, and the network's online/offline events pause
// and resume the stream. The server's wire format is docs/reference/stream.md.
//
// Events: 'state' {state, detail}; 'connected' {connection_id, user_id, channels, cursor};
// 'records' [record...]; 'gap' {from, to}; 'overflow' {}; 'retry' {delayMs, reason};
// 'error' {status, code, message, details} when it gives up (the state is then DISCONNECTED).

import { SseParser } from './sse-parser.js';
import { Emitter } from './emitter.js';

export const ConnectionState = Object.freeze({
  CONNECTING: 'CONNECTING',
  CONNECTED: 'CONNECTED',
  RECONNECTING: 'RECONNECTING',
  DISCONNECTED: 'DISCONNECTED',
});

// The first retry comes after 0.5-1 s (a blip heals fast); each failure doubles it up to 30 s,
// so a long outage costs each tab one request every 15-30 s. A connection that stayed up 20 s
// was healthy: the next drop starts again from the first step.
export const DEFAULT_BACKOFF = Object.freeze({ initialMs: 1000, maxMs: 30000, factor: 2,
                                               healthyMs: 20000 });
// The gateway sends a heartbeat at least every 15 s: three missed mean the connection is dead
// even when TCP has not noticed yet (a sleeping laptop, a NAT that forgot the flow).
export const DEFAULT_STALL_MS = 45000;
// A refusal body is small JSON; a proxy's HTML error page is cut to this many characters.
const MAX_MESSAGE_CHARS = 500;
const SEQ = /^\d+$/;

/** The delay before reconnect number `attempt` (0-based): "equal jitter", half fixed. */
export function backoffDelay(attempt, backoff = DEFAULT_BACKOFF, random = Math.random) {
  const ceiling = Math.min(backoff.maxMs, backoff.initialMs * Math.pow(backoff.factor, attempt));
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

/** An HTTP answer that was not a stream: its status and the server's own words. */
export class StreamRefused extends Error {
  constructor(status, body, retryAfterMs = null) {
    super(body.message || `HTTP ${status}`);
    this.status = status;
    this.code = body.error || '';
    this.details = Array.isArray(body.details) ? body.details : [];
    this.retryAfterMs = retryAfterMs;
  }

  /** 4xx other than 401 (renewable), 408 and 429 (transient): asking again cannot help. */
  get final() {
    return this.status >= 400 && this.status < 500 && ![401, 408, 429].includes(this.status);
  }

  toJSON() {
    return { status: this.status, code: this.code, message: this.message, details: this.details };
  }
}

async function readRefusal(response) {
  const retryAfter = Number(response.headers.get('Retry-After'));
  const retryAfterMs = Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter * 1000 : null;
  let text = '';
  try { text = await response.text(); } catch (error) { /* the body is optional */ }
  let body;
  try { body = JSON.parse(text); } catch (error) { body = null; }
  if (!body || typeof body !== 'object') {
    const kind = response.ok ? `not an event stream (${response.headers.get('Content-Type')})`
      : (text.slice(0, MAX_MESSAGE_CHARS) || response.statusText || `HTTP ${response.status}`);
    body = { error: response.ok ? 'not_a_stream' : 'http_error', message: kind };
  }
  return new StreamRefused(response.ok ? 502 : response.status, body, retryAfterMs);
}

function toSeq(id) {
  return typeof id === 'string' && SEQ.test(id) ? Number(id) : null;
}

export class LogsSseClient extends Emitter {
  /**
   * @param {object} options
   * @param {string} options.url  the stream URL (a proxy route with its query, or the gateway's)
   * @param {string|null} [options.lastEventId]  resume after this id (from a previous session)
   * @param {object|null} [options.history]  query added only when there is no cursor: {tail: 100}
   * @param {object|function} [options.headers]  extra headers, or a (async) function giving them
   * @param {string} [options.credentials]  fetch's credentials mode ('same-origin': the cookie)
   * @param {function} [options.renewCredential]  async (refusal) => true when a retry may work;
   *        asked once on 401 or `auth-expired` (again only after a healthy connection)
   */
  constructor(options) {
    super('logs client');
    this._url = options.url;
    this._history = options.history || null;
    this._headers = options.headers || null;
    this._credentials = options.credentials || 'same-origin';
    this._renewCredential = options.renewCredential || null;
    this._backoff = { ...DEFAULT_BACKOFF, ...(options.backoff || {}) };
    this._stallMs = options.stallMs || DEFAULT_STALL_MS;
    this._env = options.environment || globalThis;
    this._fetch = options.fetch || ((...args) => globalThis.fetch(...args));
    this.state = ConnectionState.DISCONNECTED;
    this.detail = '';
    this.error = null;
    this.lastEventId = options.lastEventId || null;
    this._lastSeq = toSeq(this.lastEventId) ?? -1;
    this._running = false;
    this._generation = 0;
    this._connection = null;
    this._wake = null;
    this._onOnline = () => this._wakeUp();
    this._onOffline = () => this._abort('offline');
  }

  get running() { return this._running; }

  start() {
    if (this._running) return;
    this._running = true;
    this.error = null;
    this._attempt = 0;
    this._renewed = false;
    this._everConnected = false;
    this._env.addEventListener?.('online', this._onOnline);
    this._env.addEventListener?.('offline', this._onOffline);
    this._loop(++this._generation);
  }

  stop() {
    this._halt();
    this._setState(ConnectionState.DISCONNECTED, '');
  }

  /** Drop the connection and open a new one at once, from the cursor (e.g. a new identity). */
  reconnect() {
    if (!this._running) return this.start();
    this._attempt = 0;
    this._renewed = false;
    this._abort('restart');
    this._wakeUp();
  }

  _halt() {
    this._running = false;
    this._generation++;
    this._env.removeEventListener?.('online', this._onOnline);
    this._env.removeEventListener?.('offline', this._onOffline);
    this._abort('stop');
    this._wakeUp();
  }

  _abort(reason) {
    if (this._connection) this._connection.abort(reason);
  }

  _wakeUp() {
    if (this._wake) this._wake();
  }

  _setState(state, detail) {
    if (state === this.state && detail === this.detail) return;
    this.state = state;
    this.detail = detail;
    this._emit('state', { state, detail });
  }

  _offline() {
    return this._env.navigator?.onLine === false;
  }

  _wait(ms) {
    return new Promise((resolve) => {
      const done = () => { clearTimeout(timer); this._wake = null; resolve(); };
      const timer = ms === null ? null : setTimeout(done, ms);
      this._wake = done;
    });
  }

  async _loop(generation) {
    const live = () => this._running && generation === this._generation;
    while (live()) {
      const again = this._everConnected || this._attempt > 0;
      const waiting = again ? ConnectionState.RECONNECTING : ConnectionState.CONNECTING;
      if (this._offline()) {
        this._setState(waiting, 'offline: waiting for the network');
        await this._wait(null);
        continue;
      }
      this._setState(waiting, '');
      let outcome;
      try {
        outcome = await this._connectOnce();
      } catch (error) {
        outcome = { kind: 'network', error };
      }
      if (!live()) return;
      const next = await this._decide(outcome);
      if (!live()) return;
      if (next.fatal) return this._giveUp(next.fatal);
      if (next.delayMs > 0) {
        const seconds = Math.max(1, Math.round(next.delayMs / 1000));
        this._setState(ConnectionState.RECONNECTING, `${next.reason}; retrying in ${seconds} s`);
        this._emit('retry', { delayMs: next.delayMs, reason: next.reason });
        await this._wait(next.delayMs);
      }
    }
  }

  _requestUrl() {
    const url = new URL(this._url, this._env.location?.href);
    if (!this.lastEventId && this._history) {
      for (const [name, value] of Object.entries(this._history)) {
        if (value !== null && value !== undefined && value !== '') url.searchParams.set(name, value);
      }
    }
    return url.href;
  }

  async _connectOnce() {
    const controller = new AbortController();
    this._connection = controller;
    try {
      const extra = typeof this._headers === 'function' ? await this._headers() : this._headers;
      const headers = { Accept: 'text/event-stream', ...(extra || {}) };
      if (this.lastEventId) headers['Last-Event-ID'] = this.lastEventId;
      let response;
      try {
        response = await this._fetch(this._requestUrl(), {
          headers, credentials: this._credentials, cache: 'no-store', signal: controller.signal });
      } catch (error) {
        return { kind: controller.signal.aborted ? controller.signal.reason : 'network', error };
      }
      const type = response.headers.get('Content-Type') || '';
      if (!response.ok || !type.startsWith('text/event-stream') || !response.body) {
        return { kind: 'refused', refusal: await readRefusal(response) };
      }
      return await this._read(response, controller);
    } finally {
      if (this._connection === controller) this._connection = null;
    }
  }

  async _read(response, controller) {
    const parser = new SseParser();
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let stallTimer = null;
    const arm = () => {
      clearTimeout(stallTimer);
      stallTimer = setTimeout(() => controller.abort('stalled'), this._stallMs);
    };
    arm();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return { kind: 'ended', retryMs: parser.retryMs };
        arm();
        const end = this._handle(parser.push(value));
        if (end) return end;
      }
    } catch (error) {
      return { kind: controller.signal.aborted ? controller.signal.reason : 'network', error };
    } finally {
      clearTimeout(stallTimer);
      reader.cancel().catch(() => {});
    }
  }

  /** Deliver parsed events; returns an outcome when the server ended the stream with a reason. */
  _handle(events) {
    let records = [];
    const flush = () => {
      if (records.length) this._emit('records', records);
      records = [];
    };
    for (const event of events) {
      if (event.type === 'log') {
        const seq = toSeq(event.id);
        if (seq !== null && seq <= this._lastSeq) continue;  // an overlapping resume
        this._advance(event.id, seq);
        try { records.push(JSON.parse(event.data)); } catch (error) { /* not a record */ }
      } else if (event.type === 'connected') {
        this._advance(event.id, toSeq(event.id));
        this._connectedAt = Date.now();
        this._everConnected = true;
        this._setState(ConnectionState.CONNECTED, '');
        this._emit('connected', { ...parseObject(event.data), cursor: this.lastEventId });
      } else if (event.type === 'gap') {
        flush();
        this._emit('gap', parseObject(event.data));
      } else if (event.type === 'overflow' || event.type === 'auth-expired') {
        flush();
        return { kind: event.type, message: parseObject(event.data).reason || '' };
      }
    }
    flush();
    return null;
  }

  _advance(id, seq) {
    if (!id) return;
    if (seq !== null && seq < this._lastSeq) return;
    this.lastEventId = id;
    if (seq !== null) this._lastSeq = seq;
  }

  async _decide(outcome) {
    const healthy = this._connectedAt && Date.now() - this._connectedAt >= this._backoff.healthyMs;
    if (healthy) {
      this._attempt = 0;
      this._renewed = false;
    }
    this._connectedAt = 0;
    const later = (reason, floorMs = 0) => ({
      reason, delayMs: Math.max(floorMs, backoffDelay(this._attempt++, this._backoff)) });
    switch (outcome.kind) {
      case 'restart':
      case 'offline':
        return { delayMs: 0 };
      case 'overflow':
        this._emit('overflow', {});
        return this._attempt === 0 ? (this._attempt++, { delayMs: 0 }) : later('fell behind');
      case 'auth-expired':
        return this._renew(new StreamRefused(401, {
          error: 'auth_expired', message: outcome.message || 'the session expired' }));
      case 'refused':
        if (outcome.refusal.status === 401) return this._renew(outcome.refusal);
        if (outcome.refusal.final) return { fatal: outcome.refusal };
        return later(`HTTP ${outcome.refusal.status}: ${outcome.refusal.message}`,
                     outcome.refusal.retryAfterMs || 0);
      case 'ended':
        return later('the server closed the stream', outcome.retryMs || 0);
      case 'stalled':
        return later('no heartbeat from the server');
      default:
        return later('the connection failed');
    }
  }

  async _renew(refusal) {
    if (!this._renewCredential || this._renewed) return { fatal: refusal };
    this._renewed = true;
    this._setState(ConnectionState.RECONNECTING, 'renewing the session');
    let renewed = false;
    try { renewed = await this._renewCredential(refusal); } catch (error) { renewed = false; }
    return renewed ? { delayMs: 0 } : { fatal: refusal };
  }

  _giveUp(refusal) {
    this._halt();
    this.error = refusal.toJSON();
    this._setState(ConnectionState.DISCONNECTED, `HTTP ${refusal.status}`);
    this._emit('error', this.error);
  }
}

function parseObject(text) {
  try {
    const value = JSON.parse(text);
    return value && typeof value === 'object' ? value : {};
  } catch (error) {
    return {};
  }
}
