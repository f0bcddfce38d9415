// The side panel: who the visitor is and where they came from (topic, page, the host site's
// metadata), so the agent does not have to ask. Values are shown as text; the page is a link
// only when it is an http(s) URL.

import { h, fill } from '../common/dom.js';
import { t, categoryLabel, formatTime } from './strings.js';

export class Details {
  constructor() {
    this.dl = h('dl', { class: 'facts' });
    this.meta = h('dl', { class: 'facts meta' });
    this.metaHead = h('h3', {}, t('detail.metadata'));
    this.el = h('aside', { class: 'details', 'aria-labelledby': 'details-h' },
      h('div', { class: 'pane-head' }, h('h2', { id: 'details-h' }, t('details'))),
      this.dl, this.metaHead, this.meta);
    this.key = '';
  }

  update(chat) {
    this.el.hidden = !chat;
    if (!chat) return;
    const key = JSON.stringify([chat.id, chat.name, chat.category, chat.page, chat.metadata]);
    if (key === this.key) return;
    this.key = key;
    fill(this.dl,
      row('visitor', chat.name || t('visitor')),
      row('visitorId', chat.visitor.id, 'mono'),
      row('category', categoryLabel(chat.category)),
      row('page', pageLink(chat.page)),
      row('started', chat.createdAt ? `${new Date(chat.createdAt).toLocaleDateString()} ${formatTime(chat.createdAt)}` : null),
      row('conversation', chat.id, 'mono'));
    const entries = Object.entries(chat.metadata || {});
    this.metaHead.hidden = !entries.length;
    this.meta.hidden = !entries.length;
    fill(this.meta, ...entries.map(([k, v]) => [
      h('dt', {}, k),
      h('dd', { dataset: { key: k } }, typeof v === 'string' ? v : JSON.stringify(v)),
    ]));
  }
}

function row(key, value, cls) {
  return [
    h('dt', {}, t(`detail.${key}`)),
    h('dd', { class: cls || null, dataset: { detail: key } }, value ?? t('detail.none')),
  ];
}

function pageLink(page) {
  if (!page) return null;
  try {
    const url = new URL(page);
    if (url.protocol === 'http:' || url.protocol === 'https:') {
      return h('a', { href: url.href, target: '_blank', rel: 'noopener noreferrer' }, page);
    }
  } catch {
    // Not a URL: shown as text.
  }
  return page;
}
