//! The agent's database: a wallet database (its cards, accounts, notes and
//! their operations, see `wallet::db`) plus the agent's own tables, a
//! schema part of their own (`mailer::sqlite::migrate_part`):
//!
//! - `agent_meta`: the agent key (sealed in the wallet's `secrets`) and
//!   its deadlines.
//! - `rates`: the agent's price per directed pair.
//! - `float_limits`: low and high water marks per currency (recharge).
//! - `trades`: every exchange transaction (TrID) with every envelope that
//!   made it, from offer to second payment or refund.
//! - `agent_requests`: every request envelope decided, with the reply
//!   sent (replays get it again; a first payment taken has none).
//! - `warnings`: what the operator should know (out of stock, failed
//!   recharges), shown by `agent status`.

use std::path::Path;

use rusqlite::Connection;

use crate::error::AgentError;

const PART: &str = "agent";

const MIGRATIONS: &[&str] = &["
CREATE TABLE agent_meta (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    key_secret      INTEGER NOT NULL REFERENCES secrets (id),
    key_public      BLOB NOT NULL,
    offer_secs      INTEGER NOT NULL,   -- D1 = offer time + offer_secs
    request_secs    INTEGER NOT NULL    -- D2 = D1 + request_secs
) STRICT;

CREATE TABLE rates (
    pay             TEXT NOT NULL,
    receive         TEXT NOT NULL,
    mid_mantissa    INTEGER NOT NULL CHECK (mid_mantissa > 0),
    mid_scale       INTEGER NOT NULL,
    spread_bp       INTEGER NOT NULL,
    min             INTEGER NOT NULL,
    max             INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (pay, receive)
) STRICT;

CREATE TABLE float_limits (
    currency    TEXT PRIMARY KEY,
    low         INTEGER NOT NULL,
    high        INTEGER NOT NULL CHECK (high >= low)
) STRICT;

CREATE TABLE trades (
    tr_id            BLOB PRIMARY KEY,
    state            TEXT NOT NULL CHECK (state IN
                       ('offered', 'signed', 'paid', 'delivered', 'refunded', 'expired')),
    peer             TEXT NOT NULL,
    pay_currency     TEXT NOT NULL,
    a1               INTEGER NOT NULL,
    d1               INTEGER NOT NULL,
    receive_currency TEXT NOT NULL,
    a2               INTEGER NOT NULL,
    d2               INTEGER NOT NULL,
    rate             TEXT NOT NULL,
    offer            BLOB NOT NULL,     -- the offer (envelope bytes)
    signed_offer     BLOB,              -- the signed offer (envelope bytes)
    acceptance       BLOB,              -- the acceptance (envelope bytes)
    first_payment    BLOB,              -- the first payment taken (envelope bytes)
    paid             INTEGER NOT NULL DEFAULT 0,
    request          BLOB,              -- the committed second-payment request (envelope bytes)
    second_payment   BLOB,              -- the second payment made (envelope bytes)
    refund           BLOB,              -- the refund of the first payment (envelope bytes)
    detail           TEXT NOT NULL DEFAULT '',
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
) STRICT;
CREATE INDEX trades_state ON trades (state, receive_currency);

CREATE TABLE agent_requests (
    id          BLOB PRIMARY KEY,       -- the request envelope id
    kind        TEXT NOT NULL,
    tr_id       BLOB,
    reply       BLOB,                   -- the reply envelope, if any
    sends       INTEGER NOT NULL DEFAULT 0,
    at          INTEGER NOT NULL
) STRICT;

CREATE TABLE warnings (
    id          INTEGER PRIMARY KEY,
    at          INTEGER NOT NULL,
    currency    TEXT,
    text        TEXT NOT NULL
) STRICT;
"];

/// Opens (creating if missing) the agent's database: the wallet schema,
/// then the agent's part.
pub fn open(path: &Path) -> Result<Connection, AgentError> {
    let mut conn = wallet::db::open(path)?;
    migrate(&mut conn)?;
    Ok(conn)
}

pub fn migrate(conn: &mut Connection) -> Result<(), AgentError> {
    use mailer::sqlite::SchemaError;
    mailer::sqlite::migrate_part(conn, PART, MIGRATIONS).map_err(|e| match e {
        SchemaError::Newer { found, known } => AgentError::NewerSchema { found, known },
        SchemaError::Db(e) => AgentError::from(e),
        SchemaError::Outbox(e) => AgentError::from(e),
    })
}
