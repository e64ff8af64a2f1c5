// A server-side paged, sorted and filtered table: the page asks the API for one page at a time
// (`page`, `page_size`, `name`, `use_regex`, `sort`, `sort_reverse`), so 10,000 queues cost the
// browser one page of rows.
import * as api from './api.js';
import { h } from './api.js';

export const PAGE_SIZES = [20, 50, 100, 500];

// columns: [{label, sort?: 'key.path', cell: item => node|string, num?: bool}]
export function pagedTable(options) {
  const state = Object.assign({ page: 1, pageSize: 50, name: '', regex: false, sort: '', reverse: false }, options.initial);
  const body = h('div', { class: 'paged', id: options.id });
  const filter = h('input', { type: 'search', placeholder: 'Filter by name', id: `${options.id}-filter`, value: state.name });
  const regex = h('input', { type: 'checkbox', id: `${options.id}-regex` });
  const size = h('select', { id: `${options.id}-page-size` }, PAGE_SIZES.map(n => h('option', { value: n, selected: n === state.pageSize }, `${n} per page`)));
  const summary = h('span', { class: 'muted', id: `${options.id}-count` });
  const container = h('div', {});
  const pager = h('div', { class: 'pager' });
  const apply = () => { state.page = 1; refresh(); };
  filter.addEventListener('input', () => { state.name = filter.value; apply(); });
  regex.addEventListener('change', () => { state.regex = regex.checked; apply(); });
  size.addEventListener('change', () => { state.pageSize = Number(size.value); apply(); });
  body.append(h('div', { class: 'controls' }, filter, h('label', {}, regex, ' Regex'), size, summary), container, pager);

  let sequence = 0;
  async function refresh() {
    sequence += 1;
    const mine = sequence;
    const query = new URLSearchParams({ page: state.page, page_size: state.pageSize });
    if (state.name) query.set('name', state.name);
    if (state.regex) query.set('use_regex', 'true');
    if (state.sort) query.set('sort', state.sort);
    if (state.reverse) query.set('sort_reverse', 'true');
    let result;
    try {
      result = await api.get(`${options.path()}?${query}`);
    } catch (error) {
      if (mine !== sequence) return;
      if (error.status === 400 && /page_out_of_range|Page out of range/.test(error.message) && state.page > 1) {
        state.page = 1;
        return refresh();
      }
      summary.textContent = error.message;
      summary.className = 'error';
      return;
    }
    if (mine !== sequence) return;
    summary.className = 'muted';
    const items = n => `${api.fmtNumber(n)} item${n === 1 ? '' : 's'}`;
    summary.textContent = result.filtered_count === result.total_count
      ? items(result.total_count)
      : `${api.fmtNumber(result.filtered_count)} of ${items(result.total_count)} match`;
    const headers = options.columns.map(column => {
      if (!column.sort) return column.label;
      const active = state.sort === column.sort;
      return h('a', {
        href: '#', class: active ? 'sorted' : undefined, 'data-sort': column.sort,
        onclick: event => {
          event.preventDefault();
          if (active) state.reverse = !state.reverse;
          else { state.sort = column.sort; state.reverse = false; }
          refresh();
        },
      }, column.label, active ? (state.reverse ? ' ▼' : ' ▲') : '');
    });
    const rows = result.items.map(item => h('tr', {},
      options.columns.map(column => h('td', { class: column.num ? 'num' : undefined }, column.cell(item)))));
    container.replaceChildren(api.table(headers, rows, { id: `${options.id}-table` }));
    pager.replaceChildren(
      h('button', { type: 'button', disabled: state.page <= 1, onclick: () => { state.page -= 1; refresh(); } }, '‹ Previous'),
      h('span', {}, ` Page ${result.page} of ${result.page_count} `),
      h('button', { type: 'button', disabled: state.page >= result.page_count, onclick: () => { state.page += 1; refresh(); } }, 'Next ›'));
  }
  return { element: body, refresh };
}

// The vhost part of a list path: all vhosts, or the one picked in the header.
export function scoped(base) {
  const vhost = selectedVhost();
  return vhost ? `${base}/${api.seg(vhost)}` : base;
}

// /api/vhosts/V/connections for the vhost picked, else /api/connections.
export function underVhost(kind) {
  const vhost = selectedVhost();
  return vhost ? `/vhosts/${api.seg(vhost)}/${kind}` : `/${kind}`;
}

export function selectedVhost() {
  return sessionStorage.getItem('ringmq-vhost') || '';
}

export function setSelectedVhost(vhost) {
  if (vhost) sessionStorage.setItem('ringmq-vhost', vhost);
  else sessionStorage.removeItem('ringmq-vhost');
}
