// The Logs page (an ES module, loaded by index.html): the sidebar of active channels, the form,
// the watched channels, the server-side filters, the status, the dev user picker, and the wiring
// between a LogsSubscription (one stream for the union of the watched channels, shared by tabs,
// kept across reloads) and a LogView (the rows).
//
// The stream is read with fetch by logs-sse-client.js rather than with EventSource, which cannot
// say why a stream was refused (status, message) nor send Last-Event-ID as a header on resumes.
// The page's configuration (routes, dev mode, dev users) is the JSON the proxy puts in
// #logstream-config. Its address (page-url.js) holds the view: ?service=&workspace_id=&<resource>=
// fill the form, &channels=a,b the watched channels, &level=, &q=, &where= the filters, &at=<seq>
// the record looked at; the seed's old links (&connect=1) watch the form's channel.
//
// Filters: the level and search in force when the stream opens go to the server as level= and
// q= (its q matches the message only), so records they exclude never cross the wire. Changing
// them while connected filters the rows already here at once, in the page, without a reconnect;
// the next Connect asks the server for the new ones. The where expression (the server's
// grammar) is applied by reopening the stream with it; the server checks it, and a refusal is
// shown by the input with the server's message.

import { ConnectionState } from './logs-sse-client.js';
import {
  DEFAULT_MAX_RECORDS, DEFAULT_STORAGE_KEY, LogsSubscription, loadSavedSubscription,
} from './logs-subscription.js';
import { LogView, toNdjson } from './log-view.js';
import { StreamForm } from './stream-form.js';
import { ChannelList } from './channel-list.js';
import { andClause, equals } from './where-builder.js';
import { readPageQuery, replaceAddress } from './page-url.js';

const config = JSON.parse(document.getElementById('logstream-config').textContent);
// Whether logs-subscription.js has the channel-list API (one stream for several channels).
const MULTI = typeof LogsSubscription.prototype.setChannels === 'function';
// What "history" means here: a channel's last 100 records, then live ones; and "Load older"
// brings the 100 before the oldest shown.
const HISTORY_LIMIT = 100;
const HISTORY = Object.freeze({ tail: HISTORY_LIMIT });
const OLDER_PAGE = 100;
// With filters, a history page may come back empty while older records remain (the gateway
// scans a bounded number per request): one click keeps asking up to this many times.
const OLDER_TRIES = 20;
// Opening a link with at=<seq> loads this many records up to it.
const AT_CONTEXT = 100;
// The seed's user, so that a fresh `logstream up` shows logs with one click.
const DEFAULT_DEV_USER = 'user123';
const USER_KEY = 'logstream.dev-user';
// The dev picker's "no user" choice: the page then sends no credential at all.
const ANONYMOUS = '';
// Bounds of ?max_rows: below 10 the page is useless, above 50,000 the DOM crawls.
const MAX_ROWS_RANGE = [10, 50000];
// A downloaded file's object URL is released after this long (the download has started).
const REVOKE_AFTER_MS = 60000;
const TONES = 8;

const $ = (id) => document.getElementById(id);
const ui = {
  status: $('status'), statusText: $('status-text'), statusDetail: $('status-detail'),
  envBadge: $('env-badge'), devAuth: $('dev-auth'), user: $('user-select'), whoami: $('whoami'),
  form: $('connect-form'), service: $('service-select'), workspace: $('workspace-input'),
  resourceField: $('resource-field'), resourceLabel: $('resource-label'),
  resource: $('resource-input'), extra: $('extra-params'), connect: $('connect'),
  disconnect: $('disconnect'), channel: $('channel-name'), cursor: $('cursor'),
  error: $('connection-error'), errorTitle: $('error-title'), errorMessage: $('error-message'),
  errorHint: $('error-hint'), signInLink: $('sign-in-link'), search: $('search-filter'),
  level: $('level-filter'),
  autoscroll: $('autoscroll'), clear: $('clear'), download: $('download'), count: $('row-count'),
  scroller: $('log-scroll'), list: $('log-list'), empty: $('empty'),
  channelList: $('channel-list'), channelsStatus: $('channels-status'),
  channelsError: $('channels-error'), channelsRefresh: $('channels-refresh'),
  channelsPrefix: $('channels-prefix'), watched: $('watched'), watchEmpty: $('watch-empty'),
  copyLink: $('copy-link'), whereForm: $('where-form'), where: $('where-input'),
  whereError: $('where-error'), whereState: $('where-state'), whereClear: $('where-clear'),
  older: $('older'), olderButton: $('load-older'), olderNote: $('older-note'),
};
const query = new URLSearchParams(location.search);
const maxRows = Math.min(MAX_ROWS_RANGE[1], Math.max(MAX_ROWS_RANGE[0],
  Number(query.get('max_rows')) || DEFAULT_MAX_RECORDS));
