// The console's state: the signed-in agent, the open chats and their messages, and the
// messages not yet acknowledged. Server frames come in through `apply()`; what the agent does
// goes out through the methods below. No DOM here: the parts of the UI listen for `change`
// (something to redraw) and `incoming` (a new chat or message, for notifications).
//
// Delivery follows docs/protocol.md §4: per chat the highest seq seen (`lastSeq`) is sent back
// as `hello.resume` on every reconnect, so missed messages are replayed once; messages are
// keyed by seq, so a replay can never show twice; own messages carry a `cid`, are resent with it
// after a reconnect until acknowledged, and are recognised by it when they come back.
//
// The desk around the chats (docs/protocol.md §3.2): private notes go the same way as messages
// (kind `note`, never shown as a reply); transfers, escalations and surveys are actions whose
// refusal comes back as an error without a `cid`, so the last action is remembered for a few
// seconds to tell the agent which one failed; `sla` frames move each chat's first-response clock,
// and those about conversations still in the queue are kept in `waiting`.

import { session } from './session.js';

/** `typing: false` this long after the last key press (the protocol leaves expiry to clients). */
const TYPING_IDLE = 4000;
/** A visitor's typing line goes away on its own if its `active: false` is lost. */
const TYPING_STALE = 30000;
const HISTORY_PAGE = 100;
/** An error without a `cid` this soon after an action is that action's refusal. */
const ACTION_WINDOW = 10000;
/** First-response states in which the clock still runs. */
const SLA_OPEN = new Set(['pending', 'warning', 'breached']);

let cidCounter = 0;
const cidPrefix = `a-${Math.random().toString(36).slice(2, 10)}-${Date.now().toString(36)}`;
const newCid = () => `${cidPrefix}-${++cidCounter}`;

/** One open (or just ended) conversation as the console shows it. */
export class Chat {
  constructor(view) {
    this.id = view.id;
    this.messages = []; // sorted: by seq, then pending ones (seq null) in the order written
    this.lastSeq = 0; // highest seq seen: the resume position
    this.readSeq = session.readSeq(view.id); // how far the agent has read
    this.sentRead = 0;
    this.visitorRead = 0; // how far the visitor has read (our ticks)
    this.typing = false;
    this.ended = null; // {by, resolved, reason} once closed
    this.quietUntil = 0; // messages up to here are history: counted, not notified one by one
    this.fresh = false; // assigned, first message not yet notified
    this.draft = session.draft(view.id);
    this.update(view);
  }

  update(view) {
    this.category = view.category;
    this.visitor = view.visitor || { id: '?' };
    this.page = view.page || null;
    this.metadata = view.metadata || null;
    this.createdAt = view.created_at;
    this.team = view.team || null;
    this.sla = view.sla ? { state: view.sla.state, dueAt: view.sla.due_at } : null;
    this.contact = view.contact || null;
    this.offline = !!view.offline;
    this.transfers = view.transfers || 0;
    this.reopened = view.reopened || 0;
  }

  /** The first-response state as of `now`: a running clock past its deadline reads breached. */
  slaState(now) {
    if (!this.sla) return null;
    const { state, dueAt } = this.sla;
    return (state === 'pending' || state === 'warning') && now >= dueAt ? 'breached' : state;
  }

  get name() { return this.visitor.name || null; }

  /** Unread visitor messages. */
  get unread() {
    return this.messages.reduce((n, m) => n + (m.kind === 'visitor' && m.seq > this.readSeq ? 1 : 0), 0);
  }

  /** When the visitor's unanswered messages started (null when the agent spoke last). */
  get waitingSince() {
    let since = null;
    for (let i = this.messages.length - 1; i >= 0; i--) {
      const m = this.messages[i];
      if (m.kind === 'agent') break;
      if (m.kind === 'visitor') since = m.ts;
    }
    return since;
  }

  get last() {
    for (let i = this.messages.length - 1; i >= 0; i--) {
      if (this.messages[i].kind === 'visitor' || this.messages[i].kind === 'agent') return this.messages[i];
    }
    return null;
  }
}

export class Desk extends EventTarget {
  constructor() {
    super();
    this.me = null; // {id, name, capacity, status, open, queueLength}
    this.teamNames = new Map(); // team id -> name, from GET /v1/desk
    this.chats = new Map(); // in the order they were assigned
    this.selectedId = null;
    this.wantedStatus = null; // set once the agent picks one; kept across reconnects
    this.outbox = []; // own messages waiting for their ack: {cid, chatId}
    this.welcomed = false;
    this.online = false; // a welcomed socket is open (set by the app from the connection)
    this.send = () => false;
    this.typingIn = null; // the chat the agent is typing in
    this.typingTimer = 0;
    /** Queued conversations near or past their first-response target: id → {id, state, dueAt}. */
    this.waiting = new Map();
    this.action = null; // {kind, chatId, at, target}: the last transfer, escalation or survey
  }

