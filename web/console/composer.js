// The reply box of the chat on screen. Each chat keeps its own draft (in the desk and in this
// tab's sessionStorage), so switching chats never loses what was being written. Enter sends,
// Shift+Enter starts a new line; key presses tell the visitor the agent is typing.

import { h, setText } from '../common/dom.js';
import { t } from './strings.js';

/** The protocol's limit on a message (docs/protocol.md §8). */
const MAX_CHARS = 4000;

export class Composer {
  constructor({ desk }) {
    this.desk = desk;
    this.chat = null;
    this.label = h('label', { for: 'reply', class: 'sr-only' });
    this.input = h('textarea', {
      id: 'reply', rows: 3, placeholder: t('composerPlaceholder'), autocomplete: 'off',
      oninput: () => this.changed(), onkeydown: (ev) => this.key(ev),
    });
    this.error = h('p', { class: 'composer-error', role: 'alert' });
    this.button = h('button', { type: 'submit', class: 'primary send' }, t('send'));
    this.el = h('form', { class: 'composer', onsubmit: (ev) => { ev.preventDefault(); this.submit(); } },
      this.label, this.input, h('div', { class: 'composer-side' }, this.button), this.error);
  }

  /** Shows `chat`'s draft when the chat on screen changes. */
  show(chat, switched) {
    if (switched || chat !== this.chat) {
      if (this.chat && this.chat !== chat && this.chat.draft !== this.input.value) this.desk.setDraft(this.chat, this.input.value);
      this.chat = chat;
      this.input.value = chat.draft || '';
      setText(this.error, '');
    }
    setText(this.label, t('composerLabel', { name: chat.name || t('visitor') }));
    const disabled = !!chat.ended;
    this.input.disabled = disabled;
    this.button.disabled = disabled;
    this.el.hidden = disabled;
  }

  changed() {
    if (!this.chat) return;
    this.desk.setDraft(this.chat, this.input.value);
    setText(this.error, this.input.value.length > MAX_CHARS ? t('tooLong', { max: MAX_CHARS }) : '');
    if (this.input.value.trim()) this.desk.typing(this.chat);
    else this.desk.stopTyping();
  }

  key(ev) {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      this.submit();
    }
  }

  submit() {
    const text = this.input.value.trim();
    if (!this.chat || !text || text.length > MAX_CHARS) return;
    this.input.value = '';
    this.desk.say(this.chat, text);
    this.input.focus();
  }

  focus() {
    if (!this.input.disabled) this.input.focus();
  }
}
