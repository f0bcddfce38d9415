// Every string the chat shows, per language, so that translating the widget is editing this file.
// The launcher's three strings live in widget.js: the loader must label its button before any of
// this is fetched.
//
// `{name}`-style placeholders are filled by `t()`. Chinese (Simplified) is the first non-English
// table because the first users are Chinese-speaking; any `zh` page gets it (see widget.js).

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
  'cat.security': 'Security or lost access',
  'cat.account': 'My account',
  'cat.transaction': 'Transactions and payments',
  'cat.feature_question': 'How do I…?',
  'cat.other': 'Something else',
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
  'cat.security': '安全问题或无法登录',
  'cat.account': '账户问题',
  'cat.transaction': '交易与转账',
  'cat.feature_question': '功能咨询',
  'cat.other': '其他问题',
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
};

const tables = { en, 'zh-CN': zh };

/** The string `key` in `lang` (English when missing), with `{placeholders}` filled from `vars`. */
export function t(lang, key, vars) {
  const s = (tables[lang] || en)[key] ?? en[key] ?? key;
  return vars ? s.replace(/\{(\w+)\}/g, (m, k) => (k in vars ? String(vars[k]) : m)) : s;
}

/** A category's label; categories a server adds beyond the defaults show their own name. */
export function categoryLabel(lang, category) {
  const key = 'cat.' + category;
  return key in en ? t(lang, key) : category.replace(/_/g, ' ');
}

/** "about 2 min": the queue estimate in whole minutes. */
export function formatWait(lang, ms) {
  return ms < 60000 ? t(lang, 'waitSoon') : t(lang, 'waitMin', { n: Math.round(ms / 60000) });
}
