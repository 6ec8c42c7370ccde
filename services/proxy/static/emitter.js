// A minimal event emitter shared by the stream client and the subscription: `on(type, fn)`
// returns an unsubscribe function; a listener that throws is logged and the others still run.

export class Emitter {
  constructor(label) {
    this._listeners = new Map();
    this._label = label;
  }

  on(type, listener) {
    if (!this._listeners.has(type)) this._listeners.set(type, new Set());
    this._listeners.get(type).add(listener);
    return () => this._listeners.get(type).delete(listener);
  }

  _emit(type, detail) {
    for (const listener of this._listeners.get(type) || []) {
      try { listener(detail); } catch (error) { console.error(`${this._label} listener`, error); }
    }
  }
}
