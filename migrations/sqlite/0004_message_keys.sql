-- Messages are keyed by a small integer per conversation instead of the conversation's 36-character
-- id. The primary-key index is where a batch of messages spends most of SQLite's time: one
-- insert per message, into as many places as there are open chats. With the integer key,
-- SQLite's CPU per stored message fell by a fifth to a third (docs/benchmarks.md, 2b "Integer
-- conversation keys"). The id lives once per conversation, in conversation_keys, and readers
-- see the old shape through the conversation_messages view.
--
-- On an existing database this copies every message once, at the first start of this version.

-- One row per conversation that has messages. INTEGER PRIMARY KEY is the rowid, so the key never
-- changes (not even on VACUUM); the id is unique, so a key is found by id and assigned once.
CREATE TABLE conversation_keys (
    key INTEGER PRIMARY KEY,
    id  TEXT    NOT NULL UNIQUE
);

INSERT INTO conversation_keys (id) SELECT DISTINCT conversation_id FROM messages ORDER BY 1;

CREATE TABLE messages_by_key (
    conversation_key INTEGER NOT NULL,
    seq              INTEGER NOT NULL,
    sender_role      TEXT    NOT NULL CHECK (sender_role IN ('visitor', 'agent', 'system')),
    sender_id        TEXT    NOT NULL,
    sender_name      TEXT,
    text             TEXT    NOT NULL,
    ts               INTEGER NOT NULL,
    cid              TEXT,
    kind             TEXT    NOT NULL DEFAULT 'text' CHECK (kind IN ('text', 'note')),
    -- As before: makes a retried batch idempotent and serves every read (by conversation and a
    -- range of seq).
    PRIMARY KEY (conversation_key, seq)
);

INSERT INTO messages_by_key
SELECT k.key, m.seq, m.sender_role, m.sender_id, m.sender_name, m.text, m.ts, m.cid, m.kind
FROM messages m JOIN conversation_keys k ON k.id = m.conversation_id;

DROP TABLE messages;
ALTER TABLE messages_by_key RENAME TO messages;

-- Messages with their conversation's id, as every reader wants them. SQLite flattens the join
-- into the query, so a read by id is one lookup in conversation_keys and a range of the key.
CREATE VIEW conversation_messages AS
SELECT k.id AS conversation_id, m.seq, m.sender_role, m.sender_id, m.sender_name, m.text, m.ts,
       m.cid, m.kind
FROM messages m JOIN conversation_keys k ON k.key = m.conversation_key;
