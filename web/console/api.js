// The REST calls the console makes beside its socket (docs/desk.md, docs/operations.md): the
// desk's teams and agents, canned replies, a conversation's tags, follow-up and survey answer,
// and the follow-ups due. The agent token goes in the Authorization header; an error answer
// becomes an `ApiError` whose `message` is the server's (always fit to show: Parley never puts
// internal details in it).

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }
}

export class Api {
  constructor(token) {
    this.token = token;
  }

  async request(method, path, body) {
    const headers = { authorization: `Bearer ${this.token}` };
    if (body !== undefined) headers['content-type'] = 'application/json';
    let res;
    try {
      res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: 'no-store' });
    } catch {
      throw new ApiError(0, 'unreachable', 'Parley cannot be reached');
    }
    if (res.status === 204) return null;
    const type = res.headers.get('content-type') || '';
    const data = type.includes('json') ? await res.json().catch(() => null) : await res.text();
    if (!res.ok) throw new ApiError(res.status, data?.error?.code || 'error', data?.error?.message);
    return data;
  }

  get(path) { return this.request('GET', path); }
  put(path, body) { return this.request('PUT', path, body); }
  post(path, body) { return this.request('POST', path, body ?? {}); }
  delete(path) { return this.request('DELETE', path); }

  /** Teams, agents with their status, the escalation team, the survey mode (`GET /v1/desk`). */
  directory() { return this.get('/v1/desk'); }
  canned() { return this.get('/v1/canned').then((r) => r.replies || []); }
  expand(shortcut, vars) { return this.post(`/v1/canned/${encodeURIComponent(shortcut)}/expand`, vars); }
  /** The stored conversation with its messages, tags, follow-up and survey answer. */
  conversation(id) { return this.get(`/v1/conversations/${encodeURIComponent(id)}`); }
  transcript(id) { return this.get(`/v1/conversations/${encodeURIComponent(id)}/transcript`); }
  setTags(id, tags) { return this.put(`/v1/conversations/${encodeURIComponent(id)}/tags`, { tags }); }
  setFollowUp(id, dueAt, note) {
    return this.put(`/v1/conversations/${encodeURIComponent(id)}/follow-up`, note ? { due_at: dueAt, note } : { due_at: dueAt });
  }
  clearFollowUp(id) { return this.delete(`/v1/conversations/${encodeURIComponent(id)}/follow-up`); }
  followUps() { return this.get('/v1/follow-ups'); }
  queued() { return this.get('/v1/conversations?status=queued&limit=200').then((r) => r.conversations || []); }
}
