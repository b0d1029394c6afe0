//! Two wallets and a JPY issuer, all real binaries, over testmail (or
//! Postfix + Dovecot with TESTMAIL_SERVER=real): enrollment, licenses,
//! withdrawals, a transfer with change, its receipt, a deposit; then the
//! payer killed dead between each pair of its steps, and every transfer
//! still completed exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use testmail::harness::{Account, TestServer};

const WALLET: &str = env!("CARGO_BIN_EXE_wallet");
const PW: &str = "WALLET_TEST_MAIL_PASSWORD";
const ISSUER_PW: &str = "ISSUER_TEST_MAIL_PASSWORD";

fn issuer_bin() -> PathBuf {
    testmail::harness::workspace_binary("issuer", env!("CARGO")).unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn mail_args(server: &TestServer, user: &str, password_env: &str) -> Vec<String> {
    server.init_flags(user, password_env)
}

/// One user's wallet, driven through its binary.
struct User {
    home: PathBuf,
    account: Account,
}

impl User {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(WALLET);
        c.args(args)
            .env("WALLET_HOME", &self.home)
            .env("WALLET_PASSPHRASE", "correct horse")
            .env(PW, &self.account.password)
            .env_remove("WALLET_CRASH_AT")
            .env_remove("RUST_LOG");
        c
    }
    fn run(&self, args: &[&str]) -> String {
        ok(
            self.cmd(args).output().unwrap(),
            &format!("wallet {args:?}"),
        )
    }
    /// Runs with a crash point armed; true if the process died there.
    fn crash(&self, point: &str, args: &[&str]) -> bool {
        let out = self
            .cmd(args)
            .env("WALLET_CRASH_AT", point)
            .output()
            .unwrap();
        !out.status.success()
    }
    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.run(&a)).unwrap()
    }
    fn spendable(&self) -> u64 {
        let b = self.json(&["balance"]);
        b.as_array()
            .unwrap()
            .iter()
            .find(|x| x["currency"] == "JPY")
            .map(|x| x["spendable_minor"].as_u64().unwrap())
            .unwrap_or(0)
    }
    fn pending(&self) -> usize {
        self.json(&["pending"]).as_array().unwrap().len()
    }
    fn sync_wait(&self) {
        self.run(&["sync", "--wait", "--timeout", "60", "--poll", "1"]);
    }
    fn find(&self, kind: &str) -> Vec<serde_json::Value> {
        let h = self.json(&["history"]);
        h.as_array()
            .unwrap()
            .iter()
            .filter(|o| o["kind"] == kind)
            .cloned()
            .collect()
    }
}

struct Issuer {
    home: PathBuf,
    bin: PathBuf,
    daemon: Child,
}

