// The ops dashboard (/ops) in headless Chromium against a real `parley serve`: sign-in with an
// admin token, figures and charts that follow real traffic (bare visitor and agent sockets from
// harness.mjs), and the "disconnected, retrying" state across a server restart.
//
// Every wait is on a condition with a deadline (`until` polls what the page shows). The traffic
// is paced by the dashboard itself: each step waits for the next one-second snapshot to arrive.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  startParley, configToml, useBrowser, until, newPage, agentToken, ADMIN_TOKEN,
  SocketPage, Visitor, Agent,
} from './harness.mjs';

const b = useBrowser();
const VIEWPORT = { width: 1440, height: 900 };

/** What ops see: the feed state, each tile's figure, line and chart, the queue by category. */
function dashboard(page) {
  return page.evaluate(() => {
    const tiles = {};
    for (const el of document.querySelectorAll('.tile[data-metric]')) {
      const svg = el.querySelector('svg.spark');
      tiles[el.dataset.metric] = {
        value: el.querySelector('.value')?.textContent ?? null,
        sub: el.querySelector('.sub')?.textContent ?? null,
        warn: el.dataset.warn === 'true',
        points: svg ? Number(svg.dataset.points) : 0,
        chart: svg?.getAttribute('aria-label') ?? null,
        path: svg?.querySelector('path.line')?.getAttribute('d') ?? null,
      };
    }
    const banner = document.querySelector('.page > .banner');
    return {
      state: document.body.dataset.state ?? null,
      status: document.querySelector('.feed-state')?.textContent ?? null,
      banner: banner && !banner.hidden ? banner.textContent : null,
      tiles,
      queue: Object.fromEntries([...document.querySelectorAll('.bars li')].map((li) => [li.dataset.category, Number(li.querySelector('.n').textContent)])),
      categories: [...document.querySelectorAll('.bars li')].map((li) => li.dataset.category),
    };
  });
}

const seen = (page, what, check) => until(`the dashboard showing ${what}`, () => dashboard(page), check);

async function signIn(page, token) {
  await page.locator('#token').fill(token);
  await page.locator('#token').press('Enter');
}

async function openDashboard(server) {
  const page = await newPage(b.newContext, { viewport: VIEWPORT });
  await page.goto(server.url + '/ops');
  await signIn(page, ADMIN_TOKEN);
  await seen(page, 'live', (d) => d.state === 'live' && d.tiles.visitors?.value != null);
  return page;
}

/** Resolves once the dashboard has drawn a snapshot newer than the one on screen now. */
async function nextSnapshot(page) {
  const now = (await dashboard(page)).status;
  await seen(page, 'a new snapshot', (d) => d.state === 'live' && d.status !== now);
}

test('a wrong token, or an agent’s, is refused with a clear message; an admin token gets in', { timeout: 60000 }, async () => {
  const server = await startParley();
  try {
    const page = await newPage(b.newContext, { viewport: VIEWPORT });
    await page.goto(server.url + '/ops');
    assert.equal(await page.locator('label[for="token"]').textContent(), 'Admin token');
    const error = () => page.locator('#token-error').textContent();
    await signIn(page, 'wrong-token');
    await until('the refusal of a wrong token', error, (t) => t === 'That token was not accepted. Check it and try again.');
    assert.equal(await page.locator('#token').getAttribute('aria-invalid'), 'true');
    await signIn(page, agentToken('alice'));
    await until('the refusal of an agent token', error,
      (t) => t === 'That is not an admin token: the dashboard needs an admin token, not an agent’s.');
    assert.equal(await page.locator('.grid').count(), 0, 'no figures without an admin token');

    await signIn(page, ADMIN_TOKEN);
    await seen(page, 'live figures', (d) => d.state === 'live' && d.tiles.visitors.value === '0');
    assert.ok(!(await page.evaluate(() => JSON.stringify(localStorage))).includes(ADMIN_TOKEN), 'the token is not in localStorage');
  } finally {
    await server.stop();
  }
});

