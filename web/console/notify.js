// Telling the agent about what arrives: the tab title counts unread messages ("(3) Parley ·
// Agent console"); while the tab is hidden a desktop notification (Notification API, asked for
// only when the agent presses the button: browsers require a user gesture) announces each new
// chat and message; and a polite live region tells screen readers about other chats.

import { h, setText } from '../common/dom.js';
import { t, categoryLabel } from './strings.js';

export class Notifier {
  constructor({ onOpenChat }) {
    this.onOpenChat = onOpenChat;
    this.live = h('div', { class: 'sr-only', 'aria-live': 'polite', role: 'status' });
    this.shown = new Map(); // conversation id → the Notification on screen
  }

  get permission() {
    return 'Notification' in window ? Notification.permission : 'unsupported';
  }

  /** Called from a click: browsers only ask for permission on a user gesture. */
  async enable() {
    if (!('Notification' in window) || Notification.permission !== 'default') return this.permission;
    try {
      return await Notification.requestPermission();
    } catch {
      return this.permission;
    }
  }

  title(unread) {
    const base = t('pageTitle');
    const title = unread > 0 ? t('titleBadge', { count: unread, title: base }) : base;
    if (document.title !== title) document.title = title;
  }

  /** A new chat or message (desk `incoming` event); `visibleChat` is the chat on screen. */
  incoming({ kind, chat, message, resolved, to, state }, visibleChat) {
    const name = chat.name || t('visitor');
    const hidden = document.visibilityState === 'hidden';
    if (kind === 'transferred') {
      this.say(to ? t('transferredAway', { name, to }) : t('transferredSomewhere', { name }));
      this.shown.get(chat.id)?.close();
      return;
    }
    if (kind === 'sla') {
      // Warnings are said for every chat, the one on screen included: the clock is easy to miss.
      this.say(t('announceSla', { name, what: t(`slaSay.${state}`) }));
      return;
    }
    if (kind === 'closed') {
      this.say(t(resolved === false ? 'closedUnresolved' : 'closedResolved', { name }));
      this.shown.get(chat.id)?.close();
      return;
    }
    if (kind === 'chat') {
      // The first message follows; it carries the notification (`chat-message`).
      if (!hidden && chat !== visibleChat) this.say(t('announceNewChat', { name, category: categoryLabel(chat.category) }));
      return;
    }
    if (!hidden && chat !== visibleChat && kind === 'message') this.say(t('announceMessage', { name }));
    if (hidden) {
      const title = kind === 'chat-message' ? t('notifyNewChat', { name }) : t('notifyMessage', { name });
      this.desktop(chat, title, message?.text || categoryLabel(chat.category));
    }
  }

  desktop(chat, title, body) {
    if (this.permission !== 'granted') return;
    try {
      const n = new Notification(title, { body, tag: chat.id, renotify: true });
      n.onclick = () => {
        window.focus();
        this.onOpenChat(chat.id);
        n.close();
      };
      this.shown.set(chat.id, n);
    } catch {
      // Some browsers only allow notifications from a service worker: the title badge remains.
    }
  }

  /** Back on the tab: notifications of what is now on screen are stale. */
  visible() {
    for (const n of this.shown.values()) n.close();
    this.shown.clear();
  }

  say(text) {
    // Cleared first so that the same sentence twice is announced twice.
    setText(this.live, '');
    setTimeout(() => setText(this.live, text), 50);
  }
}
