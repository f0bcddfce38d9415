// The chat widget (web-widget/) on the demo host page, in headless Chromium against a real
// `parley serve`. The agent side is a WebSocket opened inside a second browser context, so the
// tests need no npm package beyond playwright-core.
//
// Every wait is on a condition with a deadline (a polled widget condition, locator.waitFor, or
// a frame the agent expects); a missed deadline fails with what the widget showed at the time.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import {
  startParley, configToml, gzipSize, screenshotDir, useBrowser, screenshot, WAIT,
  inWidget, waitWidget, widgetState, messagesShown, part, openWidget, pickTopic, say, shown, bannerMatches,
  demoPage as openDemoPage, Agent as RawAgent, transcript, onlyConversation, SocketPage, Visitor, startRedis,
} from './harness.mjs';

const BUDGET = 25000; // gzipped bytes the host page may load before the chat is opened (25 KB)
// Not the issue's budget, a guard against creep: what opening the chat loads (the loader, the
// chat's modules and styles), and everything including the parts loaded on demand (article
// suggestions on the first key press, the survey when one arrives).
const OPENED_CEILING = 30000;
const WHOLE_CEILING = 34000;

const b = useBrowser();
const newContext = b.newContext;
const demoPage = (server, options) => openDemoPage(newContext, server, options);
const Agent = { connect: (server, id = 'alice') => RawAgent.connect(server, id, newContext) };

/** Without a CJK font Chromium draws boxes: such a screenshot would be worse than none. */
function hasChineseFont() {
  try {
    return execFileSync('fc-list', [':lang=zh'], { encoding: 'utf8' }).trim() !== '';
  } catch {
    return false;
  }
}

// ---- the tests ---------------------------------------------------------------------------------

test('a visitor on the demo page and an agent chat both ways, with delivery and read ticks', { timeout: 90000 }, async () => {
  const server = await startParley();
  try {
    const alice = await Agent.connect(server);
    const page = await demoPage(server);
    await page.evaluate(() => {
      window.Parley.identify({ name: 'Dana Whitfield' });
      window.parleyEvents = [];
      for (const e of ['open', 'close', 'message', 'unread', 'assigned']) {
        window.Parley.on(e, (detail) => window.parleyEvents.push({ event: e, detail }));
      }
    });

    await openWidget(page);
    await pickTopic(page, 'transaction');
    const first = 'My BTC withdrawal has been pending for 3 hours.';
    await say(page, first);

    const { conversation } = await alice.expect('assigned');
    assert.equal(conversation.category, 'transaction');
    assert.equal(conversation.visitor.name, 'Dana Whitfield');
    assert.equal(conversation.page, server.url + '/');
    const id = conversation.id;
    await alice.expect('message', (m) => m.text === first && m.sender.role === 'visitor');
    await shown(page, first, { mine: true, state: 'delivered' });
    await waitWidget(page, 'the agent\'s name in the header and a "joined" line', (root) =>
      root.querySelector('#p-title').textContent === 'Alice Moreau'
      && [...root.querySelectorAll('.system')].some((s) => s.textContent === 'Alice Moreau joined the conversation'));

    await alice.send({ type: 'typing', conversation_id: id, active: true });
    await waitWidget(page, 'Alice is typing', (root) => root.querySelector('.typing').textContent === 'Alice Moreau is typing…');

    const answer = 'Hi Dana, I can see it: the network is congested, it will confirm within the hour.';
    await alice.say(id, answer);
    await shown(page, answer, { mine: false });
    await waitWidget(page, 'the typing line gone', (root) => root.querySelector('.typing').textContent === '');
    // The panel is open and scrolled down: the visitor has read the answer (seq 2).
    await alice.expect('read', (f) => f.role === 'visitor' && f.seq >= 2);

    await alice.send({ type: 'read', conversation_id: id, seq: 1 });
    await shown(page, first, { state: 'read' });

    const second = 'Thanks! Transaction id 7f3e…a91c, in case you need it.';
    await say(page, second);
    const m = await alice.expect('message', (f) => f.text === second);
    await shown(page, second, { state: 'delivered' });
    await alice.send({ type: 'read', conversation_id: id, seq: m.seq });
    await shown(page, second, { state: 'read' });
    await screenshot(page, 'widget-chat.png');

    // Closed: a new answer shows on the launcher's badge; opening reads it.
    await page.keyboard.press('Escape');
    await part(page, '.panel').waitFor({ state: 'hidden', timeout: WAIT });
    await alice.say(id, 'It is confirmed now. Anything else?');
    await waitWidget(page, 'an unread badge of 1', (root) => {
      const b = root.querySelector('.badge');
      return !b.hidden && b.textContent === '1' && /1 unread/.test(root.querySelector('.launcher').getAttribute('aria-label'));
    });
    await openWidget(page);
    await alice.expect('read', (f) => f.seq >= m.seq + 1);
    await waitWidget(page, 'the badge gone', (root) => root.querySelector('.badge').hidden);

    const list = await messagesShown(page);
    assert.deepEqual(list.map((x) => [x.text, x.mine]), [
      [first, true], [answer, false], [second, true], ['It is confirmed now. Anything else?', false],
    ]);
    const events = await page.evaluate(() => window.parleyEvents);
    assert.ok(events.some((e) => e.event === 'assigned' && e.detail.agent.name === 'Alice Moreau'), JSON.stringify(events));
    assert.ok(events.some((e) => e.event === 'message' && e.detail.role === 'agent' && e.detail.text === answer));
    assert.ok(events.some((e) => e.event === 'unread' && e.detail.count === 1));

    // The agent ends it; the visitor is offered a new one.
    await alice.send({ type: 'close', conversation_id: id, resolved: true });
    await waitWidget(page, 'the ended state', (root) => !root.querySelector('.ended').hidden
      && /Alice Moreau ended the conversation/.test(root.querySelector('.ended').textContent));
    await part(page, '.again').click();
    await part(page, '.cats button').first().waitFor({ state: 'visible', timeout: WAIT });
    await alice.close();
  } finally {
    await server.stop();
  }
});

