//! The programs as a newcomer meets them: every command of every program
//! explains itself with an example, and mistakes get a sentence that says
//! what to do, never a panic or Rust debug output.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use testmail::harness::workspace_binary;

fn bin(name: &str) -> PathBuf {
    if name == "demo" {
        return PathBuf::from(env!("CARGO_BIN_EXE_demo"));
    }
    workspace_binary(name, env!("CARGO")).unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn help(program: &Path, path: &[String]) -> String {
    let out = Command::new(program)
        .args(path)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success(), "{path:?} --help failed");
    text(&out.stdout)
}

/// The subcommands listed under "Commands:" (without `help`).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

/// Every command and command group of `program`, with its help.
fn walk(program: &Path, path: Vec<String>, out: &mut Vec<(Vec<String>, String)>) {
    let h = help(program, &path);
    for sub in subcommands(&h) {
        let mut p = path.clone();
        p.push(sub);
        walk(program, p, out);
    }
    out.push((path, h));
}

#[test]
fn every_command_of_every_program_has_an_example() {
    let mut missing = Vec::new();
    let mut seen = 0;
    for name in ["issuer", "agent", "wallet", "testmail", "demo"] {
        let program = bin(name);
        let mut all = Vec::new();
        walk(&program, Vec::new(), &mut all);
        for (path, h) in all {
            seen += 1;
            if !h.contains("Example") {
                missing.push(format!("{name} {}", path.join(" ")));
            }
        }
    }
    assert!(seen > 50, "only {seen} commands found");
    assert!(
        missing.is_empty(),
        "no example in the help of: {missing:#?}"
    );
}

fn run(name: &str, home_var: &str, home: &Path, args: &[&str]) -> Output {
    Command::new(bin(name))
        .args(args)
        .env(home_var, home)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

/// A failure a person can act on: exit 1 (or 2 for usage), the program's
/// name and `hint` on stderr, no panic and no Debug formatting.
fn says(out: &Output, code: i32, hint: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert!(err.contains(hint), "{hint:?} not in: {err}");
    for debug in [
        "panicked",
        "RUST_BACKTRACE",
        "Os {",
        "Error {",
        "kind:",
        "Some(",
    ] {
        assert!(!err.contains(debug), "{debug:?} in: {err}");
    }
}

#[test]
fn mistakes_are_answered_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let none = dir.path().join("nothing-here");

    // No home yet: each program says how to make one.
    says(
        &run("wallet", "WALLET_HOME", &none, &["balance"]),
        1,
        "wallet init",
    );
    says(
        &run("issuer", "ISSUER_HOME", &none, &["report"]),
        1,
        "issuer init",
    );
    says(
        &run("agent", "AGENT_HOME", &none, &["status"]),
        1,
        "agent init",
    );

    // A home, and mistakes in it.
    let w = dir.path().join("w");
    let init = Command::new(bin("wallet"))
        .args([
            "init",
            "--email",
            "alice@example.test",
            "--imap-host",
            "127.0.0.1",
            "--imap-port",
            "1",
            "--imap-tls",
            "none",
            "--smtp-host",
            "127.0.0.1",
            "--smtp-port",
            "1",
            "--smtp-tls",
            "none",
            "--user",
            "alice@example.test",
            "--password-env",
            "PROGRAMS_TEST_PW",
        ])
        .env("WALLET_HOME", &w)
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", text(&init.stderr));
    says(
        &run("wallet", "WALLET_HOME", &w, &["withdraw", "abc", "JPY"]),
        1,
        "is not an amount",
    );
    says(
        &run(
            "wallet",
            "WALLET_HOME",
            &w,
            &["send", "10", "XYZ", "--to", "bob@example.test"],
        ),
        1,
        "wallet issuer add XYZ",
    );
    says(
        &run(
            "wallet",
            "WALLET_HOME",
            &w,
            &[
                "issuer",
                "add",
                "JPY",
                "--email",
                "i@example.test",
                "--key",
                "12",
            ],
        ),
        1,
        "64 hex digits",
    );
    // A second init on the same home is refused, not overwritten.
    says(
        &Command::new(bin("wallet"))
            .args([
                "init",
                "--email",
                "x@example.test",
                "--imap-host",
                "h",
                "--imap-port",
                "1",
                "--imap-tls",
                "none",
                "--smtp-host",
                "h",
                "--smtp-port",
                "1",
                "--smtp-tls",
                "none",
                "--user",
                "x",
                "--password-env",
                "X",
            ])
            .env("WALLET_HOME", &w)
            .output()
            .unwrap(),
        1,
        "already exists",
    );
    // Bad usage: exit 2 with the usage line.
    says(
        &run("wallet", "WALLET_HOME", &w, &["frobnicate"]),
        2,
        "Usage:",
    );
    says(
        &run("issuer", "ISSUER_HOME", &none, &["frobnicate"]),
        2,
        "Usage:",
    );
    says(
        &run("agent", "AGENT_HOME", &none, &["frobnicate"]),
        2,
        "Usage:",
    );
}