  // ---- what the UI reads ------------------------------------------------------------------

  get selected() { return this.chats.get(this.selectedId) || null; }

  /** Open chats first (in assignment order), ended ones after. */
  get list() {
    const all = [...this.chats.values()];
    return [...all.filter((c) => !c.ended), ...all.filter((c) => c.ended)];
  }

  get totalUnread() {
    let n = 0;
    for (const c of this.chats.values()) if (!c.ended) n += c.unread;
    return n;
  }

  // ---- the socket -------------------------------------------------------------------------

  /** The hello for a new socket: resume positions after the first welcome, and the status. */
  hello() {
    const frame = { type: 'hello' };
    if (this.welcomed) {
      frame.resume = [...this.chats.values()].filter((c) => !c.ended)
        .map((c) => ({ conversation_id: c.id, last_seq: c.lastSeq }));
    }
    if (this.wantedStatus) frame.status = this.wantedStatus;
    return frame;
  }

  apply(f) {
    switch (f.type) {
      case 'welcome': return this.welcome(f);
      case 'assigned': return this.assigned(f.conversation);
      case 'message': return this.message(f, true);
      case 'ack': return this.ack(f);
      case 'typing': return this.visitorTyping(f);
      case 'read': return this.visitorRead(f);
      case 'closed': return this.closed(f);
      case 'history': return this.history(f);
      case 'agent_state': return this.agentState(f);
      case 'transferred': return this.transferred(f);
      case 'sla': return this.slaMoved(f);
      case 'error': return this.error(f);
      default: return undefined; // unknown frame types are ignored (protocol §10)
    }
  }

  welcome(f) {
    const agent = f.agent || {};
    this.me = {
      ...(this.me || {}), id: agent.id, name: agent.name, capacity: agent.capacity,
      status: agent.status, open: (f.conversations || []).length, queueLength: this.me?.queueLength ?? 0,
    };
    const present = new Set();
    for (const view of f.conversations || []) {
      present.add(view.id);
      const chat = this.upsert(view);
      chat.quietUntil = Math.max(chat.quietUntil, view.last_seq || 0);
      if (view.recovered === false) this.fetchHistory(chat, (view.last_seq || 0) + 1);
    }
    // Closed or handed to someone else while this console was away.
    for (const chat of this.chats.values()) {
      if (!present.has(chat.id) && !chat.ended) this.end(chat, { reason: 'gone' });
    }
    this.welcomed = true;
    for (const m of this.outbox) this.transmit(m.cid);
    if (!this.selected) this.selectedId = this.list.find((c) => !c.ended)?.id ?? null;
    this.changed('all');
  }

  assigned(view) {
    if (this.waiting.delete(view.id)) this.changed('waiting');
    const existed = this.chats.get(view.id);
    const chat = this.upsert(view);
    if (!existed || existed.ended) chat.fresh = true;
    chat.ended = null;
    if (view.recovered === false) this.fetchHistory(chat, (view.last_seq || 0) + 1);
    if (!this.selected || this.selected.ended) this.selectedId = chat.id;
    this.emit('incoming', { kind: 'chat', chat });
    this.changed('all');
  }

  upsert(view) {
    let chat = this.chats.get(view.id);
    if (chat) chat.update(view);
    else {
      chat = new Chat(view);
      this.chats.set(view.id, chat);
    }
    return chat;
  }

  message(m, live) {
    const chat = this.chats.get(m.conversation_id);
    if (!chat || typeof m.seq !== 'number') return;
    const role = m.sender?.role;
    if (m.cid && role === 'agent' && m.sender.id === this.me?.id && this.confirm(chat, m.cid, m.seq, m.ts)) return;
    // A private note is never drawn as a reply, whoever wrote it (Parley writes transfer notes).
    const kind = m.kind === 'note' ? 'note' : role === 'visitor' || role === 'agent' ? role : 'system';
    if (!this.insert(chat, {
      seq: m.seq, cid: m.cid || null, kind, byParley: role === 'system',
      name: m.sender?.name || null, own: role === 'agent' && m.sender.id === this.me?.id,
      text: String(m.text ?? ''), ts: m.ts, state: 'sent',
    })) return;
    if (role === 'visitor') {
      chat.typing = false;
      if (live && m.seq > chat.quietUntil && m.seq > chat.readSeq) {
        this.emit('incoming', { kind: chat.fresh ? 'chat-message' : 'message', chat, message: chat.messages.find((x) => x.seq === m.seq) });
        chat.fresh = false;
      }
    }
    this.changed('chat', chat);
  }

