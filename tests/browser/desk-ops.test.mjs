// The ops dashboard's part of the support desk (issue 5), in headless Chromium against a real
// `parley serve`: the service levels, survey, deflections, offline messages and transfers of
// the feed's `desk` object, and the reports panel with its CSV download. Traffic is bare
// visitor and agent sockets (harness.mjs) and REST.
//
// Every wait is on a condition with a deadline; nothing sleeps to synchronise.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  startParley, useBrowser, until, newPage, rest, addArticle, ADMIN_TOKEN, screenshotDir,
  SocketPage, Visitor, Agent,
} from './harness.mjs';

const b = useBrowser();

/** What ops see of the desk and the reports. */
function deskView(page) {
  return page.evaluate(() => {
    const figure = (id) => {
      const el = document.querySelector(`.desk-figure[data-metric="${id}"]`);
      return el ? { value: el.querySelector('.value').textContent, sub: el.querySelector('.sub').textContent } : null;
    };
    const cells = (tr) => [...tr.children].map((c) => c.textContent);
    return {
      state: document.body.dataset.state ?? null,
      sla: figure('sla_attainment'),
      csat: figure('csat'),
      deflections: figure('deflections'),
      offline: figure('offline_messages'),
      transfers: figure('transfers'),
      slaRows: [...document.querySelectorAll('.sla-table tbody tr')].map(cells),
      report: {
        status: document.querySelector('.report-status')?.textContent ?? null,
        group: document.querySelector('.reports')?.dataset.group ?? null,
        head: [...document.querySelectorAll('.report thead th')].map((th) => th.textContent),
        rows: [...document.querySelectorAll('.report tbody tr')].map(cells),
        total: [...document.querySelectorAll('.report tfoot tr')].map(cells)[0] ?? null,
      },
    };
  });
}

const seen = (page, what, check) => until(`the dashboard showing ${what}`, () => deskView(page), check);

