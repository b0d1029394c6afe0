//! The issuer's database: one SQLite file in WAL mode, shared by the mail
//! watcher (which hands mail to [`crate::handler`]), the outbox sender and
//! the operator's commands, each on its own connection.
//!
//! The schema is versioned: `schema_version` holds the version, and
//! [`migrate`] applies the missing steps of [`MIGRATIONS`] in one
//! transaction each. Tables are `STRICT` (a wrong type is an error, not a
//! conversion) and every statement names its columns.
//!
//! Amounts are `u64` in the protocol and `INTEGER` (i64) here: the
//! conversions are checked ([`to_sql_amount`], [`from_sql_amount`]), and
//! the issuer never issues a note whose value does not fit.

use std::path::Path;
use std::time::Duration;

use mailer::crypto::{Digest, PublicKey};
use mailer::money::{Amount, Timestamp};
use rusqlite::{params, Connection, OptionalExtension};

use crate::error::IssuerError;

/// How long a statement waits for another connection's write lock.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The schema, one step per version. Never edit a step that has shipped:
/// add one.
pub const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "
CREATE TABLE issuer_meta (
    id                    INTEGER PRIMARY KEY CHECK (id = 1),
    currency              TEXT    NOT NULL,
    issuer_key            BLOB    NOT NULL,
    address               TEXT    NOT NULL,
    note_lifetime_secs    INTEGER NOT NULL CHECK (note_lifetime_secs > 0),
    license_lifetime_secs INTEGER NOT NULL CHECK (license_lifetime_secs > 0),
    code_lifetime_secs    INTEGER NOT NULL CHECK (code_lifetime_secs > 0),
    denominations         TEXT    NOT NULL,
    revocation_version    INTEGER NOT NULL CHECK (revocation_version >= 0),
    revocation_issued_at  INTEGER NOT NULL,
    created_at            INTEGER NOT NULL
) STRICT;

CREATE TABLE accounts (
    name       TEXT    PRIMARY KEY,
    balance    INTEGER NOT NULL CHECK (balance >= 0),
    created_at INTEGER NOT NULL
) STRICT;

-- Every change of a balance, so that the audit can recompute each one.
CREATE TABLE ledger (
    entry     INTEGER PRIMARY KEY,
    account   TEXT    NOT NULL REFERENCES accounts (name),
    delta     INTEGER NOT NULL,
    kind      TEXT    NOT NULL
              CHECK (kind IN ('operator-credit', 'withdrawal', 'deposit', 'refund')),
    reference BLOB,
    memo      TEXT,
    at        INTEGER NOT NULL
) STRICT;
CREATE INDEX ledger_account ON ledger (account);

-- One-time codes, stored hashed: the code itself is shown once.
CREATE TABLE enrollment_codes (
    code_hash  BLOB    PRIMARY KEY,
    account    TEXT    NOT NULL REFERENCES accounts (name),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER,
    used_by    BLOB
) STRICT;

CREATE TABLE account_keys (
    account_key BLOB    PRIMARY KEY,
    account     TEXT    NOT NULL REFERENCES accounts (name),
    enrolled_at INTEGER NOT NULL,
    request     BLOB    NOT NULL
) STRICT;
CREATE INDEX account_keys_account ON account_keys (account);

CREATE TABLE licenses (
    license_id  BLOB    PRIMARY KEY,
    payment_key BLOB    NOT NULL,
    auth_key    BLOB    NOT NULL,
    issued_at   INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    envelope    BLOB    NOT NULL
) STRICT;
CREATE INDEX licenses_payment_key ON licenses (payment_key);

-- Notes issued. link_count bounds the links accepted per note.
CREATE TABLE notes (
    note_id    BLOB    PRIMARY KEY,
    value      INTEGER NOT NULL CHECK (value > 0),
    holder     BLOB    NOT NULL,
    issued_at  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    account    TEXT    NOT NULL REFERENCES accounts (name),
    request    BLOB    NOT NULL,
    link_count INTEGER NOT NULL CHECK (link_count >= 0),
    envelope   BLOB    NOT NULL
) STRICT;

-- Every state seen: the issuance (parent NULL) or a link. `spent` is what
-- the links seen out of it add up to (saturating); `refunded` what was paid
-- back to its holder after a revocation; `good` whether it is backed:
-- its parent is good and, when it was first seen, its parent's links and
-- refunds did not exceed the parent's value.
CREATE TABLE states (
    state_id      BLOB    PRIMARY KEY,
    note_id       BLOB    NOT NULL REFERENCES notes (note_id),
    parent        BLOB,
    holder        BLOB    NOT NULL,
    value         INTEGER NOT NULL CHECK (value > 0),
    spent         INTEGER NOT NULL CHECK (spent >= 0),
    refunded      INTEGER NOT NULL CHECK (refunded >= 0),
    good          INTEGER NOT NULL CHECK (good IN (0, 1)),
    link          BLOB,
    first_seen_at INTEGER NOT NULL,
    CHECK ((parent IS NULL) = (link IS NULL))
) STRICT;
CREATE INDEX states_note ON states (note_id);
CREATE INDEX states_parent ON states (parent);
CREATE INDEX states_holder ON states (holder);

