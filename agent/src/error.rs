//! What can go wrong in the agent itself (not a refused request: those
//! are answered with a signed `error`, see [`crate::exchange::Refusal`]).

use wallet::WalletError;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Wallet(#[from] WalletError),
    #[error("agent database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error(transparent)]
    Outbox(#[from] mailer::outbox::OutboxError),
    #[error(transparent)]
    Mime(#[from] mailer::mime::MimeError),
    #[error("could not sign: {0}")]
    Envelope(#[from] mailer::envelope::EnvelopeError),
    #[error("the agent database was written by a newer version (schema {found}, this program knows {known}); upgrade the agent")]
    NewerSchema { found: i64, known: i64 },
    #[error("the agent database is damaged: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Refused(String),
}

impl AgentError {
    pub fn refused(msg: impl Into<String>) -> AgentError {
        AgentError::Refused(msg.into())
    }
}
