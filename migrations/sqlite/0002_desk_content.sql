-- The support desk's content: knowledge-base articles, their deflections, canned replies.
-- Times are Unix milliseconds; ids are text (article ids are UUIDv7).

CREATE TABLE kb_articles (
    id         TEXT    PRIMARY KEY NOT NULL,
    title      TEXT    NOT NULL,
    body       TEXT    NOT NULL,
    -- A language tag such as "en", "zh" or "zh-tw" (lower case).
    lang       TEXT    NOT NULL,
    -- A JSON array of strings.
    tags       TEXT    NOT NULL,
    url        TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE INDEX kb_articles_updated_at ON kb_articles (updated_at);

-- One row, bumped by every article write in the same transaction: a node compares it with the
-- revision its search index reflects to know whether another node changed the articles. A counter
-- rather than max(updated_at): clocks of different nodes disagree, and a delete leaves no row.
CREATE TABLE kb_revision (
    id       INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    revision INTEGER NOT NULL
);
INSERT INTO kb_revision (id, revision) VALUES (1, 0);

-- One row per "this article solved my question". No foreign key: the counts of an article stay
-- in the reports after it is deleted.
CREATE TABLE kb_deflections (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    article_id TEXT    NOT NULL,
    visitor_id TEXT,
    category   TEXT,
    ts         INTEGER NOT NULL
);

CREATE INDEX kb_deflections_ts ON kb_deflections (ts);

CREATE TABLE canned_replies (
    -- 1 to 40 characters of a-z, 0-9, - and _; typed as "/shortcut" in the console.
    shortcut   TEXT    PRIMARY KEY NOT NULL,
    title      TEXT    NOT NULL,
    text       TEXT    NOT NULL,
    updated_at INTEGER NOT NULL
);
