// The transfer and escalation form, shown under the conversation's header in place of the
// close question. Transfer: a team (from `GET /v1/desk`) or an agent who is online with a free
// slot, and an optional note for the receiving side. Escalate: only the optional note; the desk
// knows its escalation team. Either way the chat leaves this console once Parley confirms with
// `transferred`; a refusal (`target_unavailable`, `not_configured`...) is shown with the chat.
//
// The list of agents is fetched each time the form opens, so their status is fresh; Parley is
// still the judge, and refuses an agent who filled up in between.

import { h, fill, setText } from '../common/dom.js';
import { t } from './strings.js';

export class TransferForm {
  constructor({ desk, api }) {
    this.desk = desk;
    this.api = api;
    this.el = h('form', {
      class: 'transfer', hidden: true, 'aria-labelledby': 'transfer-h',
      onsubmit: (ev) => { ev.preventDefault(); this.submit(); },
      onkeydown: (ev) => { if (ev.key === 'Escape') this.cancel(); },
    });
    this.chat = null;
  }

  get open() { return !this.el.hidden; }

  /** Opens the form for `chat`: `mode` is 'transfer' or 'escalate'; focus returns to `from`. */
  async show(chat, mode, from) {
    this.chat = chat;
    this.mode = mode;
    this.from = from;
    const name = chat.name || t('visitor');
    this.heading = h('p', { id: 'transfer-h', class: 'transfer-h' });
    this.status = h('p', { class: 'transfer-status', role: 'status' });
    this.note = h('textarea', { id: 'transfer-note', rows: 2, maxlength: 4000 });
    this.submitBtn = h('button', { type: 'submit', class: 'primary', dataset: { choice: mode } },
      t(mode === 'escalate' ? 'escalateSubmit' : 'transferSubmit'));
    this.select = null;
    const fields = [];
    if (mode === 'transfer') {
      setText(this.heading, t('transferTitle', { name }));
      this.select = h('select', { id: 'transfer-to', required: true }, h('option', { value: '' }, t('loadingDesk')));
      fields.push(h('label', { for: 'transfer-to' }, t('transferTo')), this.select);
    } else {
      setText(this.heading, t('escalateTitle', { name, team: t('escalateAny') }));
    }
    fill(this.el, this.heading, ...fields,
      h('label', { for: 'transfer-note' }, t('transferNote')), this.note, this.status,
      h('div', { class: 'transfer-actions' }, this.submitBtn,
        h('button', { type: 'button', class: 'ghost', onclick: () => this.cancel() }, t('cancel'))));
    this.el.dataset.mode = mode;
    this.el.hidden = false;
    (this.select || this.note).focus();
    let directory = null;
    try {
      directory = await this.api.directory();
    } catch {
      if (this.chat === chat) setText(this.status, t('deskUnavailable'));
    }
    if (this.chat !== chat || !directory) return;
    if (mode === 'escalate') {
      if (directory.escalation_team) setText(this.heading, t('escalateTitle', { name, team: directory.escalation_team.name }));
      return;
    }
    const me = this.desk.me?.id;
    const agents = (directory.agents || []).filter((a) => a.id !== me);
    const state = (a) => (a.available ? 'available' : !a.connected ? 'offline' : a.status === 'online' ? 'full' : a.status);
    fill(this.select,
      h('option', { value: '' }, t('transferChoose')),
      (directory.teams || []).length ? h('optgroup', { label: t('transferTeams') },
        directory.teams.map((team) => h('option', { value: `team:${team.id}` }, team.name))) : null,
      agents.length ? h('optgroup', { label: t('transferAgents') },
        agents.map((a) => h('option', { value: `agent:${a.id}`, disabled: !a.available },
          t('agentOption', { name: a.name, state: t(`agentState.${state(a)}`, a) })))) : null);
  }

  submit() {
    const chat = this.chat;
    if (!chat) return;
    const note = this.note.value.trim() || null;
    if (this.mode === 'escalate') {
      this.desk.escalate(chat, note);
    } else {
      const [kind, id] = (this.select?.value || '').split(/:(.*)/);
      if (!id) {
        this.select.focus();
        return;
      }
      this.desk.transfer(chat, kind === 'team' ? { team: id } : { agent: id }, note);
    }
    this.cancel();
  }

  cancel() {
    const from = this.from;
    this.hide();
    from?.focus();
  }

  hide() {
    this.chat = null;
    this.el.hidden = true;
    this.el.replaceChildren();
  }
}
