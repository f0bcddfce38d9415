// The canned-reply picker: typing `/` at the start of the reply box lists the shared replies
// (`GET /v1/canned`) whose shortcut or title matches what follows the slash, plus `/note` (write
// an internal note). Up and Down move, Enter or Tab inserts, Escape closes; a click works too.
// Inserting asks Parley to expand the placeholders (`POST /v1/canned/{shortcut}/expand`) with
// the visitor's and the agent's names, and puts the text in the box to edit before sending.
//
// The reply box stays focused throughout and points at the highlighted option with
// `aria-activedescendant`, the listbox pattern screen readers know from search boxes.

import { h, fill, setText } from '../common/dom.js';
import { t } from './strings.js';

/** The list is read again when older than this (replies change rarely). */
const FRESH = 60000;
const MAX_SHOWN = 8;
/** `/` then a shortcut being typed: letters, digits, - and _ only, nothing after. */
const TYPED = /^\/([a-z0-9_-]*)$/i;

export class CannedPicker {
  /**
   * @param {object} o  api (api.js), input (the textarea), onNote(), vars() → the expansion's
   *   `{visitor_name, agent_name, visitor_id, category}` for the chat on screen
   */
  constructor({ api, input, onNote, vars }) {
    this.api = api;
    this.input = input;
    this.onNote = onNote;
    this.vars = vars;
    this.replies = null;
    this.loadedAt = 0;
    this.options = [];
    this.active = 0;
    this.ul = h('ul', { id: 'canned-list', class: 'canned', role: 'listbox', 'aria-label': t('cannedLabel'), hidden: true });
    this.live = h('p', { class: 'sr-only', role: 'status' });
    this.el = h('div', { class: 'canned-box' }, this.ul, this.live);
    input.setAttribute('aria-autocomplete', 'list');
    input.setAttribute('aria-controls', 'canned-list');
    input.setAttribute('aria-expanded', 'false');
  }

  get open() { return !this.ul.hidden; }

  /** The text changed: open, filter or close the list. */
  async changed() {
    if (!TYPED.test(this.input.value)) {
      this.close();
      return;
    }
    if (!this.replies || Date.now() - this.loadedAt > FRESH) {
      try {
        this.replies = await this.api.canned();
        this.loadedAt = Date.now();
      } catch {
        this.replies = this.replies || [];
      }
      if (!TYPED.test(this.input.value)) return; // typed on meanwhile
    }
    this.show(TYPED.exec(this.input.value)[1].toLowerCase());
  }

  show(typed) {
    const builtIn = [{ shortcut: 'note', title: t('cannedNote'), note: true }];
    const match = (r) => r.shortcut.toLowerCase().startsWith(typed) || (typed && r.title.toLowerCase().includes(typed));
    this.options = [...builtIn, ...this.replies].filter(match).slice(0, MAX_SHOWN);
    this.active = 0;
    fill(this.ul, this.options.length ? this.options.map((r, i) => h('li', {
      id: `canned-${i}`, role: 'option', dataset: { shortcut: r.shortcut },
      onmousedown: (ev) => ev.preventDefault(), // keep focus in the reply box
      onclick: () => this.choose(i),
    }, h('span', { class: 'shortcut' }, `/${r.shortcut}`), h('span', { class: 'title' }, r.title)))
      : h('li', { class: 'none', role: 'option', 'aria-disabled': 'true' }, t('cannedNone')));
    this.ul.hidden = false;
    this.input.setAttribute('aria-expanded', 'true');
    this.highlight();
    setText(this.live, t('cannedCount', { n: this.options.length }));
  }

  highlight() {
    [...this.ul.children].forEach((li, i) => li.setAttribute('aria-selected', String(i === this.active)));
    if (this.options.length) {
      this.input.setAttribute('aria-activedescendant', `canned-${this.active}`);
      this.ul.children[this.active]?.scrollIntoView({ block: 'nearest' });
    } else {
      this.input.removeAttribute('aria-activedescendant');
    }
  }

  /** Keys while the list is open; true when the key was the picker's. */
  key(ev) {
    if (!this.open) return false;
    if (ev.key === 'ArrowDown' || ev.key === 'ArrowUp') {
      if (this.options.length) {
        const n = this.options.length;
        this.active = (this.active + (ev.key === 'ArrowDown' ? 1 : n - 1)) % n;
        this.highlight();
      }
    } else if ((ev.key === 'Enter' || ev.key === 'Tab') && !ev.shiftKey && !ev.isComposing) {
      if (!this.options.length) return false;
      this.choose(this.active);
    } else if (ev.key === 'Escape') {
      this.close();
    } else {
      return false;
    }
    ev.preventDefault();
    return true;
  }

  async choose(i) {
    const r = this.options[i];
    const vars = this.vars();
    this.close();
    if (!r) return;
    if (r.note) {
      this.input.value = '';
      this.onNote();
      return;
    }
    try {
      const expanded = await this.api.expand(r.shortcut, vars);
      this.input.value = expanded.text;
    } catch {
      setText(this.live, t('cannedFailed'));
      return;
    }
    this.input.focus();
    this.input.setSelectionRange(this.input.value.length, this.input.value.length);
    this.input.dispatchEvent(new Event('input', { bubbles: true }));
  }

  close() {
    if (!this.open) return;
    this.ul.hidden = true;
    this.ul.replaceChildren();
    this.options = [];
    this.input.setAttribute('aria-expanded', 'false');
    this.input.removeAttribute('aria-activedescendant');
  }
}
