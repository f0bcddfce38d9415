// Every string the agent console shows, per language, so that translating the console is
// editing this file (the same shape as web-widget/strings.js). English is the only table for
// now; a new language is a new table in `tables` with the same keys, picked from <html lang>
// or the browser's language. `{name}`-style placeholders are filled by `t()`
// (web/common/i18n.js). Topic names are not here: the server says them (`categories` below).

import { closestLanguage, translate, CategoryLabels } from '../common/i18n.js';

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
  adminToken: 'That is an admin token: the console needs an agent’s token (the dashboard at /ops takes admin tokens).',
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
  'state.saved': 'Saved',
  retry: 'Retry',
  startedAt: 'Started {time}',
  'ended.visitor_closed': '{name} ended the conversation.',
  'ended.visitor_left': '{name} left; the conversation was closed.',
  'ended.agent_closed': 'You closed this conversation.',
  'ended.state_lost': 'The desk lost this conversation when its shared state restarted; it was closed. Its transcript is kept, and {name} can start again.',
  'ended.gone': 'This chat is no longer assigned to you.',
  dismiss: 'Remove from list',
  closedResolved: 'Chat with {name} closed as resolved.',
  transferredAway: 'Chat with {name} transferred to {to}.',
  transferredSomewhere: 'Chat with {name} was moved to another agent.',
  noteLabel: 'Internal note',
  noteBy: 'Internal note · {name}',
  systemNote: 'Internal note · Parley',

  // First-response service level (SLA)
  'sla.pending': 'Reply within {left}',
  'sla.warning': 'Due soon · {left}',
  'sla.breached': 'Overdue · {over}',
  'sla.met': 'First reply in time',
  'sla.missed': 'First reply late',
  'slaSay.warning': 'first reply due soon',
  'slaSay.breached': 'first reply overdue',
  announceSla: 'Chat with {name}: {what}.',
  waitingHead: 'Waiting in the queue',
  waitingItem: '{name}, {category}',
  waitingHint: 'Not assigned yet: the first free agent who can take them gets them.',
  closedUnresolved: 'Chat with {name} closed as not resolved.',

  // Actions
  actionsLabel: 'Chat actions',
  'action.close': 'Close chat',
  'action.transfer': 'Transfer',
  'action.escalate': 'Escalate',
  'action.survey': 'Send survey',
  transferTitle: 'Transfer the chat with {name}',
  transferTo: 'Transfer to',
  transferTeams: 'Teams',
  transferAgents: 'Agents',
  transferChoose: 'Choose a team or an agent…',
  agentOption: '{name} ({state})',
  'agentState.available': 'online, {open} of {capacity} chats',
  'agentState.full': 'busy, {open} of {capacity} chats',
  'agentState.away': 'away',
  'agentState.offline': 'offline',
  transferNote: 'Note for the receiving side (optional, internal)',
  transferSubmit: 'Transfer',
  escalateTitle: 'Escalate the chat with {name} to {team}?',
  escalateAny: 'a supervisor',
  escalateSubmit: 'Escalate',
  loadingDesk: 'Loading teams and agents…',
  deskUnavailable: 'The list of teams and agents could not be loaded.',
  'notice.target_unavailable': 'That agent is not online with a free slot right now, so the chat stays with you. Choose a team or another agent.',
  'notice.not_found': 'That team or chat does not exist any more; the chat stays with you.',
  'notice.escalate.not_configured': 'Escalation is not set up on this desk: an admin needs to set desk.escalation_team. The chat stays with you.',
  'notice.survey.not_configured': 'Surveys are turned off on this desk (desk.csat is "off").',
  'notice.survey.sent': 'Survey sent: {name} can now rate this conversation.',
  'notice.unavailable': 'Parley is busy; try again in a moment.',
  'notice.forbidden': 'This chat is not assigned to you any more.',
  'notice.other': 'That did not work ({code}).',
  dismissNotice: 'Dismiss',
  closeQuestion: 'Was the visitor’s problem solved?',
  closeResolved: 'Resolved',
  closeUnresolved: 'Not resolved',
  cancel: 'Cancel',

  // Composer
  composerLabel: 'Reply to {name}',
  composerPlaceholder: 'Write a reply… (Enter sends, Shift+Enter for a new line, / for canned replies)',
  send: 'Send',
  noteMode: 'Internal note',
  noteComposerLabel: 'Internal note on the chat with {name}: only agents see it',
  notePlaceholder: 'Write an internal note… only agents see it, never the visitor',
  addNote: 'Add note',
  noteHint: 'Internal note: not sent to the visitor.',
  cannedLabel: 'Canned replies',
  cannedNote: 'Write an internal note instead of a reply',
  cannedCount: '{n} canned replies: Up and Down to choose, Enter to insert, Escape to close.',
  cannedNone: 'No canned reply starts with that.',
  cannedFailed: 'The canned reply could not be loaded.',
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
  'detail.team': 'Team',
  'detail.contact': 'Contact',
  'detail.offline': 'Offline message',
  'detail.transfers': 'Transfers',
  'detail.reopened': 'Reopened',
  'detail.sla': 'First reply',
  'detail.csat': 'Survey',
  offlineYes: 'Yes: left while nobody answered',
  times: '{n}×',
  'slaDetail.pending': 'Due by {time}',
  'slaDetail.warning': 'Due soon: by {time}',
  'slaDetail.breached': 'Overdue since {time}',
  'slaDetail.met': 'Answered in time (target {time})',
  'slaDetail.missed': 'Answered late (target {time})',
  csatScore: '{score} of 5',
  tags: 'Tags',
  tagsLabel: 'Tags of this conversation',
  tagAdd: 'Add a tag',
  tagAddHint: 'Enter adds; letters, digits, - and _',
  tagRemove: 'Remove tag {tag}',
  tagsFailed: 'Tags were not saved: {why}',
  followUp: 'Follow-up',
  followUpWhen: 'Follow up on',
  followUpNote: 'What to check (optional)',
  followUpSave: 'Set follow-up',
  followUpClear: 'Clear',
  followUpSet: 'Follow up {time}',
  followUpNone: 'No follow-up set.',
  followUpFailed: 'The follow-up was not saved: {why}',
  loadingExtras: 'Loading…',

  // Follow-ups due
  followUps: 'Follow-ups due',
  followUpsEmpty: 'Nothing due.',
  followUpsFailed: 'Follow-ups could not be loaded.',
  followUpDue: 'due {time}',
  followUpItem: '{name}, {category}, due {time}',
  followUpDone: 'Done',
  followUpTranscript: 'Transcript',
  transcriptTitle: 'Transcript of the chat with {name}',
  close: 'Close',

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
  lang = closestLanguage(tables, wanted);
  return lang;
}

