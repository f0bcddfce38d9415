// The agent's WebSocket to Parley (/v1/agent), kept open while signed in: the shared client core
// (web/common/connection.js: hello on every socket, backoff, the state the top bar shows) with
// what only agents need: the token in the URL, and what a failed connection means for it.
//
// A refused upgrade (bad token) looks like any failed connection in a browser (close 1006), so
// a socket that never opened is followed by a token check over HTTP: 401 signs the agent out
// with a clear message instead of retrying for ever.

import { Connection } from '../common/connection.js';

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

/**
 * The agent socket for `token` (sent as `?token=`: browsers cannot set headers).
 * @param {object} on  hello() → the hello frame; frame(f); state(s); refused() when the token
 *   is not accepted (4001, 4000, or a failed upgrade that `checkToken` explains)
 */
export function agentConnection(token, on) {
  const url = () => {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    return `${scheme}//${location.host}/v1/agent?token=${encodeURIComponent(token)}`;
  };
  return new Connection(url, {
    ...on,
    check: async () => {
      const verdict = await checkToken(token);
      return verdict !== 'refused' && verdict !== 'admin';
    },
  });
}
