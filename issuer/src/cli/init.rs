//! `issuer init`: a new issuer (key, database, mail settings).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use issuer::{Home, IssuerConfig};
use mailer::money::Currency;
use mailer::smtp::TlsMode;

use super::config::{check_private, parse_tls, Login, MailConfig, Server};

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("password").required(true).args(["password_env", "password_file"])))]
pub struct InitArgs {
    #[command(flatten)]
    pub home: super::HomeArg,
    /// The currency this issuer issues (ISO 4217 code, e.g. JPY).
    #[arg(long)]
    pub currency: String,
    /// The issuer's mail address: wallets send their requests here.
    #[arg(long)]
    pub email: String,
    #[arg(long, value_name = "HOST")]
    pub imap_host: String,
    #[arg(long, value_name = "PORT")]
    pub imap_port: u16,
    /// none, starttls or implicit.
    #[arg(long, value_name = "MODE", value_parser = parse_tls)]
    pub imap_tls: TlsMode,
    #[arg(long, value_name = "HOST")]
    pub smtp_host: String,
    #[arg(long, value_name = "PORT")]
    pub smtp_port: u16,
    /// none, starttls or implicit.
    #[arg(long, value_name = "MODE", value_parser = parse_tls)]
    pub smtp_tls: TlsMode,
    /// The mail account's user name (IMAP and SMTP).
    #[arg(long)]
    pub user: String,
    /// The environment variable that will hold the mail password.
    #[arg(long, value_name = "VAR")]
    pub password_env: Option<String>,
    /// A file (mode 0600) that holds the mail password.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Extra CA certificates to trust (PEM), e.g. a private CA.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("could not resolve {}", p.display()))
}

pub fn run(a: InitArgs) -> Result<ExitCode> {
    let dir = a.home.home;
    let currency: Currency = a.currency.parse().map_err(|_| {
        anyhow::anyhow!(
            "{:?} is not a currency code: use three capital letters, e.g. JPY",
            a.currency
        )
    })?;
    let config_path = MailConfig::path(&dir);
    if config_path.exists() {
        bail!(
            "{} already exists; choose another directory or use the existing issuer",
            config_path.display()
        );
    }
    let password_file = match &a.password_file {
        Some(p) => {
            check_private(p)?;
            Some(absolute(p)?)
        }
        None => None,
    };
    if let Some(var) = &a.password_env {
        if var.is_empty() || var.contains('=') {
            bail!("{var:?} is not an environment variable name");
        }
    }
    let ca_file = match &a.ca_file {
        Some(p) => {
            if !p.is_file() {
                bail!("the CA file {} does not exist", p.display());
            }
            Some(absolute(p)?)
        }
        None => None,
    };
    let mail = MailConfig {
        login: Login {
            user: a.user,
            password_env: a.password_env,
            password_file,
            ca_file,
        },
        imap: Server {
            host: a.imap_host,
            port: a.imap_port,
            tls: a.imap_tls,
        },
        smtp: Server {
            host: a.smtp_host,
            port: a.smtp_port,
            tls: a.smtp_tls,
        },
    };
    let text = mail.to_toml()?;
    let home = Home::new(&dir);
    let (issuer, conn) = home
        .create(IssuerConfig::new(currency, &a.email), mailer::clock::now())
        .with_context(|| format!("could not create the issuer in {}", dir.display()))?;
    drop(conn);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&config_path)
        .with_context(|| format!("could not write {}", config_path.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("could not write {}", config_path.display()))?;
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
