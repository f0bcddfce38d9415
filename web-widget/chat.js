// The chat, imported by widget.js when the visitor first opens it: the conversation's state,
// driven by the frames of docs/protocol.md, between the socket (web/common/connection.js), the
// panel (panel.js) and what is remembered across reloads (store.js).
//
// How the list stays exact across reconnects, restarts and reloads:
// - a message from the server is drawn once per seq; the visitor's own unconfirmed messages
//   are keyed by their cid, and an own message is confirmed by its `ack` or by a `message` /
//   `history` entry carrying its cid (a replay), whichever comes first;
// - the outbox (own messages not yet confirmed) is kept in localStorage and resent with the
//   same cid on every new socket; Parley acknowledges a resent cid without storing it again;
// - `hello.last_seq` asks for what was missed; a fresh page also asks `history` for the backlog,
//   and seqs already drawn are skipped.
//
// The desk around the chat: before a conversation exists, the knowledge base is searched as
// the visitor writes (suggest.js, imported on the first key press) and a topic nobody answers
// now (`welcome.availability`) turns the first message into an offline message with an
// optional e-mail; during it, transfers and the queue's reasons are said in words; after it,
// the satisfaction survey (survey.js, imported when one arrives).

import { Connection } from './common/connection.js';
import { loadInfo } from './common/i18n.js';
import { Store } from './store.js';
import { Panel } from './panel.js';
import { t, formatWait, categories, categoryLabel, formatOpening } from './strings.js';

/** Used when /v1/info cannot be read (offline, a proxy in the way). */
const DEFAULT_CATEGORIES = ['security', 'account', 'transaction', 'feature_question', 'other'];
/** `typing: false` this long after the last key press (the protocol leaves expiry to clients). */
const TYPING_IDLE = 4000;
/** The agent's typing line goes away on its own if its `active: false` is lost. */
const TYPING_STALE = 30000;
const HISTORY_PAGE = 100;
/** A reconnect quicker than this does not flash the "connection lost" line. */
const OFFLINE_GRACE = 1000;
/** How long the chat waits for /v1/info (the topics' names) before it goes on without. */
const INFO_TIMEOUT = 3000;

let counter = 0;
const newCid = () => `w-${Date.now().toString(36)}-${(++counter).toString(36)}${Math.random().toString(36).slice(2, 7)}`;

/** Builds the chat inside the launcher's shadow root; resolves once its stylesheet is in. */
export async function mount(ctx) {
  const chat = new Chat(ctx);
  await Promise.all([chat.panel.ready, chat.started]);
  return chat;
}

class Chat {
  constructor(ctx) {
    this.ctx = ctx;
    this.s = (key, vars) => t(ctx.lang, key, vars);
    this.store = new Store(ctx.storeKey);
    const who = ctx.identity();
    if (who && who.id && this.store.visitor && this.store.visitor.id !== who.id) this.store.clear();
    this.resetConversation();
    const saved = this.store.conv;
    if (saved) {
      this.lastSeq = saved.lastSeq || 0;
      this.readSeq = this.readSent = saved.readSeq || 0;
    }
    this.outbox = this.store.outbox.filter((m) => m && typeof m.cid === 'string' && typeof m.text === 'string');
    this.inflight = new Set();
    this.throttle = 0;
    this.careful = false;
    this.typingOn = false;
    this.offlineText = null;
    this.queueText = null;
    /** Per category, from the last `welcome`: `{open, reason, opens_at}`. */
    this.availability = new Map();
    this.suggest = null; // a promise of suggest.js's Suggestions, once the visitor types
    this.survey = null; // {id, view, answer?}: the survey on screen, and an answer to send
    // The conversation the visitor asked to end, until `closed` says it ended. `close` carries
    // no cid, so a refusal without one (Redis away, the server busy) or a reconnect sends it
    // again: the chat must not stay open because one frame was refused.
    this.ending = null;
    this.endSent = false;

    this.panel = new Panel(ctx, {
      send: (text, contact) => this.send(text, contact),
      draft: (text) => this.draft(text),
      pick: (category) => this.pick(category),
      end: () => this.end(),
      again: () => this.again(),
      typing: () => this.typing(),
      seen: () => this.markRead(),
    });
    const ws = new URL('v1/visitor', ctx.base);
    ws.protocol = ws.protocol === 'https:' ? 'wss:' : 'ws:';
    this.conn = new Connection(ws.href, {
      hello: () => this.hello(),
      frame: (f) => this.frame(f),
      state: (state, detail) => this.connection(state, detail),
      unauthorized: () => this.unauthorized(),
    });
    document.addEventListener('visibilitychange', () => this.markRead());

    // Until the server answers: the remembered conversation, and what was waiting to be sent.
    if (saved || this.outbox.length) this.panel.setView('chat');
    for (const m of this.outbox) this.drawPending(m);
    if (this.store.survey) this.surveyRequested(this.store.survey);
    // The topics' names first, so that no line is drawn with a bare category name; the socket
    // waits for them (at most INFO_TIMEOUT), and so does mount().
    this.started = this.loadCategories().then(() => this.wantSocket());
  }