  /** Adds a stored message in seq order; false when that seq is already shown. */
  insert(chat, msg) {
    if (chat.messages.some((x) => x.seq === msg.seq)) return false;
    if (msg.own && msg.kind === 'agent' && msg.seq <= chat.visitorRead) msg.state = 'read';
    // The first reply stops the first-response clock (a note does not).
    if (msg.kind === 'agent' && chat.sla && SLA_OPEN.has(chat.sla.state)) {
      chat.sla.state = msg.ts <= chat.sla.dueAt ? 'met' : 'missed';
    }
    let i = chat.messages.length;
    while (i > 0 && (chat.messages[i - 1].seq == null || chat.messages[i - 1].seq > msg.seq)) i--;
    chat.messages.splice(i, 0, msg);
    chat.lastSeq = Math.max(chat.lastSeq, msg.seq);
    return true;
  }

  ack(f) {
    const chat = this.chats.get(f.conversation_id);
    if (chat) this.confirm(chat, f.cid, f.seq);
  }

  /** An own pending message got its seq (from its ack or its replay); false if not ours. */
  confirm(chat, cid, seq, ts) {
    const i = chat.messages.findIndex((x) => x.cid === cid && x.seq == null);
    const o = this.outbox.findIndex((x) => x.cid === cid);
    if (o >= 0) this.outbox.splice(o, 1);
    if (i < 0) return chat.messages.some((x) => x.cid === cid);
    const [msg] = chat.messages.splice(i, 1);
    if (chat.messages.some((x) => x.seq === seq)) return true; // already there by seq
    msg.seq = seq;
    if (ts) msg.ts = ts;
    msg.state = 'sent';
    msg.error = null;
    this.insert(chat, msg);
    this.changed('chat', chat);
    return true;
  }

  visitorTyping(f) {
    const chat = this.chats.get(f.conversation_id);
    if (!chat || f.role !== 'visitor') return;
    chat.typing = !!f.active;
    clearTimeout(chat.typingStale);
    if (chat.typing) chat.typingStale = setTimeout(() => { chat.typing = false; this.changed('chat', chat); }, TYPING_STALE);
    this.changed('chat', chat);
  }

  visitorRead(f) {
    const chat = this.chats.get(f.conversation_id);
    if (!chat || f.role !== 'visitor' || f.seq <= chat.visitorRead) return;
    chat.visitorRead = f.seq;
    for (const m of chat.messages) if (m.own && m.kind === 'agent' && m.seq != null && m.seq <= f.seq) m.state = 'read';
    this.changed('chat', chat);
  }

  closed(f) {
    const chat = this.chats.get(f.conversation_id);
    if (!chat) return;
    if (f.by === 'agent') {
      // This agent closed it (from this tab or another): it leaves the list.
      this.remove(chat);
      this.emit('incoming', { kind: 'closed', chat, resolved: f.resolved });
      return;
    }
    this.end(chat, { by: f.by, reason: f.reason });
  }

  end(chat, how) {
    chat.ended = how;
    chat.typing = false;
    for (const m of chat.messages) {
      if (m.seq == null) { m.state = 'failed'; m.error = 'error.not_found'; }
    }
    this.outbox = this.outbox.filter((m) => m.chatId !== chat.id);
    this.changed('all');
  }

  remove(chat) {
    const list = this.list;
    const at = list.indexOf(chat);
    this.chats.delete(chat.id);
    this.outbox = this.outbox.filter((m) => m.chatId !== chat.id);
    session.forget(chat.id);
    if (this.selectedId === chat.id) {
      const rest = this.list;
      this.selectedId = (rest[Math.min(at, rest.length - 1)] || null)?.id ?? null;
      if (this.selected?.ended) this.selectedId = rest.find((c) => !c.ended)?.id ?? this.selectedId;
    }
    this.changed('all');
  }

  fetchHistory(chat, beforeSeq) {
    chat.historyFloor = chat.lastSeq; // page back until what we had
    this.send({ type: 'history', conversation_id: chat.id, before_seq: beforeSeq, limit: HISTORY_PAGE });
  }

