// Self-service before a person: while the visitor writes the first message, the knowledge base
// is searched (`GET /v1/kb/search` on the widget's own server, public, in the page's language)
// and up to three articles are offered under the message box. "This solved it" records a
// deflection (`POST /v1/kb/articles/{id}/deflections`) and nothing reaches the queue; "I still
// need help" sends the message as the visitor wrote it. Imported by chat.js the first time the
// visitor types before a conversation exists.
//
// Searches wait for a pause in typing and the newest one wins: an answer to an older query is
// dropped. Failures (offline, rate-limited, another origin without CORS) show nothing: the
// suggestions are a help, never in the way of asking a person. Article text is shown as text.

import { t } from './strings.js';
import { h } from './common/dom.js';

/** Wait for a pause in typing this long before searching. */
const DEBOUNCE = 350;
const HITS = 3;
/** Shorter queries find noise: a Chinese query needs two characters (one bigram), others three. */
const CJK = /[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]/;
const longEnough = (q) => q.length >= (CJK.test(q) ? 2 : 3);

export class Suggestions {
  /**
   * @param ctx  from widget.js: base, lang
   * @param panel  where the list goes (`panel.extra`) and whose draft "I still need help" sends
   * @param on  solved(article), visitor() → the visitor id or null, category() → the topic
   */
  constructor(ctx, panel, on) {
    this.ctx = ctx;
    this.panel = panel;
    this.on = on;
    this.s = (key, vars) => t(ctx.lang, key, vars);
    this.query = '';
    this.seq = 0;
    this.timer = 0;
    this.list = h('ul', { class: 'articles' });
    this.found = h('p', { class: 'sr', role: 'status' });
    this.el = h('section', { class: 'suggest', 'aria-labelledby': 'p-suggest', hidden: true },
      h('h3', { id: 'p-suggest' }, this.s('suggest')), this.list,
      h('button', { type: 'button', class: 'more', onclick: () => this.panel.submit() }, this.s('needHelp')));
    panel.extra.append(this.el, this.found);
  }

  /** The draft changed: search it after a pause (an empty or short draft hides the list). */
  update(text) {
    const q = text.trim().slice(0, 200);
    if (q === this.query) return;
    this.query = q;
    clearTimeout(this.timer);
    this.abort?.abort();
    if (!longEnough(q)) {
      this.show([]);
      return;
    }
    this.timer = setTimeout(() => this.search(q), DEBOUNCE);
  }

  async search(q) {
    const seq = ++this.seq;
    const url = new URL('v1/kb/search', this.ctx.base);
    url.search = new URLSearchParams({ q, lang: this.ctx.lang === 'zh-CN' ? 'zh' : 'en', limit: String(HITS) });
    this.abort = new AbortController();
    try {
      const res = await fetch(url, { credentials: 'omit', signal: this.abort.signal });
      const body = res.ok ? await res.json() : null;
      if (seq !== this.seq) return;
      const hits = Array.isArray(body?.hits) ? body.hits : [];
      this.show(hits.filter((a) => a && typeof a.id === 'string' && typeof a.title === 'string').slice(0, HITS));
    } catch {
      // Aborted by newer typing, offline, or refused: nothing to suggest.
    }
  }

  show(hits) {
    const ids = hits.map((a) => a.id).join();
    if (ids === this.shown) return;
    this.shown = ids;
    this.list.replaceChildren(...hits.map((a, i) => this.item(a, i)));
    this.el.hidden = !hits.length;
    // Announced once per new set, not on every keystroke.
    this.found.textContent = hits.length ? this.s('suggestFound', { n: hits.length }) : '';
    if (hits.length) this.panel.scrollDown();
  }

  item(a, i) {
    const id = `p-art-${i}`;
    let title = h('span', { class: 'title', id }, a.title);
    if (typeof a.url === 'string' && /^https?:\/\//i.test(a.url)) {
      title = h('a', { class: 'title', id, href: a.url, target: '_blank', rel: 'noopener noreferrer' },
        a.title, h('span', { class: 'sr' }, ' ' + this.s('newTab')));
    }
    return h('li', { 'data-article': a.id }, title,
      a.snippet ? h('p', { class: 'snippet' }, String(a.snippet)) : null,
      h('button', { type: 'button', class: 'solved', 'aria-describedby': id, onclick: () => this.solved(a) }, this.s('solvedIt')));
  }

  /** Counted as a deflection (best effort: a statistic is not worth an error), then thanked. */
  solved(article) {
    const body = {};
    const visitor = this.on.visitor();
    const category = this.on.category();
    if (visitor) body.visitor_id = visitor;
    if (category) body.category = category;
    // text/plain (a string body) is a "simple" request: no CORS preflight from a host page.
    fetch(new URL(`v1/kb/articles/${encodeURIComponent(article.id)}/deflections`, this.ctx.base), {
      method: 'POST', body: JSON.stringify(body), credentials: 'omit', keepalive: true,
    }).catch(() => {});
    this.clear();
    this.on.solved({ id: article.id, title: article.title });
  }

  /** Hides the list and forgets the query (a conversation started, or the visitor was helped). */
  clear() {
    clearTimeout(this.timer);
    this.abort?.abort();
    this.seq++;
    this.query = '';
    this.show([]);
  }
}