const tones = new Map();
const view = new LogView({ list: ui.list, scroller: ui.scroller, empty: ui.empty, maxRows,
                           onChange: renderCounts, onFilter: addWhereClause, onSelect: selectSeq,
                           channelLabel });
const form = new StreamForm(config.routes, {
  service: ui.service, workspace: ui.workspace, resource: ui.resource,
  resourceField: ui.resourceField, resourceLabel: ui.resourceLabel, extra: ui.extra,
  channel: ui.channel });
const sidebar = new ChannelList(
  { list: ui.channelList, status: ui.channelsStatus, error: ui.channelsError,
    refresh: ui.channelsRefresh },
  { onPick: (channel) => watch(addTo(watched, channel)), credentials: () => credentialsMode(),
    signInHint: config.dev_users.length ? '' : 'Not signed in: sign in, then refresh.' });

let sub = null;
let watched = [];     // the channels this tab watches, in the order they were added
let where = '';       // the where expression in force (the input may hold an edit not applied)
let at = null;        // the seq of the record looked at (the address's at=)
let older = { done: false, busy: false, before: null };

// -- identity (dev mode) --------------------------------------------------------------------------

const credentialsMode = () => (devSignIn() && ui.user.value === ANONYMOUS ? 'omit' : 'same-origin');

async function signIn(user) {
  const response = await fetch(`/dev/token?user=${encodeURIComponent(user)}`,
                               { credentials: 'same-origin', cache: 'no-store' });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.message || `HTTP ${response.status}`);
  ui.whoami.dataset.user = body.user_id;
  const scope = body.workspaces.includes('*') ? 'all workspaces' : body.workspaces.join(', ');
  ui.whoami.textContent = `Signed in as ${body.user_id} · ${scope}`;
  return body;
}

/** Asked by the stream on 401 or an expired session (once, then again only after a healthy
 *  connection). A dev user is signed in again. Otherwise the credential is the browser's
 *  session cookie, which the product may have renewed meanwhile, and the gateway asks the
 *  product again (an auth callout identity's expires_in): try once more as is. */
async function renewCredential() {
  if (!devSignIn()) return true;
  if (ui.user.value === ANONYMOUS) return false;
  try {
    await signIn(ui.user.value);
    return true;
  } catch (error) {
    return false;
  }
}

// With the product's own login (the proxy's sign_in_url) the page picks no dev user: the
// product's session cookie is the credential, even in dev mode.
const devSignIn = () => config.dev && config.dev_users.length > 0;

async function setupIdentity() {
  if (!devSignIn()) return;
  ui.envBadge.hidden = false;
  ui.devAuth.hidden = false;
  ui.user.appendChild(new Option('No user (anonymous)', ANONYMOUS));
  for (const user of config.dev_users) ui.user.appendChild(new Option(user, user));
  const saved = sessionStorage.getItem(USER_KEY);
  ui.user.value = saved !== null && (saved === ANONYMOUS || config.dev_users.includes(saved))
    ? saved : (config.dev_users.includes(DEFAULT_DEV_USER) ? DEFAULT_DEV_USER : ANONYMOUS);
  ui.user.addEventListener('change', changeUser);
  await applyUser();
}