  history(f) {
    const chat = this.chats.get(f.conversation_id);
    if (!chat) return;
    let lowest = Infinity;
    for (const m of f.messages || []) {
      lowest = Math.min(lowest, m.seq);
      this.message({ ...m, conversation_id: chat.id }, false);
    }
    if (!f.complete && lowest !== Infinity && lowest > (chat.historyFloor || 0) + 1) {
      this.send({ type: 'history', conversation_id: chat.id, before_seq: lowest, limit: HISTORY_PAGE });
    }
    this.changed('chat', chat);
  }

  /** A team's name, or its id while the names are not loaded (null for none). */
  teamName(id) {
    return id ? this.teamNames.get(id) || id : null;
  }

  /** A chat of ours went to another team or agent: it leaves the list. */
  transferred(f) {
    const chat = this.chats.get(f.conversation_id);
    if (this.action?.chatId === f.conversation_id) this.action = null;
    if (!chat) return;
    const to = f.agent ? f.agent.name || f.agent.id : this.teamName(f.team);
    this.remove(chat);
    this.emit('incoming', { kind: 'transferred', chat, to });
  }

  /** A first-response clock moved to warning or breached: ours, or one still in the queue. */
  slaMoved(f) {
    const chat = this.chats.get(f.conversation_id);
    if (chat && !chat.ended) {
      if (chat.sla && !SLA_OPEN.has(chat.sla.state)) return; // answered meanwhile
      chat.sla = { state: f.state, dueAt: f.due_at };
      this.emit('incoming', { kind: 'sla', chat, state: f.state });
      this.changed('chat', chat);
      return;
    }
    if (chat) return;
    const known = this.waiting.get(f.conversation_id) || {};
    this.waiting.set(f.conversation_id, { ...known, id: f.conversation_id, state: f.state, dueAt: f.due_at });
    this.changed('waiting');
  }

  /** What REST says is in the queue now: waiting entries that left it go, the rest get names. */
  queueSeen(records) {
    const byId = new Map(records.map((r) => [r.id, r]));
    for (const [id, w] of this.waiting) {
      const r = byId.get(id);
      if (!r || this.chats.has(id)) this.waiting.delete(id);
      else Object.assign(w, { category: r.category, name: r.visitor_name || null });
    }
    this.changed('waiting');
  }

  agentState(f) {
    this.me = { ...(this.me || {}), status: f.status, open: f.open, capacity: f.capacity, queueLength: f.queue_length };
    this.changed('me');
  }

  error(f) {
    const msg = f.cid && this.outbox.find((m) => m.cid === f.cid);
    if (!msg) {
      // Refusals of transfer, escalate and csat_request carry no cid: the recent action's.
      const action = this.action;
      const chat = action && Date.now() - action.at < ACTION_WINDOW ? this.chats.get(action.chatId) : null;
      if (chat) {
        this.action = null;
        chat.notice = { kind: action.kind, code: f.code };
        this.changed('chat', chat);
      } else {
        this.emit('notice', { code: f.code });
      }
      return;
    }
    const chat = this.chats.get(msg.chatId);
    const shown = chat?.messages.find((m) => m.cid === f.cid);
    if (f.retry_after_ms != null) {
      // Rate limited or busy: the same frame succeeds later.
      if (shown) shown.error = f.code === 'rate_limited' ? 'error.rate_limited' : 'error.unavailable';
      setTimeout(() => this.transmit(f.cid), f.retry_after_ms);
    } else {
      this.outbox = this.outbox.filter((m) => m.cid !== f.cid);
      if (shown) {
        shown.state = 'failed';
        shown.error = `error.${f.code}` in ERRORS ? `error.${f.code}` : 'error.other';
        shown.code = f.code;
      }
    }
    if (chat) this.changed('chat', chat);
  }

  // ---- what the agent does ------------------------------------------------------------------

  select(id) {
    if (!this.chats.has(id) || id === this.selectedId) return;
    this.stopTyping();
    this.selectedId = id;
    this.changed('all');
  }

  /** Everything in the chat shown has been seen (the caller knows the page is visible). */
  markRead(chat) {
    if (!chat || chat.ended || chat.lastSeq <= chat.readSeq && chat.sentRead >= chat.lastSeq) return;
    if (chat.lastSeq > chat.readSeq) {
      chat.readSeq = chat.lastSeq;
      session.setReadSeq(chat.id, chat.readSeq);
      this.changed('chat', chat);
    }
    if (chat.sentRead < chat.readSeq && this.send({ type: 'read', conversation_id: chat.id, seq: chat.readSeq })) {
      chat.sentRead = chat.readSeq;
    }
  }

  setDraft(chat, text) {
    chat.draft = text;
    session.setDraft(chat.id, text);
  }

