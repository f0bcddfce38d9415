-- Transcripts: one row per conversation (its latest snapshot) and one per message.
-- Times are Unix milliseconds; booleans are 0/1; ids are text (conversation ids are UUIDv7, so
-- they sort by creation time).

CREATE TABLE conversations (
    id           TEXT    PRIMARY KEY NOT NULL,
    visitor_id   TEXT    NOT NULL,
    visitor_name TEXT,
    category     TEXT    NOT NULL,
    state        TEXT    NOT NULL CHECK (state IN ('queued', 'assigned', 'closed')),
    agent_id     TEXT,
    created_at   INTEGER NOT NULL,
    assigned_at  INTEGER,
    closed_at    INTEGER,
    resolved     INTEGER,
    close_reason TEXT,
    last_seq     INTEGER NOT NULL,
    page         TEXT,
    -- A JSON object of host-site key/values, as the visitor's widget sent it.
    metadata     TEXT
);

-- The REST listing filters on each of these; start-up restores by state.
CREATE INDEX conversations_state      ON conversations (state);
CREATE INDEX conversations_agent_id   ON conversations (agent_id);
CREATE INDEX conversations_category   ON conversations (category);
CREATE INDEX conversations_created_at ON conversations (created_at);

-- The primary key is what makes a retried batch idempotent (inserts use ON CONFLICT DO NOTHING)
-- and also serves every read, which is always by conversation and a range of seq.
CREATE TABLE messages (
    conversation_id TEXT    NOT NULL,
    seq             INTEGER NOT NULL,
    sender_role     TEXT    NOT NULL CHECK (sender_role IN ('visitor', 'agent', 'system')),
    sender_id       TEXT    NOT NULL,
    sender_name     TEXT,
    text            TEXT    NOT NULL,
    ts              INTEGER NOT NULL,
    cid             TEXT,
    PRIMARY KEY (conversation_id, seq)
);