test('with no agent free the widget shows its queue position and wait, updated live', { timeout: 90000 }, async () => {
  // Alice is online but busy with one chat (capacity 1): the desk is open, so visitors queue
  // (with nobody online at all the widget takes offline messages instead: desk-widget.test.mjs).
  const server = await startParley({ config: configToml({ agents: [{ id: 'alice', name: 'Alice Moreau', capacity: 1 }] }) });
  try {
    const alice = await Agent.connect(server);
    const busy = await Visitor.start(await SocketPage.open(newContext), server, { name: 'Kenji Sato', category: 'other', text: 'Hello?' });
    await busy.expect('assigned');
    await alice.expect('assigned');
    const waiting = await demoPage(server);
    await openWidget(waiting);
    await pickTopic(waiting, 'feature_question');
    await say(waiting, 'How do I export my transaction history as CSV?');
    await bannerMatches(waiting, /^You are number 1 in the queue, about 1 min$/);

    // A security question outranks it (category priority): our visitor moves back to 2.
    const urgent = await demoPage(server);
    await openWidget(urgent);
    await pickTopic(urgent, 'security');
    await say(urgent, 'Someone withdrew funds from my wallet!');
    await bannerMatches(urgent, /number 1 in the queue/);
    await bannerMatches(waiting, /^You are number 2 in the queue, about 2 min$/);
    await screenshot(waiting, 'widget-queue.png');

    // The one ahead gives up: back to 1.
    await part(urgent, '.end').click();
    await part(urgent, '.confirm .yes').click();
    await waitWidget(urgent, 'the ended state', (root) => !root.querySelector('.ended').hidden);
    await bannerMatches(waiting, /number 1 in the queue/);

    // Alice closes her other chat: our visitor is assigned, the queue line goes, her name shows.
    await alice.send({ type: 'close', conversation_id: busy.conversationId, resolved: true });
    await alice.expect('assigned', (f) => f.conversation.id !== busy.conversationId);
    await waitWidget(waiting, 'assigned to Alice', (root) => root.querySelector('.banner').hidden
      && root.querySelector('#p-title').textContent === 'Alice Moreau');
    await alice.close();
  } finally {
    await server.stop();
  }
});

