// Connections and channels: who is connected, from where, with which client, and a force-close
// (RabbitMQ's 320 CONNECTION_FORCED) for users who may change things.
import * as api from './api.js';
import { h, fmtNumber, fmtBytes, seg } from './api.js';
import { pagedTable, underVhost } from './list.js';

function client(properties) {
  const p = properties || {};
  const parts = [p.product, p.version, p.platform].filter(Boolean).join(' · ');
  return h('span', { title: JSON.stringify(p) }, p.connection_name ? `${p.connection_name} — ` : '', parts || '–');
}

function closeButton(name) {
  if (!api.canChange()) return null;
  return h('button', {
    type: 'button', class: 'danger', 'data-close': name,
    onclick: async () => {
      if (!confirm(`Force-close connection ${name}?`)) return;
      await api.act(`Closed connection ${name}`, () => api.api('DELETE', `/connections/${seg(name)}`));
      api.hooks.refresh();
    },
  }, 'Force close');
}

export async function showConnections(main) {
  const list = pagedTable({
    id: 'connections', path: () => underVhost('connections'),
    columns: [
      { label: 'Name', sort: 'name', cell: c => c.name },
      { label: 'User', sort: 'user', cell: c => c.user },
      { label: 'Virtual host', sort: 'vhost', cell: c => c.vhost },
      { label: 'Client', cell: c => client(c.client_properties) },
      { label: 'State', cell: c => c.state },
      { label: 'Channels', sort: 'channels', num: true, cell: c => fmtNumber(c.channels) },
      { label: 'Heartbeat', num: true, cell: c => `${c.timeout}s` },
      { label: 'From client', sort: 'recv_oct', num: true, cell: c => fmtBytes(c.recv_oct) },
      { label: 'To client', sort: 'send_oct', num: true, cell: c => fmtBytes(c.send_oct) },
      { label: '', cell: c => closeButton(c.name) },
    ],
  });
  main.replaceChildren(h('h1', {}, 'Connections'), list.element);
  return list.refresh;
}

export async function showChannels(main) {
  const list = pagedTable({
    id: 'channels', path: () => underVhost('channels'),
    columns: [
      { label: 'Channel', sort: 'name', cell: c => c.name },
      { label: 'User', sort: 'user', cell: c => c.user },
      { label: 'Virtual host', sort: 'vhost', cell: c => c.vhost },
      { label: 'Mode', cell: c => [c.confirm ? 'C' : '', c.transactional ? 'T' : ''].join('') || '–' },
      { label: 'State', cell: c => c.state },
      { label: 'Prefetch', num: true, cell: c => fmtNumber(c.prefetch_count) },
      { label: 'Unacked', sort: 'messages_unacknowledged', num: true, cell: c => fmtNumber(c.messages_unacknowledged) },
      { label: 'Consumers', sort: 'consumer_count', num: true, cell: c => fmtNumber(c.consumer_count) },
      { label: '', cell: c => closeButton((c.connection_details || {}).name) },
    ],
  });
  main.replaceChildren(h('h1', {}, 'Channels'),
    h('p', { class: 'muted' }, 'Mode: C = confirm, T = transactional. Closing a channel closes its connection (the API closes connections only, as RabbitMQ\'s).'),
    list.element);
  return list.refresh;
}
