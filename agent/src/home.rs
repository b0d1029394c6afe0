//! The agent's home directory: `agent.toml` (mail settings), `agent.db`
//! (its wallet and its trades), private to its owner like a wallet's.

use std::path::{Path, PathBuf};

use mailer::crypto::{PublicKey, SecretKey};
use mailer::envelope::{Body, Signed};
use mailer::money::Timestamp;
use rusqlite::{params, Connection};
use wallet::Wallet;

use crate::error::AgentError;

/// How long an offer can be accepted and paid by default (D1 - offer).
pub const OFFER_SECS: u64 = 3_600;
/// How long after D1 the second payment can be asked by default (D2 - D1).
pub const REQUEST_SECS: u64 = 7 * 86_400;

/// The agent: its wallet (address, vault) and its signing key. The
/// deadlines of its offers are read from the database ([`deadlines`]).
#[derive(Clone, Debug)]
pub struct Agent {
    pub wallet: Wallet,
    key: SecretKey,
}

impl Agent {
    pub fn public_key(&self) -> PublicKey {
        self.key.public()
    }
    pub fn address(&self) -> &str {
        &self.wallet.address
    }
    /// Signs a body with the agent key.
    pub fn sign<T: Body>(&self, body: T) -> Result<Signed<T>, AgentError> {
        Ok(Signed::sign(body, &self.key)?)
    }
    /// The agent's key, for the error replies it signs.
    pub fn key(&self) -> &SecretKey {
        &self.key
    }
}

#[derive(Clone, Debug)]
pub struct Home {
    inner: wallet::Home,
}

impl Home {
    pub fn new(dir: impl Into<PathBuf>) -> Home {
        Home {
            inner: wallet::Home::named(dir, "agent"),
        }
    }
    pub fn dir(&self) -> &Path {
        self.inner.dir()
    }
    pub fn settings_path(&self) -> PathBuf {
        self.inner.settings_path()
    }

    /// Creates the agent: its wallet database, a fresh agent key, the
    /// deadlines of its offers.
    pub fn create(
        &self,
        address: &str,
        passphrase: Option<&str>,
        offer_secs: u64,
        request_secs: u64,
        now: Timestamp,
    ) -> Result<(Agent, Connection), AgentError> {
        let (w, mut conn) = self.inner.create(address, passphrase, now)?;
        crate::db::migrate(&mut conn)?;
        let key = SecretKey::generate();
        let secret = w.vault.store(&conn, &key)?;
        conn.prepare_cached(
            "INSERT INTO agent_meta (id, key_secret, key_public, offer_secs, request_secs)
             VALUES (1, ?1, ?2, ?3, ?4)",
        )?
        .execute(params![
            secret,
            key.public().as_bytes().as_slice(),
            i64::try_from(offer_secs).unwrap_or(i64::MAX),
            i64::try_from(request_secs).unwrap_or(i64::MAX)
        ])?;
        Ok((Agent { wallet: w, key }, conn))
    }

    /// Opens the agent (database, vault, key).
    pub fn open(&self, passphrase: Option<&str>) -> Result<(Agent, Connection), AgentError> {
        let (w, mut conn) = self.inner.open(passphrase)?;
        crate::db::migrate(&mut conn)?;
        let secret: i64 = conn
            .prepare_cached("SELECT key_secret FROM agent_meta WHERE id = 1")?
            .query_row([], |r| r.get(0))?;
        let key = w.vault.load(&conn, secret)?;
        Ok((Agent { wallet: w, key }, conn))
    }

    /// Another connection to the same database.
    pub fn connect(&self) -> Result<Connection, AgentError> {
        crate::db::open(&self.inner.db_path())
    }

    /// The wallet home underneath (for the wallet's own operations).
    pub fn wallet_home(&self) -> &wallet::Home {
        &self.inner
    }
}

/// The deadlines of new offers, as set now (a running daemon sees
/// changes at once).
pub fn deadlines(conn: &Connection) -> Result<(u64, u64), AgentError> {
    let (offer, request): (i64, i64) = conn
        .prepare_cached("SELECT offer_secs, request_secs FROM agent_meta WHERE id = 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok((
        u64::try_from(offer).unwrap_or(OFFER_SECS),
        u64::try_from(request).unwrap_or(REQUEST_SECS),
    ))
}

/// Changes the deadlines of future offers.
pub fn set_deadlines(
    conn: &Connection,
    offer_secs: u64,
    request_secs: u64,
) -> Result<(), AgentError> {
    conn.prepare_cached("UPDATE agent_meta SET offer_secs = ?1, request_secs = ?2 WHERE id = 1")?
        .execute(params![
            i64::try_from(offer_secs).unwrap_or(i64::MAX),
            i64::try_from(request_secs).unwrap_or(i64::MAX)
        ])?;
    Ok(())
}
