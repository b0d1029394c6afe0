//! The issuer's errors.
//!
//! Two kinds of "no" are kept apart. An [`IssuerError`] is a failure of the
//! issuer itself (its database, its files, a bad operator command): the
//! caller rolls back and reports it. A [`Refusal`] is a decision about a
//! request from outside: it is answered with a signed `error` reply and
//! changes no balance; it is not an error of this program.

use std::path::PathBuf;

use mailer::crypto::PublicKey;
use mailer::envelope::EnvelopeError;
use mailer::messages::ErrorCode;
use mailer::mime::MimeError;
use mailer::outbox::OutboxError;

/// A failure of the issuer or of an operator command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IssuerError {
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("outbox: {0}")]
    Outbox(#[from] OutboxError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not sign: {0}")]
    Sign(#[from] EnvelopeError),
    #[error("could not build a reply mail: {0}")]
    Mime(#[from] MimeError),
    #[error(
        "the database holds something unreadable: {0}; restore it from a backup or ask for help"
    )]
    Corrupt(String),
    #[error("the database was written by a newer issuer (schema {found}, this program knows up to {known}); upgrade the program")]
    NewerSchema { found: i64, known: i64 },
    #[error("bad configuration: {0}")]
    Config(String),
    #[error("{0} already exists; choose another directory or open the existing issuer")]
    HomeExists(PathBuf),
    #[error("{0} holds no issuer (no key or no database); create one first")]
    NoHome(PathBuf),
    #[error("the key in {path} ({found}) is not this database's issuer key ({expected})")]
    KeyMismatch {
        path: PathBuf,
        expected: PublicKey,
        found: PublicKey,
    },
    #[error("{0:?} is not a usable account name: use 1 to 200 printable characters")]
    BadAccountName(String),
    #[error("account {0:?} already exists")]
    AccountExists(String),
    #[error("no account named {0:?}")]
    NoSuchAccount(String),
    #[error("bad amount: {0}")]
    BadAmount(String),
    #[error("card {0} is not revoked; revoke it before refunding it")]
    NotRevoked(PublicKey),
    #[error("nothing is left to refund for card {0}: its known value was spent, deposited or already refunded")]
    NothingToRefund(PublicKey),
    #[error("note {index} given for the refund does not check: {reason}")]
    BadRefundNote { index: usize, reason: String },
}

impl IssuerError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> IssuerError {
        IssuerError::Io {
            path: path.into(),
            source,
        }
    }
}

/// A request refused: the code and the reason travel in the signed `error`
/// reply. The reason says what was wrong and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub reason: String,
}

impl Refusal {
    pub fn new(code: ErrorCode, reason: impl Into<String>) -> Refusal {
        let mut reason: String = reason.into();
        if reason.len() > mailer::limits::MAX_TEXT {
            let mut end = mailer::limits::MAX_TEXT;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
        }
        Refusal { code, reason }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.reason)
    }
}
