// The satisfaction survey (`csat_request`): one question, a rating from 1 to 5 and an optional
// comment, answered with a `csat` frame. Imported by chat.js when a survey arrives.
//
// The rating is a group of five native radio buttons drawn as stars: arrow keys move between
// them, a screen reader reads "4 of 5: Happy", and the meaning of the chosen rating is written
// out beside the stars, so nothing depends on seeing the colour.

import { t } from './strings.js';
import { h } from './common/dom.js';

const SVG = 'http://www.w3.org/2000/svg';
const STAR = 'M12 2.8l2.8 5.8 6.3.9-4.6 4.4 1.1 6.3L12 17.2l-5.6 3 1.1-6.3L2.9 9.5l6.3-.9z';

function star() {
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('aria-hidden', 'true');
  const path = document.createElementNS(SVG, 'path');
  path.setAttribute('d', STAR);
  svg.append(path);
  return svg;
}

export class Survey {
  /**
   * @param lang  the widget's language
   * @param on  send(score, comment), dismiss()
   */
  constructor(lang, on) {
    const s = (key, vars) => t(lang, key, vars);
    this.s = s;
    this.on = on;
    this.meaning = h('span', { class: 'meaning', 'aria-hidden': 'true' });
    this.error = h('p', { class: 'survey-error', role: 'alert' });
    this.stars = [1, 2, 3, 4, 5].map((n) => h('label', { class: 'star', 'data-score': String(n) },
      h('input', { type: 'radio', name: 'p-score', value: String(n), 'aria-label': s('scoreLabel', { n, meaning: s('score.' + n) }) }),
      star()));
    this.comment = h('textarea', { id: 'p-csat-comment', rows: '2', maxlength: '1000' });
    this.form = h('form', {
      class: 'survey', 'aria-labelledby': 'p-csat',
      onsubmit: (e) => { e.preventDefault(); this.submit(); },
      onchange: () => this.paint(),
    },
    h('fieldset', {},
      h('legend', { id: 'p-csat' }, s('survey')),
      h('div', { class: 'stars' }, ...this.stars, this.meaning)),
    h('label', { for: 'p-csat-comment' }, s('surveyComment')), this.comment, this.error,
    h('div', { class: 'survey-actions' },
      h('button', { type: 'submit', class: 'rate' }, s('surveySend')),
      h('button', { type: 'button', class: 'skip', onclick: () => on.dismiss() }, s('surveySkip'))));
    this.el = h('div', { class: 'survey-box' }, this.form);
  }

  get score() {
    const checked = this.form.querySelector('input[name="p-score"]:checked');
    return checked ? Number(checked.value) : 0;
  }

  /** Fills the stars up to the chosen one and writes its meaning out. */
  paint() {
    const n = this.score;
    for (const label of this.stars) label.classList.toggle('on', Number(label.dataset.score) <= n);
    this.meaning.textContent = n ? this.s('score.' + n) : '';
    if (n) this.error.textContent = '';
  }

  submit() {
    const score = this.score;
    if (!score) {
      this.error.textContent = this.s('surveyPick');
      this.stars[0].querySelector('input').focus();
      return;
    }
    this.on.send(score, this.comment.value.trim() || null);
    this.thanks();
  }

  thanks() {
    this.el.replaceChildren(h('p', { class: 'thanks', role: 'status' }, this.s('surveyThanks')));
  }
}
