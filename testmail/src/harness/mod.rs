//! One test suite, two kinds of server: [`TestServer::start`] gives the
//! embedded server in a fresh temp folder, or, when `TESTMAIL_SERVER=real`,
//! the Postfix + Dovecot that `testmail/real-server.sh start` runs (found
//! through the `REAL_*` variables that `testmail/real-server.sh env`
//! prints). Tests written against this API run unchanged on both.
//!
//! ```no_run
//! # async fn demo() -> Result<(), testmail::harness::HarnessError> {
//! use std::time::Duration;
//! use testmail::harness::TestServer;
//! let server = TestServer::start().await?;
//! let alice = server.account("alice").await?;
//! let raw = b"Subject: hi\r\n\r\nhello\r\n";
//! server.send_raw("someone@example.test", &alice.address, raw).await?;
//! let got = server.wait_for(&alice, "INBOX", 1, Duration::from_secs(10)).await?;
//! // Postfix and Dovecot prepend trace headers; the embedded server does not.
//! assert!(got[0].ends_with(raw));
//! # Ok(()) }
//! ```
//!
//! Differences that tests must allow for:
//! - Real servers prepend `Return-Path`, `Delivered-To` and `Received`
//!   headers to what they store; compare with `ends_with`.
//! - Postfix delivers concurrently: two messages sent one after the other
//!   may get their UIDs in the other order.
//! - Dovecot tells an IDLE client about new mail about 0.5 s late.
//! - Only the embedded server has [`TestServer::faults`]; the proxies of
//!   [`TestServer::imap_proxy`] and [`TestServer::smtp_proxy`] work on both.
//! - Only the real servers have TLS ports and SMTP AUTH.
//! - On the real servers, [`TestServer::change_uidvalidity`] needs root (it
//!   runs doveadm and edits the Maildir), and so do the pool's claim files
//!   if the real servers were started by root.

mod capacity;
mod error;
mod imap;
mod proxy;
mod real;

use std::{
    collections::HashSet,
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use lettre::{address::Envelope, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use tempfile::TempDir;

pub use capacity::{filler_mail, Capacity, InboxWatch};
pub use error::HarnessError;

/// The binary `name` of the workspace package of the same name, built
/// beside the running test's executable (a workspace build makes it; it
/// is built with `cargo`, the `CARGO` of the caller, when missing).
pub fn workspace_binary(name: &str, cargo: &str) -> Result<std::path::PathBuf, HarnessError> {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let bin = dir.join(name);
    if !bin.exists() {
        let what = format!("building the {name} binary");
        let status = std::process::Command::new(cargo)
            .args(["build", "-p", name, "--bin", name])
            .status()
            .map_err(|e| HarnessError::io(what.clone(), e))?;
        if !status.success() {
            return Err(HarnessError::io(
                what,
                std::io::Error::other(format!("cargo build exited with {status}")),
            ));
        }
    }
    Ok(bin)
}
pub use proxy::FaultProxy;

use crate::{Config, Faults, RunningServer, Server};
use proxy::Protocol;
use real::{Claim, RealServers};

/// The domain of the embedded server's accounts.
const EMBEDDED_DOMAIN: &str = "example.test";
/// How long one IMAP or SMTP operation of the harness may take.
const OP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`TestServer::account`] waits for a pool account to be free.
const POOL_WAIT: Duration = Duration::from_secs(60);
/// How often the harness looks again (free pool accounts, new mail).
const POLL: Duration = Duration::from_millis(25);

/// Which server a [`TestServer`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    /// testmail's own server, in this process.
    Embedded,
    /// Postfix + Dovecot, run by `testmail/real-server.sh`.
    Real,
}

/// A mail server for one test: see the [module documentation](self).
pub struct TestServer {
    inner: Inner,
}

enum Inner {
    Embedded {
        server: RunningServer,
        // A temp folder is kept for the server's lifetime and removed when
        // dropped; a folder given to `embedded_in` is left alone.
        _dir: Option<TempDir>,
        /// The accounts made by [`TestServer::account`].
        names: Mutex<HashSet<String>>,
    },
    Real(RealServers),
}

impl fmt::Debug for TestServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestServer")
            .field("kind", &self.kind())
            .field("smtp", &self.smtp_addr())
            .field("imap", &self.imap_addr())
            .finish_non_exhaustive()
    }
}

