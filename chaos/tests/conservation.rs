//! The conservation checker on a real deployment (the demo's cast: every
//! party its own process, mail through the embedded server, or the real
//! ones with TESTMAIL_SERVER=real): green with the right figures after
//! withdrawals, a payment, an exchange, deposits and an overspend; a
//! payment waiting unhandled in the payee's INBOX (and delivered twice)
//! counted once, in flight; and every kind of tampering with the books
//! caught, each with its own problem line.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chaos::conservation::{check, unhandled_mail, Homes, Place, Report};
use demo::bins::Bins;
use demo::cast::{Party, Stage};
use demo::story::{self, Float, Say};
use rusqlite::{params, Connection};
use serde_json::Value;
use testmail::harness::TestServer;

const STEP: Duration = Duration::from_secs(60);

fn bins() -> Bins {
    Bins::built(env!("CARGO")).unwrap()
}

/// The last op of `kind` in a wallet's history (open ones included).
fn last_op(stage: &Stage, w: &Party, kind: &str) -> Option<Value> {
    w.json(stage, &["history"])
        .unwrap()
        .as_array()
        .into_iter()
        .flatten()
        .rfind(|o| o["kind"] == kind)
        .cloned()
}

fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + STEP;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn report(stage: &Stage, homes: &Homes, parties: &[&Party]) -> Report {
    let accounts: Vec<_> = parties.iter().map(|p| p.account.as_ref()).collect();
    let mail = stage
        .rt
        .block_on(unhandled_mail(&stage.server, &accounts))
        .unwrap();
    check(homes, &mail).unwrap()
}

fn green(r: &Report, when: &str) {
    assert!(r.is_ok(), "{when}: the checker finds problems:\n{r}");
}

/// alice exchanges `amount` JPY for USD through the agent, accepting the
/// offer; returns (A1, A2).
fn exchange(stage: &Stage, alice: &Party, agent: &mut story::Agent, amount: &str) -> (u64, u64) {
    alice
        .run(
            stage,
            &["agent", "add", agent.party.address(), "--key", &agent.key],
        )
        .unwrap();
    alice
        .run(
            stage,
            &[
                "exchange",
                amount,
                "JPY",
                "--to",
                "USD",
                "--agent",
                agent.party.address(),
                "--no-wait",
            ],
        )
        .unwrap();
    let mut accepted = false;
    let mut last = Value::Null;
    until("the exchange", || {
        alice.poll(stage, &["sync"]).unwrap();
        agent.daemon.check().unwrap();
        last = alice
            .json(stage, &["exchange", "status"])
            .unwrap()
            .as_array()
            .and_then(|a| a.last().cloned())
            .unwrap();
        if last["state"] == "offered" && !accepted {
            alice
                .run(
                    stage,
                    &["exchange", "accept", last["tr_id"].as_str().unwrap()],
                )
                .unwrap();
            accepted = true;
        }
        last["done"] == true
    });
    assert_eq!(last["state"], "done", "{last}");
    (
        last["a1_minor"].as_u64().unwrap(),
        last["a2_minor"].as_u64().unwrap(),
    )
}

/// Copies every home (the daemons stopped) into `to`, for tampering.
fn copy_homes(homes: &Homes, to: &Path) -> Homes {
    let copy = |from: &PathBuf| {
        let dest = to.join(from.file_name().unwrap());
        std::fs::create_dir_all(&dest).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                std::fs::copy(e.path(), dest.join(e.file_name())).unwrap();
            }
        }
        dest
    };
    Homes {
        issuers: homes.issuers.iter().map(copy).collect(),
        agent: homes.agent.as_ref().map(copy),
        wallets: homes.wallets.iter().map(copy).collect(),
    }
}

fn db(home: &Path, file: &str) -> Connection {
    Connection::open(home.join(file)).unwrap()
}

/// A spendable JPY state of a wallet: (state id, note id, rest, card).
fn spendable_state(conn: &Connection) -> (Vec<u8>, Vec<u8>, i64, i64) {
    conn.query_row(
        "SELECT state_id, note_id, held - spent, card FROM notes
         WHERE currency = 'JPY' AND state = 'spendable' ORDER BY state_id LIMIT 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )
    .unwrap()
}

