//! The subcommands. Each queues its mail in the transaction that records
//! it, then tries one sync pass (send, read) so that it is on its way;
//! `wallet sync` finishes what is pending.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use mailer::crypto::PublicKey;
use mailer::money::{Amount, Currency};
use mailer::settings::{MailArgs, MailSettings};
use rusqlite::Connection;
use wallet::sync::{SyncOptions, SyncReport};
use wallet::{ops, view, Home, Wallet};

const AFTER_HELP: &str = "\
Examples:
  wallet init --home ~/.wallet --email alice@example.test \\
      --imap-host mail.example.test --imap-port 993 --imap-tls implicit \\
      --smtp-host mail.example.test --smtp-port 465 --smtp-tls implicit \\
      --user alice@example.test --password-env WALLET_MAIL_PASSWORD
  export WALLET_HOME=~/.wallet
  wallet issuer add JPY --email issuer-jpy@example.test --key 3b6a27bc...e1f0
  wallet account add JPY --code K7QX-PZ3M-W9TD
  wallet card new JPY
  wallet sync --wait
  wallet withdraw 10000 JPY
  wallet send 700 JPY --to bob@example.test --memo \"lunch\"
  wallet sync --wait
  wallet balance

Exit codes: 0 done, 1 failed, 2 bad usage, 4 `sync --wait` timed out.";

#[derive(Debug, Parser)]
#[command(
    name = "wallet",
    version,
    about = "A multi-currency e-money wallet that pays, withdraws and deposits by email.",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// The wallet's home directory (keys, notes, history, wallet.toml).
    #[arg(long, global = true, env = "WALLET_HOME", value_name = "DIR")]
    home: Option<PathBuf>,
    /// The passphrase that seals the keys (set at init; needed after).
    #[arg(long, global = true, env = "WALLET_PASSPHRASE", hide_env_values = true)]
    passphrase: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a wallet: database, mail settings, key sealing.
    ///
    /// With --passphrase (or WALLET_PASSPHRASE) every secret key is sealed
    /// under it (Argon2id + XChaCha20-Poly1305); without, the keys are
    /// protected only by the files' permissions (0600, directory 0700).
    #[command(
        after_help = "Example:\n  wallet init --home ~/.wallet --email alice@example.test \\\n      --imap-host mail.example.test --imap-port 993 --imap-tls implicit \\\n      --smtp-host mail.example.test --smtp-port 587 --smtp-tls starttls \\\n      --user alice@example.test --password-env WALLET_MAIL_PASSWORD"
    )]
    Init {
        /// This wallet's mail address: payers and issuers answer here.
        #[arg(long)]
        email: String,
        #[command(flatten)]
        mail: MailArgs,
    },
    /// Pin an issuer's key for a currency; nothing unpinned is trusted.
    #[command(subcommand)]
    Issuer(IssuerCommand),
    /// Bind this wallet to your account at an issuer.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Make a card (payment and authentication keys) and get its license.
    #[command(subcommand)]
    Card(CardCommand),
    /// Withdraw notes from your account onto your card.
    #[command(after_help = "Example:\n  wallet withdraw 10000 JPY")]
    Withdraw(AmountArgs),
    /// Deposit notes from your card into your account.
    #[command(after_help = "Example:\n  wallet deposit 500 JPY")]
    Deposit(AmountArgs),
    /// Pay someone by email.
    ///
    /// Sends an invite; the payee's wallet answers with a card and a
    /// challenge; the payment then goes out by itself (during this or a
    /// later `wallet sync`), and the payee's signed receipt completes it.
    #[command(
        after_help = "Example:\n  wallet send 700 JPY --to bob@example.test --memo \"lunch\""
    )]
    Send {
        #[command(flatten)]
        amount: AmountArgs,
        /// The payee's mail address.
        #[arg(long)]
        to: String,
        #[arg(long, default_value = "")]
        memo: String,
    },
    /// Give up a send that has not paid yet.
    #[command(after_help = "Example:\n  wallet cancel 7")]
    Cancel {
        /// The operation's number (see `wallet pending`).
        id: i64,
    },
    /// Fetch and handle mail, send what is queued, advance what is pending.
    #[command(after_help = "Examples:\n  wallet sync\n  wallet sync --wait --timeout 120")]
    Sync {
        /// Repeat until nothing is pending, showing what is awaited.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this many seconds (exit code 4).
        #[arg(long, default_value_t = 300, value_name = "S")]
        timeout: u64,
        /// With --wait: seconds between passes.
        #[arg(long, default_value_t = 2, value_name = "S")]
        poll: u64,
        #[arg(long)]
        json: bool,
    },
    /// What you hold per currency, with incoming and outgoing amounts apart.
    #[command(after_help = "Example:\n  wallet balance --json")]
    Balance {
        #[arg(long)]
        json: bool,
    },
    /// Every operation, oldest first, with how it ended.
    History {
        #[arg(long)]
        json: bool,
    },
    /// Operations not finished, and what each waits for.
    Pending {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum IssuerCommand {
    /// Pin the issuer of a currency.
    #[command(
        after_help = "Example:\n  wallet issuer add JPY --email issuer-jpy@example.test --key 3b6a27bc...e1f0 (64 hex digits)"
    )]
    Add {
        currency: String,
        #[arg(long)]
        email: String,
        /// The issuer's public key, as `issuer init` printed it.
        #[arg(long)]
        key: String,
    },
    /// List the pinned issuers.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum AccountCommand {
    /// Bind with the one-time enrollment code the issuer gave you.
    #[command(after_help = "Example:\n  wallet account add JPY --code K7QX-PZ3M-W9TD")]
    Add {
        currency: String,
        #[arg(long)]
        code: String,
    },
}

