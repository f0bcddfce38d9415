// Every string the chat shows, per language, so that translating the widget is editing this file.
// The launcher's three strings live in widget.js: the loader must label its button before any of
// this is fetched.
//
// `{name}`-style placeholders are filled by `t()` (web/common/i18n.js). Chinese (Simplified) is
// the first non-English table because the first users are Chinese-speaking; any `zh` page gets
// it (see widget.js). Topic names are not here: the server says them (`categories` below).

import { translate, CategoryLabels } from './common/i18n.js';

const en = {
  title: 'Support',
  subtitle: 'We usually reply in a few minutes',
  minimize: 'Minimise chat',
  end: 'End chat',
  endConfirm: 'End this conversation?',
  endYes: 'End',
  endNo: 'Cancel',
  prechat: 'What can we help you with?',
  prechatHint: 'Pick a topic so we can route you to the right person.',
  topic: 'Topic: {category}',
  messages: 'Messages',
  placeholderFirst: 'Describe your question…',
  placeholder: 'Write a message…',
  input: 'Message',
  send: 'Send',
  you: 'You',
  agent: 'Support agent',
  said: '{name} said:',
  'state.pending': 'Sending',
  'state.delivered': 'Delivered',
  'state.read': 'Read',
  'state.failed': 'Not sent',
  queue: 'You are number {position} in the queue, {wait}',
  queueBack: 'Your agent was disconnected; you are back at the front of the queue.',
  waitSoon: 'less than a minute',
  waitMin: 'about {n} min',
  joined: '{name} joined the conversation',
  typing: '{name} is typing…',
  closedAgent: '{name} ended the conversation.',
  closedVisitor: 'You ended the conversation.',
  closedSystem: 'The conversation was closed after a period of inactivity.',
  closedUnknown: 'This conversation has ended.',
  again: 'Start a new conversation',
  offline: 'Connection lost. Reconnecting… Messages you write will be sent when we are back.',
  offlineBrowser: 'You are offline. Messages you write will be sent when you reconnect.',
  rateLimited: 'You are sending messages too quickly. Yours will be sent in a moment.',
  tooManyChats: 'You have started too many conversations. Please try again in {wait}.',
  busy: 'Our service is busy. Retrying…',
  tooLong: 'That message is too long ({max} characters at most).',
  unavailable: 'Chat is unavailable right now. Please try again later.',
  loading: 'Loading…',

  // Availability: a category nobody answers now takes an offline message.
  closedHours: 'Closed now · opens {time}',
  closedNow: 'Closed now · leave a message',
  closedNobody: 'Nobody online · leave a message',
  offlineHours: 'We are outside business hours. Leave a message and our team will answer when they are back.',
  offlineNobody: 'Nobody is online right now. Leave a message and we will answer as soon as someone is back.',
  opensAgain: 'We open again {time}.',
  contact: 'Your e-mail, so we can reply (optional)',
  contactInvalid: 'Please check the e-mail address, or leave it empty.',
  contactNote: 'We may also answer by e-mail at {contact}.',
  queueHours: 'We are outside business hours. Your message is saved and our team will answer when they are back. You may leave this page.',
  queueNobody: 'Nobody is online right now. Your message is saved and we will answer as soon as someone is back. You may leave this page.',
  'at.today': 'today at {time}',
  'at.tomorrow': 'tomorrow at {time}',
  'at.day': '{day} at {time}',

  // Transfers and the queue's other reasons.
  transferTeam: 'You are being transferred to {team}.',
  transferAgent: 'You are being transferred to {name}.',
  transferBoth: 'You are being transferred to {name} ({team}).',
  transferAny: 'You are being transferred to another agent.',
  queueTransferred: 'You were transferred and are number {position} in the queue, {wait}',
  queueSla: 'Sorry for the wait: we are finding another agent for you. You are number {position} in the queue, {wait}',

  // Knowledge-base suggestions before a chat starts.
  suggest: 'These articles might answer your question:',
  suggestFound: '{n} suggested articles below.',
  solvedIt: 'This solved it',
  needHelp: 'I still need help',
  newTab: '(opens in a new tab)',
  solved: 'Glad that helped! Nothing was sent to our team.',
  askMore: 'Ask something else',

  // The satisfaction survey.
  survey: 'How would you rate this conversation?',
  'score.1': 'Very unhappy',
  'score.2': 'Unhappy',
  'score.3': 'Neither happy nor unhappy',
  'score.4': 'Happy',
  'score.5': 'Very happy',
  scoreLabel: '{n} of 5: {meaning}',
  surveyComment: 'Anything you would like to add? (optional)',
  surveySend: 'Send rating',
  surveySkip: 'No thanks',
  surveyPick: 'Please choose a rating first.',
  surveyThanks: 'Thank you for your feedback!',
};