async function applyUser() {
  if (ui.user.value === ANONYMOUS) {
    ui.whoami.dataset.user = '';
    ui.whoami.textContent = 'Anonymous: no credential is sent';
    return;
  }
  try {
    await signIn(ui.user.value);
  } catch (error) {
    showError({ title: 'Sign-in failed', message: error.message, hint: '' });
  }
}

async function changeUser() {
  sessionStorage.setItem(USER_KEY, ui.user.value);
  await applyUser();
  if (sidebar.ready) sidebar.refresh();
  if (sub && sub.active) connect();  // the new identity applies to the stream at once
}

// -- what is asked of the server --------------------------------------------------------------------

/** The server-side filters for a new stream: the level and search as they are now, the where. */
function currentFilters() {
  const filters = {};
  if (ui.level.value) filters.level = ui.level.value;
  if (ui.search.value.trim()) filters.q = ui.search.value.trim();
  if (where) filters.where = where;
  return filters;
}

const filterQuery = (filters) => Object.entries(filters)
  .map(([name, value]) => `&${name}=${encodeURIComponent(value)}`).join('');
const channelsQuery = (channels) => `channels=${encodeURIComponent(channels.join(','))}`;

function streamUrl(channels, filters) {
  return `/api/logs/stream?${channelsQuery(channels)}${filterQuery(filters)}`;
}

function historyUrl(channels, before, limit, filters) {
  const from = before === null || before === undefined ? '' : `&before=${before}`;
  return `/api/logs/history?${channelsQuery(channels)}${from}&limit=${limit}${filterQuery(filters)}`;
}

/** GET a history page: {records, next_before}; a refusal throws {status, code, message, details}. */
async function fetchHistory(channels, before, limit, filters) {
  const response = await fetch(historyUrl(channels, before, limit, filters),
                               { credentials: credentialsMode(), cache: 'no-store' });
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    throw { status: response.status, code: body?.error || '', message: body?.message || `HTTP ${response.status}`,
            details: Array.isArray(body?.details) ? body.details : [] };
  }
  return { records: Array.isArray(body?.records) ? body.records : [],
           next_before: body?.next_before ?? null };
}

const keyOf = (filters) => `${credentialsMode()}|${new URLSearchParams(filters)}`;
// Without the channel-list API, a subscription is one URL: its channels are part of its key.
const subKeyOf = (key, channels) => (MULTI ? key : `${key}|${channels.join(',')}`);
const addTo = (list, channel) => (list.includes(channel) ? list : [...list, channel]);
const sameList = (a, b) => a.length === b.length && a.every((item, i) => item === b[i]);

// -- watching --------------------------------------------------------------------------------------

/** Connect: watch the form's channel too (the workspace's when the route has no resource). */
function connect() {
  const target = form.read();
  if (!target) {
    showError({ title: 'Not connected', message: form.problem, hint: '' });
    return;
  }
  watch(addTo(watched, target.channel), { restart: true });
}

/**
 * Watch `channels` (this tab's whole list). The same filters keep the stream and change its
 * channels; other filters (or a stopped stream) open a new one, and the list starts again.
 */
function watch(channels, { restart = false, fresh = false } = {}) {
  hideError();
  const filters = currentFilters();
  const key = keyOf(filters);
  if (!channels.length) {
    unwatchAll();
    return;
  }
  const live = sub && sub.active;
  if (sub && !fresh && sub.pageKey === subKeyOf(key, channels) && sameList(channels, watched)) {
    if (!restart) return;
    if (sub.active) sub.reconnect(); else sub.start();  // Connect again: the same view
  } else if (live && !fresh && MULTI && sub.pageKey === key) {
    const removed = watched.some((channel) => !channels.includes(channel));
    watched = channels;
    sub.setChannels(channels);
    if (removed) view.keepChannels(channels);
    resetOlder();
  } else {
    if (sub) sub.dispose();
    view.clear();
    watched = channels;
    resetOlder();
    sub = subscribe(channels, subKeyOf(key, channels), filters, { restore: false });
    sub.start();
  }
  renderWatched();
  updateAddress();
}

