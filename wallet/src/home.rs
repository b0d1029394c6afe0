//! The wallet's home directory: `wallet.toml` (mail settings),
//! `wallet.db` (everything else). The directory is private (0700), the
//! database file too (0600).

use std::path::{Path, PathBuf};

use mailer::money::Timestamp;
use rusqlite::{params, Connection};

use crate::error::WalletError;
use crate::ops::Wallet;
use crate::store::sql_time;
use crate::vault::Vault;

#[derive(Clone, Debug)]
pub struct Home {
    dir: PathBuf,
    name: &'static str,
}

impl Home {
    /// A wallet's home: `wallet.toml`, `wallet.db`.
    pub fn new(dir: impl Into<PathBuf>) -> Home {
        Home::named(dir, "wallet")
    }
    /// A home whose files are `NAME.toml` and `NAME.db` (the exchange
    /// agent keeps its float in a wallet of its own, `agent.db`).
    pub fn named(dir: impl Into<PathBuf>, name: &'static str) -> Home {
        Home {
            dir: dir.into(),
            name,
        }
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn db_path(&self) -> PathBuf {
        self.dir.join(format!("{}.db", self.name))
    }
    pub fn settings_path(&self) -> PathBuf {
        self.dir.join(format!("{}.toml", self.name))
    }

    /// Creates a new wallet for `address`; refuses an existing one.
    pub fn create(
        &self,
        address: &str,
        passphrase: Option<&str>,
        now: Timestamp,
    ) -> Result<(Wallet, Connection), WalletError> {
        mailer::mime::parse_address(address)
            .map_err(|e| WalletError::refused(format!("{address:?} is not a mail address: {e}")))?;
        if self.db_path().exists() {
            return Err(WalletError::refused(format!(
                "a {} already exists in {}; choose another directory",
                self.name,
                self.dir.display()
            )));
        }
        mailer::settings::create_private_dir(&self.dir).map_err(|e| {
            WalletError::refused(format!(
                "could not create {} (private to you): {e}",
                self.dir.display()
            ))
        })?;
        let conn = crate::db::open(&self.db_path())?;
        let (vault, kdf, (salt, check)) = Vault::create(passphrase)?;
        conn.execute(
            "INSERT INTO meta (id, address, kdf, salt, check_blob, created_at) VALUES (1, ?1, ?2, ?3, ?4, ?5)",
            params![address, kdf, salt, check, sql_time(now)],
        )?;
        Ok((
            Wallet {
                address: address.to_string(),
                vault,
            },
            conn,
        ))
    }

    /// Opens an existing wallet (its database and vault).
    pub fn open(&self, passphrase: Option<&str>) -> Result<(Wallet, Connection), WalletError> {
        if !self.db_path().exists() {
            return Err(WalletError::refused(format!(
                "no {} in {}; create one with `{} init`, or give --home (or {}_HOME)",
                self.name,
                self.dir.display(),
                self.name,
                self.name.to_uppercase()
            )));
        }
        let conn = crate::db::open(&self.db_path())?;
        let vault = Vault::unlock(&conn, passphrase)?;
        let address = crate::store::address(&conn)?;
        Ok((Wallet { address, vault }, conn))
    }

    /// Another connection to the same database (the watcher's).
    pub fn connect(&self) -> Result<Connection, WalletError> {
        crate::db::open(&self.db_path())
    }
}
