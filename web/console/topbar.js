// The top bar: who is signed in, their status (a select), chats in use against capacity, the
// queue length, the connection state, desktop notifications, and sign-out.

import { h, setText } from '../common/dom.js';
import { t } from './strings.js';

const STATUSES = ['online', 'away', 'offline'];

export class TopBar {
  constructor({ onStatus, onSignOut, onNotify }) {
    this.status = h('select', { id: 'status', class: 'status-select', onchange: () => onStatus(this.status.value) },
      STATUSES.map((s) => h('option', { value: s }, t(`status.${s}`))));
    this.meter = h('meter', { class: 'cap-meter', min: 0, max: 1, value: 0, 'aria-hidden': 'true' });
    this.capText = h('span', { class: 'cap-text' });
    this.queue = h('span', { class: 'queue', title: t('queueLabel') });
    this.conn = h('span', { class: 'conn', role: 'status' });
    this.notify = h('button', { type: 'button', class: 'ghost notify', onclick: onNotify, hidden: !('Notification' in window) });
    this.who = h('span', { class: 'agent-name' });
    this.avatar = h('span', { class: 'avatar me', 'aria-hidden': 'true' });
    this.el = h('header', { class: 'topbar' },
      h('div', { class: 'brand' }, h('img', { src: '/static/parley.svg', alt: '', width: 26, height: 26 }),
        h('span', {}, t('brand')), h('span', { class: 'product' }, t('product'))),
      h('div', { class: 'load' },
        h('div', { class: 'cap', role: 'group', 'aria-label': t('capacityLabel') }, this.capText, this.meter),
        this.queue),
      h('div', { class: 'me-box' },
        this.conn,
        this.notify,
        h('label', { class: 'status-label', for: 'status' }, h('span', { class: 'dot' }), t('statusLabel')),
        this.status,
        this.avatar, this.who,
        h('button', { type: 'button', class: 'ghost signout', onclick: onSignOut }, t('signOut'))));
  }

  update(me, connState, notifyState) {
    if (me) {
      if (document.activeElement !== this.status) this.status.value = me.status || 'online';
      this.el.dataset.status = me.status || 'online';
      const cap = me.capacity || 0;
      setText(this.capText, t('capacity', { open: me.open ?? 0, capacity: cap }));
      this.meter.max = Math.max(cap, 1);
      this.meter.value = Math.min(me.open ?? 0, this.meter.max);
      this.meter.high = Math.max(cap - 0.5, 0.5);
      this.meter.optimum = 0;
      setText(this.queue, me.queueLength ? t('queue', { n: me.queueLength }) : t('queueNone'));
      this.queue.dataset.count = me.queueLength || 0;
      setText(this.who, me.name || me.id || '');
      setText(this.avatar, initials(me.name || me.id || ''));
    }
    this.conn.dataset.state = connState;
    setText(this.conn, t(`conn.${connState === 'idle' ? 'connecting' : connState}`));
    this.notify.dataset.state = notifyState;
    setText(this.notify, t(notifyState === 'granted' ? 'notifyOn' : notifyState === 'denied' ? 'notifyBlocked' : 'notifyEnable'));
    this.notify.disabled = notifyState !== 'default';
  }
}

export function initials(name) {
  const parts = String(name).trim().split(/\s+/).filter(Boolean);
  return (parts.length > 1 ? parts[0][0] + parts[parts.length - 1][0] : (parts[0] || '?').slice(0, 2)).toUpperCase();
}

/** A stable hue per visitor, so a chat keeps its colour in the list and the header. */
export function hue(id) {
  let n = 0;
  for (const c of String(id)) n = (n * 31 + c.charCodeAt(0)) >>> 0;
  return n % 360;
}
