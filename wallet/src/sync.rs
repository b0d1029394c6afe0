//! `wallet sync`: the wallet's only I/O loop. One pass: advance what can
//! advance (payments waiting for their card, requests to send again),
//! send the outbox, read and handle the mailbox (IMAP, each mail once),
//! and send what that queued. With `wait`, passes repeat until nothing is
//! pending or the time is up.

use std::time::{Duration, Instant};

use mailer::imap::Watcher;
use mailer::settings::MailSettings;
use mailer::smtp::{drain_once, SenderPolicy, SmtpClient};
use rusqlite::Connection;

use crate::error::WalletError;
use crate::handler::{pay_waiting, WalletHandler};
use crate::home::Home;
use crate::ops::{self, Wallet};
use crate::view::{self, OpLine};

/// How often to ask each issuer for its revocation list.
pub const REVOCATIONS_EVERY_SECS: u64 = 6 * 3_600;

#[derive(Clone, Debug)]
pub struct SyncOptions {
    pub wait: bool,
    pub timeout: Duration,
    pub poll: Duration,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            wait: false,
            timeout: Duration::from_secs(300),
            poll: Duration::from_secs(2),
        }
    }
}

/// What a sync did, and what is still pending.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SyncReport {
    pub sent: usize,
    pub handled: usize,
    pub pending: Vec<OpLine>,
    pub unsent: u64,
    /// The last mail server trouble, if any pass had one.
    pub trouble: Option<String>,
    pub timed_out: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Wallet(#[from] WalletError),
    #[error(transparent)]
    Settings(#[from] mailer::settings::SettingsError),
    #[error("could not set up SMTP: {0}")]
    Smtp(#[from] mailer::smtp::SmtpSetupError),
    #[error("could not set up IMAP: {0}")]
    Imap(mailer::imap::WatchError),
    #[error("the outbox: {0}")]
    Outbox(#[from] mailer::outbox::OutboxError),
}

/// Advances what needs no mail to advance, in one transaction.
pub fn advance(conn: &mut Connection, w: &Wallet) -> Result<(), WalletError> {
    let now = mailer::clock::now();
    let tx = crate::db::immediate(conn)?;
    ops::resend_due(&tx, w, now)?;
    for i in crate::store::issuers(&tx)? {
        pay_waiting(&tx, w, i.currency, now)?;
    }
    ops::refresh_revocations(&tx, w, REVOCATIONS_EVERY_SECS, now)?;
    crate::exchange::advance(&tx, w, now)?;
    tx.commit()?;
    Ok(())
}

/// Runs sync passes; `progress` sees what is pending after each pass.
/// With `wait`, passes repeat until nothing waits for mail (ops waiting
/// for the user do not count) and the outbox is empty, or the time is up.
pub async fn sync(
    home: &Home,
    wallet: &Wallet,
    conn: &mut Connection,
    settings: &MailSettings,
    opts: &SyncOptions,
    progress: impl FnMut(&SyncReport),
) -> Result<SyncReport, SyncError> {
    sync_until(home, wallet, conn, settings, opts, progress, |_, r| {
        r.pending.iter().all(|p| p.waits_for_user) && r.unsent == 0
    })
    .await
}

/// Like [`sync`], but with `wait` the passes repeat until `stop` says so
/// (it sees the database and the report after each pass), or the time is
/// up.
pub async fn sync_until(
    home: &Home,
    wallet: &Wallet,
    conn: &mut Connection,
    settings: &MailSettings,
    opts: &SyncOptions,
    mut progress: impl FnMut(&SyncReport),
    mut stop: impl FnMut(&Connection, &SyncReport) -> bool,
) -> Result<SyncReport, SyncError> {
    let password = settings.password()?;
    let mut imap = settings.imap(&password);
    imap.use_idle = false;
    let smtp = SmtpClient::new(&settings.smtp(&password))?;
    let mut watcher = Watcher::new(
        imap,
        home.connect()?,
        WalletHandler {
            wallet: wallet.clone(),
        },
    )
    .map_err(SyncError::Imap)?;
    let policy = SenderPolicy {
        base_delay_secs: 2,
        max_delay_secs: 600,
        ..SenderPolicy::default()
    };
    let deadline = Instant::now() + opts.timeout;
    let mut report = SyncReport::default();
    loop {
        advance(conn, wallet)?;
        crate::crash_point("sync:advanced");
        let d = drain_once(conn, &smtp, &policy, mailer::clock::now()).await?;
        report.sent += d.sent;
        crate::crash_point("sync:sent");
        match watcher.run_once().await {
            Ok(pass) => report.handled += pass.handled(),
            Err(e) if e.is_fatal() => return Err(SyncError::Imap(e)),
            Err(e) => {
                tracing::warn!(error = %e, "could not read the mailbox; will try again");
                report.trouble = Some(format!("reading the mailbox: {e}"));
            }
        }
        crate::crash_point("sync:handled");
        advance(conn, wallet)?;
        let d = drain_once(conn, &smtp, &policy, mailer::clock::now()).await?;
        report.sent += d.sent;
        report.pending = view::pending(conn)?;
        report.unsent = view::unsent(conn)?;
        progress(&report);
        if !opts.wait || stop(conn, &report) {
            return Ok(report);
        }
        if Instant::now() >= deadline {
            report.timed_out = true;
            return Ok(report);
        }
        tokio::time::sleep(
            opts.poll
                .min(deadline.saturating_duration_since(Instant::now())),
        )
        .await;
    }
}
