//! Bringing a store's schema up to date at start-up, saying so when there is work to do.
//!
//! A migration that rewrites a table (0004 copies every message once) takes seconds per million
//! messages, and the node does not answer meanwhile (connections wait in the accept queue). A
//! start that is slow for this reason logs what it applies, and how long it took, instead of
//! looking hung.

use std::future::Future;
use std::time::Instant;

use sqlx::migrate::{Migrate, MigrateError, Migrator};

use super::store::StoreError;

/// Awaits `run` (the migrator's `run` on the store's pool), which applies `pending` (from
/// [`pending`]), logging before and after when there is anything to apply.
pub(crate) async fn apply(
    pending: Vec<String>,
    run: impl Future<Output = Result<(), MigrateError>>,
) -> Result<(), StoreError> {
    let started = Instant::now();
    if !pending.is_empty() {
        tracing::info!(
            pending = %pending.join(", "),
            "migrating the transcript store; a large database takes a few seconds per million \
             messages (docs/operations.md, Upgrading)"
        );
    }
    run.await
        .map_err(|e| StoreError::Unavailable(format!("migrating the schema: {e}")))?;
    if !pending.is_empty() {
        tracing::info!(
            applied = pending.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "transcript store migrated"
        );
    }
    Ok(())
}

/// The migrations `migrator` would apply, by description. On a new database the bookkeeping
/// table does not exist yet and reading it fails: then every migration is pending. (Not created
/// here: the migrator creates it under its lock, which matters when nodes start together.)
pub(crate) async fn pending<C: Migrate + ?Sized>(migrator: &Migrator, conn: &mut C) -> Vec<String> {
    let applied: Vec<i64> = match conn.list_applied_migrations().await {
        Ok(applied) => applied.into_iter().map(|m| m.version).collect(),
        Err(_) => Vec::new(),
    };
    migrator
        .iter()
        .filter(|m| !m.migration_type.is_down_migration() && !applied.contains(&m.version))
        .map(|m| format!("{} {}", m.version, m.description))
        .collect()
}
