// The agent console (/agent) in headless Chromium against a real `parley serve`: the real widget
// on the demo page talks to the real console; other visitors are bare WebSockets (harness.mjs)
// so a test can open several chats at once with names, pages and metadata.
//
// Every wait is on a condition with a deadline (`until` polls what the page shows); a missed
// deadline fails with what the console showed at the time.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  startParley, useBrowser, until, newPage, agentToken, ADMIN_TOKEN, transcript, WAIT,
  demoPage, openWidget, pickTopic, say, shown, waitWidget, messagesShown, part,
  SocketPage, Visitor, consoleSeen, openConsole as openConsoleIn, chatNamed,
} from './harness.mjs';

const b = useBrowser();
const VIEWPORT = { width: 1440, height: 860 };

// ---- the console, seen from the test (consoleState and openConsole are in harness.mjs) -------

const seen = consoleSeen;

async function signIn(page, token) {
  await page.locator('#token').fill(token);
  await page.locator('#token').press('Enter');
}

/** A console page for `agent`, signed in and connected. */
const openConsole = (server, agent = 'alice', options = {}) => openConsoleIn(b.newContext, server, agent, options);

async function reply(page, text) {
  await page.locator('#reply').fill(text);
  await page.locator('#reply').press('Enter');
}

// ---- the tests ---------------------------------------------------------------------------------

test('a visitor on the demo page and an agent in the console chat both ways, with typing and read marks', { timeout: 90000 }, async () => {
  const server = await startParley();
  try {
    const agent = await openConsole(server);
    await seen(agent, 'no chats, capacity 0 of 3, online', (s) => s.capacity === '0 of 3 chats' && s.status === 'online' && s.list.length === 0);

    const visitor = await demoPage(b.newContext, server);
    await visitor.evaluate(() => window.Parley.identify({ name: 'Dana Whitfield' }));
    await openWidget(visitor);
    await pickTopic(visitor, 'transaction');
    const first = 'My BTC withdrawal has been pending for 3 hours.';
    await say(visitor, first);

    // The chat arrives, is shown at once (nothing else was open) and so is read.
    let s = await seen(agent, 'the new chat with its first message', (s) => s.list.length === 1
      && s.chat?.messages.some((m) => m.text === first && m.kind === 'visitor'));
    assert.equal(s.list[0].name, 'Dana Whitfield');
    assert.equal(s.list[0].category, 'Transactions');
    assert.equal(s.chat.details.page, server.url + '/');
    assert.equal(s.chat.details.category, 'Transactions');
    await seen(agent, 'capacity 1 of 3', (s) => s.capacity === '1 of 3 chats' && s.list[0].unread === 0);
    await shown(visitor, first, { state: 'read' });

    // Typing, agent → visitor.
    await agent.locator('#reply').pressSequentially('Hi Dana', { delay: 10 });
    await waitWidget(visitor, 'Alice is typing', (root) => root.querySelector('.typing').textContent === 'Alice Moreau is typing…');
    await agent.locator('#reply').fill('Hi Dana, I can see it: the network is congested, it will confirm within the hour.');
    await agent.locator('#reply').press('Enter');
    await shown(visitor, 'Hi Dana, I can see it: the network is congested, it will confirm within the hour.', { mine: false });
    await waitWidget(visitor, 'the typing line gone', (root) => root.querySelector('.typing').textContent === '');
    // The widget is open, so the visitor reads it: the console shows the read mark.
    await seen(agent, 'the answer delivered, then read', (s) => s.chat.messages.at(-1).kind === 'agent'
      && s.chat.messages.at(-1).state === 'read' && s.list[0].wait === 'Replied');

    // Typing, visitor → agent, in the chat and in the list.
    await part(visitor, 'textarea').pressSequentially('Thanks', { delay: 10 });
    await seen(agent, 'Dana is typing', (s) => s.chat.typing === 'Dana Whitfield is typing…' && s.list[0].typing);
    await part(visitor, 'textarea').fill('Thanks! Transaction id 7f3e…a91c, in case you need it.');
    await part(visitor, 'textarea').press('Enter');
    s = await seen(agent, 'the second message, typing gone, waiting for a reply',
      (s) => s.chat.messages.length === 3 && s.chat.typing === '' && /^Waiting/.test(s.list[0].wait));
    assert.deepEqual(s.chat.messages.map((m) => [m.seq, m.kind, m.text]), [
      [1, 'visitor', first],
      [2, 'agent', 'Hi Dana, I can see it: the network is congested, it will confirm within the hour.'],
      [3, 'visitor', 'Thanks! Transaction id 7f3e…a91c, in case you need it.'],
    ]);
    await shown(visitor, 'Thanks! Transaction id 7f3e…a91c, in case you need it.', { state: 'read' });

    // Text is text: markup a visitor sends is shown as typed, never interpreted.
    const markup = '<img src=x onerror="window.pwned=1"><b>bold?</b>';
    await say(visitor, markup);
    await seen(agent, 'the markup as text', (s) => s.chat.messages.some((m) => m.text === markup));
    assert.equal(await agent.evaluate(() => [window.pwned, document.querySelectorAll('.log img, .log b').length]).then(([p, n]) => `${p}:${n}`), 'undefined:0');

    // Closed as resolved: the visitor is told, the console frees the slot and stores the verdict.
    await agent.getByRole('button', { name: 'Close chat' }).click();
    await agent.getByRole('button', { name: 'Resolved', exact: true }).click();
    await waitWidget(visitor, 'the ended state', (root) => !root.querySelector('.ended').hidden
      && /Alice Moreau ended the conversation/.test(root.querySelector('.ended').textContent));
    await seen(agent, 'the chat gone and capacity back to 0', (s) => s.list.length === 0 && s.capacity === '0 of 3 chats');
    await until('the conversation stored as resolved', async () => {
      const res = await fetch(`${server.url}/v1/conversations?status=closed`, { headers: { authorization: `Bearer ${agentToken('alice')}` } });
      return (await res.json()).conversations;
    }, (list) => list.length === 1 && list[0].resolved === true);
  } finally {
    await server.stop();
  }
});

