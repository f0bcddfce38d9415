// What every page says: string tables per language with `{name}` placeholders and English as
// fallback, and the categories' names, which come from the server (`GET /v1/info`,
// docs/operations.md) so that no page keeps a table of them.

/** `s` with each `{name}` replaced by `vars.name`; unknown placeholders stay as they are. */
export function interpolate(s, vars) {
  return vars ? String(s).replace(/\{(\w+)\}/g, (m, k) => (k in vars ? String(vars[k]) : m)) : s;
}

/** The tag of the table closest to `wanted` (a BCP 47 tag): itself, its language, else `fallback`. */
export function closestLanguage(tables, wanted, fallback = 'en') {
  const tag = String(wanted || '');
  const primary = tag.split('-')[0];
  return tables[tag] ? tag : tables[primary] ? primary : fallback;
}

/** The string `key` in `lang` (English, then the key itself, when missing), filled from `vars`. */
export function translate(tables, lang, key, vars) {
  return interpolate(tables[lang]?.[key] ?? tables.en?.[key] ?? key, vars);
}

/** From `{tag: text}`: `lang`'s, else one of the same language ("zh" for "zh-CN"). */
export function pickByLanguage(texts, lang) {
  if (!texts || typeof texts !== 'object') return undefined;
  const tag = String(lang || '');
  if (typeof texts[tag] === 'string') return texts[tag];
  const primary = tag.split('-')[0].toLowerCase();
  const near = Object.keys(texts).find((k) => k.split('-')[0].toLowerCase() === primary && typeof texts[k] === 'string');
  return near === undefined ? undefined : texts[near];
}

/** The info, or null if unreadable in `timeout` ms. */
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

const readable = (name) => String(name).replace(/_/g, ' ');

/** Names it does not know (yet) read as themselves. */
export class CategoryLabels {
  constructor() {
    this.known = new Map();
  }

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