-- Deposit links credited, once each.
CREATE TABLE credits (
    state_id BLOB    PRIMARY KEY REFERENCES states (state_id),
    account  TEXT    NOT NULL REFERENCES accounts (name),
    amount   INTEGER NOT NULL CHECK (amount > 0),
    request  BLOB    NOT NULL,
    at       INTEGER NOT NULL
) STRICT;

-- Requests decided, with the signed reply, answered again on a replay.
CREATE TABLE requests (
    request_id BLOB    PRIMARY KEY,
    kind       TEXT    NOT NULL,
    signer     BLOB    NOT NULL,
    reply      BLOB    NOT NULL,
    resends    INTEGER NOT NULL CHECK (resends >= 0),
    at         INTEGER NOT NULL
) STRICT;

CREATE TABLE overspends (
    proof_id BLOB    PRIMARY KEY,
    guilty   BLOB    NOT NULL,
    note_id  BLOB    NOT NULL REFERENCES notes (note_id),
    state_id BLOB    NOT NULL REFERENCES states (state_id),
    proof    BLOB    NOT NULL,
    at       INTEGER NOT NULL
) STRICT;
CREATE INDEX overspends_state ON overspends (state_id);
CREATE INDEX overspends_guilty ON overspends (guilty);

CREATE TABLE revocations (
    payment_key BLOB    PRIMARY KEY,
    revoked_at  INTEGER NOT NULL,
    reason      TEXT    NOT NULL CHECK (reason IN ('overspend', 'operator')),
    proof_id    BLOB,
    note        TEXT,
    version     INTEGER NOT NULL,
    CHECK ((reason = 'overspend') = (proof_id IS NOT NULL))
) STRICT;

CREATE TABLE refunds (
    refund      INTEGER PRIMARY KEY,
    payment_key BLOB    NOT NULL,
    account     TEXT    NOT NULL REFERENCES accounts (name),
    amount      INTEGER NOT NULL CHECK (amount > 0),
    at          INTEGER NOT NULL
) STRICT;
CREATE TABLE refund_states (
    refund   INTEGER NOT NULL REFERENCES refunds (refund),
    state_id BLOB    NOT NULL REFERENCES states (state_id),
    amount   INTEGER NOT NULL CHECK (amount > 0),
    PRIMARY KEY (refund, state_id)
) STRICT;
",
    // 2: one index instead of two on `states` for what clearing looks up
    // by note and parent (the links out of a state, only on an overspend
    // or a redeposit). Every new state is an entry at a random place in
    // each of its indexes, and each such entry costs a page written to the
    // WAL and again to the database at the checkpoint.
    "
DROP INDEX states_note;
DROP INDEX states_parent;
CREATE INDEX states_note_parent ON states (note_id, parent);
",
];

/// The schema version this program writes.
pub fn schema_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// Opens (creating if missing) the database file: WAL, a busy timeout,
/// foreign keys on, and the schema migrated (with the outbox and inbox
/// tables of `mailer`).
pub fn open(path: &Path) -> Result<Connection, IssuerError> {
    let mut conn = Connection::open(path)?;
    configure(&conn)?;
    migrate(&mut conn)?;
    Ok(conn)
}

/// A private in-memory database with the schema (for tests and dry runs).
pub fn open_in_memory() -> Result<Connection, IssuerError> {
    let mut conn = Connection::open_in_memory()?;
    configure(&conn)?;
    migrate(&mut conn)?;
    Ok(conn)
}

fn configure(conn: &Connection) -> Result<(), IssuerError> {
    Ok(mailer::sqlite::configure(conn, BUSY_TIMEOUT)?)
}

/// Brings the schema up to date.
pub fn migrate(conn: &mut Connection) -> Result<(), IssuerError> {
    use mailer::sqlite::SchemaError;
    mailer::sqlite::migrate(conn, MIGRATIONS).map_err(|e| match e {
        SchemaError::Newer { found, known } => IssuerError::NewerSchema { found, known },
        SchemaError::Db(e) => IssuerError::from(e),
        SchemaError::Outbox(e) => IssuerError::from(e),
    })
}

// Conversions between protocol types and SQL values. Every read of a value
// that could be out of range goes through one of these, so a damaged row is
// an error and never a wrong number.

