// The Logs page (an ES module, loaded by index.html): the form, the status, the dev user picker,
// and the wiring between a LogsSubscription (the stream, shared by tabs, kept across reloads)
// and a LogView (the rows).
//
// The stream is read with fetch by logs-sse-client.js rather than with EventSource, which cannot
// say why a stream was refused (status, message) nor send Last-Event-ID as a header on resumes.
// The page's configuration (routes, dev mode, dev users) is the JSON the proxy puts in
// #logstream-config. Query: ?service=etl&workspace_id=...&workflow_id=... fills the form;
// &connect=1 connects at once; &max_rows=N bounds the list; &level= and &q= preset the filters.
//
// Filters: the level and search in force when the stream connects go to the server as level=
// and q= (its q matches the message only), so records they exclude never cross the wire.
// Changing them while connected filters the rows already here at once, in the page, without a
// reconnect; the next Connect asks the server for the new ones (a new list, like a new channel).

import { ConnectionState } from './logs-sse-client.js';
import { DEFAULT_MAX_RECORDS, LogsSubscription, loadSavedSubscription } from './logs-subscription.js';
import { LogView, toNdjson } from './log-view.js';
import { StreamForm } from './stream-form.js';

const config = JSON.parse(document.getElementById('logstream-config').textContent);
// What "history on connect" means here: the channel's last 100 records, then live ones.
const HISTORY = Object.freeze({ tail: 100 });
// The seed's user, so that a fresh `logstream up` shows logs with one click.
const DEFAULT_DEV_USER = 'user123';
const USER_KEY = 'logstream.dev-user';
// The dev picker's "no user" choice: the page then sends no credential at all.
const ANONYMOUS = '';
// Bounds of ?max_rows: below 10 the page is useless, above 50,000 the DOM crawls.
const MAX_ROWS_RANGE = [10, 50000];
// A downloaded file's object URL is released after this long (the download has started).
const REVOKE_AFTER_MS = 60000;

const $ = (id) => document.getElementById(id);
const ui = {
  status: $('status'), statusText: $('status-text'), statusDetail: $('status-detail'),
  envBadge: $('env-badge'), devAuth: $('dev-auth'), user: $('user-select'), whoami: $('whoami'),
  form: $('connect-form'), service: $('service-select'), workspace: $('workspace-input'),
  resourceField: $('resource-field'), resourceLabel: $('resource-label'),
  resource: $('resource-input'), extra: $('extra-params'), connect: $('connect'),
  disconnect: $('disconnect'), channel: $('channel-name'), cursor: $('cursor'),
  error: $('connection-error'), errorTitle: $('error-title'), errorMessage: $('error-message'),
  errorHint: $('error-hint'), search: $('search-filter'), level: $('level-filter'),
  autoscroll: $('autoscroll'), clear: $('clear'), download: $('download'), count: $('row-count'),
  scroller: $('log-scroll'), list: $('log-list'), empty: $('empty'),
};
const query = new URLSearchParams(location.search);
const maxRows = Math.min(MAX_ROWS_RANGE[1], Math.max(MAX_ROWS_RANGE[0],
  Number(query.get('max_rows')) || DEFAULT_MAX_RECORDS));
const view = new LogView({ list: ui.list, scroller: ui.scroller, empty: ui.empty, maxRows,
                           onChange: renderCounts });
const form = new StreamForm(config.routes, {
  service: ui.service, workspace: ui.workspace, resource: ui.resource,
  resourceField: ui.resourceField, resourceLabel: ui.resourceLabel, extra: ui.extra,
  channel: ui.channel });
let sub = null;

// -- identity (dev mode) --------------------------------------------------------------------------

const credentialsMode = () => (config.dev && ui.user.value === ANONYMOUS ? 'omit' : 'same-origin');

async function signIn(user) {
  const response = await fetch(`/dev/token?user=${encodeURIComponent(user)}`,
                               { credentials: 'same-origin', cache: 'no-store' });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.message || `HTTP ${response.status}`);
  ui.whoami.dataset.user = body.user_id;
  const where = body.workspaces.includes('*') ? 'all workspaces' : body.workspaces.join(', ');
  ui.whoami.textContent = `Signed in as ${body.user_id} · ${where}`;
  return body;
}

/** Asked by the stream on 401 or an expired session: only a dev user can be signed in again. */
async function renewCredential() {
  if (!config.dev || ui.user.value === ANONYMOUS) return false;
  try {
    await signIn(ui.user.value);
    return true;
  } catch (error) {
    return false;
  }
}

async function setupIdentity() {
  if (!config.dev) return;
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
  if (sub && sub.active) connect();  // the new identity applies to the stream at once
}

// -- the stream ----------------------------------------------------------------------------------

/** The form's target, or null after saying what is wrong with it. */
function readTarget() {
  const target = form.read();
  if (!target) showError({ title: 'Not connected', message: form.problem, hint: '' });
  return target;
}

