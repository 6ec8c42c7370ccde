// The Logs page's sidebar: the active channels under a prefix (logs:<service>:<workspace>), from
// GET /api/logs/channels on the page's own origin, most recently active first, refreshed every
// few seconds while the page is visible. Clicking an item asks the page to watch that channel.
//
// Each item is a `data-testid="channel-item"` button with `data-channel`; a refusal (401, 403,
// 400) is shown in `data-testid="channel-list-error"` with the server's own message.

import { formatTime, levelOf } from './log-view.js';

export const REFRESH_MS = 5000;
const LIMIT = 100;
const TYPING_PAUSE_MS = 250;

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

/** "12 s ago", "5 min ago", "3 h ago", "2 d ago" (or '' for a time we cannot read). */
export function ago(value, now = Date.now()) {
  const then = new Date(value).getTime();
  if (Number.isNaN(then)) return '';
  const s = Math.max(0, Math.round((now - then) / 1000));
  if (s < 5) return 'just now';
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

/** The part of `channel` after `prefix` (the resource), or null for the prefix itself. */
export function shortName(channel, prefix) {
  if (prefix && channel.startsWith(`${prefix}:`)) return channel.slice(prefix.length + 1);
  if (channel === prefix) return null;
  return channel.replace(/^logs:/, '');
}

export class ChannelList {
  /**
   * @param elements {list, status, error, refresh}
   * @param options {onPick(channel), credentials() -> fetch credentials mode, everyMs}
   */
  constructor(elements, { onPick, credentials, everyMs = REFRESH_MS, signInHint }) {
    this.ui = elements;
    this.signInHint = signInHint;
    this.onPick = onPick;
    this.credentials = credentials;
    this.everyMs = everyMs;
    this.prefix = null;
    this.watched = new Set();
    this.channels = [];
    this._timer = null;
    this.ready = false;
    this._request = 0;
    this._abort = null;
    elements.list.addEventListener('click', (event) => {
      const item = event.target.closest('[data-testid="channel-item"]');
      if (item) this.onPick(item.dataset.channel);
    });
    elements.refresh.addEventListener('click', () => this.refresh());
    document.addEventListener('visibilitychange', () => {
      if (document.hidden) this._stopTimer();
      else if (this.ready) this.refresh();
    });
  }

  /** Show the channels under `prefix` (null: the form is incomplete; nothing to list). */
  setPrefix(prefix) {
    if (prefix === this.prefix) return;
    this.prefix = prefix;
    this.channels = [];
    this.ui.list.textContent = '';
    this.ui.list.dataset.prefix = prefix || '';
    if (!this.ready) return;  // the page asks once it has signed in
    // While someone types a workspace ID: one request when they pause, not one per key.
    this._stopTimer();
    if (this._abort) this._abort.abort();
    this._timer = setTimeout(() => this.refresh(), TYPING_PAUSE_MS);
  }

  /** Start listing (after the page has signed in): now, then every `everyMs`. */
  begin() {
    this.ready = true;
    this.refresh();
  }

  setWatched(channels) {
    this.watched = new Set(channels);
    for (const item of this.ui.list.querySelectorAll('[data-testid="channel-item"]')) {
      const on = this.watched.has(item.dataset.channel);
      item.classList.toggle('watched', on);
      item.setAttribute('aria-pressed', String(on));
    }
  }

  /** Ask now (and again in `everyMs` while the page is visible). */
  async refresh() {
    this._stopTimer();
    if (this._abort) this._abort.abort();
    const prefix = this.prefix;
    if (!prefix) {
      this._setError(null);
      this._setStatus('Fill in the service and workspace to list their channels.');
      this.ui.list.dataset.state = 'idle';
      return;
    }
    const request = ++this._request;
    const abort = new AbortController();
    this._abort = abort;
    this.ui.list.dataset.state = 'loading';
    this.ui.list.setAttribute('aria-busy', 'true');
    try {
      const response = await fetch(
        `/api/logs/channels?prefix=${encodeURIComponent(prefix)}&limit=${LIMIT}`,
        { credentials: this.credentials(), cache: 'no-store', signal: abort.signal });
      const body = await response.json().catch(() => null);
      if (request !== this._request) return;
      if (!response.ok) {
        this._refused(response.status, body);
      } else {
        this.channels = Array.isArray(body?.channels) ? body.channels : [];
        this._setError(null);
        this._render();
        this.ui.list.dataset.state = 'ready';
      }
    } catch (error) {
      if (request !== this._request || error.name === 'AbortError') return;
      this._setError({ title: 'Network error', message: error.message });
      this.ui.list.dataset.state = 'error';
    } finally {
      if (request === this._request) {
        this.ui.list.removeAttribute('aria-busy');
        if (!document.hidden) this._timer = setTimeout(() => this.refresh(), this.everyMs);
      }
    }
  }

  _refused(status, body) {
    const hints = {
      401: this.signInHint || 'Not signed in: pick a dev user or sign in again.',
      403: 'This user cannot read this workspace.',
      404: 'This server does not list channels.',
    };
    this.channels = [];
    this.ui.list.textContent = '';
    this._setStatus('');
    this._setError({ title: `HTTP ${status}${body?.error ? ` · ${body.error}` : ''}`,
                     message: body?.message || hints[status] || '', hint: hints[status] || '' });
    this.ui.list.dataset.state = 'error';
  }

  _stopTimer() {
    clearTimeout(this._timer);
    this._timer = null;
  }

  _setStatus(text) {
    this.ui.status.textContent = text;
  }

  _setError(error) {
    const box = this.ui.error;
    box.hidden = !error;
    box.textContent = '';
    if (!error) return;
    box.append(el('strong', 'error-title', error.title));
    if (error.message) box.append(el('span', 'error-message', error.message));
    if (error.hint && error.hint !== error.message) box.append(el('span', 'muted', error.hint));
  }

  _render() {
    const { list } = this.ui;
    const focused = document.activeElement?.closest?.('[data-testid="channel-item"]');
    const focusChannel = focused && list.contains(focused) ? focused.dataset.channel : null;
    const fragment = document.createDocumentFragment();
    const now = Date.now();
    for (const info of this.channels) {
      const item = el('li', 'channel');
      const button = el('button', 'channel-button');
      button.type = 'button';
      button.dataset.testid = 'channel-item';
      button.dataset.channel = info.channel;
      button.dataset.records = String(info.records ?? '');
      button.dataset.lastSeq = String(info.last_seq ?? '');
      const watched = this.watched.has(info.channel);
      button.classList.toggle('watched', watched);
      button.setAttribute('aria-pressed', String(watched));
      button.title = `${info.channel}\nlast record #${info.last_seq} at ${info.last_at}`;
      const name = shortName(info.channel, this.prefix);
      const top = el('span', 'channel-top');
      const label = el('span', `channel-name${name === null ? ' channel-workspace' : ''}`,
                       name === null ? 'workspace channel' : name);
      const level = levelOf({ level: info.last_level });
      const badge = el('span', `channel-level lvl-badge lvl-${level}`, level);
      badge.title = 'level of the last record';
      top.append(label, badge);
      const records = Number(info.records);
      const count = Number.isFinite(records)
        ? `${records.toLocaleString()} ${records === 1 ? 'record' : 'records'}` : '';
      const bottom = el('span', 'channel-meta');
      bottom.append(el('span', 'channel-count', count));
      const when = el('time', 'channel-when', ago(info.last_at, now));
      when.dateTime = String(info.last_at || '');
      when.title = `${formatTime(info.last_at)} · ${info.last_at}`;
      bottom.append(when);
      button.append(top, bottom);
      item.appendChild(button);
      fragment.appendChild(item);
    }
    list.textContent = '';
    list.appendChild(fragment);
    this._setStatus(this.channels.length ? ''
      : `No channel under ${this.prefix} has records yet.`);
    if (focusChannel) {
      list.querySelector(`[data-channel="${CSS.escape(focusChannel)}"]`)?.focus();
    }
  }
}
