// The chat panel: header, status lines, the pre-chat topic picker, the message list, the typing
// line and the composer. It draws what chat.js tells it and reports what the visitor does; it
// holds no conversation state of its own.
//
// Text from the network only ever enters the page as text (`append` of strings, `textContent`):
// nothing here parses HTML.

import { h } from './common/dom.js';
import { t, categoryLabel, formatOpening } from './strings.js';

const SVG = 'http://www.w3.org/2000/svg';
const ICONS = {
  min: 'M6 9l6 6 6-6',
  send: 'M22 2L11 13M22 2l-7 20-4-9-9-4z',
  pending: 'M12 3a9 9 0 1 0 0 18 9 9 0 1 0 0-18zM12 7v5l3 2',
  delivered: 'M5 13l4 4L19 7',
  read: 'M2 13l4 4L16 7M10 15.5l1.5 1.5L22 7',
  failed: 'M12 3a9 9 0 1 0 0 18 9 9 0 1 0 0-18zM12 8v5M12 16v.5',
  agent: 'M4 14v-2a8 8 0 0 1 16 0v2M4 14a2 2 0 0 0 2 2h1v-5H6a2 2 0 0 0-2 2zM20 14a2 2 0 0 1-2 2h-1v-5h1a2 2 0 0 1 2 2zM18 16v1a3 3 0 0 1-3 3h-3',
};

function icon(name) {
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('focusable', 'false');
  const path = document.createElementNS(SVG, 'path');
  path.setAttribute('d', ICONS[name]);
  svg.append(path);
  return svg;
}

const FOCUSABLE = 'button:not([disabled]),textarea:not([disabled]),input:not([disabled]),a[href],[tabindex="0"]';

