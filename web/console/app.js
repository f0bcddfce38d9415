// The agent console at /agent: signs in, then wires the connection, the desk (state) and the
// parts of the page together. Each part lives in its own file:
//
//   connection.js  the WebSocket: hello with resume positions, reconnect with backoff
//   desk.js        chats, messages, drafts, unread counts, the outbox; applies server frames
//   topbar.js      status, capacity in use, queue length, connection, notifications, sign-out
//   chat-list.js   every open chat with unread count, waiting time and first-response clock,
//                  and queued chats near their target
//   conversation.js  the chat on screen; actions.js: what can be done to it;
//                  transfer.js: the transfer and escalation form
//   composer.js    the reply box, replies or internal notes;  canned.js: `/` canned replies
//   details.js     visitor, topic, page, metadata, desk facts, tags and follow-up
//   followups.js   follow-ups due, with transcripts
//   notify.js      title badge, desktop notifications, screen-reader announcements
//   api.js         the REST calls;  strings.js: every string shown;  session.js: what this tab remembers

import { h } from '../common/dom.js';
import { t, setLanguage, categories } from './strings.js';
import { loadInfo } from '../common/i18n.js';
import { session } from './session.js';
import { agentConnection } from './connection.js';
import { Desk } from './desk.js';
import { TopBar } from './topbar.js';
import { ChatList } from './chat-list.js';
import { ConversationView } from './conversation.js';
import { Composer } from './composer.js';
import { Details } from './details.js';
import { Notifier } from './notify.js';
import { SignIn } from './signin.js';
import { Api } from './api.js';
import { FollowUps } from './followups.js';

/** Waiting times and first-response countdowns are redrawn this often. */
const CLOCK = 1000;
/** While queued chats near their target are shown, REST is asked this often if they still wait. */
const QUEUE_CHECK = 5000;

setLanguage(document.documentElement.lang || navigator.language);
document.title = t('pageTitle');
const root = document.getElementById('app');

function showSignIn(message) {
  const form = new SignIn({
    onSignedIn: (token) => {
      session.token = token;
      startConsole(token);
    },
  });
  root.replaceChildren(form.el);
  document.title = t('pageTitle');
  form.show(message);
}

function startConsole(token) {
  const desk = new Desk();
  let connState = 'connecting';
  const notifier = new Notifier({ onOpenChat: (id) => select(id, true) });
  const conn = agentConnection(token, {
    hello: () => desk.hello(),
    frame: (f) => desk.apply(f),
    state: (s) => {
      connState = s;
      desk.online = s === 'online';
      if (s !== 'online') desk.disconnected();
      schedule();
    },
    refused: () => signOut(t('signedOutRefused')),
  });
  desk.send = (frame) => conn.send(frame);

  const top = new TopBar({
    onStatus: (s) => desk.setStatus(s),
    onSignOut: () => signOut(),
    onNotify: async () => {
      await notifier.enable();
      schedule();
    },
  });
  const api = new Api(token);
  const list = new ChatList({ onSelect: (id) => select(id) });
  const composer = new Composer({ desk, api });
  const conversation = new ConversationView({ desk, composer, api });
  const followUps = new FollowUps({ api });
  const details = new Details({ api, desk, onFollowUp: () => followUps.refresh() });
  const banner = h('div', { class: 'banner', role: 'status', hidden: true }, t('connectionLost'));
  root.replaceChildren(h('div', { class: 'shell' }, top.el, banner,
    h('div', { class: 'desk' }, h('div', { class: 'left' }, list.el, followUps.el), conversation.el, details.el),
    notifier.live, followUps.dialog));

  function select(id, focusComposer) {
    desk.select(id);
    render();
    if (focusComposer) composer.focus();
  }

  let pending = false;
  function schedule() {
    if (pending) return;
    pending = true;
    queueMicrotask(() => {
      pending = false;
      render();
    });
  }

  function render() {
    const chat = desk.selected;
    if (chat && document.visibilityState === 'visible') desk.markRead(chat);
    top.update(desk.me, connState, notifier.permission);
    banner.hidden = connState !== 'offline';
    list.update(desk);
    conversation.update();
    details.update(chat);
    notifier.title(desk.totalUnread);
  }

  desk.addEventListener('change', (ev) => {
    if (ev.detail.what === 'waiting') checkQueue();
    schedule();
  });
  // Queued chats near their target leave the list once REST no longer has them queued.
  let queueTimer = 0;
  let queueAsked = 0;
  async function checkQueue() {
    clearTimeout(queueTimer);
    if (!desk.waiting.size) return;
    const missing = [...desk.waiting.values()].some((w) => !w.category);
    if (missing || Date.now() - queueAsked >= QUEUE_CHECK) {
      queueAsked = Date.now();
      try {
        desk.queueSeen(await api.queued());
      } catch {
        // Try again at the next check.
      }
    }
    queueTimer = setTimeout(checkQueue, QUEUE_CHECK);
  }
  desk.addEventListener('incoming', (ev) => notifier.incoming(ev.detail, desk.selected));
  const onVisibility = () => {
    if (document.visibilityState === 'visible') notifier.visible();
    schedule();
  };
  document.addEventListener('visibilitychange', onVisibility);
  // Alt+Up / Alt+Down switch chats from anywhere.
  const onKey = (ev) => {
    if (!ev.altKey || (ev.key !== 'ArrowUp' && ev.key !== 'ArrowDown')) return;
    const ids = desk.list.map((c) => c.id);
    if (!ids.length) return;
    ev.preventDefault();
    const at = ids.indexOf(desk.selectedId);
    const next = ids[(at + (ev.key === 'ArrowDown' ? 1 : ids.length - 1)) % ids.length];
    const inList = list.el.contains(document.activeElement);
    select(next);
    if (inList) list.focusSelected(desk);
  };
  document.addEventListener('keydown', onKey);
  const clock = setInterval(() => {
    list.update(desk);
    conversation.tick();
    details.update(desk.selected);
  }, CLOCK);
  followUps.start();
  // Team names for the details panel and transfer notices; ids are shown until they arrive.
  api.directory().then((d) => {
    desk.teamNames = new Map((d.teams || []).map((team) => [team.id, team.name]));
    schedule();
  }).catch(() => {});

  function signOut(message) {
    conn.want(false);
    clearInterval(clock);
    clearTimeout(queueTimer);
    followUps.stop();
    document.removeEventListener('visibilitychange', onVisibility);
    document.removeEventListener('keydown', onKey);
    session.clear();
    showSignIn(message);
  }

  render();
  // The categories' names first (at most a few seconds), so that the first chats drawn carry
  // them; a sign-out meanwhile (the token is gone from the session) cancels the connect.
  loadInfo('/v1/info').then((info) => {
    if (info) categories.set(info.category_labels);
    schedule();
    if (session.token === token) conn.want(true);
  });
}

if (session.token) startConsole(session.token);
else showSignIn();
