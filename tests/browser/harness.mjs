// Shared by every browser test: start a real `parley serve` (the binary cargo built), restart it
// on the same port, and drive Debian's Chromium through playwright-core.
//
// Nothing here sleeps to synchronise: every wait is on an event (a log line, a process exit, a
// page condition) with a deadline, and a missed deadline fails with what was seen so far.

import { spawn, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, writeFileSync, existsSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
export const repoRoot = resolve(here, '..', '..');

/** The binary under test: PARLEY_BIN, or the debug build `scripts/test` makes. */
export const parleyBin = process.env.PARLEY_BIN ?? join(repoRoot, 'target', 'debug', 'parley');

export const sha256 = (s) => createHash('sha256').update(s).digest('hex');

/** Agents the tests sign in as; token = `token-<id>`. */
export const AGENTS = [
  { id: 'alice', name: 'Alice Moreau', capacity: 3 },
  { id: 'bob', name: 'Bob Chen', capacity: 3 },
];
export const agentToken = (id) => `token-${id}`;
export const ADMIN_TOKEN = 'admin-secret';

/** A parley.toml with the test agents and an admin token; `extra` is appended verbatim. */
export function configToml({ agents = AGENTS, extra = '' } = {}) {
  const lines = [
    '[auth]',
    `admin_token_sha256 = ["${sha256(ADMIN_TOKEN)}"]`,
    '',
  ];
  for (const a of agents) {
    lines.push('[[agents]]', `id = "${a.id}"`, `name = "${a.name}"`,
      `token_sha256 = "${sha256(agentToken(a.id))}"`, `capacity = ${a.capacity ?? 3}`, '');
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
  dir ??= mkdtempSync(join(tmpdir(), 'parley-browser-'));
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'parley.toml'), config);
  const child = spawn(parleyBin, ['serve', '--listen', `127.0.0.1:${port}`], {
    cwd: dir,
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'info', NO_COLOR: '1' },
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
    dir, url, log, child,
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

const servers = new Set();
// A failed test must not leave a server behind.
process.on('exit', () => { for (const s of servers) if (s.child.exitCode === null) s.child.kill('SIGKILL'); });

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
