// The ops dashboard at /ops: an admin signs in, then the page follows /v1/ops/stream (feed.js)
// and redraws every figure and chart (chart.js) on each one-second snapshot. What each tile
// shows is the `tiles` table below; the snapshot's fields are documented in
// docs/operations.md ("The ops feed"). Below the tiles: the support desk's service levels from
// the snapshot's `desk` object (desk.js), and the reports over days with their CSV (reports.js).

import { h, setText, fill } from '../common/dom.js';
import { loadInfo } from '../common/i18n.js';
import {
  t, setLanguage, categories, categoryLabel, formatCount, formatRate, formatPercent, formatMs, formatSpan, formatClock,
} from './strings.js';
import { Feed, checkToken } from './feed.js';
import { Chart } from './chart.js';
import { DeskPanel } from './desk.js';
import { ReportsPanel } from './reports.js';

/** Charts show at most this much, and at least this much (so a fresh feed is not a spike). */
const WINDOW = 5 * 60000;
const MIN_WINDOW = 30000;
/** Snapshots kept in the page: ten minutes, as the server keeps. */
const KEEP = 600;
const KEY = 'parley.ops.token';

const COLORS = {
  teal: '#0f766e', blue: '#2563eb', amber: '#d97706', red: '#dc2626', violet: '#7c3aed', slate: '#64748b',
};
const CATEGORY_COLORS = ['#dc2626', '#2563eb', '#d97706', '#7c3aed', '#64748b', '#0891b2', '#65a30d'];

const rate = (n) => t('perSecond', { n: formatRate(n) });

const tiles = [
  {
    id: 'visitors', title: 'visitors', value: (s) => formatCount(s.visitors),
    sub: (s) => t('queueSub', { open: formatCount(s.conversations_open) }),
    chart: { floor: 5, format: formatCount, series: [{ color: COLORS.teal, value: (s) => s.visitors }] },
  },
  {
    id: 'agents', title: 'agents', value: (s) => formatCount(s.agents.online),
    valueNote: () => t('agents.online'),
    sub: (s) => t('agentsSub', { away: formatCount(s.agents.away), offline: formatCount(s.agents.offline) }),
    chart: {
      floor: 2, format: formatCount, series: [
        { name: t('agents.online'), color: COLORS.teal, value: (s) => s.agents.online },
        { name: t('agents.away'), color: COLORS.amber, value: (s) => s.agents.away },
      ],
    },
  },
  {
    id: 'utilisation', title: 'utilisation', value: (s) => formatPercent(s.utilisation),
    sub: (s) => (s.agent_capacity ? t('utilisationSub', { load: s.agent_load, capacity: s.agent_capacity }) : t('utilisationNone')),
    warn: (s) => s.utilisation >= 0.9,
    chart: { max: 1, format: formatPercent, series: [{ color: COLORS.blue, value: (s) => s.utilisation }] },
  },
  {
    id: 'queue', title: 'queue', value: (s) => formatCount(s.queue_total),
    sub: () => t('queueWaiting'),
    warn: (s) => s.queue_total > 0,
    chart: { floor: 2, format: formatCount, series: [{ color: COLORS.amber, value: (s) => s.queue_total }] },
  },
  {
    id: 'time_to_agent', title: 'timeToAgent',
    value: (s) => (s.time_to_agent.samples ? t('pair', { a: formatMs(s.time_to_agent.p50_ms), b: formatMs(s.time_to_agent.p95_ms) }) : t('none')),
    sub: (s) => (s.time_to_agent.samples ? t('timeToAgentSub', { n: s.time_to_agent.samples }) : t('timeToAgentNone')),
    chart: {
      floor: 1000, format: formatMs, series: [
        { name: t('p50'), color: COLORS.teal, value: (s) => s.time_to_agent.p50_ms },
        { name: t('p95'), color: COLORS.violet, value: (s) => s.time_to_agent.p95_ms },
      ],
    },
  },
  {
    id: 'messages', title: 'messages', value: (s) => rate(s.messages_per_second),
    sub: (s) => t('messagesSub', { total: formatCount(s.messages_total) }),
    chart: { floor: 1, format: formatRate, series: [{ color: COLORS.blue, value: (s) => s.messages_per_second }] },
  },
  {
    id: 'rate_limited', title: 'rateLimited', value: (s) => rate(s.rate_limited_per_second),
    sub: (s) => t('rateLimitedSub', { total: formatCount(s.rate_limited_total) }),
    warn: (s) => s.rate_limited_per_second > 0,
    chart: { floor: 1, format: formatRate, series: [{ color: COLORS.red, value: (s) => s.rate_limited_per_second }] },
  },
  {
    id: 'persist', title: 'persistLag', value: (s) => formatMs(s.persist_lag_ms),
    sub: (s) => t('persistSub', { pending: formatCount(s.persist_pending), store: t(s.persist_failing ? 'persistBad' : 'persistOk') }),
    warn: (s) => s.persist_failing || s.persist_lag_ms > 5000,
    chart: { floor: 1000, format: formatMs, series: [{ color: COLORS.slate, value: (s) => s.persist_lag_ms }] },
  },
];

