// Pieces the exchange and queue pages share: the argument picker, the publish form and the
// bindings tables.
import * as api from './api.js';
import { h, seg } from './api.js';

// The arguments RabbitMQ's UI offers as one-click links, with their types.
export const QUEUE_ARGUMENTS = [
  ['x-message-ttl', 'number', 'Message TTL (ms)'],
  ['x-expires', 'number', 'Auto expire (ms)'],
  ['x-max-length', 'number', 'Max length'],
  ['x-max-length-bytes', 'number', 'Max length bytes'],
  ['x-overflow', 'string', 'Overflow behaviour (drop-head, reject-publish, reject-publish-dlx)'],
  ['x-dead-letter-exchange', 'string', 'Dead letter exchange'],
  ['x-dead-letter-routing-key', 'string', 'Dead letter routing key'],
  ['x-single-active-consumer', 'boolean', 'Single active consumer'],
  ['x-max-priority', 'number', 'Maximum priority'],
  ['x-queue-mode', 'string', 'Lazy mode (lazy)'],
  ['x-delivery-limit', 'number', 'Delivery limit'],
];
export const EXCHANGE_ARGUMENTS = [
  ['alternate-exchange', 'string', 'Alternate exchange'],
  ['x-delayed-type', 'string', 'Delayed type (for x-delayed-message)'],
];

// Rows of key = value with a picker of known keys; `read()` gives the typed table.
export function argumentsEditor(id, known) {
  const types = Object.fromEntries(known.map(([key, type]) => [key, type]));
  const rows = h('div', { class: 'arguments', id });
  const addRow = (key, value) => {
    const keyInput = h('input', { class: 'arg-key', placeholder: 'key', value: key || '' });
    const valueInput = h('input', { class: 'arg-value', placeholder: 'value', value: value || '' });
    const row = h('div', { class: 'arg-row' }, keyInput, ' = ', valueInput,
      h('button', { type: 'button', class: 'small', onclick: () => row.remove() }, '×'));
    rows.append(row);
    return valueInput;
  };
  addRow();
  const picker = h('div', { class: 'arg-picker' }, 'Add: ', known.map(([key, type, label]) =>
    h('a', { href: '#', title: `${label} (${type})`, 'data-arg': key, onclick: event => {
      event.preventDefault();
      const empty = [...rows.querySelectorAll('.arg-row')].find(r => !r.querySelector('.arg-key').value);
      if (empty) {
        empty.querySelector('.arg-key').value = key;
        empty.querySelector('.arg-value').value = type === 'boolean' ? 'true' : '';
        empty.querySelector('.arg-value').focus();
      } else {
        addRow(key, type === 'boolean' ? 'true' : '').focus();
      }
      addRow();
    } }, label)).flatMap((link, i) => (i ? [' | ', link] : [link])));
  const read = () => {
    const out = {};
    for (const row of rows.querySelectorAll('.arg-row')) {
      const key = row.querySelector('.arg-key').value.trim();
      if (key) out[key] = api.argumentValue(key, row.querySelector('.arg-value').value, types);
    }
    return out;
  };
  return { element: h('div', {}, rows, picker), read };
}

// Publish to `exchange` (the default exchange: routing key = queue name). Hidden from users
// who may not change anything.
export function publishForm(vhost, exchange, defaultRoutingKey) {
  if (!api.canChange()) return null;
  const headers = argumentsEditor('publish-headers', []);
  const result = h('p', { id: 'publish-result', class: 'muted' });
  const form = h('form', { id: 'publish-form', class: 'stacked' },
    h('label', {}, 'Routing key', h('input', { name: 'routing_key', id: 'publish-routing-key', value: defaultRoutingKey || '' })),
    h('label', {}, 'Delivery mode', h('select', { name: 'delivery_mode' },
      h('option', { value: '1' }, '1 - Non-persistent'), h('option', { value: '2' }, '2 - Persistent'))),
    h('div', { class: 'label' }, 'Headers', headers.element),
    h('label', {}, 'Properties (JSON, e.g. {"content_type": "text/plain"})', h('input', { name: 'properties', id: 'publish-properties', value: '{}' })),
    h('label', {}, 'Payload encoding', h('select', { name: 'payload_encoding' },
      h('option', { value: 'string' }, 'String (default)'), h('option', { value: 'base64' }, 'Base64'))),
    h('label', {}, 'Payload', h('textarea', { name: 'payload', id: 'publish-payload', rows: 4 })),
    h('button', { type: 'submit', id: 'publish-submit' }, 'Publish message'), result);
  form.addEventListener('submit', async event => {
    event.preventDefault();
    const v = api.formValues(form);
    let properties;
    try { properties = JSON.parse(v.properties || '{}'); } catch (_) {
      api.flash('Properties must be a JSON object', 'error');
      return;
    }
    properties.delivery_mode = Number(v.delivery_mode);
    const extra = headers.read();
    if (Object.keys(extra).length) properties.headers = extra;
    const name = exchange === '' ? 'amq.default' : exchange;
    await api.act('Message published', async () => {
      const reply = await api.api('POST', `/exchanges/${seg(vhost)}/${seg(name)}/publish`,
        { properties, routing_key: v.routing_key, payload: v.payload, payload_encoding: v.payload_encoding });
      result.textContent = reply.routed ? 'Message published.' : 'Message published, but not routed.';
    });
    api.hooks.refresh();
  });
  return form;
}

