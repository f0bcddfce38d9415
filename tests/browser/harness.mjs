// Shared by every browser test: start a real `parley serve` (the binary cargo built), restart it
// on the same port, and drive Debian's Chromium through playwright-core. Also the helpers the
// test files share: a browser per file with contexts closed after each test, conditions polled
// with deadlines, the widget seen from a test, and raw protocol clients (agents and visitors as
// WebSockets in a page of their own).
//
// Nothing here sleeps to synchronise: every wait is on an event (a log line, a process exit, a
// page condition) with a deadline, and a missed deadline fails with what was seen so far.

import { before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, writeFileSync, existsSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createServer } from 'node:net';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
export const repoRoot = resolve(here, '..', '..');

/** The binary under test: PARLEY_BIN, or the debug build `scripts/test` makes. */
export const parleyBin = process.env.PARLEY_BIN ?? join(repoRoot, 'target', 'debug', 'parley');

/** The harness's own settings, which Parley would read as configuration (it reads every
 *  PARLEY_* variable, and refuses an unknown one). */
const HARNESS_VARIABLES = ['PARLEY_BIN', 'PARLEY_SKIP_MISSING_SERVICES'];

/** This process's environment without the harness's own variables. */
function serverEnv() {
  const env = { ...process.env };
  for (const name of HARNESS_VARIABLES) delete env[name];
  return env;
}

export const sha256 = (s) => createHash('sha256').update(s).digest('hex');

/** Agents the tests sign in as; token = `token-<id>`. */
export const AGENTS = [
  { id: 'alice', name: 'Alice Moreau', capacity: 3 },
  { id: 'bob', name: 'Bob Chen', capacity: 3 },
];
export const agentToken = (id) => `token-${id}`;
export const ADMIN_TOKEN = 'admin-secret';

/**
 * A parley.toml with the test agents (each `{id, name, capacity?, teams?}`) and an admin token;
 * `extra` is appended verbatim.
 */
export function configToml({ agents = AGENTS, extra = '' } = {}) {
  const lines = [
    '[auth]',
    `admin_token_sha256 = ["${sha256(ADMIN_TOKEN)}"]`,
    '',
  ];
  for (const a of agents) {
    lines.push('[[agents]]', `id = "${a.id}"`, `name = "${a.name}"`,
      `token_sha256 = "${sha256(agentToken(a.id))}"`, `capacity = ${a.capacity ?? 3}`);
    if (a.teams) lines.push(`teams = ${JSON.stringify(a.teams)}`);
    lines.push('');
  }
  return lines.join('\n') + '\n' + extra + '\n';
}

/**
 * Starts `parley serve` in a fresh directory (its own ./data) and resolves once it logs
 * "Parley on http://…". `port` 0 picks a free one; pass the old port to restart in place.
 */
export async function startParley({ dir, port = 0, config = configToml(), timeoutMs = 20000 } = {}) {
  if (!existsSync(parleyBin)) {
    throw new Error(`${parleyBin} does not exist: run \`cargo build\` first (scripts/test does)`);
  }
  if (!dir) {
    dir = mkdtempSync(join(tmpdir(), 'parley-browser-'));
    madeDirs.add(dir);
  }
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'parley.toml'), config);
  const child = spawn(parleyBin, ['serve', '--listen', `127.0.0.1:${port}`], {
    cwd: dir,
    env: { ...serverEnv(), RUST_LOG: process.env.RUST_LOG ?? 'info', NO_COLOR: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const log = [];
  const exited = new Promise((res) => child.once('exit', (code, signal) => res({ code, signal })));
  const url = await new Promise((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`parley did not start in ${timeoutMs} ms:\n${log.join('\n')}`)), timeoutMs);
    const onLine = (line) => {
      log.push(line);
      const m = line.match(/Parley on (http:\/\/[0-9.]+:\d+)/);
      if (m) { clearTimeout(timer); res(m[1]); }
    };
    lines(child.stdout, onLine);
    lines(child.stderr, onLine);
    exited.then(({ code }) => { clearTimeout(timer); rej(new Error(`parley exited (${code}) before listening:\n${log.join('\n')}`)); });
  });
  const server = {
    dir, url, log, child, config,
    port: Number(new URL(url).port),
    /** SIGTERM and wait for the drain to finish; resolves to the exit code. */
    async stop(timeoutMs = 20000) {
      if (child.exitCode !== null) return child.exitCode;
      child.kill('SIGTERM');
      return withTimeout(exited.then((e) => e.code), timeoutMs, 'parley did not exit after SIGTERM');
    },
    /** Stops and starts again on the same port and data directory. */
    async restart() {
      await server.stop();
      return startParley({ dir, port: server.port, config });
    },
  };
  servers.add(server);
  return server;
}

