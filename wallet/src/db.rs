//! The wallet's SQLite file: WAL, full sync, STRICT tables, migrations;
//! with the outbox and inbox tables of `mailer`.
//!
//! - `meta`: the wallet's own address and how its secrets are sealed.
//! - `issuers`: the pinned issuer of each currency, and the newest
//!   revocation list received from it.
//! - `secrets`: every secret key, sealed by the vault.
//! - `accounts`: the account key bound to an account at each issuer.
//! - `cards`: a card per currency (payment and authentication keys, the
//!   license); `locked_by` names the payment that holds the card.
//! - `licenses`: licenses of other cards seen in payments (to show the
//!   issuer with later payments and deposits of the same notes).
//! - `notes`: every note state the wallet held; `spent` is what this
//!   wallet paid out of it, so the rest (`held - spent`) is spendable.
//! - `note_totals`: what the spendable notes of each currency hold, kept
//!   by triggers on `notes`.
//! - `ops`: every operation as a durable state machine (the history);
//!   `before_env` is an envelope that travels ahead of the request.
//! - `agents`: the pinned key of each exchange agent, by address.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use crate::error::WalletError;

const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) const MIGRATIONS: &[&str] = &["
CREATE TABLE meta (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    address     TEXT NOT NULL,
    kdf         TEXT NOT NULL,          -- 'none' or 'argon2id'
    salt        BLOB,
    check_blob  BLOB,                   -- a known value, sealed: proves the passphrase
    created_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE issuers (
    currency            TEXT PRIMARY KEY,
    address             TEXT NOT NULL,
    key                 BLOB NOT NULL,
    revocations         BLOB,          -- the newest signed list (envelope bytes)
    revocation_version  INTEGER NOT NULL DEFAULT 0,
    revocations_asked_at INTEGER NOT NULL DEFAULT 0,
    added_at            INTEGER NOT NULL
) STRICT;

CREATE TABLE secrets (
    id      INTEGER PRIMARY KEY,
    sealed  BLOB NOT NULL
) STRICT;

CREATE TABLE accounts (
    currency    TEXT PRIMARY KEY REFERENCES issuers (currency),
    secret      INTEGER NOT NULL REFERENCES secrets (id),
    public      BLOB NOT NULL,
    name        TEXT,                   -- known once enrolled
    state       TEXT NOT NULL CHECK (state IN ('enrolling', 'enrolled', 'failed')),
    balance     INTEGER,                -- as the issuer last said
    op          INTEGER NOT NULL
) STRICT;

CREATE TABLE cards (
    id              INTEGER PRIMARY KEY,
    currency        TEXT NOT NULL REFERENCES issuers (currency),
    payment_public  BLOB NOT NULL UNIQUE,
    auth_public     BLOB NOT NULL,
    payment_secret  INTEGER NOT NULL REFERENCES secrets (id),
    auth_secret     INTEGER NOT NULL REFERENCES secrets (id),
    license         BLOB,               -- the signed license (envelope bytes)
    expires_at      INTEGER,
    state           TEXT NOT NULL CHECK (state IN ('licensing', 'active', 'failed', 'revoked')),
    locked_by       INTEGER,            -- the op whose payment is unfinished
    created_at      INTEGER NOT NULL
) STRICT;
CREATE UNIQUE INDEX cards_one_per_currency ON cards (currency) WHERE state IN ('licensing', 'active');

CREATE TABLE licenses (
    payment_public  BLOB NOT NULL,
    license_id      BLOB NOT NULL,
    license         BLOB NOT NULL,
    PRIMARY KEY (payment_public, license_id)
) STRICT;

CREATE TABLE notes (
    state_id    BLOB PRIMARY KEY,
    note_id     BLOB NOT NULL,
    currency    TEXT NOT NULL,
    card        INTEGER NOT NULL REFERENCES cards (id),
    held        INTEGER NOT NULL CHECK (held > 0),
    spent       INTEGER NOT NULL DEFAULT 0 CHECK (spent >= 0 AND spent <= held),
    expires_at  INTEGER NOT NULL,
    note        BLOB NOT NULL,          -- CBOR of the note up to this state
    state       TEXT NOT NULL CHECK (state IN ('spendable', 'gone')),
    op          INTEGER NOT NULL,       -- the op that brought it
    acquired_at INTEGER NOT NULL
) STRICT;
CREATE INDEX notes_spendable ON notes (currency, state);

CREATE TABLE ops (
    id          INTEGER PRIMARY KEY,
    kind        TEXT NOT NULL,
    currency    TEXT NOT NULL,
    amount      INTEGER NOT NULL DEFAULT 0,
    peer        TEXT NOT NULL DEFAULT '',
    memo        TEXT NOT NULL DEFAULT '',
    state       TEXT NOT NULL,
    final       INTEGER NOT NULL DEFAULT 0,
    detail      TEXT NOT NULL DEFAULT '',
    request     BLOB,                   -- the id of the envelope awaiting an answer
    request_env BLOB,                   -- that envelope, to send again
    transfer    BLOB,                   -- transfers: the transfer id
    data        BLOB,                   -- kind-specific CBOR
    thread      TEXT,                   -- the Message-ID the thread started with
    sends       INTEGER NOT NULL DEFAULT 0,
    next_resend_at INTEGER,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX ops_request ON ops (request);
CREATE UNIQUE INDEX ops_transfer ON ops (kind, transfer) WHERE transfer IS NOT NULL;
CREATE INDEX ops_open ON ops (final, kind);
", "
CREATE TABLE agents (
    address     TEXT PRIMARY KEY,
    key         BLOB NOT NULL,
    added_at    INTEGER NOT NULL
) STRICT;

-- An envelope sent ahead of the op's request in the same mail (an
-- exchange's first payment before its second-payment request), and with
-- it on every resend.
ALTER TABLE ops ADD COLUMN before_env BLOB;
", "
-- What the spendable states of each currency hold (the sum of
-- held - spent), kept by triggers on every change to `notes`: read in one
-- row however many notes there are, and right whichever code changed them.
CREATE TABLE note_totals (
    currency    TEXT PRIMARY KEY,
    spendable   INTEGER NOT NULL CHECK (spendable >= 0)
) STRICT;
INSERT INTO note_totals (currency, spendable)
    SELECT currency, SUM(held - spent) FROM notes WHERE state = 'spendable' GROUP BY currency;
-- What summed the notes before: one page less to write per note change.
DROP INDEX notes_spendable;

CREATE TRIGGER notes_total_insert AFTER INSERT ON notes BEGIN
    INSERT OR IGNORE INTO note_totals (currency, spendable) VALUES (NEW.currency, 0);
    UPDATE note_totals
       SET spendable = spendable + CASE WHEN NEW.state = 'spendable' THEN NEW.held - NEW.spent ELSE 0 END
     WHERE currency = NEW.currency;
END;
CREATE TRIGGER notes_total_update AFTER UPDATE OF currency, held, spent, state ON notes BEGIN
    UPDATE note_totals
       SET spendable = spendable - CASE WHEN OLD.state = 'spendable' THEN OLD.held - OLD.spent ELSE 0 END
     WHERE currency = OLD.currency;
    INSERT OR IGNORE INTO note_totals (currency, spendable) VALUES (NEW.currency, 0);
    UPDATE note_totals
       SET spendable = spendable + CASE WHEN NEW.state = 'spendable' THEN NEW.held - NEW.spent ELSE 0 END
     WHERE currency = NEW.currency;
END;
CREATE TRIGGER notes_total_delete AFTER DELETE ON notes BEGIN
    UPDATE note_totals
       SET spendable = spendable - CASE WHEN OLD.state = 'spendable' THEN OLD.held - OLD.spent ELSE 0 END
     WHERE currency = OLD.currency;
END;

-- Choosing the notes of a payment without reading every note: the
-- spendable states of a card by what is left in them (then newest first,
-- the tie-break of `pay::choose`).
CREATE INDEX notes_by_rest ON notes (card, held - spent, acquired_at DESC, state_id DESC)
    WHERE state = 'spendable';
"];

pub fn schema_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// Opens (creating if missing) the database file, private to its owner.
pub fn open(path: &Path) -> Result<Connection, WalletError> {
    let mut conn = Connection::open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
    configure(&conn)?;
    migrate(&mut conn)?;
    Ok(conn)
}

fn configure(conn: &Connection) -> Result<(), WalletError> {
    Ok(mailer::sqlite::configure(conn, BUSY_TIMEOUT)?)
}

fn migrate(conn: &mut Connection) -> Result<(), WalletError> {
    use mailer::sqlite::SchemaError;
    mailer::sqlite::migrate(conn, MIGRATIONS).map_err(|e| match e {
        SchemaError::Newer { found, known } => WalletError::NewerSchema { found, known },
        SchemaError::Db(e) => WalletError::from(e),
        SchemaError::Outbox(e) => WalletError::from(e),
    })
}

/// A write transaction that takes the lock at once (so two wallet
/// processes on one database queue up instead of failing).
pub fn immediate(conn: &mut Connection) -> Result<rusqlite::Transaction<'_>, WalletError> {
    Ok(conn.transaction_with_behavior(TransactionBehavior::Immediate)?)
}
