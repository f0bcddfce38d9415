-- Whether the single node that last served this database stopped cleanly, with every message it
-- handed out stored. A node starts by marking its run as not clean and marks it clean at the end
-- of a complete drain; finding it not clean at start-up means the previous process crashed (or
-- its drain gave up), so messages may have been delivered with sequence numbers that were never
-- stored. The node then continues each open conversation past all of them, so no number is
-- given to two messages (docs/architecture.md, "Guarantees").
CREATE TABLE node_runs (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    clean      INTEGER NOT NULL,
    changed_at INTEGER NOT NULL
);