#[derive(Debug, Subcommand)]
enum CardCommand {
    /// A new card for a currency, licensed by its issuer by mail.
    #[command(after_help = "Example:\n  wallet card new JPY")]
    New { currency: String },
    /// List the cards.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
struct AmountArgs {
    /// In major units (e.g. 12.50 for dollars).
    amount: String,
    currency: String,
}

fn currency(text: &str) -> Result<Currency> {
    text.to_ascii_uppercase().parse().map_err(|_| {
        anyhow::anyhow!("{text:?} is not a currency code: use three letters, e.g. JPY")
    })
}

impl AmountArgs {
    fn parse(&self) -> Result<(Amount, Currency)> {
        let c = currency(&self.currency)?;
        let a = Amount::parse_major(&self.amount, c)
            .with_context(|| format!("{:?} is not an amount of {c}", self.amount))?;
        Ok((a, c))
    }
}

struct Ctx {
    home: Home,
    wallet: Wallet,
    conn: Connection,
}

fn home_of(cli_home: &Option<PathBuf>) -> Result<Home> {
    match cli_home {
        Some(h) => Ok(Home::new(h)),
        None => bail!("say where the wallet is: --home DIR or WALLET_HOME"),
    }
}

fn open(cli: &Cli) -> Result<Ctx> {
    let home = home_of(&cli.home)?;
    let (wallet, conn) = home.open(cli.passphrase.as_deref())?;
    Ok(Ctx { home, wallet, conn })
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(v).context("could not write JSON")?
    );
    Ok(())
}

/// Rows as JSON, or one line each of the named fields.
fn print_rows(rows: &[serde_json::Value], json: bool, fields: &[&str]) -> Result<()> {
    if json {
        return print_json(&rows);
    }
    for r in rows {
        let line: Vec<&str> = fields
            .iter()
            .map(|f| r[*f].as_str().unwrap_or(""))
            .collect();
        println!("{}", line.join(" "));
    }
    Ok(())
}

