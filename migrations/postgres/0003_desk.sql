-- The same as migrations/sqlite/0003_desk.sql, with PostgreSQL types.
-- The support desk (docs/desk.md). Conversations gain the team they are routed to, how often
-- they were reopened, and their desk figures (first-response clock, transfers, response times,
-- rate-limit refusals...) as one JSON object, written with every snapshot. Messages gain a kind:
-- 'note' marks a private note, which visitors never receive.
ALTER TABLE conversations ADD COLUMN team TEXT;
ALTER TABLE conversations ADD COLUMN reopened BIGINT NOT NULL DEFAULT 0;
ALTER TABLE conversations ADD COLUMN desk TEXT;
CREATE INDEX conversations_team ON conversations (team);
CREATE INDEX conversations_closed_at ON conversations (closed_at);

ALTER TABLE messages ADD COLUMN kind TEXT NOT NULL DEFAULT 'text' CHECK (kind IN ('text', 'note'));

-- Written once per conversation by the visitor's answer, never by snapshots, so a later
-- snapshot cannot overwrite it.
CREATE TABLE csat (
    conversation_id TEXT    PRIMARY KEY NOT NULL,
    score           BIGINT NOT NULL CHECK (score BETWEEN 1 AND 5),
    comment         TEXT,
    created_at      BIGINT NOT NULL
);

CREATE TABLE conversation_tags (
    conversation_id TEXT NOT NULL,
    tag             TEXT NOT NULL,
    PRIMARY KEY (conversation_id, tag)
);
CREATE INDEX conversation_tags_tag ON conversation_tags (tag);

CREATE TABLE follow_ups (
    conversation_id TEXT    PRIMARY KEY NOT NULL,
    due_at          BIGINT NOT NULL,
    note            TEXT,
    set_by          TEXT    NOT NULL,
    set_at          BIGINT NOT NULL
);
CREATE INDEX follow_ups_due_at ON follow_ups (due_at);
