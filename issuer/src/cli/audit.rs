//! `issuer audit`: the books checked; exit code 3 if they do not add up.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use mailer::money::Amount;
use serde_json::json;

use super::{open, print_json, HomeArg, EXIT_AUDIT};

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub home: HomeArg,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: AuditArgs) -> Result<ExitCode> {
    let (issuer, conn) = open(&a.home.home)?;
    let r = issuer::audit(&conn, &issuer).context("could not audit the books")?;
    let currency = issuer.currency();
    let show = |v: i128| match u64::try_from(v) {
        Ok(v) => Amount::new(v).display_major(currency),
        Err(_) => format!("{v} (minor units)"),
    };
    if a.json {
        print_json(&json!({
            "ok": r.is_ok(),
            "currency": currency.as_str(),
            "issued_minor": r.issued.to_string(),
            "credited_minor": r.credited.to_string(),
            "refunded_minor": r.refunded.to_string(),
            "outstanding_minor": r.outstanding.to_string(),
            "balances_minor": r.balances.to_string(),
            "problems": r.problems,
        }))?;
    } else {
        println!("Issued:      {} {currency}", show(r.issued));
        println!("Deposited:   {} {currency}", show(r.credited));
        println!("Refunded:    {} {currency}", show(r.refunded));
        println!("Outstanding: {} {currency}", show(r.outstanding));
        println!("Balances:    {} {currency}", show(r.balances));
        if r.is_ok() {
            println!("The books add up.");
        } else {
            println!("PROBLEMS ({}):", r.problems.len());
            for p in &r.problems {
                println!("  - {p}");
            }
        }
    }
    if r.is_ok() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "issuer: the audit found problems; stop the daemon and investigate before going on"
        );
        Ok(ExitCode::from(EXIT_AUDIT))
    }
}
