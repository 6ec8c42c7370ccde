// The Server-Sent Events wire format (WHATWG HTML, "Parsing an event stream"), for a client
// that reads the stream with fetch instead of EventSource. One concept: text in, events out.
//
//   const parser = new SseParser();
//   for (const event of parser.push(chunkOfText)) { ... }   // {type, data, id}
//   parser.retryMs     // the server's last `retry:` hint, or null
//
// Lines end with CRLF, LF or CR (a CR at the end of one chunk may pair with an LF at the start
// of the next). A comment line (":") is counted, not returned: it only proves the stream lives.
// `id` follows the spec: it persists from event to event, and an id holding NUL is ignored.

export class SseParser {
  constructor() {
    this.lastEventId = '';
    this.retryMs = null;
    this.comments = 0;
    this._buffer = '';
    this._pendingCR = false;
    this._resetEvent();
  }

  _resetEvent() {
    this._type = '';
    this._data = [];
    this._hasData = false;
  }

  /** Feed decoded text; returns the events completed by it, in order. */
  push(text) {
    let chunk = text;
    if (this._pendingCR && chunk.startsWith('\n')) chunk = chunk.slice(1);
    this._pendingCR = false;
    this._buffer += chunk;
    const events = [];
    let start = 0;
    for (let i = 0; i < this._buffer.length; i++) {
      const c = this._buffer.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      const line = this._buffer.slice(start, i);
      if (c === 13) {
        if (i + 1 === this._buffer.length) this._pendingCR = true;
        else if (this._buffer.charCodeAt(i + 1) === 10) i++;
      }
      start = i + 1;
      const event = this._line(line);
      if (event) events.push(event);
    }
    this._buffer = this._buffer.slice(start);
    return events;
  }

  _line(line) {
    if (line === '') return this._dispatch();
    if (line.startsWith(':')) {
      this.comments++;
      return null;
    }
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') this._type = value;
    else if (field === 'data') { this._data.push(value); this._hasData = true; }
    else if (field === 'id') { if (!value.includes('\0')) this.lastEventId = value; }
    else if (field === 'retry') { if (/^\d+$/.test(value)) this.retryMs = Number(value); }
    return null;
  }

  _dispatch() {
    // An event without data is not dispatched (the spec), but its id has been kept above.
    const event = this._hasData
      ? { type: this._type || 'message', data: this._data.join('\n'), id: this.lastEventId }
      : null;
    this._resetEvent();
    return event;
  }
}