const zh = {
  title: '在线客服',
  subtitle: '我们通常会在几分钟内回复',
  minimize: '收起对话',
  end: '结束对话',
  endConfirm: '确定结束本次对话吗？',
  endYes: '结束',
  endNo: '取消',
  prechat: '请问有什么可以帮您？',
  prechatHint: '请选择问题类型，我们会为您安排合适的客服。',
  topic: '问题类型：{category}',
  messages: '消息',
  placeholderFirst: '请描述您的问题…',
  placeholder: '输入消息…',
  input: '消息',
  send: '发送',
  you: '您',
  agent: '客服',
  said: '{name}说：',
  'state.pending': '发送中',
  'state.delivered': '已送达',
  'state.read': '已读',
  'state.failed': '发送失败',
  queue: '您正在排队，当前第 {position} 位，预计等待{wait}',
  queueBack: '客服连接中断，您已回到队列最前面。',
  waitSoon: '不到 1 分钟',
  waitMin: '约 {n} 分钟',
  joined: '{name} 已加入对话',
  typing: '{name} 正在输入…',
  closedAgent: '{name} 已结束对话。',
  closedVisitor: '您已结束对话。',
  closedSystem: '对话因长时间无回应已关闭。',
  closedUnknown: '本次对话已结束。',
  again: '开始新的对话',
  offline: '连接已断开，正在重新连接… 恢复后将自动发送您的消息。',
  offlineBrowser: '您已离线，恢复网络后将自动发送您的消息。',
  rateLimited: '您发送消息太快了，稍后将自动发送。',
  tooManyChats: '您发起的对话过多，请在{wait}后再试。',
  busy: '服务繁忙，正在重试…',
  tooLong: '消息过长（最多 {max} 个字符）。',
  unavailable: '在线客服暂时不可用，请稍后再试。',
  loading: '加载中…',

  closedHours: '休息中 · {time}恢复服务',
  closedNow: '休息中 · 可以留言',
  closedNobody: '客服不在线 · 可以留言',
  offlineHours: '现在是非工作时间。请留言，客服上班后会回复您。',
  offlineNobody: '目前没有客服在线。请留言，客服上线后会尽快回复您。',
  opensAgain: '我们将于{time}恢复服务。',
  contact: '您的邮箱，方便我们回复（选填）',
  contactInvalid: '请检查邮箱地址，或留空。',
  contactNote: '我们也可能通过邮箱 {contact} 回复您。',
  queueHours: '现在是非工作时间。您的留言已保存，客服上班后会回复您，您可以离开此页面。',
  queueNobody: '目前没有客服在线。您的留言已保存，客服上线后会尽快回复您，您可以离开此页面。',
  'at.today': '今天 {time}',
  'at.tomorrow': '明天 {time}',
  'at.day': '{day} {time}',

  transferTeam: '正在为您转接至{team}。',
  transferAgent: '正在为您转接至{name}。',
  transferBoth: '正在为您转接至{name}（{team}）。',
  transferAny: '正在为您转接其他客服。',
  queueTransferred: '您已被转接，当前排队第 {position} 位，预计等待{wait}',
  queueSla: '抱歉让您久等了，正在为您安排其他客服。当前排队第 {position} 位，预计等待{wait}',

  suggest: '以下文章或许能解答您的问题：',
  suggestFound: '为您找到 {n} 篇相关文章。',
  solvedIt: '问题已解决',
  needHelp: '仍需人工帮助',
  newTab: '（在新标签页中打开）',
  solved: '很高兴能帮到您！本次没有向客服发送任何消息。',
  askMore: '咨询其他问题',

  survey: '您对本次服务满意吗？',
  'score.1': '非常不满意',
  'score.2': '不满意',
  'score.3': '一般',
  'score.4': '满意',
  'score.5': '非常满意',
  scoreLabel: '{n} 分（满分 5 分）：{meaning}',
  surveyComment: '还有什么想告诉我们的吗？（选填）',
  surveySend: '提交评价',
  surveySkip: '不用了',
  surveyPick: '请先选择评分。',
  surveyThanks: '感谢您的评价！',
};

const tables = { en, 'zh-CN': zh };

/** The string `key` in `lang` (English when missing), with `{placeholders}` filled from `vars`. */
export function t(lang, key, vars) {
  return translate(tables, lang, key, vars);
}

/** What the server calls each topic (`/v1/info`, filled by chat.js before anything is drawn). */
export const categories = new CategoryLabels();

/** A category's label for visitors, in `lang`. */
export function categoryLabel(lang, category) {
  return categories.label(category, lang);
}

/** When a closed desk opens again, in the visitor's own time zone: "today at 09:00", "Monday at 09:00". */
export function formatOpening(lang, ms) {
  const at = new Date(ms);
  const time = at.toLocaleTimeString(lang, { hour: '2-digit', minute: '2-digit' });
  const days = Math.round((new Date(at).setHours(0, 0, 0, 0) - new Date().setHours(0, 0, 0, 0)) / 86400000);
  if (days === 0) return t(lang, 'at.today', { time });
  if (days === 1) return t(lang, 'at.tomorrow', { time });
  return t(lang, 'at.day', { day: at.toLocaleDateString(lang, { weekday: lang === 'en' ? 'long' : 'short' }), time });
}

/** "about 2 min": the queue estimate in whole minutes. */
export function formatWait(lang, ms) {
  return ms < 60000 ? t(lang, 'waitSoon') : t(lang, 'waitMin', { n: Math.round(ms / 60000) });
}
