//! The subcommands. Each queues its mail in the transaction that records
//! it, then tries one sync pass (send, read) so that it is on its way;
//! `wallet sync` finishes what is pending.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use mailer::crypto::PublicKey;
use mailer::evidence::ExchangeEvidence;
use mailer::messages::QuoteAmount;
use mailer::money::{Amount, Currency};
use mailer::settings::{MailArgs, MailSettings};
use rusqlite::Connection;
use wallet::exchange::{self, ExchangeStatus, Policy};
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
  wallet agent add fx@agent.example.test --key 9f1c44d0...77aa
  wallet exchange 1000 JPY --to USD --agent fx@agent.example.test --max-rate 160
  wallet evidence 0a1b2c3d4e5f60718293a4b5c6d7e8f9 --out exchange.evidence

Exit codes: 0 done, 1 failed, 2 bad usage, 4 `sync --wait` (or an
exchange's wait) timed out.";

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
    #[command(
        subcommand,
        after_help = "Examples:\n  wallet issuer add JPY --email issuer-jpy@example.test --key 3b6a27bc...e1f0\n  wallet issuer list"
    )]
    Issuer(IssuerCommand),
    /// Bind this wallet to your account at an issuer.
    #[command(
        subcommand,
        after_help = "Example:\n  wallet account add JPY --code K7QX-PZ3M-W9TD"
    )]
    Account(AccountCommand),
    /// Make a card (payment and authentication keys) and get its license.
    #[command(
        subcommand,
        after_help = "Examples:\n  wallet card new JPY\n  wallet card list --json"
    )]
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
        /// With --wait: seconds between passes (fractions allowed: 0.2).
        #[arg(long, default_value = "2", value_name = "S", value_parser = seconds)]
        poll: Duration,
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
    #[command(after_help = "Examples:\n  wallet history\n  wallet history --json")]
    History {
        #[arg(long)]
        json: bool,
    },
    /// Operations not finished, and what each waits for.
    #[command(after_help = "Examples:\n  wallet pending\n  wallet pending --json")]
    Pending {
        #[arg(long)]
        json: bool,
    },
    /// Pin an exchange agent's key; nothing unpinned is trusted.
    #[command(
        subcommand,
        after_help = "Examples:\n  wallet agent add fx@agent.example.test --key 9f1c44d0...77aa\n  wallet agent list"
    )]
    Agent(AgentCommand),
    /// Exchange one currency for another through an agent.
    ///
    /// `wallet exchange AMOUNT CURRENCY --to CUR` pays AMOUNT of CURRENCY
    /// and receives CUR; `wallet exchange AMOUNT CURRENCY --from CUR`
    /// receives AMOUNT of CURRENCY and pays in CUR. The agent answers with
    /// an offer (A1 to pay by D1, A2 to receive); with --yes, or when the
    /// price A1/A2 is within --max-rate, it is accepted at once; otherwise
    /// you are asked (on a terminal), or it waits for `wallet exchange
    /// accept`. Once the agent has signed the offer, the wallet pays A1 and
    /// asks for A2 in one mail, and waits for A2.
    #[command(after_help = EXCHANGE_HELP)]
    Exchange(ExchangeArgs),
    /// Export the evidence of an exchange, or check an evidence file.
    ///
    /// The file holds every signed envelope of the exchange (the agent's
    /// signed offer, your payment, your request, its answers) and the
    /// issuer keys you pin; anyone can check it with public keys alone.
    #[command(
        after_help = "Examples:\n  wallet evidence 0a1b2c3d4e5f60718293a4b5c6d7e8f9 --out exchange.evidence\n  wallet evidence verify exchange.evidence\n  wallet evidence verify exchange.evidence --json"
    )]
    Evidence(EvidenceArgs),
}

const EXCHANGE_HELP: &str = "\
Examples:
  wallet exchange 1000 JPY --to USD --agent fx@agent.example.test
  wallet exchange 1000 JPY --to USD --agent fx@agent.example.test --max-rate 160
  wallet exchange 10.00 USD --from JPY --agent fx@agent.example.test --yes
  wallet exchange 1000 JPY --to USD --agent fx@agent.example.test --no-wait
  wallet exchange status
  wallet exchange status 0a1b2c3d4e5f60718293a4b5c6d7e8f9 --json
  wallet exchange accept 0a1b2c3d4e5f60718293a4b5c6d7e8f9
  wallet exchange decline 0a1b2c3d4e5f60718293a4b5c6d7e8f9