test('a wrong token is refused with a clear message; the token lives in sessionStorage only', { timeout: 60000 }, async () => {
  const server = await startParley();
  try {
    const page = await newPage(b.newContext, { viewport: VIEWPORT });
    await page.goto(server.url + '/agent');
    assert.equal(await page.locator('label[for="token"]').textContent(), 'Agent token');
    await signIn(page, 'not-a-token');
    await until('the refusal', () => page.locator('#token-error').textContent(), (t) => t === 'That token was not accepted. Check it and try again.');
    assert.equal(await page.locator('#token').getAttribute('aria-invalid'), 'true');
    assert.equal(await page.locator('.shell').count(), 0);
    // An admin token is a real token, but not an agent's: said so (from /v1/me).
    await signIn(page, ADMIN_TOKEN);
    await until('the admin token refused', () => page.locator('#token-error').textContent(),
      (t) => t === 'That is an admin token: the console needs an agent’s token (the dashboard at /ops takes admin tokens).');
    assert.equal(await page.locator('.shell').count(), 0);

    await signIn(page, agentToken('bob'));
    await seen(page, 'connected as Bob', (s) => s.conn === 'online');
    assert.equal(await page.locator('.agent-name').textContent(), 'Bob Chen');
    const storage = await page.evaluate(() => ({ session: JSON.stringify(sessionStorage), local: JSON.stringify(localStorage) }));
    assert.ok(storage.session.includes(agentToken('bob')), storage.session);
    assert.ok(!storage.local.includes(agentToken('bob')), storage.local);
    // A reload stays signed in (same tab); signing out forgets the token.
    await page.reload();
    await seen(page, 'connected again after a reload', (s) => s.conn === 'online');
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.locator('#token').waitFor({ timeout: WAIT });
    assert.ok(!(await page.evaluate(() => JSON.stringify(sessionStorage))).includes(agentToken('bob')));
  } finally {
    await server.stop();
  }
});

