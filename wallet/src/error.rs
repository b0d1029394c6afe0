//! What can go wrong in the wallet, said so that its user knows what to do.

use mailer::money::Currency;

#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    #[error("wallet database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error(transparent)]
    Outbox(#[from] mailer::outbox::OutboxError),
    #[error(transparent)]
    Mime(#[from] mailer::mime::MimeError),
    #[error("could not sign: {0}")]
    Envelope(#[from] mailer::envelope::EnvelopeError),
    #[error("the wallet database was written by a newer version (schema {found}, this program knows {known}); upgrade the wallet")]
    NewerSchema { found: i64, known: i64 },
    #[error("the wallet database is damaged: {0}")]
    Corrupt(String),
    #[error("this wallet's keys are encrypted; give the passphrase with --passphrase or WALLET_PASSPHRASE")]
    PassphraseNeeded,
    #[error("the passphrase is wrong")]
    WrongPassphrase,
    #[error("could not derive the key from the passphrase: {0}")]
    Kdf(String),
    #[error("no issuer is pinned for {0}; add it with `wallet issuer add {0} --email ADDRESS --key KEY`")]
    NoIssuer(Currency),
    #[error("no account at the {0} issuer is bound to this wallet; bind one with `wallet account add {0} --code CODE`")]
    NoAccount(Currency),
    #[error("the {0} account is not enrolled yet; run `wallet sync --wait` to finish enrolling")]
    NotEnrolled(Currency),
    #[error("this wallet has no licensed {0} card; make one with `wallet card new {0}` and run `wallet sync --wait`")]
    NoCard(Currency),
    #[error("{0}")]
    Refused(String),
    #[error("not enough {currency}: {available} available, {wanted} asked")]
    InsufficientFunds {
        currency: Currency,
        available: String,
        wanted: String,
    },
    #[error(
        "paying {wanted} {currency} takes {needed} notes, more than the {most} one payment may carry; pay at most {} {currency} at a time",
        at_most.display_major(*currency)
    )]
    TooManyNotes {
        currency: Currency,
        wanted: String,
        needed: usize,
        most: usize,
        /// The most one payment can carry now: the largest notes' worth.
        at_most: mailer::money::Amount,
    },
}

impl WalletError {
    pub fn refused(msg: impl Into<String>) -> WalletError {
        WalletError::Refused(msg.into())
    }
}