  /** A reply to the visitor, or with `note` a private note only agents see. */
  say(chat, text, note = false) {
    if (!chat || chat.ended) return;
    const cid = newCid();
    chat.messages.push({
      seq: null, cid, kind: note ? 'note' : 'agent', own: true, name: this.me?.name, text, ts: Date.now(), state: 'pending',
    });
    this.outbox.push({ cid, chatId: chat.id });
    this.stopTyping();
    this.setDraft(chat, '');
    this.transmit(cid);
    this.changed('chat', chat);
  }

  /** (Re)sends a pending message; it stays pending while there is no socket. */
  transmit(cid) {
    const entry = this.outbox.find((m) => m.cid === cid);
    const chat = entry && this.chats.get(entry.chatId);
    const msg = chat?.messages.find((m) => m.cid === cid && m.seq == null);
    if (!msg) return;
    this.send({ type: msg.kind === 'note' ? 'note' : 'message', conversation_id: chat.id, cid, text: msg.text });
  }

  /** Resends a message that was refused for good (the agent pressed Retry). */
  retry(chat, cid) {
    const msg = chat.messages.find((m) => m.cid === cid && m.state === 'failed');
    if (!msg || chat.ended) return;
    msg.state = 'pending';
    msg.error = null;
    this.outbox.push({ cid, chatId: chat.id });
    this.transmit(cid);
    this.changed('chat', chat);
  }

  /** The agent pressed a key in the composer. */
  typing(chat) {
    if (!chat || chat.ended) return;
    if (this.typingIn !== chat.id) {
      this.stopTyping();
      if (this.send({ type: 'typing', conversation_id: chat.id, active: true })) this.typingIn = chat.id;
    }
    clearTimeout(this.typingTimer);
    this.typingTimer = setTimeout(() => this.stopTyping(), TYPING_IDLE);
  }

  stopTyping() {
    clearTimeout(this.typingTimer);
    if (this.typingIn) {
      const id = this.typingIn;
      this.typingIn = null;
      if (this.chats.get(id) && !this.chats.get(id).ended) this.send({ type: 'typing', conversation_id: id, active: false });
    }
  }

  setStatus(status) {
    this.wantedStatus = status;
    this.send({ type: 'status', status });
  }

  close(chat, resolved) {
    if (!chat || chat.ended) return false;
    this.stopTyping();
    return this.send({ type: 'close', conversation_id: chat.id, resolved });
  }

  /** Hands the chat to a team (`{team}`) or an agent (`{agent}`), with an optional note. */
  transfer(chat, to, note) {
    if (!chat || chat.ended) return false;
    const frame = { type: 'transfer', conversation_id: chat.id, ...to };
    if (note) frame.note = note;
    return this.act(chat, 'transfer', frame);
  }

  /** To the escalation team (`desk.escalation_team`), with an optional note. */
  escalate(chat, note) {
    if (!chat || chat.ended) return false;
    const frame = { type: 'escalate', conversation_id: chat.id };
    if (note) frame.note = note;
    return this.act(chat, 'escalate', frame);
  }

  /** Sends the visitor the satisfaction survey now. Success is silent on the wire. */
  requestSurvey(chat) {
    if (!chat || chat.ended) return false;
    const sent = this.act(chat, 'survey', { type: 'csat_request', conversation_id: chat.id });
    if (sent) {
      chat.notice = { kind: 'survey', code: 'sent' };
      this.changed('chat', chat);
    }
    return sent;
  }

  act(chat, kind, frame) {
    this.stopTyping();
    chat.notice = null;
    if (!this.send(frame)) {
      chat.notice = { kind, code: 'unavailable' };
      this.changed('chat', chat);
      return false;
    }
    this.action = { kind, chatId: chat.id, at: Date.now() };
    this.changed('chat', chat);
    return true;
  }

  dismissNotice(chat) {
    if (chat?.notice) {
      chat.notice = null;
      this.changed('chat', chat);
    }
  }

  /** Removes an ended chat the agent has seen. */
  dismiss(chat) {
    if (chat?.ended) this.remove(chat);
  }

  /** The socket went away: remote typing state is unknown until the replay. */
  disconnected() {
    this.typingIn = null;
    clearTimeout(this.typingTimer);
    for (const chat of this.chats.values()) chat.typing = false;
    this.changed('all');
  }

  // ---- events -------------------------------------------------------------------------------

  changed(what, chat) {
    this.emit('change', { what, chat });
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

/** Error codes with their own text in the strings table (see strings.js, `error.*`). */
const ERRORS = {
  'error.rate_limited': 1, 'error.unavailable': 1, 'error.forbidden': 1, 'error.not_found': 1,
};