export class Panel {
  /**
   * @param ctx  from widget.js: root, shadow, base, lang, settings, launcher, requestClose
   * @param on   send(text, contact), pick(category), end(), again(), typing(), draft(text), seen()
   */
  constructor(ctx, on) {
    this.ctx = ctx;
    this.on = on;
    const lang = (this.lang = ctx.lang);
    const s = (key, vars) => t(lang, key, vars);
    this.s = s;
    this.time = new Intl.DateTimeFormat(lang, { hour: '2-digit', minute: '2-digit' });

    const css = h('link', { rel: 'stylesheet', href: new URL('widget/chat.css', ctx.base).href });
    this.ready = new Promise((resolve) => {
      css.onload = resolve;
      css.onerror = resolve; // unstyled beats unusable
    });
    ctx.shadow.append(css);

    this.title = h('h2', { id: 'p-title' });
    this.sub = h('p', { class: 'sub' });
    this.avatar = h('div', { class: 'avatar', 'aria-hidden': 'true' });
    this.endBtn = h('button', { type: 'button', class: 'end', hidden: true, onclick: () => this.confirmEnd(true) }, s('end'));
    this.confirm = h('div', { class: 'confirm', role: 'group', 'aria-label': s('end'), hidden: true },
      h('span', {}, s('endConfirm')),
      h('button', { type: 'button', class: 'yes', onclick: () => { this.confirmEnd(false); on.end(); } }, s('endYes')),
      h('button', { type: 'button', class: 'no', onclick: () => this.confirmEnd(false, true) }, s('endNo')));
    this.banner = h('div', { class: 'banner', role: 'status', 'aria-live': 'polite', hidden: true });
    this.notice = h('div', { class: 'notice', role: 'alert', hidden: true });

    this.cats = h('ul', { class: 'cats' });
    this.prechat = h('section', { class: 'prechat', 'aria-labelledby': 'p-pre' },
      h('h3', { id: 'p-pre' }, s('prechat')), h('p', {}, s('prechatHint')), this.cats);
    this.log = h('ol', { class: 'log', role: 'log', 'aria-live': 'polite', 'aria-relevant': 'additions', 'aria-label': s('messages') });
    this.typingLine = h('div', { class: 'typing', 'aria-live': 'polite' });
    // Suggested articles and the survey (suggest.js, survey.js) go here, after the messages.
    this.extra = h('div', { class: 'extra' });
    this.body = h('div', { class: 'body' }, this.prechat, this.log, this.extra, this.typingLine);
    // Before an offline message: why nobody answers now, and a field to leave an e-mail.
    this.offlineNote = h('p', { class: 'offline-note', role: 'status', hidden: true });
    this.contact = h('input', {
      type: 'email', id: 'p-contact', maxlength: '200', autocomplete: 'email', inputmode: 'email', spellcheck: 'false',
    });
    this.contactRow = h('div', { class: 'contact', hidden: true }, h('label', { for: 'p-contact' }, s('contact')), this.contact);

    this.input = h('textarea', {
      rows: '1', maxlength: '4000', 'aria-label': s('input'), placeholder: s('placeholder'),
      onkeydown: (e) => {
        // Enter sends, Shift+Enter is a new line; Enter that confirms an IME candidate (how
        // Chinese is typed) must not send.
        if (e.key === 'Enter' && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
          e.preventDefault();
          this.submit();
        }
      },
      oninput: () => { this.grow(); on.typing(); on.draft(this.input.value); },
    });
    this.composer = h('form', { class: 'composer', onsubmit: (e) => { e.preventDefault(); this.submit(); } },
      this.contactRow, this.input,
      h('button', { type: 'submit', class: 'send', 'aria-label': s('send'), title: s('send') }, icon('send')));
    this.endedText = h('p', {});
    this.againBtn = h('button', { type: 'button', class: 'again', onclick: () => on.again() }, s('again'));
    this.ended = h('div', { class: 'ended', hidden: true }, this.endedText, this.againBtn);

    this.el = h('div', {
      class: 'panel', id: 'parley-panel', role: 'dialog', 'aria-labelledby': 'p-title', lang, hidden: true,
      onkeydown: (e) => this.keydown(e),
    },
    h('header', { class: 'head' }, this.avatar, h('div', { class: 'who' }, this.title, this.sub), this.endBtn,
      h('button', { type: 'button', class: 'min', 'aria-label': s('minimize'), title: s('minimize'), onclick: () => ctx.requestClose() }, icon('min'))),
    this.confirm, this.banner, this.notice, this.body, h('div', { class: 'foot' }, this.offlineNote, this.composer, this.ended));
    ctx.root.append(this.el);
    ctx.launcher.addEventListener('keydown', (e) => this.keydown(e));
    this.body.addEventListener('scroll', () => on.seen(), { passive: true });
    this.setAgent(null);
    this.setView('loading');
  }

  show() {
    this.el.hidden = false;
    this.scrollDown(true);
    this.focusFirst();
  }

  hide() {
    this.el.hidden = true;
    this.confirmEnd(false);
  }

  get visible() {
    return !this.el.hidden;
  }

  /** 'loading' | 'prechat' | 'chat' | 'ended' */
  setView(view) {
    const had = this.el.contains(this.ctx.shadow.activeElement);
    this.view = view;
    this.prechat.hidden = view !== 'prechat';
    this.log.hidden = view === 'prechat' || view === 'loading';
    this.extra.hidden = this.log.hidden;
    this.composer.hidden = view !== 'chat';
    if (view !== 'chat') this.setOffline(null);
    this.ended.hidden = view !== 'ended';
    this.el.setAttribute('aria-busy', String(view === 'loading'));
    if (view !== 'chat') this.setTyping(null);
    if (had) this.focusFirst();
  }

  setCategories(categories) {
    this.cats.replaceChildren(...categories.map((c) => h('li', {},
      h('button', { type: 'button', 'data-category': c, onclick: () => this.on.pick(c) }, categoryLabel(this.lang, c),
        h('span', { class: 'when', hidden: true })))));
    if (this.availability) this.setAvailability(this.availability);
    if (this.view === 'loading') this.setView('prechat');
  }

