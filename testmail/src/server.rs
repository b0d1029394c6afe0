//! Starting and stopping: binds the listeners, owns every task, and shuts
//! them down when asked.
//!
//! Shutdown is a [`CancellationToken`] that every connection and delayed
//! delivery watches, and a [`TaskTracker`] to wait for them, so a test can
//! stop the server deterministically, and a restart on the same folder sees
//! everything that was acknowledged.

use std::{future::Future, net::SocketAddr, path::Path, sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    config::{Config, Limits, User},
    error::{Error, Result},
    faults::{Faults, Stats},
    imap, smtp,
    store::Store,
};

/// How long shutdown waits for connections to say goodbye.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What every task shares.
#[derive(Debug)]
pub(crate) struct Context {
    pub store: Arc<Store>,
    pub faults: Faults,
    pub limits: Limits,
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
}

/// The mail server. See [`Server::start`].
#[derive(Debug)]
#[non_exhaustive]
pub struct Server;

impl Server {
    /// Loads the store under `config.dir`, binds both listeners and starts
    /// serving in the background (on the current tokio runtime).
    pub async fn start(config: Config) -> Result<RunningServer> {
        let store = Arc::new(Store::open(
            &config.dir,
            &config.users,
            config.limits.clone(),
        )?);
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Bind { addr, source })
        };
        let smtp_listener = bind(config.smtp).await?;
        let imap_listener = bind(config.imap).await?;
        let local = |l: &TcpListener, addr| {
            l.local_addr()
                .map_err(|source| Error::Bind { addr, source })
        };
        let smtp_addr = local(&smtp_listener, config.smtp)?;
        let imap_addr = local(&imap_listener, config.imap)?;

        let ctx = Arc::new(Context {
            faults: Faults::new(Arc::clone(&store)),
            store,
            limits: config.limits,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        ctx.tasks
            .spawn(smtp::serve(smtp_listener, Arc::clone(&ctx)));
        ctx.tasks
            .spawn(imap::serve(imap_listener, Arc::clone(&ctx)));
        tracing::info!(%smtp_addr, %imap_addr, dir = %config.dir.display(), "testmail started");
        Ok(RunningServer {
            smtp_addr,
            imap_addr,
            dir: config.dir,
            ctx,
        })
    }
}

/// Starts a server, serves until `shutdown` completes, then stops it.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<()> {
    Server::start(config).await?.run_until(shutdown).await;
    Ok(())
}

/// A started server. Dropping it stops the listeners and connections too,
/// but without waiting; call [`RunningServer::shutdown`] to wait.
#[derive(Debug)]
pub struct RunningServer {
    smtp_addr: SocketAddr,
    imap_addr: SocketAddr,
    dir: std::path::PathBuf,
    ctx: Arc<Context>,
}

impl RunningServer {
    /// Where SMTP listens (the real port when 0 was asked for).
    pub fn smtp_addr(&self) -> SocketAddr {
        self.smtp_addr
    }

    /// Where IMAP listens (the real port when 0 was asked for).
    pub fn imap_addr(&self) -> SocketAddr {
        self.imap_addr
    }

    /// The mail folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The fault-injection handle (cheap to clone).
    pub fn faults(&self) -> &Faults {
        &self.ctx.faults
    }

    /// Counters since start.
    pub fn stats(&self) -> Stats {
        self.ctx.faults.stats()
    }

    /// Adds an account (or changes its password), loading any mail already
    /// on disk for it.
    pub fn add_user(&self, address: &str, password: &str) -> Result<()> {
        self.ctx.store.add_user(&User::new(address, password))
    }

    /// Serves until `shutdown` completes, then stops.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) {
        shutdown.await;
        self.shutdown().await;
    }

    /// Stops accepting, says BYE / 421 to every connection, delivers mail
    /// held back by the delay fault, and waits (a few seconds at most) for
    /// all of it to finish.
    pub async fn shutdown(self) {
        self.ctx.shutdown.cancel();
        self.ctx.tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.ctx.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not close in time");
        }
        tracing::info!("testmail stopped");
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.ctx.shutdown.cancel();
    }
}
