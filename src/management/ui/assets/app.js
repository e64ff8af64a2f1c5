// The shell: login, navigation by location hash, the five-second poll, the alarm banner.
import * as api from './api.js';
import { h } from './api.js';
import { POLL_INTERVAL_MS, record } from './chart.js';
import * as overview from './overview.js';
import * as connections from './connections.js';
import * as exchanges from './exchanges.js';
import * as queues from './queues.js';
import * as admin from './admin.js';
import * as shards from './shards.js';
import { selectedVhost, setSelectedVhost } from './list.js';

const PAGES = [
  ['overview', 'Overview', overview.show],
  ['connections', 'Connections', connections.showConnections],
  ['channels', 'Channels', connections.showChannels],
  ['exchanges', 'Exchanges', exchanges.show],
  ['queues', 'Queues', queues.show],
  ['admin', 'Admin', admin.show],
  ['shards', 'Shards', shards.show],
];

const main = document.getElementById('main');
let refresh = null;
let generation = 0;
let timer = null;

// "#/queues/%2F/q1" -> ['queues', '/', 'q1']: split before decoding, so "%2F" is vhost "/".
function route() {
  return location.hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decodeURIComponent);
}

function showLogin(message) {
  document.getElementById('header').hidden = true;
  document.getElementById('alarms').hidden = true;
  api.clearFlash();
  const error = h('p', { id: 'login-error', class: 'error' }, message || '');
  const form = h('form', { id: 'login-form', class: 'login' },
    h('h1', {}, 'ringmq'),
    h('label', {}, 'Username', h('input', { id: 'login-username', name: 'username', autocomplete: 'username', required: true })),
    h('label', {}, 'Password', h('input', { id: 'login-password', name: 'password', type: 'password', autocomplete: 'current-password' })),
    h('button', { id: 'login-submit', type: 'submit' }, 'Login'),
    error);
  form.addEventListener('submit', async event => {
    event.preventDefault();
    const values = api.formValues(form);
    try {
      await api.login(values.username, values.password);
      start();
    } catch (failure) {
      error.textContent = failure.status === 401 ? 'Login failed' : `Login failed: ${failure.message}`;
    }
  });
  main.replaceChildren(form);
}

function renderHeader() {
  const me = api.whoami();
  document.getElementById('header').hidden = false;
  const current = route()[0] || 'overview';
  document.getElementById('nav').replaceChildren(...PAGES.map(([key, label]) =>
    h('a', { href: `#/${key}`, id: `nav-${key}`, class: key === current ? 'active' : undefined }, label)));
  document.getElementById('who').textContent =
    `User ${me.name} (${me.tags.join(', ') || 'no tags'})${api.canChange() ? '' : ' · read-only'}`;
}

async function render() {
  generation += 1;
  const mine = generation;
  renderHeader();
  api.clearFlash();
  const [key, ...params] = route();
  const page = PAGES.find(p => p[0] === (key || 'overview')) || PAGES[0];
  main.replaceChildren(h('p', {}, 'Loading…'));
  refresh = null;
  try {
    const pageRefresh = await page[2](main, params);
    if (mine !== generation) return;
    refresh = pageRefresh || null;
    if (refresh) await refresh();
  } catch (error) {
    if (mine === generation) failed(error);
  }
}

function failed(error) {
  if (error.status === 401 && !api.whoami()) {
    showLogin('Session expired');
    return;
  }
  api.flash(error.message, 'error');
}

// One sample of the broker-wide figures every poll, whatever page is open, so the overview's
// charts have the last ten minutes when the operator comes back to them.
async function sampleOverview() {
  const value = await api.get('/overview');
  const stats = value.message_stats || {};
  const rate = key => (stats[`${key}_details`] || {}).rate || 0;
  record('overview-rates', {
    publish: rate('publish'), deliver_get: rate('deliver_get'), ack: rate('ack'),
    confirm: rate('confirm'), redeliver: rate('redeliver'),
  });
  const totals = value.queue_totals || {};
  record('overview-queued', {
    ready: totals.messages_ready || 0, unacked: totals.messages_unacknowledged || 0,
    total: totals.messages || 0,
  });
  overview.latest.value = value;
}

// RabbitMQ's alarm display: a red banner naming the alarm and the node (and red cells on the
// overview's node table). /api/nodes needs the monitoring tag; others see no alarms, as there.
async function sampleAlarms() {
  const banner = document.getElementById('alarms');
  if (!api.hasTag('monitoring') && !api.hasTag('administrator')) {
    banner.hidden = true;
    return;
  }
  const nodes = await api.get('/nodes');
  overview.latest.nodes = nodes;
  const alarms = [];
  for (const node of nodes) {
    if (node.mem_alarm) alarms.push(`Memory alarm on node ${node.name}: publishers are blocked (memory used ${api.fmtBytes(node.mem_used)}, high watermark ${api.fmtBytes(node.mem_limit)}).`);
    if (node.disk_free_alarm) alarms.push(`Disk alarm on node ${node.name}: publishers are blocked (free ${api.fmtBytes(node.disk_free)}, limit ${api.fmtBytes(node.disk_free_limit)}).`);
  }
  banner.replaceChildren(...alarms.map(text => h('p', {}, text)));
  banner.hidden = alarms.length === 0;
}

async function poll() {
  try {
    await Promise.all([sampleOverview(), sampleAlarms(), fillVhosts()]);
    if (refresh) await refresh();
  } catch (error) {
    failed(error);
  }
}

let vhostsShown = null;

// The header's vhost picker: lists show one vhost or all of them.
async function fillVhosts() {
  const select = document.getElementById('vhost-select');
  let vhosts = [];
  try { vhosts = await api.get('/vhosts'); } catch (_) { vhosts = []; }
  if (selectedVhost() && !vhosts.some(v => v.name === selectedVhost())) setSelectedVhost('');
  const key = vhosts.map(v => v.name).join('\n');
  if (key === vhostsShown) return;
  vhostsShown = key;
  select.replaceChildren(h('option', { value: '' }, 'All'), ...api.vhostOptions(vhosts, selectedVhost()));
}

document.getElementById('vhost-select').addEventListener('change', event => {
  setSelectedVhost(event.target.value);
  render();
});

async function start() {
  window.addEventListener('hashchange', render);
  vhostsShown = null;
  if (!location.hash) history.replaceState(null, '', '#/overview');
  await poll().catch(() => {});
  await render();
  clearInterval(timer);
  timer = setInterval(poll, POLL_INTERVAL_MS);
}

document.getElementById('logout').addEventListener('click', () => {
  api.logout();
  clearInterval(timer);
  window.removeEventListener('hashchange', render);
  showLogin('');
});

api.hooks.refresh = poll;

(async () => {
  if (await api.resume()) start();
  else showLogin('');
})();
