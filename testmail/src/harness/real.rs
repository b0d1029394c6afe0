//! The real servers of `testmail/real-server.sh`: where they are (from the
//! `REAL_*` variables its `env` command prints), claiming accounts of its
//! user pool, and the Dovecot/Postfix tools the harness needs (doveadm,
//! postqueue).
//!
//! Claims: one file per account under `$REAL_MAIL_DIR/claims/`, held with
//! an exclusive `flock(2)` for as long as the [`super::Account`] lives.
//! Locks are per open file, so they exclude other tests of this process as
//! well as other processes, and the kernel drops them when the process
//! ends, however it ends: a crashed run leaves nothing to clean up. The
//! files are never deleted (deleting a lock file lets two holders lock two
//! different files of one name).

use std::{
    collections::BTreeSet,
    fs::{self, File},
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    net::TcpStream,
};

use super::HarnessError;

/// How long a check of a real server's greeting may take.
const GREETING_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a helper program (doveadm, postqueue) may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Output of a helper program kept for an error message.
const MAX_COMMAND_OUTPUT: usize = 1 << 20;

/// One account of `REAL_MAIL_USERS`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct PoolUser {
    pub address: String,
    pub password: String,
}

impl std::fmt::Debug for PoolUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolUser")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// The running real servers, as the `REAL_*` variables describe them.
#[derive(Debug, Clone)]
pub(crate) struct RealServers {
    pub dir: PathBuf,
    pub smtp: SocketAddr,
    pub imap: SocketAddr,
    pub imaps: SocketAddr,
    pub submission: SocketAddr,
    pub ca: PathBuf,
    /// The accounts tests may claim: the `poolN@...` users if there are
    /// any (the named ones, alice and so on, stay free for demos and
    /// hand-made tests), else every user.
    pub pool: Vec<PoolUser>,
}

fn var(name: &'static str) -> Result<String, HarnessError> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_owned()),
        Ok(_) | Err(std::env::VarError::NotPresent) => Err(HarnessError::MissingEnv(name)),
        Err(std::env::VarError::NotUnicode(v)) => Err(HarnessError::BadEnv {
            name,
            value: v.to_string_lossy().into_owned(),
            reason: "not UTF-8".into(),
        }),
    }
}

fn addr_var(name: &'static str) -> Result<SocketAddr, HarnessError> {
    let value = var(name)?;
    value.parse().map_err(|e| HarnessError::BadEnv {
        name,
        reason: format!("expected IP:PORT ({e})"),
        value,
    })
}

impl RealServers {
    pub(crate) fn from_env() -> Result<RealServers, HarnessError> {
        let dir = PathBuf::from(var("REAL_MAIL_DIR")?);
        let users = parse_users(&var("REAL_MAIL_USERS")?)?;
        let is_pool = |u: &PoolUser| {
            u.address
                .split_once('@')
                .and_then(|(local, _)| local.strip_prefix("pool"))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        };
        let pool: Vec<PoolUser> = if users.iter().any(is_pool) {
            users.into_iter().filter(is_pool).collect()
        } else {
            users
        };
        Ok(RealServers {
            dir,
            smtp: addr_var("REAL_SMTP_ADDR")?,
            imap: addr_var("REAL_IMAP_ADDR")?,
            imaps: addr_var("REAL_IMAPS_ADDR")?,
            submission: addr_var("REAL_SUBMISSION_ADDR")?,
            ca: PathBuf::from(var("REAL_MAIL_CA")?),
            pool,
        })
    }

