// The side panel: who the visitor is and where they came from (topic, page, the host site's
// metadata), so the agent does not have to ask; what the desk knows about the conversation
// (team, contact left with an offline message, transfers, reopenings, the first-response clock,
// the survey answer); and what the agent keeps on it over REST: tags, and a follow-up date for
// complaints to come back to (docs/operations.md). Values are shown as text; the page is a link
// only when it is an http(s) URL, the contact only when it is an e-mail address.

import { h, fill, setText } from '../common/dom.js';
import { t, categoryLabel, formatTime, formatDateTime } from './strings.js';

export class Details {
  /** @param {object} o  api (api.js), desk, onFollowUp() after a follow-up changed */
  constructor({ api, desk, onFollowUp }) {
    this.api = api;
    this.desk = desk;
    this.onFollowUp = onFollowUp;
    this.dl = h('dl', { class: 'facts' });
    this.meta = h('dl', { class: 'facts meta' });
    this.metaHead = h('h3', {}, t('detail.metadata'));

    this.tagList = h('ul', { class: 'tags', 'aria-labelledby': 'tags-h' });
    this.tagInput = h('input', {
      id: 'tag-input', type: 'text', maxlength: 32, autocomplete: 'off', placeholder: t('tagAdd'),
      'aria-describedby': 'tag-hint', onkeydown: (ev) => this.tagKey(ev),
    });
    this.tagError = h('p', { class: 'form-error', role: 'alert' });
    this.followText = h('p', { class: 'follow-current' });
    this.followWhen = h('input', { id: 'follow-when', type: 'datetime-local', required: true });
    this.followNote = h('input', { id: 'follow-note', type: 'text', maxlength: 500, autocomplete: 'off' });
    this.followError = h('p', { class: 'form-error', role: 'alert' });
    this.followClear = h('button', { type: 'button', class: 'ghost', onclick: () => this.clearFollowUp() }, t('followUpClear'));
    this.extras = h('div', { class: 'extras' },
      h('h3', { id: 'tags-h' }, t('tags')), this.tagList,
      h('label', { for: 'tag-input', class: 'sr-only' }, t('tagAdd')), this.tagInput,
      h('p', { id: 'tag-hint', class: 'hint-small' }, t('tagAddHint')), this.tagError,
      h('h3', { id: 'follow-h' }, t('followUp')), this.followText,
      h('form', { class: 'follow-form', 'aria-labelledby': 'follow-h', onsubmit: (ev) => { ev.preventDefault(); this.setFollowUp(); } },
        h('label', { for: 'follow-when' }, t('followUpWhen')), this.followWhen,
        h('label', { for: 'follow-note' }, t('followUpNote')), this.followNote,
        h('div', { class: 'follow-actions' }, h('button', { type: 'submit', class: 'secondary' }, t('followUpSave')), this.followClear)),
      this.followError);
    this.el = h('aside', { class: 'details', 'aria-labelledby': 'details-h' },
      h('div', { class: 'pane-head' }, h('h2', { id: 'details-h' }, t('details'))),
      this.dl, this.metaHead, this.meta, this.extras);
    this.key = '';
    this.chatId = null;
  }

