//! The `testmail` binary, run for real in a temp folder.

// Helpers outside #[test] fns panic on failure too: that is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::{
    net::SocketAddr,
    process::Stdio,
    time::{Duration, Instant},
};

use common::*;
use testmail::Server;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

const BIN: &str = env!("CARGO_BIN_EXE_testmail");

/// Starts `testmail serve` and reads the two address lines it prints.
async fn serve(dir: &std::path::Path) -> (Child, SocketAddr, SocketAddr) {
    let mut child = Command::new(BIN)
        .args(["serve", "--dir"])
        .arg(dir)
        .args(["--user", &format!("{ALICE}:{ALICE_PW}")])
        .args(["--user", &format!("{BOB}:{BOB_PW}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = |want: &'static str, line: Option<String>| -> SocketAddr {
        let line = line.expect("testmail printed too little");
        let (name, addr) = line.split_once(' ').unwrap();
        assert_eq!(name, want, "{line}");
        addr.parse().unwrap()
    };
    let read = async { lines.next_line().await.unwrap() };
    let smtp = addr(
        "smtp",
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .unwrap(),
    );
    let read = async { lines.next_line().await.unwrap() };
    let imap = addr(
        "imap",
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .unwrap(),
    );
    (child, smtp, imap)
}

fn signal(child: &Child, name: &str) {
    let pid = child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args([name, &pid])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn help_shows_examples() {
    let out = std::process::Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "--dir",
        "--smtp",
        "--imap",
        "--user",
        "Examples:",
        "RUST_LOG",
    ] {
        assert!(help.contains(needle), "{needle} missing from:\n{help}");
    }
    let bad = std::process::Command::new(BIN)
        .args(["serve", "--dir", "/tmp/x", "--user", "no-password"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_then_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, smtp, imap_addr) = serve(dir.path()).await;
    assert!(smtp.ip().is_loopback() && smtp.port() != 0);
    send(&transport(smtp), &[ALICE, BOB], &message(1))
        .await
        .unwrap();
    let mut s = imap(imap_addr, BOB, BOB_PW).await;
    s.select("INBOX").await.unwrap();
    assert_eq!(fetch_all(&mut s).await, vec![(1, message(1))]);

    signal(&child, "-TERM");
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("testmail did not stop on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
}

/// SIGKILL in the middle of a burst: every message the server said 250 to
/// is there after a restart, whole; no temp file is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_burst_keeps_every_acknowledged_message_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (child, smtp, _) = serve(dir.path()).await;
    let transport = transport(smtp);
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sender = {
        let acked = acked.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            for n in 0.. {
                if started.elapsed() > Duration::from_secs(10) {
                    break;
                }
                match send(&transport, &[ALICE], &message(n)).await {
                    Ok(_) => acked.lock().unwrap().push(message(n)),
                    Err(_) => break,
                }
            }
        })
    };
    // Let some mail through, then kill without warning.
    assert!(
        eventually(Duration::from_secs(10), || async {
            acked.lock().unwrap().len() >= 50
        })
        .await
    );
    signal(&child, "-KILL");
    sender.await.unwrap();
    let acked = acked.lock().unwrap().clone();

    let server = Server::start(config(dir.path())).await.unwrap();
    let mut s = imap(server.imap_addr(), ALICE, ALICE_PW).await;
    s.select("INBOX").await.unwrap();
    let stored: Vec<Vec<u8>> = fetch_all(&mut s)
        .await
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    // At most one more than acknowledged: the one stored as the kill came.
    assert!(stored.len() >= acked.len() && stored.len() <= acked.len() + 1);
    for (n, body) in stored.iter().enumerate() {
        assert_eq!(body, &message(n), "message {n} is not whole");
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join(ALICE).join("INBOX"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    eprintln!(
        "killed after {} acknowledged mails; {} stored",
        acked.len(),
        stored.len()
    );
}
