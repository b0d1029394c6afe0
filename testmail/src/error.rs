//! The library's one error type. Callers branch on the kind (a test wants to
//! know "unknown user" apart from "disk full"), so it is an enum, not a string.

use std::{io, net::SocketAddr, path::PathBuf};

/// What went wrong in a [`crate::Server`] or one of its handles.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A listener could not be bound (address in use, no permission, ...).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address from the configuration.
        addr: SocketAddr,
        /// The operating system's reason.
        source: io::Error,
    },
    /// Reading or writing the mail directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder that could not be read or written.
        path: PathBuf,
        /// The operating system's reason.
        source: io::Error,
    },
    /// A file in the mail directory is not what testmail writes.
    #[error("{path}: corrupt state file: {reason}")]
    Corrupt {
        /// The offending file.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// A user address or password that cannot be served (empty, no `@`, a
    /// password with a `NUL`, ...).
    #[error("invalid user {address:?}: {reason}")]
    InvalidUser {
        /// The address as given.
        address: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// No such user on this server.
    #[error("unknown user {0:?}")]
    UnknownUser(String),
    /// The user has no mailbox of that name.
    #[error("unknown mailbox {0:?}")]
    UnknownMailbox(String),
    /// A mailbox name that cannot be created (empty, wildcard, too long, ...).
    #[error("invalid mailbox name {name:?}: {reason}")]
    InvalidMailboxName {
        /// The name as given.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The mailbox already exists.
    #[error("mailbox {0:?} already exists")]
    MailboxExists(String),
    /// The mailbox was renumbered (new UIDVALIDITY) since the caller looked.
    #[error("mailbox {0:?} has a new UIDVALIDITY")]
    UidValidityChanged(String),
    /// A limit from [`crate::Limits`] was reached.
    #[error("limit reached: {0}")]
    Limit(&'static str),
    /// An SMTP reply code for a fault outside 400..=599.
    #[error("SMTP reply code {0} is not a 4xx or 5xx code")]
    InvalidReplyCode(u16),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Shorthand used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
