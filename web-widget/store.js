// What the widget remembers between page loads, in the host page's localStorage under one key
// per Parley server: the visitor's id and token (so a reload is the same visitor), the open
// conversation with the last seq seen and the last seq read (so a reload resumes it and knows
// what is unread), the outbox (messages written but not yet acknowledged, so a reload
// while offline does not lose them), and a satisfaction survey not answered yet.
//
// Storage can be missing or throw (private modes, blocked cookies, sandboxed frames): the
// widget then works for the life of the page only.

const EMPTY = () => ({ visitor: null, conv: null, outbox: [], survey: null });

export class Store {
  constructor(key) {
    this.key = key;
    this.data = EMPTY();
    try {
      const saved = JSON.parse(localStorage.getItem(key) || 'null');
      if (saved && typeof saved === 'object') {
        this.data = { ...this.data, ...saved };
        if (!Array.isArray(this.data.outbox)) this.data.outbox = [];
      }
    } catch {
      // Unreadable or unavailable: start afresh.
    }
  }

  get visitor() { return this.data.visitor; }
  get conv() { return this.data.conv; }
  get outbox() { return this.data.outbox; }
  get survey() { return typeof this.data.survey === 'string' ? this.data.survey : null; }

  setVisitor(visitor) {
    this.data.visitor = visitor;
    this.save();
  }

  /** `conv` is `{id, lastSeq, readSeq}` or null when there is no open conversation. */
  setConv(conv) {
    this.data.conv = conv;
    this.save();
  }

  setOutbox(outbox) {
    this.data.outbox = outbox;
    this.save();
  }

  /** The conversation id of a survey shown but not answered, or null. */
  setSurvey(id) {
    this.data.survey = id;
    this.save();
  }

  /** Forgets everything: another visitor (identify with a new id) or credentials refused. */
  clear() {
    this.data = EMPTY();
    this.save();
  }

  save() {
    try {
      localStorage.setItem(this.key, JSON.stringify(this.data));
    } catch {
      // Quota or storage disabled: the page keeps working, a reload starts afresh.
    }
  }
}
