// Queues: the list (sorted, filtered by name or regex and paged on the server), add with an
// argument picker, and a detail page: counts, a live rate chart, consumers, bindings, publish,
// get messages, purge and delete.
import * as api from './api.js';
import { h, seg, fmtNumber, fmtRate, fmtBytes } from './api.js';
import { pagedTable, selectedVhost } from './list.js';
import { argumentsEditor, bindForm, bindingsTable, deleteButton, publishForm, QUEUE_ARGUMENTS } from './forms.js';
import { chartBox, record } from './chart.js';

// RabbitMQ's feature abbreviations, in its order.
const FEATURES = [
  ['x-message-ttl', 'TTL'], ['x-expires', 'Exp'], ['x-max-length', 'Lim'], ['x-max-length-bytes', 'Lim B'],
  ['x-overflow', 'Ovfl'], ['x-dead-letter-exchange', 'DLX'], ['x-dead-letter-routing-key', 'DLK'],
  ['x-max-priority', 'Pri'], ['x-single-active-consumer', 'SAC'], ['x-queue-mode', 'Lazy'], ['x-delivery-limit', 'DLim'],
];

function features(q) {
  const out = [];
  if (q.durable) out.push(h('abbr', { title: 'durable: true', class: 'feature' }, 'D'));
  if (q.auto_delete) out.push(h('abbr', { title: 'auto-delete: true', class: 'feature' }, 'AD'));
  if (q.exclusive) out.push(h('abbr', { title: 'exclusive: true', class: 'feature' }, 'Excl'));
  const args = q.arguments || {};
  const known = new Set(FEATURES.map(f => f[0]));
  for (const [key, label] of FEATURES) {
    if (key in args) out.push(h('abbr', { title: `${key}: ${JSON.stringify(args[key])}`, class: 'feature' }, label));
  }
  const others = Object.keys(args).filter(k => !known.has(k));
  if (others.length) out.push(h('abbr', { title: others.map(k => `${k}: ${JSON.stringify(args[k])}`).join('\n'), class: 'feature' }, 'Args'));
  if (q.policy) out.push(h('span', { class: 'policy', title: 'policy' }, q.policy));
  if (q.operator_policy) out.push(h('span', { class: 'policy', title: 'operator policy' }, q.operator_policy));
  return out.flatMap((f, i) => (i ? [' ', f] : [f]));
}

const stat = (q, key) => fmtRate(((q.message_stats || {})[`${key}_details`]));

export async function show(main, params) {
  if (params.length >= 2) return detail(main, params[0], params[1]);
  const list = pagedTable({
    id: 'queues',
    path: () => (selectedVhost() ? `/queues/${seg(selectedVhost())}` : '/queues'),
    columns: [
      { label: 'Virtual host', sort: 'vhost', cell: q => q.vhost },
      { label: 'Name', sort: 'name', cell: q => h('a', { href: `#/queues/${seg(q.vhost)}/${seg(q.name)}`, class: 'queue-link' }, q.name) },
      { label: 'Type', sort: 'type', cell: q => q.type },
      { label: 'Features', cell: features },
      { label: 'State', cell: q => q.state },
      { label: 'Ready', sort: 'messages_ready', num: true, cell: q => fmtNumber(q.messages_ready) },
      { label: 'Unacked', sort: 'messages_unacknowledged', num: true, cell: q => fmtNumber(q.messages_unacknowledged) },
      { label: 'Total', sort: 'messages', num: true, cell: q => fmtNumber(q.messages) },
      { label: 'Consumers', sort: 'consumers', num: true, cell: q => fmtNumber(q.consumers) },
      { label: 'Incoming', sort: 'message_stats.publish_details.rate', num: true, cell: q => stat(q, 'publish') },
      { label: 'Deliver / get', sort: 'message_stats.deliver_get_details.rate', num: true, cell: q => stat(q, 'deliver_get') },
      { label: 'Ack', sort: 'message_stats.ack_details.rate', num: true, cell: q => stat(q, 'ack') },
    ],
  });
  main.replaceChildren(h('h1', {}, 'Queues'), list.element, await addForm());
  return list.refresh;
}

