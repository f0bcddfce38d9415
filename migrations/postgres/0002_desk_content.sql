-- The support desk's content, as in migrations/sqlite: knowledge-base articles, their
-- deflections, canned replies. Times are Unix milliseconds (BIGINT).

CREATE TABLE kb_articles (
    id         TEXT   PRIMARY KEY NOT NULL,
    title      TEXT   NOT NULL,
    body       TEXT   NOT NULL,
    lang       TEXT   NOT NULL,
    -- A JSON array of strings.
    tags       TEXT   NOT NULL,
    url        TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE INDEX kb_articles_updated_at ON kb_articles (updated_at);

-- One row, bumped by every article write in its transaction (which also serialises article
-- writes across nodes: the row lock is held to the commit). Nodes poll it to know when to
-- rebuild their search index.
CREATE TABLE kb_revision (
    id       INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    revision BIGINT  NOT NULL
);
INSERT INTO kb_revision (id, revision) VALUES (1, 0);

CREATE TABLE kb_deflections (
    id         BIGSERIAL PRIMARY KEY,
    article_id TEXT   NOT NULL,
    visitor_id TEXT,
    category   TEXT,
    ts         BIGINT NOT NULL
);

CREATE INDEX kb_deflections_ts ON kb_deflections (ts);

CREATE TABLE canned_replies (
    shortcut   TEXT   PRIMARY KEY NOT NULL,
    title      TEXT   NOT NULL,
    text       TEXT   NOT NULL,
    updated_at BIGINT NOT NULL
);