test('several chats with unread counts and waiting time; drafts survive switching; closing frees capacity for the queue', { timeout: 120000 }, async () => {
  const server = await startParley();
  try {
    const agent = await openConsole(server);
    const sockets = await SocketPage.open(b.newContext);
    const dana = await Visitor.start(sockets, server, {
      name: 'Dana Whitfield', category: 'transaction', text: 'My BTC withdrawal has been pending for 3 hours.',
      page: 'https://wallet.example.com/activity/tx/7f3e', metadata: { plan: 'pro', app_version: '5.12.0', country: 'DE' },
    });
    await seen(agent, 'Dana’s chat on screen', (s) => s.chat?.name === 'Dana Whitfield');
    const wei = await Visitor.start(sockets, server, {
      name: 'Wei Zhang', category: 'security', text: 'I got an email about a login from a new device.',
      page: 'https://wallet.example.com/settings/security', metadata: { plan: 'free', app_version: '5.11.2' },
    });
    await wei.say('It says Berlin, but I am in Shanghai. Should I worry?');
    const marco = await Visitor.start(sockets, server, {
      name: 'Marco Rossi', category: 'feature_question', text: 'How do I export my transaction history as CSV?',
      page: 'https://wallet.example.com/activity', metadata: { plan: 'business', app_version: '5.12.0', seats: 12 },
    });

    // All three at once: Dana's on screen (read), the others with their unread counts.
    let s = await seen(agent, 'three chats, 2 and 1 unread, at capacity', (s) => s.list.length === 3
      && s.list[1].unread === 2 && s.list[2].unread === 1 && s.capacity === '3 of 3 chats');
    assert.deepEqual(s.list.map((c) => [c.name, c.category, c.current]), [
      ['Dana Whitfield', 'Transactions', true], ['Wei Zhang', 'Security', false], ['Marco Rossi', 'How-to', false],
    ]);
    assert.deepEqual(s.list.map((c) => c.wait), ['Waiting <1 min', 'Waiting <1 min', 'Waiting <1 min']);
    assert.equal(s.list[1].preview, 'It says Berlin, but I am in Shanghai. Should I worry?');
    assert.equal(s.title, '(3) Parley · Agent console');
    assert.equal(s.chat.details.plan, 'pro');
    assert.equal(s.chat.details.page, 'https://wallet.example.com/activity/tx/7f3e');

    // A draft for Dana, another for Wei; switching back and forth keeps both.
    await agent.locator('#reply').fill('Let me look up tx 7f3e for you');
    await chatNamed(agent, 'Wei Zhang').click();
    s = await seen(agent, 'Wei’s chat, read, with an empty composer', (s) => s.chat?.name === 'Wei Zhang' && s.list[1].unread === 0);
    assert.equal(s.chat.draft, '');
    assert.equal(s.chat.details.plan, 'free');
    await wei.expect('read', (f) => f.seq === 2);
    await agent.locator('#reply').fill('Please do not click any link in that email.');
    await chatNamed(agent, 'Dana Whitfield').click();
    s = await seen(agent, 'Dana’s chat again', (s) => s.chat?.name === 'Dana Whitfield');
    assert.equal(s.chat.draft, 'Let me look up tx 7f3e for you');
    // Keyboard: Alt+ArrowDown goes to the next chat, with its draft.
    await agent.locator('#reply').press('Alt+ArrowDown');
    s = await seen(agent, 'Wei’s chat by keyboard', (s) => s.chat?.name === 'Wei Zhang');
    assert.equal(s.chat.draft, 'Please do not click any link in that email.');
    await agent.locator('#reply').press('Enter');
    await wei.expect('message', (f) => f.text === 'Please do not click any link in that email.');
    await seen(agent, 'Wei answered', (s) => s.list[1].wait === 'Replied' && s.chat.draft === '');

    // A fourth visitor has to queue: the console shows the queue length.
    const sofia = await Visitor.start(sockets, server, {
      name: 'Sofia Alves', category: 'account', text: 'I cannot change my e-mail address.',
      page: 'https://wallet.example.com/settings/profile', metadata: { plan: 'pro', app_version: '5.12.0' },
    });
    await sofia.expect('queued');
    await seen(agent, 'one waiting in the queue', (s) => s.queue === '1 waiting');

    // Dana's chat mid-conversation, typing shown, unread elsewhere (the docs' picture of the
    // console is taken by desk-console.test.mjs, with notes, SLA and canned replies).
    await chatNamed(agent, 'Dana Whitfield').click();
    await seen(agent, 'Dana again', (s) => s.chat?.name === 'Dana Whitfield');
    await wei.say('OK, I changed my password. Anything else I should do?');
    await dana.say('It shows “pending” in the app, and the fee was 0.0002 BTC.');
    await agent.locator('#reply').fill('Thanks Dana. The network is congested right now; your transaction is in the mempool.');
    await agent.locator('#reply').press('Enter');
    await dana.expect('message', (f) => f.sender.role === 'agent');
    await dana.read(4);
    await dana.say('Great, so I just wait?');
    await dana.typing(true);
    await agent.locator('#reply').fill('Yes: it should confirm within the hour. I will stay on');
    await seen(agent, 'Dana typing, unread elsewhere', (s) => s.chat.typing === 'Dana Whitfield is typing…'
      && s.chat.messages.length === 4 && s.list[1].unread === 1 && s.list[2].unread === 1);
    await dana.typing(false);

    // Marco's chat is closed as resolved: the slot goes to Sofia, who was waiting.
    await chatNamed(agent, 'Marco Rossi').click();
    await seen(agent, 'Marco’s chat', (s) => s.chat?.name === 'Marco Rossi');
    await agent.getByRole('button', { name: 'Close chat' }).click();
    await agent.getByRole('button', { name: 'Resolved', exact: true }).click();
    await marco.expect('closed', (f) => f.resolved === true && f.by === 'agent');
    s = await seen(agent, 'Sofia assigned in Marco’s place, queue empty, still 3 of 3',
      (s) => s.queue === 'Queue empty' && s.capacity === '3 of 3 chats' && s.list.map((c) => c.name).join() === 'Dana Whitfield,Wei Zhang,Sofia Alves');
    await sofia.expect('assigned');
    // Closing without a replacement frees the slot: 2 of 3. Not resolved is stored as such.
    await chatNamed(agent, 'Wei Zhang').click();
    await agent.getByRole('button', { name: 'Close chat' }).click();
    await agent.getByRole('button', { name: 'Not resolved' }).click();
    await wei.expect('closed', (f) => f.resolved === false);
    await seen(agent, 'two chats, 2 of 3', (s) => s.list.length === 2 && s.capacity === '2 of 3 chats');
    assert.equal((await transcript(server, marco.conversationId)).conversation.resolved, true);
    assert.equal((await transcript(server, wei.conversationId)).conversation.resolved, false);
    // The visitor leaving ends a chat on the console's side too, with a line saying so.
    await sofia.send({ type: 'close' });
    await chatNamed(agent, 'Sofia Alves').click();
    s = await seen(agent, 'Sofia’s chat ended', (s) => s.chat?.ended === 'Sofia Alves ended the conversation.');
    assert.equal(await agent.locator('#reply').isVisible(), false);
    await agent.getByRole('button', { name: 'Remove from list' }).click();
    await seen(agent, 'only Dana left', (s) => s.list.length === 1 && s.capacity === '1 of 3 chats');
  } finally {
    await server.stop();
  }
});