  // ---- called by widget.js -------------------------------------------------------------------

  show() {
    this.panel.show();
    this.wantSocket();
    this.markRead();
    this.updateUnread();
  }

  hide() {
    this.panel.hide();
    this.stopTyping();
    this.wantSocket();
    this.updateUnread();
  }

  /** A new identity from `Parley.identify`: another visitor id starts afresh; reconnect to say it. */
  identify(who) {
    const v = this.store.visitor;
    if (who.id && v && v.id !== who.id) {
      this.store.clear();
      this.outbox = [];
      this.resetConversation();
      this.panel.clear();
      this.panel.setView('prechat');
    }
    if (this.conn.ws) this.conn.reconnect();
  }

  // ---- what the visitor does -----------------------------------------------------------------

  pick(category) {
    this.category = category;
    this.panel.clear();
    this.panel.system(this.s('topic', { category: categoryLabel(this.ctx.lang, category) }));
    this.panel.setPlaceholder(true);
    this.panel.setView('chat');
    this.showOffline();
  }

  send(text, contact) {
    const m = { cid: newCid(), text, ts: Date.now(), kind: this.conv ? 'message' : 'start' };
    if (!this.conv) m.category = this.category;
    if (m.kind === 'start' && contact) m.contact = contact;
    this.outbox.push(m);
    this.saveOutbox();
    this.drawPending(m);
    if (m.contact) this.panel.system(this.s('contactNote', { contact }));
    this.panel.setPlaceholder(false);
    this.panel.setOffline(null);
    this.panel.setNotice(null);
    this.suggest?.then((sg) => sg.clear());
    this.stopTyping();
    this.wantSocket();
    this.flush();
  }

  again() {
    this.resetConversation();
    this.dropSurvey();
    this.panel.clear();
    this.panel.setNotice(null);
    this.panel.setAgent(null);
    this.panel.setView('prechat');
    this.panel.focusFirst();
  }

  /** Whether the first message is still to be written (no conversation, no `start` waiting). */
  get beforeStart() {
    return !this.conv && !this.outbox.some((m) => m.kind === 'start');
  }

  /** The first message's draft changed: look for articles that may answer it. */
  draft(text) {
    if (!this.beforeStart) return;
    if (!this.suggest) {
      this.suggest = import('./suggest.js').then((m) => new m.Suggestions(this.ctx, this.panel, {
        solved: (article) => this.solved(article),
        visitor: () => this.store.visitor?.id || null,
        category: () => this.category,
      }));
      this.suggest.catch(() => { this.suggest = null; });
    }
    this.suggest.then((sg) => { if (this.beforeStart) sg.update(text); }, () => {});
  }

  /** An article answered the question: no conversation; the visitor may ask something else. */
  solved(article) {
    this.panel.input.value = '';
    this.panel.grow();
    this.category = null;
    this.panel.setEnded(this.s('solved'), 'askMore');
    this.panel.focusFirst();
    this.ctx.emit('deflected', { article });
  }

