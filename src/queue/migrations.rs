//! The schema's version, for every store: which of the binary's migrations a database has not
//! applied, the refusal to run against a schema with migrations pending (PostgreSQL, unless
//! `database.migrate_on_start`: many processes start at once there, and a deploy migrates
//! first, with `missive migrate`), and applying them.
//!
//! Depends on sqlx's migrator only.

use super::QueueError;
use sqlx::migrate::{Migrate, Migrator};
use sqlx::{Database, Pool};

/// The binary's migrations the database has not applied, as `version description`, and the
/// first migration the database has that the binary does not know, if any.
async fn pending<DB>(
    migrator: &Migrator,
    pool: &Pool<DB>,
) -> Result<(Vec<String>, Option<i64>), QueueError>
where
    DB: Database,
    DB::Connection: Migrate,
{
    let mut conn = pool.acquire().await?;
    // No table yet: nothing applied (the first migration creates it).
    let applied: Vec<i64> = match conn.list_applied_migrations().await {
        Ok(applied) => applied.into_iter().map(|m| m.version).collect(),
        Err(_) => Vec::new(),
    };
    let known: Vec<i64> = migrator.iter().map(|m| m.version).collect();
    let unknown = applied.iter().copied().find(|v| !known.contains(v));
    let pending = migrator
        .iter()
        .filter(|m| !m.migration_type.is_down_migration() && !applied.contains(&m.version))
        .map(|m| format!("{:04} {}", m.version, m.description))
        .collect();
    Ok((pending, unknown))
}

/// Refuses a database with migrations pending, or migrated by a newer binary.
pub(super) async fn check<DB>(migrator: &Migrator, pool: &Pool<DB>) -> Result<(), QueueError>
where
    DB: Database,
    DB::Connection: Migrate,
{
    let (pending, unknown) = pending(migrator, pool).await?;
    if let Some(version) = unknown {
        return Err(QueueError::MigratedByNewer(version));
    }
    if !pending.is_empty() {
        return Err(QueueError::MigrationsPending(pending.join(", ")));
    }
    Ok(())
}

/// Applies the pending migrations; returns them, as `version description`.
pub(super) async fn apply<DB>(
    migrator: &Migrator,
    pool: &Pool<DB>,
) -> Result<Vec<String>, QueueError>
where
    DB: Database,
    DB::Connection: Migrate,
    for<'a> &'a Pool<DB>: sqlx::Acquire<'a, Database = DB>,
{
    let (pending, unknown) = pending(migrator, pool).await?;
    if let Some(version) = unknown {
        return Err(QueueError::MigratedByNewer(version));
    }
    migrator.run(pool).await?;
    Ok(pending)
}
