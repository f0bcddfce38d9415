// The agent console's part of the support desk (issue 5), in headless Chromium against a real
// `parley serve`: private notes (and that they never reach the widget), transfers with a note
// and the refusals a transfer or an escalation can meet, canned replies with placeholders, the
// first-response clock (SLA) with the real clock and a short target, tags, follow-ups and the
// survey button.
//
// Every wait is on a condition with a deadline; nothing sleeps to synchronise.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  startParley, configToml, useBrowser, screenshot, until, WAIT, rest, agentToken, transcript,
  demoPage, openWidget, pickTopic, say, shown, waitWidget, messagesShown,
  SocketPage, Visitor, openConsole as openConsoleIn, consoleSeen as seen, chatNamed,
} from './harness.mjs';

const b = useBrowser();
const openConsole = (server, agent = 'alice') => openConsoleIn(b.newContext, server, agent);

async function reply(page, text) {
  await page.locator('#reply').fill(text);
  await page.locator('#reply').press('Enter');
}

test('notes stay among agents; a transfer to a team moves the chat with its history and note; refusals are explained', { timeout: 150000 }, async () => {
  const server = await startParley({
    config: configToml({
      agents: [
        { id: 'alice', name: 'Alice Moreau', teams: ['front'] },
        { id: 'bob', name: 'Bob Chen', teams: ['tech'] },
      ],
      extra: [
        '[[teams]]', 'id = "front"', 'name = "Front line"',
        '[[teams]]', 'id = "tech"', 'name = "Technical support"',
        '[categories.account]', 'team = "front"',
      ].join('\n'),
    }),
  });
  try {
    const alice = await openConsole(server, 'alice');
    const bob = await openConsole(server, 'bob');
    const visitor = await demoPage(b.newContext, server);
    const frames = [];
    visitor.on('websocket', (ws) => ws.on('framereceived', (f) => frames.push(String(f.payload))));
    await visitor.evaluate(() => window.Parley.identify({ name: 'Dana Whitfield' }));
    await openWidget(visitor);
    await pickTopic(visitor, 'account');
    const v1 = 'v1: I cannot withdraw to my new address.';
    await say(visitor, v1);
    await seen(alice, 'Dana’s chat', (s) => s.chat?.messages.some((m) => m.text === v1));

    // A note with the toggle: the composer says it is a note, in words.
    await alice.getByRole('button', { name: 'Internal note' }).click();
    let s = await seen(alice, 'note mode', (st) => st.chat.noteMode);
    assert.equal(await alice.locator('label[for="reply"]').textContent(), 'Internal note on the chat with Dana Whitfield: only agents see it');
    assert.equal(await alice.locator('.composer .send').textContent(), 'Add note');
    assert.equal(await alice.locator('.note-toggle').getAttribute('aria-pressed'), 'true');
    const note1 = 'KYC checked: level 2, withdrawals allowed.';
    await reply(alice, note1);
    // Back to replies; a second note with /note.
    await alice.getByRole('button', { name: 'Internal note' }).click();
    const note2 = 'Address whitelisted 2 h ago: the 24 h lock applies.';
    await reply(alice, `/note ${note2}`);
    const a1 = 'a1: Let me check this with our technical team.';
    await reply(alice, a1);
    s = await seen(alice, 'two notes and a reply, all stored', (st) => st.chat.messages.length === 4
      && st.chat.messages.every((m) => m.seq != null) && !st.chat.noteMode);
    assert.deepEqual(s.chat.messages.map((m) => [m.kind, m.text, m.label, m.state]), [
      ['visitor', v1, null, null],
      ['note', note1, 'Internal note · You', 'sent'],
      ['note', note2, 'Internal note · You', 'sent'],
      ['agent', a1, null, s.chat.messages[3].state],
    ]);
    await shown(visitor, a1);

    // Escalation is not configured on this desk: said so, the chat stays.
    await alice.getByRole('button', { name: 'Escalate' }).click();
    await alice.locator('.transfer button[data-choice="escalate"]').click();
    s = await seen(alice, 'the not-configured notice', (st) => st.chat?.notice);
    assert.equal(s.chat.notice, 'Escalation is not set up on this desk: an admin needs to set desk.escalation_team. The chat stays with you.');
    assert.equal(s.list.length, 1);

    // Transfer to Bob, who goes away before it is sent: refused, and said so.
    await alice.getByRole('button', { name: 'Transfer' }).click();
    await until('Bob offered', () => alice.locator('#transfer-to option[value="agent:bob"]').count(), (n) => n === 1);
    assert.equal(await alice.locator('#transfer-to option[value="agent:bob"]').textContent(), 'Bob Chen (online, 0 of 3 chats)');
    await bob.locator('#status').selectOption('away');
    await until('Bob away', async () => (await rest(server, 'GET', '/v1/desk')).body.agents.find((a) => a.id === 'bob').status, (st) => st === 'away');
    await alice.locator('#transfer-to').selectOption('agent:bob');
    await alice.locator('.transfer button[data-choice="transfer"]').click();
    s = await seen(alice, 'the target-unavailable notice', (st) => st.chat?.notice?.startsWith('That agent is not online'));
    assert.equal(s.list.length, 1);
    await bob.locator('#status').selectOption('online');
    await until('Bob back', async () => (await rest(server, 'GET', '/v1/desk')).body.agents.find((a) => a.id === 'bob').available, Boolean);

    // Transfer to the technical team, with a note for them.
    await alice.getByRole('button', { name: 'Dismiss' }).click();
    await alice.getByRole('button', { name: 'Transfer' }).click();
    await until('the teams offered', () => alice.locator('#transfer-to option[value="team:tech"]').count(), (n) => n === 1);
    await alice.locator('#transfer-to').selectOption('team:tech');
    const handover = 'Whitelist lock: can you check whether it can be lifted early?';
    await alice.locator('#transfer-note').fill(handover);
    await alice.locator('.transfer button[data-choice="transfer"]').click();
    await seen(alice, 'the chat gone from Alice', (st) => st.list.length === 0);
    // Bob was free in that team, so the chat went straight to him: Alice is told his name.
    await until('Alice told where it went', () => alice.locator('[aria-live="polite"][role="status"]').first().textContent(),
      (t) => t === 'Chat with Dana Whitfield transferred to Bob Chen.');
    await waitWidget(visitor, 'the transfer said, then Bob', (root) => {
      const lines = [...root.querySelectorAll('.system')].map((x) => x.textContent);
      const at = lines.indexOf('You are being transferred to Bob Chen (Technical support).');
      return at >= 0 && lines.indexOf('Bob Chen joined the conversation') > at && root.querySelector('#p-title').textContent === 'Bob Chen';
    });

    // Bob gets the history: messages, Alice's notes, Parley's note of the transfer, the handover note.
    s = await seen(bob, 'the transferred chat with its history and notes', (st) => st.chat
      && st.chat.messages.some((m) => m.text === handover) && st.chat.messages.some((m) => m.text === note1));
    const kinds = s.chat.messages.map((m) => [m.kind, m.text, m.label]);
    assert.deepEqual(kinds.slice(0, 4), [
      ['visitor', v1, null], ['note', note1, 'Internal note · Alice Moreau'], ['note', note2, 'Internal note · Alice Moreau'], ['agent', a1, null],
    ]);
    assert.ok(kinds.some(([k, text, label]) => k === 'note' && /^Transferred to Technical support by Alice Moreau/.test(text) && label === 'Internal note · Parley'),
      JSON.stringify(kinds));
    assert.ok(kinds.some(([k, text, label]) => k === 'note' && text === handover && label === 'Internal note · Alice Moreau'), JSON.stringify(kinds));
    assert.equal(s.chat.details.transfers, '1×');
    // The team by its name (from GET /v1/desk), not its id.
    await seen(bob, 'the team by name', (st) => st.chat.details.team === 'Technical support');
    await reply(bob, 'b1: The lock ends tomorrow at 10:00; I will lift it now.');
    await shown(visitor, 'b1: The lock ends tomorrow at 10:00; I will lift it now.');

    // The visitor never received a note, live or in history (after a reload too).
    await visitor.reload();
    await openWidget(visitor);
    await shown(visitor, 'b1: The lock ends tomorrow at 10:00; I will lift it now.');
    const texts = (await messagesShown(visitor)).map((m) => m.text);
    assert.deepEqual(texts, [v1, a1, 'b1: The lock ends tomorrow at 10:00; I will lift it now.']);
    for (const secret of [note1, note2, handover, 'Transferred to Technical support']) {
      assert.ok(!frames.some((f) => f.includes(secret)), `the widget received "${secret}"`);
    }
    // Stored as notes in the transcript.
    const stored = await transcript(server, (await rest(server, 'GET', '/v1/conversations')).body.conversations[0].id);
    assert.deepEqual(stored.messages.filter((m) => m.kind === 'note').map((m) => m.text).slice(0, 2), [note1, note2]);
  } finally {
    await server.stop();
  }
});