  /** Before the first message of a topic nobody answers now: say why, offer the e-mail field. */
  showOffline() {
    const a = this.beforeStart && this.category ? this.availability.get(this.category) : null;
    if (!a || a.open) {
      this.panel.setOffline(null);
      return;
    }
    const text = a.reason === 'outside_hours'
      ? [this.s('offlineHours'), a.opens_at ? this.s('opensAgain', { time: formatOpening(this.ctx.lang, a.opens_at) }) : ''].join(' ').trim()
      : this.s('offlineNobody');
    this.panel.setOffline(text);
  }

  typing() {
    if (!this.conv || this.conv.state !== 'assigned') return;
    if (!this.typingOn && this.conn.send({ type: 'typing', active: true })) this.typingOn = true;
    clearTimeout(this.typingTimer);
    this.typingTimer = setTimeout(() => this.stopTyping(), TYPING_IDLE);
  }

  stopTyping() {
    clearTimeout(this.typingTimer);
    if (this.typingOn) {
      this.typingOn = false;
      this.conn.send({ type: 'typing', active: false });
    }
  }

  /** The visitor has seen everything drawn (panel open, tab visible, list scrolled down). */
  markRead() {
    if (!this.conv || !this.panel.visible || document.visibilityState !== 'visible' || !this.panel.atBottom) return;
    if (this.lastSeq <= this.readSeq) return;
    const news = this.unread.size > 0;
    this.readSeq = this.lastSeq;
    if (!news) this.readSent = this.readSeq; // nothing of the agent's to acknowledge
    this.unread.clear();
    this.saveConv();
    this.updateUnread();
    this.flush();
  }

  /** The topics to offer: the page's list, else the server's (/v1/info), else the defaults. */
  async loadCategories() {
    let list = this.ctx.settings.categories;
    const info = await loadInfo(new URL('v1/info', this.ctx.base), INFO_TIMEOUT);
    if (info) {
      categories.set(info.category_labels);
      if (!list && Array.isArray(info.categories)) list = info.categories.filter((c) => typeof c === 'string');
    }
    this.panel.setCategories(list && list.length ? list : DEFAULT_CATEGORIES);
  }

  // ---- the socket ----------------------------------------------------------------------------

  wantSocket() {
    this.conn.want(this.panel.visible || !!this.conv || !!this.store.conv || this.outbox.length > 0
      || !!(this.survey && this.survey.answer));
  }

  hello() {
    const f = { type: 'hello' };
    const who = this.ctx.identity() || {};
    const v = this.store.visitor;
    if (who.id && who.signature) {
      f.visitor_id = who.id;
      f.signature = who.signature;
    } else if (v) {
      f.visitor_id = v.id;
      f.token = v.token;
    }
    if (who.name) f.name = who.name;
    if (this.store.conv) f.last_seq = this.lastSeq;
    this.inflight.clear();
    return f;
  }

  /** Bad credentials (4001): forget them and come back as a new visitor, unless the host signed. */
  unauthorized() {
    const who = this.ctx.identity();
    if (who && who.signature) return false;
    this.store.clear();
    if (this.conv) this.again();
    return true;
  }

  connection(state, detail) {
    clearTimeout(this.offlineTimer);
    if (state === 'offline') {
      const text = this.s(detail.browser ? 'offlineBrowser' : 'offline');
      if (detail.browser) this.offlineText = text;
      else this.offlineTimer = setTimeout(() => { this.offlineText = text; this.banner(); }, OFFLINE_GRACE);
    } else if (state === 'failed') {
      this.offlineText = this.s('unavailable');
    } else if (state !== 'connecting') {
      this.offlineText = null;
    }
    this.banner();
    this.ctx.emit('connection', { state });
  }

  banner() {
    this.panel.setBanner(this.offlineText || this.queueText);
  }

