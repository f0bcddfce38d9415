// The visitor's WebSocket to Parley, kept open while it is wanted: hello on every socket,
// reconnect with exponential backoff and jitter (docs/protocol.md §7), and a state the UI shows
// ("online" once welcomed, "offline" while reconnecting, "failed" when retrying cannot help).
// What to resume and resend is the chat's business (chat.js): this file only moves frames.

const BASE_DELAY = 500;
const MAX_DELAY = 30000;
/** After 1008 (flooding) the protocol asks for minutes, not seconds. */
const POLICY_DELAY = 120000;
/** A socket that opens but never gets its welcome is given up and retried. */
const WELCOME_TIMEOUT = 10000;

export class Connection {
  /**
   * @param {string} url  ws(s)://…/v1/visitor
   * @param {object} handlers  hello() → the hello frame; frame(f); state(s, detail);
   *   unauthorized() → true to retry at once (credentials were forgotten)
   */
  constructor(url, handlers) {
    this.url = url;
    this.on = handlers;
    this.ws = null;
    this.wanted = false;
    this.welcomed = false;
    this.attempt = 0;
    this.authRetried = false;
    this.timer = 0;
    this.state = 'idle';
    // The browser knows before we do: reconnect as soon as it is back online.
    addEventListener('online', () => { if (this.wanted && !this.ws) this.connect(); });
    addEventListener('offline', () => { if (this.wanted) this.setState('offline', { browser: true }); });
  }

  /** Keep a socket open (true) or close it (false); idempotent. */
  want(wanted) {
    if (wanted === this.wanted) return;
    this.wanted = wanted;
    if (wanted) {
      this.connect();
    } else {
      clearTimeout(this.timer);
      const ws = this.ws;
      this.ws = null;
      if (ws) ws.close(1000);
      this.setState('idle');
    }
  }

  /** Sends a frame on a welcomed socket; false when there is none (the caller keeps it). */
  send(frame) {
    if (!this.ws || !this.welcomed || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  /** Drops the socket and reconnects at once (e.g. to get a fresh welcome). */
  reconnect() {
    if (this.ws) this.ws.close(1000);
    this.ws = null;
    if (this.wanted) this.connect();
  }

  connect() {
    clearTimeout(this.timer);
    if (this.state !== 'offline') this.setState('connecting');
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch {
      this.retry(MAX_DELAY);
      return;
    }
    this.ws = ws;
    this.welcomed = false;
    const giveUp = setTimeout(() => ws.close(4008), WELCOME_TIMEOUT);
    ws.onopen = () => ws.send(JSON.stringify(this.on.hello()));
    ws.onmessage = (ev) => {
      if (ws !== this.ws || typeof ev.data !== 'string') return;
      let frame;
      try {
        frame = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (!frame || typeof frame !== 'object') return;
      if (frame.type === 'welcome') {
        clearTimeout(giveUp);
        this.welcomed = true;
        this.attempt = 0;
        this.authRetried = false;
        this.setState('online');
      }
      this.on.frame(frame);
    };
    ws.onclose = (ev) => {
      clearTimeout(giveUp);
      if (ws !== this.ws) return;
      this.ws = null;
      this.welcomed = false;
      if (!this.wanted) return;
      switch (ev.code) {
        case 4001:
          // Bad credentials: the chat forgets them; one immediate retry as a new visitor.
          if (this.on.unauthorized() && !this.authRetried) {
            this.authRetried = true;
            this.connect();
          } else {
            this.fail();
          }
          return;
        case 4000:
          // Our hello was refused: retrying the same frame cannot help.
          this.fail();
          return;
        case 1008:
          this.setState('offline');
          this.retry(POLICY_DELAY);
          return;
        default:
          this.setState('offline', { browser: navigator.onLine === false });
          this.retry(Math.min(MAX_DELAY, BASE_DELAY * 2 ** this.attempt));
      }
    };
  }

  /** Waits between half and all of `delay` (jitter spreads a restart's reconnects). */
  retry(delay) {
    this.attempt++;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => { if (this.wanted && !this.ws) this.connect(); },
      delay * (0.5 + Math.random() / 2));
  }

  fail() {
    this.wanted = false;
    this.setState('failed');
  }

  setState(state, detail = {}) {
    this.state = state;
    this.on.state(state, detail);
  }
}
