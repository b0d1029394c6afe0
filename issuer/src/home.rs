//! An issuer's home directory: its secret key and its database.
//!
//! ```text
//! <home>/issuer.key   the issuer's secret key seed, in hex (mode 0600)
//! <home>/issuer.db    the database (plus its -wal and -shm files)
//! ```
//!
//! The policy (currency, address, lifetimes, denominations) lives in the
//! database, written once by [`create`], so the daemon and every operator
//! command read the same one. Transport settings (IMAP, SMTP) are the
//! daemon's, not the issuer's, and are not kept here.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use mailer::crypto::SecretKey;
use mailer::money::Timestamp;
use rusqlite::Connection;

use crate::error::IssuerError;
use crate::{db, Issuer, IssuerConfig};

pub const KEY_FILE: &str = "issuer.key";
pub const DB_FILE: &str = "issuer.db";

/// The paths of an issuer's home.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Home {
    dir: PathBuf,
}

impl Home {
    pub fn new(dir: impl Into<PathBuf>) -> Home {
        Home { dir: dir.into() }
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn key_path(&self) -> PathBuf {
        self.dir.join(KEY_FILE)
    }
    pub fn db_path(&self) -> PathBuf {
        self.dir.join(DB_FILE)
    }

    /// Creates a new issuer here with a fresh key: fails if one exists.
    pub fn create(
        &self,
        config: IssuerConfig,
        now: Timestamp,
    ) -> Result<(Issuer, Connection), IssuerError> {
        self.create_with_key(SecretKey::generate(), config, now)
    }

    /// Creates a new issuer here with the given key (a restored or a test
    /// key): fails if one exists.
    pub fn create_with_key(
        &self,
        key: SecretKey,
        config: IssuerConfig,
        now: Timestamp,
    ) -> Result<(Issuer, Connection), IssuerError> {
        let issuer = Issuer::new(key, config)?;
        for p in [self.key_path(), self.db_path()] {
            if p.exists() {
                return Err(IssuerError::HomeExists(p));
            }
        }
        mailer::settings::create_private_dir(&self.dir)
            .map_err(|e| IssuerError::io(&self.dir, e))?;
        write_key(&self.key_path(), issuer.secret())?;
        let mut conn = db::open(&self.db_path())?;
        let tx = crate::operator::immediate(&mut conn)?;
        db::init_meta(&tx, &issuer, now)?;
        tx.commit()?;
        Ok((issuer, conn))
    }

    /// Opens the issuer here: reads its key and its database, and checks
    /// that they belong together.
    pub fn open(&self) -> Result<(Issuer, Connection), IssuerError> {
        let key_path = self.key_path();
        if !key_path.exists() || !self.db_path().exists() {
            return Err(IssuerError::NoHome(self.dir.clone()));
        }
        let key = read_key(&key_path)?;
        let conn = db::open(&self.db_path())?;
        let (public, config) =
            db::load_meta(&conn)?.ok_or_else(|| IssuerError::NoHome(self.dir.clone()))?;
        if key.public() != public {
            return Err(IssuerError::KeyMismatch {
                path: key_path,
                expected: public,
                found: key.public(),
            });
        }
        Ok((Issuer::new(key, config)?, conn))
    }

    /// Another connection to the database (the outbox sender's, an
    /// operator command's while the daemon runs).
    pub fn connect(&self) -> Result<Connection, IssuerError> {
        if !self.db_path().exists() {
            return Err(IssuerError::NoHome(self.dir.clone()));
        }
        db::open(&self.db_path())
    }
}

fn write_key(path: &Path, key: &SecretKey) -> Result<(), IssuerError> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| IssuerError::io(path, e))?;
    let text = format!("{}\n", mailer::crypto::Digest(key.seed()).to_hex());
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| IssuerError::io(path, e))
}

fn read_key(path: &Path) -> Result<SecretKey, IssuerError> {
    let text = fs::read_to_string(path).map_err(|e| IssuerError::io(path, e))?;
    let seed = mailer::crypto::Digest::from_hex(&text).ok_or_else(|| {
        IssuerError::Config(format!(
            "{} does not hold a key (64 hex digits)",
            path.display()
        ))
    })?;
    Ok(SecretKey::from_seed(seed.0))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use mailer::money::Currency;

    #[test]
    fn create_open_and_refuse_mismatches() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path().join("jpy"));
        let cfg = IssuerConfig::new(Currency::JPY, "issuer@jpy.example");
        let (issuer, conn) = home.create(cfg.clone(), Timestamp::from_unix(1)).unwrap();
        drop(conn);
        assert!(matches!(
            home.create(cfg.clone(), Timestamp::from_unix(1)),
            Err(IssuerError::HomeExists(_))
        ));
        let (again, _conn) = home.open().unwrap();
        assert_eq!(again.public_key(), issuer.public_key());
        assert_eq!(again.config(), &cfg);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(home.key_path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            // The database and its WAL files are in a directory only the
            // owner can enter.
            let mode = fs::metadata(&home.dir).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        fs::remove_file(home.key_path()).unwrap();
        write_key(&home.key_path(), &SecretKey::from_seed([9; 32])).unwrap();
        assert!(matches!(home.open(), Err(IssuerError::KeyMismatch { .. })));
        assert!(matches!(
            Home::new(dir.path().join("none")).open(),
            Err(IssuerError::NoHome(_))
        ));
    }
}
