//! The architecture's invariants, checked on the source: the protocol core
//! of `mailer` does no I/O and reads no clock; `issuer` and `wallet`
//! never depend on each other or on `agent`, `agent` builds on the
//! wallet library only, and the demo links none of them. See
//! ARCHITECTURE.md.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The pure protocol modules: everything below the MIME layer.
const PURE: &[&str] = &[
    "money.rs",
    "crypto.rs",
    "cbor.rs",
    "limits.rs",
    "envelope.rs",
    "license.rs",
    "note.rs",
    "overspend.rs",
    "messages",
    "evidence.rs",
];

const FORBIDDEN: &[&str] = &[
    "tokio",
    "rusqlite",
    "async_imap",
    "lettre",
    "mail_parser",
    "std::net",
    "std::fs",
    "std::process",
    "std::thread",
    "SystemTime::now",
    "Instant::now",
    "std::env",
];

fn rust_files(p: &Path, out: &mut Vec<PathBuf>) {
    if p.is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            rust_files(&e.unwrap().path(), out);
        }
    } else if p.extension().is_some_and(|e| e == "rs") {
        out.push(p.to_path_buf());
    }
}

#[test]
fn protocol_core_does_no_io_and_reads_no_clock() {
    let src = root().join("mailer/src");
    let mut files = Vec::new();
    for m in PURE {
        rust_files(&src.join(m), &mut files);
    }
    assert!(
        files.len() >= PURE.len(),
        "pure modules not found: {files:?}"
    );
    let mut violations = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for word in FORBIDDEN {
                if code.contains(word) {
                    violations.push(format!("{}:{}: {word}", f.display(), n + 1));
                }
            }
        }
    }
    assert!(violations.is_empty(), "{violations:#?}");
}

#[test]
fn daemons_and_wallet_do_not_depend_on_each_other() {
    // The agent keeps its float in a wallet of its own: `agent` -> `wallet`
    // is the one dependency allowed between the three.
    let crates = ["issuer", "agent", "wallet"];
    for c in crates {
        let manifest = std::fs::read_to_string(root().join(c).join("Cargo.toml")).unwrap();
        for other in crates
            .iter()
            .filter(|o| **o != c && !(c == "agent" && **o == "wallet"))
        {
            let dep = format!("\n{other} ");
            let dep2 = format!("\n{other}.");
            let dep3 = format!("\n{other}=");
            assert!(
                !manifest.contains(&dep) && !manifest.contains(&dep2) && !manifest.contains(&dep3),
                "{c} depends on {other}"
            );
        }
    }
}

#[test]
fn the_demo_drives_the_programs_only() {
    // The demo runs issuer, agent and wallet as a user would; it links none
    // of the product's crates, so it cannot reach around their interfaces.
    let manifest = std::fs::read_to_string(root().join("demo/Cargo.toml")).unwrap();
    for c in ["mailer", "issuer", "agent", "wallet"] {
        for dep in [format!("\n{c} "), format!("\n{c}."), format!("\n{c}=")] {
            assert!(!manifest.contains(&dep), "demo depends on {c}");
        }
    }
}
