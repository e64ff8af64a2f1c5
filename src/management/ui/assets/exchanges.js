// Exchanges: the list (paged on the server), add, and a detail page with bindings and publish.
import * as api from './api.js';
import { h, seg, fmtRate } from './api.js';
import { pagedTable, selectedVhost } from './list.js';
import { argumentsEditor, bindForm, bindingsTable, deleteButton, publishForm, EXCHANGE_ARGUMENTS } from './forms.js';

const TYPES = ['direct', 'fanout', 'topic', 'headers', 'x-delayed-message'];

function features(x) {
  const out = [];
  if (x.durable) out.push(h('abbr', { title: 'durable' }, 'D'));
  if (x.auto_delete) out.push(h('abbr', { title: 'auto-delete' }, 'AD'));
  if (x.internal) out.push(h('abbr', { title: 'internal' }, 'I'));
  for (const key of Object.keys(x.arguments || {})) {
    out.push(h('abbr', { title: `${key}: ${JSON.stringify(x.arguments[key])}` }, key === 'alternate-exchange' ? 'AE' : 'Args'));
  }
  return out.flatMap((f, i) => (i ? [' ', f] : [f]));
}

export async function show(main, params) {
  if (params.length >= 2) return detail(main, params[0], params[1]);
  const list = pagedTable({
    id: 'exchanges',
    path: () => (selectedVhost() ? `/exchanges/${seg(selectedVhost())}` : '/exchanges'),
    columns: [
      { label: 'Virtual host', sort: 'vhost', cell: x => x.vhost },
      { label: 'Name', sort: 'name', cell: x => h('a', { href: `#/exchanges/${seg(x.vhost)}/${seg(x.name || 'amq.default')}` }, x.name || '(AMQP default)') },
      { label: 'Type', sort: 'type', cell: x => x.type },
      { label: 'Features', cell: features },
      { label: 'Message rate in', num: true, cell: x => fmtRate((x.message_stats || {}).publish_in_details) },
      { label: 'Message rate out', num: true, cell: x => fmtRate((x.message_stats || {}).publish_out_details) },
    ],
  });
  main.replaceChildren(h('h1', {}, 'Exchanges'), list.element, await addForm());
  return list.refresh;
}

async function addForm() {
  if (!api.canChange()) return null;
  const vhosts = await api.get('/vhosts');
  const args = argumentsEditor('exchange-arguments', EXCHANGE_ARGUMENTS);
  const form = h('form', { id: 'add-exchange', class: 'stacked' },
    h('label', {}, 'Virtual host', h('select', { name: 'vhost' }, api.vhostOptions(vhosts, selectedVhost() || '/'))),
    h('label', {}, 'Name', h('input', { name: 'name', required: true, id: 'exchange-name' })),
    h('label', {}, 'Type', h('select', { name: 'type' }, TYPES.map(t => h('option', { value: t }, t)))),
    h('label', {}, 'Durability', h('select', { name: 'durable' }, h('option', { value: 'true' }, 'Durable'), h('option', { value: 'false' }, 'Transient'))),
    h('label', {}, 'Auto delete', h('select', { name: 'auto_delete' }, h('option', { value: 'false' }, 'No'), h('option', { value: 'true' }, 'Yes'))),
    h('label', {}, 'Internal', h('select', { name: 'internal' }, h('option', { value: 'false' }, 'No'), h('option', { value: 'true' }, 'Yes'))),
    h('div', { class: 'label' }, 'Arguments', args.element),
    h('button', { type: 'submit', id: 'add-exchange-submit' }, 'Add exchange'));
  form.addEventListener('submit', async event => {
    event.preventDefault();
    const v = api.formValues(form);
    await api.act(`Exchange ${v.name} added`, () => api.api('PUT', `/exchanges/${seg(v.vhost)}/${seg(v.name)}`, {
      type: v.type, durable: v.durable === 'true', auto_delete: v.auto_delete === 'true',
      internal: v.internal === 'true', arguments: args.read(),
    }));
    api.hooks.refresh();
  });
  return h('details', { class: 'section' }, h('summary', {}, 'Add a new exchange'), form);
}

async function detail(main, vhost, name) {
  const path = `/exchanges/${seg(vhost)}/${seg(name)}`;
  const info = h('div', { id: 'exchange-info' });
  const outgoing = h('div', {});
  const incoming = h('div', {});
  const isDefault = name === 'amq.default';
  main.replaceChildren(
    h('h1', {}, 'Exchange: ', isDefault ? '(AMQP default)' : name, h('small', {}, ` in virtual host ${vhost}`)),
    info,
    h('h2', {}, 'Bindings from this exchange'), outgoing,
    isDefault ? h('p', { class: 'muted' }, 'The default exchange is bound to every queue by its name; it cannot be bound or unbound.') : bindForm(vhost, { source: name }),
    h('h2', {}, 'Bindings to this exchange'), incoming,
    api.canChange() ? h('h2', {}, 'Publish message') : null,
    publishForm(vhost, isDefault ? '' : name, ''),
    isDefault || name.startsWith('amq.') ? null : h('h2', {}, 'Delete this exchange'),
    isDefault || name.startsWith('amq.') ? null : deleteButton('delete-exchange', 'Delete exchange', `Exchange ${name} deleted`, path, '#/exchanges'));
  return async () => {
    const x = await api.get(path);
    info.replaceChildren(api.table(['Type', 'Features', 'Policy', 'Arguments', 'Rate in', 'Rate out'], [h('tr', {},
      h('td', {}, x.type), h('td', {}, features(x)), h('td', {}, x.policy || ''),
      h('td', {}, JSON.stringify(x.arguments || {})),
      h('td', {}, fmtRate((x.message_stats || {}).publish_in_details)),
      h('td', {}, fmtRate((x.message_stats || {}).publish_out_details)))]));
    if (isDefault) return;
    const [from, to] = await Promise.all([api.get(`${path}/bindings/source`), api.get(`${path}/bindings/destination`)]);
    outgoing.replaceChildren(bindingsTable('bindings-source', from, vhost));
    incoming.replaceChildren(bindingsTable('bindings-destination', to, vhost));
  };
}