test('while the tab is hidden, new chats and messages raise a title badge and a desktop notification', { timeout: 90000 }, async () => {
  const server = await startParley();
  try {
    const context = await b.newContext({ viewport: VIEWPORT });
    await context.grantPermissions(['notifications'], { origin: server.url });
    const agent = await context.newPage();
    // Record what the page asks the Notification API to show (the browser's own display of it
    // is outside the page), and let the test hide and show the tab: headless Chromium keeps
    // every page visible, so visibility is emulated the way the console reads it.
    await agent.addInitScript(() => {
      window.shownNotifications = [];
      window.permissionRequests = [];
      const Real = window.Notification;
      window.Notification = class extends Real {
        constructor(title, options) {
          super(title, options);
          window.shownNotifications.push({ title, body: options?.body, tag: options?.tag });
        }
      };
      // The context has granted the permission; the page sees "default" until it asks, and the
      // test sees whether it asked during a user gesture.
      let asked = false;
      Object.defineProperty(window.Notification, 'permission', { get: () => (asked ? 'granted' : 'default') });
      window.Notification.requestPermission = async () => {
        window.permissionRequests.push(navigator.userActivation.isActive);
        asked = true;
        return 'granted';
      };
      let state = 'visible';
      Object.defineProperty(document, 'visibilityState', { get: () => state });
      Object.defineProperty(document, 'hidden', { get: () => state === 'hidden' });
      window.setTabVisible = (visible) => {
        state = visible ? 'visible' : 'hidden';
        document.dispatchEvent(new Event('visibilitychange'));
      };
    });
    await agent.goto(server.url + '/agent');
    await signIn(agent, agentToken('alice'));
    await seen(agent, 'connected', (s) => s.conn === 'online');
    // Permission is asked for on a click, never before.
    assert.deepEqual(await agent.evaluate(() => window.permissionRequests), []);
    await agent.getByRole('button', { name: 'Enable notifications' }).click();
    await agent.getByRole('button', { name: 'Notifications on' }).waitFor({ timeout: WAIT });
    assert.deepEqual(await agent.evaluate(() => window.permissionRequests), [true], 'asked once, during the click');

    await agent.evaluate(() => window.setTabVisible(false));
    const sockets = await SocketPage.open(b.newContext);
    const dana = await Visitor.start(sockets, server, { name: 'Dana Whitfield', category: 'transaction', text: 'My withdrawal is stuck.' });
    let s = await seen(agent, 'a badge of 1 while hidden', (s) => s.title === '(1) Parley · Agent console');
    assert.equal(s.list[0].unread, 1, 'shown but not read while hidden');
    await dana.say('It has been 3 hours.');
    const wei = await Visitor.start(sockets, server, { name: 'Wei Zhang', category: 'security', text: 'Login from a new device?' });
    s = await seen(agent, 'a badge of 3', (s) => s.title === '(3) Parley · Agent console');
    const notes = await until('three notifications', () => agent.evaluate(() => window.shownNotifications), (n) => n.length === 3);
    assert.deepEqual(notes.map((n) => [n.title, n.body, n.tag]), [
      ['New chat: Dana Whitfield', 'My withdrawal is stuck.', dana.conversationId],
      ['Dana Whitfield', 'It has been 3 hours.', dana.conversationId],
      ['New chat: Wei Zhang', 'Login from a new device?', wei.conversationId],
    ]);
    assert.equal(dana.frames.filter((f) => f.type === 'read').length, 0, 'nothing marked read while hidden');

    // Back on the tab: the chat on screen is read (the visitor is told), the badge counts the rest.
    await agent.evaluate(() => window.setTabVisible(true));
    await seen(agent, 'a badge of 1 (Wei) once visible', (s) => s.title === '(1) Parley · Agent console');
    await dana.expect('read', (f) => f.seq === 2);
    await chatNamed(agent, 'Wei Zhang').click();
    await seen(agent, 'no badge', (s) => s.title === 'Parley · Agent console');
    // While visible, nothing more is sent to the desktop.
    await dana.say('Any news?');
    await seen(agent, 'Dana unread 1', (s) => s.list[0].unread === 1 && s.title === '(1) Parley · Agent console');
    assert.equal((await agent.evaluate(() => window.shownNotifications)).length, 3);
  } finally {
    await server.stop();
  }
});

