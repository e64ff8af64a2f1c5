// The management API as the pages use it: basic auth kept for this browser tab only, JSON in
// and out, errors carrying the API's reason. Also the small DOM and formatting helpers every
// page shares, so no page builds HTML from strings (names come from the network).

const AUTH_KEY = 'ringmq-auth';

export class ApiError extends Error {
  constructor(status, reason) {
    super(reason || `HTTP ${status}`);
    this.status = status;
  }
}

let me = null;

// Set by the shell: pages call it after a change so tables show it before the next poll.
export const hooks = { refresh: () => Promise.resolve() };

export function whoami() { return me; }

export function hasTag(tag) { return !!me && me.tags.includes(tag); }

// A monitoring user sees everything and changes nothing; administrators change everything.
export function canChange() {
  return !!me && (hasTag('administrator') || !hasTag('monitoring'));
}
export function isAdministrator() { return hasTag('administrator'); }
export function canEditPolicies() { return hasTag('administrator') || (canChange() && hasTag('policymaker')); }

async function call(method, path, body, auth) {
  const headers = { 'authorization': 'Basic ' + auth };
  const init = { method, headers, credentials: 'omit', cache: 'no-store' };
  if (body !== undefined) {
    headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch('/api' + path, init);
  const text = await response.text();
  let value = null;
  if (text) {
    try { value = JSON.parse(text); } catch (_) { value = null; }
  }
  if (!response.ok) {
    throw new ApiError(response.status, value && (value.reason || value.error));
  }
  return value;
}

export async function login(user, password) {
  const auth = btoa(unescape(encodeURIComponent(user + ':' + password)));
  const who = await call('GET', '/whoami', undefined, auth);
  sessionStorage.setItem(AUTH_KEY, auth);
  me = { name: who.name, tags: tagList(who.tags) };
  return me;
}

export async function resume() {
  const auth = sessionStorage.getItem(AUTH_KEY);
  if (!auth) return null;
  try {
    const who = await call('GET', '/whoami', undefined, auth);
    me = { name: who.name, tags: tagList(who.tags) };
    return me;
  } catch (_) {
    logout();
    return null;
  }
}

export function logout() {
  sessionStorage.removeItem(AUTH_KEY);
  me = null;
}

function tagList(tags) {
  if (Array.isArray(tags)) return tags;
  return String(tags || '').split(',').map(t => t.trim()).filter(Boolean);
}

export function api(method, path, body) {
  const auth = sessionStorage.getItem(AUTH_KEY);
  if (!auth) return Promise.reject(new ApiError(401, 'not logged in'));
  return call(method, path, body, auth);
}

export const get = path => api('GET', path);

// One path segment (vhost "/" is %2F).
export const seg = text => encodeURIComponent(text);

// h('td', {class: 'num'}, 'text', child): an element; strings become text nodes, never HTML.
export function h(tag, attrs, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on')) element.addEventListener(key.slice(2), value);
    else if (key === 'value') element.value = value;
    else element.setAttribute(key, value === true ? '' : value);
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(element, child);
    else element.append(child instanceof Node ? child : String(child));
  }
}

export function table(headers, rows, attrs) {
  return h('table', attrs || {},
    h('thead', {}, h('tr', {}, headers.map(c => c instanceof Node ? h('th', {}, c) : h('th', {}, c)))),
    h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: headers.length, class: 'empty' }, 'None'))));
}

export function fmtNumber(n) {
  if (n === undefined || n === null) return '';
  if (typeof n !== 'number') return String(n);
  return n.toLocaleString('en-US');
}

export function fmtRate(details) {
  const rate = details && typeof details.rate === 'number' ? details.rate : 0;
  return (rate >= 10 ? rate.toFixed(0) : rate.toFixed(1)) + '/s';
}

export function fmtBytes(n) {
  if (typeof n !== 'number') return '';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return (i ? n.toFixed(1) : n.toFixed(0)) + ' ' + units[i];
}

export function fmtDuration(ms) {
  let s = Math.floor((ms || 0) / 1000);
  const d = Math.floor(s / 86400); s -= d * 86400;
  const hr = Math.floor(s / 3600); s -= hr * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  return d ? `${d}d ${hr}h` : hr ? `${hr}h ${m}m` : `${m}m ${s}s`;
}

export function fmtNs(ns) {
  if (ns === null || ns === undefined) return '–';
  if (ns < 1e3) return ns + ' ns';
  if (ns < 1e6) return (ns / 1e3).toFixed(0) + ' µs';
  if (ns < 1e9) return (ns / 1e6).toFixed(1) + ' ms';
  return (ns / 1e9).toFixed(2) + ' s';
}

// A message for the operator at the top of the page ('error' or 'ok').
export function flash(text, kind) {
  const box = document.getElementById('flash');
  box.textContent = text;
  box.className = kind === 'error' ? 'flash error' : 'flash ok';
  box.hidden = false;
}

export function clearFlash() {
  const box = document.getElementById('flash');
  box.hidden = true;
}

// Runs an action from a button or form: shows the API's refusal instead of throwing.
export async function act(what, action) {
  try {
    await action();
    flash(what, 'ok');
    return true;
  } catch (error) {
    flash(`${what}: failed: ${error.message}`, 'error');
    return false;
  }
}

export function vhostOptions(vhosts, selected) {
  return vhosts.map(v => h('option', { value: v.name, selected: v.name === selected }, v.name));
}

// A form's named fields as an object of strings (checkboxes as booleans).
export function formValues(form) {
  const out = {};
  for (const element of form.elements) {
    if (!element.name) continue;
    out[element.name] = element.type === 'checkbox' ? element.checked : element.value;
  }
  return out;
}

// Typed argument values from the argument picker's rows: numbers stay numbers, true/false
// booleans, the rest strings (RabbitMQ's UI asks for the type; the common arguments are
// numbers or strings, so the picker decides by the argument's known type).
export function argumentValue(key, text, known) {
  const type = known[key];
  if (type === 'number') return Number(text);
  if (type === 'boolean') return text === 'true';
  if (type === 'string') return text;
  if (/^-?\d+$/.test(text)) return Number(text);
  if (text === 'true' || text === 'false') return text === 'true';
  return text;
}

export function collapsible(title, ...content) {
  return h('details', { open: true, class: 'section' }, h('summary', {}, title), ...content);
}
