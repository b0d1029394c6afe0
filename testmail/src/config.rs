//! What a server is started with: where mail lives, where to listen, who may
//! log in, and the limits on everything that comes from outside.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    str::FromStr,
    time::Duration,
};

use crate::error::Error;

/// Everything [`crate::Server::start`] needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Root of the mail store: one folder per user, one per mailbox below it.
    pub dir: PathBuf,
    /// SMTP listen address; port 0 picks a free port (see
    /// [`crate::RunningServer::smtp_addr`]).
    pub smtp: SocketAddr,
    /// IMAP listen address; port 0 picks a free port.
    pub imap: SocketAddr,
    /// Accounts. More can be added while running with
    /// [`crate::RunningServer::add_user`].
    pub users: Vec<User>,
    /// Bounds on sizes, counts and time.
    pub limits: Limits,
}

impl Config {
    /// A server storing mail under `dir`, listening on free loopback ports,
    /// with no users and the default limits.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let any_loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        Config {
            dir: dir.into(),
            smtp: any_loopback,
            imap: any_loopback,
            users: Vec::new(),
            limits: Limits::default(),
        }
    }

    /// Adds an account (builder style).
    pub fn user(mut self, address: impl Into<String>, password: impl Into<String>) -> Self {
        self.users.push(User::new(address, password));
        self
    }
}

/// One account: a mail address that receives mail and logs in to IMAP with
/// its full address as the user name.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    /// For example `alice@example.test`; compared without regard to case.
    pub address: String,
    /// Accepted by IMAP LOGIN / AUTHENTICATE PLAIN and SMTP AUTH.
    pub password: String,
}

impl User {
    /// An account with this address and password.
    pub fn new(address: impl Into<String>, password: impl Into<String>) -> Self {
        User {
            address: address.into(),
            password: password.into(),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        let refuse = |reason| {
            Err(Error::InvalidUser {
                address: self.address.clone(),
                reason,
            })
        };
        let Some((local, domain)) = self.address.split_once('@') else {
            return refuse("an address needs an @");
        };
        if local.is_empty() || domain.is_empty() {
            return refuse("empty local part or domain");
        }
        if self.address.len() > 254 {
            return refuse("longer than 254 bytes");
        }
        if !self
            .address
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"<>()[]\\,;:\"".contains(&b))
        {
            return refuse("only printable ASCII without <>()[]\\,;:\" is accepted");
        }
        if self.password.is_empty() || self.password.len() > 1024 {
            return refuse("the password must be 1 to 1024 bytes");
        }
        if self
            .password
            .bytes()
            .any(|b| b == 0 || b == b'\r' || b == b'\n')
        {
            return refuse("the password must not contain NUL, CR or LF");
        }
        Ok(())
    }
}

// Passwords stay out of logs and test failure output.
impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("address", &self.address)
            .field("password", &"***")
            .finish()
    }
}

/// `ADDRESS:PASSWORD`, as the binary's `--user` flag takes it. The password is
/// everything after the first `:` following the `@`, so it may contain `:`.
impl FromStr for User {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let at = s.find('@').unwrap_or(0);
        let Some(colon) = s[at..].find(':').map(|i| i + at) else {
            return Err(Error::InvalidUser {
                address: s.to_owned(),
                reason: "expected ADDRESS:PASSWORD",
            });
        };
        let user = User::new(&s[..colon], &s[colon + 1..]);
        user.validate()?;
        Ok(user)
    }
}

/// Limits on everything that comes from outside. The defaults suit tests and
/// the demo; every field can be changed.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Limits {
    /// Largest message SMTP accepts (advertised as `SIZE`) and IMAP APPEND
    /// takes, in bytes.
    pub max_message_size: usize,
    /// Longest SMTP command line, CRLF included. RFC 5321 says 512; we allow
    /// more because some clients send long AUTH lines.
    pub max_smtp_command_line: usize,
    /// Longest line inside an SMTP DATA section. RFC 5322 says 1000; real
    /// servers tolerate more, so do we, but not without bound.
    pub max_smtp_data_line: usize,
    /// Recipients in one SMTP transaction.
    pub max_recipients: usize,
    /// Longest IMAP command, literals excluded.
    pub max_imap_command: u32,
    /// Open SMTP connections; more are answered `421` and closed.
    pub max_smtp_connections: usize,
    /// Open IMAP connections; more are answered `* BYE` and closed.
    pub max_imap_connections: usize,
    /// Mailboxes one user may have.
    pub max_mailboxes: usize,
    /// Messages one mailbox may hold.
    pub max_messages_per_mailbox: usize,
    /// Bad commands tolerated on one connection before it is closed.
    pub max_bad_commands: u32,
    /// An IMAP connection silent this long is logged out (RFC 3501 asks for
    /// at least 30 minutes).
    pub imap_autologout: Duration,
    /// An SMTP connection silent this long is closed (RFC 5321 suggests 5
    /// minutes).
    pub smtp_timeout: Duration,
    /// A client that does not read our replies for this long is dropped.
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: 10 * 1024 * 1024,
            max_smtp_command_line: 4096,
            max_smtp_data_line: 64 * 1024,
            max_recipients: 100,
            max_imap_command: 64 * 1024,
            max_smtp_connections: 200,
            max_imap_connections: 200,
            max_mailboxes: 200,
            max_messages_per_mailbox: 100_000,
            max_bad_commands: 50,
            imap_autologout: Duration::from_secs(30 * 60),
            smtp_timeout: Duration::from_secs(5 * 60),
            write_timeout: Duration::from_secs(60),
        }
    }
}