  frame(f) {
    switch (f.type) {
      case 'welcome': return this.welcome(f);
      case 'message': return this.message(f, true);
      case 'history': return this.history(f);
      case 'ack': return this.ack(f);
      case 'queued': return this.queued(f);
      case 'assigned': return this.assigned(f.conversation);
      case 'typing': return this.agentTyping(f);
      case 'read':
        if (f.role === 'agent' && f.seq > this.agentRead) {
          this.agentRead = f.seq;
          this.panel.readUpTo(f.seq);
        }
        return;
      case 'closed': return this.ended(f);
      case 'transferred': return this.transferred(f);
      case 'csat_request': return this.surveyRequested(f.conversation_id);
      case 'error': return this.error(f);
      default: // newer frame types are ignored (protocol §10)
    }
  }

  welcome(f) {
    this.endSent = false; // a new socket: an unanswered `close` is sent again by flush()
    if (f.visitor && f.visitor.id && f.visitor.token) this.store.setVisitor({ id: f.visitor.id, token: f.visitor.token });
    if (Array.isArray(f.availability)) {
      this.availability = new Map(f.availability.filter((a) => a && typeof a.category === 'string').map((a) => [a.category, a]));
      this.panel.setAvailability(this.availability);
      if (this.panel.view === 'chat') this.showOffline();
    }
    const c = Array.isArray(f.conversations) ? f.conversations[0] : null;
    if (c) {
      const known = this.conv && this.conv.id === c.id;
      if (!known) {
        // Another conversation than the one drawn (another tab ended ours and started one).
        if (this.conv) { this.resetConversation(); this.panel.clear(); }
        const saved = this.store.conv;
        if (!saved || saved.id !== c.id) this.lastSeq = this.readSeq = this.readSent = 0;
        if (!this.panel.log.children.length) {
          this.panel.system(this.s('topic', { category: categoryLabel(this.ctx.lang, c.category) }));
        }
      }
      this.setConv(c);
      // The replay brings what came after last_seq; history brings the backlog of a fresh
      // page, or a gap older than the replay window (recovered: false).
      if (!this.seen.size || c.recovered === false) {
        this.historyFloor = c.recovered === false ? this.lastSeq : null;
        this.conn.send({ type: 'history', limit: HISTORY_PAGE });
      }
      for (const m of this.outbox) if (m.kind === 'start') m.kind = 'message';
    } else {
      if (this.conv) this.ended({});
      else if (this.store.conv) {
        // Ended while the page was away; nothing of it is drawn yet.
        this.store.setConv(null);
        if (!this.outbox.length) this.panel.setView('prechat');
      }
      // A message for a conversation that is gone cannot be sent; a start still can.
      for (const m of this.outbox.filter((m) => m.kind === 'message')) this.fail(m);
    }
    this.flush();
  }

  setConv(c) {
    const before = this.conv && this.conv.agent;
    this.conv = { id: c.id, category: c.category, state: c.state, agent: c.agent || null };
    this.saveConv();
    this.panel.setView('chat');
    this.panel.setCanEnd(true);
    this.panel.setPlaceholder(false);
    this.panel.setAgent(c.agent ? c.agent.name || c.agent.id : null);
    if (c.state === 'assigned') {
      this.queueText = null;
      this.banner();
    }
    return before;
  }

  assigned(c) {
    if (!c) return;
    const before = this.setConv(c);
    if (c.agent && (!before || before.id !== c.agent.id)) {
      const name = c.agent.name || c.agent.id;
      this.panel.system(this.s('joined', { name }));
      this.ctx.emit('assigned', { agent: { id: c.agent.id, name } });
    }
  }

