// The agent's WebSocket to Parley (/v1/agent), kept open while signed in: `hello` on every
// socket (with the resume positions and status the console gives it), reconnect with
// exponential backoff and jitter (docs/protocol.md §7), and a state the top bar shows.
//
// A refused upgrade (bad token) looks like any failed connection in a browser (close 1006), so
// a socket that never opened is followed by a token check over HTTP: 401 signs the agent out
// with a clear message instead of retrying for ever.

const BASE_DELAY = 500;
const MAX_DELAY = 30000;
/** After 1008 (flooding) the protocol asks for minutes, not seconds. */
const POLICY_DELAY = 120000;
/** A socket that opens but never gets its welcome is given up and retried. */
const WELCOME_TIMEOUT = 10000;

/**
 * Checks a token before opening a socket: 'ok' (an agent's), 'admin' (an admin token, which the
 * agent socket refuses), 'refused' (401) or 'unreachable'. `/v1/me` says whose token it is.
 */
export async function checkToken(token) {
  try {
    const res = await fetch('/v1/me', {
      headers: { authorization: `Bearer ${token}` },
      cache: 'no-store',
    });
    if (res.status === 401 || res.status === 403) return 'refused';
    if (!res.ok) return 'unreachable';
    const me = await res.json();
    return me?.role === 'agent' ? 'ok' : 'admin';
  } catch {
    return 'unreachable';
  }
}

export class Connection {
  /**
   * @param {string} token  the agent token (sent as `?token=`: browsers cannot set headers)
   * @param {object} on  hello() → the hello frame; frame(f); state(s); refused()
   */
  constructor(token, on) {
    this.token = token;
    this.on = on;
    this.ws = null;
    this.wanted = false;
    this.welcomed = false;
    this.attempt = 0;
    this.timer = 0;
    this.state = 'idle';
    addEventListener('online', () => { if (this.wanted && !this.ws) this.connect(); });
  }

  url() {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    return `${scheme}//${location.host}/v1/agent?token=${encodeURIComponent(this.token)}`;
  }

  start() {
    if (this.wanted) return;
    this.wanted = true;
    this.connect();
  }

  stop() {
    this.wanted = false;
    clearTimeout(this.timer);
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close(1000);
    this.setState('idle');
  }

  /** Sends on a welcomed socket; false when there is none (the caller keeps the frame). */
  send(frame) {
    if (!this.ws || !this.welcomed || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  get online() { return this.welcomed; }

  connect() {
    clearTimeout(this.timer);
    if (this.state !== 'offline') this.setState('connecting');
    let ws;
    try {
      ws = new WebSocket(this.url());
    } catch {
      this.retry(MAX_DELAY);
      return;
    }
    this.ws = ws;
    this.welcomed = false;
    let opened = false;
    const giveUp = setTimeout(() => ws.close(4008), WELCOME_TIMEOUT);
    ws.onopen = () => {
      opened = true;
      ws.send(JSON.stringify(this.on.hello()));
    };
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
        this.on.frame(frame);
        this.setState('online');
        return;
      }
      this.on.frame(frame);
    };
    ws.onclose = async (ev) => {
      clearTimeout(giveUp);
      if (ws !== this.ws) return;
      this.ws = null;
      this.welcomed = false;
      if (!this.wanted) return;
      if (ev.code === 4001 || ev.code === 4000) {
        this.refused();
        return;
      }
      this.setState('offline');
      const verdict = opened ? 'ok' : await checkToken(this.token);
      if (verdict === 'refused' || verdict === 'admin') {
        this.refused();
        return;
      }
      this.retry(ev.code === 1008 ? POLICY_DELAY : Math.min(MAX_DELAY, BASE_DELAY * 2 ** this.attempt));
    };
  }

  refused() {
    this.wanted = false;
    this.setState('idle');
    this.on.refused();
  }

  /** Waits between half and all of `delay` (jitter spreads a restart's reconnects). */
  retry(delay) {
    this.attempt++;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => { if (this.wanted && !this.ws) this.connect(); },
      delay * (0.5 + Math.random() / 2));
  }

  setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.on.state(state);
  }
}
