// The Logs page's row list: rendering, the level and text filters, follow/pause, download.
// It knows records and the DOM, nothing of connections.
//
// The list is bounded: past `maxRows` the oldest rows leave the DOM (pages loaded with "Load
// older" raise the bound by their size: the reader asked for them). Filters hide rows (they
// stay in the DOM, so clearing a filter is instant). Rows stay in seq order whatever order
// records come in (a newly watched channel's history lands among the rows already there), and
// a seq is shown once. Every row is a `data-testid="log-row"` with `data-seq`, `data-level` and
// `data-channel`; notices (a gap, a reload) are `data-testid="notice-row"`. An expanded row's
// values are buttons (`data-testid="field-filter"`) that ask the page to filter on them.

import { equals, fieldPath } from './where-builder.js';

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

const seqNumber = (record) => {
  const seq = Number(record.seq);
  return Number.isFinite(seq) ? seq : null;
};

export class LogView {
  /**
   * @param options {list, scroller, empty, maxRows, onChange, onFilter(field, value),
   *   onSelect(seq), channelLabel(channel) -> {text, title, tone}}
   */
  constructor({ list, scroller, empty, maxRows, onChange, onFilter, onSelect, channelLabel }) {
    this.list = list;
    this.scroller = scroller;
    this.empty = empty;
    this.maxRows = maxRows;
    this.extra = 0;  // rows loaded with "Load older" on top of maxRows
    this.onChange = onChange || (() => {});
    this.onFilter = onFilter || (() => {});
    this.onSelect = onSelect || (() => {});
    this.channelLabel = channelLabel || ((channel) => ({ text: channel || '', title: channel || '', tone: 0 }));
    this.minLevel = 0;
    this.text = '';
    this.follow = true;
    this.unseen = 0;
    this.dropped = 0;
    this.seqs = new Set();
    this.selected = null;
    list.addEventListener('click', (event) => {
      const filter = event.target.closest('[data-testid="field-filter"]');
      if (filter) {
        this.onFilter(filter.dataset.field, JSON.parse(filter.value));
        return;
      }
      const line = event.target.closest('.row-line');
      if (line && !window.getSelection().toString()) {
        this.toggle(line.parentElement);
        this.select(line.parentElement.record.seq);
        this.onSelect(seqNumber(line.parentElement.record));
      }
    });
    list.addEventListener('keydown', (event) => this._onKey(event));
    scroller.addEventListener('scroll', () => this._onScroll());
  }

  /** Add records (any order; those already shown are skipped): new ones go where their seq says. */
  append(records) {
    if (!records.length) return;
    let shown = 0;
    let fragment = document.createDocumentFragment();
    let lastSeq = this._lastSeq();
    const flush = () => {
      if (fragment.childElementCount) this.list.appendChild(fragment);
      fragment = document.createDocumentFragment();
    };
    for (const record of records) {
      const seq = seqNumber(record);
      if (seq !== null && this.seqs.has(seq)) continue;
      const row = this._row(record);
      if (seq !== null) this.seqs.add(seq);
      if (seq !== null && lastSeq !== null && seq < lastSeq) {
        flush();
        this._insertInOrder(row, seq);
      } else {
        fragment.appendChild(row);
        if (seq !== null) lastSeq = seq;
      }
      if (!row.hidden) shown++;
    }
    flush();
    if (!this.follow) this.unseen += shown;
    this._settle();
  }

  /**
   * Put an older page on top (ascending records, all older than the rows here), keeping what
   * the reader sees where it is. Returns how many rows were added.
   */
  prepend(records) {
    const fresh = records.filter((record) => {
      const seq = seqNumber(record);
      return seq === null || !this.seqs.has(seq);
    });
    if (!fresh.length) return 0;
    const fragment = document.createDocumentFragment();
    for (const record of fresh) {
      const seq = seqNumber(record);
      if (seq !== null) this.seqs.add(seq);
      fragment.appendChild(this._row(record));
    }
    const before = this.scroller.scrollHeight;
    const top = this.scroller.scrollTop;
    const first = this.list.querySelector('.row');
    this.list.insertBefore(fragment, first);
    this.extra += fresh.length;
    this.scroller.scrollTop = top + (this.scroller.scrollHeight - before);
    this._settle({ scroll: false });
    return fresh.length;
  }

  /** The oldest seq shown (null when there is none). */
  oldestSeq() {
    const row = this.list.querySelector('.row');
    return row ? seqNumber(row.record) : null;
  }

