//! `issuer.toml`: how the daemon reaches its mailbox. The password is not
//! in it: only the name of an environment variable or the path of a file
//! (mode 0600) that holds it.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use mailer::imap::ImapConfig;
use mailer::smtp::{SmtpConfig, TlsMode};
use serde::{Deserialize, Serialize};

pub const CONFIG_FILE: &str = "issuer.toml";

/// One mail server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub host: String,
    pub port: u16,
    /// `none`, `starttls` or `implicit`.
    pub tls: TlsMode,
}

/// The mail account and where its password is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    pub user: String,
    /// The name of the environment variable that holds the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// A file (mode 0600) that holds the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Extra CA certificates to trust (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

/// The whole file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailConfig {
    pub login: Login,
    pub imap: Server,
    pub smtp: Server,
}

pub fn parse_tls(text: &str) -> Result<TlsMode, String> {
    match text {
        "none" => Ok(TlsMode::None),
        "starttls" => Ok(TlsMode::Starttls),
        "implicit" => Ok(TlsMode::Implicit),
        _ => Err("use none, starttls or implicit".into()),
    }
}

impl MailConfig {
    pub fn path(home: &Path) -> PathBuf {
        home.join(CONFIG_FILE)
    }

    pub fn load(home: &Path) -> Result<MailConfig> {
        let path = MailConfig::path(home);
        let text = fs::read_to_string(&path).with_context(|| {
            format!(
                "could not read the mail settings {}; `issuer init` writes them",
                path.display()
            )
        })?;
        let cfg: MailConfig = toml::from_str(&text)
            .with_context(|| format!("{} is not valid; fix it by hand", path.display()))?;
        cfg.check()?;
        Ok(cfg)
    }

    pub fn check(&self) -> Result<()> {
        match (&self.login.password_env, &self.login.password_file) {
            (Some(_), None) | (None, Some(_)) => Ok(()),
            _ => bail!("give exactly one of password_env and password_file in the mail settings"),
        }
    }

    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self).context("could not write the mail settings")
    }

    /// Reads the password from where the settings say it is.
    pub fn password(&self) -> Result<String> {
        if let Some(var) = &self.login.password_env {
            return std::env::var(var).with_context(|| {
                format!("the mail password is read from the environment variable {var}, which is not set; set it and try again")
            });
        }
        if let Some(path) = &self.login.password_file {
            check_private(path)?;
            let text = fs::read_to_string(path).with_context(|| {
                format!("could not read the mail password from {}", path.display())
            })?;
            let pw = text.trim_end_matches(['\r', '\n']).to_string();
            if pw.is_empty() {
                bail!(
                    "{} is empty; write the mail password into it",
                    path.display()
                );
            }
            return Ok(pw);
        }
        bail!("the mail settings name no password; add password_env or password_file under [login]")
    }

    pub fn imap(&self, password: &str) -> ImapConfig {
        let mut c = ImapConfig::new(
            &self.imap.host,
            self.imap.port,
            self.imap.tls,
            &self.login.user,
            password,
        );
        c.ca_file = self.login.ca_file.clone();
        c
    }

    pub fn smtp(&self, password: &str) -> SmtpConfig {
        SmtpConfig {
            host: self.smtp.host.clone(),
            port: self.smtp.port,
            tls: self.smtp.tls,
            username: Some(self.login.user.clone()),
            password: Some(password.to_string()),
            ca_file: self.login.ca_file.clone(),
            timeout: Duration::from_secs(30),
        }
    }
}

/// Refuses a password file that others can read.
pub fn check_private(path: &Path) -> Result<()> {
    let meta = fs::metadata(path)
        .with_context(|| format!("could not read the password file {}", path.display()))?;
    if !meta.is_file() {
        bail!("{} is not a file", path.display());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            bail!(
                "{} can be read by others; run `chmod 600 {}` first",
                path.display(),
                path.display()
            );
        }
    }
    Ok(())
}
