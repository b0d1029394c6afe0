//! The agent's subcommands. Setup (issuers, accounts, cards, float) is the
//! agent's own wallet's business and calls `wallet::ops`; mail queued by a
//! command is sent by `agent run`, which also answers every exchange.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use agent::pricing::{inverse, parse_spread, Pricing};
use agent::{float, status, store, AgentHandler, Clock, Home};
use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use mailer::crypto::PublicKey;
use mailer::daemon::{self, Parts, Tick};
use mailer::imap::Watcher;
use mailer::money::{Amount, Currency, Rate};
use mailer::settings::{MailArgs, MailSettings};
use mailer::smtp::{SenderPolicy, SmtpClient};
use rusqlite::Connection;
use wallet::ops;

const AFTER_HELP: &str = "\
Examples:
  agent init --home ./agent --email agent@example.test \\
      --imap-host mail.example.test --imap-port 993 --imap-tls implicit \\
      --smtp-host mail.example.test --smtp-port 465 --smtp-tls implicit \\
      --user agent@example.test --password-env AGENT_MAIL_PASSWORD
  export AGENT_HOME=./agent
  agent issuer add JPY --email issuer-jpy@example.test --key 3b6a27bc...e1f0
  agent issuer add USD --email issuer-usd@example.test --key 9f1c02aa...77d2
  agent account add JPY --code K7QX-PZ3M-W9TD
  agent account add USD --code 4HDW-Q8ZT-MN2C
  agent card new JPY
  agent card new USD
  agent float withdraw 1000000 JPY
  agent float withdraw 10000 USD
  agent float limits USD --low 2000 --high 20000
  agent rates set JPY USD --mid 0.0067 --spread 0.5%
  agent run &
  agent status

Exit codes: 0 done, 1 failed, 2 bad usage.";

#[derive(Debug, Parser)]
#[command(
    name = "agent",
    version,
    about = "The currency exchange agent: fair exchange by email from its own float.",
    long_about = "The currency exchange agent: fair exchange by email from its own float.

Users' wallets ask it for an offer, accept it, pay the first payment to its
card and ask for the second payment with a request signed by their receiving
card; the agent signs every step, so neither side can cheat without the other
holding proof (the NTT paper, section 4). The float is kept in a wallet of
the agent's own: cards per currency licensed by each issuer, accounts at the
issuers it withdraws from and deposits into.