async function addForm() {
  if (!api.canChange()) return null;
  const vhosts = await api.get('/vhosts');
  const args = argumentsEditor('queue-arguments', QUEUE_ARGUMENTS);
  const form = h('form', { id: 'add-queue', class: 'stacked' },
    h('label', {}, 'Type', h('select', { name: 'type' }, h('option', { value: 'classic' }, 'Classic'))),
    h('label', {}, 'Virtual host', h('select', { name: 'vhost', id: 'queue-vhost' }, api.vhostOptions(vhosts, selectedVhost() || '/'))),
    h('label', {}, 'Name', h('input', { name: 'name', required: true, id: 'queue-name' })),
    h('label', {}, 'Durability', h('select', { name: 'durable', id: 'queue-durable' }, h('option', { value: 'true' }, 'Durable'), h('option', { value: 'false' }, 'Transient'))),
    h('label', {}, 'Auto delete', h('select', { name: 'auto_delete' }, h('option', { value: 'false' }, 'No'), h('option', { value: 'true' }, 'Yes'))),
    h('div', { class: 'label' }, 'Arguments', args.element),
    h('button', { type: 'submit', id: 'add-queue-submit' }, 'Add queue'));
  form.addEventListener('submit', async event => {
    event.preventDefault();
    const v = api.formValues(form);
    if (await api.act(`Queue ${v.name} added`, () => api.api('PUT', `/queues/${seg(v.vhost)}/${seg(v.name)}`, {
      durable: v.durable === 'true', auto_delete: v.auto_delete === 'true', arguments: args.read(),
    }))) form.querySelector('#queue-name').value = '';
    api.hooks.refresh();
  });
  return h('details', { class: 'section', id: 'add-queue-section' }, h('summary', {}, 'Add a new queue'), form);
}

async function detail(main, vhost, name) {
  const path = `/queues/${seg(vhost)}/${seg(name)}`;
  const chartName = `queue-rates:${vhost}:${name}`;
  const queuedName = `queue-depth:${vhost}:${name}`;
  const info = h('div', { id: 'queue-info' });
  const charts = h('div', { class: 'charts', id: 'queue-charts' });
  const consumers = h('div', { id: 'queue-consumers' });
  const bindings = h('div', { id: 'queue-bindings' });
  const writable = api.canChange();
  main.replaceChildren(
    h('h1', {}, 'Queue: ', h('span', { id: 'queue-title' }, name), h('small', {}, ` in virtual host ${vhost}`)),
    info, charts,
    h('h2', {}, 'Consumers'), consumers,
    h('h2', {}, 'Bindings'), bindings, bindForm(vhost, { destination: name, destination_type: 'queue' }),
    writable ? h('h2', {}, 'Publish message') : null,
    writable ? h('p', { class: 'muted' }, 'Published to the default exchange with the queue\'s name as routing key.') : null,
    publishForm(vhost, '', name),
    h('h2', {}, 'Get messages'), getForm(vhost, name),
    writable ? h('h2', {}, 'Purge and delete') : null,
    writable ? h('div', { class: 'buttons' },
      h('button', { type: 'button', id: 'purge-queue', class: 'danger', onclick: async () => {
        if (!confirm(`Purge queue ${name}?`)) return;
        await api.act(`Queue ${name} purged`, () => api.api('DELETE', `${path}/contents`));
        api.hooks.refresh();
      } }, 'Purge messages'),
      ' ',
      deleteButton('delete-queue', 'Delete queue', `Queue ${name} deleted`, path, '#/queues')) : null);
  return async () => {
    let q;
    try {
      q = await api.get(path);
    } catch (error) {
      if (error.status === 404) {
        info.replaceChildren(h('p', { class: 'error' }, `Queue ${name} does not exist in virtual host ${vhost}.`));
        return;
      }
      throw error;
    }
    const ms = q.message_stats || {};
    const rate = key => (ms[`${key}_details`] || {}).rate || 0;
    record(chartName, { publish: rate('publish'), deliver_get: rate('deliver_get'), ack: rate('ack') });
    record(queuedName, { ready: q.messages_ready || 0, unacked: q.messages_unacknowledged || 0, total: q.messages || 0 });
    info.replaceChildren(api.table(
      ['Features', 'State', 'Ready', 'Unacked', 'Total', 'Consumers', 'Memory', 'Message bytes', 'Paged out', 'Node'],
      [h('tr', {},
        h('td', {}, features(q)), h('td', {}, q.state),
        h('td', { class: 'num', id: 'queue-ready' }, fmtNumber(q.messages_ready)),
        h('td', { class: 'num', id: 'queue-unacked' }, fmtNumber(q.messages_unacknowledged)),
        h('td', { class: 'num', id: 'queue-total' }, fmtNumber(q.messages)),
        h('td', { class: 'num' }, fmtNumber(q.consumers)),
        h('td', { class: 'num' }, fmtBytes(q.memory)),
        h('td', { class: 'num' }, fmtBytes(q.message_bytes)),
        h('td', { class: 'num' }, fmtBytes(q.message_bytes_paged_out || 0)),
        h('td', {}, q.node))]),
      h('p', { class: 'muted' }, 'Arguments: ', JSON.stringify(q.arguments || {}),
        ' · effective policy: ', JSON.stringify(q.effective_policy_definition || {})));
    charts.replaceChildren(
      chartBox('Queued messages', queuedName, ['ready', 'unacked', 'total'], ['Ready', 'Unacked', 'Total'], { format: v => fmtNumber(Math.round(v)) }),
      chartBox('Message rates', chartName, ['publish', 'deliver_get', 'ack'], ['Publish', 'Deliver / get', 'Ack'], { format: v => api.fmtRate({ rate: v }) }));
    consumers.replaceChildren(api.table(['Channel', 'Consumer tag', 'Ack required', 'Exclusive', 'Prefetch', 'Arguments'],
      (q.consumer_details || []).map(c => h('tr', {},
        h('td', {}, (c.channel_details || {}).name || ''), h('td', {}, c.consumer_tag),
        h('td', {}, c.ack_required ? '●' : '○'), h('td', {}, c.exclusive ? '●' : '○'),
        h('td', { class: 'num' }, fmtNumber(c.prefetch_count)), h('td', {}, JSON.stringify(c.arguments || {}))))));
    bindings.replaceChildren(bindingsTable('queue-bindings-table', await api.get(`${path}/bindings`), vhost));
  };
}

