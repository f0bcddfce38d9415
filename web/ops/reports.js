// The reports panel: `GET /v1/reports` grouped by agent, team, category or day, for today or the
// last 7 days (calendar days in the desk's time zone, `desk.timezone`, which every report names),
// as a table with a total row; and "Download CSV", one row per conversation of the same period
// (`GET /v1/reports/conversations.csv`). The CSV needs the admin token, which a plain link
// cannot send: it is fetched with the Authorization header and handed to the browser as a Blob.

import { h, fill, setText } from '../common/dom.js';
import { t, categoryLabel, formatCount, formatPercent, formatMs, formatScore } from './strings.js';

/** Read again this often while the page is open. */
const REFRESH = 60000;
const GROUPS = ['category', 'agent', 'team', 'day'];
const PERIODS = ['today', 'week'];

const COLUMNS = [
  { key: 'conversations', value: (f) => formatCount(f.conversations) },
  { key: 'closed', value: (f) => formatCount(f.closed) },
  { key: 'resolved', value: (f) => formatCount(f.resolved) },
  { key: 'first', value: (f) => formatMs(f.avg_first_response_ms) },
  { key: 'response', value: (f) => formatMs(f.avg_response_ms) },
  { key: 'resolution', value: (f) => formatMs(f.avg_resolution_ms) },
  { key: 'fcr', value: (f) => (f.first_contact_resolution_rate == null ? t('none') : formatPercent(f.first_contact_resolution_rate)) },
  { key: 'csat', value: (f) => (f.csat_average == null ? t('none') : `${formatScore(f.csat_average)} (${formatCount(f.csat_answers)})`) },
  { key: 'sla', value: (f) => (f.sla_attainment == null ? t('none') : formatPercent(f.sla_attainment)) },
  { key: 'transfers', value: (f) => formatCount(f.transfers) },
  { key: 'deflections', value: (f) => (f.deflections == null ? t('none') : formatCount(f.deflections)) },
  { key: 'rateLimited', value: (f) => formatCount(f.rate_limited) },
];

/** `YYYY-MM-DD` of `date` in `zone` (the browser's own zone if it does not know that one). */
function day(date, zone) {
  try {
    return new Intl.DateTimeFormat('en-CA', { timeZone: zone, year: 'numeric', month: '2-digit', day: '2-digit' }).format(date);
  } catch {
    return new Intl.DateTimeFormat('en-CA', { year: 'numeric', month: '2-digit', day: '2-digit' }).format(date);
  }
}

/** The day `n` days before `ymd` (calendar arithmetic, no time zone involved). */
function daysBefore(ymd, n) {
  const [y, m, d] = ymd.split('-').map(Number);
  return new Date(Date.UTC(y, m - 1, d - n)).toISOString().slice(0, 10);
}

export class ReportsPanel {
  /** @param {object} o  token: the admin token; onRefused(): the token stopped working */
  constructor({ token, onRefused }) {
    this.token = token;
    this.onRefused = onRefused;
    this.zone = null;
    const select = (id, values, prefix) => h('select', { id, onchange: () => this.load() },
      values.map((v) => h('option', { value: v }, t(`${prefix}.${v}`))));
    this.group = select('report-group', GROUPS, 'group');
    this.period = select('report-period', PERIODS, 'period');
    this.csv = h('a', { class: 'button csv', href: '/v1/reports/conversations.csv', download: '', onclick: (ev) => this.download(ev) }, t('downloadCsv'));
    this.status = h('p', { class: 'report-status', role: 'status' });
    this.caption = h('caption');
    this.head = h('tr');
    this.body = h('tbody');
    this.foot = h('tfoot');
    this.table = h('table', { class: 'data report' }, this.caption, h('thead', {}, this.head), this.body, this.foot);
    this.el = h('section', { class: 'tile wide reports', dataset: { metric: 'reports' }, 'aria-labelledby': 'h-reports' },
      h('div', { class: 'report-head' },
        h('h2', { id: 'h-reports' }, t('reports')),
        h('div', { class: 'report-controls' },
          h('label', { for: 'report-group' }, t('groupBy')), this.group,
          h('label', { for: 'report-period' }, t('period')), this.period,
          h('button', { type: 'button', class: 'ghost', onclick: () => this.load() }, t('refresh')),
          this.csv)),
      this.status, h('div', { class: 'table-scroll' }, this.table));
    this.timer = 0;
  }

