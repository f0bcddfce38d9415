// The support desk on the dashboard, from each snapshot's `desk` object (docs/operations.md,
// "The ops feed"): first replies within target per category (met, missed, breached) and the
// attainment over all of them, the survey average and how many answered, deflections (questions
// an article answered), offline messages and transfers. Counters since this node started; the
// reports panel (reports.js) covers days.

import { h, fill, setText } from '../common/dom.js';
import { t, categoryLabel, formatCount, formatPercent, formatScore } from './strings.js';

export class DeskPanel {
  constructor() {
    const figure = (id, title) => {
      const value = h('span', { class: 'value' });
      const sub = h('p', { class: 'sub' });
      const el = h('div', { class: 'desk-figure', dataset: { metric: id } }, h('h3', {}, t(title)), h('p', { class: 'figure' }, value), sub);
      return { el, value, sub };
    };
    this.figures = {
      sla: figure('sla_attainment', 'slaAttainment'),
      csat: figure('csat', 'csatAverage'),
      deflections: figure('deflections', 'deflections'),
      offline: figure('offline_messages', 'offlineMessages'),
      transfers: figure('transfers', 'transfers'),
    };
    this.rows = h('tbody');
    this.el = h('section', { class: 'tile wide desk', dataset: { metric: 'desk' }, 'aria-labelledby': 'h-desk' },
      h('h2', { id: 'h-desk' }, t('desk')),
      h('p', { class: 'sub' }, t('deskNote')),
      h('div', { class: 'desk-grid' },
        h('div', { class: 'desk-figures' }, ...Object.values(this.figures).map((f) => f.el)),
        h('table', { class: 'data sla-table' },
          h('caption', {}, t('slaTable')),
          h('thead', {}, h('tr', {}, ...['category', 'met', 'missed', 'breached', 'attainment'].map((k, i) => h('th', { scope: 'col', class: i ? 'num' : null }, t(k))))),
          this.rows)));
  }

  /** Draws `desk` (a snapshot's) with the categories in `order` (priority, from /v1/info). */
  update(desk, order) {
    if (!desk) return;
    const f = this.figures;
    const sla = desk.sla || {};
    const cats = [...order.filter((c) => c in sla), ...Object.keys(sla).filter((c) => !order.includes(c))];
    let met = 0;
    let answered = 0;
    for (const c of cats) {
      met += sla[c].met;
      answered += sla[c].met + sla[c].missed;
    }
    setText(f.sla.value, desk.sla_attainment == null ? t('none') : formatPercent(desk.sla_attainment));
    setText(f.sla.sub, t('slaAttainmentSub', { met: formatCount(met), answered: formatCount(answered) }));
    f.sla.el.dataset.warn = desk.sla_attainment != null && desk.sla_attainment < 0.8 ? 'true' : 'false';
    setText(f.csat.value, desk.csat_average == null ? t('none') : t('csatValue', { avg: formatScore(desk.csat_average) }));
    setText(f.csat.sub, desk.csat_answers === 1 ? t('csatSubOne') : t('csatSub', { n: formatCount(desk.csat_answers) }));
    setText(f.deflections.value, formatCount(desk.deflections));
    setText(f.deflections.sub, t('deflectionsSub'));
    setText(f.offline.value, formatCount(desk.offline_messages));
    setText(f.offline.sub, t('offlineSub'));
    setText(f.transfers.value, formatCount(desk.transfers));
    setText(f.transfers.sub, t('transfersSub'));
    const key = JSON.stringify(cats.map((c) => [c, sla[c]]));
    if (key === this.key) return;
    this.key = key;
    fill(this.rows, cats.map((c) => {
      const s = sla[c];
      const decided = s.met + s.missed;
      return h('tr', { dataset: { category: c } },
        h('th', { scope: 'row' }, categoryLabel(c)),
        h('td', { class: 'num' }, formatCount(s.met)),
        h('td', { class: 'num' }, formatCount(s.missed)),
        h('td', { class: 'num', dataset: { warn: s.breached > 0 ? 'true' : 'false' } }, formatCount(s.breached)),
        h('td', { class: 'num' }, decided ? formatPercent(s.met / decided) : t('none')));
    }));
  }
}