/// Starts an operation in one transaction, then sends its mail now.
fn start(
    cli: &Cli,
    op: impl FnOnce(&rusqlite::Transaction<'_>, &Wallet) -> Result<i64, wallet::WalletError>,
    said: impl FnOnce(i64) -> String,
) -> Result<()> {
    let mut ctx = open(cli)?;
    let tx = wallet::db::immediate(&mut ctx.conn)?;
    let id = op(&tx, &ctx.wallet)?;
    tx.commit()?;
    send_now(&mut ctx, &said(id));
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn settings(home: &Home) -> Result<MailSettings> {
    Ok(MailSettings::load(&home.settings_path(), "wallet")?)
}

/// One sync pass or a wait; prints progress to stderr as it changes.
fn do_sync(ctx: &mut Ctx, opts: SyncOptions, quiet: bool) -> Result<SyncReport> {
    let s = settings(&ctx.home)?;
    let rt = runtime()?;
    let mut last = String::new();
    let report = rt.block_on(wallet::sync::sync(
        &ctx.home,
        &ctx.wallet,
        &mut ctx.conn,
        &s,
        &opts,
        |r| {
            if quiet {
                return;
            }
            let mut now = String::new();
            for p in &r.pending {
                now.push_str(&format!(
                    "  #{} {} {} {}: {}\n",
                    p.id, p.kind, p.amount, p.currency, p.detail
                ));
            }
            if r.unsent > 0 {
                now.push_str(&format!("  {} mails waiting to be sent\n", r.unsent));
            }
            if let Some(t) = &r.trouble {
                now.push_str(&format!("  mail server trouble: {t}\n"));
            }
            if now != last && !now.is_empty() {
                eprint!("pending:\n{now}");
            }
            last = now;
        },
    ))?;
    Ok(report)
}

/// After a command queued mail: one pass, so it is on its way now.
fn send_now(ctx: &mut Ctx, what: &str) {
    wallet::crash_point("command:committed");
    match do_sync(ctx, SyncOptions::default(), true) {
        Ok(_) => eprintln!("{what} Run `wallet sync --wait` to see it through."),
        Err(e) => eprintln!(
            "{what} It is queued; the mail server could not be reached now ({e}). `wallet sync` sends it later."
        ),
    }
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    init_logging();
    let now = mailer::clock::now();
    match &cli.command {
        Command::Init { email, mail } => {
            let home = home_of(&cli.home)?;
            let settings = mail.clone().settings()?;
            let (_, conn) = home.create(email, cli.passphrase.as_deref(), now)?;
            drop(conn);
            settings.write_new(&home.settings_path())?;
            println!("Created the wallet of {email} in {}.", home.dir().display());
            if cli.passphrase.is_none() {
                eprintln!("Its keys are not sealed by a passphrase: the files are private to you (0600). Use --passphrase at init to seal them.");
            }
            eprintln!(
                "Next: pin an issuer with `wallet issuer add CURRENCY --email ADDRESS --key KEY`."
            );
        }
        Command::Issuer(IssuerCommand::Add {
            currency: c,
            email,
            key,
        }) => {
            let ctx = open(&cli)?;
            let c = currency(c)?;
            let key = PublicKey::from_hex(key).with_context(|| {
                format!("{key:?} is not a key: give the issuer's full key, 64 hex digits")
            })?;
            ops::add_issuer(&ctx.conn, c, email, key, now)?;
            println!("Pinned the {c} issuer {email} (key {}).", key.fingerprint());
        }
        Command::Issuer(IssuerCommand::List { json }) => {
            let ctx = open(&cli)?;
            let rows: Vec<_> = wallet::store::issuers(&ctx.conn)?
                .into_iter()
                .map(|i| {
                    serde_json::json!({
                        "currency": i.currency.as_str(),
                        "email": i.address,
                        "key": i.key.to_hex(),
                        "revocation_list_version": i.revocations.as_ref().map(|l| l.unverified().version),
                    })
                })
                .collect();
            print_rows(&rows, *json, &["currency", "email", "key"])?;
        }
        Command::Account(AccountCommand::Add { currency: c, code }) => {
            let c = currency(c)?;
            start(
                &cli,
                |tx, w| ops::enroll(tx, w, c, code, now),
                |id| {
                    format!("Asked the {c} issuer to bind this wallet to the account (operation #{id}).")
                },
            )?;
        }
        Command::Card(CardCommand::New { currency: c }) => {
            let c = currency(c)?;
            start(
                &cli,
                |tx, w| ops::new_card(tx, w, c, now),
                |id| {
                    format!(
                        "Made a {c} card and asked the issuer for its license (operation #{id})."
                    )
                },
            )?;
        }
        Command::Card(CardCommand::List { json }) => {
            let ctx = open(&cli)?;
            let rows: Vec<_> = wallet::store::cards(&ctx.conn)?
                .into_iter()
                .map(|c| {
                    serde_json::json!({
                        "currency": c.currency.as_str(),
                        "payment_key": c.keys.payment.to_hex(),
                        "auth_key": c.keys.auth.to_hex(),
                        "state": c.state,
                        "locked_by": c.locked_by,
                        "licensed_until": c.license.as_ref().map(|l| l.unverified().expires_at.unix()),
                    })
                })
                .collect();
            print_rows(&rows, *json, &["currency", "state", "payment_key"])?;
        }
        Command::Withdraw(a) => {
            let (amount, c) = a.parse()?;
            start(
                &cli,
                |tx, w| ops::withdraw(tx, w, c, amount, now),
                |id| {
                    format!(
                        "Asked to withdraw {} {c} (operation #{id}).",
                        amount.display_major(c)
                    )
                },
            )?;
        }
        Command::Deposit(a) => {
            let (amount, c) = a.parse()?;
            start(
                &cli,
                |tx, w| ops::deposit(tx, w, c, amount, now),
                |id| {
                    format!("Deposited {} {c} (operation #{id}); the receipt will say what was credited.", amount.display_major(c))
                },
            )?;
        }
        Command::Send { amount, to, memo } => {
            let (a, c) = amount.parse()?;
            start(
                &cli,
                |tx, w| ops::send(tx, w, c, a, to, memo, now),
                |id| {
                    format!("Invited {to} to receive {} {c} (operation #{id}); the payment follows their wallet's answer.", a.display_major(c))
                },
            )?;
        }
        Command::Cancel { id } => {
            let mut ctx = open(&cli)?;
            let tx = wallet::db::immediate(&mut ctx.conn)?;
            ops::cancel(&tx, *id, now)?;
            tx.commit()?;
            println!("Cancelled operation #{id}.");
        }
        Command::Sync {
            wait,
            timeout,
            poll,
            json,
        } => {
            let mut ctx = open(&cli)?;
            let opts = SyncOptions {
                wait: *wait,
                timeout: Duration::from_secs(*timeout),
                poll: Duration::from_secs((*poll).max(1)),
            };
            let r = do_sync(&mut ctx, opts, *json)?;
            if *json {
                print_json(&r)?;
            } else {
                println!(
                    "Sent {} mails, handled {} mails; {} operations pending.",
                    r.sent,
                    r.handled,
                    r.pending.len()
                );
            }
            if r.timed_out {
                eprintln!(
                    "Gave up waiting after {timeout} s; `wallet pending` shows what is still open."
                );
                return Ok(ExitCode::from(4));
            }
        }
        Command::Balance { json } => {
            let ctx = open(&cli)?;
            let b = view::balances(&ctx.conn)?;
            if *json {
                print_json(&b)?;
            } else if b.is_empty() {
                println!("No currencies yet: pin an issuer with `wallet issuer add`.");
            } else {
                println!(
                    "{:<8} {:>14} {:>14} {:>14} {:>14}",
                    "currency", "spendable", "incoming", "outgoing", "account"
                );
                for x in b {
                    println!(
                        "{:<8} {:>14} {:>14} {:>14} {:>14}",
                        x.currency,
                        x.spendable,
                        x.incoming,
                        x.outgoing,
                        x.account.unwrap_or_else(|| "-".into())
                    );
                }
            }
        }
        Command::History { json } | Command::Pending { json } => {
            let ctx = open(&cli)?;
            let lines = match &cli.command {
                Command::History { .. } => view::history(&ctx.conn)?,
                _ => view::pending(&ctx.conn)?,
            };
            if *json {
                print_json(&lines)?;
            } else if lines.is_empty() {
                println!("Nothing.");
            } else {
                for l in lines {
                    let peer = if l.peer.is_empty() {
                        String::new()
                    } else {
                        format!(" {}", l.peer)
                    };
                    println!(
                        "#{:<4} {:<9} {:>12} {} {:<10}{peer}: {}",
                        l.id, l.kind, l.amount, l.currency, l.state, l.detail
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