// RabbitMQ's "Get messages": requeue or not, auto (string when it is UTF-8) or base64.
// Taking a message is a change (it is redelivered or gone), so monitoring users do not see it.
function getForm(vhost, name) {
  if (!api.canChange()) return h('p', { class: 'muted' }, 'Getting messages needs a user who may change things.');
  const results = h('div', { id: 'get-results' });
  const form = h('form', { id: 'get-form', class: 'stacked' },
    h('label', {}, 'Ack mode', h('select', { name: 'ackmode', id: 'get-ackmode' },
      h('option', { value: 'ack_requeue_true' }, 'Nack message requeue true'),
      h('option', { value: 'ack_requeue_false' }, 'Automatic ack'),
      h('option', { value: 'reject_requeue_false' }, 'Reject requeue false'),
      h('option', { value: 'reject_requeue_true' }, 'Reject requeue true'))),
    h('label', {}, 'Encoding', h('select', { name: 'encoding' },
      h('option', { value: 'auto' }, 'Auto string / base64'), h('option', { value: 'base64' }, 'base64'))),
    h('label', {}, 'Messages', h('input', { name: 'count', type: 'number', min: 1, value: 1, id: 'get-count' })),
    h('label', {}, 'Truncate payload to (bytes)', h('input', { name: 'truncate', type: 'number', min: 1, value: 50000 })),
    h('button', { type: 'submit', id: 'get-submit' }, 'Get message(s)'), results);
  form.addEventListener('submit', async event => {
    event.preventDefault();
    const v = api.formValues(form);
    try {
      const messages = await api.api('POST', `/queues/${seg(vhost)}/${seg(name)}/get`, {
        count: Number(v.count), ackmode: v.ackmode, encoding: v.encoding, truncate: Number(v.truncate),
      });
      results.replaceChildren(messages.length ? '' : h('p', { class: 'muted' }, 'Queue is empty'),
        ...messages.map((m, i) => h('table', { class: 'message' },
          h('caption', {}, `Message ${i + 1}`),
          h('tr', {}, h('th', {}, 'Exchange'), h('td', {}, m.exchange || '(AMQP default)')),
          h('tr', {}, h('th', {}, 'Routing key'), h('td', {}, m.routing_key)),
          h('tr', {}, h('th', {}, 'Redelivered'), h('td', {}, m.redelivered ? '●' : '○')),
          h('tr', {}, h('th', {}, 'Properties'), h('td', {}, JSON.stringify(m.properties || {}))),
          h('tr', {}, h('th', {}, 'Payload'), h('td', {}, h('small', {}, `${m.payload_bytes} bytes, encoding: ${m.payload_encoding}`),
            h('pre', { class: 'payload' }, m.payload))),
          h('tr', {}, h('th', {}, 'Messages left'), h('td', {}, fmtNumber(m.message_count))))));
    } catch (error) {
      api.flash(`Get messages: failed: ${error.message}`, 'error');
    }
    api.hooks.refresh();
  });
  return form;
}