// Bindings as a table; an unbind button on each for users who may change things.
export function bindingsTable(id, bindings, vhost) {
  const rows = bindings.map(b => h('tr', {},
    h('td', {}, b.source === '' ? '(AMQP default)' : h('a', { href: `#/exchanges/${seg(vhost)}/${seg(b.source)}` }, b.source)),
    h('td', {}, b.destination_type === 'queue'
      ? h('a', { href: `#/queues/${seg(vhost)}/${seg(b.destination)}` }, b.destination)
      : h('a', { href: `#/exchanges/${seg(vhost)}/${seg(b.destination)}` }, b.destination)),
    h('td', {}, b.destination_type),
    h('td', {}, b.routing_key),
    h('td', {}, JSON.stringify(b.arguments || {})),
    h('td', {}, api.canChange() && b.source !== '' ? h('button', { type: 'button', class: 'danger small', onclick: async () => {
      const kind = b.destination_type === 'queue' ? 'q' : 'e';
      await api.act('Binding removed', () => api.api('DELETE',
        `/bindings/${seg(vhost)}/e/${seg(b.source)}/${kind}/${seg(b.destination)}/${seg(b.properties_key)}`));
      api.hooks.refresh();
    } }, 'Unbind') : null)));
  return api.table(['From', 'To', 'Type', 'Routing key', 'Arguments', ''], rows, { id });
}

// "Add binding": `fixed` is {source} or {destination, destination_type}.
export function bindForm(vhost, fixed) {
  if (!api.canChange()) return null;
  const args = argumentsEditor('bind-arguments', [['x-match', 'string', 'x-match (all, any)']]);
  const other = fixed.source !== undefined
    ? [h('label', {}, 'To', h('select', { name: 'destination_type' }, h('option', { value: 'q' }, 'queue'), h('option', { value: 'e' }, 'exchange'))),
       h('label', {}, 'Name', h('input', { name: 'other', required: true, id: 'bind-destination' }))]
    : [h('label', {}, 'From exchange', h('input', { name: 'other', required: true, id: 'bind-source' }))];
  const form = h('form', { id: 'bind-form', class: 'stacked' }, other,
    h('label', {}, 'Routing key', h('input', { name: 'routing_key', id: 'bind-routing-key' })),
    h('div', { class: 'label' }, 'Arguments', args.element),
    h('button', { type: 'submit', id: 'bind-submit' }, 'Bind'));
  form.addEventListener('submit', async event => {
    event.preventDefault();
    const v = api.formValues(form);
    const source = fixed.source !== undefined ? fixed.source : v.other;
    const kind = fixed.source !== undefined ? v.destination_type : (fixed.destination_type === 'queue' ? 'q' : 'e');
    const destination = fixed.source !== undefined ? v.other : fixed.destination;
    await api.act('Binding added', () => api.api('POST',
      `/bindings/${seg(vhost)}/e/${seg(source)}/${kind}/${seg(destination)}`,
      { routing_key: v.routing_key, arguments: args.read() }));
    api.hooks.refresh();
  });
  return form;
}

// A red button that asks first, then goes to `after` (a hash) once done.
export function deleteButton(id, label, what, path, after) {
  if (!api.canChange()) return null;
  return h('button', { type: 'button', class: 'danger', id, onclick: async () => {
    if (!confirm(`${label}?`)) return;
    if (await api.act(what, () => api.api('DELETE', path)) && after) location.hash = after;
  } }, label);
}
