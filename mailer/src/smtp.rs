//! SMTP submission (lettre on tokio) and the loop that drains the outbox.
//!
//! [`SmtpClient`] speaks plain SMTP, STARTTLS or implicit TLS (rustls), with
//! AUTH PLAIN/LOGIN, and keeps connections in a small pool so a burst of
//! mail reuses its sessions. [`run_sender`] is the outbox's only reader: it
//! counts the attempts of a batch before making them, sends several mails
//! at once, retries 4xx with jittered backoff, records 5xx as failed, and
//! gives up after a bounded number of attempts.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::{stream, StreamExt};
use lettre::address::Envelope as SmtpEnvelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::PoolConfig;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use rand_core::{OsRng, RngCore};
use rusqlite::{Connection, Transaction, TransactionBehavior};
use tokio::sync::Notify;

use crate::clock;
use crate::money::Timestamp;
use crate::outbox::{self, OutboxError};

/// How the connection to a mail server is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// No TLS (only for servers on loopback or a trusted network).
    None,
    /// Plain connection upgraded with STARTTLS; refuses to go on without it.
    Starttls,
    /// TLS from the first byte (SMTPS on 465, IMAPS on 993).
    Implicit,
}

/// Where and how to submit mail. Debug output hides the password.
#[derive(Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub username: Option<String>,
    pub password: Option<String>,
    /// A PEM file of extra CA certificates to trust (a private CA); the
    /// system's roots are trusted as well.
    pub ca_file: Option<PathBuf>,
    /// Timeout of each SMTP command.
    pub timeout: Duration,
}

impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("server", &format!("{}:{}", self.host, self.port))
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .finish_non_exhaustive()
    }
}

/// Why a client could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SmtpSetupError {
    #[error("cannot read CA file {path}: {source}")]
    CaFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS setup for {host}: {message}")]
    Tls { host: String, message: String },
}

/// The outcome of one failed submission.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth trying again later: 4xx, a lost connection, a timeout, or a
    /// server that refuses our credentials (a configuration problem that
    /// the operator can fix, not a property of this mail).
    #[error("temporary failure: {0}")]
    Transient(String),
    /// The server refused this mail for good (5xx).
    #[error("permanent failure: {0}")]
    Permanent(String),
}

/// Connections kept open between sends: as many as the sender uses at
/// once by default, so a burst reuses them instead of reconnecting.
const POOL_SIZE: u32 = 8;

/// A pooled SMTP client. Clones share the pool, and sends may run
/// concurrently, each on its own connection.
#[derive(Clone)]
pub struct SmtpClient {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    server: String,
}

impl std::fmt::Debug for SmtpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SmtpClient({})", self.server)
    }
}

impl SmtpClient {
    pub fn new(cfg: &SmtpConfig) -> Result<SmtpClient, SmtpSetupError> {
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(cfg.host.clone())
            .port(cfg.port)
            .timeout(Some(cfg.timeout))
            .pool_config(
                PoolConfig::new()
                    .max_size(POOL_SIZE)
                    .idle_timeout(Duration::from_secs(60)),
            );
        if cfg.tls != TlsMode::None {
            let mut params = TlsParameters::builder(cfg.host.clone());
            if let Some(path) = &cfg.ca_file {
                let pem = std::fs::read(path).map_err(|source| SmtpSetupError::CaFile {
                    path: path.clone(),
                    source,
                })?;
                let cert = Certificate::from_pem(&pem).map_err(|e| SmtpSetupError::Tls {
                    host: cfg.host.clone(),
                    message: e.to_string(),
                })?;
                params = params.add_root_certificate(cert);
            }
            let params = params.build_rustls().map_err(|e| SmtpSetupError::Tls {
                host: cfg.host.clone(),
                message: e.to_string(),
            })?;
            b = b.tls(match cfg.tls {
                TlsMode::Implicit => Tls::Wrapper(params),
                _ => Tls::Required(params),
            });
        }
        if let (Some(user), Some(pass)) = (&cfg.username, &cfg.password) {
            b = b
                .credentials(Credentials::new(user.clone(), pass.clone()))
                .authentication(vec![Mechanism::Plain, Mechanism::Login]);
        }
        Ok(SmtpClient {
            transport: b.build(),
            server: format!("{}:{}", cfg.host, cfg.port),
        })
    }

    /// Submits one rendered mail from `from` to `to`.
    pub async fn send(&self, from: &str, to: &str, raw: &[u8]) -> Result<(), SendError> {
        let parse = |a: &str| {
            a.trim()
                .parse::<Address>()
                .map_err(|e| SendError::Permanent(format!("bad address {a:?}: {e}")))
        };
        let envelope = SmtpEnvelope::new(Some(parse(from)?), vec![parse(to)?])
            .map_err(|e| SendError::Permanent(e.to_string()))?;
        match self.transport.send_raw(&envelope, raw).await {
            Ok(_) => Ok(()),
            Err(e) => Err(classify(&e)),
        }
    }
}

