// The widget's part of the support desk (issue 5), in headless Chromium against a real
// `parley serve`: knowledge-base suggestions and deflections before a chat, offline messages
// outside business hours, and the satisfaction survey. Agents are bare WebSockets or the real
// console; articles are created over REST by each test.
//
// Every wait is on a condition with a deadline; nothing sleeps to synchronise.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  startParley, configToml, useBrowser, screenshot, until, WAIT, rest, addArticle,
  waitWidget, widgetState, messagesShown, part, openWidget, pickTopic, say, shown, bannerMatches,
  demoPage as openDemoPage, Agent as RawAgent, openConsole, consoleSeen,
} from './harness.mjs';

const b = useBrowser();
const newContext = b.newContext;
const demoPage = (server, options) => openDemoPage(newContext, server, options);
const Agent = { connect: (server, id = 'alice') => RawAgent.connect(server, id, newContext) };

/** Every frame the page's WebSockets received, as text (to prove what never reached it). */
function recordFrames(page) {
  const frames = [];
  page.on('websocket', (ws) => ws.on('framereceived', (f) => frames.push(String(f.payload))));
  return frames;
}

const ARTICLES = {
  withdrawal: {
    title: 'Why is my withdrawal still pending?',
    body: 'Withdrawals wait for network confirmations. When the network is congested a withdrawal can stay pending for up to an hour; it then completes by itself.',
    lang: 'en', tags: ['withdrawal', 'pending'], url: 'https://help.example.com/en/withdrawal-pending',
  },
  password: {
    title: 'How to reset your password',
    body: 'Open Settings, choose Security, then Reset password. We send a code to your e-mail address.',
    lang: 'en', tags: ['password'],
  },
  transferZh: {
    title: '转账一直没到账怎么办',
    body: '链上转账需要网络确认。网络拥堵时，转账可能需要一个小时左右才能到账，请耐心等待。',
    lang: 'zh', tags: ['转账'], url: 'https://help.example.com/zh/transfer-pending',
  },
};

test('the widget suggests articles as the visitor writes, in English and Chinese; "this solved it" counts a deflection and starts no chat', { timeout: 120000 }, async () => {
  const server = await startParley();
  try {
    const withdrawal = await addArticle(server, ARTICLES.withdrawal);
    await addArticle(server, ARTICLES.password);
    const zh = await addArticle(server, ARTICLES.transferZh);
    const alice = await Agent.connect(server);

    const page = await demoPage(server);
    const searches = [];
    page.on('request', (r) => { if (r.url().includes('/v1/kb/search')) searches.push(new URL(r.url()).searchParams); });
    await page.evaluate(() => {
      window.deflected = [];
      window.Parley.on('deflected', (d) => window.deflected.push(d));
    });
    await openWidget(page);
    await pickTopic(page, 'transaction');
    await part(page, 'textarea').pressSequentially('My withdrawal is still pending', { delay: 15 });
    await waitWidget(page, 'the withdrawal article suggested first', (root) => {
      const first = root.querySelector('.suggest:not([hidden]) .articles li');
      return first && first.querySelector('.title').firstChild.textContent === 'Why is my withdrawal still pending?';
    });
    const suggested = await part(page, '.suggest').evaluate((el) => ({
      heading: el.querySelector('h3').textContent,
      items: [...el.querySelectorAll('.articles li')].map((li) => ({
        id: li.dataset.article,
        href: li.querySelector('a.title')?.getAttribute('href') ?? null,
        target: li.querySelector('a.title')?.getAttribute('target') ?? null,
        snippet: li.querySelector('.snippet')?.textContent ?? null,
      })),
      more: el.querySelector('.more').textContent,
    }));
    assert.equal(suggested.heading, 'These articles might answer your question:');
    assert.ok(suggested.items.length >= 1 && suggested.items.length <= 3, JSON.stringify(suggested));
    assert.deepEqual(suggested.items[0], {
      id: withdrawal.id, href: 'https://help.example.com/en/withdrawal-pending', target: '_blank',
      snippet: suggested.items[0].snippet,
    });
    assert.match(suggested.items[0].snippet, /network confirmations/);
    assert.equal(suggested.more, 'I still need help');
    // Debounced: one search per pause, not one per key; in the page's language.
    assert.ok(searches.length >= 1 && searches.length <= 3, `${searches.length} searches for one phrase`);
    assert.equal(searches.at(-1).get('lang'), 'en');
    assert.equal(searches.at(-1).get('limit'), '3');
    await screenshot(page, 'widget-suggestions.png');

    // "This solved it": counted, thanked, and nothing reaches the queue.
    await part(page, `.articles li[data-article="${withdrawal.id}"] .solved`).click();
    await waitWidget(page, 'the thanks', (root) => !root.querySelector('.ended').hidden
      && root.querySelector('.ended p').textContent === 'Glad that helped! Nothing was sent to our team.'
      && root.querySelector('.again').textContent === 'Ask something else');
    const counted = await until('the deflection counted', async () => (await rest(server, 'GET', '/v1/kb/deflections')).body.deflections,
      (d) => d.length === 1);
    assert.deepEqual(counted.map((d) => [d.category, d.article_id, d.count]), [['transaction', withdrawal.id, 1]]);
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    assert.match(metrics, /^parley_kb_deflections_total\{category="transaction"\} 1$/m);
    assert.deepEqual((await rest(server, 'GET', '/v1/conversations')).body.conversations, [], 'no conversation was started');
    assert.deepEqual(await page.evaluate(() => window.deflected), [{ article: { id: withdrawal.id, title: withdrawal.title } }]);
    assert.equal(alice.frames.filter((f) => f.type === 'assigned').length, 0);
    await part(page, '.again').click();
    await part(page, '.cats button').first().waitFor({ state: 'visible', timeout: WAIT });

    // Chinese: the Chinese article first; "I still need help" sends the message as written.
    const zhPage = await demoPage(server, { lang: 'zh-CN' });
    const zhSearches = [];
    zhPage.on('request', (r) => { if (r.url().includes('/v1/kb/search')) zhSearches.push(new URL(r.url()).searchParams); });
    await openWidget(zhPage);
    await pickTopic(zhPage, 'transaction');
    const question = '我的转账一直没到账';
    await part(zhPage, 'textarea').fill(question);
    await waitWidget(zhPage, 'the Chinese article suggested first', (root, id) => {
      const first = root.querySelector('.suggest:not([hidden]) .articles li');
      return first && first.dataset.article === id;
    }, zh.id);
    assert.equal(zhSearches.at(-1).get('lang'), 'zh');
    assert.equal(await part(zhPage, '.suggest h3').textContent(), '以下文章或许能解答您的问题：');
    assert.equal(await part(zhPage, '.articles li .solved').first().textContent(), '问题已解决');
    await part(zhPage, '.suggest .more').click();
    await shown(zhPage, question, { mine: true, state: 'delivered' });
    await waitWidget(zhPage, 'the suggestions gone', (root) => root.querySelector('.suggest').hidden);
    const { conversation } = await alice.expect('assigned');
    assert.equal(conversation.category, 'transaction');
    await alice.expect('message', (m) => m.text === question);
    await alice.close();
  } finally {
    await server.stop();
  }
});

