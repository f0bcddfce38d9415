// Every string the ops dashboard shows, in a table per language (as in web-widget/strings.js
// and web/console/strings.js). `{name}`-style placeholders are filled by `t()`
// (web/common/i18n.js). Category names are not here: the server says them (`categories` below).

import { closestLanguage, translate, CategoryLabels } from '../common/i18n.js';

const en = {
  pageTitle: 'Parley · Ops',
  brand: 'Parley',
  product: 'Ops dashboard',

  signInTitle: 'Sign in to the ops dashboard',
  signInHint: 'Use an admin token. It is kept in this tab only.',
  tokenLabel: 'Admin token',
  signIn: 'Sign in',
  signingIn: 'Signing in…',
  badToken: 'That token was not accepted. Check it and try again.',
  notAdmin: 'That is not an admin token: the dashboard needs an admin token, not an agent’s.',
  serverDown: 'Parley cannot be reached right now. Check your connection and try again.',
  signedOutRefused: 'Your token is no longer accepted; please sign in again.',
  demoHint: 'Demo mode: the token is “demo”.',
  signOut: 'Sign out',

  live: 'Live',
  updated: 'updated {time}',
  connecting: 'Connecting…',
  disconnected: 'Disconnected from Parley, retrying in {s} s…',
  disconnectedNow: 'Disconnected from Parley, retrying now…',
  staleNote: 'The figures below are from {time} and are not updating.',
  windowLabel: 'Charts: last {span}',
  spanSec: '{n} s',
  spanMin: '{n} min',
  persistFailing: 'Transcripts are not being written: the store is failing. Messages wait in memory ({pending} pending).',

  visitors: 'Visitors connected',
  agents: 'Agents',
  'agents.online': 'online',
  'agents.away': 'away',
  'agents.offline': 'offline',
  agentsSub: '{away} away · {offline} offline',
  utilisation: 'Agent utilisation',
  utilisationSub: '{load} of {capacity} chat slots in use',
  utilisationNone: 'no agent taking chats',
  queue: 'Queue',
  queueSub: '{open} conversations open',
  queueWaiting: 'conversations waiting for an agent',
  queueByCategory: 'Queue by category',
  timeToAgent: 'Time to agent',
  timeToAgentSub: 'median · p95 over {n} assignments (5 min)',
  timeToAgentNone: 'no assignment in the last 5 min',
  pair: '{a} · {b}',
  none: '—',
  p50: 'median',
  p95: 'p95',
  messages: 'Messages per second',
  messagesSub: '{total} in total',
  rateLimited: 'Rate-limit rejections',
  rateLimitedSub: '{total} in total',
  perSecond: '{n}/s',
  persistLag: 'Persistence lag',
  persistSub: 'waiting for the store: {pending} · {store}',
  persistOk: 'store OK',
  persistBad: 'store failing',
  chartLabel: '{title}, last {span}: from {min} to {max}, now {now}',
  noData: 'no data yet',

  // The desk (since this node started)
  desk: 'Service levels since start',
  deskNote: 'First replies within target, surveys and self-service since this node started; reports below cover days.',
  slaAttainment: 'SLA attainment',
  slaAttainmentSub: '{met} of {answered} first replies within target',
  csatAverage: 'Satisfaction',
  csatValue: '{avg} / 5',
  csatSub: '{n} answers',
  csatSubOne: '1 answer',
  deflections: 'Deflections',
  deflectionsSub: 'questions an article answered',
  offlineMessages: 'Offline messages',
  offlineSub: 'left while nobody answered',
  transfers: 'Transfers',
  transfersSub: 'incl. escalations',
  slaTable: 'First replies per category',
  category: 'Category',
  met: 'Met',
  missed: 'Missed',
  breached: 'Breached',
  attainment: 'Attainment',

  // Reports
  reports: 'Reports',
  groupBy: 'Group by',
  'group.agent': 'Agent',
  'group.team': 'Team',
  'group.category': 'Category',
  'group.day': 'Day',
  period: 'Period',
  'period.today': 'Today',
  'period.week': 'Last 7 days',
  refresh: 'Refresh',
  downloadCsv: 'Download CSV',
  downloading: 'Preparing the CSV…',
  downloadFailed: 'The CSV could not be downloaded ({why}).',
  reportLoading: 'Loading…',
  reportFailed: 'The report could not be loaded ({why}).',
  reportEmpty: 'No conversations in this period.',
  reportRange: '{from} to {to} ({zone})',
  reportCaption: 'Conversations by {group}, {period}',
  total: 'Total',
  'col.conversations': 'Conversations',
  'col.closed': 'Closed',
  'col.resolved': 'Resolved',
  'col.first': 'First response',
  'col.response': 'Avg response',
  'col.resolution': 'Resolution',
  'col.fcr': 'First-contact resolution',
  'col.csat': 'CSAT',
  'col.sla': 'SLA',
  'col.transfers': 'Transfers',
  'col.deflections': 'Deflections',
  'col.rateLimited': 'Rate-limited',
  'key.none': '(none)',

  ms: '{n} ms',
  sec: '{n} s',
  min: '{n} min',
};

const tables = { en };
let lang = 'en';

export function setLanguage(wanted) {
  lang = closestLanguage(tables, wanted);
  return lang;
}

export function t(key, vars) {
  return translate(tables, lang, key, vars);
}

/** What the server calls each category (`/v1/info`), filled by app.js when it arrives. */
export const categories = new CategoryLabels();

/** A category's short name, for lists, chips and tables. */
export function categoryLabel(category) {
  return categories.short(category);
}

const number = (n, digits = 0) => Number(n).toLocaleString(lang, { maximumFractionDigits: digits, minimumFractionDigits: digits });

export function formatCount(n) { return number(n ?? 0); }
/** 4.3: an average score. */
export function formatScore(x) { return number(x ?? 0, 1); }
export function formatRate(n) { return number(n ?? 0, n >= 100 ? 0 : 1); }
export function formatPercent(x) { return `${number((x ?? 0) * 100)}%`; }

/** 850 ms, 12.4 s, 3 min. */
export function formatMs(ms) {
  if (ms == null) return '—';
  if (ms < 1000) return t('ms', { n: number(ms) });
  if (ms < 60000) return t('sec', { n: number(ms / 1000, 1) });
  return t('min', { n: number(ms / 60000, 1) });
}

export function formatSpan(ms) {
  return ms < 120000 ? t('spanSec', { n: Math.round(ms / 1000) }) : t('spanMin', { n: Math.round(ms / 60000) });
}

export function formatClock(ts) {
  return new Date(ts).toLocaleTimeString(lang, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}
