// Live charts in hand-written SVG: samples are kept in the page (the last ten minutes of one
// poll every five seconds) and a chart is a few polylines over them.

export const POLL_INTERVAL_MS = 5000;
export const HISTORY_MS = 10 * 60 * 1000;
const SAMPLES_MAX = HISTORY_MS / POLL_INTERVAL_MS + 1;
const SVG_NS = 'http://www.w3.org/2000/svg';
const COLOURS = ['#e8710a', '#1a73e8', '#188038', '#a142f4', '#d93025', '#607d8b'];

// name -> [{t, values: {series: number}}], oldest first.
const histories = new Map();

export function record(name, values, at) {
  const t = at || Date.now();
  let history = histories.get(name);
  if (!history) { history = []; histories.set(name, history); }
  history.push({ t, values });
  while (history.length > SAMPLES_MAX || (history.length && history[0].t < t - HISTORY_MS)) {
    history.shift();
  }
}

export function history(name) { return histories.get(name) || []; }

function svg(tag, attrs, text) {
  const element = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) element.setAttribute(key, value);
  if (text !== undefined) element.textContent = text;
  return element;
}

function niceMax(value) {
  if (value <= 0) return 1;
  const power = Math.pow(10, Math.floor(Math.log10(value)));
  for (const step of [1, 2, 5, 10]) {
    if (value <= step * power) return step * power;
  }
  return 10 * power;
}

// A line chart of `series` (names in the history's values) over the last ten minutes.
// The chart carries data-series-max-NAME attributes so a test (or a curious operator in the
// inspector) can read what is drawn.
export function lineChart(name, series, options) {
  const opts = Object.assign({ width: 560, height: 150, unit: '', format: v => String(v) }, options);
  const samples = history(name);
  const pad = { left: 48, right: 8, top: 8, bottom: 20 };
  const w = opts.width - pad.left - pad.right;
  const ht = opts.height - pad.top - pad.bottom;
  const now = samples.length ? samples[samples.length - 1].t : Date.now();
  const start = now - HISTORY_MS;
  let max = 0;
  for (const sample of samples) {
    for (const key of series) max = Math.max(max, sample.values[key] || 0);
  }
  const top = niceMax(max);
  const root = svg('svg', {
    class: 'chart', width: opts.width, height: opts.height,
    viewBox: `0 0 ${opts.width} ${opts.height}`, role: 'img', 'data-chart': name,
  });
  root.append(svg('title', {}, `${name}: last 10 minutes`));
  for (let i = 0; i <= 4; i += 1) {
    const y = pad.top + ht - (ht * i) / 4;
    root.append(svg('line', { x1: pad.left, x2: pad.left + w, y1: y, y2: y, class: 'grid' }));
    root.append(svg('text', { x: pad.left - 4, y: y + 4, class: 'axis', 'text-anchor': 'end' },
      opts.format((top * i) / 4)));
  }
  for (const minutes of [10, 5, 0]) {
    const x = pad.left + w - (w * minutes) / 10;
    root.append(svg('text', { x, y: opts.height - 4, class: 'axis', 'text-anchor': 'middle' },
      minutes ? `-${minutes} min` : 'now'));
  }
  series.forEach((key, index) => {
    const points = samples
      .filter(s => typeof s.values[key] === 'number')
      .map(s => {
        const x = pad.left + (w * Math.max(0, s.t - start)) / HISTORY_MS;
        const y = pad.top + ht - (ht * s.values[key]) / top;
        return `${x.toFixed(1)},${y.toFixed(1)}`;
      });
    const seriesMax = Math.max(0, ...samples.map(s => s.values[key] || 0));
    root.setAttribute(`data-series-max-${key}`, String(seriesMax));
    root.append(svg('polyline', {
      points: points.join(' '), fill: 'none', stroke: COLOURS[index % COLOURS.length],
      'stroke-width': 2, class: `series series-${key}`,
    }));
  });
  return root;
}

// The chart and a legend with the latest value of each series.
export function chartBox(title, name, series, labels, options) {
  const samples = history(name);
  const last = samples.length ? samples[samples.length - 1].values : {};
  const format = (options && options.format) || (v => String(v));
  const box = document.createElement('div');
  box.className = 'chart-box';
  const heading = document.createElement('h3');
  heading.textContent = title;
  const legend = document.createElement('ul');
  legend.className = 'legend';
  series.forEach((key, index) => {
    const item = document.createElement('li');
    const swatch = document.createElement('span');
    swatch.className = 'swatch';
    swatch.style.background = COLOURS[index % COLOURS.length];
    item.append(swatch, `${labels[index]}: ${last[key] === undefined ? '–' : format(last[key])}`);
    legend.append(item);
  });
  box.append(heading, lineChart(name, series, options), legend);
  return box;
}
