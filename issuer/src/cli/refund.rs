//! `issuer refund`: pay back what a revoked card still held.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use issuer::operator;

use super::{open, parse_key, HomeArg};

#[derive(Debug, Args)]
pub struct RefundArgs {
    #[command(flatten)]
    pub home: HomeArg,
    /// The revoked card's payment key (64 hex digits).
    pub key: String,
    /// The account to pay into.
    #[arg(long, value_name = "ACCOUNT")]
    pub to: String,
}

pub fn run(a: RefundArgs) -> Result<ExitCode> {
    let key = parse_key(&a.key)?;
    let (issuer, mut conn) = open(&a.home.home)?;
    let currency = issuer.currency();
    let r = operator::refund(&mut conn, &issuer, &key, &a.to, &[], mailer::clock::now())
        .with_context(|| format!("could not refund card {key} into {:?}", a.to))?;
    println!(
        "Refunded {} {currency} ({} states) into {:?}; the balance is {} {currency}.",
        r.amount.display_major(currency),
        r.states,
        a.to,
        r.balance.display_major(currency)
    );
    Ok(ExitCode::SUCCESS)
}