impl Issuer {
    fn cmd(&self, args: &[&str]) -> String {
        ok(
            Command::new(&self.bin)
                .args(args)
                .env("ISSUER_HOME", &self.home)
                .output()
                .unwrap(),
            &format!("issuer {args:?}"),
        )
    }
    fn balance(&self, name: &str) -> u64 {
        let v: serde_json::Value =
            serde_json::from_str(&self.cmd(&["account", "show", name, "--json"])).unwrap();
        v["balance_minor"].as_u64().unwrap()
    }
    fn audit_green(&self) {
        let out = Command::new(&self.bin)
            .args(["audit"])
            .env("ISSUER_HOME", &self.home)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "audit: {}", text(&out.stdout));
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

struct World {
    server: TestServer,
    _dir: tempfile::TempDir,
    issuer: Issuer,
    alice: User,
    bob: User,
}

async fn world() -> World {
    let server = TestServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mailbox = server.account("issuer-jpy").await.unwrap();
    let bin = issuer_bin();
    let ihome = dir.path().join("issuer");
    let mut init: Vec<String> = [
        "init",
        "--home",
        ihome.to_str().unwrap(),
        "--currency",
        "JPY",
        "--email",
        &mailbox.address,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    init.extend(mail_args(&server, &mailbox.address, ISSUER_PW));
    let key = ok(
        Command::new(&bin).args(&init).output().unwrap(),
        "issuer init",
    )
    .trim()
    .to_string();
    let log = std::fs::File::create(dir.path().join("issuer.log")).unwrap();
    let daemon = Command::new(&bin)
        .args(["run", "--home", ihome.to_str().unwrap(), "--poll-ms", "100"])
        .env(ISSUER_PW, &mailbox.password)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let issuer = Issuer {
        home: ihome,
        bin,
        daemon,
    };
    let mut users = Vec::new();
    for name in ["alice", "bob"] {
        let account = server.account(name).await.unwrap();
        let u = User {
            home: dir.path().join(name),
            account,
        };
        let mut args: Vec<String> =
            vec!["init".into(), "--email".into(), u.account.address.clone()];
        args.extend(mail_args(&server, &u.account.address, PW));
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        u.run(&a);
        u.run(&[
            "issuer",
            "add",
            "JPY",
            "--email",
            &mailbox.address,
            "--key",
            &key,
        ]);
        let code = issuer.cmd(&["account", "open", name]).trim().to_string();
        u.run(&["account", "add", "JPY", "--code", &code]);
        u.run(&["card", "new", "JPY"]);
        users.push(u);
    }
    issuer.cmd(&["account", "credit", "alice", "10000"]);
    for u in &users {
        u.sync_wait();
        assert_eq!(u.pending(), 0, "{}", u.run(&["history"]));
    }
    let bob = users.pop().unwrap();
    let alice = users.pop().unwrap();
    World {
        server,
        _dir: dir,
        issuer,
        alice,
        bob,
    }
}

/// Both wallets sync in turn until neither has anything pending.
fn settle(w: &World) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        w.alice.run(&["sync"]);
        w.bob.run(&["sync"]);
        if w.alice.pending() == 0 && w.bob.pending() == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still pending:\nalice: {}\nbob: {}",
            w.alice.run(&["pending"]),
            w.bob.run(&["pending"])
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn withdraw_send_with_change_receipt_and_deposit() {
    let w = world().await;
    // Two notes of 500, so that 700 needs one whole note and part of one.
    w.alice.run(&["withdraw", "500", "JPY"]);
    w.alice.run(&["withdraw", "500", "JPY"]);
    w.alice.sync_wait();
    assert_eq!(w.alice.spendable(), 1_000);
    assert_eq!(w.issuer.balance("alice"), 9_000);

    w.alice.run(&[
        "send",
        "700",
        "JPY",
        "--to",
        &w.bob.account.address,
        "--memo",
        "lunch",
    ]);
    let b = w.alice.json(&["balance"]);
    assert_eq!(b[0]["outgoing_minor"], 700);
    settle(&w);
    assert_eq!(w.alice.spendable(), 300);
    assert_eq!(w.bob.spendable(), 700);
    assert_eq!(w.alice.find("send")[0]["state"], "done");
    let recv = &w.bob.find("receive")[0];
    assert_eq!(recv["state"], "done");
    assert_eq!(recv["memo"], "lunch");
    // The card is unlocked again.
    let cards = w.alice.json(&["card", "list"]);
    assert!(cards[0]["locked_by"].is_null());

    // Bob deposits what he received (a whole note and a partial one).
    w.bob.run(&["deposit", "700", "JPY"]);
    w.bob.sync_wait();
    assert_eq!(w.bob.spendable(), 0);
    assert_eq!(w.issuer.balance("bob"), 700);
    let dep = &w.bob.find("deposit")[0];
    assert_eq!(dep["state"], "done");
    assert_eq!(dep["amount_minor"], 700);
    w.issuer.audit_green();
    w.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_payer_killed_between_any_two_steps_pays_exactly_once() {
    let w = world().await;
    w.alice.run(&["withdraw", "5000", "JPY"]);
    w.alice.sync_wait();
    let start = w.alice.spendable();
    let points = [
        "command:committed",
        "sync:advanced",
        "sync:sent",
        "sync:handled",
    ];
    let mut sent = 0;
    for (i, point) in points.iter().enumerate() {
        let amount = 100 * (i as u64 + 1);
        let send = [
            "send",
            &amount.to_string(),
            "JPY",
            "--to",
            &w.bob.account.address,
        ]
        .map(String::from);
        let send: Vec<&str> = send.iter().map(String::as_str).collect();
        if *point == "command:committed" {
            assert!(
                w.alice.crash(point, &send),
                "the send did not die at {point}"
            );
        } else {
            w.alice.run(&send);
        }
        sent += amount;
        // Each step: alice's sync dies at the point, runs again whole,
        // then bob answers.
        let deadline = Instant::now() + Duration::from_secs(90);
        while w.alice.pending() > 0 || w.bob.pending() > 0 {
            if point.starts_with("sync:") {
                assert!(
                    w.alice.crash(point, &["sync"]),
                    "sync did not die at {point}"
                );
            }
            w.alice.run(&["sync"]);
            w.bob.run(&["sync"]);
            assert!(Instant::now() < deadline, "transfer {i} never completed");
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(
            w.alice.spendable(),
            start - sent,
            "after crashes at {point}"
        );
        assert_eq!(w.bob.spendable(), sent, "after crashes at {point}");
    }
    let received = w.bob.find("receive");
    assert_eq!(
        received.len(),
        points.len(),
        "a transfer was received twice"
    );
    assert!(received.iter().all(|o| o["state"] == "done"));
    assert!(w.alice.find("send").iter().all(|o| o["state"] == "done"));
    // Everything bob received clears at the issuer: nothing was paid twice.
    w.bob.run(&["deposit", &sent.to_string(), "JPY"]);
    w.bob.sync_wait();
    assert_eq!(w.issuer.balance("bob"), sent);
    w.issuer.audit_green();
    w.server.shutdown().await;
}