  /** Marks the topics nobody answers now (`welcome.availability`, a Map by category). */
  setAvailability(availability) {
    this.availability = availability;
    for (const b of this.cats.querySelectorAll('button')) {
      const a = availability.get(b.dataset.category);
      const when = b.querySelector('.when');
      const closed = a && !a.open;
      b.dataset.open = closed ? 'false' : 'true';
      when.hidden = !closed;
      when.textContent = !closed ? ''
        : a.reason === 'outside_hours' && a.opens_at ? this.s('closedHours', { time: formatOpening(this.lang, a.opens_at) })
          : a.reason === 'outside_hours' ? this.s('closedNow') : this.s('closedNobody');
    }
  }

  /** Before an offline message: `text` says why nobody answers now and the e-mail field shows. */
  setOffline(text) {
    this.offlineNote.textContent = text || '';
    this.offlineNote.hidden = !text;
    this.contactRow.hidden = !text;
  }

  /** The agent's name in the header, or the desk's title before one is assigned. */
  setAgent(name) {
    const title = this.ctx.settings.title || this.s('title');
    this.title.textContent = name || title;
    this.sub.textContent = name ? title : this.s('subtitle');
    this.avatar.replaceChildren(name ? name.trim().charAt(0).toUpperCase() : icon('agent'));
  }

  setCanEnd(can) {
    this.endBtn.hidden = !can;
    if (!can) this.confirmEnd(false);
  }

  confirmEnd(show, refocus) {
    this.confirm.hidden = !show;
    if (show) this.confirm.querySelector('.no').focus();
    else if (refocus) this.endBtn.focus();
  }

  setBanner(text) {
    this.banner.textContent = text || '';
    this.banner.hidden = !text;
  }

  setNotice(text) {
    this.notice.textContent = text || '';
    this.notice.hidden = !text;
  }

  setTyping(text) {
    this.typingLine.replaceChildren(...(text ? [h('span', { class: 'dots', 'aria-hidden': 'true' }, h('i'), h('i'), h('i')), text] : []));
    if (text) this.scrollDown();
  }

  setPlaceholder(first) {
    this.input.placeholder = this.s(first ? 'placeholderFirst' : 'placeholder');
  }

  clear() {
    this.log.replaceChildren();
  }

  /** A line from the system ("Alice joined"), at the end of the list. */
  system(text) {
    this.log.append(h('li', { class: 'system' }, text));
    this.scrollDown();
  }

  /**
   * Adds or updates a message. `m`: {seq?, cid?, mine, name, text, ts, state?}. Confirmed
   * messages (with seq) are kept in seq order; the visitor's unconfirmed ones stay at the end.
   */
  upsert(m) {
    let el = (m.cid && this.log.querySelector(`[data-cid="${CSS.escape(m.cid)}"]`))
      || (m.seq != null && this.log.querySelector(`[data-seq="${m.seq}"]`));
    const fresh = !el;
    if (fresh) {
      const who = m.mine ? this.s('you') : m.name;
      el = h('li', { class: 'msg ' + (m.mine ? 'me' : 'them') },
        h('span', { class: 'name', 'aria-hidden': 'true' }, who),
        h('span', { class: 'sr' }, this.s('said', { name: who })),
        h('div', { class: 'bubble' }, m.text),
        h('div', { class: 'meta' }, h('time', {}, this.time.format(m.ts || Date.now()))));
      el.dataset.sender = m.mine ? '' : m.name;
      if (m.cid) el.dataset.cid = m.cid;
    }
    if (m.mine && m.state) this.setState(el, m.state);
    if (m.seq != null && el.dataset.seq !== String(m.seq)) {
      el.dataset.seq = m.seq;
      delete el.dataset.pending;
      const next = [...this.log.children].find((n) => n.dataset.seq && +n.dataset.seq > m.seq);
      // Move only when out of order, so a confirmation does not jump past system lines.
      if (next && (fresh || el.compareDocumentPosition(next) & Node.DOCUMENT_POSITION_PRECEDING)) {
        this.log.insertBefore(el, next);
      } else if (fresh) {
        this.log.insertBefore(el, this.log.querySelector('[data-pending]'));
      }
    } else if (fresh) {
      el.dataset.pending = '';
      this.log.append(el);
    }
    if (fresh) {
      this.group(el);
      if (el.nextElementSibling) this.group(el.nextElementSibling);
      this.scrollDown(m.mine);
    }
  }