/**
 * A `redis-server` of this test's own on a free port, keeping nothing on disk, for pages served
 * by a node on the Redis engine. `pause()`/`resume()` stop and continue it (SIGSTOP/SIGCONT):
 * connections stay open and nothing answers, the way an overloaded or stalled Redis looks.
 * Without redis-server installed this fails, unless PARLEY_SKIP_MISSING_SERVICES=1 (then it
 * returns null and the caller skips), as the Rust tests do.
 */
export async function startRedis(timeoutMs = 10000) {
  const which = spawnSyncQuiet('redis-server', ['--version']);
  if (!which) {
    if (process.env.PARLEY_SKIP_MISSING_SERVICES === '1') return null;
    throw new Error('redis-server is not installed (apt-get install redis-server; .ci/run does)');
  }
  const port = await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '',
    '--appendonly', 'no'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const log = [];
  await new Promise((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`redis-server did not start:\n${log.join('\n')}`)), timeoutMs);
    const onLine = (line) => {
      log.push(line);
      if (/Ready to accept connections/.test(line)) { clearTimeout(timer); res(); }
    };
    lines(child.stdout, onLine);
    lines(child.stderr, onLine);
    child.once('exit', (code) => { clearTimeout(timer); rej(new Error(`redis-server exited (${code}):\n${log.join('\n')}`)); });
  });
  const redis = {
    url: `redis://127.0.0.1:${port}`,
    pause: () => child.kill('SIGSTOP'),
    resume: () => child.kill('SIGCONT'),
    stop() {
      if (child.exitCode === null) { child.kill('SIGCONT'); child.kill('SIGKILL'); }
    },
  };
  redisServers.add(redis);
  return redis;
}

function spawnSyncQuiet(cmd, args) {
  try {
    execFileSync(cmd, args, { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** A port nobody listens on now (the kernel's pick for a socket closed right after). */
function freePort() {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.once('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => res(port));
    });
  });
}

const redisServers = new Set();
const servers = new Set();
// The data directories this process made; a server's log is kept in memory (`server.log`).
const madeDirs = new Set();
// A failed test must not leave a server, or its directory, behind.
process.on('exit', () => {
  for (const s of servers) if (s.child.exitCode === null) s.child.kill('SIGKILL');
  for (const r of redisServers) r.stop();
  for (const dir of madeDirs) rmSync(dir, { recursive: true, force: true });
});

function lines(stream, onLine) {
  let buf = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk) => {
    buf += chunk;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) { onLine(buf.slice(0, i)); buf = buf.slice(i + 1); }
  });
}

export function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, rej) => { timer = setTimeout(() => rej(new Error(`${what} (after ${ms} ms)`)), ms); }),
  ]);
}

/** Debian's Chromium, or CHROMIUM; the tests never download a browser. */
export function chromiumPath() {
  const candidates = [process.env.CHROMIUM, '/usr/bin/chromium', '/usr/bin/chromium-browser'].filter(Boolean);
  const found = candidates.find((p) => existsSync(p));
  if (!found) {
    throw new Error('Chromium not found: install it (`apt-get install chromium`, as .ci/run does) or set CHROMIUM=/path/to/chromium');
  }
  return found;
}

export async function launchBrowser() {
  return chromium.launch({
    executablePath: chromiumPath(),
    headless: true,
    args: ['--no-sandbox', '--disable-background-networking', '--disable-dev-shm-usage'],
  });
}

/** Where screenshots for docs/ go (docs/screenshots/). */
export const screenshotDir = join(repoRoot, 'docs', 'screenshots');

/** Gzipped size of a byte string, as a host page would download it. */
export function gzipSize(buf) {
  return execFileSync('gzip', ['-9c'], { input: buf }).length;
}

// ---- a browser per test file ----------------------------------------------------------------------

