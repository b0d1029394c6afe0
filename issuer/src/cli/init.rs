//! `issuer init`: a new issuer (key, database, mail settings).

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use issuer::{Home, IssuerConfig};
use mailer::money::Currency;
use mailer::settings::MailArgs;

use super::SETTINGS_FILE;

#[derive(Debug, Args)]
pub struct InitArgs {
    #[command(flatten)]
    pub home: super::HomeArg,
    /// The currency this issuer issues (ISO 4217 code, e.g. JPY).
    #[arg(long)]
    pub currency: String,
    /// The issuer's mail address: wallets send their requests here.
    #[arg(long)]
    pub email: String,
    #[command(flatten)]
    pub mail: MailArgs,
}

pub fn run(a: InitArgs) -> Result<ExitCode> {
    let dir = a.home.home;
    let currency: Currency = a.currency.parse().map_err(|_| {
        anyhow::anyhow!(
            "{:?} is not a currency code: use three capital letters, e.g. JPY",
            a.currency
        )
    })?;
    let config_path = dir.join(SETTINGS_FILE);
    if config_path.exists() {
        bail!(
            "{} already exists; choose another directory or use the existing issuer",
            config_path.display()
        );
    }
    let mail = a.mail.settings()?;
    let home = Home::new(&dir);
    let (issuer, conn) = home
        .create(IssuerConfig::new(currency, &a.email), mailer::clock::now())
        .with_context(|| format!("could not create the issuer in {}", dir.display()))?;
    drop(conn);
    mail.write_new(&config_path)?;
    eprintln!(
        "Created the {currency} issuer {} in {}.",
        issuer.address(),
        dir.display()
    );
    eprintln!(
        "Its public key (wallets and agents pin it; give it to them over a channel you trust):"
    );
    println!("{}", issuer.public_key().to_hex());
    Ok(ExitCode::SUCCESS)
}
