// Building `where=` expressions (the server's grammar, shared/where.py) from values the user
// clicks in an expanded record: `fields.table = orders`, `level = warn`, `source = 'etl load'`.
// The server parses and checks the expression; this module only writes it correctly quoted.

const KEY = /^[A-Za-z0-9_-]+$/;
const BARE = /^[A-Za-z0-9_.:/@+-]+$/;
const NUMBER = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?$/;
const KEYWORDS = new Set(['and', 'or', 'not', 'in', 'true', 'false', 'null']);

/** A string literal: bare when the grammar reads it back as the same string, else quoted. */
export function quoteString(text) {
  const value = String(text);
  if (BARE.test(value) && !NUMBER.test(value) && !KEYWORDS.has(value.toLowerCase())) return value;
  return `'${value.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

/** Any JSON scalar as a literal: numbers, booleans and null as such, strings quoted. */
export function literal(value) {
  if (value === null || value === undefined) return 'null';
  if (typeof value === 'boolean') return String(value);
  if (typeof value === 'number' && Number.isFinite(value)) return String(value);
  return quoteString(value);
}

/** `fields.<key>` for a field of the record, the key quoted when it has other characters. */
export function fieldPath(key) {
  const part = KEY.test(key) ? key : `'${String(key).replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
  return `fields.${part}`;
}

/** `<field> = <value>`. */
export function equals(field, value) {
  return `${field} = ${literal(value)}`;
}

/** Whether the expression has an `or` outside quotes and parentheses (so ANDing needs them). */
function hasTopLevelOr(expression) {
  let depth = 0;
  let quote = null;
  for (let i = 0; i < expression.length; i++) {
    const c = expression[i];
    if (quote) {
      if (c === '\\') i++;
      else if (c === quote) quote = null;
    } else if (c === "'" || c === '"') quote = c;
    else if (c === '(') depth++;
    else if (c === ')') depth--;
    else if (depth === 0 && /^or\b/i.test(expression.slice(i)) && /[\s)]/.test(expression[i - 1] || ' ')) {
      return true;
    }
  }
  return false;
}

/** `expression and clause` (the expression parenthesised when it holds a bare `or`). */
export function andClause(expression, clause) {
  const current = (expression || '').trim();
  if (!current) return clause;
  const left = hasTopLevelOr(current) ? `(${current})` : current;
  return `${left} and ${clause}`;
}
