// Admin: users (tags, password), virtual hosts, permissions and policies. Each section shows
// what the API lets this user read; the forms are there only for users who may change it.
import * as api from './api.js';
import { h, seg, fmtNumber } from './api.js';

const TAGS = ['administrator', 'monitoring', 'policymaker', 'management', 'impersonator'];

// A section that reloads its table every poll and shows the API's refusal as a note.
function section(id, title, load, form) {
  const body = h('div', { id: `${id}-body` });
  const element = h('section', { id, class: 'admin-section' }, h('h2', {}, title), body, form || null);
  const refresh = async () => {
    try {
      body.replaceChildren(await load());
    } catch (error) {
      if (error.status !== 401) throw error;
      body.replaceChildren(h('p', { class: 'muted' }, `Not shown to this user (${error.message}).`));
    }
  };
  return { element, refresh };
}

function removeButton(label, what, path) {
  return h('button', { type: 'button', class: 'danger small', onclick: async () => {
    if (!confirm(`${what}?`)) return;
    await api.act(what, () => api.api('DELETE', path));
    api.hooks.refresh();
  } }, label);
}

function submitter(form, what, action) {
  form.addEventListener('submit', async event => {
    event.preventDefault();
    const values = api.formValues(form);
    await api.act(what(values), () => action(values));
    api.hooks.refresh();
  });
  return form;
}