/** How long a test waits for anything the pages should show. */
export const WAIT = 20000;

/**
 * Registers before/after hooks: one Chromium for the file, and every context a test opened
 * closed after it, so none keeps reconnecting to a stopped server's port (which a later test's
 * server could get). `newContext` is what tests open pages with.
 */
export function useBrowser() {
  const b = {
    browser: null,
    contexts: [],
    async newContext(options) {
      const context = await b.browser.newContext(options);
      b.contexts.push(context);
      return context;
    },
  };
  before(async () => {
    b.browser = await launchBrowser();
    mkdirSync(screenshotDir, { recursive: true });
  });
  after(async () => {
    await b.browser?.close();
  });
  afterEach(async () => {
    await Promise.all(b.contexts.splice(0).map((c) => c.close().catch(() => {})));
  });
  b.newContext = b.newContext.bind(b);
  return b;
}

/**
 * Waits until `read()` (run in node, usually reading a page) returns something `check` accepts,
 * polling every 50 ms; on timeout says `what` and the last value read. Not page.waitForFunction:
 * its in-page polling evaluates strings, which the pages' CSP (no 'unsafe-eval') refuses.
 */
export async function until(what, read, check = Boolean, timeout = WAIT) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    last = await read();
    if (check(last)) return last;
    if (Date.now() > deadline) {
      throw new Error(`never happened (${timeout} ms): ${what}\nlast seen: ${JSON.stringify(last, null, 1)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Saves docs/screenshots/<name>. */
export async function screenshot(page, name) {
  await page.screenshot({ path: join(screenshotDir, name), animations: 'disabled', caret: 'hide' });
}

/** A page that logs its errors to the test's output. */
export async function newPage(newContext, options) {
  const context = await newContext(options);
  const page = await context.newPage();
  page.on('pageerror', (err) => console.error('page error:', err));
  return page;
}

// ---- the widget, seen from a test ---------------------------------------------------------------

export const ROOT = `document.querySelector('parley-widget')?.shadowRoot`;

/** Runs `fn(shadowRoot, arg)` in the page (as a string, so the page's CSP does not apply). */
export const inWidget = (page, fn, arg) => page.evaluate(`(${fn})(${ROOT}, ${JSON.stringify(arg ?? null)})`);

/**
 * Waits until `fn(shadowRoot, arg)` is truthy, checking every 50 ms (like Playwright's
 * `expect.poll`); on timeout, says what the widget showed. Not page.waitForFunction: its
 * in-page polling evaluates strings, which the demo page's CSP (no 'unsafe-eval') refuses,
 * and the tests keep that CSP on to show that the widget works under it.
 */
export async function waitWidget(page, what, fn, arg, timeout = WAIT) {
  const check = `(() => { const root = ${ROOT}; return !!root && !!(${fn})(root, ${JSON.stringify(arg ?? null)}); })()`;
  const deadline = Date.now() + timeout;
  while (!(await page.evaluate(check))) {
    if (Date.now() > deadline) {
      throw new Error(`widget never showed (${timeout} ms): ${what}\nwidget: ${JSON.stringify(await widgetState(page), null, 1)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** What the visitor sees: header, status lines, the list with each message's state. */
export function widgetState(page) {
  return inWidget(page, (root) => {
    if (!root) return null;
    const text = (sel) => {
      const el = root.querySelector(sel);
      return el && !el.hidden ? el.textContent : null;
    };
    const panel = root.querySelector('.panel');
    return {
      open: !!panel && !panel.hidden,
      title: text('#p-title'),
      banner: text('.banner'),
      notice: text('.notice'),
      typing: text('.typing'),
      ended: text('.ended'),
      launcher: root.querySelector('.launcher').getAttribute('aria-label'),
      badge: text('.badge'),
      list: [...root.querySelectorAll('.log > li')].map((li) => (li.classList.contains('system')
        ? { system: li.textContent }
        : {
          text: li.querySelector('.bubble').textContent,
          mine: li.classList.contains('me'),
          state: li.dataset.state || null,
          seq: li.dataset.seq ? Number(li.dataset.seq) : null,
        })),
    };
  }).catch((err) => `(unreadable: ${err.message})`);
}

export const messagesShown = async (page) => (await widgetState(page)).list.filter((m) => !m.system);
export const part = (page, selector) => page.locator(`parley-widget ${selector}`);

export async function openWidget(page) {
  await part(page, '.launcher').click();
  await part(page, '.panel').waitFor({ state: 'visible', timeout: WAIT });
}

export async function pickTopic(page, category) {
  await part(page, `.cats button[data-category="${category}"]`).click();
  await part(page, 'textarea').waitFor({ state: 'visible', timeout: WAIT });
}

export async function say(page, text) {
  await part(page, 'textarea').fill(text);
  await part(page, 'textarea').press('Enter');
}

export const shown = (page, text, extra = {}) => waitWidget(page, `a message "${text}" ${JSON.stringify(extra)}`,
  (root, [text, extra]) => [...root.querySelectorAll('.log .msg')].some((li) => li.querySelector('.bubble').textContent === text
    && (!extra.state || li.dataset.state === extra.state)
    && (extra.mine == null || li.classList.contains('me') === extra.mine)), [text, extra]);

export const bannerMatches = (page, pattern) => waitWidget(page, `the status line matching ${pattern}`,
  (root, [src, flags]) => { const b = root.querySelector('.banner'); return !b.hidden && new RegExp(src, flags).test(b.textContent); },
  [pattern.source, pattern.flags]);


/**
 * A fresh visitor (own context from `newContext`, so own localStorage) on the demo page. `lang` replaces the page's
 * `<html lang>` and `attrs` are added to the widget's script tag, both before the widget runs
 * (a MutationObserver from an init script: serving a rewritten page through page.route would
 * make Chromium treat it as a public page and refuse its loopback WebSocket).
 */
export async function demoPage(newContext, server, { viewport = { width: 1280, height: 800 }, path = '/', lang, attrs, ...options } = {}) {
  const context = await newContext({ viewport, ...options });
  const page = await context.newPage();
  page.on('pageerror', (err) => console.error('page error:', err));
  if (lang || attrs) {
    await page.addInitScript(([lang, attrs]) => {
      new MutationObserver(() => {
        if (lang && document.documentElement) document.documentElement.lang = lang;
        const script = document.querySelector('script[src="/widget.js"]');
        for (const [k, v] of Object.entries(script ? attrs || {} : {})) script.setAttribute(k, v);
      }).observe(document, { childList: true, subtree: true });
    }, [lang, attrs]);
  }
  await page.goto(server.url + path);
  if (!attrs || !('data-manual' in attrs)) await part(page, '.launcher').waitFor({ state: 'visible', timeout: WAIT });
  return page;
}
// ---- raw protocol clients: WebSockets in a page of their own ----------------------------------

/**
 * One page (own context) holding any number of sockets, each a `Client` with its own key;
 * frames come back to node through an exposed function. The page stays on about:blank, so its
 * visitors have no Origin the server would check (an empty `allowed_origins` allows all).
 */
export class SocketPage {
  static async open(newContext) {
    const context = await newContext();
    const page = await context.newPage();
    const sockets = new SocketPage(context, page);
    await page.exposeFunction('parleyFrame', (key, text) => sockets.clients.get(key)?.push(JSON.parse(text)));
    return sockets;
  }

  constructor(context, page) {
    Object.assign(this, { context, page, clients: new Map(), next: 0 });
  }

  close() {
    return this.context.close();
  }
}

/** A socket speaking the protocol: frames received in order, `expect` waits for one. */
class Client {
  constructor(sockets, label) {
    this.sockets = sockets;
    this.key = `${label}-${++sockets.next}`;
    this.label = label;
    this.frames = [];
    this.waiters = new Set();
    this.sent = 0;
    sockets.clients.set(this.key, this);
  }

  /** Opens a socket and says hello; resolves to the welcome. */
  async connect(url, hello) {
    await this.sockets.page.evaluate(([key, url, hello]) => new Promise((resolve, reject) => {
      window.sockets ??= {};
      const ws = new WebSocket(url);
      window.sockets[key] = ws;
      ws.onopen = () => { ws.send(JSON.stringify({ type: 'hello', ...hello })); resolve(); };
      ws.onerror = () => reject(new Error(`socket ${key} did not open`));
      ws.onmessage = (e) => window.parleyFrame(key, e.data);
      ws.onclose = (e) => window.parleyFrame(key, JSON.stringify({ type: 'socket_closed', code: e.code }));
    }), [this.key, url, hello]);
    return this.expect('welcome');
  }

  push(frame) {
    this.frames.push(frame);
    for (const wake of this.waiters) wake();
  }

  /** The first frame of `type` (matching `pred`) not returned before; waits for it if needed. */
  expect(type, pred = () => true, timeout = WAIT) {
    return new Promise((resolve, reject) => {
      const check = () => {
        const frame = this.frames.find((f) => !f.taken && f.type === type && pred(f));
        if (!frame) return;
        frame.taken = true;
        this.waiters.delete(check);
        clearTimeout(timer);
        resolve(frame);
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`${this.label}: no "${type}" frame matching ${pred} in ${timeout} ms; got:\n`
          + this.frames.map((f) => JSON.stringify(f)).join('\n')));
      }, timeout);
      this.waiters.add(check);
      check();
    });
  }

  send(frame) {
    return this.sockets.page.evaluate(([key, f]) => window.sockets[key].send(JSON.stringify(f)), [this.key, frame]);
  }

  /** Closes this socket only (the client's other sockets and the page stay). */
  disconnect() {
    return this.sockets.page.evaluate((key) => window.sockets[key].close(1000), this.key);
  }
}

