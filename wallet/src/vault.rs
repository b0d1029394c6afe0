//! Secret keys at rest. Without a passphrase a secret is stored as it is
//! (the database file is private to its owner); with one, every secret is
//! sealed with XChaCha20-Poly1305 under a key derived from the passphrase
//! by Argon2id, with a random salt kept in `meta`. A sealed known value
//! (`check_blob`) tells a wrong passphrase from a damaged database.

use argon2::Argon2;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use mailer::crypto::{random_bytes, SecretKey};
use rusqlite::{params, Connection, OptionalExtension};

use crate::error::WalletError;

/// The salt and the sealed check value kept in `meta`.
pub type Sealing = (Option<Vec<u8>>, Option<Vec<u8>>);

const PLAIN: u8 = 0;
const SEALED: u8 = 1;
const CHECK: &[u8] = b"emoney-mail wallet vault v1";

/// Seals and opens the wallet's secrets.
#[derive(Clone)]
pub struct Vault {
    cipher: Option<XChaCha20Poly1305>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Vault(sealed: {})", self.cipher.is_some())
    }
}

fn derive(passphrase: &str, salt: &[u8]) -> Result<XChaCha20Poly1305, WalletError> {
    let mut key = [0u8; 32];
    Argon2::default()
        .hash_password_into(passphrase.as_bytes(), salt, &mut key)
        .map_err(|e| WalletError::Kdf(e.to_string()))?;
    Ok(XChaCha20Poly1305::new(&key.into()))
}

impl Vault {
    /// Sets up the vault of a new wallet (in `meta`, which the caller
    /// creates with this row's values).
    pub fn create(passphrase: Option<&str>) -> Result<(Vault, &'static str, Sealing), WalletError> {
        match passphrase {
            None => Ok((Vault { cipher: None }, "none", (None, None))),
            Some(p) => {
                let salt = random_bytes::<16>().to_vec();
                let vault = Vault {
                    cipher: Some(derive(p, &salt)?),
                };
                let check = vault.seal_bytes(CHECK)?;
                Ok((vault, "argon2id", (Some(salt), Some(check))))
            }
        }
    }

    /// Opens the vault of an existing wallet.
    pub fn unlock(conn: &Connection, passphrase: Option<&str>) -> Result<Vault, WalletError> {
        let row: Option<(String, Sealing)> = conn
            .prepare_cached("SELECT kdf, salt, check_blob FROM meta WHERE id = 1")?
            .query_row([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))
            .optional()?;
        let Some((kdf, (salt, check))) = row else {
            return Err(WalletError::Corrupt("no wallet metadata".into()));
        };
        match (kdf.as_str(), salt, check) {
            ("none", _, _) => Ok(Vault { cipher: None }),
            ("argon2id", Some(salt), Some(check)) => {
                let p = passphrase.ok_or(WalletError::PassphraseNeeded)?;
                let vault = Vault {
                    cipher: Some(derive(p, &salt)?),
                };
                match vault.open_bytes(&check) {
                    Ok(v) if v == CHECK => Ok(vault),
                    _ => Err(WalletError::WrongPassphrase),
                }
            }
            (other, _, _) => Err(WalletError::Corrupt(format!(
                "unknown key sealing {other:?}"
            ))),
        }
    }

    fn seal_bytes(&self, plain: &[u8]) -> Result<Vec<u8>, WalletError> {
        match &self.cipher {
            None => {
                let mut out = vec![PLAIN];
                out.extend_from_slice(plain);
                Ok(out)
            }
            Some(c) => {
                let nonce = random_bytes::<24>();
                let ct = c
                    .encrypt(XNonce::from_slice(&nonce), plain)
                    .map_err(|_| WalletError::Corrupt("could not seal a secret".into()))?;
                let mut out = vec![SEALED];
                out.extend_from_slice(&nonce);
                out.extend_from_slice(&ct);
                Ok(out)
            }
        }
    }

    fn open_bytes(&self, blob: &[u8]) -> Result<Vec<u8>, WalletError> {
        match (blob.split_first(), &self.cipher) {
            (Some((&PLAIN, rest)), _) => Ok(rest.to_vec()),
            (Some((&SEALED, rest)), Some(c)) if rest.len() > 24 => {
                let (nonce, ct) = rest.split_at(24);
                c.decrypt(XNonce::from_slice(nonce), ct)
                    .map_err(|_| WalletError::WrongPassphrase)
            }
            (Some((&SEALED, _)), None) => Err(WalletError::PassphraseNeeded),
            _ => Err(WalletError::Corrupt("a secret is unreadable".into())),
        }
    }

    /// Stores a secret key; returns its row id.
    pub fn store(&self, conn: &Connection, key: &SecretKey) -> Result<i64, WalletError> {
        let sealed = self.seal_bytes(&key.seed())?;
        conn.prepare_cached("INSERT INTO secrets (sealed) VALUES (?1)")?
            .execute(params![sealed])?;
        Ok(conn.last_insert_rowid())
    }

    /// Reads a secret key back.
    pub fn load(&self, conn: &Connection, id: i64) -> Result<SecretKey, WalletError> {
        let blob: Vec<u8> = conn
            .prepare_cached("SELECT sealed FROM secrets WHERE id = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?
            .ok_or_else(|| WalletError::Corrupt(format!("secret {id} is missing")))?;
        let plain = self.open_bytes(&blob)?;
        let seed: [u8; 32] = plain
            .try_into()
            .map_err(|_| WalletError::Corrupt(format!("secret {id} has the wrong length")))?;
        Ok(SecretKey::from_seed(seed))
    }
}
