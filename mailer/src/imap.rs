//! Watching an IMAP mailbox, handing each mail to a handler exactly once.
//!
//! The watcher knows mailboxes, UIDs and flags; it knows nothing of money.
//! It takes the mails in the watched mailbox a batch at a time (at most
//! 64 mails and a few MiB of bodies) and:
//!
//! 1. fetches their sizes with one command, then the raw bytes of those
//!    under the limit with another (BODY.PEEK, so nothing changes on the
//!    server while we decide);
//! 2. opens ONE transaction on the caller's database and, for each mail
//!    whose key ([`crate::inbox::mail_key`]) is not already recorded
//!    there, calls the handler with the raw bytes and that transaction
//!    inside a savepoint of its own (a handler's failure rolls back only
//!    that mail's work, which is tried again later), records the outcome,
//!    stores the IMAP position, and commits once;
//! 3. only then moves the mails to the `Processed` or `Rejected` folder,
//!    one command per folder (UID MOVE, or COPY + \Deleted + EXPUNGE where
//!    MOVE is missing).
//!
//! A crash between 2 and 3 leaves the mails in the mailbox; the next pass
//! finds their keys recorded and just moves them. Nothing is ever deleted
//! without being copied, and a mail whose handling keeps failing for a
//! passing reason is rejected after a bounded number of tries.
//!
//! It waits for new mail with IDLE when the server offers it (re-issued
//! before the server's timeout) and polls otherwise, and reconnects with
//! jittered backoff after any error.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_imap::extensions::idle::IdleResponse;
use futures::{FutureExt, TryStreamExt};
use rand_core::{OsRng, RngCore};
use rusqlite::{Connection, Transaction};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_rustls::rustls;

use crate::clock;
use crate::inbox::{self, Seen};
use crate::limits::MAX_MAIL_BYTES;
use crate::smtp::TlsMode;

/// How to log in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImapAuth {
    /// The LOGIN command (every server has it).
    Login,
    /// AUTHENTICATE PLAIN (RFC 4616), as some providers require.
    Plain,
}

/// Where and how to watch. Debug output hides the password.
#[derive(Clone)]
pub struct ImapConfig {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub auth: ImapAuth,
    pub username: String,
    pub password: String,
    /// Extra CA certificates to trust (PEM), besides the system's.
    pub ca_file: Option<PathBuf>,
    /// The mailbox to watch.
    pub mailbox: String,
    /// Where handled mail goes.
    pub processed_folder: String,
    /// Where mail that could not be handled goes.
    pub rejected_folder: String,
    /// Use IDLE when the server offers it.
    pub use_idle: bool,
    /// Use MOVE when the server offers it (else COPY + \Deleted + EXPUNGE).
    pub use_move: bool,
    /// How often to look when not idling.
    pub poll_interval: Duration,
    /// IDLE is re-issued after this long (RFC 2177: under 29 minutes).
    pub idle_timeout: Duration,
    /// Timeout of connecting and of each command.
    pub timeout: Duration,
    /// After this many passing failures a mail is rejected.
    pub max_handler_attempts: u32,
}

impl fmt::Debug for ImapConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImapConfig")
            .field("server", &format!("{}:{}", self.host, self.port))
            .field("tls", &self.tls)
            .field("auth", &self.auth)
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .field("mailbox", &self.mailbox)
            .finish_non_exhaustive()
    }
}

impl ImapConfig {
    /// Defaults for everything but the server and the account.
    pub fn new(host: &str, port: u16, tls: TlsMode, username: &str, password: &str) -> ImapConfig {
        ImapConfig {
            host: host.to_string(),
            port,
            tls,
            auth: ImapAuth::Login,
            username: username.to_string(),
            password: password.to_string(),
            ca_file: None,
            mailbox: "INBOX".into(),
            processed_folder: "Processed".into(),
            rejected_folder: "Rejected".into(),
            use_idle: true,
            use_move: true,
            poll_interval: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(20 * 60),
            timeout: Duration::from_secs(30),
            max_handler_attempts: 5,
        }
    }
}