test('outside business hours the widget says when the team is back, takes an offline message with an e-mail, and an agent gets it later', { timeout: 120000 }, async () => {
  // The team works one day a week, tomorrow (UTC): closed now, open tomorrow at 09:00.
  const tomorrow = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'][(new Date().getUTCDay() + 1) % 7];
  const server = await startParley({
    config: configToml({
      agents: [{ id: 'alice', name: 'Alice Moreau', teams: ['wallet'] }],
      extra: [
        '[[teams]]', 'id = "wallet"', 'name = "Wallet support"',
        '[teams.hours]', 'timezone = "UTC"', `days = ["${tomorrow}"]`, 'open = "09:00"', 'close = "17:00"',
        '[categories.security]', 'team = "wallet"',
      ].join('\n'),
    }),
  });
  try {
    const page = await demoPage(server, { timezoneId: 'UTC' });
    const frames = recordFrames(page);
    await openWidget(page);
    await waitWidget(page, 'security marked closed until tomorrow', (root) => {
      const when = root.querySelector('.cats button[data-category="security"] .when');
      return !when.hidden && when.textContent === 'Closed now · opens tomorrow at 09:00 AM';
    });
    // Categories without a team go to anyone, and nobody is online.
    assert.equal(await part(page, '.cats button[data-category="other"] .when').textContent(), 'Nobody online · leave a message');
    await pickTopic(page, 'security');
    assert.equal(await part(page, '.offline-note').textContent(),
      'We are outside business hours. Leave a message and our team will answer when they are back. We open again tomorrow at 09:00 AM.');
    assert.equal(await part(page, '.contact label').textContent(), 'Your e-mail, so we can reply (optional)');

    // A wrong address is caught before anything is sent.
    await part(page, '.contact input').fill('dana@');
    await say(page, 'Someone changed my 2FA phone number. Please help!');
    await waitWidget(page, 'the address refused', (root) => !root.querySelector('.notice').hidden
      && root.querySelector('.notice').textContent === 'Please check the e-mail address, or leave it empty.'
      && root.querySelector('.contact input').getAttribute('aria-invalid') === 'true');
    assert.deepEqual(await messagesShown(page), []);
    await part(page, '.contact input').fill('dana@example.com');
    await part(page, 'textarea').press('Enter');
    const text = 'Someone changed my 2FA phone number. Please help!';
    await shown(page, text, { mine: true, state: 'delivered' });
    await bannerMatches(page, /^We are outside business hours\. Your message is saved and our team will answer when they are back\. You may leave this page\. We open again tomorrow at 09:00 AM\.$/);
    const s = await widgetState(page);
    assert.ok(s.list.some((l) => l.system === 'We may also answer by e-mail at dana@example.com.'), JSON.stringify(s.list));
    assert.equal(s.notice, null);
    assert.ok(frames.some((f) => f.includes('"reason":"outside_hours"')));
    await screenshot(page, 'widget-offline-message.png');

    // The visitor leaves; the message waits. Alice signs in (even outside the hours) and gets
    // it, with the address and the mark of an offline message.
    await page.context().close();
    const agent = await openConsole(newContext, server, 'alice');
    const seen = await consoleSeen(agent, 'the offline message with its contact', (st) => st.chat
      && st.chat.messages.some((m) => m.text === text) && st.chat.details.contact === 'dana@example.com');
    assert.equal(seen.chat.details.offline, 'Yes: left while nobody answered');
    // The team by its name (GET /v1/desk), not its id.
    await consoleSeen(agent, 'the team by name', (st) => st.chat.details.team === 'Wallet support');
    assert.equal(await agent.locator('.details dd[data-detail="contact"] a').getAttribute('href'), 'mailto:dana@example.com');
  } finally {
    await server.stop();
  }
});