pub(crate) fn to_sql_amount(a: Amount) -> Result<i64, IssuerError> {
    i64::try_from(a.minor_units()).map_err(|_| {
        IssuerError::BadAmount(format!(
            "{} minor units is more than this issuer can hold",
            a.minor_units()
        ))
    })
}

pub(crate) fn from_sql_amount(v: i64) -> Result<Amount, IssuerError> {
    u64::try_from(v)
        .map(Amount::new)
        .map_err(|_| IssuerError::Corrupt(format!("negative amount {v}")))
}

pub(crate) fn to_sql_time(t: Timestamp) -> i64 {
    i64::try_from(t.unix()).unwrap_or(i64::MAX)
}

pub(crate) fn from_sql_time(v: i64) -> Timestamp {
    Timestamp::from_unix(u64::try_from(v).unwrap_or(0))
}

pub(crate) fn key_from_sql(v: &[u8]) -> Result<PublicKey, IssuerError> {
    PublicKey::from_slice(v).ok_or_else(|| IssuerError::Corrupt("a key is not 32 bytes".into()))
}

pub(crate) fn digest_from_sql(v: &[u8]) -> Result<Digest, IssuerError> {
    Digest::from_slice(v).ok_or_else(|| IssuerError::Corrupt("an id is not 32 bytes".into()))
}

/// Writes the issuer's identity and policy into a new database.
pub(crate) fn init_meta(
    conn: &Connection,
    issuer: &crate::Issuer,
    now: Timestamp,
) -> Result<(), IssuerError> {
    let c = issuer.config();
    let denominations: Vec<String> = c
        .denominations
        .iter()
        .map(|d| d.minor_units().to_string())
        .collect();
    let secs = |s: u64| i64::try_from(s).unwrap_or(i64::MAX);
    conn.execute(
        "INSERT INTO issuer_meta (id, currency, issuer_key, address, note_lifetime_secs,
             license_lifetime_secs, code_lifetime_secs, denominations, revocation_version,
             revocation_issued_at, created_at)
         VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8, ?8)",
        params![
            c.currency.as_str(),
            issuer.public_key().as_bytes().as_slice(),
            c.address,
            secs(c.note_lifetime_secs),
            secs(c.license_lifetime_secs),
            secs(c.code_lifetime_secs),
            denominations.join(","),
            to_sql_time(now),
        ],
    )?;
    Ok(())
}

/// Reads the issuer's policy and public key from the database.
pub(crate) fn load_meta(
    conn: &Connection,
) -> Result<Option<(PublicKey, crate::IssuerConfig)>, IssuerError> {
    let row = conn
        .query_row(
            "SELECT currency, issuer_key, address, note_lifetime_secs, license_lifetime_secs,
                    code_lifetime_secs, denominations
             FROM issuer_meta WHERE id = 1",
            [],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, String>(6)?,
                ))
            },
        )
        .optional()?;
    let Some((currency, key, address, note, license, code, denominations)) = row else {
        return Ok(None);
    };
    let corrupt = |what: &str| IssuerError::Corrupt(format!("issuer_meta.{what}"));
    let secs = |v: i64, what: &str| u64::try_from(v).map_err(|_| corrupt(what));
    let denominations = denominations
        .split(',')
        .map(|d| d.parse::<u64>().map(Amount::new))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| corrupt("denominations"))?;
    let config = crate::IssuerConfig {
        currency: currency.parse().map_err(|_| corrupt("currency"))?,
        address,
        note_lifetime_secs: secs(note, "note_lifetime_secs")?,
        license_lifetime_secs: secs(license, "license_lifetime_secs")?,
        code_lifetime_secs: secs(code, "code_lifetime_secs")?,
        denominations,
    };
    Ok(Some((key_from_sql(&key)?, config)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn migrations_apply_once_and_refuse_newer_schemas() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut conn = open(&path).unwrap();
        migrate(&mut conn).unwrap();
        let v: i64 = conn
            .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, schema_version());
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        conn.execute("UPDATE schema_version SET version = 99", [])
            .unwrap();
        drop(conn);
        assert!(matches!(
            open(&path),
            Err(IssuerError::NewerSchema { found: 99, .. })
        ));
    }

    #[test]
    fn strict_tables_refuse_wrong_types_and_negative_balances() {
        let conn = open_in_memory().unwrap();
        assert!(conn
            .execute(
                "INSERT INTO accounts (name, balance, created_at) VALUES ('a', 'ten', 0)",
                []
            )
            .is_err());
        assert!(conn
            .execute(
                "INSERT INTO accounts (name, balance, created_at) VALUES ('a', -1, 0)",
                []
            )
            .is_err());
    }
}
