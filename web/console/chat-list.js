// The list of the agent's chats: one button per chat with the visitor, the topic, the last
// message, how long the visitor has been waiting for an answer, and the unread count. Items are
// kept by conversation id and updated in place, so focus and scroll stay where they are.

import { h, setText } from '../common/dom.js';
import { t, categoryLabel, formatWait } from './strings.js';
import { initials, hue } from './topbar.js';

export class ChatList {
  constructor({ onSelect }) {
    this.onSelect = onSelect;
    this.items = new Map();
    this.count = h('span', { class: 'count' });
    this.ul = h('ul', { class: 'chat-list', 'aria-labelledby': 'chats-h' });
    this.empty = h('p', { class: 'empty' });
    this.el = h('nav', { class: 'chats', 'aria-labelledby': 'chats-h' },
      h('div', { class: 'pane-head' }, h('h2', { id: 'chats-h' }, t('chats')), this.count),
      this.ul, this.empty,
      h('p', { class: 'hint' }, t('switchHint')));
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
    };
    item.button = h('button', { type: 'button', class: 'chat', dataset: { id: chat.id }, onclick: () => this.onSelect(chat.id) },
      item.avatar,
      h('span', { class: 'main' },
        h('span', { class: 'line' }, item.name, item.wait),
        h('span', { class: 'line' }, item.cat, item.typing, item.preview, item.badge)));
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
    setText(item.badge, unread ? String(unread) : '');
    item.badge.hidden = !unread;
    item.typing.hidden = !chat.typing;
    const b = item.button;
    b.dataset.unread = String(unread);
    b.dataset.ended = chat.ended ? 'true' : 'false';
    if (selected) b.setAttribute('aria-current', 'true');
    else b.removeAttribute('aria-current');
    const label = [t('chatItemLabel', { name, category: categoryLabel(chat.category) }),
      unread ? t('unread', { n: unread }) : null, waitText].filter(Boolean).join(', ');
    if (b.getAttribute('aria-label') !== label) b.setAttribute('aria-label', label);
  }

  /** Focus the selected chat's button (after switching with the keyboard). */
  focusSelected(desk) {
    this.items.get(desk.selectedId)?.button.focus();
  }
}