test('the satisfaction survey: a 1–5 rating by keyboard with a comment, stored; a refused answer ends quietly', { timeout: 120000 }, async () => {
  const server = await startParley();
  try {
    const alice = await Agent.connect(server);
    const page = await demoPage(server);
    const frames = recordFrames(page);
    await page.evaluate(() => {
      window.rated = [];
      window.Parley.on('rated', (d) => window.rated.push(d));
    });
    await openWidget(page);
    await pickTopic(page, 'account');
    await say(page, 'I cannot change my e-mail address.');
    const { conversation } = await alice.expect('assigned');
    const id = conversation.id;
    await alice.say(id, 'Done: your address is updated. Anything else?');
    await shown(page, 'Done: your address is updated. Anything else?');

    // The agent sends the survey (the console's "Send survey"; desk-console.test.mjs).
    await alice.send({ type: 'csat_request', conversation_id: id });
    await waitWidget(page, 'the survey', (root) => root.querySelector('.survey legend')?.textContent === 'How would you rate this conversation?');
    const radios = await part(page, '.survey input[type="radio"]').evaluateAll((rs) => rs.map((r) => r.getAttribute('aria-label')));
    assert.deepEqual(radios, ['1 of 5: Very unhappy', '2 of 5: Unhappy', '3 of 5: Neither happy nor unhappy', '4 of 5: Happy', '5 of 5: Very happy']);
    // Sending without a rating asks for one.
    await part(page, '.survey .rate').click();
    await waitWidget(page, 'a rating asked for', (root) => root.querySelector('.survey-error').textContent === 'Please choose a rating first.');
    // Keyboard: the first star, then three steps right: 4, "Happy".
    await part(page, '.survey input[value="1"]').focus();
    await page.keyboard.press('Space');
    for (let i = 0; i < 3; i++) await page.keyboard.press('ArrowRight');
    await waitWidget(page, '4 stars and their meaning', (root) => root.querySelectorAll('.star.on').length === 4
      && root.querySelector('.meaning').textContent === 'Happy');
    await part(page, '.survey textarea').fill('Quick and clear, thank you.');
    await screenshot(page, 'widget-survey.png');
    await part(page, '.survey .rate').click();
    await waitWidget(page, 'the thanks', (root) => root.querySelector('.survey-box .thanks')?.textContent === 'Thank you for your feedback!');
    const stored = await until('the answer stored', async () => (await rest(server, 'GET', `/v1/conversations/${id}`)).body.csat,
      (c) => c && c.score === 4);
    assert.equal(stored.comment, 'Quick and clear, thank you.');
    assert.deepEqual(await page.evaluate(() => window.rated), [{ score: 4, comment: 'Quick and clear, thank you.' }]);

    // The same survey again (a reload that still had it waiting): Parley refuses a second
    // answer with survey_unavailable; the visitor sees no error, and the first answer stays.
    await page.evaluate(([key, id]) => {
      const data = JSON.parse(localStorage.getItem(key));
      localStorage.setItem(key, JSON.stringify({ ...data, survey: id }));
    }, [`parley:v1:${server.url}/`, id]);
    await page.reload();
    await openWidget(page);
    await waitWidget(page, 'the survey shown again', (root) => root.querySelector('.survey legend'));
    await part(page, '.star[data-score="1"]').click();
    await part(page, '.survey .rate').click();
    await until('the refusal', () => frames.some((f) => f.includes('"code":"survey_unavailable"')));
    await waitWidget(page, 'thanks and no error', (root) => root.querySelector('.survey-box .thanks') && root.querySelector('.notice').hidden);
    assert.equal((await rest(server, 'GET', `/v1/conversations/${id}`)).body.csat.score, 4, 'the first answer counts');
    await alice.close();
  } finally {
    await server.stop();
  }
});