test('the console survives a server restart without losing or duplicating a message', { timeout: 120000 }, async () => {
  let server = await startParley();
  try {
    const agent = await openConsole(server);
    const visitor = await demoPage(b.newContext, server);
    await openWidget(visitor);
    await pickTopic(visitor, 'account');
    await say(visitor, 'v1: I cannot change my e-mail address.');
    await seen(agent, 'v1', (s) => s.chat?.messages.length === 1);
    await reply(agent, 'a1: Which address do you see in Settings?');
    await shown(visitor, 'a1: Which address do you see in Settings?');
    await say(visitor, 'v2: the old one, dana@old.example');
    await seen(agent, 'v2', (s) => s.chat?.messages.length === 3);

    await server.stop();
    await seen(agent, 'the connection-lost banner', (s) => s.conn === 'offline' && /Connection lost/.test(s.banner || ''));
    // Written while the server is down: kept as "Sending" and sent once back.
    await reply(agent, 'a2: written while you were away');
    await seen(agent, 'a2 pending', (s) => s.chat.messages.at(-1).state === 'pending');
    await say(visitor, 'v3: typed while the server was down');

    server = await startParley({ dir: server.dir, port: server.port, config: server.config });
    await seen(agent, 'reconnected, all delivered', (s) => s.conn === 'online' && s.banner === null
      && s.chat.messages.length === 5 && s.chat.messages.every((m) => m.seq != null));
    await shown(visitor, 'a2: written while you were away');
    await say(visitor, 'v4: after the restart');
    await reply(agent, 'a3: fixed, please check again.');
    await shown(visitor, 'a3: fixed, please check again.');
    // The visitor can show a3 before the agent's console has its ack (two sockets, two pages):
    // wait until every message the console shows is acknowledged.
    const s = await seen(agent, 'seven messages, all acknowledged',
      (s) => s.chat.messages.length === 7 && s.chat.messages.every((m) => m.seq != null));

    const stored = await transcript(server, await until('the conversation id', async () => {
      const res = await fetch(`${server.url}/v1/conversations`, { headers: { authorization: `Bearer ${agentToken('alice')}` } });
      return (await res.json()).conversations[0]?.id;
    }));
    const expected = stored.messages.map((m) => [m.seq, m.text]);
    assert.equal(expected.length, 7);
    assert.deepEqual(s.chat.messages.map((m) => [m.seq, m.text]), expected, 'the console shows exactly the transcript');
    assert.deepEqual(expected.map(([seq]) => seq), [1, 2, 3, 4, 5, 6, 7]);
    assert.deepEqual((await messagesShown(visitor)).map((m) => [m.seq, m.text]), expected);
    assert.equal(new Set(expected.map(([, text]) => text)).size, 7, 'no text twice');
  } finally {
    await server.stop();
  }
});