fn has_problem(r: &Report, starts: &str, mentions: &str) -> bool {
    r.problems
        .iter()
        .any(|p| p.starts_with(starts) && p.contains(mentions))
}

#[test]
fn a_deployment_conserves_value_and_tampering_is_caught() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("stage");
    std::fs::create_dir_all(&dir).unwrap();
    let stage = Stage::new(bins(), dir, TestServer::kind_from_env().unwrap()).unwrap();
    let say = Say::new(false);
    let start = Instant::now();
    let phase = |what: &str| eprintln!("{:>6.1} s  {what}", start.elapsed().as_secs_f64());

    // The cast: two issuers, the agent with its float, alice, bob, mallory.
    let mut jpy = story::issuer(&stage, &say, "JPY").unwrap();
    let mut usd = story::issuer(&stage, &say, "USD").unwrap();
    let float = Float {
        jpy_paid_in: 100_000,
        usd_paid_in: 1_000,
        jpy_float: 20_000,
        usd_float: 200,
    };
    let mut agent = story::agent(
        &stage,
        &say,
        &jpy,
        &usd,
        &float,
        &["--poll-ms", "100", "--tick-ms", "500"],
    )
    .unwrap();
    let alice = story::wallet(&stage, "alice", &[(&jpy, 20_000), (&usd, 0)]).unwrap();
    let bob = story::wallet(&stage, "bob", &[(&jpy, 0)]).unwrap();
    let mallory = story::wallet(&stage, "mallory", &[(&jpy, 1_000)]).unwrap();
    story::settle(
        &stage,
        &[&alice, &bob, &mallory],
        &mut [&mut jpy.daemon, &mut usd.daemon],
        "licenses",
    )
    .unwrap();

    phase("cast ready");
    // Withdrawals, a payment, an exchange, a deposit.
    alice.run(&stage, &["withdraw", "10000", "JPY"]).unwrap();
    alice.run(&stage, &["withdraw", "1000", "JPY"]).unwrap();
    mallory.run(&stage, &["withdraw", "1000", "JPY"]).unwrap();
    story::settle(
        &stage,
        &[&alice, &mallory],
        &mut [&mut jpy.daemon],
        "withdrawals",
    )
    .unwrap();
    alice
        .run(&stage, &["send", "700", "JPY", "--to", bob.address()])
        .unwrap();
    story::settle(&stage, &[&alice, &bob], &mut [], "alice pays bob").unwrap();
    phase("payment done");
    let (a1, a2) = exchange(&stage, &alice, &mut agent, "10000");
    assert_eq!(a1, 10_000);
    bob.run(&stage, &["deposit", "700", "JPY"]).unwrap();
    story::settle(&stage, &[&bob], &mut [&mut jpy.daemon], "bob's deposit").unwrap();

    phase("exchange and deposit done");
    // mallory's copied wallet pays the same note twice; both deposits.
    let copy = stage.copy_of(&mallory, "mallory-copy").unwrap();
    mallory
        .run(&stage, &["send", "1000", "JPY", "--to", alice.address()])
        .unwrap();
    story::settle(&stage, &[&mallory, &alice], &mut [], "mallory pays alice").unwrap();
    copy.run(&stage, &["send", "1000", "JPY", "--to", bob.address()])
        .unwrap();
    story::settle(&stage, &[&copy, &bob], &mut [], "the copy pays bob").unwrap();
    alice.run(&stage, &["deposit", "1000", "JPY"]).unwrap();
    story::settle(&stage, &[&alice], &mut [&mut jpy.daemon], "alice's deposit").unwrap();
    bob.run(&stage, &["deposit", "1000", "JPY"]).unwrap();
    story::settle(&stage, &[&bob], &mut [&mut jpy.daemon], "bob's deposit").unwrap();
    let refused = last_op(&stage, &bob, "deposit").unwrap();
    assert!(
        refused["detail"].as_str().unwrap().contains("overspent"),
        "{refused}"
    );

    phase("overspend done");
    let parties = [&alice, &bob, &mallory, &copy, &agent.party];
    let homes = Homes {
        issuers: vec![jpy.party.home.clone(), usd.party.home.clone()],
        agent: Some(agent.party.home.clone()),
        wallets: [&alice, &bob, &mallory, &copy]
            .iter()
            .map(|p| p.home.clone())
            .collect(),
    };
    let held = |currency: &str| -> u64 {
        let wallets: u64 = [&alice, &bob, &mallory, &copy]
            .iter()
            .map(|w| story::spendable(&stage, w, currency).unwrap())
            .sum();
        wallets + agent.held(&stage, currency).unwrap()
    };

    // Green, with the right figures.
    let r = report(&stage, &homes, &parties);
    println!("{r}");
    green(&r, "after the story");
    let j = r.currency("JPY").unwrap();
    assert_eq!(j.issued, 11_000 + 1_000 + 20_000, "{r}");
    assert_eq!(j.overspent, 1_000, "mallory's second payment, proven: {r}");
    assert_eq!(j.unbacked, 1_000, "bob's refused deposit: {r}");
    assert_eq!(j.refunded, 0);
    assert!(j.deposited >= 700 + 1_000, "{r}");
    assert_eq!(j.held, held("JPY"), "{r}");
    assert_eq!(j.in_flight, 0, "{r}");
    let u = r.currency("USD").unwrap();
    assert_eq!(u.issued, 20_000, "{r}");
    assert_eq!(u.held, held("USD"), "{r}");
    assert!(story::spendable(&stage, &alice, "USD").unwrap() == a2);
    assert_eq!((u.overspent, u.in_flight, u.difference), (0, 0, 0), "{r}");

    phase("checked green");
    // A payment left unhandled in bob's INBOX: in flight, once, even
    // delivered twice.
    alice
        .run(&stage, &["send", "200", "JPY", "--to", bob.address()])
        .unwrap();
    until("bob's wallet to take the invitation", || {
        alice.poll(&stage, &["sync"]).unwrap();
        bob.poll(&stage, &["sync"]).unwrap();
        last_op(&stage, &bob, "receive").is_some_and(|o| o["state"] == "addressed")
    });
    bob.poll(&stage, &["sync"]).unwrap(); // sends its answer
    until("alice's wallet to pay", || {
        alice.poll(&stage, &["sync"]).unwrap();
        last_op(&stage, &alice, "send").is_some_and(|o| o["state"] == "paying")
    });
    alice.poll(&stage, &["sync"]).unwrap(); // sends the payment
    until("the payment in bob's INBOX", || {
        report(&stage, &homes, &parties).in_flight().any(|s| {
            matches!(&s.place, Place::InFlight(by) if by.iter().any(|b| b.starts_with("an unhandled mail")))
        })
    });
    let r = report(&stage, &homes, &parties);
    green(&r, "with the payment unhandled");
    assert_eq!(r.currency("JPY").unwrap().in_flight, 200, "{r}");
    // Every mail in bob's INBOX again: the same payment twice.
    for m in stage
        .rt
        .block_on(stage.server.messages(&bob.account, "INBOX"))
        .unwrap()
    {
        stage
            .rt
            .block_on(stage.server.send_raw(alice.address(), bob.address(), &m))
            .unwrap();
    }
    let r = report(&stage, &homes, &parties);
    green(&r, "with the payment delivered twice");
    let j = r.currency("JPY").unwrap();
    assert_eq!(j.in_flight, 200, "counted once: {r}");
    let flying: Vec<_> = r.in_flight().collect();
    assert_eq!(flying.len(), 1, "{flying:?}");
    story::settle(&stage, &[&alice, &bob], &mut [], "bob takes the payment").unwrap();
    let r = report(&stage, &homes, &parties);
    green(&r, "after bob took the payment (twice delivered)");
    assert_eq!(r.currency("JPY").unwrap().in_flight, 0, "{r}");
    assert_eq!(r.currency("JPY").unwrap().held, held("JPY"), "{r}");

    phase("in flight checked");
    // Tampering, each on a copy of the books.
    for d in [&mut jpy.daemon, &mut usd.daemon, &mut agent.daemon] {
        d.stop();
    }
    let base = report(&stage, &homes, &parties);
    green(&base, "at rest");

    // A held note deleted: value lost.
    let t = copy_homes(&homes, &tmp.path().join("lost"));
    let bob_db = db(&t.wallets[1], "wallet.db");
    let (state, _, rest, _) = spendable_state(&bob_db);
    bob_db
        .execute("DELETE FROM notes WHERE state_id = ?1", [&state])
        .unwrap();
    let r = check(&t, &[]).unwrap();
    assert!(!r.is_ok());
    // The row was the only trace of the payment to bob: what alice paid
    // out of her state is found nowhere.
    assert!(
        has_problem(&r, "value lost", &format!("{rest} of it is nowhere")),
        "{r}"
    );
    assert_eq!(
        r.currency("JPY").unwrap().difference,
        -i128::from(rest),
        "{r}"
    );

    // A note copied into a second wallet: value created.
    let t = copy_homes(&homes, &tmp.path().join("twice"));
    let alice_db = db(&t.wallets[0], "wallet.db");
    let (state, _, rest, _) = spendable_state(&alice_db);
    let bob_db = db(&t.wallets[1], "wallet.db");
    let bob_card: i64 = bob_db
        .query_row("SELECT id FROM cards WHERE currency = 'JPY'", [], |r| {
            r.get(0)
        })
        .unwrap();
    let row: (Vec<u8>, String, i64, i64, i64, Vec<u8>, i64, i64) = alice_db
        .query_row(
            "SELECT note_id, currency, held, spent, expires_at, note, op, acquired_at
             FROM notes WHERE state_id = ?1",
            [&state],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                ))
            },
        )
        .unwrap();
    bob_db
        .execute(
            "INSERT INTO notes (state_id, note_id, currency, card, held, spent, expires_at, note, state, op, acquired_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'spendable', ?9, ?10)",
            params![state, row.0, row.1, bob_card, row.2, row.3, row.4, row.5, row.6, row.7],
        )
        .unwrap();
    let r = check(&t, &[]).unwrap();
    assert!(
        has_problem(&r, "value created", "held by alice and bob"),
        "{r}"
    );
    assert_eq!(
        r.currency("JPY").unwrap().difference,
        i128::from(rest),
        "{r}"
    );

    // Deposited at the issuer while alice still holds it: value created.
    let t = copy_homes(&homes, &tmp.path().join("cleared"));
    let alice_db = db(&t.wallets[0], "wallet.db");
    let (state, note, rest, _) = spendable_state(&alice_db);
    let issuer_db = db(&t.issuers[0], "issuer.db");
    let key: Vec<u8> = issuer_db
        .query_row("SELECT issuer_key FROM issuer_meta", [], |r| r.get(0))
        .unwrap();
    let fake: Vec<u8> = [state.as_slice(), b"deposit"].concat()[..32].to_vec();
    let fake = {
        let mut f = fake;
        f[31] ^= 0xff;
        f
    };
    issuer_db
        .execute(
            "INSERT INTO states (state_id, note_id, parent, holder, value, spent, refunded, good, link, first_seen_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 0, 0, 1, x'00', 0)",
            params![fake, note, state, key, rest],
        )
        .unwrap();
    issuer_db
        .execute(
            "INSERT INTO credits (state_id, account, amount, request, at) VALUES (?1, 'alice', ?2, x'00', 0)",
            params![fake, rest],
        )
        .unwrap();
    let r = check(&t, &[]).unwrap();
    assert!(
        has_problem(&r, "value created", &hex(&state)[..12])
            && r.problems.iter().any(|p| p.contains("held by alice")),
        "{r}"
    );

    // Nothing of that touched the deployment itself.
    green(
        &check(&homes, &[]).unwrap(),
        "the real books, after tampering with copies",
    );
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
