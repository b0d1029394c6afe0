//! `issuer account`: open, credit, show accounts; new enrollment codes.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use issuer::operator;
use mailer::money::Amount;
use serde_json::json;

use super::{open, print_json, HomeArg};

#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Open an account and print its one-time enrollment code.
    ///
    /// Give the code to the account holder: their wallet sends it once to
    /// bind its account key to the account.
    #[command(after_help = "Example:\n  issuer account open alice")]
    Open {
        #[command(flatten)]
        home: HomeArg,
        /// The account's name (1 to 200 printable characters).
        name: String,
    },
    /// Print a new one-time enrollment code for an existing account.
    #[command(after_help = "Example:\n  issuer account code alice")]
    Code {
        #[command(flatten)]
        home: HomeArg,
        name: String,
    },
    /// Credit an account (money paid in); AMOUNT is in major units.
    #[command(
        after_help = "Examples:\n  issuer account credit alice 5000        (JPY)\n  issuer account credit bob 12.50 --memo \"cash at the counter\"   (USD)"
    )]
    Credit {
        #[command(flatten)]
        home: HomeArg,
        name: String,
        /// In major units of the currency (e.g. 12.50 dollars).
        amount: String,
        /// A note kept with the ledger entry.
        #[arg(long, default_value = "")]
        memo: String,
    },
    /// Show an account: balance, enrolled keys, open enrollment codes.
    #[command(after_help = "Example:\n  issuer account show alice --json")]
    Show {
        #[command(flatten)]
        home: HomeArg,
        name: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: AccountCommand) -> Result<ExitCode> {
    let now = mailer::clock::now();
    match cmd {
        AccountCommand::Open { home, name } => {
            let (issuer, mut conn) = open(&home.home)?;
            let code = operator::open_account(&mut conn, &issuer, &name, now)
                .with_context(|| format!("could not open the account {name:?}"))?;
            eprintln!(
                "Opened account {name:?}. Its one-time enrollment code (valid until {}):",
                code.expires_at
            );
            println!("{}", code.code);
        }
        AccountCommand::Code { home, name } => {
            let (issuer, mut conn) = open(&home.home)?;
            let code = operator::new_enrollment_code(&mut conn, &issuer, &name, now)
                .with_context(|| format!("could not make a code for the account {name:?}"))?;
            eprintln!(
                "A new one-time enrollment code for {name:?} (valid until {}):",
                code.expires_at
            );
            println!("{}", code.code);
        }
        AccountCommand::Credit {
            home,
            name,
            amount,
            memo,
        } => {
            let (issuer, mut conn) = open(&home.home)?;
            let currency = issuer.currency();
            let amount = Amount::parse_major(&amount, currency).with_context(|| {
                format!("could not read the amount; write it in {currency}, e.g. 5000 or 12.50")
            })?;
            let balance = operator::credit_account(&mut conn, &name, amount, &memo, now)
                .with_context(|| format!("could not credit the account {name:?}"))?;
            println!(
                "Credited {} {currency} to {name:?}; the balance is {} {currency}.",
                amount.display_major(currency),
                balance.display_major(currency)
            );
        }
        AccountCommand::Show { home, name, json } => {
            let (issuer, conn) = open(&home.home)?;
            let currency = issuer.currency();
            let view = operator::show_account(&conn, &name, now)
                .with_context(|| format!("could not show the account {name:?}"))?;
            if json {
                print_json(&json!({
                    "name": view.name,
                    "currency": currency.as_str(),
                    "balance": view.balance.display_major(currency),
                    "balance_minor": view.balance.minor_units(),
                    "keys": view.keys.iter().map(|k| k.to_hex()).collect::<Vec<_>>(),
                    "open_codes": view.open_codes,
                }))?;
            } else {
                println!("Account:    {}", view.name);
                println!(
                    "Balance:    {} {currency}",
                    view.balance.display_major(currency)
                );
                println!("Open codes: {}", view.open_codes);
                if view.keys.is_empty() {
                    println!("Keys:       none enrolled yet");
                } else {
                    println!("Keys:");
                    for k in &view.keys {
                        println!("  {k}");
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