function unwatchAll() {
  if (sub) sub.stop();
  watched = [];
  view.clear();
  resetOlder();
  renderStatus();
  renderWatched();
  updateAddress();
}

function unwatch(channel) {
  const rest = watched.filter((name) => name !== channel);
  if (!rest.length) {
    unwatchAll();
    return;
  }
  // A stream refused as a whole is opened again with what is left.
  const broken = !sub || !sub.active;
  watch(rest, { fresh: broken || !MULTI });
}

/**
 * Make the next subscription of `key` start from `cursor` (the records after it, then live):
 * the state a reload would have left, with no rows (the page shows its own).
 */
function seedCursor(key, channels, filters, cursor, records, floor) {
  const meta = { service: form.route.name, values: form.values(), channels, filters };
  const state = { v: 1, key: storedKey(key), url: MULTI ? null : streamUrl(channels, filters), meta,
                  active: true, lastEventId: String(cursor), records: MULTI ? records : [] };
  if (MULTI) {
    // Each channel is complete up to the cursor, and down to `floor` (Load older goes on there).
    Object.assign(state, {
      mode: 'union', channels,
      positions: Object.fromEntries(channels.map((channel) => [channel, cursor])),
      floors: Object.fromEntries(channels.map((channel) => [channel, floor])) });
  }
  try {
    sessionStorage.setItem(DEFAULT_STORAGE_KEY, JSON.stringify(state));
  } catch (error) { /* no storage: the stream starts with the usual tail */ }
}

/** The key a subscription saves its state under (the union mode marks its own). */
const storedKey = (key) => (MULTI ? `union:${key}` : key);

/** A new subscription; `restore` keeps what a reload saved (same key), else it starts afresh. */
function subscribe(channels, key, filters, { restore, quiet = false } = {}) {
  if (!restore) {
    try { sessionStorage.removeItem(DEFAULT_STORAGE_KEY); } catch (error) { /* no storage */ }
  }
  const meta = { service: form.route.name, values: form.values(), channels, filters };
  const common = { key, maxRecords: maxRows, credentials: credentialsMode(), renewCredential, meta };
  const subscription = MULTI
    ? new LogsSubscription({
      ...common, channels, historyLimit: HISTORY_LIMIT,
      streamUrl: (union) => streamUrl(union, filters),
      historyUrl: (some, before, limit) => historyUrl(some, before, limit, filters) })
    : new LogsSubscription({ ...common, url: streamUrl(channels, filters), history: HISTORY });
  subscription.pageKey = key;
  if (subscription.records.length) {
    view.append(subscription.records.filter((r) => !r.channel || channels.includes(r.channel)));
    if (restore && !quiet) {
      view.notice(`Reloaded: ${subscription.records.length} earlier records kept; ` +
                  `resuming after #${subscription.lastEventId}.`);
    }
  }
  subscription.on('records', (records) => {
    if (sub !== subscription) return;
    view.append(records);
    renderCursor();
    if (at !== null && !view.selected) view.select(at);
  });
  // The list changed other than by appending (a channel's history interleaved, one removed).
  subscription.on('reset', ({ records }) => {
    if (sub !== subscription) return;
    view.keepChannels(subscription.channels || watched);
    view.append(records);
    renderCursor();
  });
  // This tab's channels changed (a refusal took the new ones back).
  subscription.on('channels', (channels) => {
    if (sub !== subscription || sameList(channels, watched)) return;
    watched = channels.slice();
    view.keepChannels(watched);
    renderWatched();
    updateAddress();
  });
  subscription.on('state', renderStatus);
  subscription.on('connected', (info) => {
    hideError();
    // Without dev sign-in the page holds no identity of its own: the gateway says who the
    // session is (a token's user, or the product's, through the auth callout).
    if (!devSignIn() && info && typeof info.user_id === 'string') {
      ui.whoami.dataset.user = info.user_id;
      ui.whoami.textContent = `Signed in as ${info.user_id}`;
    }
  });
  subscription.on('notice', showNotice);
  subscription.on('error', (error) => {
    if (isWhereError(error)) showWhereError(error.message);
    else showError(describe(error));
  });
  renderCursor(subscription);
  return subscription;
}

