-- Transcripts in PostgreSQL: the same shape as the SQLite schema (migrations/sqlite), so that
-- several Parley nodes share one store. Times are Unix milliseconds (BIGINT); ids are text
-- (conversation ids are UUIDv7, so they sort by creation time).

CREATE TABLE conversations (
    id           TEXT    PRIMARY KEY NOT NULL,
    visitor_id   TEXT    NOT NULL,
    visitor_name TEXT,
    category     TEXT    NOT NULL,
    state        TEXT    NOT NULL CHECK (state IN ('queued', 'assigned', 'closed')),
    agent_id     TEXT,
    created_at   BIGINT  NOT NULL,
    assigned_at  BIGINT,
    closed_at    BIGINT,
    resolved     BOOLEAN,
    close_reason TEXT,
    last_seq     BIGINT  NOT NULL,
    page         TEXT,
    -- A JSON object of host-site key/values, as the visitor's widget sent it.
    metadata     TEXT
);

CREATE INDEX conversations_state      ON conversations (state);
CREATE INDEX conversations_agent_id   ON conversations (agent_id);
CREATE INDEX conversations_category   ON conversations (category);
CREATE INDEX conversations_created_at ON conversations (created_at);

CREATE TABLE messages (
    conversation_id TEXT    NOT NULL,
    seq             BIGINT  NOT NULL,
    sender_role     TEXT    NOT NULL CHECK (sender_role IN ('visitor', 'agent', 'system')),
    sender_id       TEXT    NOT NULL,
    sender_name     TEXT,
    text            TEXT    NOT NULL,
    ts              BIGINT  NOT NULL,
    cid             TEXT,
    PRIMARY KEY (conversation_id, seq)
);