test('ending a chat while Redis stalls says it is retrying, and the chat ends once Redis answers', { timeout: 90000 }, async (t) => {
  const redis = await startRedis();
  if (!redis) return t.skip('redis-server is not installed');
  const server = await startParley({ config: configToml({ extra: `[redis]\nurl = "${redis.url}"` }) });
  try {
    const alice = await Agent.connect(server);
    const page = await demoPage(server);
    await openWidget(page);
    await pickTopic(page, 'account');
    await say(page, 'Please close this when Redis is back');
    const assigned = await alice.expect('assigned');

    // Redis stops answering: the node refuses the close (`unavailable`, no cid) at its deadline.
    redis.pause();
    await part(page, '.end').click();
    await part(page, '.confirm .yes').click();
    await waitWidget(page, 'the retrying notice', (root) => !root.querySelector('.notice').hidden
      && /busy\. Retrying/.test(root.querySelector('.notice').textContent));
    const stillOpen = await widgetState(page);
    assert.equal(stillOpen.ended, null, 'not ended while the close was refused');

    // Redis answers again: the widget's resent close goes through, both sides hear it once.
    redis.resume();
    await waitWidget(page, 'the ended state', (root) => !root.querySelector('.ended').hidden
      && /You ended the conversation/.test(root.querySelector('.ended').textContent));
    const closed = await alice.expect('closed', (f) => f.conversation_id === assigned.conversation.id);
    assert.equal(closed.by, 'visitor');
    await waitWidget(page, 'the notice gone', (root) => root.querySelector('.notice').hidden);
    await alice.close();
  } finally {
    redis.resume();
    await server.stop();
    redis.stop();
  }
});

test('a server restart mid-conversation loses and duplicates nothing; offline messages go when back', { timeout: 120000 }, async () => {
  const config = configToml();
  let server = await startParley({ config });
  try {
    const alice = await Agent.connect(server);
    const page = await demoPage(server);
    await openWidget(page);
    await pickTopic(page, 'account');
    await say(page, 'v1: I cannot change my e-mail address.');
    const { conversation } = await alice.expect('assigned');
    const id = conversation.id;
    await alice.expect('message', (m) => m.seq === 1);
    await alice.say(id, 'a1: Which address do you see in Settings?');
    await shown(page, 'a1: Which address do you see in Settings?');
    await say(page, 'v2: the old one, dana@old.example');
    await shown(page, 'v2: the old one, dana@old.example', { state: 'delivered' });
    await alice.expect('message', (m) => m.seq === 3);

    await server.stop();
    await alice.expect('socket_closed');
    await waitWidget(page, 'the connection-lost line', (root) =>
      /Connection lost\. Reconnecting/.test(root.querySelector('.banner').textContent) && !root.querySelector('.banner').hidden);
    await say(page, 'v3: typed while the server was down');
    await say(page, 'v4: and another one');
    await shown(page, 'v3: typed while the server was down', { state: 'pending' });
    await shown(page, 'v4: and another one', { state: 'pending' });
    await screenshot(page, 'widget-offline.png');

    server = await startParley({ dir: server.dir, port: server.port, config });
    await shown(page, 'v3: typed while the server was down', { state: 'delivered' });
    await shown(page, 'v4: and another one', { state: 'delivered' });
    await waitWidget(page, 'the connection-lost line gone', (root) => root.querySelector('.banner').hidden);

    // The agent resumes where it was (seq 3) and gets exactly the two it missed.
    await alice.open(server, { resume: [{ conversation_id: id, last_seq: 3 }] });
    const v3 = await alice.expect('message', (m) => m.text.startsWith('v3'));
    const v4 = await alice.expect('message', (m) => m.text.startsWith('v4'));
    assert.deepEqual([v3.seq, v4.seq], [4, 5]);
    await alice.say(id, 'a2: fixed, please check again.');
    await shown(page, 'a2: fixed, please check again.');

    const expected = [
      'v1: I cannot change my e-mail address.',
      'a1: Which address do you see in Settings?',
      'v2: the old one, dana@old.example',
      'v3: typed while the server was down',
      'v4: and another one',
      'a2: fixed, please check again.',
    ];
    const stored = await transcript(server, id);
    assert.deepEqual(stored.messages.map((m) => [m.seq, m.text]), expected.map((t, i) => [i + 1, t]));
    assert.deepEqual((await messagesShown(page)).map((m) => [m.seq, m.text]), expected.map((t, i) => [i + 1, t]));
    assert.equal(alice.frames.filter((f) => f.type === 'message' && f.text.startsWith('v3')).length, 1);

    // A reload resumes from localStorage: the chat loads without being opened, so an answer
    // shows on the badge; opening shows the same list, once each.
    await page.reload();
    await part(page, '.launcher').waitFor({ timeout: WAIT });
    await alice.say(id, 'a3: after your reload');
    await waitWidget(page, 'an unread badge of 1 after the reload', (root) => !root.querySelector('.badge').hidden
      && root.querySelector('.badge').textContent === '1');
    await openWidget(page);
    await shown(page, 'a3: after your reload');
    assert.deepEqual((await messagesShown(page)).map((m) => m.text), [...expected, 'a3: after your reload']);
    await alice.close();
  } finally {
    await server.stop();
  }
});