function disconnect() {
  if (sub) sub.stop();
  renderStatus();
}

function showNotice(notice) {
  if (notice.kind === 'gap' && notice.relayed) {
    view.notice(`Records #${notice.from}–#${notice.to} were not relayed to this tab; ` +
                'reconnect in this tab alone to see them.', 'warn');
  } else if (notice.kind === 'gap') {
    view.notice(`Records #${notice.from}–#${notice.to} are past retention and could not be ` +
                'replayed.', 'warn');
  } else if (notice.kind === 'overflow') {
    view.notice('The page fell behind the stream; resumed from the last record without loss.');
  }
}

function describe(error) {
  const tooMany = error.status === 400 && /channel/i.test(error.message || '') &&
    /at most/i.test(error.message || '');
  const hints = {
    401: devSignIn() ? 'Pick a dev user above; the page signs in and you can Connect again.'
      : 'You are not signed in, or your session has ended: sign in, and this view resumes ' +
        'where it stopped.',
    403: 'Your account cannot read this workspace. Check the workspace ID or the signed-in user.',
    400: tooMany ? 'Watch fewer channels: remove some with × above.'
      : 'The server refused the request as malformed: check the IDs and filters.',
  };
  return { title: `HTTP ${error.status}${error.code ? ` · ${error.code}` : ''}`,
           message: error.message, hint: hints[error.status] || '',
           signIn: error.status === 401 && !devSignIn() };
}

// -- where ------------------------------------------------------------------------------------------

function isWhereError(error) {
  return error && error.status === 400 && (
    (error.details || []).some((detail) => detail && detail.parameter === 'where') ||
    /^where\b/.test(error.message || ''));
}

/** Apply the where expression: checked by the server first, then the stream reopens with it. */
async function applyWhere(text) {
  const expression = text.trim();
  ui.where.value = expression;
  if (watched.length && expression) {
    ui.whereForm.setAttribute('aria-busy', 'true');
    try {
      await fetchHistory(watched, null, 1, { ...currentFilters(), where: expression });
    } catch (error) {
      if (isWhereError(error)) {
        showWhereError(error.message);
        return false;
      }  // anything else: the stream will say it
    } finally {
      ui.whereForm.removeAttribute('aria-busy');
    }
  }
  hideWhereError();
  if (expression === where && sub && sub.active) {
    renderWhere();
    return true;
  }
  where = expression;
  renderWhere();
  if (watched.length) watch(watched, { fresh: true });
  else updateAddress();
  return true;
}

/** A value clicked in an open record: `<field> = <value>`, ANDed to the expression, applied. */
function addWhereClause(field, value) {
  const clause = equals(field, value);
  const current = ui.where.value.trim();
  const next = current.includes(clause) ? current : andClause(current, clause);
  applyWhere(next);
}

function showWhereError(message) {
  ui.whereError.textContent = message;
  ui.whereError.hidden = false;
  ui.where.setAttribute('aria-invalid', 'true');
}

function hideWhereError() {
  ui.whereError.hidden = true;
  ui.whereError.textContent = '';
  ui.where.removeAttribute('aria-invalid');
}

function renderWhere() {
  const edited = ui.where.value.trim() !== where;
  ui.whereState.hidden = !where;
  ui.whereState.textContent = edited ? 'edited · Enter applies' : 'applied';
  ui.whereState.dataset.edited = String(edited);
  ui.whereForm.dataset.applied = where;
}

// -- older records ----------------------------------------------------------------------------------

function resetOlder() {
  older = { done: false, busy: false, before: null };
  renderOlder();
}