  /** The sender's name shows only on the first of a run of messages from the same person. */
  group(el) {
    const prev = el.previousElementSibling;
    el.classList.toggle('cont', !!prev && prev.classList.contains('msg') && prev.dataset.sender === el.dataset.sender);
  }

  /**
   * Own message delivery state: pending (clock), delivered (one tick), read (two), failed.
   * The label's text changes in place: the log announces additions only, so a screen reader
   * reads the state with the message but is not interrupted by every tick.
   */
  setState(el, state) {
    if (typeof el !== 'object') el = this.log.querySelector(`[data-cid="${CSS.escape(el)}"]`);
    if (!el || el.dataset.state === state) return;
    el.dataset.state = state;
    const label = this.s('state.' + state);
    let mark = el.querySelector('.state');
    if (!mark) el.querySelector('.meta').append(mark = h('span', { class: 'state' }, icon(state), h('span', { class: 'sr' })));
    else mark.firstChild.replaceWith(icon(state));
    mark.title = label;
    mark.lastChild.textContent = label;
  }

  /** Marks the visitor's messages up to `seq` as read by the agent. */
  readUpTo(seq) {
    for (const el of this.log.querySelectorAll('.me[data-seq]')) {
      if (+el.dataset.seq <= seq) this.setState(el, 'read');
    }
  }

  /** The ended view: `text`, and a button to start again (labelled `againKey`). */
  setEnded(text, againKey = 'again') {
    this.endedText.textContent = text;
    this.againBtn.textContent = this.s(againKey);
    this.setView('ended');
  }

  submit() {
    const text = this.input.value.trim();
    if (!text) return;
    let contact = null;
    if (!this.contactRow.hidden) {
      contact = this.contact.value.trim() || null;
      if (contact && !this.contact.checkValidity()) {
        this.contact.setAttribute('aria-invalid', 'true');
        this.setNotice(this.s('contactInvalid'));
        this.contact.focus();
        return;
      }
      this.contact.removeAttribute('aria-invalid');
    }
    this.input.value = '';
    this.grow();
    this.on.send(text, contact);
  }

  grow() {
    this.input.style.height = 'auto';
    this.input.style.height = Math.min(this.input.scrollHeight, 120) + 'px';
  }

  /** Near the bottom = reading the latest: follow new messages; otherwise leave the scroll. */
  scrollDown(force) {
    const b = this.body;
    if (force || b.scrollHeight - b.scrollTop - b.clientHeight < 80) b.scrollTop = b.scrollHeight;
  }

  get atBottom() {
    const b = this.body;
    return b.scrollHeight - b.scrollTop - b.clientHeight < 80;
  }

  focusFirst() {
    if (this.el.hidden) return;
    const target = this.view === 'chat' ? this.input
      : this.view === 'prechat' ? this.cats.querySelector('button')
        : this.view === 'ended' ? this.ended.querySelector('button') : null;
    (target || this.el.querySelector('.min')).focus();
  }

  /** Escape closes; Tab stays within the panel and the launcher while the chat is open. */
  keydown(e) {
    if (this.el.hidden) return;
    if (e.key === 'Escape' && !e.isComposing) { // Escape during IME input cancels the candidate
      e.preventDefault();
      this.ctx.requestClose();
      return;
    }
    if (e.key !== 'Tab') return;
    const items = [...this.el.querySelectorAll(FOCUSABLE), this.ctx.launcher]
      .filter((n) => n.getClientRects().length > 0);
    if (!items.length) return;
    const i = items.indexOf(this.ctx.shadow.activeElement);
    const next = e.shiftKey ? (i <= 0 ? items.length - 1 : i - 1) : (i === items.length - 1 ? 0 : i + 1);
    e.preventDefault();
    items[next].focus();
  }
}
