//! `issuer revoke`: revoke a card.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use issuer::operator;

use super::{open, parse_key, HomeArg};

#[derive(Debug, Args)]
pub struct RevokeArgs {
    #[command(flatten)]
    pub home: HomeArg,
    /// The card's payment key (64 hex digits).
    pub key: String,
    /// Why (kept, and published in the revocation list).
    #[arg(long, default_value = "")]
    pub note: String,
}

pub fn run(a: RevokeArgs) -> Result<ExitCode> {
    let key = parse_key(&a.key)?;
    let (_issuer, mut conn) = open(&a.home.home)?;
    let new = operator::revoke_card(&mut conn, &key, &a.note, mailer::clock::now())
        .context("could not revoke the card")?;
    if new {
        println!("Revoked card {key}.");
    } else {
        println!("Card {key} was revoked already; the first revocation stands.");
    }
    Ok(ExitCode::SUCCESS)
}
