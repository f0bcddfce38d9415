// What the server says before a page connects (`GET /v1/info`, docs/operations.md): the
// categories in priority order, what to call each one, and whether it runs in demo mode. The
// category words come from the server's configuration (`[categories.<name>]`), so a category
// added there reads the same in the widget, the console and the dashboard, with no table here.

import { pickByLanguage } from './i18n.js';

/** Resolves to the info object, or null when it cannot be read in `timeout` ms (pages go on without it). */
export async function loadInfo(url, timeout = 5000) {
  try {
    const res = await fetch(url, { credentials: 'omit', cache: 'no-store', signal: AbortSignal.timeout(timeout) });
    if (!res.ok) return null;
    const info = await res.json();
    return info && typeof info === 'object' ? info : null;
  } catch {
    return null;
  }
}

/** `feature_question` reads "feature question": a category the server did not describe. */
const readable = (name) => String(name).replace(/_/g, ' ');

/** The words for each category; names it does not know (yet) read as themselves. */
export class CategoryLabels {
  constructor() {
    this.known = new Map();
  }

  /** Takes `/v1/info`'s `category_labels`; anything malformed is skipped. */
  set(labels) {
    if (!labels || typeof labels !== 'object') return;
    for (const [name, c] of Object.entries(labels)) {
      if (c && typeof c === 'object') this.known.set(name, c);
    }
  }

  /** For visitors: the label in `lang`, else the default label. */
  label(name, lang) {
    const c = this.known.get(name);
    if (!c) return readable(name);
    const text = pickByLanguage(c.labels, lang) ?? c.label;
    return typeof text === 'string' && text ? text : readable(name);
  }

  /** For agents and ops, where space is short. */
  short(name) {
    const c = this.known.get(name);
    return c && typeof c.short_label === 'string' && c.short_label ? c.short_label : this.label(name, 'en');
  }
}