test('hostile host CSS does not change the widget, and the widget does not change the host', { timeout: 90000 }, async () => {
  const server = await startParley();
  try {
    // Computed styles of the widget's parts, in the topic picker and then in a conversation.
    // Sizes (and the box on screen) only of the parts whose size does not follow their text
    // (a message's time could differ between the two runs).
    const SIZED = [':host', '.launcher', '.launcher svg', '.panel', '.head', '.min', '.body', '.composer', 'textarea', '.send', '.send svg'];
    const PROPS = ['display', 'position', 'visibility', 'opacity', 'transform', 'box-sizing',
      'font-family', 'font-size', 'font-style', 'font-weight', 'line-height', 'letter-spacing', 'text-transform',
      'color', 'background-color', 'padding-top', 'padding-left', 'margin-top', 'margin-left',
      'border-top-width', 'border-top-style', 'border-top-color', 'cursor', 'direction'];
    const styles = (page, selectors) => inWidget(page, (root, [selectors, props, sized]) => {
      const out = {};
      const host = root.host;
      for (const sel of selectors) {
        const el = sel === ':host' ? host : root.querySelector(sel);
        if (!el) { out[sel] = 'missing'; continue; }
        const cs = getComputedStyle(el);
        const r = el.getBoundingClientRect();
        out[sel] = Object.fromEntries(props.map((p) => [p, cs.getPropertyValue(p)]));
        if (sized.includes(sel)) out[sel].box = [r.x, r.y, r.width, r.height].map(Math.round).join(' ');
      }
      return out;
    }, [selectors, PROPS, SIZED]);
    const PRECHAT = [':host', '.launcher', '.launcher svg', '.panel', '.head', '#p-title', '.sub', '.min', '.prechat h3', '.cats button'];
    const CHAT = ['.panel', '.body', '.system', '.msg.me', '.msg.me .bubble', '.meta', '.composer', 'textarea', '.send', '.send svg'];

    async function measure(path) {
      const page = await demoPage(server, { path, reducedMotion: 'reduce' });
      const closed = await styles(page, [':host', '.launcher', '.launcher svg']);
      await openWidget(page);
      await part(page, '.cats button').first().waitFor({ timeout: WAIT });
      // Measured once the topics show whether anyone answers (the welcome has come).
      await waitWidget(page, 'the topics marked with their availability', (root) => root.querySelector('.cats button[data-open]'));
      const prechat = await styles(page, PRECHAT);
      await pickTopic(page, 'other');
      await say(page, 'Is the widget still readable?');
      await shown(page, 'Is the widget still readable?', { state: 'delivered' });
      await bannerMatches(page, /Nobody is online right now/);
      const chat = await styles(page, CHAT);
      return { page, all: { closed, prechat, chat } };
    }

    const plain = await measure('/');
    const hostile = await measure('/#hostile');
    // The hostile CSS is really on: the page's own buttons are gone and its text is 30px serif.
    const host = await hostile.page.evaluate(() => ({
      button: getComputedStyle(document.querySelector('.actions button')).display,
      font: getComputedStyle(document.querySelector('h1')).fontSize,
    }));
    assert.deepEqual(host, { button: 'none', font: '30px' });
    assert.deepEqual(hostile.all, plain.all);
    await hostile.page.screenshot({ path: join(screenshotDir, 'widget-hostile-css.png'), animations: 'disabled', caret: 'hide' });

    // The other way: the host page's look with and without the widget (blocked) is the same.
    const HOST = ['body', 'h1', 'h2', '.amount', '.actions button', '.tx td', '.top nav a', 'p', 'a', 'code'];
    const hostStyles = (page) => page.evaluate(([sels, props]) => Object.fromEntries(sels.map((s) => {
      const cs = getComputedStyle(document.querySelector(s));
      return [s, props.map((p) => cs.getPropertyValue(p)).join('|')];
    })), [HOST, [...PROPS, 'width', 'height']]);
    const bare = await (await newContext({ viewport: { width: 1280, height: 800 } })).newPage();
    await bare.route((url) => url.pathname === '/widget.js', (route) => route.abort());
    await bare.goto(server.url + '/');
    const without = await hostStyles(bare);
    const withWidget = await hostStyles(plain.page);
    assert.deepEqual(withWidget, without);
    // Nothing global besides `Parley` and the one element; no stylesheet added to the document.
    const globals = (page) => page.evaluate(() => ({
      sheets: document.styleSheets.length,
      adopted: document.adoptedStyleSheets.length,
      bodyChildren: [...document.body.children].map((e) => e.tagName.toLowerCase()).filter((t) => t !== 'script'),
    }));
    const a = await globals(bare);
    const b = await globals(plain.page);
    assert.equal(b.sheets, a.sheets);
    assert.equal(b.adopted, 0);
    assert.deepEqual(b.bodyChildren, [...a.bodyChildren, 'parley-widget']);
    const newGlobals = await plain.page.evaluate(() => Object.keys(window).filter((k) => /parley/i.test(k)));
    assert.deepEqual(newGlobals, ['Parley']);
  } finally {
    await server.stop();
  }
});

