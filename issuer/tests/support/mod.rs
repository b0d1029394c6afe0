//! The `issuer` binary as the tests drive it: one-shot commands, the
//! daemon as a child process (killed hard), and its log.

#![allow(dead_code)] // each test binary uses its own part

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use mailer::crypto::PublicKey;
use testmail::harness::{Account, TestServer};

pub const BIN: &str = env!("CARGO_BIN_EXE_issuer");
pub const PW_VAR: &str = "ISSUER_CLI_TEST_PASSWORD";

/// Runs `issuer ARGS` with `ISSUER_HOME=home`.
pub fn issuer(home: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("ISSUER_HOME", home)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

/// Runs `issuer ARGS`, which must succeed, and returns its stdout.
pub fn issuer_ok(home: &Path, args: &[&str]) -> String {
    let out = issuer(home, args);
    assert!(
        out.status.success(),
        "issuer {args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn init_args<'a>(
    home: &'a str,
    host: &'a str,
    imap_port: &'a str,
    smtp_port: &'a str,
    user: &'a str,
) -> Vec<&'a str> {
    vec![
        "init",
        "--home",
        home,
        "--currency",
        "JPY",
        "--email",
        user,
        "--imap-host",
        host,
        "--imap-port",
        imap_port,
        "--imap-tls",
        "none",
        "--smtp-host",
        host,
        "--smtp-port",
        smtp_port,
        "--smtp-tls",
        "none",
        "--user",
        user,
        "--password-env",
        PW_VAR,
    ]
}

/// `issuer init` for `mailbox` on `server`, in `dir/home`; returns the
/// home and the printed issuer key.
pub fn init_on(dir: &Path, server: &TestServer, mailbox: &Account) -> (PathBuf, PublicKey) {
    let home = dir.join("home");
    let host = server.imap_addr().ip().to_string();
    let imap_port = server.imap_addr().port().to_string();
    let smtp_port = server.smtp_addr().port().to_string();
    let out = issuer_ok(
        dir,
        &init_args(
            home.to_str().unwrap(),
            &host,
            &imap_port,
            &smtp_port,
            &mailbox.address,
        ),
    );
    let key = PublicKey::from_hex(out.trim()).unwrap();
    (home, key)
}

/// `issuer run` as a child process, logging to a file.
pub struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    pub fn start(home: &Path, password: &str, log: PathBuf) -> Daemon {
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(BIN)
            .args(["run", "--home", home.to_str().unwrap(), "--poll-ms", "100"])
            .env(PW_VAR, password)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        Daemon { child, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn wait_log(&self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.log().contains(what) {
            assert!(Instant::now() < deadline, "no {what:?} in:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// SIGKILL (what `Child::kill` sends on Unix): no clean shutdown.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
