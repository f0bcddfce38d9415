// The harness itself: the binary starts, serves the pages, restarts on the same port.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startParley, launchBrowser } from './harness.mjs';

test('parley serves the three pages and restarts in place', async () => {
  const server = await startParley();
  try {
    for (const path of ['/', '/agent', '/ops', '/widget.js']) {
      const res = await fetch(server.url + path);
      assert.equal(res.status, 200, path);
    }
    const browser = await launchBrowser();
    try {
      const page = await browser.newPage();
      const res = await page.goto(server.url + '/agent');
      assert.equal(res.status(), 200);
    } finally {
      await browser.close();
    }
    const again = await server.restart();
    assert.equal(again.port, server.port);
    assert.equal((await fetch(again.url + '/healthz')).status, 200);
    assert.equal(await again.stop(), 0);
  } finally {
    await server.stop();
  }
});