test(`the host page loads at most ${BUDGET} gzipped bytes of widget before the chat is opened`, { timeout: 60000 }, async (t) => {
  const server = await startParley();
  try {
    const context = await newContext({ viewport: { width: 1280, height: 800 } });
    const page = await context.newPage();
    const loaded = [];
    page.on('response', (res) => {
      const path = new URL(res.url()).pathname;
      if (path === '/widget.js' || path.startsWith('/widget/') || path.startsWith('/v1/')) {
        loaded.push(res.body().then((body) => ({ path, bytes: body.length, gz: gzipSize(body) }), () => ({ path, bytes: 0, gz: 0 })));
      }
    });
    await page.goto(server.url + '/', { waitUntil: 'networkidle' });
    await part(page, '.launcher').waitFor({ state: 'visible', timeout: WAIT });
    const before = await Promise.all(loaded);
    const beforeGz = before.reduce((n, f) => n + f.gz, 0);
    t.diagnostic(`before open: ${before.map((f) => `${f.path} ${f.bytes} B (${f.gz} B gz)`).join(', ')}; total ${beforeGz} B gz`);
    assert.deepEqual(before.map((f) => f.path), ['/widget.js'], 'only the loader before the chat is opened');
    assert.ok(beforeGz <= BUDGET, `${beforeGz} B gz loaded before open > ${BUDGET}`);

    // Opening the chat loads the rest of it; two parts wait until they are needed.
    await openWidget(page);
    await part(page, '.cats button').first().waitFor({ timeout: WAIT });
    await page.waitForLoadState('networkidle');
    const opened = (await Promise.all(loaded)).filter((f) => !f.path.startsWith('/v1/'));
    const openedGz = opened.reduce((n, f) => n + f.gz, 0);
    t.diagnostic(`opened: ${opened.map((f) => `${f.path} ${f.gz}`).join(', ')}; total ${openedGz} B gz`);
    assert.ok(!opened.some((f) => /suggest|survey/.test(f.path)), 'suggestions and the survey load only when needed');
    assert.ok(openedGz <= OPENED_CEILING, `opening the chat loads ${openedGz} B gz > ${OPENED_CEILING}`);
    const onDemand = await Promise.all(['/widget/suggest.js', '/widget/survey.js'].map(async (path) =>
      ({ path, gz: gzipSize(Buffer.from(await (await fetch(server.url + path)).arrayBuffer())) })));
    const wholeGz = openedGz + onDemand.reduce((n, f) => n + f.gz, 0);
    t.diagnostic(`on demand: ${onDemand.map((f) => `${f.path} ${f.gz}`).join(', ')}; whole widget ${wholeGz} B gz`);
    assert.ok(wholeGz <= WHOLE_CEILING, `the whole widget is ${wholeGz} B gz > ${WHOLE_CEILING}`);

    // Safe to load twice: a second copy of the script changes nothing.
    await page.evaluate(() => new Promise((resolve) => {
      const s = document.createElement('script');
      s.src = '/widget.js?again';
      s.onload = resolve;
      document.body.append(s);
    }));
    assert.equal(await page.evaluate(() => document.querySelectorAll('parley-widget').length), 1);
    assert.equal(await inWidget(page, (root) => !root.querySelector('.panel').hidden), true);

    // The public API checks what it is given.
    const thrown = await page.evaluate(() => {
      const attempt = (f) => {
        try {
          f();
          return null;
        } catch (err) {
          return err.constructor.name;
        }
      };
      const P = window.Parley;
      return [
        Object.keys(P).sort().join(' '),
        attempt(() => P.on('nope', () => {})),
        attempt(() => P.on('open', 'not a function')),
        attempt(() => P.identify({ id: 'has spaces', signature: 'ab12ab12ab12ab12' })),
        attempt(() => P.identify({ id: 'user-81234' })), // an id needs its signature
        attempt(() => P.identify({ name: 'Dana' })),
        attempt(() => P.init({ color: 'red; background: url(x)' })),
      ];
    });
    assert.deepEqual(thrown, ['close identify init on open version', 'TypeError', 'TypeError', 'TypeError', 'TypeError', null, 'TypeError']);
  } finally {
    await server.stop();
  }
});