async function loadOlder() {
  if (!sub || !watched.length || older.busy || older.done) return;
  older.busy = true;
  renderOlder();
  try {
    let added = 0;
    for (let tries = 0; tries < OLDER_TRIES && !added && !older.done; tries++) {
      const page = await olderPage();
      added += view.prepend(page.records);
      older.done = page.done;
    }
  } catch (error) {
    showError(describe(error));
  } finally {
    older.busy = false;
    renderOlder();
  }
}

/** The page before the oldest record shown: {records, done}. */
async function olderPage() {
  if (MULTI) return sub.loadOlder(OLDER_PAGE);
  const before = older.before ?? view.oldestSeq();
  if (before === null) return { records: [], done: true };
  const page = await fetchHistory(watched, before, OLDER_PAGE, sub.meta.filters);
  older.before = page.next_before;
  return { records: page.records, done: page.next_before === null };
}

function renderOlder() {
  ui.older.hidden = !watched.length;
  ui.olderButton.disabled = older.done || older.busy;
  ui.olderButton.textContent = older.done ? 'Nothing older' : (older.busy ? 'Loading…' : 'Load older');
  ui.olderButton.dataset.done = String(older.done);
  ui.olderButton.setAttribute('aria-busy', String(older.busy));
  const oldest = view.oldestSeq();
  ui.olderNote.textContent = oldest === null ? '' : `oldest shown #${oldest}`;
}

// -- the record looked at (at=) -------------------------------------------------------------------

function selectSeq(seq) {
  at = seq;
  updateAddress();
}

/**
 * Open the view at the record `seq`: the records up to it from history, then the stream from
 * it on (so the live tail continues after it); the row is highlighted and scrolled to.
 */
async function openAt(channels, seq) {
  const filters = currentFilters();
  let page = { records: [] };
  try {
    page = await fetchHistory(channels, seq + 1, AT_CONTEXT, filters);
  } catch (error) {
    if (isWhereError(error)) showWhereError(error.message); else showError(describe(error));
  }
  watched = channels;
  view.clear();
  view.setFollow(false);
  resetOlder();
  older.before = page.next_before ?? null;
  if (page.next_before === null && page.records.length) older.done = true;
  const last = page.records.length ? Number(page.records[page.records.length - 1].seq) : seq;
  const key = subKeyOf(keyOf(filters), channels);
  if (sub) sub.dispose();
  seedCursor(key, channels, filters, last, page.records, page.next_before ?? 0);
  sub = subscribe(channels, key, filters, { restore: true, quiet: true });
  if (!MULTI) view.append(page.records);  // (the union mode keeps them in sub.records)
  view.unseen = 0;  // the context asked for; "new" counts what comes after it
  sub.start();
  renderWatched();
  view.select(seq, { scroll: true });
  updateAddress();
}

// -- rendering -----------------------------------------------------------------------------------

function channelLabel(channel) {
  if (!tones.has(channel)) tones.set(channel, tones.size % TONES);
  const parts = channel.split(':');
  const text = parts.length > 3 ? parts.slice(3).join(':') : (parts[2] ? `${parts[2]} (workspace)` : channel);
  return { text, title: channel, tone: tones.get(channel) };
}

function renderWatched() {
  const fragment = document.createDocumentFragment();
  for (const channel of watched) {
    const { tone } = channelLabel(channel);
    const chip = document.createElement('li');
    chip.className = 'chip';
    chip.dataset.testid = 'watched-channel';
    chip.dataset.channel = channel;
    chip.dataset.tone = String(tone);
    const dot = document.createElement('span');
    dot.className = 'chip-dot';
    dot.setAttribute('aria-hidden', 'true');
    const name = document.createElement('span');
    name.className = 'chip-name';
    name.textContent = channel.replace(/^logs:/, '');
    name.title = channel;
    const remove = document.createElement('button');
    remove.type = 'button';
    remove.className = 'chip-remove';
    remove.dataset.testid = 'unwatch-button';
    remove.setAttribute('aria-label', `Stop watching ${channel}`);
    remove.title = 'Stop watching';
    remove.textContent = '×';
    remove.addEventListener('click', () => unwatch(channel));
    chip.append(dot, name, remove);
    fragment.appendChild(chip);
  }
  ui.watched.textContent = '';
  ui.watched.appendChild(fragment);
  ui.watchEmpty.hidden = watched.length > 0;
  ui.watched.dataset.count = String(watched.length);
  sidebar.setWatched(watched);
  renderOlder();
}