export function language() { return lang; }

/** The string `key` (English when missing), with `{placeholders}` filled from `vars`. */
export function t(key, vars) {
  return translate(tables, lang, key, vars);
}

/** What the server calls each category (`/v1/info`), filled by app.js when it arrives. */
export const categories = new CategoryLabels();

/** A category's short name, for lists, chips and tables. */
export function categoryLabel(category) {
  return categories.short(category);
}

/** "3 min", "1 h 5 min": how long a visitor has waited. */
export function formatWait(ms) {
  const min = Math.floor(Math.max(0, ms) / 60000);
  if (min < 1) return t('waitNow');
  if (min < 60) return t('waitMin', { n: min });
  return t('waitHour', { h: Math.floor(min / 60), m: min % 60 });
}

/** "2:05", "1 h 3 min": an SLA countdown. */
export function formatCountdown(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s >= 3600) return t('waitHour', { h: Math.floor(s / 3600), m: Math.floor((s % 3600) / 60) });
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

/** A date and time in the page's language ("1 Dec, 14:05"). */
export function formatDateTime(ts) {
  return new Date(ts).toLocaleString(lang, { day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit' });
}

/** A clock time in the page's language ("14:05"). */
export function formatTime(ts) {
  return new Date(ts).toLocaleTimeString(lang, { hour: '2-digit', minute: '2-digit' });
}
