//! A daemon that reads a mailbox: the loop every long-running program
//! here (`issuer run`, `agent run`) is. A [`Watcher`] over the program's
//! handler, the outbox's sender ([`run_sender`]), an optional periodic
//! [`Tick`] (work that no mail starts: deadlines, resends, recharges), and
//! a progress log, each with its own database connection, until SIGINT or
//! SIGTERM.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::{watch, Notify};

use crate::imap::{MailHandler, PassReport, WatchError, Watcher};
use crate::outbox::OutboxError;
use crate::smtp::{run_sender, SenderPolicy, SmtpClient};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("the mailbox watcher stopped: {0}")]
    Watch(#[from] WatchError),
    #[error("the outbox sender stopped: {0}")]
    Sender(#[from] OutboxError),
    #[error("could not listen for signals: {0}")]
    Signals(std::io::Error),
    #[error("could not start the async runtime: {0}")]
    Runtime(std::io::Error),
}

/// Logs to stderr at the level of `RUST_LOG` (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// The runtime a daemon runs on (built before the SMTP client: its
/// connection pool needs one).
pub fn runtime() -> Result<tokio::runtime::Runtime, DaemonError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(DaemonError::Runtime)
}

/// Periodic work in its own transaction(s): `work` returns how many mails
/// it queued, or an error that is logged (the next tick tries again). The
/// sender is woken after every tick.
pub struct Tick {
    pub every: Duration,
    pub conn: Connection,
    pub work: TickWork,
}

/// What a [`Tick`] does.
pub type TickWork = Box<dyn FnMut(&mut Connection) -> Result<usize, String> + Send>;

impl std::fmt::Debug for Tick {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tick").field("every", &self.every).finish()
    }
}

/// The connections and clients of a daemon.
#[allow(missing_debug_implementations)] // the watcher and clients hold connections
pub struct Parts<H> {
    pub name: &'static str,
    pub watcher: Watcher<H>,
    pub sender_conn: Connection,
    pub smtp: SmtpClient,
    pub policy: SenderPolicy,
    pub status_conn: Connection,
    pub tick: Option<Tick>,
}

/// Runs until SIGINT or SIGTERM; returns what the watcher handled.
pub async fn serve<H: MailHandler>(parts: Parts<H>) -> Result<PassReport, DaemonError> {
    let Parts {
        name,
        watcher,
        sender_conn,
        smtp,
        policy,
        status_conn,
        tick,
    } = parts;
    let wake = Arc::new(Notify::new());
    let mut watcher = watcher.with_outbox_wake(wake.clone());
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
        policy,
        wake.clone(),
        stopped(stop_rx.clone()),
    );
    let status_fut = log_progress(name, status_conn, stopped(stop_rx.clone()));
    let tick_fut = run_tick(tick, wake, stopped(stop_rx.clone()));
    let (w, s, (), ()) = tokio::join!(watch_fut, send_fut, status_fut, tick_fut);
    let totals = watcher.totals();
    tracing::info!(handled = totals.handled(), "{name} stopped");
    w?;
    s?;
    match signals.await {
        Ok(r) => r.map_err(DaemonError::Signals)?,
        Err(e) => return Err(DaemonError::Signals(std::io::Error::other(e))),
    }
    Ok(totals)
}

async fn run_tick(tick: Option<Tick>, wake: Arc<Notify>, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    let Some(mut tick) = tick else {
        return stop.await;
    };
    loop {
        if let Err(e) = (tick.work)(&mut tick.conn) {
            tracing::warn!(error = %e, "periodic work failed; will try again");
        }
        // Mail may also have been queued by the operator's commands, from
        // another process: the sender looks at every tick.
        wake.notify_one();
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(tick.every) => {}
        }
    }
}

async fn wait_for_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
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
async fn log_progress(name: &str, conn: Connection, stop: impl Future<Output = ()>) {
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
                        "{name}: handled {} mails, sent {} replies since start",
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