test('keyboard only: sign in, reach the chats, answer, and close a chat; parts are labelled for screen readers', { timeout: 90000 }, async () => {
  const server = await startParley();
  try {
    const agent = await newPage(b.newContext, { viewport: VIEWPORT });
    await agent.goto(server.url + '/agent');
    const focused = () => agent.evaluate(() => {
      const a = document.activeElement;
      if (!a || a === document.body) return 'body';
      return a.id ? `#${a.id}` : a.dataset.action ? `action:${a.dataset.action}` : a.dataset.choice ? `choice:${a.dataset.choice}`
        : a.classList.contains('chat') ? `chat:${a.querySelector('.name').textContent}` : `${a.tagName.toLowerCase()}:${a.textContent}`;
    });
    assert.equal(await focused(), '#token', 'the token field has focus');
    await agent.keyboard.type(agentToken('alice'));
    await agent.keyboard.press('Enter');
    await seen(agent, 'connected', (s) => s.conn === 'online');
    const sockets = await SocketPage.open(b.newContext);
    const dana = await Visitor.start(sockets, server, { name: 'Dana Whitfield', category: 'account', text: 'I cannot sign in.' });
    await Visitor.start(sockets, server, { name: 'Wei Zhang', category: 'other', text: 'Hello?' });
    await seen(agent, 'two chats', (s) => s.list.length === 2);

    // Tab order: the top bar (status before the chats), then the chat list, then the chat.
    const order = [];
    while (!(order.at(-1) || '').startsWith('chat:')) {
      assert.ok(order.length < 20, `Tab never reached the chat list: ${order.join(' → ')}`);
      await agent.keyboard.press('Tab');
      order.push(await focused());
    }
    assert.ok(order.includes('#status'), order.join(' → '));
    assert.equal(order.at(-1), 'chat:Dana Whitfield');
    // Down to Wei with Alt+ArrowDown, which keeps focus in the list; Enter shows it.
    await agent.keyboard.press('Alt+ArrowDown');
    assert.equal(await focused(), 'chat:Wei Zhang');
    await agent.keyboard.press('Alt+ArrowUp');
    assert.equal(await focused(), 'chat:Dana Whitfield');
    await agent.keyboard.press('Enter');
    // Tab: the other chat, then the chat's actions (transfer, escalate, survey, close), then
    // the reply box.
    const actions = [];
    for (let i = 0; i < 5; i++) {
      await agent.keyboard.press('Tab');
      actions.push(await focused());
    }
    assert.deepEqual(actions, ['chat:Wei Zhang', 'action:transfer', 'action:escalate', 'action:survey', 'action:close']);
    await agent.keyboard.press('Tab');
    assert.equal(await focused(), '#reply');
    await agent.keyboard.type('Hi Dana, which e-mail address do you sign in with?');
    await agent.keyboard.press('Enter');
    await dana.expect('message', (f) => f.text === 'Hi Dana, which e-mail address do you sign in with?');

    // Close: the question takes focus, Escape cancels back to the button, Enter on Resolved closes.
    await agent.keyboard.press('Shift+Tab');
    assert.equal(await focused(), 'action:close');
    await agent.keyboard.press('Enter');
    assert.equal(await focused(), 'choice:resolved');
    await agent.keyboard.press('Escape');
    assert.equal(await focused(), 'action:close');
    await agent.keyboard.press('Enter');
    await agent.keyboard.press('Enter');
    await dana.expect('closed', (f) => f.resolved === true);
    await seen(agent, 'only Wei left', (s) => s.list.length === 1 && s.chat?.name === 'Wei Zhang');

    const a11y = await agent.evaluate(() => ({
      log: [document.querySelector('.log').getAttribute('role'), document.querySelector('.log').getAttribute('aria-live'),
        document.querySelector('.log').getAttribute('aria-label')],
      reply: document.querySelector('label[for="reply"]').textContent,
      status: document.querySelector('label[for="status"]').textContent,
      chat: document.querySelector('.chat').getAttribute('aria-label'),
      current: document.querySelector('.chat').getAttribute('aria-current'),
      announcer: document.querySelector('[aria-live="polite"][role="status"]') != null,
    }));
    assert.deepEqual(a11y, {
      log: ['log', 'polite', 'Conversation with Wei Zhang'],
      reply: 'Reply to Wei Zhang',
      status: 'Status',
      chat: 'Wei Zhang, Other, Waiting <1 min',
      current: 'true',
      announcer: true,
    });
  } finally {
    await server.stop();
  }
});
