// The Logs page's row list: rendering, the level and text filters, follow/pause, download.
// It knows records and the DOM, nothing of connections.
//
// The list is bounded: past `maxRows` the oldest rows leave the DOM. Filters hide rows (they
// stay in the DOM, so clearing a filter is instant). Every row is a `data-testid="log-row"`
// with `data-seq` and `data-level`; notices (a gap, a reload) are `data-testid="notice-row"`.

export const LEVELS = Object.freeze(['trace', 'debug', 'info', 'warn', 'error', 'fatal']);
// The first line of a message is shown in the row; longer than this, it is cut and expandable.
const PREVIEW_CHARS = 400;
// How close to the bottom (px) still counts as following the stream.
const FOLLOW_SLACK_PX = 24;
const searchCache = new WeakMap();

export function levelOf(record) {
  const level = String(record.level || 'info').toLowerCase();
  return LEVELS.includes(level) ? level : 'info';
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

function pad(n, width = 2) { return String(n).padStart(width, '0'); }

export function formatTime(value) {
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return String(value || '');
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.` +
    pad(date.getMilliseconds(), 3);
}

function searchText(record) {
  let text = searchCache.get(record);
  if (text === undefined) {
    text = [record.message, record.source, record.fields ? JSON.stringify(record.fields) : '']
      .join('\n').toLowerCase();
    searchCache.set(record, text);
  }
  return text;
}

/** A one-line hint of the record's fields (key=value), for the row. */
function fieldsPreview(fields) {
  if (!fields || typeof fields !== 'object') return '';
  return Object.keys(fields).slice(0, 6).map((key) => {
    const value = fields[key];
    if (value !== null && typeof value === 'object') return `${key}={…}`;
    const text = String(value);
    if (text.includes('\n')) return `${key}=…`;
    return `${key}=${text.length > 40 ? `${text.slice(0, 39)}…` : text}`;
  }).join('  ');
}

function expandable(record) {
  const message = String(record.message ?? '');
  return message.includes('\n') || message.length > PREVIEW_CHARS ||
    Object.values(record.fields || {}).some((v) => typeof v === 'object' || String(v).includes('\n'));
}

export class LogView {
  constructor({ list, scroller, empty, maxRows, onChange }) {
    this.list = list;
    this.scroller = scroller;
    this.empty = empty;
    this.maxRows = maxRows;
    this.onChange = onChange || (() => {});
    this.minLevel = 0;
    this.text = '';
    this.follow = true;
    this.unseen = 0;
    this.dropped = 0;
    list.addEventListener('click', (event) => {
      const line = event.target.closest('.row-line');
      if (line && !window.getSelection().toString()) this.toggle(line.parentElement);
    });
    list.addEventListener('keydown', (event) => this._onKey(event));
    scroller.addEventListener('scroll', () => this._onScroll());
  }

  append(records) {
    if (!records.length) return;
    const fragment = document.createDocumentFragment();
    let shown = 0;
    for (const record of records) {
      const row = this._row(record);
      if (!row.hidden) shown++;
      fragment.appendChild(row);
    }
    this.list.appendChild(fragment);
    if (!this.follow) this.unseen += shown;
    this._settle();
  }

  notice(text, kind = 'info') {
    const row = el('div', `notice-row notice-${kind}`, text);
    row.dataset.testid = 'notice-row';
    row.setAttribute('role', 'note');
    this.list.appendChild(row);
    this._settle();
  }

  clear() {
    this.list.textContent = '';
    this.unseen = 0;
    this.dropped = 0;
    this._settle();
  }

  setFilter({ level, text }) {
    this.minLevel = level ? Math.max(0, LEVELS.indexOf(level)) : 0;
    this.text = (text || '').trim().toLowerCase();
    for (const row of this.list.querySelectorAll('.row')) row.hidden = !this.matches(row.record);
    this._settle();
  }

  matches(record) {
    if (LEVELS.indexOf(levelOf(record)) < this.minLevel) return false;
    return !this.text || searchText(record).includes(this.text);
  }

  /** The records of the rows shown now (filters applied), oldest first. */
  shownRecords() {
    return [...this.list.querySelectorAll('.row:not([hidden])')].map((row) => row.record);
  }

  counts() {
    return { rows: this.list.querySelectorAll('.row').length,
             shown: this.list.querySelectorAll('.row:not([hidden])').length,
             dropped: this.dropped, unseen: this.unseen };
  }

  setFollow(follow) {
    this.follow = follow;
    this.unseen = 0;
    if (follow) this._scrollToEnd();
    this.onChange();
  }

  toggle(row) {
    if (!row || !row.classList.contains('row')) return;
    let details = row.querySelector('.details');
    if (!details) {
      details = this._details(row.record);
      row.appendChild(details);
    } else {
      details.hidden = !details.hidden;
    }
    const open = !details.hidden;
    row.classList.toggle('expanded', open);
    row.querySelector('.row-line').setAttribute('aria-expanded', String(open));
  }

  _settle() {
    let excess = this.list.childElementCount - this.maxRows;
    while (excess-- > 0) {
      if (this.list.firstElementChild.classList.contains('row')) this.dropped++;
      this.list.firstElementChild.remove();
    }
    this.empty.hidden = this.list.childElementCount > 0;
    if (this.follow) this._scrollToEnd();
    this.onChange();
  }

  _scrollToEnd() {
    this.scroller.scrollTop = this.scroller.scrollHeight;
  }

  // Our own scrolls land at the end (gap 0), so only the reader's scrolling up pauses.
  _onScroll() {
    const gap = this.scroller.scrollHeight - this.scroller.scrollTop - this.scroller.clientHeight;
    if (this.follow && gap > FOLLOW_SLACK_PX) this.setFollow(false);
    else if (!this.follow && gap <= 2) this.setFollow(true);
  }

  _onKey(event) {
    const keys = ['ArrowDown', 'ArrowUp', 'Home', 'End'];
    if (!keys.includes(event.key)) return;
    const lines = [...this.list.querySelectorAll('.row:not([hidden]) > .row-line')];
    if (!lines.length) return;
    event.preventDefault();
    const at = lines.indexOf(document.activeElement);
    let next = at;
    if (event.key === 'Home') next = 0;
    else if (event.key === 'End') next = lines.length - 1;
    else if (at < 0) next = event.key === 'ArrowDown' ? 0 : lines.length - 1;
    else next = Math.min(lines.length - 1, Math.max(0, at + (event.key === 'ArrowDown' ? 1 : -1)));
    lines[next].focus();
  }

  _row(record) {
    const level = levelOf(record);
    const row = el('div', `row lvl-${level}`);
    row.dataset.testid = 'log-row';
    row.dataset.seq = String(record.seq ?? '');
    row.dataset.level = level;
    row.record = record;
    const line = el('button', 'row-line');
    line.type = 'button';
    line.tabIndex = -1;  // the list is one tab stop; arrow keys move between rows
    line.setAttribute('aria-expanded', 'false');
    const time = el('time', 'ts', formatTime(record.timestamp));
    time.dateTime = String(record.timestamp || '');
    time.title = String(record.timestamp || '');
    const source = el('span', 'src', record.source || '');
    source.title = record.source || '';
    const message = String(record.message ?? '');
    let first = message.split('\n', 1)[0];
    if (first.length > PREVIEW_CHARS) first = `${first.slice(0, PREVIEW_CHARS)}…`;
    const text = el('span', 'msg', first);
    const preview = fieldsPreview(record.fields);
    if (preview) text.appendChild(el('span', 'more', preview));
    if (expandable(record)) row.classList.add('has-more');
    line.append(time, el('span', 'lvl', level), source, text);
    row.appendChild(line);
    row.hidden = !this.matches(record);
    return row;
  }

  _details(record) {
    const box = el('div', 'details');
    const message = String(record.message ?? '');
    const level = levelOf(record);
    if (message.includes('\n') || message.length > 120) {
      box.append(el('div', 'section-title', 'Message'),
                 el('pre', level === 'error' || level === 'fatal' ? 'stack' : '', message));
    }
    const plain = el('dl');
    const blocks = [];
    for (const [key, value] of Object.entries(record.fields || {})) {
      if (typeof value === 'string' && value.includes('\n')) blocks.push([key, value, 'stack']);
      else if (value !== null && typeof value === 'object') {
        blocks.push([key, JSON.stringify(value, null, 2), '']);
      } else plain.append(el('dt', null, key), el('dd', null, String(value)));
    }
    if (plain.childElementCount) box.append(el('div', 'section-title', 'Fields'), plain);
    for (const [key, value, className] of blocks) {
      box.append(el('div', 'section-title', key), el('pre', className, value));
    }
    const meta = el('dl');
    for (const name of ['seq', 'channel', 'timestamp', 'received_at', 'publisher', 'id']) {
      if (record[name] === undefined || record[name] === null) continue;
      meta.append(el('dt', null, name), el('dd', null, String(record[name])));
    }
    box.append(el('div', 'section-title', 'Record'), meta);
    return box;
  }
}

/** The records as NDJSON, one per line, as delivered. */
export function toNdjson(records) {
  return records.map((record) => JSON.stringify(record)).join('\n') + (records.length ? '\n' : '');
}