  start() {
    this.load();
    this.timer = setInterval(() => this.load(), REFRESH);
  }

  stop() {
    clearInterval(this.timer);
  }

  async get(path) {
    const res = await fetch(path, { headers: { authorization: `Bearer ${this.token}` }, cache: 'no-store' });
    if (res.status === 401 || res.status === 403) {
      this.stop();
      this.onRefused();
      throw new Error(String(res.status));
    }
    if (!res.ok) {
      const body = await res.json().catch(() => null);
      throw new Error(body?.error?.message || `HTTP ${res.status}`);
    }
    return res;
  }

  /** The period as `from`/`to` days in the desk's zone (learnt from a first, empty report). */
  async range() {
    if (!this.zone) {
      const probe = await (await this.get('/v1/reports?from=0&to=1')).json();
      this.zone = probe.timezone || 'UTC';
    }
    const today = day(new Date(), this.zone);
    return { from: this.period.value === 'today' ? today : daysBefore(today, 6), to: today };
  }

  async load() {
    const seq = (this.seq = (this.seq || 0) + 1);
    if (!this.loaded) setText(this.status, t('reportLoading'));
    let report;
    try {
      const { from, to } = await this.range();
      const q = new URLSearchParams({ from, to, group_by: this.group.value });
      report = await (await this.get(`/v1/reports?${q}`)).json();
      report.fromDay = from;
      report.toDay = to;
    } catch (err) {
      if (seq === this.seq) setText(this.status, t('reportFailed', { why: err.message }));
      return;
    }
    if (seq !== this.seq) return;
    this.loaded = true;
    this.draw(report);
  }

  /** Draws the last report again (the category names have arrived). */
  redraw() {
    if (this.last) this.draw(this.last);
  }

  draw(r) {
    this.last = r;
    this.el.dataset.group = r.group_by;
    setText(this.status, [t('reportRange', { from: r.fromDay, to: r.toDay, zone: r.timezone }),
      r.groups.length ? '' : t('reportEmpty')].filter(Boolean).join(' · '));
    setText(this.caption, t('reportCaption', { group: t(`group.${r.group_by}`).toLowerCase(), period: t(`period.${this.period.value}`).toLowerCase() }));
    fill(this.head, h('th', { scope: 'col' }, t(`group.${r.group_by}`)),
      COLUMNS.map((c) => h('th', { scope: 'col', class: 'num' }, t(`col.${c.key}`))));
    const row = (label, f, attrs) => h('tr', attrs, h('th', { scope: 'row' }, label),
      COLUMNS.map((c) => h('td', { class: 'num', dataset: { col: c.key } }, c.value(f))));
    const label = (key) => (key === 'none' ? t('key.none') : r.group_by === 'category' ? categoryLabel(key) : key);
    fill(this.body, r.groups.map((g) => row(label(g.key), g, { dataset: { key: g.key } })));
    fill(this.foot, row(t('total'), r.total, { dataset: { key: 'total' } }));
  }

  /** Fetches the CSV with the token and saves it through a Blob URL. */
  async download(ev) {
    ev.preventDefault();
    const label = this.csv.textContent;
    setText(this.csv, t('downloading'));
    this.csv.setAttribute('aria-busy', 'true');
    try {
      const { from, to } = await this.range();
      const res = await this.get(`/v1/reports/conversations.csv?${new URLSearchParams({ from, to })}`);
      const blob = await res.blob();
      const name = /filename="([^"]+)"/.exec(res.headers.get('content-disposition') || '')?.[1] || `parley-conversations-${from}-${to}.csv`;
      const url = URL.createObjectURL(blob);
      const a = h('a', { href: url, download: name, hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (err) {
      setText(this.status, t('downloadFailed', { why: err.message }));
    } finally {
      setText(this.csv, label);
      this.csv.removeAttribute('aria-busy');
    }
  }
}