fn classify(e: &lettre::transport::smtp::Error) -> SendError {
    let text = e.to_string();
    match e.status() {
        // 530/534/535: authentication trouble is the operator's to fix;
        // keep the mail and retry (bounded) rather than dropping it.
        Some(code) if e.is_permanent() => {
            let c = code.to_string();
            if c.starts_with("53") {
                SendError::Transient(text)
            } else {
                SendError::Permanent(text)
            }
        }
        _ => SendError::Transient(text),
    }
}

/// How the outbox is drained.
#[derive(Clone, Debug)]
pub struct SenderPolicy {
    /// After this many attempts a mail is marked failed.
    pub max_attempts: u32,
    /// First retry delay, doubled each attempt, in seconds.
    pub base_delay_secs: u64,
    pub max_delay_secs: u64,
    /// Most mails taken per pass.
    pub batch: usize,
    /// Most mails being sent at once (each on its own connection).
    pub concurrency: usize,
}

impl Default for SenderPolicy {
    fn default() -> Self {
        SenderPolicy {
            max_attempts: 12,
            base_delay_secs: 10,
            max_delay_secs: 3_600,
            batch: 64,
            concurrency: POOL_SIZE as usize,
        }
    }
}

/// What one pass over the outbox did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrainReport {
    pub sent: usize,
    pub retrying: usize,
    pub failed: usize,
}

/// Sends every mail due at `now`, once each. Safe to call from several
/// processes only if they use different databases.
///
/// The attempts of the whole batch are counted in one transaction before
/// any is made; up to `policy.concurrency` mails are then in flight at
/// once (each on its own pooled connection), and the outcomes are recorded
/// together in a second transaction. A crash before that records nothing:
/// every mail of the batch is sent again at its `retry_at` (the receiver
/// keeps one by its Message-ID).
pub async fn drain_once(
    conn: &Connection,
    smtp: &SmtpClient,
    policy: &SenderPolicy,
    now: Timestamp,
) -> Result<DrainReport, OutboxError> {
    let mut report = DrainReport::default();
    let due = outbox::due(conn, now, policy.batch)?;
    if due.is_empty() {
        return Ok(report);
    }
    let plan: Vec<(outbox::QueuedMail, u64)> = due
        .into_iter()
        .map(|mail| {
            let delay = outbox::backoff_secs(
                mail.attempts,
                policy.base_delay_secs,
                policy.max_delay_secs,
                OsRng.next_u64(),
            );
            (mail, delay)
        })
        .collect();
    // Counted and committed before the attempts: if we crash while
    // sending, each mail is retried at its `retry_at`, not in a tight loop.
    {
        let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
        for (mail, delay) in &plan {
            outbox::begin_attempt(&tx, mail.id, now.saturating_add_secs(*delay))?;
        }
        tx.commit()?;
    }
    let outcomes: Vec<Result<(), SendError>> = stream::iter(plan.iter())
        .map(|(mail, _)| smtp.send(&mail.sender, &mail.recipient, &mail.raw))
        .buffered(policy.concurrency.max(1))
        .collect()
        .await;
    let done = clock::now();
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    for ((mail, delay), outcome) in plan.iter().zip(outcomes) {
        let attempt = mail.attempts + 1;
        match outcome {
            Ok(()) => {
                outbox::mark_sent(&tx, mail.id, done)?;
                report.sent += 1;
                tracing::debug!(message_id = %mail.message_id, to = %mail.recipient, "sent");
            }
            Err(SendError::Transient(e)) if attempt < policy.max_attempts => {
                outbox::mark_retry(&tx, mail.id, now.saturating_add_secs(*delay), &e)?;
                report.retrying += 1;
                tracing::warn!(message_id = %mail.message_id, attempt, retry_in_secs = delay, error = %e, "send failed, will retry");
            }
            Err(e) => {
                let why = match &e {
                    SendError::Transient(t) => {
                        format!("gave up after {attempt} attempts; last error: {t}")
                    }
                    SendError::Permanent(p) => p.clone(),
                };
                outbox::mark_failed(&tx, mail.id, done, &why)?;
                report.failed += 1;
                tracing::error!(message_id = %mail.message_id, to = %mail.recipient, error = %why, "mail failed for good");
            }
        }
    }
    tx.commit()?;
    Ok(report)
}

/// Drains the outbox until `shutdown` completes: a pass whenever `wake` is
/// notified (a handler committed new mail) or the next retry falls due.
pub async fn run_sender(
    conn: Connection,
    smtp: SmtpClient,
    policy: SenderPolicy,
    wake: Arc<Notify>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), OutboxError> {
    tokio::pin!(shutdown);
    loop {
        let now = clock::now();
        drain_once(&conn, &smtp, &policy, now).await?;
        // Sleep until the next mail is due (at most a minute, so that a
        // clock jump cannot stall us), or until woken.
        let wait = match outbox::next_due(&conn)? {
            Some(t) if t <= clock::now() => Duration::ZERO,
            Some(t) => Duration::from_secs((t.unix() - clock::now().unix()).min(60)),
            None => Duration::from_secs(60),
        };
        if wait.is_zero() {
            continue;
        }
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            _ = wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
