//! The demo end to end, on testmail (or, with TESTMAIL_SERVER=real, on
//! Postfix + Dovecot), and its outcome checked from what it leaves behind
//! with the programs themselves, not only from what it says: the final
//! balances, the overspender named and revoked, the evidence file, both
//! audits green.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use testmail::harness::{ServerKind, TestServer};

const DEMO: &str = env!("CARGO_BIN_EXE_demo");

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The folder holding issuer, agent and wallet (built if missing).
fn bin_dir() -> PathBuf {
    demo::bins::Bins::built(env!("CARGO")).unwrap().dir
}

fn demo(args: &[&str]) -> Output {
    Command::new(DEMO)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn program(bin: &Path, name: &str, home_var: &str, home: &Path, args: &[&str]) -> Output {
    Command::new(bin.join(name))
        .args(args)
        .env(home_var, home)
        .output()
        .unwrap()
}

fn json_of(out: &Output, what: &str) -> Value {
    assert!(
        out.status.success(),
        "{what}: exit {:?}\n{}{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{what}: {e}"))
}

fn row<'a>(outcome: &'a Value, who: &str) -> &'a Value {
    outcome["balances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["who"] == who)
        .unwrap_or_else(|| panic!("no row for {who} in {outcome}"))
}

#[test]
fn the_demo_runs_end_to_end_and_leaves_what_it_says() {
    let server = match TestServer::kind_from_env().unwrap() {
        ServerKind::Embedded => "embedded",
        ServerKind::Real => "real",
    };
    let bins = bin_dir();
    let tmp = tempfile::tempdir().unwrap();
    let keep = tmp.path().join("demo");
    let out = demo(&[
        "--server",
        server,
        "--keep",
        keep.to_str().unwrap(),
        "--bin-dir",
        bins.to_str().unwrap(),
        "--no-build",
        "--json",
    ]);
    let narration = text(&out.stderr);
    let outcome = json_of(&out, &format!("the demo\n{narration}"));
    assert_eq!(outcome["ok"], true);
    assert_eq!(outcome["server"], server);

    // The narration names every step the user is promised.
    for step in [
        "Accounts and licenses",
        "Withdrawals",
        "alice pays bob 700 JPY",
        "Offer (negotiation)",
        "Signed offer",
        "1st payment",
        "2nd payment",
        "bob deposits",
        "spends the same note twice",
        "names the overspender",
        "the books add up",
        "Balances at the end",
    ] {
        assert!(narration.contains(step), "no {step:?} in:\n{narration}");
    }

    // Balances: alice paid bob 700 of her 11,000 JPY, exchanged 10,000 JPY
    // for 66.66 USD (0.0067 less 0.5%, rounded down), took 1,000 JPY from
    // mallory and deposited her 1,300 JPY; bob deposited his 700 and lost
    // the 1,000 mallory had already spent; the agent's float moved by the
    // exchange alone.
    let alice = row(&outcome, "alice");
    assert_eq!(alice["JPY"]["card_minor"], 0);
    assert_eq!(alice["JPY"]["account_minor"], 20_000 - 11_000 + 1_300);
    assert_eq!(alice["USD"]["card_minor"], 6_666);
    let bob = row(&outcome, "bob");
    assert_eq!(bob["JPY"]["card_minor"], 0);
    assert_eq!(bob["JPY"]["account_minor"], 700);
    let mallory = row(&outcome, "mallory");
    assert_eq!(mallory["JPY"]["card_minor"], 0);
    assert_eq!(mallory["JPY"]["account_minor"], 0);
    let agent = row(&outcome, "agent");
    assert_eq!(agent["JPY"]["card_minor"], 100_000 + 10_000);
    assert_eq!(agent["JPY"]["account_minor"], 1_000_000 - 100_000);
    assert_eq!(agent["USD"]["card_minor"], 100_000 - 6_666);
    assert_eq!(agent["USD"]["account_minor"], 1_000_000 - 100_000);
    let x = &outcome["exchange"];
    assert_eq!(x["state"], "done");
    assert_eq!(x["a1_minor"], 10_000);
    assert_eq!(x["a2_minor"], 6_666);

    // The guilty key, read from mallory's own wallet, is the one the JPY
    // issuer names, with a proof that verifies, and revoked.
    let cards = json_of(
        &program(
            &bins,
            "wallet",
            "WALLET_HOME",
            &keep.join("mallory"),
            &["card", "list", "--json"],
        ),
        "mallory's cards",
    );
    let mallory_key = cards
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["currency"] == "JPY")
        .unwrap()["payment_key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(outcome["overspend"]["mallory_card"], mallory_key.as_str());
    let report = json_of(
        &program(
            &bins,
            "issuer",
            "ISSUER_HOME",
            &keep.join("issuer-jpy"),
            &["report", "--json"],
        ),
        "the JPY issuer's report",
    );
    assert_eq!(
        report["guilty"],
        serde_json::json!([mallory_key]),
        "{report}"
    );
    let o = &report["overspends"][0];
    assert_eq!(o["guilty"], mallory_key.as_str());
    assert_eq!(o["proof_verifies"], true);
    let r = &report["revocations"][0];
    assert_eq!(r["payment_key"], mallory_key.as_str());
    assert_eq!(r["reason"], "overspend");
    // Nobody else was named by the USD issuer.
    let report = json_of(
        &program(
            &bins,
            "issuer",
            "ISSUER_HOME",
            &keep.join("issuer-usd"),
            &["report", "--json"],
        ),
        "the USD issuer's report",
    );
    assert_eq!(report["guilty"], serde_json::json!([]));

    // Both audits green, run here on the databases the demo left.
    for c in ["jpy", "usd"] {
        let audit = json_of(
            &program(
                &bins,
                "issuer",
                "ISSUER_HOME",
                &keep.join(format!("issuer-{c}")),
                &["audit", "--json"],
            ),
            &format!("the {c} audit"),
        );
        assert_eq!(audit["ok"], true, "{audit}");
    }

    // alice's evidence file proves both payments of the exchange.
    let evidence = keep.join("alice-exchange.evidence");
    let findings = json_of(
        &program(
            &bins,
            "wallet",
            "WALLET_HOME",
            &keep.join("alice"),
            &["evidence", "verify", evidence.to_str().unwrap(), "--json"],
        ),
        "the evidence",
    );
    assert_eq!(findings["agent_signed"], true);
    assert_eq!(findings["first_paid_minor"], 10_000);
    assert_eq!(findings["second_paid_minor"], 6_666);

    // What --keep promises: the transcript and env.sh (private: it holds
    // the mail passwords).
    let commands = std::fs::read_to_string(keep.join("commands.sh")).unwrap();
    assert!(commands.contains("wallet send 700 JPY --to"), "{commands}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(keep.join("env.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "env.sh is readable by others");
    }
}