--max-rate R: the most units of the currency you pay per one unit of the
currency you receive (160 means at most 160 JPY per USD).
An exchange is named by its TrID (32 hex digits, known once the offer
arrives) or its operation number (`#7`).";

#[derive(Debug, Subcommand)]
enum AgentCommand {
    /// Pin the key of the exchange agent at an address.
    #[command(
        after_help = "Example:\n  wallet agent add fx@agent.example.test --key 9f1c44d0...77aa (64 hex digits)"
    )]
    Add {
        address: String,
        /// The agent's public key, as the agent's operator publishes it.
        #[arg(long)]
        key: String,
    },
    /// List the pinned agents.
    #[command(after_help = "Example:\n  wallet agent list --json")]
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct ExchangeArgs {
    #[command(subcommand)]
    command: Option<ExchangeCommand>,
    #[command(flatten)]
    new: NewExchange,
}

#[derive(Debug, Args)]
struct NewExchange {
    /// In major units: what you pay (with --to) or receive (with --from).
    #[arg(required = true)]
    amount: Option<String>,
    #[arg(required = true)]
    currency: Option<String>,
    /// Pay AMOUNT CURRENCY, receive this currency.
    #[arg(long, value_name = "CUR", conflicts_with = "from")]
    to: Option<String>,
    /// Receive AMOUNT CURRENCY, pay in this currency.
    #[arg(long, value_name = "CUR")]
    from: Option<String>,
    /// The agent's mail address (pinned with `wallet agent add`).
    #[arg(long, value_name = "ADDRESS")]
    agent: Option<String>,
    /// Accept the offer at once when it asks at most R units of the paying
    /// currency per unit of the receiving currency.
    #[arg(long, value_name = "R", conflicts_with = "yes")]
    max_rate: Option<String>,
    /// Accept any offer that passes the wallet's checks.
    #[arg(long)]
    yes: bool,
    /// Only send the request; `wallet sync` and `wallet exchange accept`
    /// do the rest.
    #[arg(long)]
    no_wait: bool,
    /// Give up waiting after this many seconds (exit code 4); the exchange
    /// goes on with `wallet sync`.
    #[arg(long, default_value_t = 300, value_name = "S")]
    timeout: u64,
    /// Seconds between passes while waiting (fractions allowed: 0.2).
    #[arg(long, default_value = "2", value_name = "S", value_parser = seconds)]
    poll: Duration,
}

