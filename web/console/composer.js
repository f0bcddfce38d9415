// The reply box of the chat on screen. Each chat keeps its own draft (in the desk and in this
// tab's sessionStorage), so switching chats never loses what was being written. Enter sends,
// Shift+Enter starts a new line; key presses tell the visitor the agent is typing.
//
// Two modes: a reply (to the visitor) or an internal note (agents only). The "Internal note"
// toggle, or `/note` from the canned-reply list (canned.js, opened by typing `/`), switches to
// notes; the box, its label and its button say which mode is on, in words and colour, and a note
// never sends a typing indicator to the visitor.

import { h, setText } from '../common/dom.js';
import { t } from './strings.js';
import { CannedPicker } from './canned.js';

/** The protocol's limit on a message (docs/protocol.md §8). */
const MAX_CHARS = 4000;
/** `/note text` sends "text" as a note, whatever the mode. */
const NOTE_COMMAND = /^\/note(?:\s+|$)/i;

export class Composer {
  constructor({ desk, api }) {
    this.desk = desk;
    this.chat = null;
    this.label = h('label', { for: 'reply', class: 'sr-only' });
    this.input = h('textarea', {
      id: 'reply', rows: 3, placeholder: t('composerPlaceholder'), autocomplete: 'off',
      oninput: () => this.changed(), onkeydown: (ev) => this.key(ev),
    });
    this.canned = new CannedPicker({
      api, input: this.input,
      onNote: () => this.setNote(true),
      vars: () => {
        const chat = this.chat;
        const vars = { agent_name: this.desk.me?.name, visitor_id: chat?.visitor?.id, category: chat?.category };
        if (chat?.name) vars.visitor_name = chat.name;
        return vars;
      },
    });
    this.error = h('p', { class: 'composer-error', role: 'alert' });
    this.hint = h('p', { class: 'note-hint', hidden: true }, t('noteHint'));
    this.noteToggle = h('button', {
      type: 'button', class: 'note-toggle', 'aria-pressed': 'false',
      onclick: () => { this.setNote(!this.note); this.input.focus(); },
    }, t('noteMode'));
    this.button = h('button', { type: 'submit', class: 'primary send' }, t('send'));
    this.el = h('form', { class: 'composer', onsubmit: (ev) => { ev.preventDefault(); this.submit(); } },
      this.canned.el, this.label, this.input, h('div', { class: 'composer-side' }, this.noteToggle, this.button),
      this.hint, this.error);
    this.note = false;
  }

  /** Shows `chat`'s draft when the chat on screen changes. */
  show(chat, switched) {
    if (switched || chat !== this.chat) {
      if (this.chat && this.chat !== chat && this.chat.draft !== this.input.value) this.desk.setDraft(this.chat, this.input.value);
      this.chat = chat;
      this.input.value = chat.draft || '';
      this.canned.close();
      setText(this.error, '');
      this.setNote(!!chat.noteMode);
    }
    this.label.textContent = t(this.note ? 'noteComposerLabel' : 'composerLabel', { name: chat.name || t('visitor') });
    const disabled = !!chat.ended;
    this.input.disabled = disabled;
    this.button.disabled = disabled;
    this.el.hidden = disabled;
  }

  /** Switches between a reply and an internal note. */
  setNote(on) {
    this.note = on;
    if (this.chat) this.chat.noteMode = on;
    this.el.classList.toggle('note-mode', on);
    this.noteToggle.setAttribute('aria-pressed', String(on));
    this.hint.hidden = !on;
    this.input.placeholder = t(on ? 'notePlaceholder' : 'composerPlaceholder');
    setText(this.button, t(on ? 'addNote' : 'send'));
    if (this.chat) this.label.textContent = t(on ? 'noteComposerLabel' : 'composerLabel', { name: this.chat.name || t('visitor') });
    if (on) this.desk.stopTyping();
  }

  changed() {
    if (!this.chat) return;
    const text = this.input.value;
    this.desk.setDraft(this.chat, text);
    setText(this.error, text.length > MAX_CHARS ? t('tooLong', { max: MAX_CHARS }) : '');
    this.canned.changed();
    // Nothing about a note, or a command being typed, reaches the visitor.
    if (text.trim() && !this.note && !text.startsWith('/')) this.desk.typing(this.chat);
    else this.desk.stopTyping();
  }

  key(ev) {
    if (this.canned.key(ev)) return;
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      this.submit();
    }
  }

  submit() {
    let text = this.input.value.trim();
    let note = this.note;
    if (NOTE_COMMAND.test(text)) {
      text = text.replace(NOTE_COMMAND, '').trim();
      note = true;
    }
    if (!this.chat || !text || text.length > MAX_CHARS) return;
    this.input.value = '';
    this.canned.close();
    this.desk.say(this.chat, text, note);
    this.input.focus();
  }

  focus() {
    if (!this.input.disabled) this.input.focus();
  }
}
