//! Mail settings as every program keeps them: a TOML file in its home
//! directory (`issuer.toml`, `agent.toml`, `wallet.toml`) naming the IMAP
//! and SMTP servers and the account. The password is never in it: only
//! the name of an environment variable or the path of a file (mode 0600)
//! that holds it. With the `cli` feature, [`MailArgs`] are the `init`
//! flags that fill it in, the same for every program.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::imap::ImapConfig;
use crate::smtp::{SmtpConfig, TlsMode};

/// What is wrong with the settings, said so that a person can fix it.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("could not read the mail settings {path}: {source}; `{program} init` writes them")]
    Read {
        path: PathBuf,
        program: String,
        source: std::io::Error,
    },
    #[error("{path} is not valid ({reason}); fix it by hand")]
    Invalid { path: PathBuf, reason: String },
    #[error("{0}")]
    Bad(String),
    #[error("could not write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn bad(msg: impl Into<String>) -> SettingsError {
    SettingsError::Bad(msg.into())
}

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
pub struct MailSettings {
    pub login: Login,
    pub imap: Server,
    pub smtp: Server,
}

/// Parses `none`, `starttls` or `implicit`.
pub fn parse_tls(text: &str) -> Result<TlsMode, String> {
    match text {
        "none" => Ok(TlsMode::None),
        "starttls" => Ok(TlsMode::Starttls),
        "implicit" => Ok(TlsMode::Implicit),
        _ => Err("use none, starttls or implicit".into()),
    }
}

fn absolute(p: &Path) -> Result<PathBuf, SettingsError> {
    std::path::absolute(p).map_err(|e| bad(format!("could not resolve {}: {e}", p.display())))
}

impl MailSettings {
    /// Settings from what a person gave `init`, checked: exactly one
    /// password source, a private password file, an existing CA file.
    /// Paths are made absolute so the file works from any directory.
    pub fn new(login: Login, imap: Server, smtp: Server) -> Result<MailSettings, SettingsError> {
        let mut login = login;
        if let Some(var) = &login.password_env {
            if var.is_empty() || var.contains('=') {
                return Err(bad(format!("{var:?} is not an environment variable name")));
            }
        }
        if let Some(p) = &login.password_file {
            check_private(p)?;
            login.password_file = Some(absolute(p)?);
        }
        if let Some(p) = &login.ca_file {
            if !p.is_file() {
                return Err(bad(format!("the CA file {} does not exist", p.display())));
            }
            login.ca_file = Some(absolute(p)?);
        }
        let s = MailSettings { login, imap, smtp };
        s.check()?;
        Ok(s)
    }

    /// Reads `path`; `program` names who writes it, for the error.
    pub fn load(path: &Path, program: &str) -> Result<MailSettings, SettingsError> {
        let text = fs::read_to_string(path).map_err(|source| SettingsError::Read {
            path: path.to_path_buf(),
            program: program.to_string(),
            source,
        })?;
        let s: MailSettings = toml::from_str(&text).map_err(|e| SettingsError::Invalid {
            path: path.to_path_buf(),
            reason: e.message().to_string(),
        })?;
        s.check()?;
        Ok(s)
    }

    fn check(&self) -> Result<(), SettingsError> {
        match (&self.login.password_env, &self.login.password_file) {
            (Some(_), None) | (None, Some(_)) => Ok(()),
            _ => Err(bad(
                "give exactly one of password_env and password_file in the mail settings",
            )),
        }
    }

    /// Writes the settings to a new file at `path` (never over one).
    pub fn write_new(&self, path: &Path) -> Result<(), SettingsError> {
        use std::io::Write;
        let text = toml::to_string(self).map_err(|e| bad(format!("could not encode: {e}")))?;
        let write = |source| SettingsError::Write {
            path: path.to_path_buf(),
            source,
        };
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(write)?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(write)
    }

    /// Reads the password from where the settings say it is.
    pub fn password(&self) -> Result<String, SettingsError> {
        if let Some(var) = &self.login.password_env {
            return std::env::var(var).map_err(|_| {
                bad(format!("the mail password is read from the environment variable {var}, which is not set; set it and try again"))
            });
        }
        if let Some(path) = &self.login.password_file {
            check_private(path)?;
            let text = fs::read_to_string(path).map_err(|e| {
                bad(format!(
                    "could not read the mail password from {}: {e}",
                    path.display()
                ))
            })?;
            let pw = text.trim_end_matches(['\r', '\n']).to_string();
            if pw.is_empty() {
                return Err(bad(format!(
                    "{} is empty; write the mail password into it",
                    path.display()
                )));
            }
            return Ok(pw);
        }
        Err(bad(
            "the mail settings name no password; add password_env or password_file under [login]",
        ))
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

/// Creates a program's home directory (and its parents) and makes it
/// private to its owner (0700), so that nothing written in it (keys,
/// databases and their WAL files, settings) can be read by others.
pub fn create_private_dir(path: &Path) -> std::io::Result<()> {
    fs::create_dir_all(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Refuses a secret file that others can read.
pub fn check_private(path: &Path) -> Result<(), SettingsError> {
    let meta = fs::metadata(path)
        .map_err(|e| bad(format!("could not read the file {}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(bad(format!("{} is not a file", path.display())));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(bad(format!(
                "{} can be read by others; run `chmod 600 {}` first",
                path.display(),
                path.display()
            )));
        }
    }
    Ok(())
}

/// The mail flags of every program's `init`.
#[cfg(feature = "cli")]
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("password").required(true).args(["password_env", "password_file"])))]
pub struct MailArgs {
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

#[cfg(feature = "cli")]
impl MailArgs {
    pub fn settings(self) -> Result<MailSettings, SettingsError> {
        MailSettings::new(
            Login {
                user: self.user,
                password_env: self.password_env,
                password_file: self.password_file,
                ca_file: self.ca_file,
            },
            Server {
                host: self.imap_host,
                port: self.imap_port,
                tls: self.imap_tls,
            },
            Server {
                host: self.smtp_host,
                port: self.smtp_port,
                tls: self.smtp_tls,
            },
        )
    }
}