test('canned replies expand with the names; the first-response clock counts down, warns, breaches, and shows queued chats near their target', { timeout: 150000 }, async () => {
  const server = await startParley({
    config: configToml({
      agents: [{ id: 'alice', name: 'Alice Moreau', capacity: 2 }],
      // 6 s to answer (a warning after 1.5 s); security questions get 20 s (a warning after 5 s).
      extra: '[desk]\nfirst_response_target = "6s"\nsla_warning_percent = 25\n[categories.security]\nfirst_response_target = "20s"\n',
    }),
  });
  try {
    for (const [shortcut, title, text] of [
      ['refund-delay', 'Refund delay', 'Hi {{visitor.name|there}}, I am {{agent.name}}. Refunds reach your card in 3 to 5 working days.'],
      ['withdrawal-pending', 'Withdrawal pending', 'Hi {{visitor.name|there}}, your withdrawal is waiting for network confirmations; it usually completes within the hour.'],
      ['verify-id', 'Identity check', 'For your security, {{visitor.name|there}}, please confirm the last 4 digits of your card.'],
    ]) {
      assert.equal((await rest(server, 'PUT', `/v1/canned/${shortcut}`, { title, text })).status, 201);
    }
    const agent = await openConsole(server);
    const sockets = await SocketPage.open(b.newContext);
    const dana = await Visitor.start(sockets, server, { name: 'Dana Whitfield', category: 'transaction', text: 'My BTC withdrawal has been pending for 3 hours.' });

    // The clock: a countdown, then "Due soon" (25 % of 6 s), in words and colour.
    let s = await seen(agent, 'Dana’s chat with a running clock', (st) => st.list[0]?.sla);
    assert.match(s.list[0].sla.text, /^(Reply within|Due soon ·) 0:0\d$/);
    s = await seen(agent, 'the warning', (st) => st.list[0].sla?.state === 'warning');
    assert.match(s.list[0].sla.text, /^Due soon · 0:0\d$/);
    assert.match(s.chat.sla.text, /^Due soon · 0:0\d$/);
    assert.match(s.list[0].label, /first reply due soon$/);

    // A second chat fills Alice up; a third waits in the queue and shows once near its target.
    const wei = await Visitor.start(sockets, server, { name: 'Wei Zhang', category: 'security', text: 'I got an email about a login from a new device.' });
    await seen(agent, 'Wei’s chat', (st) => st.list.length === 2);
    const marco = await Visitor.start(sockets, server, { name: 'Marco Rossi', category: 'feature_question', text: 'How do I export my history as CSV?' });
    await marco.expect('queued');
    s = await seen(agent, 'Marco waiting, near his target', (st) => st.waiting.length === 1 && st.waiting[0].who === 'Marco Rossi, How-to');
    assert.ok(['warning', 'breached'].includes(s.waiting[0].sla), JSON.stringify(s.waiting));

    // Dana breaches: "Overdue", counting up.
    s = await seen(agent, 'Dana overdue', (st) => st.list[0].sla?.state === 'breached');
    assert.match(s.list[0].sla.text, /^Overdue · 0:\d\d$/);
    assert.match(s.list[0].label, /first reply overdue$/);

    // Canned replies: "/" lists them (and /note), typing filters, Enter inserts the expansion.
    await chatNamed(agent, 'Dana Whitfield').click();
    await agent.locator('#reply').fill('/');
    await until('the list', () => agent.locator('#canned-list [role="option"]').allTextContents(),
      (o) => o.length === 4);
    assert.deepEqual(await agent.locator('#canned-list [role="option"] .shortcut').allTextContents(),
      ['/note', '/refund-delay', '/verify-id', '/withdrawal-pending']);
    assert.equal(await agent.locator('#reply').getAttribute('aria-expanded'), 'true');
    await agent.locator('#reply').pressSequentially('wi', { delay: 20 });
    await until('filtered to one', () => agent.locator('#canned-list [role="option"] .shortcut').allTextContents(),
      (o) => o.join() === '/withdrawal-pending');
    assert.equal(await agent.locator('#reply').getAttribute('aria-activedescendant'), 'canned-0');
    await agent.locator('#reply').press('Enter');
    const expanded = 'Hi Dana Whitfield, your withdrawal is waiting for network confirmations; it usually completes within the hour.';
    await until('the expansion in the box', () => agent.locator('#reply').inputValue(), (v) => v === expanded);
    assert.equal(await agent.locator('#reply').getAttribute('aria-expanded'), 'false');
    // Edited before sending.
    await agent.locator('#reply').press('End');
    await agent.locator('#reply').pressSequentially(' I will keep an eye on it.');
    await agent.locator('#reply').press('Enter');
    await dana.expect('message', (m) => m.text === `${expanded} I will keep an eye on it.`);
    // Answered after the target: the clock stops, "late" in the details; no chip in the list.
    s = await seen(agent, 'Dana answered late', (st) => st.list[0].sla === null && /^Answered late/.test(st.chat.details.sla || ''));

    // The picture for the docs: Wei's chat due soon, Marco overdue in the queue, a note in
    // Wei's chat, the canned list open.
    await chatNamed(agent, 'Wei Zhang').click();
    await seen(agent, 'Wei’s chat', (st) => st.chat?.name === 'Wei Zhang');
    await agent.getByRole('button', { name: 'Internal note' }).click();
    await reply(agent, 'New-device alert from Berlin while he is in Shanghai: verify identity before anything else.');
    await agent.getByRole('button', { name: 'Internal note' }).click();
    await wei.say('It says Berlin, but I am in Shanghai. Should I worry?');
    await agent.locator('#reply').fill('/');
    await agent.locator('#reply').pressSequentially('ver', { delay: 20 });
    await until('the verify-id reply offered', () => agent.locator('#canned-list [role="option"] .shortcut').allTextContents(),
      (o) => o.join() === '/verify-id');
    await agent.locator('#reply').press('Escape');
    await agent.locator('#reply').fill('/');
    await until('the list again', () => agent.locator('#canned-list [role="option"]').count(), (n) => n === 4);
    await agent.locator('#reply').press('ArrowDown');
    await seen(agent, 'the picture ready', (st) => st.chat.messages.some((m) => m.kind === 'note')
      && st.list[1].sla?.state === 'warning' && st.waiting[0]?.sla === 'breached');
    await screenshot(agent, 'agent-console.png');
    await agent.locator('#reply').press('Escape');
    assert.equal(await agent.locator('#canned-list').isHidden(), true);

    // Dana's chat closes: Marco is assigned to Alice and leaves the waiting list.
    await chatNamed(agent, 'Dana Whitfield').click();
    await agent.getByRole('button', { name: 'Close chat' }).click();
    await agent.getByRole('button', { name: 'Resolved', exact: true }).click();
    s = await seen(agent, 'Marco assigned, nothing waiting', (st) => st.waiting.length === 0
      && st.list.map((c) => c.name).join() === 'Wei Zhang,Marco Rossi');
    await marco.expect('assigned');
  } finally {
    await server.stop();
  }
});