test('Parley.init starts a data-manual embed with its options; a server that cannot be reached is said so', { timeout: 60000 }, async () => {
  const server = await startParley();
  try {
    const page = await demoPage(server, { attrs: { 'data-manual': '' } });
    assert.equal(await page.evaluate(() => document.querySelector('parley-widget')), null);
    await page.evaluate(() => window.Parley.init({
      position: 'left', color: '#0f766e', title: 'Lumen Help', categories: ['account', 'other'], metadata: { plan: 'pro', app_version: '5.12.0' },
    }));
    const launcher = await part(page, '.launcher').boundingBox();
    assert.ok(launcher.x < 100, `launcher on the left: ${JSON.stringify(launcher)}`);
    assert.equal(await part(page, '.launcher').evaluate((b) => getComputedStyle(b).backgroundColor), 'rgb(15, 118, 110)');
    await openWidget(page);
    await part(page, '.cats button').first().waitFor({ timeout: WAIT });
    assert.deepEqual(await part(page, '.cats button').evaluateAll((bs) => bs.map((b) => b.dataset.category)), ['account', 'other']);
    assert.equal(await part(page, '#p-title').textContent(), 'Lumen Help');
    await pickTopic(page, 'account');
    await say(page, 'Hello from a manual embed');
    await shown(page, 'Hello from a manual embed', { state: 'delivered' });
    const stored = await transcript(server, await onlyConversation(server));
    assert.equal(stored.conversation.category, 'account');
    assert.deepEqual(stored.conversation.metadata, { plan: 'pro', app_version: '5.12.0' });

    // The chat's files cannot be fetched: the launcher says the chat is unavailable.
    const offline = await demoPage(server);
    await offline.route((url) => url.pathname.startsWith('/widget/'), (route) => route.abort());
    await part(offline, '.launcher').click();
    await waitWidget(offline, 'the launcher saying the chat is unavailable', (root) =>
      /unavailable/.test(root.querySelector('.launcher').getAttribute('aria-label')));
    assert.equal(await part(offline, '.launcher').getAttribute('aria-expanded'), 'false');
  } finally {
    await server.stop();
  }
});

