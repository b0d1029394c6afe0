//! The harness's error type: a test that fails in the harness should say
//! what to do next (start the real servers, free the pool, ...), and a test
//! that provokes SMTP failures on purpose needs lettre's error to ask
//! whether it was transient.

use std::{io, net::SocketAddr, time::Duration};

/// What went wrong in [`super::TestServer`] or one of its helpers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// `TESTMAIL_SERVER` has a value the harness does not know.
    #[error("TESTMAIL_SERVER={0:?}: expected `real`, `embedded` or nothing")]
    UnknownServerKind(String),
    /// `TESTMAIL_SERVER=real` but a variable describing the real servers is
    /// missing.
    #[error(
        "TESTMAIL_SERVER=real but {0} is not set: run `testmail/real-server.sh start` \
         and `eval \"$(testmail/real-server.sh env)\"` first"
    )]
    MissingEnv(&'static str),
    /// A variable describing the real servers cannot be used.
    #[error("{name}={value:?}: {reason}")]
    BadEnv {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A server that should be running does not give its greeting.
    #[error(
        "{what} at {addr} is not answering ({reason}); is `testmail/real-server.sh status` happy?"
    )]
    NotAnswering {
        /// Which service (for example "SMTP").
        what: &'static str,
        /// Where it was expected.
        addr: SocketAddr,
        /// What happened instead.
        reason: String,
    },
    /// The embedded server failed.
    #[error(transparent)]
    Server(#[from] crate::Error),
    /// A file, folder or socket operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the harness was doing.
        context: String,
        /// The operating system's reason.
        source: io::Error,
    },
    /// An IMAP command failed (async-imap's error inside).
    #[error("IMAP, {context}: {source}")]
    Imap {
        /// What the harness was doing.
        context: String,
        /// async-imap's error.
        source: async_imap::error::Error,
    },
    /// Sending over SMTP failed; [`lettre::transport::smtp::Error::is_transient`]
    /// tells a 4xx refusal from a 5xx one.
    #[error("SMTP: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
    /// An address lettre cannot use in an envelope.
    #[error("bad address {address:?}: {reason}")]
    Address {
        /// The address as given.
        address: String,
        /// lettre's reason.
        reason: String,
    },
    /// Something did not happen in time.
    #[error("timed out after {after:?}: {what}")]
    Timeout {
        /// What was waited for (and what was seen instead).
        what: String,
        /// How long the harness waited.
        after: Duration,
    },
    /// Every account of the real servers' pool is claimed by other tests.
    #[error(
        "all {pool} pool accounts of REAL_MAIL_USERS stayed claimed for {waited:?} \
         (see {claims}); start the real servers with more pool users"
    )]
    PoolExhausted {
        /// How many accounts the pool has.
        pool: usize,
        /// How long the harness waited for one to be released.
        waited: Duration,
        /// The folder holding the claims.
        claims: String,
    },
    /// A helper program (doveadm, postqueue) failed.
    #[error("`{command}` failed: {detail}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status and error output.
        detail: String,
    },
    /// The server still reports the old UIDVALIDITY after it was asked to
    /// change it.
    #[error("UIDVALIDITY of {address}'s INBOX is still {value} after the change")]
    UidValidityUnchanged {
        /// The account.
        address: String,
        /// The UIDVALIDITY before and after.
        value: u32,
    },
    /// The server answered something the harness cannot use.
    #[error("unexpected answer: {0}")]
    Unexpected(String),
}

impl HarnessError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        HarnessError::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn imap(context: impl Into<String>, source: async_imap::error::Error) -> Self {
        HarnessError::Imap {
            context: context.into(),
            source,
        }
    }
}