Every command works on a home directory (--home DIR, or AGENT_HOME) holding
agent.db and agent.toml. Commands queue their mail; `agent run` sends it
and answers every request.",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// The agent's home directory (agent.db, agent.toml).
    #[arg(long, global = true, env = "AGENT_HOME", value_name = "DIR")]
    home: Option<PathBuf>,
    /// The passphrase that seals the keys (set at init; needed after).
    #[arg(long, global = true, env = "AGENT_PASSPHRASE", hide_env_values = true)]
    passphrase: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the agent: key, database, mail settings. Prints its key.
    ///
    /// Wallets pin the agent's key: give it to them over a channel you
    /// trust (`wallet agent add ADDRESS --key KEY`).
    #[command(
        after_help = "Example:\n  agent init --home ./agent --email fx@example.test \\\n      --imap-host mail.example.test --imap-port 993 --imap-tls implicit \\\n      --smtp-host mail.example.test --smtp-port 465 --smtp-tls implicit \\\n      --user fx@example.test --password-env AGENT_MAIL_PASSWORD"
    )]
    Init {
        /// The agent's mail address: wallets send their requests here.
        #[arg(long)]
        email: String,
        /// How long an offer stays open: D1 is this many seconds after it.
        #[arg(long, default_value_t = agent::home::OFFER_SECS, value_name = "S")]
        offer_secs: u64,
        /// How long after D1 the second payment may be asked for (D2).
        #[arg(long, default_value_t = agent::home::REQUEST_SECS, value_name = "S")]
        request_secs: u64,
        #[command(flatten)]
        mail: MailArgs,
    },
    /// Pin the issuer of a currency the agent trades.
    #[command(
        subcommand,
        after_help = "Example:\n  agent issuer add JPY --email issuer-jpy@example.test --key 3b6a27bc...e1f0"
    )]
    Issuer(IssuerCommand),
    /// Bind the agent to its account at an issuer.
    #[command(
        subcommand,
        after_help = "Example:\n  agent account add JPY --code K7QX-PZ3M-W9TD"
    )]
    Account(AccountCommand),
    /// Make the agent's card for a currency and get its license.
    #[command(subcommand, after_help = "Example:\n  agent card new USD")]
    Card(CardCommand),
    /// The float: withdraw, deposit, and the marks of automatic recharge.
    #[command(
        subcommand,
        after_help = "Examples:\n  agent float withdraw 100000 JPY\n  agent float deposit 5000 USD\n  agent float limits USD --low 2000 --high 20000"
    )]
    Float(FloatCommand),
    /// The agent's rates.
    #[command(
        subcommand,
        after_help = "Examples:\n  agent rates set JPY USD --mid 0.0067 --spread 0.5%\n  agent rates load rates.toml\n  agent rates list --json"
    )]
    Rates(RatesCommand),
    /// Change the deadlines of future offers.
    ///
    /// An offer must be paid within --offer-secs (D1); the second payment
    /// may be asked for until --request-secs after D1 (D2). Offers already
    /// made keep their deadlines.
    #[command(after_help = "Example:\n  agent deadlines --offer-secs 3600 --request-secs 604800")]
    Deadlines {
        /// Seconds from an offer to D1.
        #[arg(long, value_name = "S")]
        offer_secs: u64,
        /// Seconds from D1 to D2.
        #[arg(long, value_name = "S")]
        request_secs: u64,
    },
    /// The float per currency, reservations, open exchanges, warnings.
    #[command(after_help = "Example:\n  agent status --json")]
    Status {
        #[arg(long)]
        json: bool,
    },
    /// The daemon: answer every request, keep the float, until SIGTERM.
    #[command(
        after_help = "Examples:\n  AGENT_HOME=./agent agent run\n  agent run --idle              # IMAP IDLE instead of polling every 250 ms"
    )]
    Run(RunArgs),
}

#[derive(Debug, Subcommand)]
enum IssuerCommand {
    /// Pin an issuer's key (as `issuer init` printed it).
    #[command(
        after_help = "Example:\n  agent issuer add JPY --email issuer-jpy@example.test --key 3b6a27bc...e1f0"
    )]
    Add {
        currency: String,
        #[arg(long)]
        email: String,
        #[arg(long)]
        key: String,
    },
}

#[derive(Debug, Subcommand)]
enum AccountCommand {
    /// Bind with the one-time enrollment code the issuer gave.
    #[command(after_help = "Example:\n  agent account add JPY --code K7QX-PZ3M-W9TD")]
    Add {
        currency: String,
        #[arg(long)]
        code: String,
    },
}

#[derive(Debug, Subcommand)]
enum CardCommand {
    /// A card for a currency, licensed by its issuer by mail.
    #[command(after_help = "Example:\n  agent card new USD")]
    New { currency: String },
}

#[derive(Debug, Subcommand)]
enum FloatCommand {
    /// Withdraw notes from the agent's account onto its card.
    #[command(after_help = "Example:\n  agent float withdraw 100000 USD")]
    Withdraw(AmountArgs),
    /// Deposit notes from the agent's card into its account.
    #[command(after_help = "Example:\n  agent float deposit 5000 USD")]
    Deposit(AmountArgs),
    /// Keep the free float between LOW and HIGH automatically: below LOW
    /// `agent run` withdraws, above HIGH it deposits, back to the middle.
    #[command(after_help = "Example:\n  agent float limits USD --low 2000 --high 20000")]
    Limits {
        currency: String,
        #[arg(long)]
        low: String,
        #[arg(long)]
        high: String,
    },
}