test('the dashboard shows the desk’s service levels, survey, deflections, offline messages and transfers, and a report with its CSV', { timeout: 150000 }, async () => {
  const server = await startParley();
  try {
    const page = await newPage(b.newContext, { viewport: { width: 1440, height: 900 }, acceptDownloads: true });
    await page.goto(server.url + '/ops');
    await page.locator('#token').fill(ADMIN_TOKEN);
    await page.locator('#token').press('Enter');
    let d = await seen(page, 'an idle desk', (v) => v.state === 'live' && v.deflections?.value === '0' && v.report.total);
    assert.equal(d.sla.value, '—');
    assert.equal(d.csat.value, '—');
    assert.deepEqual(d.slaRows.map((r) => r[0]), ['Security', 'Account', 'Transactions', 'How-to', 'Other']);
    assert.equal(d.report.group, 'category');
    assert.match(d.report.status, /^\d{4}-\d\d-\d\d to \d{4}-\d\d-\d\d \(UTC\) · No conversations in this period\.$/);

    // Nobody online: an offline message.
    const sockets = await SocketPage.open(b.newContext);
    const offline = await Visitor.start(sockets, server, { name: 'Priya Nair', category: 'other', text: 'Do you have a referral programme?' });
    await offline.expect('queued', (f) => f.reason === 'nobody_online');
    // A question an article answers: a deflection.
    const article = await addArticle(server, { title: 'How to reset your password', body: 'Open Settings, then Security.', lang: 'en' });
    const deflected = await fetch(`${server.url}/v1/kb/articles/${article.id}/deflections`, {
      method: 'POST', body: JSON.stringify({ category: 'account' }),
    });
    assert.equal(deflected.status, 204);

    // Two agents; a chat answered in time, closed and rated 5; another transferred.
    const alice = await Agent.connect(server, 'alice', b.newContext);
    const bob = await Agent.connect(server, 'bob', b.newContext);
    const { conversation: c0 } = await offline.expect('assigned');
    const dana = await Visitor.start(sockets, server, { name: 'Dana Whitfield', category: 'account', text: 'I cannot change my e-mail address.' });
    const { conversation: c1 } = await dana.expect('assigned');
    const holder1 = c1.agent.id === 'alice' ? alice : bob;
    await holder1.say(c1.id, 'Done: please check again.');
    await dana.expect('message', (m) => m.sender.role === 'agent');
    await holder1.send({ type: 'close', conversation_id: c1.id, resolved: true });
    await dana.expect('csat_request');
    await dana.send({ type: 'csat', conversation_id: c1.id, score: 5, comment: 'Quick!' });
    const wei = await Visitor.start(sockets, server, { name: 'Wei Zhang', category: 'transaction', text: 'My withdrawal is stuck.' });
    const { conversation: c2 } = await wei.expect('assigned');
    const [from, to] = c2.agent.id === 'alice' ? [alice, bob] : [bob, alice];
    await from.send({ type: 'transfer', conversation_id: c2.id, agent: to.id, note: 'Needs a look at the node.' });
    await wei.expect('transferred');

    d = await seen(page, 'the desk’s figures', (v) => v.deflections.value === '1' && v.transfers.value === '1'
      && v.offline.value === '1' && v.csat.value === '5.0 / 5' && v.sla.value === '100%');
    assert.equal(d.csat.sub, '1 answer');
    assert.equal(d.sla.sub, '1 of 1 first replies within target');
    assert.deepEqual(d.slaRows.find((r) => r[0] === 'Account'), ['Account', '1', '0', '0', '100%']);
    assert.deepEqual(d.slaRows.find((r) => r[0] === 'Other'), ['Other', '0', '0', '0', '—']);

    // The report (today, by category) follows on refresh: three conversations, one deflection.
    await page.getByRole('button', { name: 'Refresh' }).click();
    d = await seen(page, 'the report by category', (v) => v.report.total?.[1] === '3');
    assert.deepEqual(d.report.head.slice(0, 4), ['Category', 'Conversations', 'Closed', 'Resolved']);
    assert.deepEqual(d.report.rows.map((r) => r[0]), ['Account', 'Other', 'Transactions']);
    const account = d.report.rows.find((r) => r[0] === 'Account');
    const col = (name) => d.report.head.indexOf(name);
    assert.equal(account[col('Resolved')], '1');
    assert.equal(account[col('CSAT')], '5.0 (1)');
    assert.equal(account[col('SLA')], '100%');
    assert.equal(account[col('Deflections')], '1');
    assert.equal(d.report.total[col('Transfers')], '1');
    // By agent: both agents.
    await page.locator('#report-group').selectOption('agent');
    d = await seen(page, 'the report by agent', (v) => v.report.group === 'agent' && v.report.total?.[1] === '3');
    assert.deepEqual(d.report.rows.map((r) => r[0]).sort(), [...new Set([c0.agent.id, c1.agent.id, to.id])].sort());
    await page.locator('#report-period').selectOption('week');
    await seen(page, 'the week', (v) => /^(\d{4}-\d\d-\d\d) to (?!\1)\d{4}-\d\d-\d\d \(UTC\)/.test(v.report.status) && v.report.total?.[1] === '3');

    // The CSV: fetched with the admin token and saved through a Blob URL.
    const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('link', { name: 'Download CSV' }).click()]);
    assert.match(download.suggestedFilename(), /^parley-conversations-\d+-\d+\.csv$/);
    const csv = readFileSync(await download.path(), 'utf8').trim().split('\n');
    assert.match(csv[0], /^conversation_id,created_at,day,category,team,agent,state,resolved/);
    assert.equal(csv.length, 4, csv.join('\n'));
    assert.ok(csv.some((line) => line.includes(c1.id) && line.includes('Quick!')), csv.join('\n'));

    await page.locator('#report-period').selectOption('today');
    await page.locator('#report-group').selectOption('category');
    await seen(page, 'today by category again', (v) => v.report.group === 'category' && v.report.total?.[1] === '3');
    await page.screenshot({ path: join(screenshotDir, 'ops-dashboard.png'), fullPage: true, animations: 'disabled', caret: 'hide' });
    // The REST figures agree with the table.
    const report = (await rest(server, 'GET', '/v1/reports?group_by=category')).body;
    assert.equal(report.total.conversations, 3);
    assert.equal(report.total.deflections, 1);
    await Promise.all([alice.close(), bob.close()]);
  } finally {
    await server.stop();
  }
});
