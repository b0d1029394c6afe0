//! `issuer run`: the daemon. [`mailer::daemon::serve`] over
//! [`issuer::IssuerHandler`], until SIGINT or SIGTERM.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use issuer::{Home, IssuerHandler};
use mailer::daemon::{self, Parts};
use mailer::imap::Watcher;
use mailer::smtp::{SenderPolicy, SmtpClient};

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

pub fn run(a: RunArgs) -> Result<ExitCode> {
    daemon::init_logging();
    let rt = daemon::runtime()?;
    rt.block_on(serve(a))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(a: RunArgs) -> Result<()> {
    let dir = a.home.home;
    let mail = load_settings(&dir)?;
    let password = mail.password()?;
    let (issuer, conn) = open(&dir)?;
    let connect = || {
        Home::new(&dir)
            .connect()
            .context("could not open another connection to the database")
    };
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
    let watcher = Watcher::new(imap, conn, IssuerHandler::new(issuer))
        .context("could not prepare the mailbox watcher")?;
    daemon::serve(Parts {
        name: "issuer",
        watcher,
        sender_conn: connect()?,
        smtp,
        policy: SenderPolicy::default(),
        status_conn: connect()?,
        tick: None,
    })
    .await?;
    Ok(())
}
