//! Exchanges end to end, every party a real binary: a JPY issuer and a USD
//! issuer (`issuer run`), the agent (`agent run`) and alice's wallet, over
//! testmail (or Postfix + Dovecot with TESTMAIL_SERVER=real). Both
//! directions, amounts to pay and to receive, the rate fixed by the signed
//! offer, out of stock, automatic recharge, the agent and the wallet killed
//! at every step, a late first payment refunded, and a cheating agent
//! convicted by the wallet's evidence. Both issuers' audits stay green.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use testmail::harness::{Account, TestServer};

const AGENT: &str = env!("CARGO_BIN_EXE_agent");
const PW: &str = "EXCHANGE_TEST_MAIL_PASSWORD";

fn sibling(name: &str) -> PathBuf {
    testmail::harness::workspace_binary(name, env!("CARGO")).unwrap()
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

fn mail_args(server: &TestServer, user: &str) -> Vec<String> {
    server.init_flags(user, PW)
}

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A daemon process, killed (SIGKILL) when dropped.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Issuer {
    home: PathBuf,
    bin: PathBuf,
    account: Account,
    key: String,
    _daemon: Daemon,
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
    fn audit_green(&self) {
        let out = Command::new(&self.bin)
            .args(["audit"])
            .env("ISSUER_HOME", &self.home)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "audit: {}", text(&out.stdout));
    }
}

struct Agent {
    home: PathBuf,
    account: Account,
    daemon: Option<Daemon>,
    log: PathBuf,
    run_args: Vec<String>,
}

impl Agent {
    fn cmd(&self, args: &[&str]) -> String {
        ok(
            Command::new(AGENT)
                .args(args)
                .env("AGENT_HOME", &self.home)
                .output()
                .unwrap(),
            &format!("agent {args:?}"),
        )
    }
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(AGENT)
            .args(["run", "--poll-ms", "100", "--tick-ms", "200"])
            .args(&self.run_args)
            .env("AGENT_HOME", &self.home)
            .env(PW, &self.account.password)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.daemon = Some(Daemon(child));
    }
    /// SIGKILL, wherever it is.
    fn kill(&mut self) {
        self.daemon = None;
    }
    fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.cmd(&["status", "--json"])).unwrap()
    }
    fn held(&self, currency: &str) -> String {
        self.status()["floats"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["currency"] == currency)
            .map(|f| f["held"].as_str().unwrap().to_string())
            .unwrap_or_default()
    }
}

struct User {
    home: PathBuf,
    bin: PathBuf,
    account: Account,
}

impl User {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(args)
            .env("WALLET_HOME", &self.home)
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
    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.run(&a)).unwrap()
    }
    fn spendable(&self, currency: &str) -> u64 {
        self.json(&["balance"])
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["currency"] == currency)
            .map(|x| x["spendable_minor"].as_u64().unwrap())
            .unwrap_or(0)
    }
    fn sync_wait(&self) {
        self.run(&["sync", "--wait", "--timeout", "90", "--poll", "1"]);
    }
    fn exchanges(&self) -> Vec<serde_json::Value> {
        self.json(&["exchange", "status"])
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
    fn last_exchange(&self) -> serde_json::Value {
        self.exchanges().pop().expect("an exchange")
    }
}

struct World {
    server: TestServer,
    dir: tempfile::TempDir,
    jpy: Issuer,
    usd: Issuer,
    agent: Agent,
    alice: User,
}

