// The list of the agent's chats: one button per chat with the visitor, the topic, the last
// message, how long the visitor has been waiting for an answer, the unread count, and the
// first-response clock (SLA) while it runs. Items are kept by conversation id and updated in
// place, so focus and scroll stay where they are.
//
// Below them, conversations still in the queue whose first-response clock is near or past its
// target (`sla` frames for chats not ours): not assigned to anyone yet, shown so the desk sees
// them coming.

import { h, setText, fill } from '../common/dom.js';
import { t, categoryLabel, formatWait, formatCountdown } from './strings.js';
import { initials, hue } from './topbar.js';
import { slaView } from './conversation.js';

export class ChatList {
  constructor({ onSelect }) {
    this.onSelect = onSelect;
    this.items = new Map();
    this.count = h('span', { class: 'count' });
    this.ul = h('ul', { class: 'chat-list', 'aria-labelledby': 'chats-h' });
    this.empty = h('p', { class: 'empty' });
    this.waitingList = h('ul', { class: 'waiting-list' });
    this.waiting = h('section', { class: 'waiting', 'aria-labelledby': 'waiting-h', hidden: true },
      h('h3', { id: 'waiting-h' }, t('waitingHead')), h('p', { class: 'hint-small' }, t('waitingHint')), this.waitingList);
    this.el = h('nav', { class: 'chats', 'aria-labelledby': 'chats-h' },
      h('div', { class: 'pane-head' }, h('h2', { id: 'chats-h' }, t('chats')), this.count),
      h('div', { class: 'chats-scroll' }, this.ul, this.empty, this.waiting),
      h('p', { class: 'hint' }, t('switchHint')));
  }

  /** Queued conversations near or past their target (`desk.waiting`), soonest due first. */
  drawWaiting(desk, now) {
    const list = [...desk.waiting.values()].sort((a, b) => a.dueAt - b.dueAt);
    this.waiting.hidden = !list.length;
    fill(this.waitingList, list.map((w) => {
      const state = now >= w.dueAt ? 'breached' : w.state;
      const left = formatCountdown(w.dueAt - now);
      const over = formatCountdown(now - w.dueAt);
      return h('li', { dataset: { id: w.id, sla: state } },
        h('span', { class: 'who' }, t('waitingItem', { name: w.name || t('visitor'), category: w.category ? categoryLabel(w.category) : '…' })),
        h('span', { class: 'sla', dataset: { state } }, t(`sla.${state}`, { left, over })));
    }));
  }

  update(desk) {
    const list = desk.list;
    const now = Date.now();
    const keep = new Set(list.map((c) => c.id));
    for (const [id, item] of this.items) {
      if (!keep.has(id)) {
        item.li.remove();
        this.items.delete(id);
      }
    }
    list.forEach((chat, i) => {
      let item = this.items.get(chat.id);
      if (!item) {
        item = this.create(chat);
        this.items.set(chat.id, item);
      }
      if (this.ul.children[i] !== item.li) this.ul.insertBefore(item.li, this.ul.children[i] || null);
      this.fill(item, chat, chat.id === desk.selectedId, now);
    });
    this.drawWaiting(desk, now);
    const open = list.filter((c) => !c.ended).length;
    setText(this.count, open ? String(open) : '');
    this.empty.hidden = list.length > 0;
    setText(this.empty, desk.me?.status && desk.me.status !== 'online' ? t('chatsEmptyAway') : t('chatsEmpty'));
  }

  create(chat) {
    const item = {
      avatar: h('span', { class: 'avatar', 'aria-hidden': 'true' }),
      name: h('span', { class: 'name' }),
      cat: h('span', { class: 'chip' }),
      preview: h('span', { class: 'preview' }),
      wait: h('span', { class: 'wait' }),
      badge: h('span', { class: 'badge' }),
      typing: h('span', { class: 'typing-dots', 'aria-hidden': 'true' }, h('i'), h('i'), h('i')),
      sla: h('span', { class: 'sla', 'aria-hidden': 'true' }),
    };
    item.button = h('button', { type: 'button', class: 'chat', dataset: { id: chat.id }, onclick: () => this.onSelect(chat.id) },
      item.avatar,
      h('span', { class: 'main' },
        h('span', { class: 'line' }, item.name, item.wait),
        h('span', { class: 'line' }, item.cat, item.typing, item.preview, item.badge),
        item.sla));
    item.li = h('li', {}, item.button);
    item.avatar.style.setProperty('--hue', hue(chat.visitor.id));
    return item;
  }

  fill(item, chat, selected, now) {
    const name = chat.name || t('visitor');
    const unread = chat.ended ? 0 : chat.unread;
    const since = chat.ended ? null : chat.waitingSince;
    const last = chat.last;
    setText(item.avatar, initials(name));
    setText(item.name, name);
    setText(item.cat, categoryLabel(chat.category));
    item.cat.dataset.category = chat.category;
    setText(item.preview, last ? (last.own ? t('youSaid', { text: last.text }) : last.text) : '');
    const waitText = chat.ended ? t('ended') : since != null ? t('waiting', { wait: formatWait(now - since) }) : t('replied');
    setText(item.wait, waitText);
    item.wait.dataset.state = chat.ended ? 'ended' : since != null ? (now - since > 120000 ? 'late' : 'waiting') : 'replied';
    // The clock shows while it runs; met or missed is history (in the details).
    const sla = chat.ended ? null : slaView(chat, now);
    const running = sla && (sla.state === 'pending' || sla.state === 'warning' || sla.state === 'breached');
    item.sla.hidden = !running;
    if (running) setText(item.sla, sla.text);
    item.sla.dataset.state = running ? sla.state : '';
    item.button.dataset.sla = running ? sla.state : '';
    setText(item.badge, unread ? String(unread) : '');
    item.badge.hidden = !unread;
    item.typing.hidden = !chat.typing;
    const b = item.button;
    b.dataset.unread = String(unread);
    b.dataset.ended = chat.ended ? 'true' : 'false';
    if (selected) b.setAttribute('aria-current', 'true');
    else b.removeAttribute('aria-current');
    // The label changes with states, not every second, so screen readers are not flooded.
    const label = [t('chatItemLabel', { name, category: categoryLabel(chat.category) }),
      unread ? t('unread', { n: unread }) : null, waitText,
      running && sla.state !== 'pending' ? t(`slaSay.${sla.state}`) : null].filter(Boolean).join(', ');
    if (b.getAttribute('aria-label') !== label) b.setAttribute('aria-label', label);
  }

  /** Focus the selected chat's button (after switching with the keyboard). */
  focusSelected(desk) {
    this.items.get(desk.selectedId)?.button.focus();
  }
}
