// The Logs page's "what to watch" form: a service (a route of the proxy's route table) and the
// IDs its channel template needs. It turns the form into a target the stream can open, and the
// page's address (?service=etl&workspace_id=...&workflow_id=...) into the form.
//
// `workspace_id` has its own input, the route's next parameter is "the resource" (workflow_id,
// function_id), and any further ones, from a custom route table, get inputs of their own.

// The seed's IDs, so that a fresh `logstream up` shows logs with one click.
const PREFILL = { workspace_id: 'workspace123', workflow_id: 'workflow456', function_id: 'function789' };
// One channel segment (docs/reference/channels.md); the server checks again.
const SEGMENT = /^[A-Za-z0-9_-]{1,64}$/;
const PARAM = /\{([A-Za-z_][A-Za-z0-9_]*)\}/g;

/** workflow_id -> "Workflow ID" */
export function humanise(name) {
  const text = name.split('_').filter(Boolean).map((w) => (w === 'id' ? 'ID' : w)).join(' ');
  return text.charAt(0).toUpperCase() + text.slice(1);
}

export class StreamForm {
  /** @param elements {service, workspace, resource, resourceField, resourceLabel, extra, channel} */
  constructor(routes, elements) {
    this.routes = routes;
    this.ui = elements;
    for (const route of routes) elements.service.appendChild(new Option(route.label, route.name));
  }

  routeNamed(name) {
    return this.routes.find((route) => route.name === name);
  }

  get route() {
    return this.routeNamed(this.ui.service.value) || this.routes[0];
  }

  _resource(route) {
    return route.params.find((name) => name !== 'workspace_id') || null;
  }

  _input(name, route = this.route) {
    if (name === 'workspace_id') return this.ui.workspace;
    if (name === this._resource(route)) return this.ui.resource;
    return document.getElementById(`param-${name}`);
  }

  /** Show the inputs the chosen route needs, filled from `values`, else kept, else prefilled. */
  render(values = {}) {
    const { ui } = this;
    const route = this.route;
    const resource = this._resource(route);
    const kept = Object.fromEntries(route.params.map((name) => [name, this._input(name)?.value]));
    ui.workspace.closest('.field').hidden = !route.params.includes('workspace_id');
    ui.resourceField.hidden = !resource;
    ui.resource.disabled = !resource;
    ui.resourceLabel.textContent = resource ? humanise(resource) : 'Resource ID';
    ui.resource.name = resource || '';
    ui.extra.textContent = '';
    for (const name of route.params.filter((n) => n !== 'workspace_id' && n !== resource)) {
      const field = Object.assign(document.createElement('div'), { className: 'field' });
      const label = Object.assign(document.createElement('label'),
                                  { htmlFor: `param-${name}`, textContent: humanise(name) });
      const input = Object.assign(document.createElement('input'),
                                  { type: 'text', name, id: `param-${name}`, spellcheck: false });
      field.append(label, input);
      ui.extra.appendChild(field);
    }
    for (const name of route.params) {
      const input = this._input(name);
      input.value = values[name] ?? (kept[name] || (name === resource && ui.resource.value) ||
                                     PREFILL[name] || '');
      input.removeAttribute('aria-invalid');
    }
    this.renderChannel();
  }

  renderChannel() {
    const route = this.route;
    const values = Object.fromEntries(route.params.map((n) => [n, this._input(n).value.trim()]));
    this.ui.channel.textContent = channelOf(route, values);
  }

  /**
   * The form as a target {route, values, channel, url}; or, when an ID is malformed, null and
   * `problem` says which (the inputs are marked aria-invalid and the first one is focused).
   */
  read() {
    const route = this.route;
    const values = {};
    const wrong = [];
    for (const name of route.params) {
      const input = this._input(name);
      values[name] = input.value.trim();
      const valid = SEGMENT.test(values[name]);
      input.setAttribute('aria-invalid', String(!valid));
      if (!valid) wrong.push(name);
    }
    this.problem = wrong.length
      ? `${wrong.map(humanise).join(', ')}: must be 1 to 64 letters, digits, "_" or "-".` : '';
    if (wrong.length) {
      this._input(wrong[0]).focus();
      return null;
    }
    return { route, values, channel: channelOf(route, values),
             url: `${route.path}?${new URLSearchParams(values)}` };
  }

  /**
   * The channel prefix of the chosen service and workspace (`logs:etl:workspace123`), whose
   * channels the sidebar lists; null while the workspace ID is not a valid segment.
   */
  prefix() {
    const route = this.route;
    const template = route.channel;
    const at = template.indexOf('{workspace_id}');
    if (at < 0) return null;
    const workspace = this.ui.workspace.value.trim();
    if (!SEGMENT.test(workspace)) return null;
    const head = template.slice(0, at + '{workspace_id}'.length);
    if (/\{[A-Za-z_]/.test(head.replace('{workspace_id}', ''))) return null;  // another ID first
    return head.replace('{workspace_id}', workspace);
  }

  /** The form's IDs as they are (for the page's address), trimmed. */
  values() {
    return Object.fromEntries(this.route.params.map((n) => [n, this._input(n).value.trim()]));
  }

  /** {service, values} named by the page's query, or null. */
  fromQuery(query) {
    const route = this.routeNamed(query.get('service') || query.get('route'));
    if (!route) return null;
    return { service: route.name, values: Object.fromEntries(
      route.params.filter((n) => query.has(n)).map((n) => [n, query.get(n)])) };
  }

  same(a, b) {
    const route = this.routeNamed(a.service);
    return Boolean(route) && a.service === b?.service
      && route.params.every((n) => a.values[n] === b.values?.[n]);
  }

  fill(target) {
    if (target && this.routeNamed(target.service)) this.ui.service.value = target.service;
    this.render(target ? target.values : {});
  }
}

function channelOf(route, values) {
  return route.channel.replace(PARAM, (_, name) => values[name] || `{${name}}`);
}