  queued(f) {
    this.adopt(f.conversation_id);
    if (this.conv) {
      this.conv.state = 'queued';
      this.conv.agent = null;
      this.panel.setAgent(null);
    }
    const vars = { position: f.position, wait: formatWait(this.ctx.lang, f.estimated_wait_ms) };
    const text = this.s('queue', vars);
    const a = this.conv && this.availability.get(this.conv.category);
    switch (f.reason) {
      case 'agent_disconnected': this.queueText = this.s('queueBack') + ' ' + text; break;
      case 'transferred': this.queueText = this.s('queueTransferred', vars); break;
      case 'sla_breached': this.queueText = this.s('queueSla', vars); break;
      case 'outside_hours':
        // An offline message: a position in a queue nobody serves now would mislead.
        this.queueText = [this.s('queueHours'), a && a.opens_at ? this.s('opensAgain', { time: formatOpening(this.ctx.lang, a.opens_at) }) : ''].join(' ').trim();
        break;
      case 'nobody_online': this.queueText = this.s('queueNobody'); break;
      default: this.queueText = text;
    }
    this.banner();
    this.ctx.emit('queued', { position: f.position, estimatedWaitMs: f.estimated_wait_ms, reason: f.reason });
  }

  /** Moved to another team or agent: said in the list; `assigned` or `queued` follows. */
  transferred(f) {
    if (!this.conv || f.conversation_id !== this.conv.id) return;
    const name = f.agent && (f.agent.name || f.agent.id);
    const team = typeof f.team === 'string' ? f.team : null;
    this.panel.system(name && team ? this.s('transferBoth', { name, team })
      : name ? this.s('transferAgent', { name }) : team ? this.s('transferTeam', { team }) : this.s('transferAny'));
    this.conv.agent = null;
    this.panel.setAgent(null);
    this.panel.setTyping(null);
    this.ctx.emit('transferred', { team, agent: f.agent ? { id: f.agent.id, name } : null });
  }

  /** A survey for `id`: shown once (also after a reload, until answered or dismissed). */
  surveyRequested(id) {
    if (typeof id !== 'string' || (this.survey && this.survey.id === id)) return;
    this.dropSurvey();
    const survey = { id };
    this.survey = survey;
    this.store.setSurvey(id);
    import('./survey.js').then((m) => {
      if (this.survey !== survey) return;
      survey.view = new m.Survey(this.ctx.lang, {
        send: (score, comment) => {
          survey.answer = { type: 'csat', conversation_id: id, score };
          if (comment) survey.answer.comment = comment;
          this.forgetSurvey();
          this.wantSocket();
          this.flush();
          this.ctx.emit('rated', { score, comment });
        },
        dismiss: () => this.dropSurvey(),
      });
      this.panel.extra.append(survey.view.el);
      this.panel.scrollDown(true);
    }, () => this.dropSurvey());
  }

  /** The survey stays on screen (its thanks) but is no longer waiting for an answer. */
  forgetSurvey() {
    this.store.setSurvey(null);
  }

  /** Removes the survey: dismissed, refused (`survey_unavailable`), or a new chat started. */
  dropSurvey() {
    const survey = this.survey;
    this.survey = null;
    if (survey && survey.view) survey.view.el.remove();
    if (this.store.survey) this.forgetSurvey();
    this.wantSocket();
  }

  agentTyping(f) {
    if (f.role !== 'agent') return;
    clearTimeout(this.staleTyping);
    const name = (this.conv && this.conv.agent && this.conv.agent.name) || this.s('agent');
    this.panel.setTyping(f.active ? this.s('typing', { name }) : null);
    if (f.active) this.staleTyping = setTimeout(() => this.panel.setTyping(null), TYPING_STALE);
  }

  message(m, live) {
    if (!this.conv || m.conversation_id !== this.conv.id || typeof m.seq !== 'number') return;
    const mine = m.sender && m.sender.role === 'visitor';
    if (mine && m.cid && this.outbox.some((o) => o.cid === m.cid)) {
      this.confirm(m.cid, m.seq, m.ts);
      return;
    }
    if (this.seen.has(m.seq)) return;
    this.seen.add(m.seq);
    this.lastSeq = Math.max(this.lastSeq, m.seq);
    const name = mine ? null : (m.sender && (m.sender.name || m.sender.id)) || this.s('agent');
    this.panel.upsert({
      seq: m.seq, cid: mine ? m.cid : null, mine, name, text: String(m.text), ts: m.ts,
      state: mine ? (m.seq <= this.agentRead ? 'read' : 'delivered') : null,
    });
    if (!mine && m.seq > this.readSeq) this.unread.add(m.seq);
    if (!mine && live) {
      clearTimeout(this.staleTyping);
      this.panel.setTyping(null);
    }
    if (live) this.ctx.emit('message', { seq: m.seq, text: String(m.text), role: mine ? 'visitor' : 'agent', name, ts: m.ts });
    this.saveConv();
    this.markRead();
    this.updateUnread();
  }

