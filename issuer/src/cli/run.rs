//! `issuer run`: the daemon. A `mailer::imap::Watcher` over
//! [`issuer::IssuerHandler`] and `mailer::smtp::run_sender`, each with its
//! own database connection, until SIGINT or SIGTERM.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use issuer::{Home, IssuerHandler};
use mailer::imap::Watcher;
use mailer::smtp::{run_sender, SenderPolicy, SmtpClient};
use rusqlite::Connection;
use tokio::sync::{watch, Notify};

use super::{load_settings, open, HomeArg};

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub home: HomeArg,
    /// How often to look for new mail when not idling, in milliseconds.
    #[arg(long, value_name = "N", default_value_t = 5_000)]
    pub poll_ms: u64,
    /// Poll even if the server offers IMAP IDLE.
    #[arg(long)]
    pub no_idle: bool,
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

pub fn run(a: RunArgs) -> Result<ExitCode> {
    init_logging();
    // Built first: the SMTP client's connection pool needs a runtime.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    rt.block_on(daemon(a))?;
    Ok(ExitCode::SUCCESS)
}

async fn daemon(a: RunArgs) -> Result<()> {
    let dir = a.home.home;
    let mail = load_settings(&dir)?;
    let password = mail.password()?;
    let (issuer, conn) = open(&dir)?;
    let sender_conn = Home::new(&dir)
        .connect()
        .context("could not open a second connection to the database")?;
    let status_conn = Home::new(&dir)
        .connect()
        .context("could not open a third connection to the database")?;
    let mut imap = mail.imap(&password);
    imap.use_idle = !a.no_idle;
    imap.poll_interval = Duration::from_millis(a.poll_ms.max(10));
    let smtp = SmtpClient::new(&mail.smtp(&password)).context("could not set up SMTP")?;
    tracing::info!(
        currency = %issuer.currency(),
        address = %issuer.address(),
        key = %issuer.public_key(),
        imap = %format!("{}:{}", mail.imap.host, mail.imap.port),
        smtp = %format!("{}:{}", mail.smtp.host, mail.smtp.port),
        "issuer starting"
    );
    let wake = Arc::new(Notify::new());
    let mut watcher = Watcher::new(imap, conn, IssuerHandler::new(issuer))
        .context("could not prepare the mailbox watcher")?
        .with_outbox_wake(wake.clone());
    {
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let signals = tokio::spawn(async move {
            let r = wait_for_signal().await;
            let _ = stop_tx.send(true);
            r
        });
        let watch_fut = watcher.run(stopped(stop_rx.clone()));
        let send_fut = run_sender(
            sender_conn,
            smtp,
            SenderPolicy::default(),
            wake,
            stopped(stop_rx.clone()),
        );
        let status_fut = log_progress(status_conn, stopped(stop_rx.clone()));
        let (w, s, ()) = tokio::join!(watch_fut, send_fut, status_fut);
        let totals = watcher.totals();
        tracing::info!(handled = totals.handled(), "issuer stopped");
        w.context("the mailbox watcher stopped")?;
        s.context("the outbox sender stopped")?;
        match signals.await {
            Ok(r) => r,
            Err(e) => Err(anyhow::anyhow!("the signal listener failed: {e}")),
        }
    }
}

async fn wait_for_signal() -> Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("could not listen for SIGTERM")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("could not listen for SIGINT")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("could not listen for Ctrl-C")?;
    tracing::info!("signal received; stopping");
    Ok(())
}

fn counts(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    let handled = conn.query_row("SELECT COUNT(*) FROM mail_inbox_seen", [], |r| r.get(0))?;
    let sent = conn.query_row(
        "SELECT COUNT(*) FROM mail_outbox WHERE state = 'sent'",
        [],
        |r| r.get(0),
    )?;
    Ok((handled, sent))
}

/// Logs, as they change, how many mails were handled and sent since start.
async fn log_progress(conn: Connection, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    let start = counts(&conn).unwrap_or((0, 0));
    let mut last = (0, 0);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
        match counts(&conn) {
            Ok((h, s)) => {
                let now = (h - start.0, s - start.1);
                if now != last {
                    tracing::info!(
                        handled = now.0,
                        sent = now.1,
                        "handled {} mails, sent {} replies since start",
                        now.0,
                        now.1
                    );
                    last = now;
                }
            }
            Err(e) => tracing::debug!(error = %e, "could not count the mail"),
        }
    }
}