function renderStatus() {
  const state = sub ? sub.state : ConnectionState.DISCONNECTED;
  let detail = sub ? sub.detail : '';
  if (sub && sub.role === 'follower' && state === ConnectionState.CONNECTED) {
    detail = 'shared with another tab';
  }
  ui.status.dataset.state = state;
  ui.status.dataset.role = (sub && sub.role) || '';
  ui.statusText.textContent = state;
  ui.statusDetail.textContent = detail ? `· ${detail}` : '';
  ui.disconnect.disabled = !(sub && sub.active);
}

function renderCursor(subscription = sub) {
  ui.cursor.textContent = subscription && subscription.lastEventId
    ? `#${subscription.lastEventId}` : '–';
}

function renderCounts() {
  const { rows, shown, dropped, unseen } = view.counts();
  ui.count.dataset.rows = String(rows);
  ui.count.dataset.shown = String(shown);
  ui.count.dataset.dropped = String(dropped);
  let text = shown === rows ? `${rows.toLocaleString()} ${rows === 1 ? 'record' : 'records'}`
    : `${shown.toLocaleString()} of ${rows.toLocaleString()} shown`;
  if (dropped) text += ` · ${dropped.toLocaleString()} older left the list`;
  ui.count.textContent = text;
  ui.autoscroll.dataset.paused = String(!view.follow);
  ui.autoscroll.dataset.new = String(unseen);
  ui.autoscroll.setAttribute('aria-pressed', String(!view.follow));
  ui.autoscroll.textContent = view.follow ? 'Pause' : `Resume${unseen ? ` (${unseen} new)` : ''}`;
  if (ui.olderNote) {
    const oldest = view.oldestSeq();
    ui.olderNote.textContent = oldest === null ? '' : `oldest shown #${oldest}`;
  }
}

function showError({ title, message, hint, signIn = false }) {
  ui.errorTitle.textContent = title;
  ui.errorMessage.textContent = message;
  ui.errorHint.textContent = hint;
  // The product's login page (the proxy's sign_in_url), back to this view afterwards.
  ui.signInLink.hidden = !(signIn && config.sign_in_url);
  if (!ui.signInLink.hidden) {
    const target = new URL(config.sign_in_url, location.href);
    target.searchParams.set('next', location.href);
    ui.signInLink.href = target.href;
  }
  ui.error.hidden = false;
}

function hideError() {
  ui.error.hidden = true;
}

function updateAddress() {
  replaceAddress({
    service: form.route.name, values: form.values(), channels: watched,
    level: ui.level.value, q: ui.search.value.trim(), where, at,
    maxRows: query.has('max_rows') ? maxRows : null,
  });
}

function download() {
  const records = view.shownRecords();
  const blob = new Blob([toNdjson(records)], { type: 'application/x-ndjson' });
  const link = document.createElement('a');
  link.href = URL.createObjectURL(blob);
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const name = watched.length === 1 ? watched[0] : `${watched.length}-channels`;
  link.download = `logs-${name.replace(/[^A-Za-z0-9_-]+/g, '_')}-${stamp}.ndjson`;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), REVOKE_AFTER_MS);
}

async function copyLink() {
  updateAddress();
  try {
    await navigator.clipboard.writeText(location.href);
    ui.copyLink.textContent = 'Copied';
  } catch (error) {
    ui.copyLink.textContent = 'Copy failed';
  }
  setTimeout(() => { ui.copyLink.textContent = 'Copy link'; }, 1500);
}

// -- wiring --------------------------------------------------------------------------------------

function applyFilters() {
  view.setFilter({ level: ui.level.value, text: ui.search.value });
  updateAddress();
}

