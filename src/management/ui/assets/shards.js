// Shards: ringmq's own page. One row per shard (one executor pinned to one core): how busy it
// is, what it hosts, its mesh links and its log and delivery latency, so a hot core shows at a
// glance. Percentiles are live: the difference of two cumulative readings five seconds apart.
import * as api from './api.js';
import { h, fmtNumber, fmtBytes, fmtNs } from './api.js';
import { chartBox, record } from './chart.js';

const HOT_BUSY_FRACTION = 0.8;
let previous = null;

// Bucket upper bound holding quantile q of the observations between two readings.
function windowQuantile(now, before, q) {
  if (!now) return null;
  const base = before && before.count <= now.count ? before : null;
  const count = now.count - (base ? base.count : 0);
  if (count <= 0) return null;
  const rank = Math.max(1, Math.ceil(q * count));
  for (let i = 0; i < now.buckets.length; i += 1) {
    const [bound, cumulative] = now.buckets[i];
    const earlier = base ? base.buckets[i][1] : 0;
    if (cumulative - earlier >= rank) return bound;
  }
  return null;
}

function quantiles(now, before, format) {
  if (!now) return h('span', { class: 'muted' }, 'not measured');
  const live = [0.5, 0.99, 0.999].map(q => windowQuantile(now, before, q));
  const text = live.every(v => v === null)
    ? `idle (since start: ${format(now.p50)} / ${format(now.p99)} / ${format(now.p999)})`
    : live.map(format).join(' / ');
  return h('span', { title: `${fmtNumber(now.count)} observations since start` }, text);
}

const bytes = v => (v === null || v === undefined ? '–' : fmtBytes(v));

export async function show(main) {
  const live = h('div', { id: 'shards-live' });
  main.replaceChildren(h('h1', {}, 'Shards'),
    h('p', { class: 'muted' }, 'One shard is one executor pinned to one core: it owns its connections, its queues and its own log. ',
      'Percentiles are bucket upper bounds (powers of two) over the last poll interval.'),
    live);
  return async () => {
    const value = await api.get('/ringmq/shards');
    const byShard = new Map((previous ? previous.shards : []).map(s => [s.shard, s]));
    const busy = {};
    for (const s of value.shards) busy[`shard${s.shard}`] = s.busy_fraction === null ? 0 : s.busy_fraction * 100;
    record('shards-busy', busy);
    const rows = value.shards.map(s => {
      const before = byShard.get(s.shard) || {};
      const hot = s.busy_fraction !== null && s.busy_fraction >= HOT_BUSY_FRACTION;
      const outbox = s.links.reduce((sum, l) => sum + l.outbox_messages, 0);
      const stalls = s.links.reduce((sum, l) => sum + l.stalls, 0);
      return h('tr', { class: hot ? 'hot' : undefined, 'data-shard': s.shard },
        h('td', {}, String(s.shard)),
        h('td', { class: hot ? 'alarm-cell busy' : 'busy' },
          h('div', { class: 'bar' }, h('div', { class: 'bar-fill', style: `width:${Math.min(100, (s.busy_fraction || 0) * 100).toFixed(0)}%` })),
          s.busy_fraction === null ? '–' : `${(s.busy_fraction * 100).toFixed(1)}%`),
        h('td', { class: 'num' }, fmtNumber(s.connections)),
        h('td', { class: 'num' }, fmtNumber(s.queues)),
        h('td', { class: 'num' }, fmtNumber(s.messages_ready)),
        h('td', { class: 'num' }, fmtNumber(s.messages_unacknowledged)),
        h('td', { class: 'num' }, `${fmtNumber(outbox)} msgs, ${fmtNumber(stalls)} stalls`),
        h('td', {}, quantiles(s.enqueue_to_deliver_ns, before.enqueue_to_deliver_ns, fmtNs)),
        h('td', {}, quantiles(s.log_batch_bytes, before.log_batch_bytes, bytes)),
        h('td', {}, quantiles(s.log_fdatasync_ns, before.log_fdatasync_ns, fmtNs)));
    });
    const peers = value.shards.map(s => s.shard);
    const links = value.shards.map(s => h('tr', {}, h('th', {}, `from ${s.shard}`), peers.map(peer => {
      const link = s.links.find(l => l.peer === peer);
      return h('td', { class: 'num' }, link ? `${fmtNumber(link.outbox_messages)} / ${fmtBytes(link.outbox_bytes)}${link.stalls ? ` (${fmtNumber(link.stalls)} stalls)` : ''}` : '–');
    })));
    const series = value.shards.map(s => `shard${s.shard}`);
    live.replaceChildren(
      api.table(['Shard', 'Busy', 'Connections', 'Queues', 'Ready', 'Unacked', 'Mesh outbox',
        'Enqueue → deliver p50 / p99 / p99.9', 'Log batch p50 / p99 / p99.9', 'fdatasync p50 / p99 / p99.9'], rows, { id: 'shards-table' }),
      h('div', { class: 'charts' }, chartBox('Busy % per shard', 'shards-busy', series, series.map(s => s.replace('shard', 'Shard ')),
        { format: v => `${Math.round(v)}%` })),
      h('h2', {}, 'Mesh links (messages / bytes waiting in each outbox)'),
      value.shards.length > 1
        ? api.table(['', ...peers.map(p => `to ${p}`)], links, { id: 'links-table' })
        : h('p', { class: 'muted' }, 'One shard: no mesh links.'),
      h('p', { class: 'note', id: 'publish-to-deliver-note' }, 'Publish → deliver: ', value.publish_to_deliver_note, '.'));
    previous = value;
  };
}