export async function show(main) {
  const admin = api.isAdministrator();
  const sections = [
    section('users', 'Users', async () => {
      const users = await api.get('/users');
      return api.table(['Name', 'Tags', 'Password', ''], users.map(u => h('tr', {},
        h('td', {}, u.name), h('td', {}, (Array.isArray(u.tags) ? u.tags : String(u.tags || '').split(',')).join(', ')),
        h('td', {}, u.password_hash ? '●' : '○'),
        h('td', {}, admin ? removeButton('Delete', `Delete user ${u.name}`, `/users/${seg(u.name)}`) : null))), { id: 'users-table' });
    }, admin ? submitter(h('form', { id: 'add-user', class: 'stacked' },
      h('h3', {}, 'Add or update a user'),
      h('label', {}, 'Username', h('input', { name: 'name', required: true, id: 'user-name' })),
      h('label', {}, 'Password', h('input', { name: 'password', type: 'password', id: 'user-password', autocomplete: 'new-password' })),
      h('label', {}, 'Tags (comma separated)', h('input', { name: 'tags', id: 'user-tags', list: 'known-tags' })),
      h('datalist', { id: 'known-tags' }, TAGS.map(t => h('option', { value: t }))),
      h('button', { type: 'submit', id: 'add-user-submit' }, 'Add / update user')),
      v => `User ${v.name} saved`,
      // No password: an existing user keeps theirs (a new one gets none and cannot log in).
      v => api.api('PUT', `/users/${seg(v.name)}`, v.password ? { password: v.password, tags: v.tags } : { tags: v.tags }))
      : null),
    section('vhosts', 'Virtual hosts', async () => {
      const vhosts = await api.get('/vhosts');
      return api.table(['Name', 'Description', 'Ready', 'Unacked', 'Total', ''], vhosts.map(v => h('tr', {},
        h('td', {}, v.name), h('td', {}, v.description || ''),
        h('td', { class: 'num' }, fmtNumber(v.messages_ready)), h('td', { class: 'num' }, fmtNumber(v.messages_unacknowledged)),
        h('td', { class: 'num' }, fmtNumber(v.messages)),
        h('td', {}, admin && v.name !== '/' ? removeButton('Delete', `Delete virtual host ${v.name}`, `/vhosts/${seg(v.name)}`) : null))), { id: 'vhosts-table' });
    }, admin ? submitter(h('form', { id: 'add-vhost', class: 'stacked' },
      h('h3', {}, 'Add a virtual host'),
      h('label', {}, 'Name', h('input', { name: 'name', required: true, id: 'vhost-name' })),
      h('label', {}, 'Description', h('input', { name: 'description' })),
      h('button', { type: 'submit', id: 'add-vhost-submit' }, 'Add virtual host')),
      v => `Virtual host ${v.name} added`,
      v => api.api('PUT', `/vhosts/${seg(v.name)}`, { description: v.description })) : null),
    section('permissions', 'Permissions', async () => {
      const permissions = await api.get('/permissions');
      return api.table(['User', 'Virtual host', 'Configure', 'Write', 'Read', ''], permissions.map(p => h('tr', {},
        h('td', {}, p.user), h('td', {}, p.vhost), h('td', {}, p.configure), h('td', {}, p.write), h('td', {}, p.read),
        h('td', {}, admin ? removeButton('Clear', `Clear permissions of ${p.user} on ${p.vhost}`, `/permissions/${seg(p.vhost)}/${seg(p.user)}`) : null))), { id: 'permissions-table' });
    }, admin ? submitter(h('form', { id: 'set-permission', class: 'stacked' },
      h('h3', {}, 'Set permissions'),
      h('label', {}, 'User', h('input', { name: 'user', required: true, id: 'permission-user' })),
      h('label', {}, 'Virtual host', h('input', { name: 'vhost', required: true, id: 'permission-vhost', value: '/' })),
      h('label', {}, 'Configure regexp', h('input', { name: 'configure', value: '.*' })),
      h('label', {}, 'Write regexp', h('input', { name: 'write', value: '.*' })),
      h('label', {}, 'Read regexp', h('input', { name: 'read', value: '.*' })),
      h('button', { type: 'submit', id: 'set-permission-submit' }, 'Set permission')),
      v => `Permissions of ${v.user} on ${v.vhost} set`,
      v => api.api('PUT', `/permissions/${seg(v.vhost)}/${seg(v.user)}`, { configure: v.configure, write: v.write, read: v.read })) : null),
    section('policies', 'Policies', async () => {
      const policies = await api.get('/policies');
      return api.table(['Virtual host', 'Name', 'Pattern', 'Apply to', 'Definition', 'Priority', ''], policies.map(p => h('tr', {},
        h('td', {}, p.vhost), h('td', {}, p.name), h('td', {}, p.pattern), h('td', {}, p['apply-to']),
        h('td', {}, JSON.stringify(p.definition)), h('td', { class: 'num' }, p.priority),
        h('td', {}, api.canEditPolicies() ? removeButton('Clear', `Clear policy ${p.name}`, `/policies/${seg(p.vhost)}/${seg(p.name)}`) : null))), { id: 'policies-table' });
    }, api.canEditPolicies() ? submitter(h('form', { id: 'add-policy', class: 'stacked' },
      h('h3', {}, 'Add or update a policy'),
      h('label', {}, 'Virtual host', h('input', { name: 'vhost', required: true, value: '/' })),
      h('label', {}, 'Name', h('input', { name: 'name', required: true, id: 'policy-name' })),
      h('label', {}, 'Pattern (regex)', h('input', { name: 'pattern', required: true, id: 'policy-pattern' })),
      h('label', {}, 'Apply to', h('select', { name: 'apply_to' }, ['all', 'queues', 'exchanges'].map(a => h('option', { value: a }, a)))),
      h('label', {}, 'Priority', h('input', { name: 'priority', type: 'number', value: 0 })),
      h('label', {}, 'Definition (JSON, e.g. {"max-length": 1000, "message-ttl": 60000})', h('input', { name: 'definition', id: 'policy-definition', value: '{}' })),
      h('button', { type: 'submit', id: 'add-policy-submit' }, 'Add / update policy')),
      v => `Policy ${v.name} saved`,
      v => api.api('PUT', `/policies/${seg(v.vhost)}/${seg(v.name)}`, {
        pattern: v.pattern, 'apply-to': v.apply_to, priority: Number(v.priority), definition: JSON.parse(v.definition || '{}'),
      })) : null),
  ];
  main.replaceChildren(h('h1', {}, 'Admin'), ...sections.map(s => s.element));
  return async () => { await Promise.all(sections.map(s => s.refresh())); };
}