setLanguage(document.documentElement.lang || navigator.language);
document.title = t('pageTitle');
const root = document.getElementById('app');

function stored() {
  try {
    return sessionStorage.getItem(KEY);
  } catch {
    return null;
  }
}
function store(token) {
  try {
    if (token) sessionStorage.setItem(KEY, token);
    else sessionStorage.removeItem(KEY);
  } catch {
    // Storage disabled: signed in for this page only.
  }
}

function showSignIn(message) {
  const input = h('input', { id: 'token', type: 'password', autocomplete: 'current-password', required: true, spellcheck: 'false' });
  const error = h('p', { class: 'form-error', role: 'alert', id: 'token-error' });
  const button = h('button', { type: 'submit', class: 'primary' }, t('signIn'));
  const hint = h('p', { class: 'demo-hint', hidden: true }, t('demoHint'));
  const fail = (text) => {
    setText(error, text);
    input.setAttribute('aria-invalid', 'true');
    input.setAttribute('aria-describedby', 'token-error');
    input.select();
    input.focus();
  };
  const form = h('form', {
    class: 'signin-card', 'aria-labelledby': 'signin-h',
    onsubmit: async (ev) => {
      ev.preventDefault();
      const token = input.value.trim();
      if (!token) return;
      button.disabled = true;
      setText(button, t('signingIn'));
      const verdict = await checkToken(token);
      button.disabled = false;
      setText(button, t('signIn'));
      if (verdict === 'ok') {
        store(token);
        showDashboard(token);
      } else {
        fail(verdict === 'refused' ? t('badToken') : verdict === 'not_admin' ? t('notAdmin') : t('serverDown'));
      }
    },
  },
  h('div', { class: 'brand' }, h('img', { src: '/static/parley.svg', alt: '', width: 32, height: 32 }), h('span', {}, t('brand'))),
  h('h1', { id: 'signin-h' }, t('signInTitle')),
  h('p', { class: 'muted' }, t('signInHint')),
  h('label', { for: 'token' }, t('tokenLabel')), input, error, button, hint);
  root.replaceChildren(h('main', { class: 'signin' }, form));
  loadInfo('/v1/info').then((info) => { hint.hidden = !info?.demo; });
  if (message) fail(message);
  else input.focus();
}

