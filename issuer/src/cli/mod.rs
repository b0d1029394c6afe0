//! The subcommands, one file each, and what they share: the home
//! directory, the mail settings file (`issuer.toml`), output helpers.

mod account;
mod audit;
mod init;
mod refund;
mod report;
mod revoke;
mod run;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use issuer::{Home, Issuer};
use mailer::crypto::PublicKey;
use rusqlite::Connection;

pub use mailer::settings::MailSettings;

/// The mail settings file in an issuer's home.
pub const SETTINGS_FILE: &str = "issuer.toml";

/// Loads `DIR/issuer.toml`.
pub fn load_settings(dir: &Path) -> Result<MailSettings> {
    Ok(MailSettings::load(&dir.join(SETTINGS_FILE), "issuer")?)
}

pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_AUDIT: u8 = 3;

const ABOUT: &str = "Runs the issuer of one currency: accounts, card licenses, withdrawals and deposits, all by email.";

const LONG_ABOUT: &str = "\
Runs the issuer of one currency: accounts, card licenses, withdrawals and
deposits, all by email.

Create an issuer once with `issuer init`, give its public key to wallets and
agents, open accounts with `issuer account open`, and keep `issuer run`
running: it reads the issuer's mailbox and answers every request.

Every command works on a home directory (--home DIR, or the ISSUER_HOME
environment variable) that holds the key, the database and issuer.toml.";

const AFTER_HELP: &str = "\
Examples:
  issuer init --home ./jpy --currency JPY --email issuer-jpy@example.test \\
      --imap-host mail.example.test --imap-port 993 --imap-tls implicit \\
      --smtp-host mail.example.test --smtp-port 465 --smtp-tls implicit \\
      --user issuer-jpy@example.test --password-env ISSUER_MAIL_PASSWORD
  export ISSUER_HOME=./jpy
  issuer account open alice
  issuer account credit alice 5000
  issuer run

Exit codes: 0 done, 1 failed, 2 bad usage, 3 the audit found problems.";

#[derive(Debug, Parser)]
#[command(name = "issuer", version, about = ABOUT, long_about = LONG_ABOUT, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Where the issuer lives.
#[derive(Debug, Clone, Args)]
pub struct HomeArg {
    /// The issuer's home directory (key, database, issuer.toml).
    #[arg(long, env = "ISSUER_HOME", value_name = "DIR")]
    pub home: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new issuer: key, database and mail settings.
    ///
    /// Prints the issuer's public key: wallets and agents pin it, so give
    /// it to them over a channel you trust. Refuses to overwrite an
    /// existing issuer. The mail password is never written down: give the
    /// name of an environment variable (--password-env) or a file only you
    /// can read (--password-file, mode 0600).
    #[command(
        after_help = "Example:\n  issuer init --home ./jpy --currency JPY --email issuer-jpy@example.test \\\n      --imap-host mail.example.test --imap-port 993 --imap-tls implicit \\\n      --smtp-host mail.example.test --smtp-port 587 --smtp-tls starttls \\\n      --user issuer-jpy@example.test --password-env ISSUER_MAIL_PASSWORD"
    )]
    Init(init::InitArgs),
    /// Open, credit and look at bank accounts.
    #[command(
        subcommand,
        after_help = "Examples:\n  issuer account open alice\n  issuer account credit alice 5000\n  issuer account show alice --json"
    )]
    Account(account::AccountCommand),
    /// Revoke a card (lost, stolen, its owner asked).
    ///
    /// Links the card signs from now on are refused, and the next
    /// revocation list names it. KEY is the card's payment key (64 hex
    /// digits).
    #[command(
        after_help = "Example:\n  issuer revoke 3b6a27bc...e1f0 --note \"reported stolen by alice\""
    )]
    Revoke(revoke::RevokeArgs),
    /// Pay the owner of a revoked card what it still held, into an account.
    #[command(after_help = "Example:\n  issuer refund 3b6a27bc...e1f0 --to alice")]
    Refund(refund::RefundArgs),
    /// List overspenders (with their proofs checked) and revoked cards.
    #[command(after_help = "Example:\n  issuer report --json")]
    Report(report::ReportArgs),
    /// Check the books against each other; exits 3 if anything is wrong.
    #[command(after_help = "Example:\n  issuer audit || echo \"the books do not add up\"")]
    Audit(audit::AuditArgs),
    /// Run the issuer: answer requests by mail until SIGINT or SIGTERM.
    ///
    /// Watches the mailbox over IMAP (IDLE when the server offers it) and
    /// sends the replies over SMTP. Logs go to standard error; set RUST_LOG
    /// (e.g. RUST_LOG=debug) for more or less.
    #[command(after_help = "Example:\n  ISSUER_MAIL_PASSWORD=... issuer run --home ./jpy")]
    Run(run::RunArgs),
}

/// Runs one command; the exit code is 0, or 3 for a failed audit.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Init(a) => init::run(a),
        Command::Account(a) => account::run(a),
        Command::Revoke(a) => revoke::run(a),
        Command::Refund(a) => refund::run(a),
        Command::Report(a) => report::run(a),
        Command::Audit(a) => audit::run(a),
        Command::Run(a) => run::run(a),
    }
}

/// Opens the issuer in `dir` (its key and its database).
pub fn open(dir: &Path) -> Result<(Issuer, Connection)> {
    Home::new(dir).open().with_context(|| {
        format!(
            "could not open the issuer in {}; check --home (or ISSUER_HOME), or create one with `issuer init`",
            dir.display()
        )
    })
}

/// A card or account key given on the command line.
pub fn parse_key(text: &str) -> Result<PublicKey> {
    PublicKey::from_hex(text).with_context(|| {
        format!(
            "{:?} is not a key: give the full key, 64 hex digits",
            text.chars().take(80).collect::<String>()
        )
    })
}

/// Prints a JSON value, pretty.
pub fn print_json(value: &serde_json::Value) -> Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(value).context("could not write JSON")?
    );
    Ok(())
}