test('Chinese from <html lang="zh-CN"> on a phone-sized screen; data-lang wins over the page', { timeout: 90000 }, async () => {
  const server = await startParley();
  try {
    const phone = { viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true, reducedMotion: 'reduce' };
    const page = await demoPage(server, { ...phone, lang: 'zh-CN' });
    assert.equal(await page.evaluate(() => document.documentElement.lang), 'zh-CN');
    assert.equal(await part(page, '.launcher').getAttribute('aria-label'), '打开在线客服');
    await part(page, '.launcher').tap();
    await part(page, '.cats button').first().waitFor({ timeout: WAIT });
    assert.equal(await part(page, '.prechat h3').textContent(), '请问有什么可以帮您？');
    assert.equal(await part(page, '.cats button[data-category="transaction"]').evaluate((b) => b.firstChild.textContent), '交易与转账');
    // Full screen on a phone.
    const box = await part(page, '.panel').boundingBox();
    assert.deepEqual([box.x, box.y, box.width, box.height].map(Math.round), [0, 0, 390, 844]);
    // Nobody is online: the topic says so, and the message is left for the team.
    assert.equal(await part(page, '.cats button[data-category="transaction"] .when').textContent(), '客服不在线 · 可以留言');
    await pickTopic(page, 'transaction');
    assert.equal(await part(page, '.offline-note').textContent(), '目前没有客服在线。请留言，客服上线后会尽快回复您。');
    assert.equal(await part(page, '.contact label').textContent(), '您的邮箱，方便我们回复（选填）');
    await say(page, '我的 USDT 转账一直显示“待确认”，已经三个小时了。');
    await bannerMatches(page, /^目前没有客服在线。您的留言已保存，客服上线后会尽快回复您，您可以离开此页面。$/);
    const alice = await Agent.connect(server);
    const { conversation } = await alice.expect('assigned');
    await waitWidget(page, '已加入对话', (root) => [...root.querySelectorAll('.system')].some((s) => s.textContent === 'Alice Moreau 已加入对话'));
    await alice.say(conversation.id, '您好！网络目前比较拥堵，您的转账预计在一小时内确认。');
    await shown(page, '您好！网络目前比较拥堵，您的转账预计在一小时内确认。');
    await alice.send({ type: 'read', conversation_id: conversation.id, seq: 1 });
    await shown(page, '我的 USDT 转账一直显示“待确认”，已经三个小时了。', { state: 'read' });
    assert.equal(await part(page, '.msg.me .state .sr').textContent(), '已读');
    assert.equal(await part(page, '.panel').getAttribute('lang'), 'zh-CN');
    if (hasChineseFont()) await screenshot(page, 'widget-mobile.png');
    await alice.close();

    const forced = await demoPage(server, { attrs: { 'data-lang': 'zh-Hans' } });
    assert.equal(await part(forced, '.launcher').getAttribute('aria-label'), '打开在线客服');
    const english = await demoPage(server, { lang: 'zh-CN', attrs: { 'data-lang': 'en' } });
    assert.equal(await part(english, '.launcher').getAttribute('aria-label'), 'Open support chat');
  } finally {
    await server.stop();
  }
});