/// A mail account for one test. On the real servers it is claimed from the
/// pool until dropped.
pub struct Account {
    /// The address, also the IMAP user name.
    pub address: String,
    /// The IMAP (and, on real servers, SMTP AUTH) password.
    pub password: String,
    _claim: Option<Claim>,
}

// Passwords stay out of test failure output.
impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("address", &self.address)
            .field("password", &"***")
            .finish_non_exhaustive()
    }
}

/// Spreads claims over the pool, so that an account released a moment ago
/// is not the next one taken.
static NEXT_POOL_INDEX: AtomicUsize = AtomicUsize::new(0);
/// Numbers embedded accounts whose name is already taken.
static NEXT_EMBEDDED_ACCOUNT: AtomicUsize = AtomicUsize::new(1);

impl TestServer {
    /// The embedded server in a fresh temp folder, unless
    /// `TESTMAIL_SERVER=real`: then the running real servers described by
    /// the `REAL_*` variables (an error if they are missing or a server
    /// does not answer).
    pub async fn start() -> Result<TestServer, HarnessError> {
        match Self::kind_from_env()? {
            ServerKind::Embedded => Self::embedded().await,
            ServerKind::Real => Self::real().await,
        }
    }

    /// What `TESTMAIL_SERVER` asks for: `real`, or `embedded` (also when
    /// unset or empty).
    pub fn kind_from_env() -> Result<ServerKind, HarnessError> {
        match std::env::var("TESTMAIL_SERVER") {
            Err(std::env::VarError::NotPresent) => Ok(ServerKind::Embedded),
            Err(std::env::VarError::NotUnicode(v)) => Err(HarnessError::UnknownServerKind(
                v.to_string_lossy().into_owned(),
            )),
            Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
                "" | "embedded" => Ok(ServerKind::Embedded),
                "real" => Ok(ServerKind::Real),
                _ => Err(HarnessError::UnknownServerKind(v)),
            },
        }
    }

    /// The embedded server in a fresh temp folder, whatever the environment
    /// says.
    pub async fn embedded() -> Result<TestServer, HarnessError> {
        let dir = tempfile::Builder::new()
            .prefix("testmail-harness-")
            .tempdir()
            .map_err(|e| HarnessError::io("creating a temp folder for the embedded server", e))?;
        let server = Server::start(Config::new(dir.path())).await?;
        Ok(TestServer {
            inner: Inner::Embedded {
                server,
                _dir: Some(dir),
                names: Mutex::new(HashSet::new()),
            },
        })
    }

    /// The embedded server with its mail store in `dir` (created if
    /// missing), which is kept after the server stops, so that the mail
    /// can be looked at, or served again by `testmail serve --dir`.
    pub async fn embedded_in(dir: &Path) -> Result<TestServer, HarnessError> {
        let server = Server::start(Config::new(dir)).await?;
        Ok(TestServer {
            inner: Inner::Embedded {
                server,
                _dir: None,
                names: Mutex::new(HashSet::new()),
            },
        })
    }

    /// The real servers described by the `REAL_*` variables, whatever
    /// `TESTMAIL_SERVER` says.
    pub async fn real() -> Result<TestServer, HarnessError> {
        let real = RealServers::from_env()?;
        real.check().await?;
        Ok(TestServer {
            inner: Inner::Real(real),
        })
    }

    /// Which kind of server this is.
    pub fn kind(&self) -> ServerKind {
        match self.inner {
            Inner::Embedded { .. } => ServerKind::Embedded,
            Inner::Real(_) => ServerKind::Real,
        }
    }

    /// Plain SMTP; mail to the accounts' domain needs no AUTH.
    pub fn smtp_addr(&self) -> SocketAddr {
        match &self.inner {
            Inner::Embedded { server, .. } => server.smtp_addr(),
            Inner::Real(r) => r.smtp,
        }
    }

    /// Plain IMAP.
    pub fn imap_addr(&self) -> SocketAddr {
        match &self.inner {
            Inner::Embedded { server, .. } => server.imap_addr(),
            Inner::Real(r) => r.imap,
        }
    }

    /// The mail flags every program's `init` takes (`--imap-host` ...
    /// `--password-env`) for `user` on this server, over plain IMAP and
    /// SMTP, the password read from the environment variable
    /// `password_env`.
    pub fn init_flags(&self, user: &str, password_env: &str) -> Vec<String> {
        let host = self.imap_addr().ip().to_string();
        [
            "--imap-host",
            &host,
            "--imap-port",
            &self.imap_addr().port().to_string(),
            "--imap-tls",
            "none",
            "--smtp-host",
            &host,
            "--smtp-port",
            &self.smtp_addr().port().to_string(),
            "--smtp-tls",
            "none",
            "--user",
            user,
            "--password-env",
            password_env,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// IMAP over implicit TLS (real servers only); trust [`Self::ca_file`].
    pub fn imaps_addr(&self) -> Option<SocketAddr> {
        match &self.inner {
            Inner::Embedded { .. } => None,
            Inner::Real(r) => Some(r.imaps),
        }
    }

    /// SMTP over implicit TLS with AUTH required (real servers only).
    pub fn submissions_addr(&self) -> Option<SocketAddr> {
        match &self.inner {
            Inner::Embedded { .. } => None,
            Inner::Real(r) => Some(r.submission),
        }
    }

    /// The CA that signed the TLS ports' certificate (real servers only);
    /// it names `localhost` and `127.0.0.1`.
    pub fn ca_file(&self) -> Option<PathBuf> {
        match &self.inner {
            Inner::Embedded { .. } => None,
            Inner::Real(r) => Some(r.ca.clone()),
        }
    }

    /// The embedded server's fault hooks (`None` on the real servers).
    pub fn faults(&self) -> Option<&Faults> {
        self.embedded_server().map(RunningServer::faults)
    }

    /// The embedded server itself (`None` on the real servers).
    pub fn embedded_server(&self) -> Option<&RunningServer> {
        match &self.inner {
            Inner::Embedded { server, .. } => Some(server),
            Inner::Real(_) => None,
        }
    }

    /// A fresh account with an empty mailbox (only an empty INBOX) that no
    /// other test uses, in this process or another. `hint` (a test name,
    /// say) names the embedded account and is noted in the real servers'
    /// claim file.
    ///
    /// Embedded: a new user `HINT@example.test`, or `HINT-N@example.test`
    /// if this server already has a `HINT`. Real: an unclaimed user
    /// of the pool (see the [module documentation](self)), skipping any
    /// that Postfix still has mail queued for, emptied with [`Self::empty`].
    /// Waits up to a minute for a pool account to be released.
    pub async fn account(&self, hint: &str) -> Result<Account, HarnessError> {
        match &self.inner {
            Inner::Embedded { server, names, .. } => {
                let local: String = hint
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                            c.to_ascii_lowercase()
                        } else {
                            '-'
                        }
                    })
                    .take(40)
                    .collect();
                let local = local.trim_matches(|c| c == '-' || c == '.');
                let local = if local.is_empty() { "user" } else { local };
                let local = {
                    let mut names = names.lock().unwrap_or_else(|p| p.into_inner());
                    let mut name = local.to_owned();
                    while !names.insert(name.clone()) {
                        let n = NEXT_EMBEDDED_ACCOUNT.fetch_add(1, Ordering::Relaxed);
                        name = format!("{local}-{n}");
                    }
                    name
                };
                let address = format!("{local}@{EMBEDDED_DOMAIN}");
                let password = format!("{local}-pw");
                server.add_user(&address, &password)?;
                Ok(Account {
                    address,
                    password,
                    _claim: None,
                })
            }
            Inner::Real(real) => {
                let account = claim(real, hint).await?;
                self.empty(&account).await?;
                Ok(account)
            }
        }
    }

    /// Empties `account` over IMAP: deletes every folder but INBOX and
    /// expunges everything in INBOX, then checks that the server shows
    /// just that. [`Self::account`] does this to every pool account it
    /// claims; a test may use it to start over.
    pub async fn empty(&self, account: &Account) -> Result<(), HarnessError> {
        let addr = self.imap_addr();
        with_timeout(format!("emptying {}", account.address), async {
            let mut session = imap::login(addr, &account.address, &account.password).await?;
            imap::empty_account(&mut session).await?;
            imap::logout(session).await;
            Ok(())
        })
        .await
    }

    /// A fault-injecting proxy in front of the IMAP port.
    pub async fn imap_proxy(&self) -> Result<FaultProxy, HarnessError> {
        FaultProxy::start(Protocol::Imap, self.imap_addr()).await
    }

    /// A fault-injecting proxy in front of the plain SMTP port.
    pub async fn smtp_proxy(&self) -> Result<FaultProxy, HarnessError> {
        FaultProxy::start(Protocol::Smtp, self.smtp_addr()).await
    }

    /// Makes the server renumber `account`'s INBOX from 1 under a new
    /// UIDVALIDITY, as a server whose index was rebuilt would, and checks
    /// that a new EXAMINE shows a different UIDVALIDITY. Open sessions are
    /// disconnected with `* BYE`: on the embedded server those that have
    /// INBOX selected, on Dovecot every session of the account.
    ///
    /// Embedded: [`Faults::change_uidvalidity`]. Real: removes the Maildir's
    /// `dovecot-uidlist` and index, `doveadm force-resync`, then `doveadm
    /// kick` (root only).
    pub async fn change_uidvalidity(&self, account: &Account) -> Result<(), HarnessError> {
        let before = self.inbox_uidvalidity(account).await?;
        match &self.inner {
            Inner::Embedded { server, .. } => {
                server
                    .faults()
                    .change_uidvalidity(&account.address, "INBOX")?;
            }
            Inner::Real(real) => real.renumber_inbox(&account.address).await?,
        }
        let after = self.inbox_uidvalidity(account).await?;
        if after == before {
            return Err(HarnessError::UidValidityUnchanged {
                address: account.address.clone(),
                value: after,
            });
        }
        tracing::debug!(address = %account.address, before, after, "UIDVALIDITY changed");
        Ok(())
    }

    async fn inbox_uidvalidity(&self, account: &Account) -> Result<u32, HarnessError> {
        let addr = self.imap_addr();
        with_timeout(format!("EXAMINE INBOX of {}", account.address), async {
            let mut session = imap::login(addr, &account.address, &account.password).await?;
            let inbox = imap::examine(&mut session, "INBOX").await?;
            imap::logout(session).await;
            inbox
                .map(|(_, uidvalidity)| uidvalidity)
                .ok_or_else(|| HarnessError::Unexpected("INBOX cannot be examined".into()))
        })
        .await
    }

    /// Sends `raw` (RFC 5322 bytes) over plain SMTP with lettre, with
    /// envelope sender `from` and recipient `to`. What is stored is `raw`
    /// exactly (real servers prepend trace headers): lettre ends DATA with
    /// `CRLF . CRLF`, whose first CRLF ends the last line, so one final
    /// CRLF of `raw` is left out of what lettre is given.
    pub async fn send_raw(&self, from: &str, to: &str, raw: &[u8]) -> Result<(), HarnessError> {
        let parse = |a: &str| {
            a.parse::<lettre::Address>()
                .map_err(|e| HarnessError::Address {
                    address: a.to_owned(),
                    reason: e.to_string(),
                })
        };
        let envelope = Envelope::new(Some(parse(from)?), vec![parse(to)?]).map_err(|e| {
            HarnessError::Address {
                address: to.to_owned(),
                reason: e.to_string(),
            }
        })?;
        let addr = self.smtp_addr();
        let transport =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(addr.ip().to_string())
                .port(addr.port())
                .timeout(Some(OP_TIMEOUT))
                .build();
        let raw = raw.strip_suffix(b"\r\n").unwrap_or(raw);
        transport.send_raw(&envelope, raw).await?;
        Ok(())
    }

    /// Waits until `folder` of `account` holds at least `n` messages, or
    /// `timeout` passes (an error saying how many there were); returns the
    /// raw bytes of all of them, in UID order. Polls over one IMAP session,
    /// and starts a new one if the connection is lost (a fault hook of the
    /// embedded server may cut the harness's own fetches too).
    pub async fn wait_for(
        &self,
        account: &Account,
        folder: &str,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<Vec<u8>>, HarnessError> {
        let deadline = Instant::now() + timeout;
        let addr = self.imap_addr();
        let mut session = None;
        let mut seen = 0;
        let mut last_error = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let attempt = async {
                let s = match session.take() {
                    Some(s) => s,
                    None => imap::login(addr, &account.address, &account.password).await?,
                };
                let s = session.insert(s);
                imap::messages(s, folder).await
            };
            match tokio::time::timeout(left, attempt).await {
                Ok(Ok(messages)) if messages.len() >= n => {
                    if let Some(s) = session {
                        imap::logout(s).await;
                    }
                    return Ok(messages);
                }
                Ok(Ok(messages)) => seen = messages.len(),
                Ok(Err(e)) => {
                    // Try again on a new connection.
                    session = None;
                    last_error = Some(e.to_string());
                }
                Err(_) => {}
            }
            if Instant::now() >= deadline {
                let mut what = format!(
                    "{n} messages in {folder} of {}; {seen} were there",
                    account.address
                );
                if let Some(e) = last_error {
                    what.push_str(&format!(" (last error: {e})"));
                }
                return Err(HarnessError::Timeout {
                    what,
                    after: timeout,
                });
            }
            tokio::time::sleep(POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
        }
    }

    /// The raw bytes of every message in `folder` of `account` now, in UID
    /// order (none if the folder does not exist).
    pub async fn messages(
        &self,
        account: &Account,
        folder: &str,
    ) -> Result<Vec<Vec<u8>>, HarnessError> {
        let addr = self.imap_addr();
        with_timeout(format!("reading {folder} of {}", account.address), async {
            let mut session = imap::login(addr, &account.address, &account.password).await?;
            let messages = imap::messages(&mut session, folder).await?;
            imap::logout(session).await;
            Ok(messages)
        })
        .await
    }

    /// How many messages each of `folders` of `account` holds now (0 for a
    /// folder that does not exist), counted with EXAMINE on one session:
    /// no message is fetched, so it is cheap however full they are.
    pub async fn counts(
        &self,
        account: &Account,
        folders: &[&str],
    ) -> Result<Vec<usize>, HarnessError> {
        let addr = self.imap_addr();
        with_timeout(format!("counting the mail of {}", account.address), async {
            let mut session = imap::login(addr, &account.address, &account.password).await?;
            let mut out = Vec::with_capacity(folders.len());
            for f in folders {
                out.push(imap::examine(&mut session, f).await?.map_or(0, |(n, _)| n) as usize);
            }
            imap::logout(session).await;
            Ok(out)
        })
        .await
    }

    /// Stops the embedded server and waits for it (the real servers are
    /// left running). Dropping a `TestServer` stops the embedded server
    /// too, without waiting.
    pub async fn shutdown(self) {
        if let Inner::Embedded { server, _dir, .. } = self.inner {
            server.shutdown().await;
            drop(_dir);
        }
    }
}

