// The Logs page's address: what it shows, so that a reload or a pasted link opens the same view.
//
//   ?service=etl&workspace_id=workspace123&workflow_id=wf1        the form (the seed's links)
//   &channels=logs:etl:workspace123:wf1,logs:etl:workspace123:wf2 the watched channels
//   &level=warn&q=disk&where=fields.table%20%3D%20orders           the filters
//   &at=1234                                                      the record being looked at
//   &connect=1                                                    (old links) watch the form's channel
//   &max_rows=N                                                   the list's bound
//
// The page rewrites it with history.replaceState as things change (no new history entries).

const SEQ = /^\d{1,20}$/;

// Channel names and expressions stay readable in the address: ':', ',', '/' and '@' are left as
// they are (all legal in a query), spaces become '+'.
function encode(value) {
  return encodeURIComponent(value).replace(/%3A/gi, ':').replace(/%2C/gi, ',')
    .replace(/%2F/gi, '/').replace(/%40/gi, '@').replace(/%20/g, '+');
}

/** The channels a query names (`channels=a,b` and/or repeated), deduplicated, in order. */
export function channelsOf(query) {
  const names = query.getAll('channels').flatMap((value) => value.split(','))
    .map((name) => name.trim()).filter(Boolean);
  return [...new Set(names)];
}

/** The page's state from its query: {channels, level, q, where, at, connect}. */
export function readPageQuery(query) {
  const at = query.get('at');
  return {
    channels: channelsOf(query),
    level: query.get('level') || '',
    q: query.get('q') || '',
    where: query.get('where') || '',
    at: at && SEQ.test(at) ? Number(at) : null,
    connect: query.get('connect') === '1',
  };
}

/**
 * The address for a state: {service, values (the form's IDs), channels, level, q, where, at,
 * maxRows (kept only when the page was opened with one)}.
 */
export function pageAddress(state) {
  const parts = [];
  const add = (name, value) => {
    if (value !== undefined && value !== null && value !== '') parts.push(`${name}=${encode(String(value))}`);
  };
  add('service', state.service);
  for (const [name, value] of Object.entries(state.values || {})) add(name, value);
  add('channels', (state.channels || []).join(','));
  add('level', state.level);
  add('q', state.q);
  add('where', state.where);
  add('at', state.at);
  add('max_rows', state.maxRows);
  return `${location.pathname}${parts.length ? `?${parts.join('&')}` : ''}`;
}

/** Replace the address (no history entry) when it changed. */
export function replaceAddress(state) {
  const address = pageAddress(state);
  if (address !== `${location.pathname}${location.search}`) history.replaceState(null, '', address);
}