#[derive(Debug, Subcommand)]
enum RatesCommand {
    /// Set the rate of a pair: MID units of TO per unit of FROM, less SPREAD.
    ///
    /// Sets the opposite direction too (at 1/MID, same spread) unless
    /// --one-way. Offers already signed keep their amounts.
    #[command(
        after_help = "Examples:\n  agent rates set JPY USD --mid 0.0067 --spread 0.5%\n  agent rates set USD EUR --mid 0.92 --spread 25bp --min 10 --max 5000 --one-way"
    )]
    Set {
        from: String,
        to: String,
        #[arg(long)]
        mid: String,
        /// What the agent keeps: 0.5% or 50bp.
        #[arg(long, default_value = "0")]
        spread: String,
        /// The smallest amount of FROM exchanged (major units).
        #[arg(long)]
        min: Option<String>,
        /// The largest amount of FROM exchanged (major units).
        #[arg(long)]
        max: Option<String>,
        #[arg(long)]
        one_way: bool,
    },
    /// Set every rate of a TOML file: [[rate]] from, to, mid, spread, min, max.
    #[command(
        after_help = "Example rates.toml:\n  [[rate]]\n  from = \"JPY\"\n  to = \"USD\"\n  mid = \"0.0067\"\n  spread = \"0.5%\""
    )]
    Load { file: PathBuf },
    /// The rates offered.
    #[command(after_help = "Example:\n  agent rates list --json")]
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

#[derive(Debug, Args)]
struct RunArgs {
    /// How often to look for new mail, in milliseconds: one NOOP and one
    /// UID SEARCH on the open connection each time.
    #[arg(long, value_name = "N", default_value_t = 250)]
    poll_ms: u64,
    /// Wait for mail with IMAP IDLE when the server offers it, instead of
    /// polling: no traffic while nothing comes, but Dovecot tells of new
    /// mail 0.5 s late, so each request waits longer (see
    /// docs/performance.md). Right for providers that frown on polling.
    #[arg(long)]
    idle: bool,
    /// How often to do the periodic work (deadlines, recharge, resends).
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    tick_ms: u64,
    /// Testing only: run the agent's clock this many seconds ahead.
    #[arg(long, hide = true, default_value_t = 0, allow_hyphen_values = true)]
    clock_offset: i64,
    /// Testing only: a cheating agent that takes first payments and never
    /// makes second payments.
    #[arg(long, hide = true)]
    withhold_second_payments: bool,
}

fn currency(text: &str) -> Result<Currency> {
    text.to_ascii_uppercase().parse().map_err(|_| {
        anyhow::anyhow!("{text:?} is not a currency code: use three letters, e.g. JPY")
    })
}

fn amount(text: &str, c: Currency) -> Result<Amount> {
    Amount::parse_major(text, c).with_context(|| format!("{text:?} is not an amount of {c}"))
}

fn home_of(cli: &Cli) -> Result<Home> {
    match &cli.home {
        Some(h) => Ok(Home::new(h)),
        None => bail!("say where the agent is: --home DIR or AGENT_HOME"),
    }
}

fn open(cli: &Cli) -> Result<(agent::Agent, Connection)> {
    Ok(home_of(cli)?.open(cli.passphrase.as_deref())?)
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(v).context("could not write JSON")?
    );
    Ok(())
}