async fn issuer(server: &TestServer, dir: &Path, currency: &str) -> Issuer {
    let account = server
        .account(&format!("issuer-{}", currency.to_lowercase()))
        .await
        .unwrap();
    let bin = sibling("issuer");
    let home = dir.join(format!("issuer-{currency}"));
    let mut init: Vec<String> = [
        "init",
        "--home",
        home.to_str().unwrap(),
        "--currency",
        currency,
        "--email",
        &account.address,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    init.extend(mail_args(server, &account.address));
    let key = ok(
        Command::new(&bin).args(&init).output().unwrap(),
        "issuer init",
    )
    .trim()
    .to_string();
    let log = std::fs::File::create(dir.join(format!("issuer-{currency}.log"))).unwrap();
    let daemon = Command::new(&bin)
        .args(["run", "--home", home.to_str().unwrap(), "--poll-ms", "100"])
        .env(PW, &account.password)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Issuer {
        home,
        bin,
        account,
        key,
        _daemon: Daemon(daemon),
    }
}

/// Two issuers, the agent with a float of 100,000 JPY and 100 USD
/// (rates JPY->USD at 0.0067, spread 0.5%), alice with 20,000 JPY and
/// 100 USD and the agent's key pinned.
async fn world(agent_run_args: &[&str]) -> World {
    let server = TestServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let jpy = issuer(&server, dir.path(), "JPY").await;
    let usd = issuer(&server, dir.path(), "USD").await;

    let account = server.account("agent").await.unwrap();
    let home = dir.path().join("agent");
    let mut init: Vec<String> = vec!["init".into(), "--email".into(), account.address.clone()];
    init.extend(mail_args(&server, &account.address));
    let mut agent = Agent {
        home,
        account,
        daemon: None,
        log: dir.path().join("agent.log"),
        run_args: agent_run_args.iter().map(|s| s.to_string()).collect(),
    };
    let a: Vec<&str> = init.iter().map(String::as_str).collect();
    let agent_key = agent.cmd(&a).trim().to_string();
    for (i, c, credit) in [(&jpy, "JPY", "2000000"), (&usd, "USD", "5000")] {
        agent.cmd(&[
            "issuer",
            "add",
            c,
            "--email",
            &i.account.address,
            "--key",
            &i.key,
        ]);
        let code = i.cmd(&["account", "open", "agent"]).trim().to_string();
        i.cmd(&["account", "credit", "agent", credit]);
        agent.cmd(&["account", "add", c, "--code", &code]);
        agent.cmd(&["card", "new", c]);
    }
    agent.cmd(&[
        "rates", "set", "JPY", "USD", "--mid", "0.0067", "--spread", "0.5%",
    ]);
    agent.start();
    wait_until("the agent's cards and accounts", 60, || {
        let s = agent.status();
        s["floats"].as_array().unwrap().len() == 2
            && s["floats"]
                .as_array()
                .unwrap()
                .iter()
                .all(|f| f["card"] == "active")
            && s["floats"]
                .as_array()
                .unwrap()
                .iter()
                .all(|f| f["account"].as_str().is_some_and(|a| a.contains(' ')))
    });
    agent.cmd(&["float", "withdraw", "100000", "JPY"]);
    agent.cmd(&["float", "withdraw", "100", "USD"]);
    wait_until("the agent's float", 60, || {
        agent.held("JPY") == "100000 JPY" && agent.held("USD") == "100.00 USD"
    });

    let account = server.account("alice").await.unwrap();
    let alice = User {
        home: dir.path().join("alice"),
        bin: sibling("wallet"),
        account,
    };
    let mut init: Vec<String> = vec![
        "init".into(),
        "--email".into(),
        alice.account.address.clone(),
    ];
    init.extend(mail_args(&server, &alice.account.address));
    let a: Vec<&str> = init.iter().map(String::as_str).collect();
    alice.run(&a);
    for (i, c, credit) in [(&jpy, "JPY", "20000"), (&usd, "USD", "100")] {
        alice.run(&[
            "issuer",
            "add",
            c,
            "--email",
            &i.account.address,
            "--key",
            &i.key,
        ]);
        let code = i.cmd(&["account", "open", "alice"]).trim().to_string();
        i.cmd(&["account", "credit", "alice", credit]);
        alice.run(&["account", "add", c, "--code", &code]);
        alice.run(&["card", "new", c]);
    }
    alice.sync_wait();
    alice.run(&["withdraw", "20000", "JPY"]);
    alice.run(&["withdraw", "100", "USD"]);
    alice.sync_wait();
    assert_eq!(alice.spendable("JPY"), 20_000);
    assert_eq!(alice.spendable("USD"), 10_000);
    alice.run(&["agent", "add", &agent.account.address, "--key", &agent_key]);
    World {
        server,
        dir,
        jpy,
        usd,
        agent,
        alice,
    }
}

impl World {
    fn exchange(&self, args: &[&str]) -> Output {
        let mut a = vec!["exchange"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["--agent", &self.agent.account.address]);
        let mut c = self.alice.cmd(&a);
        c.output().unwrap()
    }
    fn audits_green(&self) {
        self.jpy.audit_green();
        self.usd.audit_green();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn both_ways_the_rate_fixed_out_of_stock_and_recharge() {
    let w = world(&[]).await;
    w.agent
        .cmd(&["float", "limits", "USD", "--low", "90", "--high", "200"]);

    // JPY -> USD, paying 10,000 JPY: 66.66 USD at 0.0066665.
    ok(
        w.exchange(&[
            "10000",
            "JPY",
            "--to",
            "USD",
            "--yes",
            "--timeout",
            "90",
            "--poll",
            "1",
        ]),
        "exchange",
    );
    let x = w.alice.last_exchange();
    assert_eq!(x["state"], "done", "{x}");
    assert_eq!(w.alice.spendable("JPY"), 10_000);
    assert_eq!(w.alice.spendable("USD"), 10_000 + 6_666);

    // USD -> JPY, receiving 5,000 JPY.
    ok(
        w.exchange(&[
            "5000",
            "JPY",
            "--from",
            "USD",
            "--yes",
            "--timeout",
            "90",
            "--poll",
            "1",
        ]),
        "exchange back",
    );
    let x = w.alice.last_exchange();
    assert_eq!(x["state"], "done", "{x}");
    assert_eq!(w.alice.spendable("JPY"), 15_000);
    let paid = 16_666 - w.alice.spendable("USD");
    // 5000 / (149.253731343 * 0.995) = 33.67 USD, rounded up.
    assert_eq!(paid, 3_367);

    // The rate changes between the offer and the acceptance: the signed
    // offer keeps the offer's amounts.
    ok(
        w.exchange(&["1000", "JPY", "--to", "USD", "--no-wait"]),
        "exchange, no wait",
    );
    wait_until("the offer", 60, || {
        w.alice.run(&["sync"]);
        w.alice.last_exchange()["state"] == "offered"
    });
    let tr = w.alice.last_exchange()["tr_id"]
        .as_str()
        .unwrap()
        .to_string();
    w.agent.cmd(&[
        "rates", "set", "JPY", "USD", "--mid", "0.0050", "--spread", "0.5%",
    ]);
    w.alice.run(&["exchange", "accept", &tr]);
    w.alice.sync_wait();
    let x = w.alice.json(&["exchange", "status", &tr]);
    assert_eq!(x["state"], "done", "{x}");
    assert_eq!(w.alice.spendable("USD"), 16_666 - 3_367 + 666);

    // More than the float can give: out of stock, and the operator is told.
    let out = w.exchange(&[
        "500",
        "USD",
        "--from",
        "JPY",
        "--yes",
        "--timeout",
        "60",
        "--poll",
        "1",
    ]);
    let x = w.alice.last_exchange();
    assert_eq!(x["state"], "failed", "{x}\n{}", text(&out.stderr));
    assert!(x["detail"].as_str().unwrap().contains("502"), "{x}");
    let s = w.agent.status();
    assert!(
        s["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x[1].as_str().unwrap().contains("out of stock")),
        "{s}"
    );

    // The USD float fell below its low mark (90): the agent withdrew back
    // to the middle (145) by itself.
    wait_until("the automatic recharge", 60, || {
        let held = w.agent.held("USD");
        held.trim_end_matches(" USD").parse::<f64>().unwrap() >= 90.0
    });
    assert_eq!(w.agent.status()["finished"]["delivered"], 3);
    w.audits_green();
    w.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_agent_and_wallet_every_exchange_paid_exactly_once() {
    let mut w = world(&[]).await;
    let mut expected_usd = 10_000;
    // The agent killed (SIGKILL) and restarted after every pass of the
    // wallet, wherever it is.
    for _ in 0..2 {
        ok(
            w.exchange(&["1000", "JPY", "--to", "USD", "--yes", "--no-wait"]),
            "exchange",
        );
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            w.alice.run(&["sync"]);
            w.agent.kill();
            w.agent.start();
            let x = w.alice.last_exchange();
            if x["state"] == "done" {
                break;
            }
            assert!(Instant::now() < deadline, "not done: {x}");
            std::thread::sleep(Duration::from_millis(300));
        }
        expected_usd += 666;
    }
    // The wallet killed at each of its step boundaries, once per exchange.
    for point in [
        "command:committed",
        "sync:advanced",
        "sync:sent",
        "sync:handled",
    ] {
        let out = w
            .alice
            .cmd(&[
                "exchange",
                "1000",
                "JPY",
                "--to",
                "USD",
                "--yes",
                "--timeout",
                "60",
                "--poll",
                "1",
                "--agent",
                &w.agent.account.address,
            ])
            .env("WALLET_CRASH_AT", point)
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "{point}: the wallet should have died"
        );
        w.alice.sync_wait();
        let x = w.alice.last_exchange();
        assert_eq!(x["state"], "done", "{point}: {x}");
        expected_usd += 666;
    }
    assert_eq!(w.alice.spendable("USD"), expected_usd);
    assert_eq!(w.alice.spendable("JPY"), 20_000 - 6 * 1_000);
    let s = w.agent.status();
    assert_eq!(s["finished"]["delivered"], 6, "{s}");
    assert_eq!(w.agent.held("JPY"), "106000 JPY");
    w.audits_green();
    w.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_late_first_payment_is_refunded() {
    let w = world(&[]).await;
    w.agent
        .cmd(&["deadlines", "--offer-secs", "10", "--request-secs", "60"]);
    ok(
        w.exchange(&["1000", "JPY", "--to", "USD", "--yes", "--no-wait"]),
        "exchange",
    );
    // The wallet pays as soon as the signed offer comes, but dies before
    // the payment leaves; it leaves after D1.
    wait_until("the signed offer", 60, || {
        let _ = w
            .alice
            .cmd(&["sync"])
            .env("WALLET_CRASH_AT", "sync:handled")
            .output()
            .unwrap();
        w.alice.last_exchange()["state"] == "paying"
    });
    assert_eq!(w.alice.spendable("JPY"), 19_000);
    std::thread::sleep(Duration::from_secs(11));
    w.alice.sync_wait();
    let x = w.alice.last_exchange();
    assert_eq!(x["state"], "refunded", "{x}");
    assert_eq!(w.alice.spendable("JPY"), 20_000);
    assert_eq!(w.alice.spendable("USD"), 10_000);
    w.audits_green();
    w.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cheating_agent_is_convicted_by_the_evidence() {
    let w = world(&["--withhold-second-payments"]).await;
    let out = w.exchange(&[
        "1000",
        "JPY",
        "--to",
        "USD",
        "--yes",
        "--timeout",
        "8",
        "--poll",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let x = w.alice.last_exchange();
    assert_eq!(x["state"], "paying", "{x}");
    let tr = x["tr_id"].as_str().unwrap().to_string();
    let file = w.dir.path().join("exchange.evidence");
    w.alice
        .run(&["evidence", &tr, "--out", file.to_str().unwrap()]);
    let said = w.alice.run(&["evidence", "verify", file.to_str().unwrap()]);
    assert!(said.contains("PROVEN"), "{said}");
    assert!(said.contains("ABSENT"), "{said}");
    let v = w
        .alice
        .json(&["evidence", "verify", file.to_str().unwrap()]);
    // Signed by the agent's key, paid in full, and nothing paid back.
    assert_eq!(v["agent_signed"], true, "{v}");
    assert!(
        v.to_string()
            .contains(w.agent.status()["key"].as_str().unwrap()),
        "{v}"
    );
    assert_eq!(v["first_paid_minor"], 1000, "{v}");
    assert!(v["second_paid_minor"].as_u64().unwrap_or(0) == 0, "{v}");
    // One byte changed: the file proves nothing.
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&file, &bytes).unwrap();
    let out = w
        .alice
        .cmd(&["evidence", "verify", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a tampered file verified: {}",
        text(&out.stdout)
    );
    w.audits_green();
    w.server.shutdown().await;
}
