//! The hostile-mail corpus against running daemons, on testmail (or, with
//! TESTMAIL_SERVER=real, on Postfix + Dovecot): every row of the table must
//! hold (a signed refusal or a silent quarantine, every daemon alive, no
//! value moved).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests

use std::path::{Path, PathBuf};

use chaos::hostile::{self, Options};
use testmail::harness::{workspace_binary, TestServer};

/// The folder holding issuer, agent and wallet (built if missing).
fn bin_dir() -> PathBuf {
    let mut dir = None;
    for p in ["issuer", "agent", "wallet"] {
        let bin = workspace_binary(p, env!("CARGO")).unwrap();
        dir = bin.parent().map(Path::to_path_buf);
    }
    dir.unwrap()
}

#[test]
fn every_hostile_mail_is_refused_or_quarantined_and_moves_no_value() {
    let server = TestServer::kind_from_env().unwrap();
    let report = hostile::run(&Options {
        server,
        dir: None,
        bins: Some(bin_dir()),
        burst: 1_000,
    })
    .unwrap();
    println!("{}", report.table());
    assert!(
        report.rows.len() >= 25,
        "only {} categories ran",
        report.rows.len()
    );
    for row in &report.rows {
        assert!(row.alive, "{}: a daemon stopped", row.category);
        assert_eq!(row.value_changed, 0, "{}: value changed", row.category);
        assert!(row.audits_ok, "{}: an audit failed", row.category);
        assert!(row.ok(), "{}: {:#?}", row.category, row.problems);
    }
    assert!(
        report
            .rows
            .iter()
            .any(|r| r.category.starts_with("burst") && r.sent >= 1_000),
        "the burst did not run"
    );
    println!("{}", report.conservation);
    assert!(
        report.conservation.is_ok(),
        "value not conserved across the deployment:\n{}",
        report.conservation
    );
}