  history(f) {
    if (!this.conv || f.conversation_id !== this.conv.id || !Array.isArray(f.messages)) return;
    for (const m of f.messages) this.message(m, false);
    const first = f.messages.length ? f.messages[0].seq : null;
    if (!f.complete && first != null && this.historyFloor != null && first > this.historyFloor + 1) {
      this.conn.send({ type: 'history', before_seq: first, limit: HISTORY_PAGE });
    }
  }

  ack(f) {
    this.adopt(f.conversation_id);
    this.confirm(f.cid, f.seq);
  }

  adopt(id) {
    if (this.conv || !id) return;
    this.conv = { id, category: this.category, state: 'queued', agent: null };
    this.panel.setCanEnd(true);
  }

  /** An own message is stored as `seq`: one tick (two if the agent has read that far). */
  confirm(cid, seq, ts) {
    this.inflight.delete(cid);
    const i = this.outbox.findIndex((m) => m.cid === cid);
    if (i >= 0 && !this.seen.has(seq)) {
      const [m] = this.outbox.splice(i, 1);
      this.saveOutbox();
      this.seen.add(seq);
      this.lastSeq = Math.max(this.lastSeq, seq);
      this.saveConv();
      this.panel.upsert({ cid, seq, mine: true, text: m.text, ts: ts || m.ts, state: seq <= this.agentRead ? 'read' : 'delivered' });
    } else if (i >= 0) {
      this.outbox.splice(i, 1);
      this.saveOutbox();
    }
    if (!this.outbox.length) {
      this.careful = false;
      this.panel.setNotice(null);
    }
    this.wantSocket();
    this.flush();
  }

  /** Sends what is waiting, unless rate-limited; after a refusal, one message at a time. */
  flush() {
    if (!this.conn.welcomed) return;
    clearTimeout(this.flushTimer);
    const wait = this.throttle - Date.now();
    if (wait > 0) {
      this.flushTimer = setTimeout(() => this.flush(), wait);
      return;
    }
    if (this.conv && this.readSeq > this.readSent && this.conn.send({ type: 'read', seq: this.readSeq })) {
      this.readSent = this.readSeq;
    }
    if (this.ending && this.conv && this.conv.id === this.ending && !this.endSent) {
      this.endSent = this.conn.send({ type: 'close' });
    }
    if (this.survey && this.survey.answer && this.conn.send(this.survey.answer)) {
      delete this.survey.answer; // no acknowledgement on success; a refusal comes as an error
      this.wantSocket();
    }
    if (this.careful && this.inflight.size) return;
    for (const m of this.outbox) {
      if (this.inflight.has(m.cid)) continue;
      if (m.kind === 'start' && this.conv) m.kind = 'message';
      let frame;
      if (m.kind === 'start') {
        frame = { type: 'start', text: m.text, cid: m.cid, page: location.origin + location.pathname };
        if (m.category) frame.category = m.category;
        if (this.ctx.settings.metadata) frame.metadata = this.ctx.settings.metadata;
        if (m.contact) frame.contact = m.contact;
      } else if (this.conv) {
        frame = { type: 'message', cid: m.cid, text: m.text };
      } else {
        return; // messages wait for their conversation's ack
      }
      if (!this.conn.send(frame)) return;
      this.inflight.add(m.cid);
      if (m.kind === 'start' || this.careful) return;
    }
  }

