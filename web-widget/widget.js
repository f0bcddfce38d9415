/*! Parley chat widget. Embed: <script src="https://chat.example.com/widget.js" async></script> */
// The loader: the only file a host page loads before the visitor opens the chat. It reads the
// settings (the data- attributes of its <script> tag, or Parley.init), draws the launcher and
// exposes the public API. The chat itself (chat.js and the files it imports, from the same
// place as this file) is imported on the first open, or at idle time for a returning visitor
// whose conversation is still open, so that the unread badge and the resume work.
//
// Isolation: everything lives in the shadow root of one <parley-widget> element. Page selectors
// cannot reach inside; inherited properties (font, color…) could, so :host resets them all with
// !important, which beats the page's own !important (shadow styles come later in the cascade).
// Sizes are in px, never rem, which would follow the page's root font size.
(() => {
  'use strict';
  const w = window;
  const doc = document;
  if (w.Parley && w.Parley.version) {
    console.warn('[parley] widget.js is loaded twice; the first copy stays in charge');
    return;
  }
  const VERSION = '1.0.0';
  const script = doc.currentScript;
  const EVENTS = ['ready', 'open', 'close', 'message', 'unread', 'queued', 'assigned', 'closed', 'connection',
    'transferred', 'deflected', 'rated'];
  const ID = /^[A-Za-z0-9_.:@-]{1,64}$/;

  // The launcher's strings; the chat's are in strings.js.
  const STRINGS = {
    en: { open: 'Open support chat', close: 'Close support chat', unread: '{n} unread', down: 'Chat is unavailable right now. Please try again later.' },
    'zh-CN': { open: '打开在线客服', close: '关闭在线客服', unread: '{n} 条未读消息', down: '在线客服暂时不可用，请稍后再试。' },
  };

  const CSS = `
:host{all:initial!important;display:block!important;position:fixed!important;inset:auto 0 0 auto!important;
width:0!important;height:0!important;margin:0!important;z-index:2147483000!important;visibility:visible!important;
opacity:1!important;direction:ltr!important;unicode-bidi:isolate!important}
.root{--accent:#4f46e5;--ink:#111827;position:relative;color:var(--ink);text-align:left;letter-spacing:normal;
font:400 15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"PingFang SC","Hiragino Sans GB","Microsoft YaHei","Noto Sans CJK SC",sans-serif;
-webkit-font-smoothing:antialiased;-webkit-text-size-adjust:100%}
.root *,.root *::before,.root *::after{box-sizing:border-box}
.launcher{position:fixed;right:20px;bottom:20px;width:60px;height:60px;margin:0;padding:0;border:0;border-radius:50%;
background:var(--accent);color:#fff;box-shadow:0 8px 24px rgba(17,24,39,.28);cursor:pointer;display:flex;
align-items:center;justify-content:center;transition:transform .15s ease;font:inherit}
.launcher:hover{transform:scale(1.06)}
.launcher:focus-visible{outline:3px solid var(--accent);outline-offset:3px}
.launcher svg{width:28px;height:28px;fill:none;stroke:currentColor;stroke-width:2;stroke-linecap:round;stroke-linejoin:round}
.launcher .x,.open .launcher .chat{display:none}
.open .launcher .x{display:block}
.left .launcher{left:20px;right:auto}
.down .launcher{background:#6b7280}
.badge{position:absolute;top:-4px;right:-4px;min-width:22px;height:22px;padding:0 6px;border:2px solid #fff;
border-radius:11px;background:#dc2626;color:#fff;font:700 12px/18px system-ui,sans-serif;text-align:center}
.badge[hidden]{display:none}
@media (max-width:480px){.open .launcher{display:none}}
@media (prefers-reduced-motion:reduce){.launcher{transition:none}}`;

  const listeners = new Map(EVENTS.map((e) => [e, new Set()]));
  let app = null; // set by init
  let chat = null; // the chat module's controller, once imported (a promise)
  let isOpen = false;
  let identity = null;
  let ready = false;

  function emit(event, detail) {
    for (const fn of listeners.get(event)) {
      try {
        fn(detail);
      } catch (err) {
        console.error('[parley] an `on` handler threw', err);
      }
    }
  }

  /** "zh", "zh-CN", "zh-Hans-SG", even "zh-TW" read Simplified Chinese; anything else English. */
  const pickLang = (tag) => (/^zh\b/i.test(tag || '') ? 'zh-CN' : 'en');

  function settingsFrom(options) {
    const known = ['server', 'lang', 'position', 'color', 'title', 'categories', 'metadata'];
    for (const k of Object.keys(options)) if (!known.includes(k)) console.warn(`[parley] unknown option "${k}"`);
    const s = {};
    const str = (k) => {
      if (options[k] == null || options[k] === '') return;
      if (typeof options[k] !== 'string') throw new TypeError(`Parley: "${k}" must be a string`);
      s[k] = options[k];
    };
    ['server', 'lang', 'position', 'color', 'title'].forEach(str);
    if (s.server && !/^https?:\/\//i.test(s.server)) throw new TypeError('Parley: "server" must be an http(s) URL');
    if (s.position && s.position !== 'left' && s.position !== 'right') throw new TypeError('Parley: "position" is "left" or "right"');
    if (s.color && !/^#(?:[0-9a-f]{3}){1,2}$/i.test(s.color)) throw new TypeError('Parley: "color" must be a hex colour like #4f46e5');
    if (s.title) s.title = s.title.slice(0, 60);
    let cats = options.categories;
    if (typeof cats === 'string') cats = cats.split(',').map((c) => c.trim()).filter(Boolean);
    if (cats != null) {
      if (!Array.isArray(cats) || !cats.every((c) => typeof c === 'string' && c)) throw new TypeError('Parley: "categories" must be a list of names');
      if (cats.length) s.categories = cats;
    }
    if (options.metadata != null) {
      if (typeof options.metadata !== 'object' || Array.isArray(options.metadata)) throw new TypeError('Parley: "metadata" must be an object');
      s.metadata = options.metadata;
    }
    return s;
  }

  function svg(d, cls) {
    const ns = 'http://www.w3.org/2000/svg';
    const el = doc.createElementNS(ns, 'svg');
    el.setAttribute('viewBox', '0 0 24 24');
    el.setAttribute('aria-hidden', 'true');
    el.setAttribute('class', cls);
    const path = doc.createElementNS(ns, 'path');
    path.setAttribute('d', d);
    el.append(path);
    return el;
  }

  function init(options) {
    if (options == null || typeof options !== 'object') throw new TypeError('Parley.init(options): options must be an object');
    const settings = settingsFrom(options);
    if (app) {
      console.warn('[parley] Parley.init was called twice; the first settings stay');
      return api;
    }
    let base;
    try {
      base = new URL(settings.server ? settings.server.replace(/\/?$/, '/') : './', (script && script.src) || location.href);
    } catch {
      throw new TypeError('Parley: cannot tell where the Parley server is; set "server"');
    }
    const lang = pickLang(settings.lang || doc.documentElement.lang || navigator.language);
    const host = doc.createElement('parley-widget');
    const shadow = host.attachShadow({ mode: 'open' });
    if (shadow.adoptedStyleSheets && w.CSSStyleSheet && 'replaceSync' in CSSStyleSheet.prototype) {
      const sheet = new CSSStyleSheet();
      sheet.replaceSync(CSS);
      shadow.adoptedStyleSheets = [sheet];
    } else {
      const style = doc.createElement('style');
      style.textContent = CSS;
      shadow.append(style);
    }
    const root = doc.createElement('div');
    root.className = 'root' + (settings.position === 'left' ? ' left' : '');
    root.setAttribute('lang', lang);
    if (settings.color) root.style.setProperty('--accent', settings.color);
    const launcher = doc.createElement('button');
    launcher.type = 'button';
    launcher.className = 'launcher';
    launcher.setAttribute('aria-expanded', 'false');
    launcher.setAttribute('aria-controls', 'parley-panel');
    const badge = doc.createElement('span');
    badge.className = 'badge';
    badge.hidden = true;
    badge.setAttribute('aria-hidden', 'true');
    launcher.append(svg('M21 11.5a8.4 8.4 0 0 1-12.2 7.5L3 21l2-5.6A8.5 8.5 0 1 1 21 11.5z', 'chat'), svg('M6 6l12 12M18 6L6 18', 'x'), badge);
    launcher.addEventListener('click', () => (isOpen ? close() : open()));
    root.append(launcher);
    shadow.append(root);
    app = { settings, lang, base, host, shadow, root, launcher, badge, unread: 0 };
    label();
    const attach = () => doc.body.append(host);
    if (doc.body) attach();
    else doc.addEventListener('DOMContentLoaded', attach);

    // A returning visitor with an open conversation: load the chat now (at idle time) so
    // that it resumes, and new answers show on the launcher's badge.
    try {
      const saved = JSON.parse(localStorage.getItem(storeKey()) || 'null');
      if (saved && (saved.conv || (saved.outbox && saved.outbox.length))) {
        (w.requestIdleCallback || setTimeout)(() => loadChat().catch(() => {}), { timeout: 3000 });
      }
    } catch {
      // No storage: nothing to resume.
    }
    ready = true;
    emit('ready', { version: VERSION, lang });
    return api;
  }

  const storeKey = () => 'parley:v1:' + app.base.href;

  function label(down) {
    const s = STRINGS[app.lang];
    const n = app.unread;
    const text = down ? s.down : (isOpen ? s.close : s.open) + (n && !isOpen ? ` (${s.unread.replace('{n}', n)})` : '');
    app.launcher.setAttribute('aria-label', text);
    app.launcher.title = down ? text : '';
    app.root.classList.toggle('down', !!down);
    app.badge.textContent = n > 99 ? '99+' : String(n);
    app.badge.hidden = !n || isOpen;
  }

  function setUnread(n) {
    if (n === app.unread) return;
    app.unread = n;
    label();
    emit('unread', { count: n });
  }

  function loadChat() {
    if (!chat) {
      const ctx = {
        base: app.base, settings: app.settings, lang: app.lang, shadow: app.shadow, root: app.root,
        launcher: app.launcher, storeKey: storeKey(), emit, setUnread,
        identity: () => identity, requestClose: close,
      };
      chat = import(new URL('widget/chat.js', app.base).href).then((m) => m.mount(ctx));
      chat.catch((err) => {
        console.error('[parley] could not load the chat', err);
        chat = null;
      });
    }
    return chat;
  }

  function need() {
    if (!app) throw new Error('Parley: call Parley.init() first (or embed widget.js without data-manual)');
  }

  async function open() {
    need();
    if (isOpen) return;
    isOpen = true;
    app.root.classList.add('open');
    app.launcher.setAttribute('aria-expanded', 'true');
    app.launcher.setAttribute('aria-busy', 'true');
    label();
    try {
      const c = await loadChat();
      if (isOpen) c.show();
      emit('open', {});
    } catch {
      // The server cannot be reached: say so on the launcher; the next click tries again.
      isOpen = false;
      app.root.classList.remove('open');
      app.launcher.setAttribute('aria-expanded', 'false');
      label(true);
    } finally {
      app.launcher.removeAttribute('aria-busy');
    }
  }

  function close() {
    need();
    if (!isOpen) return;
    isOpen = false;
    const focusInside = app.shadow.activeElement != null;
    app.root.classList.remove('open');
    app.launcher.setAttribute('aria-expanded', 'false');
    label();
    if (chat) chat.then((c) => c.hide(), () => {});
    if (focusInside) app.launcher.focus();
    emit('close', {});
  }

  /** Who the visitor is on the host site: {id, signature} (signed on the host's server), {name}. */
  function identify(who) {
    if (who == null || typeof who !== 'object') throw new TypeError('Parley.identify({id, name, signature}): an object');
    const next = {};
    if (who.id != null) {
      if (typeof who.id !== 'string' || !ID.test(who.id)) throw new TypeError('Parley.identify: "id" is 1 to 64 of A-Z a-z 0-9 - _ . : @');
      if (typeof who.signature !== 'string' || !/^[0-9a-f]{16,128}$/i.test(who.signature)) {
        throw new TypeError('Parley.identify: "id" needs its "signature" (hex HMAC-SHA256, computed on your server)');
      }
      next.id = who.id;
      next.signature = who.signature;
    }
    if (who.name != null) {
      if (typeof who.name !== 'string') throw new TypeError('Parley.identify: "name" must be a string');
      next.name = who.name.slice(0, 80);
    }
    if (JSON.stringify(next) === JSON.stringify(identity)) return; // pages often repeat it on every load
    identity = next;
    if (chat) chat.then((c) => c.identify(next), () => {});
  }

  /** Subscribes to an event; returns a function that unsubscribes. */
  function on(event, fn) {
    if (!listeners.has(event)) throw new TypeError(`Parley.on: unknown event "${event}"; one of ${EVENTS.join(', ')}`);
    if (typeof fn !== 'function') throw new TypeError('Parley.on(event, fn): fn must be a function');
    listeners.get(event).add(fn);
    if (event === 'ready' && ready) queueMicrotask(() => fn({ version: VERSION, lang: app.lang }));
    return () => listeners.get(event).delete(fn);
  }

  const api = Object.freeze({ version: VERSION, init, open, close, identify, on });
  w.Parley = api;

  // <script src=".../widget.js" data-lang="zh-CN" data-title="…"> starts at once;
  // with data-manual the page calls Parley.init({...}) itself.
  if (script && !('manual' in script.dataset)) {
    const d = script.dataset;
    init({ server: d.server, lang: d.lang, position: d.position, color: d.color, title: d.title, categories: d.categories });
  }
})();
