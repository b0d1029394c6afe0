//! The `issuer` binary, driven as an operator would: in temp dirs, through
//! its exit codes and its output; and the daemon against testmail.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mailer::crypto::PublicKey;

mod support;
use support::*;

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