/** The server-side filters for a new stream: the level and search as they are now. */
function currentFilters() {
  const filters = {};
  if (ui.level.value) filters.level = ui.level.value;
  if (ui.search.value.trim()) filters.q = ui.search.value.trim();
  return filters;
}

const keyOf = (target, filters) =>
  `${target.channel}|${credentialsMode()}|${new URLSearchParams(filters)}`;

function connect() {
  const target = readTarget();
  if (!target) return;
  hideError();
  const filters = currentFilters();
  const key = keyOf(target, filters);
  if (sub && sub.key === key) {
    if (sub.active) sub.reconnect(); else sub.start();
    return;
  }
  if (sub) sub.dispose();
  view.clear();
  sub = subscribe(target, key, filters);
  const address = new URLSearchParams({ service: target.route.name, ...target.values, ...filters });
  if (query.has('max_rows')) address.set('max_rows', String(maxRows));
  history.replaceState(null, '', `${location.pathname}?${address}`);
  sub.start();
}

function subscribe(target, key, filters) {
  const url = new URL(target.url, location.href);
  for (const [name, value] of Object.entries(filters)) url.searchParams.set(name, value);
  const subscription = new LogsSubscription({
    url: url.href, key, history: HISTORY, maxRecords: maxRows, credentials: credentialsMode(),
    renewCredential, meta: { service: target.route.name, values: target.values, filters } });
  if (subscription.records.length) {
    view.append(subscription.records);
    view.notice(`Reloaded: ${subscription.records.length} earlier records kept; ` +
                `resuming after #${subscription.lastEventId}.`);
  }
  subscription.on('records', (records) => { view.append(records); renderCursor(); });
  subscription.on('state', renderStatus);
  subscription.on('connected', hideError);
  subscription.on('notice', showNotice);
  subscription.on('error', (error) => showError(describe(error)));
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
  const hints = {
    401: config.dev ? 'Pick a dev user above; the page signs in and you can Connect again.'
      : 'Your session has ended: sign in again, then Connect.',
    403: 'Your account cannot read this workspace. Check the workspace ID or the signed-in user.',
    400: 'The server refused the request as malformed: check the IDs.',
  };
  return { title: `HTTP ${error.status}${error.code ? ` · ${error.code}` : ''}`,
           message: error.message, hint: hints[error.status] || '' };
}

// -- rendering -----------------------------------------------------------------------------------

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
}

function showError({ title, message, hint }) {
  ui.errorTitle.textContent = title;
  ui.errorMessage.textContent = message;
  ui.errorHint.textContent = hint;
  ui.error.hidden = false;
}

function hideError() {
  ui.error.hidden = true;
}

function download() {
  const records = view.shownRecords();
  const blob = new Blob([toNdjson(records)], { type: 'application/x-ndjson' });
  const link = document.createElement('a');
  link.href = URL.createObjectURL(blob);
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  link.download = `logs-${ui.channel.textContent.replace(/[^A-Za-z0-9_-]+/g, '_')}-${stamp}.ndjson`;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), REVOKE_AFTER_MS);
}

// -- wiring --------------------------------------------------------------------------------------

function applyFilters() {
  view.setFilter({ level: ui.level.value, text: ui.search.value });
}

function wire() {
  ui.service.addEventListener('change', () => form.render());
  ui.form.addEventListener('input', () => form.renderChannel());
  ui.form.addEventListener('submit', (event) => { event.preventDefault(); connect(); });
  ui.disconnect.addEventListener('click', disconnect);
  ui.search.addEventListener('input', applyFilters);
  ui.level.addEventListener('change', applyFilters);
  ui.autoscroll.addEventListener('click', () => view.setFollow(!view.follow));
  ui.clear.addEventListener('click', () => { view.clear(); if (sub) sub.clear(); });
  ui.download.addEventListener('click', download);
  document.addEventListener('keydown', (event) => {
    const typing = event.target.closest('input, select, textarea');
    if (event.key === '/' && !typing && !event.ctrlKey && !event.metaKey) {
      event.preventDefault();
      ui.search.focus();
    } else if (event.key === 'Escape' && event.target === ui.search && ui.search.value) {
      ui.search.value = '';
      applyFilters();
    }
  });
}

async function main() {
  wire();
  if (query.get('level')) ui.level.value = query.get('level');
  if (query.get('q')) ui.search.value = query.get('q');
  applyFilters();
  const saved = loadSavedSubscription();
  const fromUrl = form.fromQuery(query);
  const resume = saved && saved.meta && (!fromUrl || form.same(fromUrl, saved.meta))
    ? saved.meta : null;
  form.fill(resume || fromUrl);
  renderStatus();
  renderCounts();
  await setupIdentity();
  const target = resume ? readTarget() : null;
  if (target) {
    const filters = saved.meta.filters || {};  // the stream resumes as it was asked for
    sub = subscribe(target, keyOf(target, filters), filters);
    if (saved.active) sub.start();
  } else if (query.get('connect') === '1') {
    connect();
  }
}

// Tests and scripts wait for this: the form is filled and, in dev mode, the user signed in.
main().finally(() => { document.documentElement.dataset.ready = 'true'; });

