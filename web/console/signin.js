// The sign-in form: the agent token, checked over HTTP before the socket opens so that a wrong
// token gets a clear answer (a refused WebSocket upgrade is invisible to a page).

import { h, setText } from '../common/dom.js';
import { t } from './strings.js';
import { checkToken } from './connection.js';
import { loadInfo } from '../common/i18n.js';

export class SignIn {
  constructor({ onSignedIn }) {
    this.input = h('input', { id: 'token', type: 'password', autocomplete: 'current-password', required: true, spellcheck: 'false' });
    this.error = h('p', { class: 'form-error', role: 'alert', id: 'token-error' });
    this.hint = h('p', { class: 'demo-hint', hidden: true }, t('demoHint'));
    this.button = h('button', { type: 'submit', class: 'primary' }, t('signIn'));
    this.form = h('form', {
      class: 'signin-card', 'aria-labelledby': 'signin-h',
      onsubmit: async (ev) => {
        ev.preventDefault();
        const token = this.input.value.trim();
        if (!token) return;
        this.busy(true);
        const verdict = await checkToken(token);
        this.busy(false);
        if (verdict === 'ok') onSignedIn(token);
        else this.fail(verdict === 'refused' ? t('badToken') : verdict === 'admin' ? t('adminToken') : t('serverDown'));
      },
    },
    h('div', { class: 'brand' }, h('img', { src: '/static/parley.svg', alt: '', width: 32, height: 32 }), h('span', {}, t('brand'))),
    h('h1', { id: 'signin-h' }, t('signInTitle')),
    h('p', { class: 'muted' }, t('signInHint')),
    h('label', { for: 'token' }, t('tokenLabel')),
    this.input, this.error, this.button, this.hint);
    this.el = h('main', { class: 'signin' }, this.form);
    loadInfo('/v1/info').then((info) => { this.hint.hidden = !info?.demo; });
  }

  busy(on) {
    this.button.disabled = on;
    setText(this.button, on ? t('signingIn') : t('signIn'));
  }

  fail(message) {
    setText(this.error, message);
    this.input.setAttribute('aria-invalid', 'true');
    this.input.setAttribute('aria-describedby', 'token-error');
    this.input.select();
    this.input.focus();
  }

  show(message) {
    if (message) this.fail(message);
    else this.input.focus();
  }
}