/// What a handler decided about one mail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Handled: its effects (and any reply) are in the transaction.
    Processed,
    /// Not handled (unreadable, not protocol mail, refused). Any error reply
    /// is in the transaction; the mail goes to the rejected folder.
    Rejected { reason: String },
}

/// A failure to handle a mail that may pass (a busy database): the
/// transaction is rolled back and the mail is tried again later.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HandlerError(pub String);

/// A mail as handed to the handler.
#[derive(Debug)]
pub struct IncomingMail<'a> {
    pub uid: u32,
    /// The deduplication key (Message-ID, or a digest of the bytes).
    pub key: &'a str,
    pub raw: &'a [u8],
}

/// Decides what to do with each mail, inside the watcher's transaction.
pub trait MailHandler: Send {
    fn handle(
        &mut self,
        tx: &Transaction<'_>,
        mail: &IncomingMail<'_>,
    ) -> Result<Disposition, HandlerError>;
}

impl<F> MailHandler for F
where
    F: FnMut(&Transaction<'_>, &IncomingMail<'_>) -> Result<Disposition, HandlerError> + Send,
{
    fn handle(
        &mut self,
        tx: &Transaction<'_>,
        mail: &IncomingMail<'_>,
    ) -> Result<Disposition, HandlerError> {
        self(tx, mail)
    }
}

/// Why the watcher stopped or a pass failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    #[error("IMAP: {0}")]
    Imap(#[from] async_imap::error::Error),
    #[error("network: {0}")]
    Io(#[from] io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("the server refused the login of {user}: {message}")]
    Login { user: String, message: String },
    #[error("the server does not answer in time ({0})")]
    Timeout(&'static str),
    #[error("the server did not offer STARTTLS")]
    NoStarttls,
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("the database rolled back a whole batch after a handler failed ({0})")]
    BatchLost(String),
}

impl WatchError {
    /// Errors that reconnecting cannot fix: a database error (our own state
    /// is in doubt).
    pub fn is_fatal(&self) -> bool {
        matches!(self, WatchError::Db(_))
    }
}

/// What one pass over the mailbox did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    pub processed: usize,
    pub rejected: usize,
    /// Mails already handled before (delivered twice, or moved late).
    pub duplicates: usize,
    /// Mails left for later after a passing handler failure.
    pub deferred: usize,
}

impl PassReport {
    pub fn handled(&self) -> usize {
        self.processed + self.rejected + self.duplicates
    }
    fn add(&mut self, o: &PassReport) {
        self.processed += o.processed;
        self.rejected += o.rejected;
        self.duplicates += o.duplicates;
        self.deferred += o.deferred;
    }
}

/// The stream under an IMAP session: plain TCP or TLS over TCP.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stream::Plain(_) => f.write_str("Stream::Plain"),
            Stream::Tls(_) => f.write_str("Stream::Tls"),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

type Session = async_imap::Session<Stream>;

/// A rustls client configuration trusting the system's roots and, if
/// given, the CAs in `ca_file`.
pub fn tls_config(ca_file: Option<&PathBuf>) -> Result<rustls::ClientConfig, WatchError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A system root that rustls cannot parse is skipped, as browsers do.
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| WatchError::Tls(format!("cannot read CA file {}: {e}", path.display())))?;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(|e| WatchError::Tls(format!("{}: {e}", path.display())))?;
            roots
                .add(cert)
                .map_err(|e| WatchError::Tls(format!("{}: {e}", path.display())))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| WatchError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

async fn with_timeout<T>(
    d: Duration,
    what: &'static str,
    f: impl Future<Output = Result<T, WatchError>>,
) -> Result<T, WatchError> {
    tokio::time::timeout(d, f)
        .await
        .map_err(|_| WatchError::Timeout(what))?
}

async fn tls_wrap(cfg: &ImapConfig, tcp: TcpStream) -> Result<Stream, WatchError> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_config(cfg.ca_file.as_ref())?));
    let name = rustls::pki_types::ServerName::try_from(cfg.host.clone())
        .map_err(|e| WatchError::Tls(format!("{}: {e}", cfg.host)))?;
    let tls = connector.connect(name, tcp).await?;
    Ok(Stream::Tls(Box::new(tls)))
}