#[test]
fn the_demo_says_what_to_do_when_it_cannot_start() {
    // No programs where it is told to look.
    let empty = tempfile::tempdir().unwrap();
    let out = demo(&["--bin-dir", empty.path().to_str().unwrap(), "--no-build"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("cannot find the issuer program"), "{err}");
    assert!(err.contains("cargo build --release"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // --keep refuses a folder that already holds something.
    let full = tempfile::tempdir().unwrap();
    std::fs::write(full.path().join("x"), b"x").unwrap();
    let out = demo(&[
        "--keep",
        full.path().to_str().unwrap(),
        "--bin-dir",
        bin_dir().to_str().unwrap(),
        "--no-build",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is not empty"),
        "{}",
        text(&out.stderr)
    );

    // --help explains with examples.
    let out = demo(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    assert!(help.contains("cargo run --release -p demo"), "{help}");
    assert!(help.contains("--server real"), "{help}");
}

#[cfg(unix)]
#[test]
fn a_failing_step_stops_the_demo_and_keeps_its_folder() {
    use std::os::unix::fs::PermissionsExt;
    // A step that fails stops the demo with exit 1, naming the command and
    // quoting what the program said, and the folder is kept for a look.
    let broken = tempfile::tempdir().unwrap();
    for p in ["issuer", "wallet"] {
        std::os::unix::fs::symlink(bin_dir().join(p), broken.path().join(p)).unwrap();
    }
    let agent = broken.path().join("agent");
    std::fs::write(
        &agent,
        "#!/bin/sh\necho 'agent: out of order' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();
    let keep = tempfile::tempdir().unwrap();
    let out = demo(&[
        "--keep",
        keep.path().join("d").to_str().unwrap(),
        "--bin-dir",
        broken.path().to_str().unwrap(),
        "--no-build",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("agent init --email"), "{err}");
    assert!(err.contains("agent: out of order"), "{err}");
    assert!(err.contains("kept for a look"), "{err}");
    assert!(keep.path().join("d/logs/issuer-jpy.log").exists());
}

#[cfg(unix)]
#[test]
fn ctrl_c_stops_the_daemons_and_keeps_the_folder() {
    use std::os::unix::process::CommandExt;
    use std::time::{Duration, Instant};

    let keep = tempfile::tempdir().unwrap();
    let dir = keep.path().join("d");
    // Its own process group, as a terminal's foreground job is.
    let child = Command::new(DEMO)
        .args([
            "--keep",
            dir.to_str().unwrap(),
            "--bin-dir",
            bin_dir().to_str().unwrap(),
            "--no-build",
        ])
        .process_group(0)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !dir.join("logs/issuer-usd.log").exists() {
        assert!(Instant::now() < deadline, "the daemons never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let group = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
    rustix::process::kill_process_group(group, rustix::process::Signal::INT).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("interrupted (Ctrl-C"), "{err}");
    assert!(err.contains("kept for a look"), "{err}");
    // No program of the demo is left running.
    let needle = dir.to_string_lossy().into_owned();
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("environ")).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .filter(|env| env.contains(&needle))
        .collect();
    assert!(left.is_empty(), "{} processes left", left.len());
}

#[test]
fn the_bench_runs_exchanges_end_to_end_and_reports_figures() {
    let server = match TestServer::kind_from_env().unwrap() {
        ServerKind::Embedded => "embedded",
        ServerKind::Real => "real",
    };
    let bins = bin_dir();
    let out = demo(&[
        "bench",
        "--server",
        server,
        "--bin-dir",
        bins.to_str().unwrap(),
        "--no-build",
        "--exchanges",
        "6",
        "--wallets",
        "2",
        "--probes",
        "2",
        "--json",
    ]);
    let r = json_of(&out, "demo bench");
    assert_eq!(r["exchanges"], 6, "{r:#}");
    // Quote request, offer, acceptance, signed offer, 1st payment with the
    // 2nd-payment request, 2nd payment: counted in the mailboxes. The
    // agent's float upkeep with the issuers may add some.
    assert_eq!(
        r["exchange_mails_per_exchange"].as_f64(),
        Some(6.0),
        "{r:#}"
    );
    assert!(r["mails_per_exchange"].as_f64().unwrap() >= 6.0, "{r:#}");
    let phases = r["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 4);
    for p in phases {
        assert_eq!(p["latency"]["n"], 6, "{p}");
        let (p50, p95) = (
            p["latency"]["p50_ms"].as_f64().unwrap(),
            p["latency"]["p95_ms"].as_f64().unwrap(),
        );
        assert!(p50 > 0.0 && p95 >= p50, "{p}");
    }
    let modes = r["agent_modes"].as_array().unwrap();
    assert_eq!(modes.len(), 4);
    for m in modes {
        assert_eq!(m["round_trip"]["n"], 2, "{m}");
    }
    assert!(r["raw"]["mails_per_s"].as_f64().unwrap() > 0.0, "{r:#}");
    assert!(r["ratio"].as_f64().unwrap() > 0.0, "{r:#}");
    for p in r["peak"].as_array().unwrap() {
        assert!(p["vmhwm_kib"].as_u64().unwrap() > 1024, "{p}");
    }
    assert!(!r["memory"].as_array().unwrap().is_empty(), "{r:#}");
}