test('the dashboard’s figures and charts move with traffic, and it says so and reconnects when the server restarts', { timeout: 180000 }, async () => {
  const server = await startParley({
    config: configToml({ extra: '[rate_limits]\nvisitor_messages_per_second = 1\nvisitor_message_burst = 3\n' }),
  });
  let restarted;
  try {
    const page = await openDashboard(server);
    let d = await seen(page, 'an idle gateway', (d) => d.tiles.visitors.value === '0' && d.tiles.queue.value === '0');
    assert.deepEqual(d.categories, ['security', 'account', 'transaction', 'feature_question', 'other'], 'priority order');
    assert.equal(d.tiles.time_to_agent.value, '—');

    // Visitors arrive with nobody online: the queue grows, by category.
    const sockets = await SocketPage.open(b.newContext);
    const chats = [
      { name: 'Dana Whitfield', category: 'transaction', text: 'My BTC withdrawal has been pending for 3 hours.' },
      { name: 'Wei Zhang', category: 'security', text: 'I got an email about a login from a new device.' },
      { name: 'Marco Rossi', category: 'feature_question', text: 'How do I export my history as CSV?' },
      { name: 'Sofia Alves', category: 'account', text: 'I cannot change my e-mail address.' },
      { name: 'Kenji Sato', category: 'transaction', text: 'A card payment was taken twice.' },
    ];
    const visitors = [];
    for (const chat of chats) {
      visitors.push(await Visitor.start(sockets, server, chat));
      await nextSnapshot(page);
    }
    d = await seen(page, 'five visitors queued', (d) => d.tiles.visitors.value === '5' && d.tiles.queue.value === '5');
    assert.deepEqual(d.queue, { security: 1, account: 1, transaction: 2, feature_question: 1, other: 0 });
    assert.equal(d.tiles.queue.warn, true);
    assert.match(d.tiles.visitors.chart, /from 0 to 5, now 5$/);
    assert.match(d.tiles.queue.chart, /from 0 to 5, now 5$/);

    // Two agents come online (3 chats each): everyone is assigned; time to agent is measured.
    const alice = await Agent.connect(server, 'alice', b.newContext);
    const bob = await Agent.connect(server, 'bob', b.newContext);
    d = await seen(page, 'the queue drained, agents busy', (d) => d.tiles.queue.value === '0'
      && d.tiles.agents.value === '2' && d.tiles.utilisation.value === '83%' && d.tiles.time_to_agent.value !== '—');
    assert.match(d.tiles.utilisation.sub, /^5 of 6 chat slots in use$/);
    assert.match(d.tiles.time_to_agent.sub, /over 5 assignments/);
    assert.match(d.tiles.queue.chart, /from 0 to 5, now 0$/);

    // Conversation: messages per second rise and fall, paced by the snapshots.
    const assigned = [...alice.frames, ...bob.frames].filter((f) => f.type === 'assigned').map((f) => f.conversation.id);
    assert.equal(assigned.length, 5);
    const agentOf = (id) => (alice.frames.some((f) => f.type === 'assigned' && f.conversation.id === id) ? alice : bob);
    for (let round = 0; round < 4; round++) {
      for (const v of visitors.slice(0, 2 + round)) {
        await v.say(`Follow-up ${round + 1} from ${v.label}`);
        await agentOf(v.conversationId).say(v.conversationId, `Answer ${round + 1} to ${v.label}`);
      }
      await nextSnapshot(page);
    }
    d = await seen(page, 'messages counted: 5 starts, 14 follow-ups, 14 answers', (d) => d.tiles.messages.sub === '33 in total');
    assert.match(d.tiles.messages.chart, /from 0\.0 to [1-9]/, 'the messages chart rose');

    // A visitor who floods is refused: rejections show, in red.
    const flooder = visitors[4];
    for (let i = 0; i < 8; i++) await flooder.send({ type: 'message', cid: `flood-${i}`, text: `flood ${i}` });
    await flooder.expect('error', (f) => f.code === 'rate_limited');
    d = await seen(page, 'rate-limit rejections', (d) => /^[1-9]\d* in total$/.test(d.tiles.rate_limited.sub));
    assert.match(d.tiles.rate_limited.chart, /from 0\.0 to [1-9]/);

    // Chats end; a new visitor waits a moment more: figures settle, charts keep the history.
    await agentOf(visitors[0].conversationId).send({ type: 'close', conversation_id: visitors[0].conversationId, resolved: true });
    await agentOf(visitors[1].conversationId).send({ type: 'close', conversation_id: visitors[1].conversationId, resolved: false });
    await seen(page, 'two chats closed', (d) => d.tiles.utilisation.value === '50%');
    for (let i = 0; i < 6; i++) {
      await visitors[2].say(`Still there? (${i + 1})`);
      await nextSnapshot(page);
    }
    // Bob steps away and three more visitors arrive: Alice alone cannot take them all.
    await bob.send({ type: 'status', status: 'away' });
    for (const chat of [
      { name: 'Amara Okafor', category: 'security', text: 'My 2FA codes stopped working.' },
      { name: 'Lucas Martin', category: 'account', text: 'How do I close my account?' },
      { name: 'Priya Nair', category: 'other', text: 'Do you have a referral programme?' },
    ]) visitors.push(await Visitor.start(sockets, server, chat));
    d = await seen(page, 'one agent away and a queue again', (d) => d.tiles.agents.sub === '1 away · 0 offline'
      && Number(d.tiles.queue.value) >= 1 && d.tiles.visitors.value === '8');
    assert.equal(Object.values(d.queue).reduce((a, n) => a + n, 0), Number(d.tiles.queue.value), 'the bars add up to the queue');
    assert.ok(d.tiles.visitors.points >= 15, `the charts keep every second: ${d.tiles.visitors.points} points`);
    assert.equal(d.tiles.persist.value.endsWith('ms') || d.tiles.persist.value.endsWith('s'), true);
    // The docs' picture of the dashboard is taken by desk-ops.test.mjs, with the desk's figures.

    // The server restarts: the dashboard says it is disconnected and retrying, then comes back.
    const before = d.tiles.visitors.path;
    await server.stop();
    d = await seen(page, 'the disconnected state', (d) => d.state === 'offline'
      && /^Disconnected from Parley, retrying/.test(d.banner || '') && /are not updating/.test(d.banner));
    restarted = await startParley({ dir: server.dir, port: server.port, config: server.config });
    d = await seen(page, 'live again with the new server’s figures', (d) => d.state === 'live'
      && d.banner === null && d.tiles.visitors.value === '0' && d.tiles.visitors.path !== before);
    assert.ok(d.tiles.visitors.points > 15, 'the history from before the restart is kept');
  } finally {
    await server.stop();
    await restarted?.stop();
  }
});