test('keyboard: Tab reaches the launcher, Enter opens, focus stays in the chat, Escape closes', { timeout: 60000 }, async () => {
  const server = await startParley();
  try {
    const page = await demoPage(server);
    const focused = () => page.evaluate(() => {
      const a = document.activeElement;
      if (a?.tagName !== 'PARLEY-WIDGET') return a ? `page:${a.tagName.toLowerCase()}` : null;
      const inner = a.shadowRoot.activeElement;
      return inner ? `widget:${inner.className || inner.tagName.toLowerCase()}` : 'widget:?';
    });
    let tabs = 0;
    while ((await focused()) !== 'widget:launcher') {
      assert.ok(++tabs < 40, `Tab never reached the launcher (at ${await focused()})`);
      await page.keyboard.press('Tab');
    }
    assert.equal(await part(page, '.launcher').getAttribute('aria-expanded'), 'false');
    await page.keyboard.press('Enter');
    await part(page, '.panel').waitFor({ state: 'visible', timeout: WAIT });
    await waitWidget(page, 'focus on the first topic', (root) => root.activeElement?.dataset.category === 'security');
    assert.equal(await part(page, '.launcher').getAttribute('aria-expanded'), 'true');
    assert.equal(await part(page, '.panel').getAttribute('role'), 'dialog');
    // Tab and Shift+Tab cycle inside the widget.
    for (let i = 0; i < 10; i++) {
      await page.keyboard.press(i % 3 === 2 ? 'Shift+Tab' : 'Tab');
      assert.match(await focused(), /^widget:/);
    }
    // Enter on a topic, type, Enter sends.
    await part(page, '.cats button[data-category="account"]').focus();
    await page.keyboard.press('Enter');
    await waitWidget(page, 'focus in the message box', (root) => root.activeElement?.tagName === 'TEXTAREA');
    await page.keyboard.type('Sent with the keyboard only');
    await page.keyboard.press('Enter');
    await shown(page, 'Sent with the keyboard only', { state: 'delivered' });
    await page.keyboard.press('Escape');
    await part(page, '.panel').waitFor({ state: 'hidden', timeout: WAIT });
    assert.equal(await focused(), 'widget:launcher');
    assert.equal(await part(page, '.launcher').getAttribute('aria-expanded'), 'false');
    // Screen readers: the list is a live log, status lines are live regions.
    const roles = await inWidget(page, (root) => ({
      log: [root.querySelector('.log').getAttribute('role'), root.querySelector('.log').getAttribute('aria-live')],
      banner: root.querySelector('.banner').getAttribute('role'),
      notice: root.querySelector('.notice').getAttribute('role'),
      textarea: root.querySelector('textarea').getAttribute('aria-label'),
    }));
    assert.deepEqual(roles, { log: ['log', 'polite'], banner: 'status', notice: 'alert', textarea: 'Message' });
  } finally {
    await server.stop();
  }
});

test('rate limiting is shown clearly and every message still goes, once', { timeout: 90000 }, async () => {
  const server = await startParley({
    config: configToml({ extra: '[rate_limits]\nvisitor_messages_per_second = 1\nvisitor_message_burst = 2\n' }),
  });
  try {
    const page = await demoPage(server);
    await openWidget(page);
    await pickTopic(page, 'other');
    const texts = ['one', 'two', 'three', 'four', 'five'].map((w) => `message ${w}`);
    for (const text of texts) await say(page, text);
    await waitWidget(page, 'the rate-limit notice', (root) => {
      const n = root.querySelector('.notice');
      return !n.hidden && n.getAttribute('role') === 'alert' && /sending messages too quickly/.test(n.textContent);
    });
    await screenshot(page, 'widget-rate-limited.png');
    for (const text of texts) await shown(page, text, { state: 'delivered' });
    await waitWidget(page, 'the notice gone', (root) => root.querySelector('.notice').hidden);
    assert.deepEqual((await messagesShown(page)).map((m) => [m.seq, m.text]), texts.map((t, i) => [i + 1, t]));
    const stored = await transcript(server, await onlyConversation(server));
    assert.deepEqual(stored.messages.map((m) => m.text), texts);
  } finally {
    await server.stop();
  }
});
