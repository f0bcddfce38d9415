// The chat on screen: a header with the visitor and the actions, the messages (a live log for
// screen readers), the visitor's typing line, and what happens when the chat has ended.
//
// Messages are drawn by kind (`renderers`): a new kind of message is a new entry there and a
// class in console.css. Private notes are drawn apart from the conversation (centred, striped,
// labelled "Internal note" in words as well as colour), so they are never taken for a reply.
// Text always goes in as text, never as HTML.
//
// Under the header: the first-response clock (SLA) of the chat, the answer to the last action
// (a refused transfer, a survey sent) as an alert, and the close question or the transfer form.

import { h, setText, fill } from '../common/dom.js';
import { t, categoryLabel, formatTime, formatCountdown } from './strings.js';
import { actions } from './actions.js';
import { initials, hue } from './topbar.js';
import { TransferForm } from './transfer.js';

const renderers = {
  visitor: (m, chat) => bubble(m, chat.name || t('visitor')),
  agent: (m) => bubble(m, m.own ? t('you') : m.name || ''),
  note: (m) => {
    const state = h('span', { class: 'state' });
    const li = h('li', { class: `msg note${m.own ? ' own' : ''}` },
      h('div', { class: 'note-tag' }, h('span', { class: 'lock', 'aria-hidden': 'true' }),
        m.byParley ? t('systemNote') : t('noteBy', { name: m.own ? t('you') : m.name || '' })),
      h('div', { class: 'bubble' }, m.text),
      h('div', { class: 'meta' }, h('time', {}, formatTime(m.ts)), state));
    li.stateEl = state;
    return li;
  },
  system: (m) => h('li', { class: 'msg system' }, m.text),
};

/** The SLA chip's text and state for a chat at `now`, or null when it has no clock. */
export function slaView(chat, now) {
  const state = chat.slaState(now);
  if (!state) return null;
  const left = formatCountdown(chat.sla.dueAt - now);
  const over = formatCountdown(now - chat.sla.dueAt);
  return { state, text: t(`sla.${state}`, { left, over }) };
}

function bubble(m, who) {
  const state = h('span', { class: 'state' });
  const li = h('li', { class: `msg ${m.kind}${m.own ? ' own' : ''}` },
    h('div', { class: 'bubble' }, m.text),
    h('div', { class: 'meta' }, h('span', { class: 'who' }, who), ' · ', h('time', {}, formatTime(m.ts)), state));
  li.stateEl = state;
  return li;
}

export class ConversationView {
  constructor({ desk, composer, api }) {
    this.desk = desk;
    this.composer = composer;
    this.transfer = new TransferForm({ desk, api });
    this.sla = h('span', { class: 'sla', hidden: true });
    this.notice = h('div', { class: 'notice', role: 'alert', hidden: true });
    this.chatId = null;
    this.nodes = new Map(); // message key → li
    this.avatar = h('span', { class: 'avatar big', 'aria-hidden': 'true' });
    this.title = h('h2', { id: 'conv-h' });
    this.cat = h('span', { class: 'chip' });
    this.started = h('span', { class: 'started' });
    this.actionBar = h('div', { class: 'actions', role: 'group', 'aria-label': t('actionsLabel') });
    this.confirm = h('div', { class: 'confirm', role: 'group', hidden: true });
    this.log = this.newLog();
    this.scroller = h('div', { class: 'scroller' }, this.log);
    this.typing = h('p', { class: 'typing', 'aria-live': 'polite' });
    this.endedText = h('span');
    this.ended = h('div', { class: 'ended', role: 'status', hidden: true }, this.endedText,
      h('button', { type: 'button', class: 'ghost', onclick: () => this.desk.dismiss(this.desk.selected) }, t('dismiss')));
    this.placeholder = h('div', { class: 'placeholder' }, h('p', {}, t('noChatSelected')));
    this.body = h('div', { class: 'conv-body' },
      h('header', { class: 'conv-head' }, this.avatar,
        h('div', { class: 'conv-title' }, this.title, h('div', { class: 'sub' }, this.cat, this.sla, this.started)),
        this.actionBar),
      this.notice, this.confirm, this.transfer.el, this.scroller, this.typing, this.ended, composer.el);
    this.el = h('section', { class: 'conversation', 'aria-labelledby': 'conv-h' }, this.placeholder, this.body);
  }

  newLog() {
    return h('ol', { class: 'log', role: 'log', 'aria-live': 'polite' });
  }

  update() {
    const chat = this.desk.selected;
    this.placeholder.hidden = !!chat;
    this.body.hidden = !chat;
    if (!chat) {
      this.chatId = null;
      return;
    }
    const switched = chat.id !== this.chatId;
    if (switched) {
      // A fresh log element, so a screen reader does not read the whole history as new.
      this.chatId = chat.id;
      this.nodes.clear();
      const log = this.newLog();
      this.log.replaceWith(log);
      this.log = log;
      this.hideConfirm();
      this.transfer.hide();
      this.avatar.style.setProperty('--hue', hue(chat.visitor.id));
    }
    const name = chat.name || t('visitor');
    setText(this.title, name);
    setText(this.avatar, initials(name));
    setText(this.cat, categoryLabel(chat.category));
    this.cat.dataset.category = chat.category;
    setText(this.started, t('startedAt', { time: formatTime(chat.createdAt) }));
    this.log.setAttribute('aria-label', t('messagesLabel', { name }));
    this.tick();
    this.drawNotice(chat);
    this.drawActions(chat);
    const nearBottom = this.scroller.scrollHeight - this.scroller.scrollTop - this.scroller.clientHeight < 80;
    this.drawMessages(chat);
    if (switched || nearBottom) this.scroller.scrollTop = this.scroller.scrollHeight;
    setText(this.typing, chat.typing && !chat.ended ? t('typing', { name }) : '');
    this.ended.hidden = !chat.ended;
    if (chat.ended) {
      const key = chat.ended.reason === 'gone' ? 'ended.gone' : `ended.${chat.ended.reason}`;
      setText(this.endedText, t(key, { name }));
    }
    this.composer.show(chat, switched);
  }