/// Connects and logs in. Returns the session and the capabilities as
/// advertised after login (servers may add MOVE only then).
async fn connect(cfg: &ImapConfig) -> Result<(Session, Caps), WatchError> {
    let tcp = with_timeout(cfg.timeout, "connect", async {
        Ok(TcpStream::connect((cfg.host.as_str(), cfg.port)).await?)
    })
    .await?;
    tcp.set_nodelay(true)?;
    let stream = match cfg.tls {
        TlsMode::None => Stream::Plain(tcp),
        TlsMode::Implicit => with_timeout(cfg.timeout, "TLS handshake", tls_wrap(cfg, tcp)).await?,
        TlsMode::Starttls => {
            with_timeout(cfg.timeout, "STARTTLS", async {
                let tcp = starttls(tcp).await?;
                tls_wrap(cfg, tcp).await
            })
            .await?
        }
    };
    let mut client = async_imap::Client::new(stream);
    if cfg.tls != TlsMode::Starttls {
        // The greeting (after STARTTLS there is none).
        with_timeout(cfg.timeout, "greeting", async {
            client
                .read_response()
                .await?
                .ok_or(WatchError::Timeout("greeting"))?;
            Ok(())
        })
        .await?;
    }
    let mut session = with_timeout(cfg.timeout, "login", async {
        let login_error = |(e, _): (async_imap::error::Error, _)| WatchError::Login {
            user: cfg.username.clone(),
            message: e.to_string(),
        };
        match cfg.auth {
            ImapAuth::Login => client
                .login(&cfg.username, &cfg.password)
                .await
                .map_err(login_error),
            ImapAuth::Plain => client
                .authenticate(
                    "PLAIN",
                    PlainAuth {
                        user: cfg.username.clone(),
                        password: cfg.password.clone(),
                    },
                )
                .await
                .map_err(login_error),
        }
    })
    .await?;
    let caps = with_timeout(cfg.timeout, "CAPABILITY", async {
        let c = session.capabilities().await?;
        Ok(Caps {
            idle: c.has_str("IDLE"),
            mv: c.has_str("MOVE"),
            uidplus: c.has_str("UIDPLUS"),
        })
    })
    .await?;
    Ok((session, caps))
}

/// SASL PLAIN: one response, `\0user\0password`.
struct PlainAuth {
    user: String,
    password: String,
}

impl async_imap::Authenticator for PlainAuth {
    type Response = Vec<u8>;
    fn process(&mut self, _challenge: &[u8]) -> Vec<u8> {
        let mut r = Vec::with_capacity(self.user.len() + self.password.len() + 2);
        r.push(0);
        r.extend_from_slice(self.user.as_bytes());
        r.push(0);
        r.extend_from_slice(self.password.as_bytes());
        r
    }
}

/// Upgrades a fresh connection with STARTTLS: reads the greeting, asks,
/// and waits for the go-ahead. Nothing the server sent before the
/// handshake is carried over into the TLS session.
async fn starttls(tcp: TcpStream) -> Result<TcpStream, WatchError> {
    let mut reader = BufReader::new(tcp);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    if !line.starts_with("* OK") {
        return Err(WatchError::NoStarttls);
    }
    reader.get_mut().write_all(b"s1 STARTTLS\r\n").await?;
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Err(WatchError::NoStarttls);
        }
        if line.starts_with("s1 OK") {
            break;
        }
        if line.starts_with("s1 ") {
            return Err(WatchError::NoStarttls);
        }
    }
    if !reader.buffer().is_empty() {
        // Data after the go-ahead but before the handshake: an injection.
        return Err(WatchError::Tls(
            "data injected before the TLS handshake".into(),
        ));
    }
    Ok(reader.into_inner())
}

#[derive(Clone, Copy, Debug)]
struct Caps {
    idle: bool,
    mv: bool,
    uidplus: bool,
}

/// Watches one mailbox and hands each mail to a handler, exactly once.
pub struct Watcher<H> {
    cfg: ImapConfig,
    db: Connection,
    handler: H,
    /// Notified after each commit that may have queued mail.
    outbox_wake: Option<Arc<Notify>>,
    /// Mails whose handling failed for a passing reason: not before then.
    retry_after: HashMap<u32, Instant>,
    total: PassReport,
    /// Connection failures in a row (reset by a successful login).
    failures: u32,
}