function showDashboard(token) {
  let points = [];
  let state = 'connecting';
  let retryAt = null;

  const stateEl = h('span', { class: 'feed-state', role: 'status' });
  const windowEl = h('span', { class: 'window' });
  const banner = h('div', { class: 'banner', role: 'alert', hidden: true });
  const failing = h('div', { class: 'banner danger', role: 'alert', hidden: true });
  const built = tiles.map((tile) => {
    const value = h('span', { class: 'value' });
    const sub = h('p', { class: 'sub' });
    const chart = new Chart({ title: t(tile.title), ...tile.chart });
    const el = h('section', { class: 'tile', dataset: { metric: tile.id }, 'aria-labelledby': `h-${tile.id}` },
      h('h2', { id: `h-${tile.id}` }, t(tile.title)),
      h('p', { class: 'figure' }, value, tile.valueNote ? h('span', { class: 'note' }, tile.valueNote()) : null),
      sub, chart.el);
    return { tile, el, value, sub, chart };
  });

  let priority = [];
  loadInfo('/v1/info').then((info) => {
    if (!info) return;
    priority = Array.isArray(info.categories) ? info.categories : [];
    categories.set(info.category_labels);
    // The queue chart names its series when built: build it again with the names.
    categoryChart = null;
    render();
    reports.redraw();
  });
  const bars = h('ul', { class: 'bars' });
  let categoryChart = null;
  const categoryChartBox = h('div', { class: 'cat-chart' });
  const queuePanel = h('section', { class: 'tile wide', dataset: { metric: 'queue_by_category' }, 'aria-labelledby': 'h-qbc' },
    h('h2', { id: 'h-qbc' }, t('queueByCategory')), h('div', { class: 'qbc' }, bars, categoryChartBox));

  const deskPanel = new DeskPanel();
  const reports = new ReportsPanel({ token, onRefused: () => signOut(t('signedOutRefused')) });

  root.replaceChildren(h('div', { class: 'page' },
    h('header', { class: 'top' },
      h('div', { class: 'brand' }, h('img', { src: '/static/parley.svg', alt: '', width: 26, height: 26 }),
        h('span', {}, t('brand')), h('span', { class: 'product' }, t('product'))),
      stateEl, windowEl,
      h('button', { type: 'button', class: 'ghost', onclick: () => signOut() }, t('signOut'))),
    banner, failing,
    h('main', { class: 'grid', 'aria-live': 'off' }, ...built.map((b) => b.el), queuePanel, deskPanel.el, reports.el)));

  function render() {
    const last = points[points.length - 1];
    document.body.dataset.state = state;
    stateEl.dataset.state = state;
    if (state === 'live' && last) setText(stateEl, `${t('live')} · ${t('updated', { time: formatClock(last.ts) })}`);
    else if (state === 'offline') {
      const s = retryAt ? Math.max(0, Math.ceil((retryAt - Date.now()) / 1000)) : 0;
      setText(stateEl, s > 0 ? t('disconnected', { s }) : t('disconnectedNow'));
    } else setText(stateEl, t('connecting'));
    banner.hidden = state !== 'offline';
    if (state === 'offline') {
      const s = retryAt ? Math.max(0, Math.ceil((retryAt - Date.now()) / 1000)) : 0;
      setText(banner, [s > 0 ? t('disconnected', { s }) : t('disconnectedNow'),
        last ? t('staleNote', { time: formatClock(last.ts) }) : ''].join(' '));
    }
    if (!last) return;
    failing.hidden = !last.persist_failing;
    if (last.persist_failing) setText(failing, t('persistFailing', { pending: formatCount(last.persist_pending) }));
    const to = last.ts;
    const from = Math.min(Math.max(to - WINDOW, points[0].ts), to - MIN_WINDOW);
    setText(windowEl, t('windowLabel', { span: formatSpan(to - from) }));
    const shown = points.filter((p) => p.ts >= from);
    for (const b of built) {
      setText(b.value, b.tile.value(last));
      setText(b.sub, b.tile.sub(last));
      b.el.dataset.warn = b.tile.warn?.(last) ? 'true' : 'false';
      b.chart.update(shown, from, to);
    }
    drawQueue(last, shown, from, to);
    deskPanel.update(last.desk, priority);
  }

  function drawQueue(last, shown, from, to) {
    // The snapshot's keys come sorted by name; /v1/info gives the priority order.
    const known = Object.keys(last.queue || {});
    const cats = [...priority.filter((c) => known.includes(c)), ...known.filter((c) => !priority.includes(c))];
    const key = cats.join(',');
    if (!categoryChart || categoryChart.key !== key) {
      categoryChart = new Chart({
        title: t('queueByCategory'), floor: 2, format: formatCount,
        series: cats.map((c, i) => ({ name: categoryLabel(c), color: CATEGORY_COLORS[i % CATEGORY_COLORS.length], value: (s) => s.queue?.[c] ?? 0 })),
      });
      categoryChart.key = key;
      fill(categoryChartBox, categoryChart.el);
    }
    const most = Math.max(1, ...cats.map((c) => last.queue[c]));
    fill(bars, ...cats.map((c, i) => h('li', { dataset: { category: c } },
      h('span', { class: 'cat' }, h('i', { style: `background:${CATEGORY_COLORS[i % CATEGORY_COLORS.length]}` }), categoryLabel(c)),
      h('span', { class: 'bar' }, h('span', { style: `width:${(100 * last.queue[c]) / most}%;background:${CATEGORY_COLORS[i % CATEGORY_COLORS.length]}` })),
      h('span', { class: 'n' }, formatCount(last.queue[c])))));
    categoryChart.update(shown, from, to);
  }

  function add(list) {
    const lastTs = points.length ? points[points.length - 1].ts : -Infinity;
    const fresh = list.filter((s) => s && typeof s.ts === 'number' && s.ts > lastTs);
    if (!fresh.length) return;
    points = points.concat(fresh).slice(-KEEP);
    render();
  }

  const feed = new Feed(token, {
    history: (list) => add(list),
    snapshot: (s) => add([s]),
    state: (s, detail) => {
      state = s;
      retryAt = detail.retryAt ?? null;
      render();
    },
    refused: (verdict) => signOut(verdict === 'not_admin' ? t('notAdmin') : t('signedOutRefused')),
  });
  // Only the countdown in the "retrying" line needs a clock; the figures follow the feed.
  const ticker = setInterval(() => { if (state === 'offline') render(); }, 1000);

  function signOut(message) {
    feed.stop();
    reports.stop();
    clearInterval(ticker);
    store(null);
    showSignIn(message);
  }

  render();
  feed.start();
  reports.start();
}

const token = stored();
if (token) showDashboard(token);
else showSignIn();