    /// Checks that SMTP and IMAP give their greetings, the TLS ports
    /// accept connections, and the CA file is there.
    pub(crate) async fn check(&self) -> Result<(), HarnessError> {
        expect_greeting("SMTP", self.smtp, "220 ").await?;
        expect_greeting("IMAP", self.imap, "* OK").await?;
        for (what, addr) in [("IMAPS", self.imaps), ("SMTP submission", self.submission)] {
            match tokio::time::timeout(GREETING_TIMEOUT, TcpStream::connect(addr)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    return Err(HarnessError::NotAnswering {
                        what,
                        addr,
                        reason: e.to_string(),
                    })
                }
                Err(_) => {
                    return Err(HarnessError::NotAnswering {
                        what,
                        addr,
                        reason: "connect timed out".into(),
                    })
                }
            }
        }
        if !self.ca.is_file() {
            return Err(HarnessError::BadEnv {
                name: "REAL_MAIL_CA",
                value: self.ca.display().to_string(),
                reason: "no such file".into(),
            });
        }
        Ok(())
    }

    pub(crate) fn claims_dir(&self) -> PathBuf {
        self.dir.join("claims")
    }

    fn dovecot_conf(&self) -> PathBuf {
        self.dir.join("dovecot").join("dovecot.conf")
    }

    fn postfix_conf(&self) -> PathBuf {
        self.dir.join("postfix").join("etc")
    }

    /// Addresses (lower case) that Postfix still holds mail for, in any
    /// queue; `None` if postqueue cannot say (not installed, not root).
    pub(crate) async fn queued_recipients(&self) -> Option<BTreeSet<String>> {
        let conf = self.postfix_conf();
        let conf = conf.to_string_lossy();
        let out = run(&program("postqueue"), &["-c", &conf, "-j"]).await;
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                tracing::debug!(error = %e, "postqueue: cannot see Postfix's queue");
                return None;
            }
        };
        // One JSON object a line; the addresses are all this needs, and
        // they never hold a quote (real-server.sh checks them).
        let mut recipients = BTreeSet::new();
        for line in out.lines() {
            let mut rest = line;
            while let Some(i) = rest.find("\"address\": \"") {
                rest = &rest[i + "\"address\": \"".len()..];
                if let Some(end) = rest.find('"') {
                    recipients.insert(rest[..end].to_ascii_lowercase());
                    rest = &rest[end..];
                }
            }
        }
        Some(recipients)
    }

    /// Gives `address`'s INBOX a new UIDVALIDITY and renumbers it from 1:
    /// Dovecot rebuilds a Maildir's UIDs only when both its `dovecot-uidlist`
    /// and its index are gone (without the index it keeps the old
    /// UIDVALIDITY from the index; without the uidlist alone it renumbers
    /// from UIDNEXT). Then every IMAP session of the user is closed with
    /// `doveadm kick` (`* BYE Server shutting down.`): left alone, a session
    /// that had INBOX selected sometimes gets `* BYE IMAP session state is
    /// inconsistent` and sometimes goes on with the old UIDVALIDITY.
    pub(crate) async fn renumber_inbox(&self, address: &str) -> Result<(), HarnessError> {
        let conf = self.dovecot_conf();
        let conf = conf.to_string_lossy();
        let doveadm = program("doveadm");
        let mut dirs = BTreeSet::new();
        for kind in ["mailbox", "index"] {
            let out = run(
                &doveadm,
                &[
                    "-c", &conf, "mailbox", "path", "-t", kind, "-u", address, "INBOX",
                ],
            )
            .await?;
            let path = out.trim();
            if path.is_empty() {
                return Err(HarnessError::Unexpected(format!(
                    "doveadm mailbox path -t {kind} gave nothing for {address}"
                )));
            }
            dirs.insert(PathBuf::from(path));
        }
        for dir in &dirs {
            remove_uid_state(dir)?;
        }
        run(
            &doveadm,
            &["-c", &conf, "force-resync", "-u", address, "INBOX"],
        )
        .await?;
        // A session that had INBOX open may or may not notice (it may go on
        // with the old UIDs): close them all, as the embedded server does.
        // Exit status 68: there was no session to close.
        run_allowing(&doveadm, &["-c", &conf, "kick", address], &[68]).await?;
        Ok(())
    }
}

/// Removes `dovecot-uidlist` and `dovecot.index*` (not `dovecot.list.index*`,
/// which is the folder list) from a Maildir folder.
fn remove_uid_state(dir: &Path) -> Result<(), HarnessError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        // No mail yet: nothing to renumber; force-resync creates it.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(HarnessError::io(format!("reading {}", dir.display()), e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| HarnessError::io(format!("reading {}", dir.display()), e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == "dovecot-uidlist" || name.starts_with("dovecot.index") {
            let path = entry.path();
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(HarnessError::io(
                        format!("removing {} (run the tests as root)", path.display()),
                        e,
                    ))
                }
            }
        }
    }
    Ok(())
}

/// `address:password` pairs, space-separated; the password is everything
/// after the first `:` that follows the `@`.
pub(crate) fn parse_users(value: &str) -> Result<Vec<PoolUser>, HarnessError> {
    let bad = |reason: String| HarnessError::BadEnv {
        name: "REAL_MAIL_USERS",
        value: value.to_owned(),
        reason,
    };
    let mut users: Vec<PoolUser> = Vec::new();
    for entry in value.split_whitespace() {
        let at = entry.find('@').unwrap_or(0);
        let Some(colon) = entry[at..].find(':').map(|i| i + at) else {
            return Err(bad(format!("{entry:?} is not address:password")));
        };
        let (address, password) = (&entry[..colon], &entry[colon + 1..]);
        if !address.contains('@') || password.is_empty() {
            return Err(bad(format!("{entry:?} is not address:password")));
        }
        let address = address.to_ascii_lowercase();
        if users.iter().any(|u| u.address == address) {
            return Err(bad(format!("{address} is given twice")));
        }
        users.push(PoolUser {
            address,
            password: password.to_owned(),
        });
    }
    if users.is_empty() {
        return Err(bad("no users".into()));
    }
    Ok(users)
}