  /** Redraws what moves with the clock: the SLA countdown. */
  tick() {
    const chat = this.desk.selected;
    const v = chat && !chat.ended ? slaView(chat, Date.now()) : null;
    this.sla.hidden = !v;
    if (!v) return;
    setText(this.sla, v.text);
    this.sla.dataset.state = v.state;
  }

  drawNotice(chat) {
    const n = chat.notice;
    this.notice.hidden = !n;
    const key = n ? `${chat.id}:${n.kind}:${n.code}` : '';
    if (this.notice.dataset.key === key) return;
    this.notice.dataset.key = key;
    if (!n) {
      this.notice.replaceChildren();
      return;
    }
    const name = chat.name || t('visitor');
    const text = n.kind === 'survey' && n.code === 'sent' ? t('notice.survey.sent', { name })
      : n.code === 'not_configured' ? t(`notice.${n.kind === 'survey' ? 'survey' : 'escalate'}.not_configured`)
        : `notice.${n.code}` in NOTICES ? t(`notice.${n.code}`) : t('notice.other', { code: n.code });
    this.notice.dataset.kind = n.kind;
    this.notice.dataset.code = n.code;
    this.notice.dataset.tone = n.code === 'sent' ? 'ok' : 'error';
    fill(this.notice, h('span', {}, text),
      h('button', { type: 'button', class: 'ghost', onclick: () => this.desk.dismissNotice(chat) }, t('dismissNotice')));
  }

  drawMessages(chat) {
    const keep = new Set();
    let prev = null;
    for (const m of chat.messages) {
      const key = m.cid || `s${m.seq}`;
      keep.add(key);
      let li = this.nodes.get(key);
      if (!li) {
        li = (renderers[m.kind] || renderers.system)(m, chat);
        this.nodes.set(key, li);
      }
      const want = prev ? prev.nextSibling : this.log.firstChild;
      if (want !== li) this.log.insertBefore(li, want);
      if (m.seq != null) li.dataset.seq = m.seq;
      li.dataset.state = m.own ? m.state : '';
      if (li.stateEl && m.own) this.drawState(li, chat, m);
      if (m.kind === 'note') li.dataset.note = 'true';
      prev = li;
    }
    for (const [key, li] of this.nodes) {
      if (!keep.has(key)) {
        li.remove();
        this.nodes.delete(key);
      }
    }
  }

  drawState(li, chat, m) {
    // A note is stored or not: "read" would suggest the visitor saw it.
    const state = m.kind === 'note' && (m.state === 'sent' || m.state === 'read') ? 'saved' : m.state;
    const parts = [' · ', t(`state.${state}`)];
    if (m.error) parts.push(' — ', t(m.error, { code: m.code || '' }));
    if (m.state === 'failed' && !chat.ended) {
      parts.push(' ', h('button', { type: 'button', class: 'link', onclick: () => this.desk.retry(chat, m.cid) }, t('retry')));
    }
    const key = parts.map((p) => (typeof p === 'string' ? p : '[btn]')).join('');
    if (li.stateKey !== key) {
      li.stateKey = key;
      fill(li.stateEl, ...parts);
    }
  }

  drawActions(chat) {
    const available = actions.filter((a) => a.when(chat, this.desk));
    const key = available.map((a) => a.id).join(',');
    if (this.actionBar.dataset.key === key) return;
    this.actionBar.dataset.key = key;
    fill(this.actionBar, ...available.map((a) => h('button', {
      type: 'button', class: `action ${a.id}`, dataset: { action: a.id },
      onclick: (ev) => this.runAction(a, ev.currentTarget),
    }, t(a.label))));
    if (!available.length) {
      this.hideConfirm();
      this.transfer.hide();
    }
  }

  runAction(action, button) {
    const chat = this.desk.selected;
    if (!chat) return;
    if (action.panel) {
      this.hideConfirm();
      this.transfer.show(chat, action.panel, button);
      return;
    }
    if (!action.confirm) {
      action.run(this.desk, chat);
      return;
    }
    this.transfer.hide();
    const cancel = () => { this.hideConfirm(); button.focus(); };
    fill(this.confirm,
      h('p', { id: 'confirm-q' }, t(action.confirm.question)),
      ...action.confirm.choices.map((c) => h('button', {
        type: 'button', class: c.primary ? 'primary' : 'secondary', dataset: { choice: c.id },
        onclick: () => { this.hideConfirm(); c.run(this.desk, chat); },
      }, t(c.label))),
      h('button', { type: 'button', class: 'ghost', onclick: cancel }, t('cancel')));
    this.confirm.setAttribute('aria-labelledby', 'confirm-q');
    this.confirm.dataset.action = action.id;
    this.confirm.onkeydown = (ev) => { if (ev.key === 'Escape') cancel(); };
    this.confirm.hidden = false;
    this.confirm.querySelector('button').focus();
  }

  hideConfirm() {
    this.confirm.hidden = true;
    this.confirm.replaceChildren();
  }
}

/** Refusals with their own text in the strings table (`notice.*`). */
const NOTICES = {
  'notice.target_unavailable': 1, 'notice.not_found': 1, 'notice.unavailable': 1, 'notice.forbidden': 1,
};