function formChanged() {
  form.renderChannel();
  const prefix = form.prefix();
  ui.channelsPrefix.textContent = prefix || '–';
  sidebar.setPrefix(prefix);
}

function wire() {
  ui.service.addEventListener('change', () => { form.render(); formChanged(); });
  ui.form.addEventListener('input', formChanged);
  ui.form.addEventListener('submit', (event) => { event.preventDefault(); connect(); });
  ui.disconnect.addEventListener('click', disconnect);
  ui.search.addEventListener('input', applyFilters);
  ui.level.addEventListener('change', applyFilters);
  ui.autoscroll.addEventListener('click', () => view.setFollow(!view.follow));
  ui.clear.addEventListener('click', () => { view.clear(); if (sub) sub.clear(); renderOlder(); });
  ui.download.addEventListener('click', download);
  ui.copyLink.addEventListener('click', copyLink);
  ui.olderButton.addEventListener('click', loadOlder);
  ui.whereForm.addEventListener('submit', (event) => { event.preventDefault(); applyWhere(ui.where.value); });
  ui.where.addEventListener('input', () => { hideWhereError(); renderWhere(); });
  ui.whereClear.addEventListener('click', () => applyWhere(''));
  document.addEventListener('keydown', (event) => {
    const typing = event.target.closest('input, select, textarea');
    if (event.key === '/' && !typing && !event.ctrlKey && !event.metaKey) {
      event.preventDefault();
      ui.search.focus();
    } else if (event.key === 'Escape' && event.target === ui.search && ui.search.value) {
      ui.search.value = '';
      applyFilters();
    } else if (event.key === 'Escape' && event.target === ui.where && ui.where.value !== where) {
      ui.where.value = where;  // drop the edit
      hideWhereError();
      renderWhere();
    }
  });
}

/** What the address asks to watch: its channels, or (old links, connect=1) the form's one. */
function channelsAsked(state) {
  if (state.channels.length) return state.channels;
  if (!state.connect) return [];
  const target = form.read();
  return target ? [target.channel] : [];
}

async function main() {
  wire();
  const state = readPageQuery(query);
  if (state.level) ui.level.value = state.level;
  if (state.q) ui.search.value = state.q;
  where = state.where;
  ui.where.value = where;
  at = state.at;
  renderWhere();
  applyFilters();
  const saved = loadSavedSubscription();
  const fromUrl = form.fromQuery(query);
  const meta = saved && saved.meta && Array.isArray(saved.meta.channels) ? saved.meta : null;
  form.fill(meta && (!fromUrl || form.same(fromUrl, meta)) && !state.channels.length ? meta : fromUrl);
  formChanged();
  renderStatus();
  renderCounts();
  renderWatched();
  await setupIdentity();
  sidebar.begin();
  let asked = channelsAsked(state);
  if (!asked.length && meta && (!fromUrl || form.same(fromUrl, meta)) && !state.connect) {
    asked = meta.channels;  // a reload of a page whose address had no channels
  }
  // A reload of the same view resumes its stream as it was asked for (the level and search
  // typed since then filter in the page, as before the reload) from its cursor with its rows.
  const resumed = meta && sameList(asked, meta.channels) && (meta.filters?.where || '') === where
    ? { ...meta.filters } : null;
  const filters = resumed || currentFilters();
  const key = subKeyOf(keyOf(filters), asked);
  if (resumed && saved.key === storedKey(key)) {
    watched = asked;
    sub = subscribe(asked, key, filters, { restore: true });
    if (saved.active || saved.resume) sub.start();  // resume: stopped by a 401, signed in since
    renderWatched();
    if (at !== null) view.select(at, { scroll: true });
    updateAddress();
  } else if (asked.length && at !== null) {
    await openAt(asked, at);
  } else if (asked.length) {
    watch(asked);
  } else {
    updateAddress();
  }
}

// Tests and scripts wait for this: the form is filled and, in dev mode, the user signed in.
main().finally(() => { document.documentElement.dataset.ready = 'true'; });
