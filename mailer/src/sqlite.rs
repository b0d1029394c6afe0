//! SQLite as every program here keeps it: WAL, a busy timeout, foreign
//! keys on, full sync, a statement cache; and a versioned schema
//! (`schema_version`) whose missing steps are applied in one IMMEDIATE
//! transaction together with the outbox and inbox tables of this crate.

use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use crate::outbox::OutboxError;

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error(
        "the database was written by a newer version (schema {found}, this program knows {known})"
    )]
    Newer { found: i64, known: i64 },
}

/// How many compiled statements a connection keeps: more than the
/// distinct statements a program runs (the stores use `prepare_cached`),
/// so a hot path never compiles SQL again.
const STATEMENT_CACHE: usize = 256;

/// WAL, `busy` as the busy timeout, foreign keys on, `synchronous = FULL`,
/// a statement cache of [`STATEMENT_CACHE`], stable query plans.
pub fn configure(conn: &Connection, busy: Duration) -> rusqlite::Result<()> {
    conn.busy_timeout(busy)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // Plans that do not depend on the values bound: otherwise SQLite marks
    // a statement whose plan a bound value might change, and compiles it
    // again each time rusqlite's cache hands it out (clearing bindings
    // expires it), which defeats the cache.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    // journal_mode answers with a row; in memory it stays "memory".
    let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL;")
}

/// Applies the steps of `migrations` of the schema part `part` (tables a
/// program adds to a database another crate's `migrate` laid out, with a
/// version of their own), in one IMMEDIATE transaction.
pub fn migrate_part(
    conn: &mut Connection,
    part: &str,
    migrations: &[&str],
) -> Result<(), SchemaError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_parts (
             part    TEXT PRIMARY KEY,
             version INTEGER NOT NULL
         ) STRICT;",
    )?;
    let found: i64 = tx
        .query_row(
            "SELECT version FROM schema_parts WHERE part = ?1",
            [part],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0);
    let known = i64::try_from(migrations.len()).unwrap_or(i64::MAX);
    if found > known {
        return Err(SchemaError::Newer { found, known });
    }
    for step in migrations.iter().skip(usize::try_from(found).unwrap_or(0)) {
        tx.execute_batch(step)?;
    }
    tx.execute(
        "INSERT INTO schema_parts (part, version) VALUES (?1, ?2)
         ON CONFLICT (part) DO UPDATE SET version = ?2",
        rusqlite::params![part, known],
    )?;
    tx.commit()?;
    Ok(())
}

/// Applies the steps of `migrations` (one per version; a shipped step is
/// never edited) that the database lacks, and the outbox and inbox tables.
pub fn migrate(conn: &mut Connection, migrations: &[&str]) -> Result<(), SchemaError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (
             id      INTEGER PRIMARY KEY CHECK (id = 1),
             version INTEGER NOT NULL
         ) STRICT;",
    )?;
    let found: i64 = tx
        .query_row("SELECT version FROM schema_version WHERE id = 1", [], |r| {
            r.get(0)
        })
        .optional()?
        .unwrap_or(0);
    let known = i64::try_from(migrations.len()).unwrap_or(i64::MAX);
    if found > known {
        return Err(SchemaError::Newer { found, known });
    }
    for step in migrations.iter().skip(usize::try_from(found).unwrap_or(0)) {
        tx.execute_batch(step)?;
    }
    tx.execute(
        "INSERT INTO schema_version (id, version) VALUES (1, ?1)
         ON CONFLICT (id) DO UPDATE SET version = ?1",
        [known],
    )?;
    crate::outbox::migrate(&tx)?;
    crate::inbox::migrate(&tx)?;
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests

    use rusqlite::StatementStatus;

    use super::*;

    #[test]
    fn a_cached_statement_is_compiled_once_whatever_is_bound() {
        let conn = Connection::open_in_memory().unwrap();
        configure(&conn, Duration::from_secs(1)).unwrap();
        conn.execute_batch(
            "CREATE TABLE t (a INTEGER, b INTEGER, c INTEGER);
             CREATE INDEX t_b ON t (a, b - c) WHERE c = 0;
             CREATE INDEX t_c ON t (c);",
        )
        .unwrap();
        // An equality the planner may also weigh as a filter, which without
        // stable plans marks the statement for a new plan on every binding.
        let sql = "SELECT a FROM t WHERE a = ?1 AND c = 0 AND b - c >= ?2 ORDER BY b - c LIMIT 1";
        for i in 0..5 {
            let mut stmt = conn.prepare_cached(sql).unwrap();
            let _: Option<i64> = stmt.query_row([1, i], |r| r.get(0)).optional().unwrap();
        }
        let stmt = conn.prepare_cached(sql).unwrap();
        assert_eq!(stmt.get_status(StatementStatus::RePrepare), 0);
    }
}
