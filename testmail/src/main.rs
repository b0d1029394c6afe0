//! `testmail serve`: the mail server as a program, for the demo and for
//! poking at by hand. Parses flags, then hands over to the library.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context as _;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "testmail",
    version,
    about = "A small SMTP + IMAP server on loopback, for demos and tests",
    after_help = "Example:\n  testmail serve --dir /tmp/mail --user alice@example.test:secret"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve SMTP and IMAP until SIGINT or SIGTERM.
    #[command(after_help = "Examples:
  testmail serve --dir /tmp/mail --user alice@example.test:secret --user bob@example.test:hunter2
  testmail serve --dir ./mail --smtp 127.0.0.1:2525 --imap 127.0.0.1:1143 --user issuer@bank.test:pw

The bound addresses are printed on stdout, one per line:
  smtp 127.0.0.1:2525
  imap 127.0.0.1:1143
Log detail is set with RUST_LOG (for example RUST_LOG=testmail=debug).")]
    Serve {
        /// Folder for the mail store (created if missing; kept across runs).
        #[arg(long)]
        dir: PathBuf,
        /// SMTP listen address; port 0 picks a free port.
        #[arg(long, default_value = "127.0.0.1:0")]
        smtp: SocketAddr,
        /// IMAP listen address; port 0 picks a free port.
        #[arg(long, default_value = "127.0.0.1:0")]
        imap: SocketAddr,
        /// An account as ADDRESS:PASSWORD; repeat for more.
        #[arg(long = "user", value_name = "ADDRESS:PASSWORD")]
        users: Vec<testmail::User>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();

    let Command::Serve {
        dir,
        smtp,
        imap,
        users,
    } = Cli::parse().command;
    let mut config = testmail::Config::new(&dir);
    config.smtp = smtp;
    config.imap = imap;
    config.users = users;
    let server = testmail::Server::start(config)
        .await
        .with_context(|| format!("cannot start testmail on {}", dir.display()))?;
    println!("smtp {}", server.smtp_addr());
    println!("imap {}", server.imap_addr());
    server.run_until(shutdown_signal()).await;
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; only SIGINT stops testmail");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
