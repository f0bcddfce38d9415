// "Follow-ups due": conversations whose follow-up date has come (`GET /v1/follow-ups`), read
// again every minute and whenever the agent sets or clears one. They are usually closed chats
// (a complaint to check on a few days later), so each offers the transcript (in a dialog, as
// text) and "Done", which clears the follow-up.

import { h, fill, setText } from '../common/dom.js';
import { t, categoryLabel, formatDateTime } from './strings.js';

/** How often the list is read again. */
const REFRESH = 60000;

export class FollowUps {
  constructor({ api }) {
    this.api = api;
    this.count = h('span', { class: 'count' });
    this.list = h('ul', { class: 'followup-list' });
    this.status = h('p', { class: 'empty' });
    this.el = h('section', { class: 'followups', 'aria-labelledby': 'followups-h' },
      h('div', { class: 'pane-head' }, h('h2', { id: 'followups-h' }, t('followUps')), this.count),
      this.list, this.status);
    this.text = h('pre', { class: 'transcript-text' });
    this.dialogTitle = h('h2', { id: 'transcript-h' });
    this.dialog = h('dialog', { class: 'transcript', 'aria-labelledby': 'transcript-h' },
      h('div', { class: 'dialog-head' }, this.dialogTitle,
        h('button', { type: 'button', class: 'ghost', onclick: () => this.dialog.close() }, t('close'))),
      this.text);
    this.timer = 0;
  }

  start() {
    this.refresh();
    this.timer = setInterval(() => this.refresh(), REFRESH);
  }

  stop() {
    clearInterval(this.timer);
  }

  async refresh() {
    let due;
    try {
      due = await this.api.followUps();
    } catch {
      setText(this.status, t('followUpsFailed'));
      this.status.hidden = false;
      return;
    }
    setText(this.count, due.length ? String(due.length) : '');
    setText(this.status, due.length ? '' : t('followUpsEmpty'));
    this.status.hidden = due.length > 0;
    fill(this.list, due.map(({ conversation: c, follow_up: f }) => {
      const name = c.visitor_name || c.visitor_id;
      return h('li', { dataset: { id: c.id } },
        h('p', { class: 'who' }, h('strong', {}, name), ' ', h('span', { class: 'chip', dataset: { category: c.category } }, categoryLabel(c.category))),
        h('p', { class: 'due' }, t('followUpDue', { time: formatDateTime(f.due_at) })),
        f.note ? h('p', { class: 'note' }, f.note) : null,
        h('div', { class: 'followup-actions' },
          h('button', { type: 'button', class: 'link', 'aria-label': `${t('followUpTranscript')}: ${name}`, onclick: () => this.show(c.id, name) }, t('followUpTranscript')),
          h('button', { type: 'button', class: 'link', 'aria-label': `${t('followUpDone')}: ${name}`, onclick: () => this.done(c.id) }, t('followUpDone'))));
    }));
  }

  async show(id, name) {
    setText(this.dialogTitle, t('transcriptTitle', { name }));
    setText(this.text, t('loadingExtras'));
    this.dialog.showModal();
    try {
      setText(this.text, await this.api.transcript(id));
    } catch (err) {
      setText(this.text, err.message);
    }
  }

  async done(id) {
    try {
      await this.api.clearFollowUp(id);
    } catch {
      // Shown as still due at the refresh below.
    }
    this.refresh();
  }
}