impl<H> fmt::Debug for Watcher<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watcher")
            .field("server", &format!("{}:{}", self.cfg.host, self.cfg.port))
            .field("user", &self.cfg.username)
            .field("mailbox", &self.cfg.mailbox)
            .finish()
    }
}

impl<H: MailHandler> Watcher<H> {
    /// A watcher over `db`, which must be the handler's own database (the
    /// watcher's tables are created in it).
    pub fn new(cfg: ImapConfig, db: Connection, handler: H) -> Result<Watcher<H>, WatchError> {
        inbox::migrate(&db)?;
        Ok(Watcher {
            cfg,
            db,
            handler,
            outbox_wake: None,
            retry_after: HashMap::new(),
            total: PassReport::default(),
            failures: 0,
        })
    }

    /// Wakes the outbox sender after each commit.
    pub fn with_outbox_wake(mut self, wake: Arc<Notify>) -> Watcher<H> {
        self.outbox_wake = Some(wake);
        self
    }

    /// Totals since this watcher was made.
    pub fn totals(&self) -> PassReport {
        self.total
    }

    pub fn handler(&self) -> &H {
        &self.handler
    }
    pub fn handler_mut(&mut self) -> &mut H {
        &mut self.handler
    }
    pub fn db(&self) -> &Connection {
        &self.db
    }

    /// Connects, handles everything in the mailbox now, and logs out. For
    /// programs that run now and then (the wallet's `sync`).
    pub async fn run_once(&mut self) -> Result<PassReport, WatchError> {
        let (mut session, caps) = connect(&self.cfg).await?;
        let report = self.prepare_and_pass(&mut session, caps).await?;
        let _ = tokio::time::timeout(self.cfg.timeout, session.logout()).await;
        Ok(report)
    }