/// Runs a wallet operation of the agent in one transaction.
fn start(
    cli: &Cli,
    f: impl FnOnce(&rusqlite::Transaction<'_>, &wallet::Wallet) -> Result<i64, wallet::WalletError>,
    said: impl FnOnce(i64) -> String,
) -> Result<()> {
    let (a, mut conn) = open(cli)?;
    let tx = wallet::db::immediate(&mut conn)?;
    let id = f(&tx, &a.wallet)?;
    tx.commit()?;
    println!("{}", said(id));
    eprintln!("The mail goes out with `agent run` (now, if it is running).");
    Ok(())
}

#[derive(Debug, serde::Deserialize)]
struct RatesFile {
    rate: Vec<RateLine>,
}

#[derive(Debug, serde::Deserialize)]
struct RateLine {
    from: String,
    to: String,
    mid: String,
    #[serde(default)]
    spread: Option<String>,
    #[serde(default)]
    min: Option<String>,
    #[serde(default)]
    max: Option<String>,
    #[serde(default)]
    one_way: bool,
}

/// The pricing of one line, and of its opposite direction unless one-way.
fn pricings(l: &RateLine) -> Result<Vec<Pricing>> {
    let from = currency(&l.from)?;
    let to = currency(&l.to)?;
    if from == to {
        bail!("a rate needs two different currencies");
    }
    let mid: Rate = l
        .mid
        .parse()
        .map_err(|_| anyhow::anyhow!("{:?} is not a rate: write it like 0.0067", l.mid))?;
    let spread = parse_spread(l.spread.as_deref().unwrap_or("0")).map_err(anyhow::Error::msg)?;
    let min = match &l.min {
        Some(m) => amount(m, from)?,
        None => Amount::new(1),
    };
    let max = match &l.max {
        Some(m) => amount(m, from)?,
        None => Amount::new(i64::MAX.unsigned_abs()),
    };
    let mut out = vec![Pricing {
        pay: from,
        receive: to,
        mid,
        spread_bp: spread,
        min,
        max,
    }];
    if !l.one_way {
        let back = inverse(mid).context("the rate has no usable inverse")?;
        out.push(Pricing {
            pay: to,
            receive: from,
            mid: back,
            spread_bp: spread,
            min: Amount::new(1),
            max: Amount::new(i64::MAX.unsigned_abs()),
        });
    }
    Ok(out)
}

fn show_pricing(p: &Pricing) -> serde_json::Value {
    serde_json::json!({
        "from": p.pay.as_str(),
        "to": p.receive.as_str(),
        "mid": p.mid.to_string(),
        "spread_bp": p.spread_bp,
        "user_rate": p.user_rate().map(|r| r.to_string()),
        "min": p.min.display_major(p.pay),
        "max": p.max.display_major(p.pay),
    })
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    let now = mailer::clock::now();
    match &cli.command {
        Command::Init {
            email,
            offer_secs,
            request_secs,
            mail,
        } => {
            let home = home_of(&cli)?;
            let settings = mail.clone().settings()?;
            let (a, conn) = home.create(
                email,
                cli.passphrase.as_deref(),
                *offer_secs,
                *request_secs,
                now,
            )?;
            drop(conn);
            settings.write_new(&home.settings_path())?;
            println!("{}", a.public_key());
            eprintln!(
                "Created the exchange agent {email} in {}. Its key is above: wallets pin it with `wallet agent add {email} --key KEY`.",
                home.dir().display()
            );
            eprintln!("Next: `agent issuer add`, `agent account add`, `agent card new` for each currency it trades.");
        }
        Command::Issuer(IssuerCommand::Add {
            currency: c,
            email,
            key,
        }) => {
            let (_, conn) = open(&cli)?;
            let c = currency(c)?;
            let key = PublicKey::from_hex(key).with_context(|| {
                format!("{key:?} is not a key: give the issuer's full key, 64 hex digits")
            })?;
            ops::add_issuer(&conn, c, email, key, now)?;
            println!("Pinned the {c} issuer {email} (key {}).", key.fingerprint());
        }
        Command::Account(AccountCommand::Add { currency: c, code }) => {
            let c = currency(c)?;
            start(
                &cli,
                |tx, w| ops::enroll(tx, w, c, code, now),
                |id| format!("Asked the {c} issuer to bind the agent's account (operation #{id})."),
            )?;
        }
        Command::Card(CardCommand::New { currency: c }) => {
            let c = currency(c)?;
            start(
                &cli,
                |tx, w| ops::new_card(tx, w, c, now),
                |id| {
                    format!(
                        "Made the agent's {c} card and asked for its license (operation #{id})."
                    )
                },
            )?;
        }
        Command::Float(FloatCommand::Withdraw(a)) => {
            let c = currency(&a.currency)?;
            let amt = amount(&a.amount, c)?;
            start(
                &cli,
                |tx, w| ops::withdraw(tx, w, c, amt, now),
                |id| {
                    format!(
                        "Asked the {c} issuer for {} {c} of float (operation #{id}).",
                        amt.display_major(c)
                    )
                },
            )?;
        }
        Command::Float(FloatCommand::Deposit(a)) => {
            let c = currency(&a.currency)?;
            let amt = amount(&a.amount, c)?;
            start(
                &cli,
                |tx, w| ops::deposit(tx, w, c, amt, now),
                |id| {
                    format!(
                        "Depositing {} {c} of float (operation #{id}).",
                        amt.display_major(c)
                    )
                },
            )?;
        }
        Command::Float(FloatCommand::Limits {
            currency: c,
            low,
            high,
        }) => {
            let (_, conn) = open(&cli)?;
            let c = currency(c)?;
            let (low, high) = (amount(low, c)?, amount(high, c)?);
            store::set_limits(&conn, c, low, high)?;
            println!(
                "The free {c} float is kept between {} and {} by `agent run`.",
                low.display_major(c),
                high.display_major(c)
            );
        }
        Command::Rates(RatesCommand::Set {
            from,
            to,
            mid,
            spread,
            min,
            max,
            one_way,
        }) => {
            let (_, conn) = open(&cli)?;
            let line = RateLine {
                from: from.clone(),
                to: to.clone(),
                mid: mid.clone(),
                spread: Some(spread.clone()),
                min: min.clone(),
                max: max.clone(),
                one_way: *one_way,
            };
            for p in pricings(&line)? {
                store::set_rate(&conn, &p, now)?;
                println!(
                    "{} -> {}: mid {}, users get {}",
                    p.pay,
                    p.receive,
                    p.mid,
                    p.user_rate().map(|r| r.to_string()).unwrap_or_default()
                );
            }
        }
        Command::Rates(RatesCommand::Load { file }) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("could not read {}", file.display()))?;
            let rates: RatesFile = toml::from_str(&text)
                .with_context(|| format!("{} is not a rates file", file.display()))?;
            let mut all = Vec::new();
            for l in &rates.rate {
                all.extend(pricings(l)?);
            }
            let (_, mut conn) = open(&cli)?;
            let tx = wallet::db::immediate(&mut conn)?;
            for p in &all {
                store::set_rate(&tx, p, now)?;
            }
            tx.commit()?;
            println!("Set {} rates from {}.", all.len(), file.display());
        }
        Command::Rates(RatesCommand::List { json }) => {
            let (_, conn) = open(&cli)?;
            let rows: Vec<_> = store::rates(&conn)?.iter().map(show_pricing).collect();
            if *json {
                print_json(&rows)?;
            } else {
                for r in &rows {
                    println!(
                        "{} -> {}  mid {}  spread {}bp  users get {}  ({} to {} {})",
                        r["from"].as_str().unwrap_or(""),
                        r["to"].as_str().unwrap_or(""),
                        r["mid"].as_str().unwrap_or(""),
                        r["spread_bp"],
                        r["user_rate"].as_str().unwrap_or(""),
                        r["min"].as_str().unwrap_or(""),
                        r["max"].as_str().unwrap_or(""),
                        r["from"].as_str().unwrap_or(""),
                    );
                }
            }
        }
        Command::Deadlines {
            offer_secs,
            request_secs,
        } => {
            let (_, conn) = open(&cli)?;
            agent::home::set_deadlines(&conn, *offer_secs, *request_secs)?;
            println!("New offers: D1 after {offer_secs} s, D2 {request_secs} s after D1.");
        }
        Command::Status { json } => {
            let (a, conn) = open(&cli)?;
            let s = status::status(&conn, &a, now)?;
            if *json {
                print_json(&s)?;
            } else {
                print_status(&s);
            }
        }
        Command::Run(r) => serve(&cli, r)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn print_status(s: &status::Status) {
    println!("agent {} (key {})", s.address, s.key);
    println!("float:");
    for f in &s.floats {
        println!(
            "  {}: held {}, reserved {}, free {}; marks {} .. {}; account {}; card {}",
            f.currency,
            f.held,
            f.reserved,
            f.free,
            f.low.as_deref().unwrap_or("-"),
            f.high.as_deref().unwrap_or("-"),
            f.account.as_deref().unwrap_or("none"),
            f.card
        );
    }
    println!("open exchanges: {}", s.open.len());
    for t in &s.open {
        println!(
            "  {} {}: {} -> {} for {}; {}",
            t.tr_id, t.state, t.pay, t.receive, t.peer, t.detail
        );
    }
    let done: Vec<String> = s.finished.iter().map(|(k, v)| format!("{v} {k}")).collect();
    println!(
        "finished: {}",
        if done.is_empty() {
            "none".into()
        } else {
            done.join(", ")
        }
    );
    if s.unsent_mail > 0 {
        println!("mail waiting to be sent: {}", s.unsent_mail);
    }
    if !s.warnings.is_empty() {
        println!("warnings (newest first):");
        for (at, w) in &s.warnings {
            println!("  [{}] {w}", mailer::money::Timestamp::from_unix(*at));
        }
    }
}

fn serve(cli: &Cli, r: &RunArgs) -> Result<()> {
    daemon::init_logging();
    let rt = daemon::runtime()?;
    rt.block_on(async {
        let home = home_of(cli)?;
        let mail = MailSettings::load(&home.settings_path(), "agent")?;
        let password = mail.password()?;
        let (a, conn) = home.open(cli.passphrase.as_deref())?;
        let mut imap = mail.imap(&password);
        imap.use_idle = r.idle;
        imap.poll_interval = Duration::from_millis(r.poll_ms.max(10));
        let smtp = SmtpClient::new(&mail.smtp(&password)).context("could not set up SMTP")?;
        let clock = if r.clock_offset == 0 {
            Clock::System
        } else {
            Clock::Offset(r.clock_offset)
        };
        tracing::info!(
            address = %a.address(),
            key = %a.public_key(),
            imap = %format!("{}:{}", mail.imap.host, mail.imap.port),
            smtp = %format!("{}:{}", mail.smtp.host, mail.smtp.port),
            "exchange agent starting"
        );
        let tick_agent = a.clone();
        let work: mailer::daemon::TickWork = Box::new(move |conn: &mut Connection| {
            let tx = wallet::db::immediate(conn).map_err(|e| e.to_string())?;
            let round = float::round(&tx, &tick_agent, clock.now()).map_err(|e| e.to_string())?;
            tx.commit().map_err(|e| e.to_string())?;
            Ok(round.mails())
        });
        let watcher = Watcher::new(
            imap,
            conn,
            AgentHandler {
                agent: a,
                clock,
                withhold_second_payments: r.withhold_second_payments,
            },
        )
        .context("could not prepare the mailbox watcher")?;
        daemon::serve(Parts {
            name: "agent",
            watcher,
            sender_conn: home.connect()?,
            smtp,
            policy: SenderPolicy::default(),
            status_conn: home.connect()?,
            tick: Some(Tick {
                every: Duration::from_millis(r.tick_ms.max(10)),
                conn: home.connect()?,
                work,
            }),
        })
        .await?;
        Ok(())
    })
}
