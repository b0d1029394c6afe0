//! The `issuer` binary, driven as an operator would: in temp dirs, through
//! its exit codes and its output; and the daemon against testmail.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use mailer::crypto::PublicKey;
use mailer::envelope::Signed;
use mailer::messages::{LicenseGranted, LicenseRequest};
use mailer::mime::{build_mail, parse_mail, MessageId, OutgoingMail};
use mailer::money::Currency;
use testmail::harness::TestServer;

const BIN: &str = env!("CARGO_BIN_EXE_issuer");
const PW_VAR: &str = "ISSUER_CLI_TEST_PASSWORD";

fn issuer(home: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("ISSUER_HOME", home)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Exit code 1, a message for people, no Rust debug output.
fn assert_human_failure(out: &Output, expect: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(err.contains(expect), "expected {expect:?} in: {err}");
    for debug in [
        "panicked",
        "Error {",
        "Some(",
        "Os {",
        "RUST_BACKTRACE",
        "kind:",
    ] {
        assert!(!err.contains(debug), "debug output {debug:?} in: {err}");
    }
}

fn init_args<'a>(
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

/// A new issuer in `dir/home`; returns the home and the printed key.
fn init(dir: &Path) -> (PathBuf, PublicKey) {
    let home = dir.join("home");
    let h = home.to_str().unwrap();
    let out = issuer(
        dir,
        &init_args(h, "127.0.0.1", "1143", "1025", "issuer-jpy@example.test"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let key = PublicKey::from_hex(text(&out.stdout).trim()).unwrap();
    (home, key)
}

#[test]
fn init_prints_the_key_and_keeps_the_password_out() {
    let dir = tempfile::tempdir().unwrap();
    let (home, key) = init(dir.path());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(home.join("issuer.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let toml = std::fs::read_to_string(home.join("issuer.toml")).unwrap();
    assert!(toml.contains(PW_VAR), "{toml}");
    assert!(!toml.contains("password ="), "{toml}");
    assert!(toml.contains("tls = \"none\""), "{toml}");
    // The key printed is the key of the home.
    let (opened, _conn) = issuer::Home::new(&home).open().unwrap();
    assert_eq!(opened.public_key(), key);
    // Never twice.
    let h = home.to_str().unwrap();
    let again = issuer(
        dir.path(),
        &init_args(h, "127.0.0.1", "1143", "1025", "issuer-jpy@example.test"),
    );
    assert_human_failure(&again, "already exists");
    assert_eq!(issuer::Home::new(&home).open().unwrap().0.public_key(), key);
}

#[test]
fn a_password_file_must_be_private() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "secret\n").unwrap();
    let home = dir.path().join("home");
    let mut args = init_args(
        home.to_str().unwrap(),
        "127.0.0.1",
        "1",
        "2",
        "issuer@example.test",
    );
    args.truncate(args.len() - 2);
    args.extend(["--password-file", pw.to_str().unwrap()]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_human_failure(&issuer(dir.path(), &args), "chmod 600");
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let out = issuer(dir.path(), &args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let toml = std::fs::read_to_string(home.join("issuer.toml")).unwrap();
    assert!(toml.contains("password_file"), "{toml}");
    assert!(!toml.contains("secret"), "{toml}");
}

#[test]
fn accounts_audit_and_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let (home, _key) = init(dir.path());
    let open = issuer(&home, &["account", "open", "alice"]);
    assert!(open.status.success(), "{}", text(&open.stderr));
    let code = text(&open.stdout).trim().to_string();
    assert_eq!(code.len(), 19, "{code}");
    let credit = issuer(&home, &["account", "credit", "alice", "5000"]);
    assert!(credit.status.success(), "{}", text(&credit.stderr));
    let show = issuer(&home, &["account", "show", "alice", "--json"]);
    assert!(show.status.success(), "{}", text(&show.stderr));
    let v: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(v["name"], "alice");
    assert_eq!(v["balance_minor"], 5000);
    assert_eq!(v["open_codes"], 1);
    assert_eq!(v["keys"].as_array().unwrap().len(), 0);

    let audit = issuer(&home, &["audit", "--json"]);
    assert_eq!(audit.status.code(), Some(0), "{}", text(&audit.stderr));
    let v: serde_json::Value = serde_json::from_slice(&audit.stdout).unwrap();
    assert_eq!(v["ok"], true);
    let report = issuer(&home, &["report", "--json"]);
    assert!(report.status.success());
    let v: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(v["overspends"].as_array().unwrap().len(), 0);

    let db = rusqlite::Connection::open(home.join("issuer.db")).unwrap();
    db.execute(
        "UPDATE accounts SET balance = balance + 1 WHERE name = 'alice'",
        [],
    )
    .unwrap();
    drop(db);
    let audit = issuer(&home, &["audit"]);
    assert_eq!(audit.status.code(), Some(3), "{}", text(&audit.stdout));
    assert!(text(&audit.stdout).contains("PROBLEMS"));
    let audit = issuer(&home, &["audit", "--json"]);
    assert_eq!(audit.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&audit.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert!(!v["problems"].as_array().unwrap().is_empty());
}

#[test]
fn errors_are_for_people() {
    let dir = tempfile::tempdir().unwrap();
    let (home, _key) = init(dir.path());
    assert_human_failure(
        &issuer(&home, &["account", "show", "bob"]),
        "no account named \"bob\"",
    );
    assert_human_failure(&issuer(&home, &["account", "credit", "bob", "10"]), "bob");
    assert!(issuer(&home, &["account", "open", "alice"])
        .status
        .success());
    assert_human_failure(
        &issuer(&home, &["account", "credit", "alice", "12.50"]),
        "could not read the amount",
    );
    assert_human_failure(
        &issuer(&home, &["account", "credit", "alice", "lots"]),
        "could not read the amount",
    );
    assert_human_failure(&issuer(&home, &["revoke", "abc"]), "64 hex digits");
    let missing = dir.path().join("nowhere");
    let out = issuer(&missing, &["audit"]);
    assert_human_failure(&out, "issuer init");
    // The daemon says where the password should come from.
    let out = Command::new(BIN)
        .args(["run", "--home", home.to_str().unwrap()])
        .env_remove(PW_VAR)
        .output()
        .unwrap();
    assert_human_failure(&out, PW_VAR);
    // Usage errors are clap's: exit 2.
    let out = issuer(&home, &["account", "frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    let help = issuer(&home, &["--help"]);
    assert!(help.status.success());
    assert!(text(&help.stdout).contains("Example"));
}

struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(home: &Path, password: &str, log: PathBuf) -> Daemon {
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

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_log(&self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.log().contains(what) {
            assert!(Instant::now() < deadline, "no {what:?} in:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn kill(mut self) {
        // Child::kill is SIGKILL on Unix: no clean shutdown.
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

fn request_mail(from: &str, to: &str, seed: u8, n: u32) -> (Vec<u8>, mailer::crypto::Digest) {
    let req = LicenseRequest::new(
        &mailer::testkit::card(seed),
        Currency::JPY,
        mailer::clock::now(),
    )
    .unwrap();
    let id = req.id();
    let raw = build_mail(&OutgoingMail {
        from: from.into(),
        to: to.into(),
        subject: "license request".into(),
        message_id: MessageId::parse(&format!("req{n}@wallet.example.test")).unwrap(),
        in_reply_to: None,
        references: vec![],
        date: mailer::clock::now(),
        text: "a license request".into(),
        envelopes: vec![req.into_envelope()],
        auto_reply: false,
    })
    .unwrap();
    (raw, id)
}

fn granted(raw: &[u8], key: &PublicKey) -> LicenseGranted {
    let mail = parse_mail(raw).unwrap();
    assert_eq!(mail.envelopes.len(), 1);
    let env = mail.envelopes[0].clone();
    assert_eq!(env.kind(), "license-granted");
    let signed = Signed::<LicenseGranted>::from_envelope(env).unwrap();
    signed.verify_signer(key).unwrap().clone()
}

fn all_sent(home: &Path) -> bool {
    let db = rusqlite::Connection::open(home.join("issuer.db")).unwrap();
    let pending: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM mail_outbox WHERE state != 'sent'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    pending == 0
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_answers_once_across_a_crash() {
    let server = TestServer::start().await.unwrap();
    let mailbox = server.account("issuer-jpy").await.unwrap();
    let wallet = server.account("wallet").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let host = server.imap_addr().ip().to_string();
    let imap_port = server.imap_addr().port().to_string();
    let smtp_port = server.smtp_addr().port().to_string();
    let out = issuer(
        dir.path(),
        &init_args(
            home.to_str().unwrap(),
            &host,
            &imap_port,
            &smtp_port,
            &mailbox.address,
        ),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let key = PublicKey::from_hex(text(&out.stdout).trim()).unwrap();

    let daemon = Daemon::start(&home, &mailbox.password, dir.path().join("run1.log"));
    let (raw, id) = request_mail(&wallet.address, &mailbox.address, 40, 1);
    server
        .send_raw(&wallet.address, &mailbox.address, &raw)
        .await
        .unwrap();
    let inbox = server
        .wait_for(&wallet, "INBOX", 1, Duration::from_secs(20))
        .await
        .unwrap();
    let g = granted(&inbox[0], &key);
    assert_eq!(g.request, id);
    let license = g.license.verify_signer(&key).unwrap();
    assert_eq!(license.card, mailer::testkit::card(40).keys());
    daemon.wait_log("IMAP connected").await;
    daemon.wait_log("sent 1 replies").await;
    // Killed hard once the reply is recorded as sent.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !all_sent(&home) {
        assert!(Instant::now() < deadline, "the reply was never marked sent");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    daemon.kill();

    // Restarted: it answers new mail, and the old mail not again.
    let daemon = Daemon::start(&home, &mailbox.password, dir.path().join("run2.log"));
    daemon.wait_log("IMAP connected").await;
    let (raw, id2) = request_mail(&wallet.address, &mailbox.address, 41, 2);
    server
        .send_raw(&wallet.address, &mailbox.address, &raw)
        .await
        .unwrap();
    let inbox = server
        .wait_for(&wallet, "INBOX", 2, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(granted(&inbox[1], &key).request, id2);
    daemon.wait_log("sent 1 replies").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let inbox = server.messages(&wallet, "INBOX").await.unwrap();
    assert_eq!(inbox.len(), 2, "a mail was answered twice");
    let processed = server.messages(&mailbox, "Processed").await.unwrap();
    assert_eq!(processed.len(), 2);
    assert!(!daemon.log().contains("ERROR"), "{}", daemon.log());
    drop(daemon);
    let audit = issuer(&home, &["audit"]);
    assert_eq!(audit.status.code(), Some(0), "{}", text(&audit.stdout));
    server.shutdown().await;
}