    /// Watches until `shutdown` completes, reconnecting after errors with
    /// jittered exponential backoff (1 s to 60 s). Returns early only on a
    /// database error.
    pub async fn run(&mut self, shutdown: impl Future<Output = ()>) -> Result<(), WatchError> {
        // Shared, so that the session loop can wait on it too (to log out
        // cleanly) while we also stop at once if it fires mid-command.
        let mut shutdown = Box::pin(shutdown).shared();
        loop {
            let mut inner = shutdown.clone();
            let result = tokio::select! {
                _ = &mut shutdown => return Ok(()),
                r = self.session_loop(&mut inner) => r,
            };
            match result {
                Ok(()) => return Ok(()),
                Err(e) if e.is_fatal() => return Err(e),
                Err(e) => {
                    self.failures = self.failures.saturating_add(1);
                    let base = 1u64 << self.failures.min(6);
                    let jitter = OsRng.next_u64() % (base * 500 + 1);
                    let wait =
                        Duration::from_millis(base * 500 + jitter).min(Duration::from_secs(60));
                    tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "IMAP connection failed; reconnecting");
                    tokio::select! {
                        _ = &mut shutdown => return Ok(()),
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    /// One connection's life: handle what is there, then wait for more.
    /// Returns Ok(()) only when `shutdown` completed.
    async fn session_loop<S: Future<Output = ()> + Unpin>(
        &mut self,
        shutdown: &mut S,
    ) -> Result<(), WatchError> {
        let (mut session, caps) = connect(&self.cfg).await?;
        self.failures = 0;
        tracing::info!(server = %self.cfg.host, user = %self.cfg.username, idle = caps.idle, r#move = caps.mv, "IMAP connected");
        self.prepare_and_pass(&mut session, caps).await?;
        loop {
            // Mail that arrived during the pass was announced (EXISTS) in
            // answer to one of our commands, and will not be announced again
            // in IDLE: look again before waiting.
            if saw_new_mail(&mut session) {
                self.pass(&mut session, caps).await?;
                continue;
            }
            let idle = self.cfg.use_idle && caps.idle;
            if idle {
                let mut handle = session.idle();
                with_timeout(self.cfg.timeout, "IDLE", async {
                    handle.init().await?;
                    Ok(())
                })
                .await?;
                let stopped = {
                    let (wait, _stop) = handle.wait_with_timeout(self.cfg.idle_timeout);
                    tokio::select! {
                        r = wait => match r? {
                            IdleResponse::NewData(_) | IdleResponse::Timeout | IdleResponse::ManualInterrupt => false,
                        },
                        _ = &mut *shutdown => true,
                    }
                };
                // DONE within a bound: a server that does not answer it is
                // treated as a dead connection.
                session =
                    with_timeout(self.cfg.timeout, "DONE", async { Ok(handle.done().await?) })
                        .await?;
                if stopped {
                    let _ = tokio::time::timeout(self.cfg.timeout, session.logout()).await;
                    return Ok(());
                }
            } else {
                tokio::select! {
                    _ = tokio::time::sleep(self.cfg.poll_interval) => {}
                    _ = &mut *shutdown => {
                        let _ = tokio::time::timeout(self.cfg.timeout, session.logout()).await;
                        return Ok(());
                    }
                }
                with_timeout(self.cfg.timeout, "NOOP", async {
                    session.noop().await?;
                    Ok(())
                })
                .await?;
            }
            self.pass(&mut session, caps).await?;
        }
    }

    async fn prepare_and_pass(
        &mut self,
        session: &mut Session,
        caps: Caps,
    ) -> Result<PassReport, WatchError> {
        let t = self.cfg.timeout;
        // Make sure the folders exist.
        let names: Vec<String> = with_timeout(t, "LIST", async {
            let list = session.list(Some(""), Some("*")).await?;
            let names: Vec<_> = list.try_collect().await?;
            Ok(names.iter().map(|n| n.name().to_string()).collect())
        })
        .await?;
        for folder in [&self.cfg.processed_folder, &self.cfg.rejected_folder] {
            if !names.iter().any(|n| n == folder) {
                with_timeout(t, "CREATE", async {
                    session.create(folder).await?;
                    Ok(())
                })
                .await?;
            }
        }
        let mailbox = with_timeout(t, "SELECT", async {
            Ok(session.select(&self.cfg.mailbox).await?)
        })
        .await?;
        // async-imap answers SELECT on a dead connection with an empty
        // mailbox; every real server sends UIDVALIDITY (RFC 3501 requires
        // it), so its absence means the connection is gone.
        let Some(uidvalidity) = mailbox.uid_validity else {
            return Err(WatchError::Io(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "SELECT answered without UIDVALIDITY",
            )));
        };
        match inbox::position(&self.db, &self.cfg.mailbox)? {
            Some((v, _)) if v == uidvalidity => {}
            Some((v, last)) => {
                // The server renumbered the mailbox: old UIDs mean nothing.
                // Every mail still in it is looked at again; the keys
                // recorded in the database keep that from repeating effects.
                tracing::warn!(
                    old = v,
                    new = uidvalidity,
                    last_uid = last,
                    "UIDVALIDITY changed; resynchronising"
                );
                inbox::set_position(&self.db, &self.cfg.mailbox, uidvalidity, 0)?;
                self.retry_after.clear();
            }
            None => inbox::set_position(&self.db, &self.cfg.mailbox, uidvalidity, 0)?,
        }
        self.pass(session, caps).await
    }

    /// Handles every mail now in the mailbox, a batch at a time.
    async fn pass(&mut self, session: &mut Session, caps: Caps) -> Result<PassReport, WatchError> {
        let t = self.cfg.timeout;
        // Announcements so far are covered by the search below.
        let _ = saw_new_mail(session);
        let mut report = PassReport::default();
        let uids = with_timeout(t, "UID SEARCH", async {
            Ok(session.uid_search("ALL").await?)
        })
        .await?;
        let mut uids: Vec<u32> = uids.into_iter().collect();
        uids.sort_unstable();
        let now = Instant::now();
        self.retry_after
            .retain(|uid, _| uids.binary_search(uid).is_ok());
        let mut todo = Vec::with_capacity(uids.len());
        for uid in uids {
            if self.retry_after.get(&uid).is_some_and(|t| *t > now) {
                report.deferred += 1;
                self.total.deferred += 1;
            } else {
                todo.push(uid);
            }
        }
        for chunk in todo.chunks(BATCH_MAILS) {
            let sizes = fetch_sizes(session, t, chunk).await?;
            // Batches of at most BATCH_BYTES of bodies (a bigger mail goes
            // alone); a mail over the limit is rejected unread.
            let mut start = 0;
            while start < sizes.len() {
                let mut end = start;
                let mut bytes = 0usize;
                while end < sizes.len() {
                    let size = sizes[end].1 as usize;
                    let fetched = if size > MAX_MAIL_BYTES { 0 } else { size };
                    if end > start && bytes.saturating_add(fetched) > BATCH_BYTES {
                        break;
                    }
                    bytes = bytes.saturating_add(fetched);
                    end += 1;
                }
                let one = self.batch(session, caps, &sizes[start..end]).await?;
                report.add(&one);
                start = end;
            }
        }
        if report.handled() > 0 {
            tracing::debug!(?report, "pass done");
        }
        Ok(report)
    }

    /// One batch: fetch the bodies, handle them all in one transaction,
    /// then file them, one command per folder.
    async fn batch(
        &mut self,
        session: &mut Session,
        caps: Caps,
        sizes: &[(u32, u32)],
    ) -> Result<PassReport, WatchError> {
        let wanted: Vec<u32> = sizes
            .iter()
            .filter(|(_, size)| *size as usize <= MAX_MAIL_BYTES)
            .map(|(uid, _)| *uid)
            .collect();
        let mut bodies = fetch_bodies(session, self.cfg.timeout, &wanted).await?;
        let mut mails = Vec::with_capacity(sizes.len());
        for &(uid, size) in sizes {
            let raw = if size as usize > MAX_MAIL_BYTES {
                Vec::new()
            } else {
                match bodies.remove(&uid) {
                    Some(b) => b,
                    None => continue, // gone meanwhile (another client moved it)
                }
            };
            mails.push(Fetched { uid, size, raw });
        }
        let decisions = self.decide(&mails)?;
        let mut report = PassReport::default();
        let mut moves: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for (uid, decision) in decisions {
            match decision {
                Decision::Handled { folder, outcome } => {
                    report.processed += usize::from(outcome == Outcome::Processed);
                    report.rejected += usize::from(outcome == Outcome::Rejected);
                    report.duplicates += usize::from(outcome == Outcome::Duplicate);
                    moves.entry(folder).or_default().push(uid);
                }
                Decision::Later => report.deferred += 1,
            }
        }
        // Counted in the totals now: the handling is committed, whatever
        // happens to the moves.
        self.total.add(&report);
        for (folder, uids) in &moves {
            self.move_mail(session, caps, uids, folder).await?;
        }
        Ok(report)
    }

    /// The database half of handling a batch: one IMMEDIATE transaction,
    /// each mail in a savepoint of its own so that a handler's failure
    /// undoes only that mail's work, and one commit (one sync to disk) for
    /// all. The IMAP position is stored in the same transaction.
    fn decide(&mut self, mails: &[Fetched]) -> Result<Vec<(u32, Decision)>, WatchError> {
        if mails.is_empty() {
            return Ok(Vec::new());
        }
        let now = clock::now();
        // IMMEDIATE: take the write lock now. A deferred transaction reads
        // first (the lookup below) and upgrades on the handler's first
        // write; in WAL mode, if another connection (the outbox sender)
        // committed in between, that upgrade fails at once with
        // SQLITE_BUSY_SNAPSHOT, whatever the busy timeout, and the mail
        // counts a failed attempt. Taken here, the lock waits out the
        // sender's short transactions under the connection's busy timeout.
        let tx = self
            .db
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut out = Vec::with_capacity(mails.len());
        // Backoffs to set once the batch is committed.
        let mut waits = Vec::new();
        let mut last_uid = None;
        for mail in mails {
            let uid = mail.uid;
            let key = if mail.raw.is_empty() {
                format!("size:{uid}:{}", mail.size)
            } else {
                inbox::mail_key(&mail.raw)
            };
            // A mail seen before, or earlier in this very batch (the same
            // mail delivered twice): the transaction sees its own writes.
            if let Some(seen) = inbox::seen(&tx, &key)? {
                let folder = match seen {
                    Seen::Processed => self.cfg.processed_folder.clone(),
                    Seen::Rejected(_) => self.cfg.rejected_folder.clone(),
                };
                tracing::info!(uid, key, "already handled; moving it along");
                out.push((
                    uid,
                    Decision::Handled {
                        folder,
                        outcome: Outcome::Duplicate,
                    },
                ));
                last_uid = Some(uid);
                continue;
            }
            tx.execute_batch("SAVEPOINT mailer_mail")?;
            let result = if mail.raw.is_empty() {
                Ok(Disposition::Rejected {
                    reason: format!(
                        "mail of {} bytes is over the limit of {MAX_MAIL_BYTES}",
                        mail.size
                    ),
                })
            } else {
                self.handler.handle(
                    &tx,
                    &IncomingMail {
                        uid,
                        key: &key,
                        raw: &mail.raw,
                    },
                )
            };
            let decision = match result {
                Ok(disposition) => {
                    let (seen, folder, outcome) = match &disposition {
                        Disposition::Processed => (
                            Seen::Processed,
                            self.cfg.processed_folder.clone(),
                            Outcome::Processed,
                        ),
                        Disposition::Rejected { reason } => {
                            tracing::warn!(uid, key, reason, "mail rejected");
                            (
                                Seen::Rejected(reason.clone()),
                                self.cfg.rejected_folder.clone(),
                                Outcome::Rejected,
                            )
                        }
                    };
                    inbox::record(&tx, &key, &seen, now)?;
                    tx.execute_batch("RELEASE mailer_mail")?;
                    Decision::Handled { folder, outcome }
                }
                Err(e) => {
                    if tx.is_autocommit() {
                        // SQLite rolled the whole transaction back (a full
                        // disk, an I/O error): the batch is lost, nothing
                        // is filed. Count this mail's failure, and let the
                        // reconnection look at the others again.
                        drop(tx);
                        inbox::count_failure(&self.db, &key, &e.0)?;
                        return Err(WatchError::BatchLost(e.0));
                    }
                    // Undo whatever the handler did, and only that.
                    tx.execute_batch("ROLLBACK TO mailer_mail; RELEASE mailer_mail")?;
                    let attempts = inbox::count_failure(&tx, &key, &e.0)?;
                    if attempts >= self.cfg.max_handler_attempts {
                        let reason = format!("gave up after {attempts} failed attempts: {}", e.0);
                        tracing::error!(uid, key, reason, "mail rejected");
                        inbox::record(&tx, &key, &Seen::Rejected(reason), now)?;
                        Decision::Handled {
                            folder: self.cfg.rejected_folder.clone(),
                            outcome: Outcome::Rejected,
                        }
                    } else {
                        let wait = Duration::from_secs(1u64 << attempts.min(8));
                        tracing::warn!(uid, key, attempts, error = %e.0, "handling failed; will try again");
                        waits.push((uid, wait));
                        Decision::Later
                    }
                }
            };
            if matches!(decision, Decision::Handled { .. }) {
                last_uid = Some(uid);
            }
            out.push((uid, decision));
        }
        if let Some(uid) = last_uid {
            let (v, last) = inbox::position(&tx, &self.cfg.mailbox)?.unwrap_or((0, 0));
            if uid > last {
                inbox::set_position(&tx, &self.cfg.mailbox, v, uid)?;
            }
        }
        tx.commit()?;
        if let Some(w) = &self.outbox_wake {
            w.notify_one();
        }
        let at = Instant::now();
        for (uid, d) in &out {
            if matches!(d, Decision::Handled { .. }) {
                self.retry_after.remove(uid);
            }
        }
        for (uid, wait) in waits {
            self.retry_after.insert(uid, at + wait);
        }
        Ok(out)
    }

    /// Files the mails `uids` (already handled and committed) in `folder`.
    async fn move_mail(
        &mut self,
        session: &mut Session,
        caps: Caps,
        uids: &[u32],
        folder: &str,
    ) -> Result<(), WatchError> {
        let t = self.cfg.timeout;
        let set = uid_set(uids);
        if caps.mv && self.cfg.use_move {
            with_timeout(t, "UID MOVE", async {
                session.uid_mv(&set, folder).await?;
                Ok(())
            })
            .await
        } else {
            with_timeout(t, "UID COPY + EXPUNGE", async {
                session.uid_copy(&set, folder).await?;
                let _: Vec<_> = session
                    .uid_store(&set, "+FLAGS.SILENT (\\Deleted)")
                    .await?
                    .try_collect()
                    .await?;
                if caps.uidplus {
                    let _: Vec<_> = session.uid_expunge(&set).await?.try_collect().await?;
                } else {
                    let _: Vec<_> = session.expunge().await?.try_collect().await?;
                }
                Ok(())
            })
            .await
        }
    }
}

/// Most mails handled in one transaction: bounds the memory of a batch
/// and how long it holds the database's write lock.
const BATCH_MAILS: usize = 64;
/// Most bytes of bodies fetched for one batch (a single bigger mail, up to
/// `MAX_MAIL_BYTES`, goes alone).
const BATCH_BYTES: usize = 4 * 1024 * 1024;

/// A fetched mail; `raw` is empty for a mail over the size limit.
struct Fetched {
    uid: u32,
    size: u32,
    raw: Vec<u8>,
}

/// An IMAP sequence set of `uids` (sorted or not), ranges folded:
/// `1:3,7,9:10`.
fn uid_set(uids: &[u32]) -> String {
    let mut sorted = uids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = String::new();
    let mut i = 0;
    while i < sorted.len() {
        let first = sorted[i];
        let mut last = first;
        while i + 1 < sorted.len() && sorted[i + 1] == last.saturating_add(1) {
            i += 1;
            last = sorted[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if first == last {
            out.push_str(&first.to_string());
        } else {
            out.push_str(&format!("{first}:{last}"));
        }
        i += 1;
    }
    out
}

/// `UID FETCH set (UID RFC822.SIZE)`: the size of each of `uids` still
/// there, in UID order. A mail the server says nothing about was moved
/// away meanwhile (or the connection was cut between responses, which
/// async-imap reports as success; the next command finds out).
async fn fetch_sizes(
    session: &mut Session,
    timeout: Duration,
    uids: &[u32],
) -> Result<Vec<(u32, u32)>, WatchError> {
    if uids.is_empty() {
        return Ok(Vec::new());
    }
    with_timeout(timeout, "UID FETCH", async {
        let fetches: Vec<_> = session
            .uid_fetch(uid_set(uids), "(UID RFC822.SIZE)")
            .await?
            .try_collect()
            .await?;
        let mut sizes: BTreeMap<u32, u32> = BTreeMap::new();
        for f in &fetches {
            if let (Some(uid), Some(size)) = (f.uid, f.size) {
                if uids.contains(&uid) {
                    sizes.insert(uid, size);
                }
            }
        }
        Ok(sizes.into_iter().collect())
    })
    .await
}

/// `UID FETCH set (UID BODY.PEEK[])`: the raw bytes of each of `uids`
/// still there (nothing changes on the server).
async fn fetch_bodies(
    session: &mut Session,
    timeout: Duration,
    uids: &[u32],
) -> Result<HashMap<u32, Vec<u8>>, WatchError> {
    if uids.is_empty() {
        return Ok(HashMap::new());
    }
    with_timeout(timeout, "UID FETCH", async {
        let mut stream = session
            .uid_fetch(uid_set(uids), "(UID BODY.PEEK[])")
            .await?;
        let mut bodies = HashMap::with_capacity(uids.len());
        while let Some(f) = stream.try_next().await? {
            if let (Some(uid), Some(body)) = (f.uid, f.body()) {
                if uids.contains(&uid) {
                    bodies.insert(uid, body.to_vec());
                }
            }
        }
        Ok(bodies)
    })
    .await
}

/// Drains the session's unsolicited responses; true if any announced mail.
fn saw_new_mail(session: &mut Session) -> bool {
    let mut new = false;
    while let Ok(r) = session.unsolicited_responses.try_recv() {
        if matches!(
            r,
            async_imap::types::UnsolicitedResponse::Exists(_)
                | async_imap::types::UnsolicitedResponse::Recent(_)
        ) {
            new = true;
        }
    }
    new
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Processed,
    Rejected,
    Duplicate,
}

enum Decision {
    Handled { folder: String, outcome: Outcome },
    Later,
}