/** An agent as a bare WebSocket (the console is driven through its page instead). */
export class Agent extends Client {
  /** Agent `id` in a page of its own, online (or as `hello` says), after `welcome`. */
  static async connect(server, id, newContext, hello = {}) {
    const agent = new Agent(await SocketPage.open(newContext), id);
    await agent.open(server, hello);
    return agent;
  }

  constructor(sockets, id) {
    super(sockets, `agent ${id}`);
    this.id = id;
  }

  /** Opens a socket and says hello (with `resume` after a restart); resolves to the welcome. */
  open(server, hello = {}) {
    return this.connect(`${server.url.replace(/^http/, 'ws')}/v1/agent?token=${agentToken(this.id)}`, hello);
  }

  say(conversationId, text) {
    return this.send({ type: 'message', conversation_id: conversationId, cid: `a-${this.id}-${++this.sent}`, text });
  }

  close() {
    return this.sockets.close();
  }
}

/** A visitor as a bare WebSocket: many of them share one SocketPage. */
export class Visitor extends Client {
  /**
   * A new visitor who starts a conversation; resolves once it is acknowledged.
   * `chat`: {name, category, text, page, metadata}.
   */
  static async start(sockets, server, chat) {
    const visitor = new Visitor(sockets, chat.name || 'visitor');
    const welcome = await visitor.connect(`${server.url.replace(/^http/, 'ws')}/v1/visitor`, chat.name ? { name: chat.name } : {});
    visitor.id = welcome.visitor.id;
    visitor.token = welcome.visitor.token;
    const cid = `v-${++visitor.sent}`;
    await visitor.send({ type: 'start', category: chat.category, text: chat.text, cid, page: chat.page, metadata: chat.metadata });
    const ack = await visitor.expect('ack', (f) => f.cid === cid);
    visitor.conversationId = ack.conversation_id;
    return visitor;
  }

