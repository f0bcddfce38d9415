// What the console keeps in this tab's sessionStorage: the agent token (never localStorage: a
// token on a shared machine should not outlive the tab), and per conversation the draft and
// how far the agent has read, so a reload keeps drafts and unread counts. Storage can be
// missing or throw (private modes): the console then works for the life of the page.

const KEY = 'parley.console';

function load() {
  try {
    const data = JSON.parse(sessionStorage.getItem(KEY) || 'null');
    if (data && typeof data === 'object') return data;
  } catch {
    // Unreadable: start afresh.
  }
  return {};
}

const data = { token: null, drafts: {}, read: {}, ...load() };

function save() {
  try {
    sessionStorage.setItem(KEY, JSON.stringify(data));
  } catch {
    // Quota or disabled storage: nothing to do.
  }
}

export const session = {
  get token() { return typeof data.token === 'string' ? data.token : null; },
  set token(token) { data.token = token; save(); },

  draft(id) { return typeof data.drafts[id] === 'string' ? data.drafts[id] : ''; },
  setDraft(id, text) {
    if (text) data.drafts[id] = text;
    else delete data.drafts[id];
    save();
  },

  readSeq(id) { return Number.isInteger(data.read[id]) ? data.read[id] : 0; },
  setReadSeq(id, seq) { data.read[id] = seq; save(); },

  /** Forgets a closed conversation's draft and read mark. */
  forget(id) {
    delete data.drafts[id];
    delete data.read[id];
    save();
  },

  /** Sign-out: everything goes. */
  clear() {
    data.token = null;
    data.drafts = {};
    data.read = {};
    save();
  },
};