  update(chat) {
    this.el.hidden = !chat;
    if (!chat) return;
    if (chat.id !== this.chatId) {
      this.chatId = chat.id;
      this.tagInput.value = '';
      this.followNote.value = '';
      this.followWhen.value = '';
      setText(this.tagError, '');
      setText(this.followError, '');
      if (!chat.extras) this.load(chat);
    }
    const x = chat.extras;
    const now = Date.now();
    const sla = chat.sla ? chat.slaState(now) : null;
    const key = JSON.stringify([chat.id, chat.name, chat.category, chat.page, chat.metadata, this.desk.teamName(chat.team), chat.contact,
      chat.offline, chat.transfers, chat.reopened, sla, chat.sla?.dueAt, x?.csat, x?.tags, x?.follow_up]);
    if (key === this.key) return;
    this.key = key;
    fill(this.dl,
      row('visitor', chat.name || t('visitor')),
      row('visitorId', chat.visitor.id, 'mono'),
      row('category', categoryLabel(chat.category)),
      chat.team ? row('team', this.desk.teamName(chat.team)) : null,
      chat.contact ? row('contact', contactLink(chat.contact)) : null,
      chat.offline ? row('offline', t('offlineYes')) : null,
      chat.transfers ? row('transfers', t('times', { n: chat.transfers })) : null,
      chat.reopened ? row('reopened', t('times', { n: chat.reopened })) : null,
      sla ? row('sla', t(`slaDetail.${sla}`, { time: formatTime(chat.sla.dueAt) })) : null,
      x?.csat ? row('csat', [t('csatScore', { score: x.csat.score }), x.csat.comment ? ` — ${x.csat.comment}` : ''].join('')) : null,
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
    this.drawExtras(chat);
  }

  /**
   * Runs REST calls about the extras one after another, so that two tags added quickly (or a
   * tag added while the extras load) each start from what the previous call left.
   */
  queue(fn) {
    this.pending = (this.pending || Promise.resolve()).then(fn, fn);
    return this.pending;
  }

  /** Tags, follow-up and survey answer from `GET /v1/conversations/{id}`. */
  load(chat) {
    return this.queue(async () => {
      try {
        const c = await this.api.conversation(chat.id);
        chat.extras = { tags: c.tags || [], follow_up: c.follow_up || null, csat: c.csat || null };
      } catch {
        chat.extras = { tags: [], follow_up: null, csat: null };
      }
      this.desk.changed('chat', chat);
    });
  }

  drawExtras(chat) {
    const x = chat.extras;
    fill(this.tagList, (x?.tags || []).map((tag) => h('li', { dataset: { tag } }, h('span', {}, tag),
      h('button', { type: 'button', class: 'tag-remove', 'aria-label': t('tagRemove', { tag }), onclick: () => this.saveTags(chat, (tags) => tags.filter((k) => k !== tag)) }, '×'))));
    const f = x?.follow_up;
    setText(this.followText, f ? [t('followUpSet', { time: formatDateTime(f.due_at) }), f.note ? ` — ${f.note}` : ''].join('') : t('followUpNone'));
    this.followClear.hidden = !f;
  }

  tagKey(ev) {
    if (ev.key !== 'Enter' && ev.key !== ',') return;
    ev.preventDefault();
    const chat = this.desk.selected;
    const added = this.tagInput.value.split(',').map((s) => s.trim().toLowerCase()).filter(Boolean);
    if (!chat || !added.length) return;
    this.tagInput.value = '';
    this.saveTags(chat, (tags) => [...new Set([...tags, ...added])]).then((ok) => {
      if (!ok && !this.tagInput.value) this.tagInput.value = added.join(', ');
    });
  }

  /** Replaces the tags with `change(current tags)`; false when Parley refused them. */
  saveTags(chat, change) {
    return this.queue(async () => {
      setText(this.tagError, '');
      try {
        const x = await this.api.setTags(chat.id, change(chat.extras?.tags || []));
        chat.extras = { ...(chat.extras || {}), tags: x.tags || [] };
        this.desk.changed('chat', chat);
        return true;
      } catch (err) {
        setText(this.tagError, t('tagsFailed', { why: err.message }));
        return false;
      }
    });
  }

  async setFollowUp() {
    const chat = this.desk.selected;
    const due = new Date(this.followWhen.value).getTime();
    if (!chat || !Number.isFinite(due)) {
      this.followWhen.focus();
      return;
    }
    setText(this.followError, '');
    try {
      const x = await this.api.setFollowUp(chat.id, due, this.followNote.value.trim() || null);
      chat.extras = { ...(chat.extras || {}), follow_up: x.follow_up || null };
      this.followNote.value = '';
      this.desk.changed('chat', chat);
      this.onFollowUp();
    } catch (err) {
      setText(this.followError, t('followUpFailed', { why: err.message }));
    }
  }

  async clearFollowUp() {
    const chat = this.desk.selected;
    if (!chat) return;
    try {
      const x = await this.api.clearFollowUp(chat.id);
      chat.extras = { ...(chat.extras || {}), follow_up: x.follow_up || null };
      this.desk.changed('chat', chat);
      this.onFollowUp();
    } catch (err) {
      setText(this.followError, t('followUpFailed', { why: err.message }));
    }
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

/** An e-mail address becomes a mailto: link; anything else a visitor typed stays text. */
function contactLink(contact) {
  return /^[^\s@<>"]+@[^\s@<>"]+\.[^\s@<>"]+$/.test(contact) ? h('a', { href: `mailto:${contact}` }, contact) : contact;
}
