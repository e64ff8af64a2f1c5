// Overview: totals, the node with its alarms, and the broker's message rates and queued
// messages as live charts over the last ten minutes.
import * as api from './api.js';
import { h, fmtNumber, fmtRate, fmtBytes, fmtDuration } from './api.js';
import { chartBox } from './chart.js';

// The shell's latest samples (it polls /api/overview and /api/nodes every five seconds).
export const latest = { value: null, nodes: null };

export async function show(main) {
  const live = h('div', { id: 'overview-live' });
  main.replaceChildren(h('h1', {}, 'Overview'), live);
  return async () => live.replaceChildren(...content());
}

function content() {
  const value = latest.value;
  if (!value) return [h('p', {}, 'Waiting for the first sample…')];
  const totals = value.object_totals || {};
  const queued = value.queue_totals || {};
  const stats = value.message_stats || {};
  const rates = v => api.fmtRate({ rate: v });
  return [
    h('p', { class: 'subtitle' }, `${value.product_name} ${value.product_version} · node ${value.node} · RabbitMQ API ${value.rabbitmq_version}`),
    h('div', { class: 'tiles', id: 'totals' },
      tile('Connections', totals.connections), tile('Channels', totals.channels),
      tile('Exchanges', totals.exchanges), tile('Queues', totals.queues),
      tile('Consumers', totals.consumers), tile('Ready', queued.messages_ready),
      tile('Unacked', queued.messages_unacknowledged), tile('Total', queued.messages)),
    h('div', { class: 'charts' },
      chartBox('Queued messages', 'overview-queued', ['ready', 'unacked', 'total'], ['Ready', 'Unacked', 'Total'],
        { format: v => fmtNumber(Math.round(v)) }),
      chartBox('Message rates', 'overview-rates', ['publish', 'deliver_get', 'ack', 'confirm', 'redeliver'],
        ['Publish', 'Deliver / get', 'Ack', 'Confirm', 'Redelivered'], { format: rates })),
    h('h2', {}, 'Message totals'),
    api.table(['Publish', 'Deliver / get', 'Ack', 'Confirm', 'Redelivered'], [h('tr', {},
      ['publish', 'deliver_get', 'ack', 'confirm', 'redeliver'].map(k =>
        h('td', { class: 'num' }, fmtNumber(stats[k] || 0), h('br'), h('small', {}, fmtRate(stats[`${k}_details`])))))]),
    ...nodes(),
  ];
}

function tile(label, value) {
  return h('div', { class: 'tile' }, h('div', { class: 'tile-value' }, fmtNumber(value || 0)), h('div', { class: 'tile-label' }, label));
}

function nodes() {
  if (!latest.nodes) return [h('p', { class: 'muted' }, 'Nodes are shown to monitoring users.')];
  const rows = latest.nodes.map(node => h('tr', {},
    h('td', {}, node.name),
    h('td', {}, fmtDuration(node.uptime)),
    h('td', { class: node.mem_alarm ? 'alarm-cell' : undefined },
      `${fmtBytes(node.mem_used)} / ${fmtBytes(node.mem_limit)}`, node.mem_alarm ? h('div', {}, 'memory alarm') : null),
    h('td', { class: node.disk_free_alarm ? 'alarm-cell' : undefined },
      `${fmtBytes(node.disk_free)} free (limit ${fmtBytes(node.disk_free_limit)})`, node.disk_free_alarm ? h('div', {}, 'disk alarm') : null),
    h('td', { class: 'num' }, fmtNumber(node.fd_used)),
    h('td', { class: 'num' }, fmtNumber(node.processors))));
  return [h('h2', {}, 'Nodes'), api.table(['Name', 'Uptime', 'Memory', 'Disk space', 'File descriptors', 'Shards'], rows, { id: 'nodes' })];
}
