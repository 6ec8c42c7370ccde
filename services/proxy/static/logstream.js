/* Logstream Logs page: a plain EventSource client, no framework (the page works offline).
 *
 * Auth is the same-origin session cookie (set by /dev/token in dev mode), which EventSource
 * sends by itself. EventSource also resends Last-Event-ID when it reconnects on its own; when
 * we reopen a stream ourselves (overflow, expired token, a refused request) we pass the cursor
 * as last_event_id. Records are deduplicated by seq, so a resume never shows a record twice.
 */
(function () {
  'use strict';

  // The DOM holds at most this many rows; older ones are dropped as new ones arrive.
  var MAX_ROWS = 5000;
  var LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal'];
  // Backoff between our own reconnects after a refused request (429/502/503).
  var RETRY_MIN_MS = 1000;
  var RETRY_MAX_MS = 30000;
  // The seed's user and identifiers, so that a fresh `logstream up` shows logs with one click.
  var DEFAULT_DEV_USER = 'user123';
  var PREFILL = { workspace_id: 'workspace123', workflow_id: 'workflow456', function_id: 'function789' };
  var SEGMENT = /^[A-Za-z0-9_-]{1,64}$/;
  var STORAGE_KEY = 'logstream.logs-page.v1';
  // How close to the bottom (px) still counts as "following" the stream.
  var FOLLOW_SLACK_PX = 40;

  var config = JSON.parse(document.getElementById('logstream-config').textContent);
  var $ = function (id) { return document.getElementById(id); };
  var ui = {
    status: $('status'), statusText: $('status-text'), envBadge: $('env-badge'),
    devAuth: $('dev-auth'), devUser: $('dev-user'), signIn: $('sign-in'), whoami: $('whoami'),
    form: $('connect-form'), route: $('route'), params: $('params'), history: $('history'),
    connect: $('connect'), disconnect: $('disconnect'), channel: $('channel-name'), cursor: $('cursor'),
    filter: $('filter'), level: $('level-filter'), autoscroll: $('autoscroll'), clear: $('clear'),
    count: $('count'), notice: $('notice'), scroller: $('log-scroll'), list: $('log-list'), empty: $('empty')
  };

  var state = {
    source: null, wanted: false, target: null, lastEventId: null, lastSeq: 0,
    retryTimer: null, retryMs: RETRY_MIN_MS, authRetried: false, probe: null,
    pending: [], flushQueued: false, total: 0, unseen: 0,
    filterText: '', minLevel: 0, follow: true
  };

  /* ---------- small helpers ---------- */

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }
  function pad(n, width) { n = String(n); while (n.length < width) n = '0' + n; return n; }
  function formatTime(value) {
    var date = new Date(value);
    if (isNaN(date.getTime())) return String(value || '');
    return pad(date.getHours(), 2) + ':' + pad(date.getMinutes(), 2) + ':' +
      pad(date.getSeconds(), 2) + '.' + pad(date.getMilliseconds(), 3);
  }
  function levelOf(record) {
    var level = String(record.level || 'info').toLowerCase();
    return LEVELS.indexOf(level) >= 0 ? level : 'info';
  }
  function load() { try { return JSON.parse(localStorage.getItem(STORAGE_KEY)) || {}; } catch (e) { return {}; } }
  function save(patch) {
    var saved = load();
    Object.keys(patch).forEach(function (key) { saved[key] = patch[key]; });
    try { localStorage.setItem(STORAGE_KEY, JSON.stringify(saved)); } catch (e) { /* private mode */ }
  }

  /* ---------- status and notices ---------- */

  var STATUS_TEXT = { idle: 'Disconnected', connecting: 'Connecting…', live: 'Live',
                      reconnecting: 'Reconnecting…', error: 'Error' };
  function setStatus(kind, detail) {
    ui.status.dataset.state = kind;
    ui.statusText.textContent = detail ? STATUS_TEXT[kind] + ' · ' + detail : STATUS_TEXT[kind];
    var open = kind !== 'idle' && kind !== 'error';
    ui.connect.textContent = open ? 'Reconnect' : 'Connect';
    ui.disconnect.disabled = !open;
  }
  function notify(message, kind) {
    ui.notice.textContent = message;
    ui.notice.dataset.kind = kind || 'error';
    ui.notice.hidden = false;
  }
  function clearNotice() { ui.notice.hidden = true; ui.notice.textContent = ''; }

  /* ---------- identity (dev mode) ---------- */

  function showIdentity(body) {
    ui.whoami.dataset.user = body.user_id;
    ui.whoami.textContent = 'Signed in as ' + body.user_id + ' · ' +
      (body.workspaces.indexOf('*') >= 0 ? 'all workspaces' : body.workspaces.join(', '));
  }
  function signIn(user) {
    return fetch('/dev/token?user=' + encodeURIComponent(user), { credentials: 'same-origin' })
      .then(function (response) {
        return response.json().then(function (body) {
          if (!response.ok) throw new Error(body.message || ('HTTP ' + response.status));
          showIdentity(body);
          save({ user: user });
          return body;
        });
      });
  }
  function setupIdentity() {
    if (!config.dev) {
      ui.whoami.textContent = 'Using your session';
      return;
    }
    ui.envBadge.hidden = false;
    ui.devAuth.hidden = false;
    config.dev_users.forEach(function (user) { ui.devUser.appendChild(new Option(user, user)); });
    var saved = load().user;
    if (saved && config.dev_users.indexOf(saved) >= 0) ui.devUser.value = saved;
    else if (config.dev_users.indexOf(DEFAULT_DEV_USER) >= 0) ui.devUser.value = DEFAULT_DEV_USER;
    ui.signIn.addEventListener('click', function () {
      signIn(ui.devUser.value).then(function () {
        clearNotice();
        if (state.wanted) open();  // the new identity applies to the stream at once
      }).catch(function (err) { notify('Sign-in failed: ' + err.message); });
    });
  }

  /* ---------- the connect form ---------- */

  function currentRoute() {
    return config.routes.filter(function (r) { return r.name === ui.route.value; })[0] || config.routes[0];
  }
  function renderParams() {
    var route = currentRoute();
    var saved = load().params || {};
    ui.params.textContent = '';
    route.params.forEach(function (name) {
      var field = el('div', 'field');
      var label = el('label', null, humanise(name));
      label.htmlFor = 'param-' + name;
      var input = el('input');
      input.type = 'text';
      input.id = 'param-' + name;
      input.name = name;
      input.value = saved[name] || PREFILL[name] || '';
      input.placeholder = name;
      field.appendChild(label);
      field.appendChild(input);
      ui.params.appendChild(field);
    });
    updateChannelPreview();
  }
  function humanise(name) {  // workspace_id -> Workspace ID
    var words = name.split('_').map(function (word) { return word === 'id' ? 'ID' : word; });
    words[0] = words[0].charAt(0).toUpperCase() + words[0].slice(1);
    return words.join(' ');
  }
  function readForm() {
    var route = currentRoute();
    var values = {};
    var ok = true;
    route.params.forEach(function (name) {
      var input = $('param-' + name);
      var value = input.value.trim();
      var valid = SEGMENT.test(value);
      input.setAttribute('aria-invalid', valid ? 'false' : 'true');
      if (!valid) ok = false;
      values[name] = value;
    });
    if (!ok) {
      notify('Each ID must be 1-64 characters of letters, digits, "_" or "-".');
      return null;
    }
    var channel = route.channel.replace(/\{([A-Za-z_][A-Za-z0-9_]*)\}/g, function (_, name) {
      return values[name];
    });
    return { route: route, values: values, channel: channel, history: ui.history.value };
  }
  function updateChannelPreview() {
    var route = currentRoute();
    ui.channel.textContent = route.channel.replace(/\{([A-Za-z_][A-Za-z0-9_]*)\}/g, function (_, name) {
      var input = $('param-' + name);
      return input && input.value.trim() ? input.value.trim() : '{' + name + '}';
    });
  }

  /* ---------- the stream ---------- */

  function streamUrl(target, resume) {
    var query = new URLSearchParams(target.values);
    if (resume && state.lastEventId) {
      query.set('last_event_id', state.lastEventId);
    } else if (target.history) {
      var pair = target.history.split('=');
      query.set(pair[0], pair[1]);
    }
    return target.route.path + '?' + query.toString();
  }

  function connect() {
    var target = readForm();
    if (!target) return;
    clearNotice();
    save({ route: target.route.name, params: target.values, history: target.history });
    var sameChannel = state.target && state.target.channel === target.channel;
    if (!sameChannel) { clearList(); state.lastEventId = null; state.lastSeq = 0; }
    state.target = target;
    state.wanted = true;
    state.authRetried = false;
    state.retryMs = RETRY_MIN_MS;
    open();
  }

  function open() {
    closeSource();
    var resume = Boolean(state.lastEventId);
    var url = streamUrl(state.target, resume);
    setStatus(resume ? 'reconnecting' : 'connecting');
    var source = new EventSource(url);
    state.source = source;
    source.addEventListener('connected', function (event) {
      if (source !== state.source) return;
      state.retryMs = RETRY_MIN_MS;
      state.authRetried = false;
      setCursor(event.lastEventId);
      setStatus('live');
      clearNotice();
    });
    source.addEventListener('log', function (event) {
      if (source !== state.source) return;
      setCursor(event.lastEventId);
      try { enqueue(JSON.parse(event.data)); } catch (e) { /* not a record: ignore it */ }
    });
    source.addEventListener('gap', function (event) {
      var gap = {};
      try { gap = JSON.parse(event.data); } catch (e) { /* keep going */ }
      addMarker('Records ' + gap.from + '–' + gap.to + ' are past retention and could not be replayed.');
    });
    source.addEventListener('overflow', function () {
      if (source !== state.source) return;
      addMarker('The stream fell behind; resuming from #' + state.lastEventId + ' without loss.');
      open();
    });
    source.addEventListener('auth-expired', function () {
      if (source !== state.source) return;
      closeSource();
      renewSession('Your session expired.');
    });
    source.addEventListener('error', function () {
      if (source !== state.source) return;
      if (source.readyState === EventSource.CONNECTING) {
        setStatus('reconnecting');  // the browser retries by itself, with Last-Event-ID
      } else {
        closeSource();
        diagnose(url);
      }
    });
  }

  function closeSource() {
    if (state.source) { state.source.close(); state.source = null; }
    if (state.retryTimer) { clearTimeout(state.retryTimer); state.retryTimer = null; }
    if (state.probe) { state.probe.abort(); state.probe = null; }
  }

  function disconnect() {
    state.wanted = false;
    closeSource();
    setStatus('idle');
  }

  /* EventSource hides why a request was refused: ask once more with fetch to read the answer. */
  function diagnose(url) {
    var probe = new AbortController();
    state.probe = probe;
    setStatus('reconnecting');
    fetch(url, { credentials: 'same-origin', headers: { Accept: 'text/event-stream' }, signal: probe.signal })
      .then(function (response) {
        if (response.ok) {
          probe.abort();
          retryLater('The stream was interrupted.', null);
          return null;
        }
        return response.json().catch(function () { return {}; }).then(function (body) {
          refused(response.status, body, response.headers.get('Retry-After'));
        });
      })
      .catch(function () {
        if (!probe.signal.aborted) retryLater('The proxy is unreachable.', null);
      })
      .then(function () { if (state.probe === probe) state.probe = null; });
  }

  function refused(status, body, retryAfter) {
    var message = body.message || ('HTTP ' + status);
    if (status === 401) {
      renewSession(message);
    } else if (status === 429 || status >= 500) {
      retryLater(message, retryAfter ? Number(retryAfter) * 1000 : null);
    } else {
      fail(status === 403 ? 'Access denied: ' + message : message);
    }
  }

  function renewSession(reason) {
    if (!config.dev || state.authRetried) {
      fail(reason + ' Sign in again to continue.');
      return;
    }
    state.authRetried = true;
    setStatus('reconnecting', 'renewing session');
    signIn(ui.devUser.value).then(function () { if (state.wanted) open(); })
      .catch(function (err) { fail('Could not renew the session: ' + err.message); });
  }

  function retryLater(reason, delayMs) {
    if (!state.wanted) return;
    var delay = delayMs || state.retryMs;
    state.retryMs = Math.min(state.retryMs * 2, RETRY_MAX_MS);
    setStatus('reconnecting', 'retrying in ' + Math.ceil(delay / 1000) + ' s');
    notify(reason + ' Retrying in ' + Math.ceil(delay / 1000) + ' s.', 'info');
    state.retryTimer = setTimeout(function () { state.retryTimer = null; if (state.wanted) open(); }, delay);
  }

  function fail(message) {
    state.wanted = false;
    closeSource();
    setStatus('error');
    notify(message);
  }

  function setCursor(id) {
    if (!id) return;
    state.lastEventId = id;
    ui.cursor.textContent = '#' + id;
  }

  /* ---------- rendering ---------- */

  function enqueue(record) {
    var seq = Number(record.seq);
    if (seq && seq <= state.lastSeq) return;  // already shown (a resume that overlapped)
    if (seq) state.lastSeq = seq;
    state.pending.push(record);
    if (state.pending.length > MAX_ROWS) state.pending.splice(0, state.pending.length - MAX_ROWS);
    if (!state.flushQueued) {
      state.flushQueued = true;
      requestAnimationFrame(flush);
    }
  }

  function flush() {
    state.flushQueued = false;
    var records = state.pending;
    state.pending = [];
    var fragment = document.createDocumentFragment();
    records.forEach(function (record) { fragment.appendChild(makeRow(record)); });
    state.total += records.length;
    if (!state.follow) state.unseen += records.length;
    ui.list.appendChild(fragment);
    trimRows();
    afterChange();
  }

  function makeRow(record) {
    var level = levelOf(record);
    var row = el('div', 'row lvl-' + level);
    row.dataset.seq = record.seq;
    row.dataset.level = level;
    row.record = record;
    var line = el('div', 'row-line');
    var time = el('span', 'ts', formatTime(record.timestamp));
    time.title = record.timestamp || '';
    line.appendChild(time);
    line.appendChild(el('span', 'lvl', level));
    var source = el('span', 'src', record.source || '');
    source.title = record.source || '';
    line.appendChild(source);
    var message = String(record.message || '');
    var firstLine = message.split('\n', 1)[0];
    var text = el('span', 'msg', firstLine);
    var preview = fieldsPreview(record.fields);
    if (preview) text.appendChild(el('span', 'more', preview));
    else if (firstLine !== message) text.appendChild(el('span', 'more', '…'));
    line.appendChild(text);
    row.appendChild(line);
    if (!matches(record)) row.classList.add('filtered');
    return row;
  }

  /* A one-line hint of the record's fields, as key=value; the row expands to show them all. */
  function fieldsPreview(fields) {
    if (!fields) return '';
    return Object.keys(fields).slice(0, 8).map(function (key) {
      var value = fields[key];
      if (value !== null && typeof value === 'object') return key + '={…}';
      value = String(value);
      if (value.indexOf('\n') >= 0) return key + '=…';
      return key + '=' + (value.length > 40 ? value.slice(0, 39) + '…' : value);
    }).join('  ');
  }

  function addMarker(text) {
    ui.list.appendChild(el('div', 'marker', text));
    trimRows();
    afterChange();
  }

  function trimRows() {
    var excess = ui.list.childElementCount - MAX_ROWS;
    while (excess-- > 0) ui.list.removeChild(ui.list.firstElementChild);
  }

  function toggleDetails(row) {
    var details = row.querySelector('.details');
    if (details) {
      details.hidden = !details.hidden;
    } else {
      row.appendChild(buildDetails(row.record));
    }
    row.classList.toggle('expanded', !row.querySelector('.details').hidden);
  }

  function buildDetails(record) {
    var box = el('div', 'details');
    var message = String(record.message || '');
    if (message.indexOf('\n') >= 0) {
      box.appendChild(el('div', 'section-title', 'Message'));
      box.appendChild(el('pre', levelOf(record) === 'error' || levelOf(record) === 'fatal' ? 'stack' : '', message));
    }
    var fields = record.fields || {};
    var plain = el('dl');
    var blocks = [];
    Object.keys(fields).forEach(function (key) {
      var value = fields[key];
      if (typeof value === 'string' && value.indexOf('\n') >= 0) {
        blocks.push([key, value, 'stack']);
      } else if (value !== null && typeof value === 'object') {
        blocks.push([key, JSON.stringify(value, null, 2), '']);
      } else {
        plain.appendChild(el('dt', null, key));
        plain.appendChild(el('dd', null, String(value)));
      }
    });
    if (plain.childElementCount) {
      box.appendChild(el('div', 'section-title', 'Fields'));
      box.appendChild(plain);
    }
    blocks.forEach(function (block) {
      box.appendChild(el('div', 'section-title', block[0]));
      box.appendChild(el('pre', block[2], block[1]));
    });
    var meta = el('dl');
    [['seq', record.seq], ['channel', record.channel], ['timestamp', record.timestamp],
     ['received', record.received_at], ['publisher', record.publisher], ['id', record.id]]
      .forEach(function (pair) {
        if (pair[1] === undefined || pair[1] === null) return;
        meta.appendChild(el('dt', null, pair[0]));
        meta.appendChild(el('dd', null, String(pair[1])));
      });
    box.appendChild(el('div', 'section-title', 'Record'));
    box.appendChild(meta);
    return box;
  }

  /* ---------- filters, count, scrolling ---------- */

  function searchText(record) {
    if (record._search === undefined) {
      record._search = (String(record.message || '') + '\n' + (record.source || '') + '\n' +
        (record.fields ? JSON.stringify(record.fields) : '')).toLowerCase();
    }
    return record._search;
  }
  function matches(record) {
    if (LEVELS.indexOf(levelOf(record)) < state.minLevel) return false;
    return !state.filterText || searchText(record).indexOf(state.filterText) >= 0;
  }
  function applyFilters() {
    state.filterText = ui.filter.value.trim().toLowerCase();
    state.minLevel = ui.level.value ? LEVELS.indexOf(ui.level.value) : 0;
    var rows = ui.list.querySelectorAll('.row');
    for (var i = 0; i < rows.length; i++) rows[i].classList.toggle('filtered', !matches(rows[i].record));
    afterChange();
  }

  function afterChange() {
    var rows = ui.list.querySelectorAll('.row').length;
    var shown = ui.list.querySelectorAll('.row:not(.filtered)').length;
    ui.count.dataset.total = String(state.total);
    ui.count.dataset.shown = String(shown);
    var total = state.total.toLocaleString();
    var text = shown === rows ? total + (state.total === 1 ? ' record' : ' records')
      : shown.toLocaleString() + ' of ' + total + ' records shown';
    if (rows < state.total) text += ' (oldest ' + (state.total - rows).toLocaleString() + ' dropped)';
    ui.count.textContent = text;
    ui.empty.hidden = ui.list.childElementCount > 0;
    if (state.follow) scrollToEnd();
    else ui.autoscroll.textContent = state.unseen ? 'Resume scroll (' + state.unseen + ' new)' : 'Resume scroll';
  }

  function scrollToEnd() {
    ui.scroller.scrollTop = ui.scroller.scrollHeight;
  }
  function setFollow(follow) {
    state.follow = follow;
    state.unseen = 0;
    ui.autoscroll.dataset.paused = follow ? 'false' : 'true';
    ui.autoscroll.setAttribute('aria-pressed', follow ? 'true' : 'false');
    ui.autoscroll.textContent = follow ? 'Pause scroll' : 'Resume scroll';
    if (follow) scrollToEnd();
  }

  function clearList() {
    ui.list.textContent = '';
    state.total = 0;
    state.unseen = 0;
    afterChange();
  }

  /* ---------- wiring ---------- */

  function restoreForm() {
    var saved = load();
    var query = new URLSearchParams(location.search);
    config.routes.forEach(function (route) { ui.route.appendChild(new Option(route.label, route.name)); });
    var routeName = query.get('route') || saved.route;
    if (routeName && config.routes.some(function (r) { return r.name === routeName; })) ui.route.value = routeName;
    if (saved.history !== undefined) ui.history.value = saved.history;
    renderParams();
    currentRoute().params.forEach(function (name) {
      if (query.get(name)) $('param-' + name).value = query.get(name);
    });
    updateChannelPreview();
    return query.get('connect') === '1';
  }

  function wire() {
    ui.route.addEventListener('change', renderParams);
    ui.params.addEventListener('input', updateChannelPreview);
    ui.form.addEventListener('submit', function (event) { event.preventDefault(); connect(); });
    ui.disconnect.addEventListener('click', disconnect);
    ui.filter.addEventListener('input', applyFilters);
    ui.level.addEventListener('change', applyFilters);
    ui.clear.addEventListener('click', clearList);
    ui.autoscroll.addEventListener('click', function () { setFollow(!state.follow); });
    ui.list.addEventListener('click', function (event) {
      var line = event.target.closest('.row-line');
      if (line && !window.getSelection().toString()) toggleDetails(line.parentNode);
    });
    ui.scroller.addEventListener('scroll', function () {
      var gap = ui.scroller.scrollHeight - ui.scroller.scrollTop - ui.scroller.clientHeight;
      if (state.follow && gap > FOLLOW_SLACK_PX) setFollow(false);
      else if (!state.follow && gap <= 2) setFollow(true);
    });
  }

  function start() {
    wire();
    setupIdentity();
    var autoConnect = restoreForm();
    setStatus('idle');
    afterChange();
    var ready = config.dev ? signIn(ui.devUser.value).catch(function (err) {
      notify('Sign-in failed: ' + err.message);
    }) : Promise.resolve();
    if (autoConnect) ready.then(connect);
  }

  start();
}());