  error(f) {
    const m = f.cid ? this.outbox.find((o) => o.cid === f.cid) : null;
    if (f.cid) this.inflight.delete(f.cid);
    const retry = f.retry_after_ms;
    switch (f.code) {
      case 'rate_limited':
      case 'unavailable':
      case 'internal':
        // Nothing was stored: resend after the wait, one at a time. A refusal without a cid
        // may have been any in-flight frame: resend them all (a duplicate cid is only acked).
        if (!f.cid) {
          this.inflight.clear();
          this.endSent = false;
        }
        this.careful = true;
        this.throttle = Date.now() + (retry || 2000);
        if (m || (!f.cid && (this.outbox.length || this.ending))) {
          this.panel.setNotice(f.code !== 'rate_limited' ? this.s('busy')
            : m && m.kind === 'start' && retry > 60000 ? this.s('tooManyChats', { wait: formatWait(this.ctx.lang, retry) })
              : this.s('rateLimited'));
        }
        this.flush();
        return;
      case 'text_too_long':
      case 'invalid_text':
        if (m) {
          this.fail(m);
          if (f.code === 'text_too_long') this.panel.setNotice(this.s('tooLong', { max: 4000 }));
        }
        return;
      case 'invalid_category':
        if (m) {
          delete m.category; // the server's default category
          this.saveOutbox();
          this.flush();
        }
        return;
      case 'no_conversation':
        if (this.conv) this.ended({});
        return;
      case 'conversation_open':
        this.conn.reconnect(); // its welcome names the open conversation
        return;
      case 'survey_unavailable':
      case 'invalid_score':
        // Answered already (another tab), expired, or never sent: nothing for the visitor to do.
        if (this.survey && !this.survey.view?.el.querySelector('.thanks')) this.dropSurvey();
        return;
      default:
        console.warn('[parley]', f.code, f.message);
    }
  }

  /** The visitor ends the chat; sent by flush(), again until `closed` comes. */
  end() {
    if (!this.conv) return;
    this.ending = this.conv.id;
    this.endSent = false;
    this.flush();
  }

  ended(f) {
    if (this.ending) this.panel.setNotice(null); // "busy, retrying" was about this close
    this.ending = null;
    const name = (this.conv && this.conv.agent && this.conv.agent.name) || this.s('agent');
    const text = f.by === 'agent' ? this.s('closedAgent', { name })
      : f.by === 'visitor' ? this.s('closedVisitor')
        : f.by === 'system' ? this.s('closedSystem') : this.s('closedUnknown');
    if (this.conv) this.panel.system(text);
    for (const m of this.outbox.filter((m) => m.kind === 'message')) this.fail(m);
    this.conv = null;
    this.store.setConv(null);
    this.queueText = null;
    this.banner();
    this.unread.clear();
    this.updateUnread();
    this.panel.setCanEnd(false);
    this.panel.setTyping(null);
    this.panel.setEnded(text);
    this.ctx.emit('closed', { by: f.by, reason: f.reason, resolved: f.resolved });
    this.wantSocket();
  }

  fail(m) {
    this.inflight.delete(m.cid);
    this.outbox = this.outbox.filter((o) => o !== m);
    this.saveOutbox();
    this.panel.setState(m.cid, 'failed');
  }

  resetConversation() {
    this.conv = null;
    this.category = null;
    this.seen = new Set();
    this.unread = new Set();
    this.lastSeq = this.readSeq = this.readSent = this.agentRead = 0;
    this.historyFloor = null;
    this.queueText = null;
  }

  drawPending(m) {
    this.panel.upsert({ cid: m.cid, mine: true, text: m.text, ts: m.ts, state: 'pending' });
  }

  updateUnread() {
    this.ctx.setUnread(this.panel.visible ? 0 : this.unread.size);
  }

  saveConv() {
    if (this.conv) this.store.setConv({ id: this.conv.id, lastSeq: this.lastSeq, readSeq: this.readSeq });
  }

  saveOutbox() {
    this.store.setOutbox(this.outbox.map(({ cid, text, ts, kind, category, contact }) => ({ cid, text, ts, kind, category, contact })));
  }
}
