//! The [`super::store::ContentStore`] in PostgreSQL, shared by several nodes: the same tables,
//! semantics and SQL as in SQLite (migrations/postgres; the queries are in [`super::store`]),
//! with one difference, below.
//!
//! Concurrency between nodes: every article write first bumps the `kb_revision` row, whose lock
//! is then held to the commit, so article writes are serialised and the article bound is exact.
//! A new canned reply has no such row to lock (in SQLite, the transaction's first update takes
//! the database's one write lock); it takes [`CANNED_WRITE_LOCK`] before counting instead, for
//! the same reason. Reads take no lock.

/// Conflicts with itself, not with reads: writers of canned replies take turns, so the bound
/// they count against holds across nodes.
pub(crate) const CANNED_WRITE_LOCK: &str = "LOCK TABLE canned_replies IN SHARE ROW EXCLUSIVE MODE";