/// Claims an unclaimed pool account that Postfix has no mail queued for.
async fn claim(real: &RealServers, hint: &str) -> Result<Account, HarnessError> {
    let claims = real.claims_dir();
    let pool = &real.pool;
    let started = Instant::now();
    loop {
        let queued = real.queued_recipients().await.unwrap_or_default();
        let offset = NEXT_POOL_INDEX.fetch_add(1, Ordering::Relaxed) + std::process::id() as usize;
        for i in 0..pool.len() {
            let user = &pool[(offset + i) % pool.len()];
            if queued.contains(&user.address) {
                continue;
            }
            if let Some(claim) = Claim::try_claim(&claims, &user.address, hint)? {
                tracing::debug!(address = %user.address, hint, "claimed a pool account");
                return Ok(Account {
                    address: user.address.clone(),
                    password: user.password.clone(),
                    _claim: Some(claim),
                });
            }
        }
        if started.elapsed() >= POOL_WAIT {
            return Err(HarnessError::PoolExhausted {
                pool: pool.len(),
                waited: POOL_WAIT,
                claims: claims.display().to_string(),
            });
        }
        tokio::time::sleep(POLL * 4).await;
    }
}

async fn with_timeout<T>(
    what: String,
    work: impl std::future::Future<Output = Result<T, HarnessError>>,
) -> Result<T, HarnessError> {
    tokio::time::timeout(OP_TIMEOUT, work)
        .await
        .map_err(|_| HarnessError::Timeout {
            what,
            after: OP_TIMEOUT,
        })?
}