async fn expect_greeting(
    what: &'static str,
    addr: SocketAddr,
    want: &str,
) -> Result<(), HarnessError> {
    let not_answering = |reason: String| HarnessError::NotAnswering { what, addr, reason };
    let read = async {
        let stream = TcpStream::connect(addr).await?;
        let mut line = String::new();
        // A greeting is one short line; do not read an unbounded one.
        let mut reader = BufReader::new(tokio::io::AsyncReadExt::take(stream, 4096));
        reader.read_line(&mut line).await?;
        Ok::<_, std::io::Error>(line)
    };
    match tokio::time::timeout(GREETING_TIMEOUT, read).await {
        Ok(Ok(line)) if line.starts_with(want) => Ok(()),
        Ok(Ok(line)) => Err(not_answering(format!("greeting {:?}", line.trim_end()))),
        Ok(Err(e)) => Err(not_answering(e.to_string())),
        Err(_) => Err(not_answering(format!(
            "no greeting within {GREETING_TIMEOUT:?}"
        ))),
    }
}

/// The path of a Dovecot or Postfix tool: they live in /usr/sbin or
/// /usr/bin, which a non-login shell may not have in PATH.
fn program(name: &str) -> PathBuf {
    ["/usr/bin", "/usr/sbin", "/bin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// Runs a helper program to completion (bounded in time and output) and
/// returns its standard output.
async fn run(program: &Path, args: &[&str]) -> Result<String, HarnessError> {
    run_allowing(program, args, &[]).await
}

/// [`run`], taking the exit codes in `also_ok` as success too.
async fn run_allowing(
    program: &Path,
    args: &[&str],
    also_ok: &[i32],
) -> Result<String, HarnessError> {
    let command = format!("{} {}", program.display(), args.join(" "));
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| HarnessError::Command {
            command: command.clone(),
            detail: e.to_string(),
        })?;
    let output = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| HarnessError::Timeout {
            what: command.clone(),
            after: COMMAND_TIMEOUT,
        })?
        .map_err(|e| HarnessError::Command {
            command: command.clone(),
            detail: e.to_string(),
        })?;
    let text = |bytes: &[u8]| {
        String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_COMMAND_OUTPUT)]).into_owned()
    };
    let ok = output.status.success() || output.status.code().is_some_and(|c| also_ok.contains(&c));
    if !ok {
        return Err(HarnessError::Command {
            command,
            detail: format!("{}: {}", output.status, text(&output.stderr).trim()),
        });
    }
    Ok(text(&output.stdout))
}

/// An exclusive claim on one pool account, held until dropped.
#[derive(Debug)]
pub(crate) struct Claim {
    /// Holding the file open holds the lock.
    _file: File,
}

impl Claim {
    /// Claims `address` if no one holds it; `Ok(None)` if someone does.
    pub(crate) fn try_claim(
        dir: &Path,
        address: &str,
        hint: &str,
    ) -> Result<Option<Claim>, HarnessError> {
        fs::create_dir_all(dir)
            .map_err(|e| HarnessError::io(format!("creating {}", dir.display()), e))?;
        let name: String = address
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "@.-_+".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = dir.join(name);
        let opened = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path);
        let mut file = match opened {
            Ok(file) => file,
            // Made by another user: a lock needs no write access.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => File::open(&path)
                .map_err(|e| HarnessError::io(format!("opening {}", path.display()), e))?,
            Err(e) => return Err(HarnessError::io(format!("opening {}", path.display()), e)),
        };
        if !lock_exclusive(&file)
            .map_err(|e| HarnessError::io(format!("locking {}", path.display()), e))?
        {
            return Ok(None);
        }
        // Who holds it, for a person looking at a stuck run.
        let note = format!(
            "pid {} test {}\n",
            std::process::id(),
            hint.chars().take(200).collect::<String>()
        );
        let _ = file
            .set_len(0)
            .and_then(|()| file.write_all(note.as_bytes()));
        Ok(Some(Claim { _file: file }))
    }
}

/// Takes an exclusive flock(2) without waiting: false if someone holds one.
#[cfg(unix)]
fn lock_exclusive(file: &File) -> std::io::Result<bool> {
    use rustix::fs::{flock, FlockOperation};
    match flock(file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[cfg(not(unix))]
fn lock_exclusive(_file: &File) -> std::io::Result<bool> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "claiming real-server accounts needs flock(2)",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_excludes_others_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let claims = dir.path().join("claims");
        let first = Claim::try_claim(&claims, "pool1@example.test", "first").unwrap();
        assert!(first.is_some());
        // A second open of the same file, as another process would do.
        assert!(Claim::try_claim(&claims, "pool1@example.test", "second")
            .unwrap()
            .is_none());
        assert!(Claim::try_claim(&claims, "pool2@example.test", "third")
            .unwrap()
            .is_some());
        drop(first);
        assert!(Claim::try_claim(&claims, "pool1@example.test", "again")
            .unwrap()
            .is_some());
    }

    #[test]
    fn users_parse_with_colons_in_passwords() {
        let users = parse_users("a@x.test:pw  B@x.test:p:w\n").unwrap();
        assert_eq!(users[0].address, "a@x.test");
        assert_eq!(users[1].address, "b@x.test");
        assert_eq!(users[1].password, "p:w");
        assert!(parse_users("a@x.test").is_err());
        assert!(parse_users("a@x.test:").is_err());
        assert!(parse_users("a@x.test:1 a@x.test:2").is_err());
        assert!(parse_users(" ").is_err());
    }
}