test('tags, a follow-up that shows as due with its transcript, the survey button, and the desk facts in the details', { timeout: 120000 }, async () => {
  const server = await startParley();
  try {
    const agent = await openConsole(server);
    const sockets = await SocketPage.open(b.newContext);
    const dana = await Visitor.start(sockets, server, {
      name: 'Dana Whitfield', category: 'transaction', text: 'I was charged twice for the same card top-up.',
    });
    let s = await seen(agent, 'Dana’s chat with its details', (st) => st.chat?.name === 'Dana Whitfield' && st.chat.followUp === 'No follow-up set.');
    assert.match(s.chat.details.sla, /^Due by /);
    assert.equal(s.followUps.length, 0);

    // Tags: Enter adds, × removes, a bad one is refused with Parley's reason.
    await agent.locator('#tag-input').fill('complaint');
    await agent.locator('#tag-input').press('Enter');
    await agent.locator('#tag-input').fill('Refund');
    await agent.locator('#tag-input').press('Enter');
    s = await seen(agent, 'two tags', (st) => st.chat.tags.join() === 'complaint,refund');
    const id = (await rest(server, 'GET', '/v1/conversations')).body.conversations[0].id;
    assert.deepEqual((await rest(server, 'GET', `/v1/conversations/${id}`)).body.tags, ['complaint', 'refund']);
    await agent.getByRole('button', { name: 'Remove tag refund' }).click();
    await seen(agent, 'one tag', (st) => st.chat.tags.join() === 'complaint');
    assert.deepEqual((await rest(server, 'GET', `/v1/conversations/${id}`)).body.tags, ['complaint']);
    await agent.locator('#tag-input').fill('not a tag!');
    await agent.locator('#tag-input').press('Enter');
    await until('the refusal', () => agent.locator('.extras .form-error').first().textContent(), (t) => /^Tags were not saved: tag .* must be 1 to 32 letters/.test(t));

    // A follow-up due now (this minute): it shows under "Follow-ups due".
    const now = await agent.evaluate(() => {
      const d = new Date(Date.now() - 60000);
      return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
    });
    await agent.locator('#follow-when').fill(now);
    await agent.locator('#follow-note').fill('Check the second charge was refunded.');
    await agent.getByRole('button', { name: 'Set follow-up' }).click();
    s = await seen(agent, 'the follow-up set and due', (st) => /^Follow up .* — Check the second charge was refunded\.$/.test(st.chat.followUp || '')
      && st.followUps.length === 1);
    assert.match(s.followUps[0], /Dana Whitfield/);
    assert.match(s.followUps[0], /Check the second charge was refunded\./);
    assert.equal((await rest(server, 'GET', `/v1/conversations/${id}`)).body.follow_up.note, 'Check the second charge was refunded.');
    await agent.locator('.followup-list').getByRole('button', { name: 'Transcript: Dana Whitfield' }).click();
    await until('the transcript in a dialog', () => agent.locator('dialog.transcript').evaluate((d) => d.open && d.querySelector('pre').textContent),
      (text) => typeof text === 'string' && text.includes('I was charged twice for the same card top-up.'));
    await agent.locator('dialog.transcript').getByRole('button', { name: 'Close' }).click();
    await agent.locator('.followup-list').getByRole('button', { name: 'Done: Dana Whitfield' }).click();
    await seen(agent, 'nothing due', (st) => st.followUps.length === 0);
    assert.equal((await rest(server, 'GET', `/v1/conversations/${id}`)).body.follow_up, null);

    // The survey button: the visitor gets the survey, the agent is told.
    await agent.getByRole('button', { name: 'Send survey' }).click();
    s = await seen(agent, 'the survey sent', (st) => st.chat.notice);
    assert.equal(s.chat.notice, 'Survey sent: Dana Whitfield can now rate this conversation.');
    await dana.expect('csat_request', (f) => f.conversation_id === id);
    await dana.send({ type: 'csat', conversation_id: id, score: 5, comment: 'Sorted in minutes' });
    await until('the answer stored', async () => (await rest(server, 'GET', `/v1/conversations/${id}`, undefined, agentToken('alice'))).body.csat,
      (c) => c && c.score === 5);
  } finally {
    await server.stop();
  }
});
