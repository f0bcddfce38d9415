// The ops feed: `/v1/ops/stream` (server-sent events) read with fetch() and a stream reader,
// because the admin token goes in the Authorization header and EventSource cannot set headers.
// One `history` event (the kept snapshots), then a `snapshot` a second. When the stream ends or
// goes quiet, it reconnects with exponential backoff and jitter (the same as the sockets':
// web/common/connection.js); 401/403 stop it for good.

import { backoff } from '../common/connection.js';

const BASE_DELAY = 1000;
const MAX_DELAY = 30000;
/** Snapshots come every second: this long without one means the connection is dead. */
const QUIET = 5000;

/** Checks an admin token: 'ok', 'refused' (401), 'not_admin' (403) or 'unreachable'. */
export async function checkToken(token) {
  try {
    const res = await fetch('/v1/ops/snapshots', { headers: { authorization: `Bearer ${token}` }, cache: 'no-store' });
    if (res.status === 401) return 'refused';
    if (res.status === 403) return 'not_admin';
    return res.ok ? 'ok' : 'unreachable';
  } catch {
    return 'unreachable';
  }
}

export class Feed {
  /** @param {object} on  history(list), snapshot(s), state(state, detail), refused(verdict) */
  constructor(token, on) {
    this.token = token;
    this.on = on;
    this.attempt = 0;
    this.running = false;
    this.abort = null;
    this.timer = 0;
  }

  start() {
    if (this.running) return;
    this.running = true;
    this.connect();
  }

  stop() {
    this.running = false;
    clearTimeout(this.timer);
    this.abort?.abort();
  }

  async connect() {
    if (!this.running) return;
    const abort = new AbortController();
    this.abort = abort;
    let quiet = 0;
    const watch = () => {
      clearTimeout(quiet);
      quiet = setTimeout(() => abort.abort(), QUIET);
    };
    this.on.state(this.attempt ? 'offline' : 'connecting', { retryAt: null });
    try {
      watch();
      const res = await fetch('/v1/ops/stream', {
        headers: { authorization: `Bearer ${this.token}`, accept: 'text/event-stream' },
        cache: 'no-store',
        signal: abort.signal,
      });
      if (res.status === 401 || res.status === 403) {
        clearTimeout(quiet);
        this.running = false;
        this.on.refused(res.status === 401 ? 'refused' : 'not_admin');
        return;
      }
      if (!res.ok || !res.body) throw new Error(`status ${res.status}`);
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        watch();
        buffer += value.replace(/\r\n?/g, '\n');
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          this.dispatch(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
    } catch {
      // Refused connection, reset, abort by the watchdog: all mean "retry".
    }
    clearTimeout(quiet);
    if (!this.running) return;
    const delay = backoff(this.attempt, BASE_DELAY, MAX_DELAY);
    this.attempt++;
    this.on.state('offline', { retryAt: Date.now() + delay });
    this.timer = setTimeout(() => this.connect(), delay);
  }

  dispatch(block) {
    let event = 'message';
    const data = [];
    for (const line of block.split('\n')) {
      if (line.startsWith(':')) continue; // keep-alive comment
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
      if (field === 'event') event = value;
      else if (field === 'data') data.push(value);
    }
    if (!data.length) return;
    let payload;
    try {
      payload = JSON.parse(data.join('\n'));
    } catch {
      return;
    }
    if (this.attempt || event === 'history') {
      this.attempt = 0;
      this.on.state('live', {});
    }
    if (event === 'history' && Array.isArray(payload)) this.on.history(payload);
    else if (event === 'snapshot') this.on.snapshot(payload);
  }
}
