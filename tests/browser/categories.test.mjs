// Category labels come from the server's configuration (`[categories.<name>]` label, labels,
// short_label, through /v1/info), not from tables in the pages: a category added in parley.toml
// shows its own words in the widget's topic picker (per language), in the widget's topic line
// and in the agent console.
//
// Every wait is on a condition with a deadline (harness.mjs); none sleeps.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  startParley, configToml, useBrowser, WAIT, demoPage as openDemoPage, openWidget, pickTopic, say, shown,
  part, waitWidget, consoleSeen, openConsole, transcript, onlyConversation,
} from './harness.mjs';

const b = useBrowser();
const demoPage = (server, options) => openDemoPage(b.newContext, server, options);

const CONFIG = configToml({
  extra: [
    '[routing]',
    'categories = ["security", "account", "transaction", "feature_question", "other", "billing_dispute"]',
    '[categories.billing_dispute]',
    'label = "Billing disputes"',
    'labels = { zh-CN = "账单争议" }',
    // A default category may rename itself for agents only: visitors keep the built-in words.
    '[categories.transaction]',
    'short_label = "Payments"',
  ].join('\n'),
});

/** The topic buttons' labels, by category (the label is the button's first text node). */
const pickerLabels = (page) => part(page, '.cats button').evaluateAll((bs) =>
  Object.fromEntries(bs.map((b) => [b.dataset.category, b.firstChild.textContent])));

test('a configured category shows its label in the widget, in either language, and in the console', { timeout: 90000 }, async () => {
  const server = await startParley({ config: CONFIG });
  try {
    const agent = await openConsole(b.newContext, server);

    // English: the configured label; the defaults keep their built-in words.
    const visitor = await demoPage(server);
    await openWidget(visitor);
    await part(visitor, '.cats button[data-category="billing_dispute"]').waitFor({ timeout: WAIT });
    const en = await pickerLabels(visitor);
    assert.equal(en.billing_dispute, 'Billing disputes');
    assert.equal(en.transaction, 'Transactions and payments', 'short_label is for agents only');
    assert.equal(en.feature_question, 'How do I…?');

    // Chinese: the label of that language.
    const zh = await demoPage(server, { lang: 'zh-CN' });
    await openWidget(zh);
    await part(zh, '.cats button[data-category="billing_dispute"]').waitFor({ timeout: WAIT });
    assert.equal((await pickerLabels(zh)).billing_dispute, '账单争议');

    // The chosen topic is named in the chat, and the agent sees the same label.
    await visitor.evaluate(() => window.Parley.identify({ name: 'Ines Duarte' }));
    await pickTopic(visitor, 'billing_dispute');
    await waitWidget(visitor, 'the topic line', (root) =>
      [...root.querySelectorAll('.log > li.system')].some((li) => li.textContent === 'Topic: Billing disputes'));
    await say(visitor, 'I was charged twice for one order.');
    await shown(visitor, 'I was charged twice for one order.', { mine: true });
    const s = await consoleSeen(agent, 'the chat with its category label', (s) => s.list.length === 1 && s.chat != null);
    assert.equal(s.list[0].category, 'Billing disputes');
    assert.equal(s.chat.details.category, 'Billing disputes');
    assert.equal((await transcript(server, await onlyConversation(server))).conversation.category, 'billing_dispute');

    // The agent's name for a default category is its short label.
    const other = await demoPage(server);
    await other.evaluate(() => window.Parley.identify({ name: 'Tomás Ruiz' }));
    await openWidget(other);
    await pickTopic(other, 'transaction');
    await say(other, 'Where is my refund?');
    const both = await consoleSeen(agent, 'the second chat', (s) => s.list.length === 2);
    assert.deepEqual(both.list.map((c) => c.category).sort(), ['Billing disputes', 'Payments']);
  } finally {
    await server.stop();
  }
});
