// Translation, shared by the widget, the console and the dashboard: each keeps its strings in
// its own tables (one object per language, the same keys), and these functions pick the table
// and fill the `{name}`-style placeholders. English is the fallback for a missing table or key.

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

/**
 * From `{tag: text}`, the text for `lang`: the exact tag, then one of the same language
 * ("zh" for "zh-CN", "zh-CN" for "zh-Hans"), else undefined.
 */
export function pickByLanguage(texts, lang) {
  if (!texts || typeof texts !== 'object') return undefined;
  const tag = String(lang || '');
  if (typeof texts[tag] === 'string') return texts[tag];
  const primary = tag.split('-')[0].toLowerCase();
  const near = Object.keys(texts).find((k) => k.split('-')[0].toLowerCase() === primary && typeof texts[k] === 'string');
  return near === undefined ? undefined : texts[near];
}
