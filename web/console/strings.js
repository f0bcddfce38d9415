// Every string the agent console shows, per language, so that translating the console is
// editing this file (the same shape as web-widget/strings.js). English is the only table for
// now; a new language is a new table in `tables` with the same keys, picked from <html lang>
// or the browser's language. `{name}`-style placeholders are filled by `t()`.

const en = {
  pageTitle: 'Parley · Agent console',
  titleBadge: '({count}) {title}',
  brand: 'Parley',
  product: 'Agent console',

  // Sign-in
  signInTitle: 'Sign in to the agent console',
  signInHint: 'Use the agent token your administrator gave you. It is kept in this tab only.',
  tokenLabel: 'Agent token',
  signIn: 'Sign in',
  signingIn: 'Signing in…',
  badToken: 'That token was not accepted. Check it and try again.',
  serverDown: 'Parley cannot be reached right now. Check your connection and try again.',
  signedOutRefused: 'Your token is no longer accepted; please sign in again.',
  demoHint: 'Demo mode: the token is “demo”.',

  // Top bar
  statusLabel: 'Status',
  'status.online': 'Online',
  'status.away': 'Away',
  'status.offline': 'Offline',
  capacity: '{open} of {capacity} chats',
  capacityLabel: 'Chats in use',
  queue: '{n} waiting',
  queueNone: 'Queue empty',
  queueLabel: 'Visitors waiting for an agent',
  'conn.connecting': 'Connecting…',
  'conn.online': 'Connected',
  'conn.offline': 'Reconnecting…',
  notifyEnable: 'Enable notifications',
  notifyOn: 'Notifications on',
  notifyBlocked: 'Notifications blocked',
  signOut: 'Sign out',
  connectionLost: 'Connection lost. Reconnecting… Messages you write will be sent when the console is back.',

  // Chat list
  chats: 'Chats',
  chatsEmpty: 'No open chats. New chats appear here as visitors are assigned to you.',
  chatsEmptyAway: 'No open chats. Set your status to Online to receive chats.',
  unread: '{n} unread',
  waiting: 'Waiting {wait}',
  replied: 'Replied',
  ended: 'Ended',
  waitNow: '<1 min',
  waitMin: '{n} min',
  waitHour: '{h} h {m} min',
  chatItemLabel: '{name}, {category}',
  switchHint: 'Alt+Up and Alt+Down switch chats',

  // Conversation
  noChatSelected: 'Select a chat to see the conversation.',
  messagesLabel: 'Conversation with {name}',
  visitor: 'Visitor',
  you: 'You',
  youSaid: 'You: {text}',
  typing: '{name} is typing…',
  'state.pending': 'Sending',
  'state.sent': 'Delivered',
  'state.read': 'Read',
  'state.failed': 'Not sent',
  retry: 'Retry',
  startedAt: 'Started {time}',
  'ended.visitor_closed': '{name} ended the conversation.',
  'ended.visitor_left': '{name} left; the conversation was closed.',
  'ended.agent_closed': 'You closed this conversation.',
  'ended.gone': 'This chat is no longer assigned to you.',
  dismiss: 'Remove from list',
  closedResolved: 'Chat with {name} closed as resolved.',
  closedUnresolved: 'Chat with {name} closed as not resolved.',

  // Actions
  actionsLabel: 'Chat actions',
  'action.close': 'Close chat',
  closeQuestion: 'Was the visitor’s problem solved?',
  closeResolved: 'Resolved',
  closeUnresolved: 'Not resolved',
  cancel: 'Cancel',

  // Composer
  composerLabel: 'Reply to {name}',
  composerPlaceholder: 'Write a reply… (Enter sends, Shift+Enter for a new line)',
  send: 'Send',
  tooLong: 'Too long: {max} characters at most.',
  'error.rate_limited': 'You are sending too fast; the message will be sent in a moment.',
  'error.unavailable': 'Parley is busy; retrying…',
  'error.forbidden': 'This chat is not assigned to you any more.',
  'error.not_found': 'This chat has ended.',
  'error.other': 'The message was refused ({code}).',

  // Details
  details: 'Details',
  'detail.visitor': 'Visitor',
  'detail.visitorId': 'Visitor id',
  'detail.category': 'Topic',
  'detail.page': 'Page',
  'detail.started': 'Started',
  'detail.conversation': 'Conversation id',
  'detail.metadata': 'From the site',
  'detail.none': '—',

  // Categories (the server may add others: they show their own name)
  'cat.security': 'Security',
  'cat.account': 'Account',
  'cat.transaction': 'Transactions',
  'cat.feature_question': 'How-to',
  'cat.other': 'Other',

  // Notifications and announcements
  notifyNewChat: 'New chat: {name}',
  notifyMessage: '{name}',
  announceNewChat: 'New chat from {name} ({category}).',
  announceMessage: 'New message from {name}.',
};

const tables = { en };

let lang = 'en';

/** Picks the table for `wanted` (a BCP 47 tag) or the closest one; English otherwise. */
export function setLanguage(wanted) {
  const tag = String(wanted || '');
  lang = tables[tag] ? tag : (tables[tag.split('-')[0]] ? tag.split('-')[0] : 'en');
  return lang;
}

export function language() { return lang; }

/** The string `key` (English when missing), with `{placeholders}` filled from `vars`. */
export function t(key, vars) {
  const s = tables[lang]?.[key] ?? en[key] ?? key;
  return vars ? s.replace(/\{(\w+)\}/g, (m, k) => (k in vars ? String(vars[k]) : m)) : s;
}

export function categoryLabel(category) {
  const key = 'cat.' + category;
  return key in en ? t(key) : String(category).replace(/_/g, ' ');
}

/** "3 min", "1 h 5 min": how long a visitor has waited. */
export function formatWait(ms) {
  const min = Math.floor(Math.max(0, ms) / 60000);
  if (min < 1) return t('waitNow');
  if (min < 60) return t('waitMin', { n: min });
  return t('waitHour', { h: Math.floor(min / 60), m: min % 60 });
}

/** A clock time in the page's language ("14:05"). */
export function formatTime(ts) {
  return new Date(ts).toLocaleTimeString(lang, { hour: '2-digit', minute: '2-digit' });
}
