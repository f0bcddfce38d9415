// Small hand-drawn SVG time-series charts: a line and a soft area per series over the last
// minutes, gaps where the feed was down, the scale's top written above. No chart library: the
// figures are a few hundred points at most.

import { h, append, setText } from '../common/dom.js';
import { t, formatSpan } from './strings.js';

/** `h` in the SVG namespace. */
function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v != null && v !== false) el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

const W = 300;
const H = 64;
/** Points further apart than this are not joined (the dashboard was disconnected). */
const GAP = 3500;

export class Chart {
  /**
   * @param {object} o
   * @param {string} o.title  what the chart shows (for its accessible label)
   * @param {{name?: string, color: string, value: (s) => number|null}[]} o.series
   * @param {(n) => string} o.format  formats a value for the scale and label
   * @param {number} [o.floor]  the smallest top of scale (so that 0.2/s does not look like a spike)
   * @param {number} [o.max]  a fixed top of scale (utilisation: 1)
   */
  constructor({ title, series, format, floor = 1, max = null }) {
    Object.assign(this, { title, series, format, floor, max });
    this.top = h('span', { class: 'scale' });
    this.svg = svg('svg', { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', role: 'img', class: 'spark' });
    this.el = h('figure', { class: 'chart' }, this.top, this.svg,
      series.length > 1 ? h('figcaption', { class: 'legend' }, series.map((s) => h('span', { class: 'key' },
        h('i', { style: `background:${s.color}` }), s.name))) : null);
  }

  /** Draws `snapshots` (oldest first) between `from` and `to` (ms). */
  update(snapshots, from, to) {
    const span = Math.max(to - from, 1);
    let top = this.max ?? this.floor;
    let count = 0;
    for (const s of snapshots) {
      for (const series of this.series) {
        const v = series.value(s);
        if (v != null && Number.isFinite(v)) top = this.max ?? Math.max(top, v);
      }
    }
    top = this.max ?? niceCeil(top);
    const x = (ts) => ((ts - from) / span) * W;
    const y = (v) => H - 2 - (Math.min(v, top) / top) * (H - 6);
    const children = [svg('line', { x1: 0, x2: W, y1: y(top), y2: y(top), class: 'grid' }),
      svg('line', { x1: 0, x2: W, y1: y(top / 2), y2: y(top / 2), class: 'grid' })];
    const nows = [];
    for (const series of this.series) {
      let line = '';
      let area = '';
      let runStart = null;
      let prev = null;
      for (const s of snapshots) {
        if (s.ts < from) continue;
        const v = series.value(s);
        if (v == null || !Number.isFinite(v)) { prev = null; continue; }
        const px = x(s.ts).toFixed(1);
        const py = y(v).toFixed(1);
        if (!prev || s.ts - prev.ts > GAP) {
          if (runStart != null && prev) area += `L${x(prev.ts).toFixed(1)},${H}L${runStart},${H}Z`;
          line += `M${px},${py}`;
          area += `M${px},${H}L${px},${py}`;
          runStart = px;
        } else {
          line += `L${px},${py}`;
          area += `L${px},${py}`;
        }
        prev = s;
        count++;
      }
      if (runStart != null && prev) area += `L${x(prev.ts).toFixed(1)},${H}L${runStart},${H}Z`;
      if (area) children.push(svg('path', { d: area, fill: series.color, class: 'area' }));
      if (line) children.push(svg('path', { d: line, stroke: series.color, class: 'line' }));
      const last = [...snapshots].reverse().find((s) => series.value(s) != null);
      nows.push(last ? series.value(last) : null);
    }
    this.svg.replaceChildren(...children);
    this.svg.dataset.points = String(count);
    this.svg.dataset.top = String(top);
    setText(this.top, this.format(top));
    const values = snapshots.flatMap((s) => this.series.map((se) => se.value(s))).filter((v) => v != null && Number.isFinite(v));
    this.svg.setAttribute('aria-label', values.length
      ? t('chartLabel', {
        title: this.title, span: formatSpan(span), min: this.format(Math.min(...values)),
        max: this.format(Math.max(...values)), now: nows.map((n) => (n == null ? '—' : this.format(n))).join(' / '),
      })
      : `${this.title}: ${t('noData')}`);
  }
}

/** 1, 2, 5, 10, 20, 50…: a round top of scale at or above `v`. */
function niceCeil(v) {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p + 1e-9) return m * p;
  return 10 * p;
}