  /** Remove the rows of channels not in `keep`. */
  keepChannels(keep) {
    const wanted = new Set(keep);
    for (const row of [...this.list.querySelectorAll('.row')]) {
      if (!wanted.has(row.record.channel)) {
        this.seqs.delete(seqNumber(row.record));
        row.remove();
      }
    }
    this._settle();
  }

  /** Mark the row of `seq` as the one looked at (null: none); scroll to it when asked. */
  select(seq, { scroll = false } = {}) {
    if (this.selected) {
      this.selected.classList.remove('selected');
      this.selected.removeAttribute('aria-current');
    }
    this.selected = seq === null || seq === undefined ? null
      : this.list.querySelector(`.row[data-seq="${Number(seq)}"]`);
    if (!this.selected) return false;
    this.selected.classList.add('selected');
    this.selected.setAttribute('aria-current', 'true');
    if (scroll) {
      if (this.follow) this.setFollow(false);
      this.selected.scrollIntoView({ block: 'center' });
    }
    return true;
  }

  /** Refresh the channel column (the labels depend on what is watched). */
  relabel() {
    for (const row of this.list.querySelectorAll('.row')) {
      const cell = row.querySelector('.chan');
      if (cell) this._labelChannel(cell, row.record.channel);
    }
  }

  _lastSeq() {
    const rows = this.list.querySelectorAll('.row');
    for (let i = rows.length - 1; i >= 0; i--) {
      const seq = seqNumber(rows[i].record);
      if (seq !== null) return seq;
    }
    return null;
  }

  _insertInOrder(row, seq) {
    const rows = this.list.querySelectorAll('.row');
    let lo = 0;
    let hi = rows.length;  // the first row with a larger seq
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const other = seqNumber(rows[mid].record);
      if (other !== null && other > seq) hi = mid; else lo = mid + 1;
    }
    this.list.insertBefore(row, rows[lo] || null);
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
    this.extra = 0;
    this.seqs.clear();
    this.selected = null;
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

  _settle({ scroll = true } = {}) {
    let excess = this.list.childElementCount - (this.maxRows + this.extra);
    while (excess-- > 0) {
      const first = this.list.firstElementChild;
      if (first.classList.contains('row')) {
        this.dropped++;
        this.seqs.delete(seqNumber(first.record));
      }
      if (first === this.selected) this.selected = null;
      first.remove();
    }
    this.empty.hidden = this.list.childElementCount > 0;
    if (this.follow && scroll) this._scrollToEnd();
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
    row.dataset.channel = String(record.channel ?? '');
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
    const channel = el('span', 'chan');
    this._labelChannel(channel, record.channel);
    line.append(time, el('span', 'lvl', level), channel, source, text);
    row.appendChild(line);
    row.hidden = !this.matches(record);
    return row;
  }

  _labelChannel(cell, channel) {
    const { text, title, tone } = this.channelLabel(String(channel ?? ''));
    cell.textContent = text;
    cell.title = title;
    cell.dataset.tone = String(tone);
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
      } else plain.append(el('dt', null, key), filterable(fieldPath(key), value));
    }
    if (plain.childElementCount) box.append(el('div', 'section-title', 'Fields'), plain);
    for (const [key, value, className] of blocks) {
      box.append(el('div', 'section-title', key), el('pre', className, value));
    }
    const meta = el('dl');
    meta.append(el('dt', null, 'level'), filterable('level', level));
    if (record.source) meta.append(el('dt', null, 'source'), filterable('source', record.source));
    if (record.channel) meta.append(el('dt', null, 'channel'), filterable('channel', record.channel));
    for (const name of ['seq', 'timestamp', 'received_at', 'publisher', 'id']) {
      if (record[name] === undefined || record[name] === null) continue;
      meta.append(el('dt', null, name), el('dd', null, String(record[name])));
    }
    box.append(el('div', 'section-title', 'Record'), meta);
    return box;
  }
}

/** A <dd> whose value is a button: "filter on <field> = <value>". */
function filterable(field, value) {
  const dd = el('dd');
  const button = el('button', 'field-value', String(value));
  button.type = 'button';
  button.dataset.testid = 'field-filter';
  button.dataset.field = field;
  button.value = JSON.stringify(value);
  const clause = equals(field, value);
  button.title = `Filter on the server: ${clause}`;
  button.setAttribute('aria-label', `${String(value)}: add the filter ${clause}`);
  dd.appendChild(button);
  return dd;
}

/** The records as NDJSON, one per line, as delivered. */
export function toNdjson(records) {
  return records.map((record) => JSON.stringify(record)).join('\n') + (records.length ? '\n' : '');
}