#[derive(Debug, Subcommand)]
enum ExchangeCommand {
    /// Accept an offer that waits for you.
    #[command(after_help = "Example:\n  wallet exchange accept 0a1b2c3d4e5f60718293a4b5c6d7e8f9")]
    Accept {
        /// The exchange: its TrID, or its operation number (#7).
        exchange: String,
    },
    /// Decline an exchange that has not paid yet.
    #[command(after_help = "Example:\n  wallet exchange decline 0a1b2c3d4e5f60718293a4b5c6d7e8f9")]
    Decline {
        /// The exchange: its TrID, or its operation number (#7).
        exchange: String,
    },
    /// One exchange in full (state, amounts, deadlines, what it waits for,
    /// every envelope held), or every exchange in one line each.
    #[command(
        after_help = "Examples:\n  wallet exchange status\n  wallet exchange status 0a1b2c3d4e5f60718293a4b5c6d7e8f9 --json"
    )]
    Status {
        /// The exchange: its TrID, or its operation number (#7).
        exchange: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct EvidenceArgs {
    #[command(subcommand)]
    command: Option<EvidenceCommand>,
    /// The exchange: its TrID, or its operation number (#7).
    #[arg(required = true)]
    exchange: Option<String>,
    /// Where to write the bundle.
    #[arg(long, value_name = "FILE", required = true)]
    out: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum EvidenceCommand {
    /// Check an evidence file with public keys alone and say what it proves.
    #[command(
        after_help = "Examples:\n  wallet evidence verify exchange.evidence\n  wallet evidence verify exchange.evidence --json\n\nExit code 1 when the file is not valid evidence (a signature fails)."
    )]
    Verify {
        file: PathBuf,
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
    #[command(after_help = "Example:\n  wallet issuer list --json")]
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
    #[command(after_help = "Example:\n  wallet card list --json")]
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
    do_sync_until(ctx, opts, quiet, |_, r| {
        r.pending.iter().all(|p| p.waits_for_user) && r.unsent == 0
    })
}

/// Like [`do_sync`], waiting until `stop` says so.
fn do_sync_until(
    ctx: &mut Ctx,
    opts: SyncOptions,
    quiet: bool,
    stop: impl FnMut(&Connection, &SyncReport) -> bool,
) -> Result<SyncReport> {
    let s = settings(&ctx.home)?;
    let rt = runtime()?;
    let mut last = String::new();
    let report = rt.block_on(wallet::sync::sync_until(
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
        stop,
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
                poll: *poll,
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
        Command::Agent(AgentCommand::Add { address, key }) => {
            let ctx = open(&cli)?;
            let key = PublicKey::from_hex(key).with_context(|| {
                format!("{key:?} is not a key: give the agent's full key, 64 hex digits")
            })?;
            if exchange::add_agent(&ctx.conn, address, key, now)? {
                println!("Pinned the agent {address} (key {}).", key.fingerprint());
            } else {
                println!(
                    "The agent {address} was already pinned to this key ({}).",
                    key.fingerprint()
                );
            }
        }
        Command::Agent(AgentCommand::List { json }) => {
            let ctx = open(&cli)?;
            let rows: Vec<_> = wallet::store::agents(&ctx.conn)?
                .into_iter()
                .map(|a| {
                    serde_json::json!({
                        "address": a.address,
                        "key": a.key.to_hex(),
                        "added_at": a.added_at.unix(),
                    })
                })
                .collect();
            print_rows(&rows, *json, &["address", "key"])?;
        }
        Command::Exchange(args) => return run_exchange(&cli, args, now),
        Command::Evidence(args) => return run_evidence(&cli, args, now),
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

// ---- exchange -----------------------------------------------------------------

fn run_exchange(cli: &Cli, args: &ExchangeArgs, now: mailer::money::Timestamp) -> Result<ExitCode> {
    match &args.command {
        Some(ExchangeCommand::Accept { exchange: which }) => {
            let mut ctx = open(cli)?;
            let tx = wallet::db::immediate(&mut ctx.conn)?;
            let op = exchange::find(&tx, which)?;
            let state = exchange::accept(&tx, &ctx.wallet, op.id, now)?;
            tx.commit()?;
            if state != "accepting" {
                let st = exchange::status(&ctx.conn, op.id)?;
                println!("Exchange {} is {}: {}", name(&st), st.state, st.detail);
                return Ok(ExitCode::from(1));
            }
            send_now(
                &mut ctx,
                &format!("Accepted exchange {which}; the wallet pays once the agent has signed the offer."),
            );
        }
        Some(ExchangeCommand::Decline { exchange: which }) => {
            let mut ctx = open(cli)?;
            let tx = wallet::db::immediate(&mut ctx.conn)?;
            let op = exchange::find(&tx, which)?;
            exchange::decline(&tx, op.id, now)?;
            tx.commit()?;
            println!("Declined exchange {which}; nothing was paid.");
        }
        Some(ExchangeCommand::Status {
            exchange: which,
            json,
        }) => {
            let ctx = open(cli)?;
            match which {
                Some(w) => {
                    let op = exchange::find(&ctx.conn, w)?;
                    let st = exchange::status(&ctx.conn, op.id)?;
                    if *json {
                        print_json(&st)?;
                    } else {
                        print_status(&st);
                    }
                }
                None => {
                    let all = exchange::statuses(&ctx.conn)?;
                    if *json {
                        print_json(&all)?;
                    } else if all.is_empty() {
                        println!("No exchanges.");
                    } else {
                        for st in all {
                            println!(
                                "#{:<4} {:<32} {:<9} {} -> {}: {}",
                                st.op,
                                st.tr_id.as_deref().unwrap_or("-"),
                                st.state,
                                st.a1.as_deref().unwrap_or(&st.asked),
                                st.a2.as_deref().unwrap_or(&st.receive_currency),
                                st.detail
                            );
                        }
                    }
                }
            }
        }
        None => return new_exchange(cli, &args.new, now),
    }
    Ok(ExitCode::SUCCESS)
}

fn new_exchange(cli: &Cli, n: &NewExchange, now: mailer::money::Timestamp) -> Result<ExitCode> {
    let (Some(amount), Some(cur)) = (&n.amount, &n.currency) else {
        bail!("say what to exchange: `wallet exchange AMOUNT CURRENCY --to CUR --agent ADDRESS` (see `wallet exchange --help`)");
    };
    let c = currency(cur)?;
    let a = Amount::parse_major(amount, c)
        .with_context(|| format!("{amount:?} is not an amount of {c}"))?;
    let (from, to, quote) = match (&n.to, &n.from) {
        (Some(to), None) => (c, currency(to)?, QuoteAmount::Pay(a)),
        (None, Some(from)) => (currency(from)?, c, QuoteAmount::Receive(a)),
        _ => bail!(
            "say which way: --to CUR pays {amount} {c} for CUR; --from CUR receives {amount} {c} paid in CUR"
        ),
    };
    let Some(agent) = &n.agent else {
        bail!("say which agent: --agent ADDRESS (pin its key first with `wallet agent add ADDRESS --key KEY`)");
    };
    let policy = match (&n.max_rate, n.yes) {
        (_, true) => Policy::Any,
        (Some(r), false) => Policy::MaxRate(r.parse().map_err(|_| {
            anyhow::anyhow!("{r:?} is not a rate: give a positive decimal such as 160 or 0.0067")
        })?),
        (None, false) => Policy::Ask,
    };
    let mut ctx = open(cli)?;
    let tx = wallet::db::immediate(&mut ctx.conn)?;
    let id = exchange::start(&tx, &ctx.wallet, agent, from, to, quote, policy, now)?;
    tx.commit()?;
    let asked = match quote {
        QuoteAmount::Pay(a) => format!("{} {from} for {to}", a.display_major(from)),
        QuoteAmount::Receive(a) => format!("{} {to} for {from}", a.display_major(to)),
    };
    if n.no_wait {
        send_now(
            &mut ctx,
            &format!("Asked {agent} for an offer of {asked} (exchange #{id})."),
        );
        return Ok(ExitCode::SUCCESS);
    }
    wallet::crash_point("command:committed");
    eprintln!("Asked {agent} for an offer of {asked} (exchange #{id}); waiting for it.");
    see_through(&mut ctx, id, Duration::from_secs(n.timeout), n.poll)
}

/// Syncs until exchange `id` ends, asking the user about its offer when
/// no policy accepted it.
fn see_through(ctx: &mut Ctx, id: i64, timeout: Duration, poll: Duration) -> Result<ExitCode> {
    let deadline = Instant::now() + timeout;
    loop {
        let opts = SyncOptions {
            wait: true,
            timeout: deadline.saturating_duration_since(Instant::now()),
            poll,
        };
        let r = do_sync_until(ctx, opts, false, |conn, _| {
            ops::op(conn, id).map_or(true, |o| o.is_final || o.state == "offered")
        })?;
        let st = exchange::status(&ctx.conn, id)?;
        if st.done {
            println!("Exchange {} {}: {}", name(&st), st.state, st.detail);
            return Ok(if st.state == "done" {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        if st.state == "offered" {
            print_offer(&st);
            let tr = name(&st);
            if !std::io::stdin().is_terminal() {
                println!(
                    "Not accepted: accept it with `wallet exchange accept {tr}` (or `wallet exchange decline {tr}`) before D1, then `wallet sync --wait`."
                );
                return Ok(ExitCode::SUCCESS);
            }
            print!("Accept? [y/N] ");
            std::io::stdout()
                .flush()
                .context("could not write to the terminal")?;
            let mut answer = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut answer)
                .context("could not read the answer")?;
            let tx = wallet::db::immediate(&mut ctx.conn)?;
            let now = mailer::clock::now();
            if matches!(answer.trim(), "y" | "Y" | "yes" | "Yes") {
                let state = exchange::accept(&tx, &ctx.wallet, id, now)?;
                tx.commit()?;
                if state != "accepting" {
                    let st = exchange::status(&ctx.conn, id)?;
                    println!("Exchange {tr} {}: {}", st.state, st.detail);
                    return Ok(ExitCode::from(1));
                }
                eprintln!("Accepted; waiting for the agent's signed offer.");
                continue;
            }
            exchange::decline(&tx, id, now)?;
            tx.commit()?;
            println!("Declined exchange {tr}; nothing was paid.");
            return Ok(ExitCode::SUCCESS);
        }
        if r.timed_out || Instant::now() >= deadline {
            eprintln!(
                "Gave up waiting after {} s; the exchange goes on with `wallet sync --wait`; `wallet exchange status {}` shows it.",
                timeout.as_secs(),
                name(&st)
            );
            return Ok(ExitCode::from(4));
        }
    }
}

/// A `--poll` interval: seconds, fractions allowed (`2`, `0.2`), at
/// least 10 ms so that waiting never spins on the mail server.
fn seconds(text: &str) -> Result<Duration, String> {
    let s: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds (such as 2 or 0.2)"))?;
    if !(0.01..=3600.0).contains(&s) {
        return Err(format!(
            "{text} s is out of range: give between 0.01 and 3600 seconds"
        ));
    }
    Ok(Duration::from_secs_f64(s))
}

/// How to name an exchange to the user: its TrID, or `#N` before it has one.
fn name(st: &ExchangeStatus) -> String {
    st.tr_id.clone().unwrap_or_else(|| format!("#{}", st.op))
}

fn print_offer(st: &ExchangeStatus) {
    println!("Offer from {} (exchange {}):", st.agent, name(st));
    println!(
        "  you pay      {:<16} (A1), by {}",
        st.a1.as_deref().unwrap_or("-"),
        st.d1.as_deref().unwrap_or("-")
    );
    println!(
        "  you receive  {:<16} (A2), asked for by {}",
        st.a2.as_deref().unwrap_or("-"),
        st.d2.as_deref().unwrap_or("-")
    );
    println!("  price        {}", st.price.as_deref().unwrap_or("-"));
}

fn print_status(st: &ExchangeStatus) {
    println!(
        "Exchange #{} {}",
        st.op,
        st.tr_id.as_deref().unwrap_or("(no TrID yet)")
    );
    println!(
        "  agent      {} (key {})",
        st.agent,
        st.agent_key.as_deref().unwrap_or("-")
    );
    println!("  asked      {}", st.asked);
    println!("  policy     {}", st.policy);
    println!(
        "  state      {}{}",
        st.state,
        if st.done { " (finished)" } else { "" }
    );
    println!(
        "  {}  {}",
        if st.done { "outcome" } else { "waits  " },
        st.detail
    );
    if let (Some(a1), Some(a2)) = (&st.a1, &st.a2) {
        println!(
            "  A1         {a1}, to pay by {} (D1)",
            st.d1.as_deref().unwrap_or("-")
        );
        println!(
            "  A2         {a2}, to ask for by {} (D2)",
            st.d2.as_deref().unwrap_or("-")
        );
        println!("  price      {}", st.price.as_deref().unwrap_or("-"));
    }
    println!("  envelopes held:");
    for e in &st.envelopes {
        println!("    {:<24} {} signed by {}", e.role, e.id, e.signer);
    }
}

fn run_evidence(cli: &Cli, args: &EvidenceArgs, now: mailer::money::Timestamp) -> Result<ExitCode> {
    match &args.command {
        Some(EvidenceCommand::Verify { file, json }) => {
            let bytes = std::fs::read(file)
                .with_context(|| format!("could not read {}", file.display()))?;
            let bundle = ExchangeEvidence::from_bytes(&bytes)
                .with_context(|| format!("{} is not an evidence file", file.display()))?;
            let findings = mailer::evidence::verify(&bundle, now)
                .with_context(|| format!("{} is not valid evidence", file.display()))?;
            if *json {
                print_json(&findings)?;
            } else {
                print!("{findings}");
            }
        }
        None => {
            let (Some(which), Some(out)) = (&args.exchange, &args.out) else {
                bail!("say which exchange and where: `wallet evidence TRID --out FILE`");
            };
            let ctx = open(cli)?;
            let op = exchange::find(&ctx.conn, which)?;
            let bundle = exchange::evidence(&ctx.conn, op.id)?;
            let bytes = bundle.to_bytes().context("could not encode the evidence")?;
            std::fs::write(out, bytes)
                .with_context(|| format!("could not write {}", out.display()))?;
            println!(
                "Wrote the evidence of exchange {which} to {}; check it with `wallet evidence verify {}`.",
                out.display(),
                out.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