  /** Sends a message; resolves to its seq once acknowledged. */
  async say(text) {
    const cid = `v-${++this.sent}`;
    await this.send({ type: 'message', cid, text });
    return (await this.expect('ack', (f) => f.cid === cid)).seq;
  }

  typing(active) {
    return this.send({ type: 'typing', active });
  }

  read(seq) {
    return this.send({ type: 'read', seq });
  }
}

/** A stored conversation with its messages (REST, admin token). */
export async function transcript(server, id) {
  const res = await fetch(`${server.url}/v1/conversations/${id}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
  assert.equal(res.status, 200, `GET /v1/conversations/${id}`);
  return res.json();
}

/** The id of the server's only conversation (fails if there are several). */
export async function onlyConversation(server) {
  const res = await fetch(`${server.url}/v1/conversations`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
  const { conversations } = await res.json();
  assert.equal(conversations.length, 1, JSON.stringify(conversations));
  return conversations[0].id;
}

// ---- REST, as an admin or an agent ------------------------------------------------------------

/** `method path` with a JSON body; resolves to `{status, body}` (body parsed when JSON). */
export async function rest(server, method, path, body, token = ADMIN_TOKEN) {
  const headers = { authorization: `Bearer ${token}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(server.url + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const type = res.headers.get('content-type') || '';
  return { status: res.status, body: type.includes('json') ? await res.json() : await res.text() };
}

/** A knowledge-base article (admin REST); resolves to it with its id. */
export async function addArticle(server, article) {
  const { status, body } = await rest(server, 'POST', '/v1/kb/articles', article);
  assert.equal(status, 201, JSON.stringify(body));
  return body;
}

// ---- the agent console, seen from a test --------------------------------------------------------

/** What the agent sees: top bar, the chat list, the chat on screen, the desk's extras. */
export function consoleState(page) {
  return page.evaluate(() => {
    const text = (el) => (el && !el.hidden && !el.closest('[hidden]') ? el.textContent : null);
    const q = (sel) => document.querySelector(sel);
    const kindOf = (li) => ['visitor', 'agent', 'note', 'system'].find((k) => li.classList.contains(k)) || 'agent';
    return {
      title: document.title,
      conn: q('.conn')?.dataset.state ?? null,
      capacity: text(q('.cap-text')),
      queue: text(q('.queue')),
      status: q('#status')?.value ?? null,
      banner: text(q('.shell > .banner')),
      list: [...document.querySelectorAll('.chat-list .chat')].map((b) => ({
        name: b.querySelector('.name').textContent,
        category: b.querySelector('.chip').textContent,
        unread: Number(b.dataset.unread),
        wait: b.querySelector('.wait').textContent,
        preview: b.querySelector('.preview').textContent,
        current: b.getAttribute('aria-current') === 'true',
        ended: b.dataset.ended === 'true',
        typing: !b.querySelector('.typing-dots').hidden,
        sla: text(b.querySelector('.sla')) == null ? null : { state: b.querySelector('.sla').dataset.state, text: b.querySelector('.sla').textContent },
        label: b.getAttribute('aria-label'),
      })),
      waiting: [...document.querySelectorAll('.waiting-list li')].map((li) => ({
        who: li.querySelector('.who').textContent, sla: li.dataset.sla, text: li.querySelector('.sla').textContent,
      })).filter(() => !q('.waiting').hidden),
      followUps: [...document.querySelectorAll('.followup-list li')].map((li) => li.textContent),
      chat: q('.conv-body') && !q('.conv-body').hidden ? {
        name: q('#conv-h').textContent,
        messages: [...document.querySelectorAll('.log .msg')].map((li) => ({
          text: li.querySelector('.bubble')?.textContent ?? li.textContent,
          kind: kindOf(li),
          label: li.querySelector('.note-tag')?.textContent ?? null,
          seq: li.dataset.seq ? Number(li.dataset.seq) : null,
          state: li.dataset.state || null,
        })),
        typing: q('.typing').textContent,
        ended: text(q('.ended span')),
        draft: q('#reply')?.value ?? null,
        sla: text(q('.conv-head .sla')) == null ? null : { state: q('.conv-head .sla').dataset.state, text: q('.conv-head .sla').textContent },
        notice: text(q('.conversation .notice span')),
        noteMode: q('.composer')?.classList.contains('note-mode') ?? false,
        tags: [...document.querySelectorAll('.tags li')].map((li) => li.dataset.tag),
        followUp: text(q('.follow-current')),
        details: Object.fromEntries([...document.querySelectorAll('.details dd')].map((dd) => [dd.dataset.detail || dd.dataset.key, dd.textContent])),
      } : null,
    };
  });
}

export const consoleSeen = (page, what, check) => until(`the console showing ${what}`, () => consoleState(page), check);

/** A console page for `agent` (own context), signed in and connected. */
export async function openConsole(newContext, server, agent = 'alice', options = {}) {
  const page = await newPage(newContext, { viewport: { width: 1440, height: 860 }, ...options });
  await page.goto(server.url + '/agent');
  await page.locator('#token').fill(agentToken(agent));
  await page.locator('#token').press('Enter');
  await consoleSeen(page, 'connected', (s) => s.conn === 'online');
  return page;
}

export const chatNamed = (page, name) => page.locator('.chat-list .chat', { has: page.locator('.name', { hasText: name }) });
