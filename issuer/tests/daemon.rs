//! `issuer run` as operators run it: the binary, its mailbox on a mail
//! server (testmail, or Postfix + Dovecot with `TESTMAIL_SERVER=real`),
//! requests sent as a wallet sends them, and replies read from the
//! wallet's mailbox. The operator's side goes through the CLI.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests

use std::path::Path;
use std::time::{Duration, Instant};

use mailer::crypto::{PublicKey, SecretKey};
use mailer::envelope::{Body, Envelope, Signed};
use mailer::license::{CardSecret, License, RevocationList};
use mailer::messages::{
    Deposit, DepositOutcome, DepositReceipt, EnrollRequest, Enrolled, ErrorCode, ErrorReply,
    LicenseGranted, LicenseRequest, NotesIssued, RevocationListRequest, WithdrawRequest,
};
use mailer::mime::{build_mail, parse_mail, MessageId, OutgoingMail};
use mailer::money::{Amount, Currency};
use mailer::note::Note;
use testmail::harness::{Account, TestServer};

mod support;
use support::*;

const WAIT: Duration = Duration::from_secs(30);

/// A wallet reduced to its mail: it sends requests from its mailbox and
/// reads the issuer's replies, in order, checking the issuer's signature.
struct Client<'a> {
    server: &'a TestServer,
    me: Account,
    issuer: String,
    issuer_key: PublicKey,
    sent: u32,
    replies: usize,
}

impl<'a> Client<'a> {
    /// A client with a fresh mailbox of its own, asking `issuer`.
    async fn new(server: &'a TestServer, issuer: &Account, issuer_key: PublicKey) -> Client<'a> {
        Client {
            server,
            me: server.account("wallet").await.unwrap(),
            issuer: issuer.address.clone(),
            issuer_key,
            sent: 0,
            replies: 0,
        }
    }

    fn mail(&mut self, envelopes: Vec<Envelope>) -> Vec<u8> {
        self.sent += 1;
        build_mail(&OutgoingMail {
            from: self.me.address.clone(),
            to: self.issuer.clone(),
            subject: "request".into(),
            message_id: MessageId::parse(&format!("r{}@wallet.example.test", self.sent)).unwrap(),
            in_reply_to: None,
            references: vec![],
            date: mailer::clock::now(),
            text: "a request from a wallet".into(),
            envelopes,
            auto_reply: false,
        })
        .unwrap()
    }

    async fn send_raw(&self, raw: &[u8]) {
        self.server
            .send_raw(&self.me.address, &self.issuer, raw)
            .await
            .unwrap();
    }

    /// The next reply, its one envelope checked to be the issuer's.
    async fn next_reply(&mut self) -> Envelope {
        self.replies += 1;
        let inbox = self
            .server
            .wait_for(&self.me, "INBOX", self.replies, WAIT)
            .await
            .unwrap();
        let mail = parse_mail(&inbox[self.replies - 1]).unwrap();
        assert!(mail.auto_submitted);
        assert_eq!(mail.envelopes.len(), 1);
        let env = mail.envelopes[0].clone();
        env.verify_signer(&self.issuer_key).unwrap();
        env
    }

    /// Sends raw mail and waits for its one reply.
    async fn ask_raw(&mut self, raw: &[u8]) -> Envelope {
        self.send_raw(raw).await;
        self.next_reply().await
    }

    async fn ask<T: Body>(&mut self, request: Envelope) -> T {
        let raw = self.mail(vec![request]);
        let reply = self.ask_raw(&raw).await;
        Signed::<T>::from_envelope(reply.clone())
            .unwrap_or_else(|e| panic!("expected {}, got {} ({e})", T::KIND, reply.kind()))
            .unverified()
            .clone()
    }

    async fn refused(&mut self, request: Envelope) -> ErrorCode {
        self.ask::<ErrorReply>(request).await.code
    }
}

fn sign<T: Body>(body: T, key: &SecretKey) -> Envelope {
    Signed::sign(body, key).unwrap().into_envelope()
}

struct User {
    account: SecretKey,
    card: CardSecret,
    license: Signed<License>,
}

async fn user(c: &mut Client<'_>, code: &str, seed: u8) -> User {
    let account = mailer::testkit::key(seed);
    let enrolled: Enrolled = c
        .ask(sign(
            EnrollRequest {
                currency: Currency::JPY,
                code: code.into(),
            },
            &account,
        ))
        .await;
    assert_eq!(enrolled.currency, Currency::JPY);
    let card = mailer::testkit::card(seed + 1);
    let req = LicenseRequest::new(&card, Currency::JPY, mailer::clock::now()).unwrap();
    let granted: LicenseGranted = c.ask(req.clone().into_envelope()).await;
    assert_eq!(granted.request, req.id());
    let license = granted.license;
    license.verify_signer(&c.issuer_key).unwrap();
    User {
        account,
        card,
        license,
    }
}

fn withdraw(u: &User, amount: u64, id: u8) -> Envelope {
    sign(
        WithdrawRequest {
            request_id: mailer::testkit::id(id),
            currency: Currency::JPY,
            amount: Amount::new(amount),
            card: u.card.keys(),
        },
        &u.account,
    )
}

fn pay(note: &Note, from: &User, to: &User, amount: u64, challenge: u8) -> Note {
    note.pay(
        &from.card.payment,
        to.card.payment.public(),
        Amount::new(amount),
        mailer::testkit::challenge(challenge),
        mailer::clock::now(),
    )
    .unwrap()
}

/// A deposit by `u` of notes it holds, each paid whole to the issuer.
fn deposit(c: &Client<'_>, u: &User, notes: &[Note], licenses: &[&User], id: u8) -> Envelope {
    let now = mailer::clock::now();
    let notes = notes
        .iter()
        .map(|n| {
            n.pay(
                &u.card.payment,
                c.issuer_key,
                n.held(),
                Deposit::challenge_for(&u.account.public()),
                now,
            )
            .unwrap()
        })
        .collect();
    sign(
        Deposit {
            request_id: mailer::testkit::id(id),
            currency: Currency::JPY,
            notes,
            licenses: licenses.iter().map(|u| u.license.clone()).collect(),
        },
        &u.account,
    )
}

fn balance(home: &Path, name: &str) -> u64 {
    let out = issuer_ok(home, &["account", "show", name, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["balance_minor"].as_u64().unwrap()
}

fn audit_green(home: &Path) {
    let out = issuer(home, &["audit"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
}

/// Every outgoing mail sent (the daemon's outbox drained).
async fn all_sent(home: &Path) {
    let deadline = Instant::now() + WAIT;
    loop {
        let db = rusqlite::Connection::open(home.join("issuer.db")).unwrap();
        let pending: i64 = db
            .query_row(
                "SELECT COUNT(*) FROM mail_outbox WHERE state != 'sent'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        if pending == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{pending} replies never sent");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn license_request_mail(c: &mut Client<'_>, seed: u8) -> (Vec<u8>, mailer::crypto::Digest) {
    let req = LicenseRequest::new(
        &mailer::testkit::card(seed),
        Currency::JPY,
        mailer::clock::now(),
    )
    .unwrap();
    let id = req.id();
    (c.mail(vec![req.into_envelope()]), id)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_answers_once_across_a_crash() {
    let server = TestServer::start().await.unwrap();
    let mailbox = server.account("issuer-jpy").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (home, key) = init_on(dir.path(), &server, &mailbox);
    let mut c = Client::new(&server, &mailbox, key).await;

    let daemon = Daemon::start(&home, &mailbox.password, dir.path().join("run1.log"));
    let (raw, id) = license_request_mail(&mut c, 40);
    let reply = c.ask_raw(&raw).await;
    let g = Signed::<LicenseGranted>::from_envelope(reply).unwrap();
    assert_eq!(g.unverified().request, id);
    let license = g.unverified().license.verify_signer(&key).unwrap();
    assert_eq!(license.card, mailer::testkit::card(40).keys());
    daemon.wait_log("IMAP connected").await;
    daemon.wait_log("sent 1 replies").await;
    // Killed hard once the reply is recorded as sent.
    all_sent(&home).await;
    daemon.kill();

    // Restarted: it answers new mail, and the old mail not again.
    let daemon = Daemon::start(&home, &mailbox.password, dir.path().join("run2.log"));
    daemon.wait_log("IMAP connected").await;
    let (raw, id2) = license_request_mail(&mut c, 41);
    let reply = c.ask_raw(&raw).await;
    let g = Signed::<LicenseGranted>::from_envelope(reply).unwrap();
    assert_eq!(g.unverified().request, id2);
    daemon.wait_log("sent 1 replies").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let inbox = server.messages(&c.me, "INBOX").await.unwrap();
    assert_eq!(inbox.len(), 2, "a mail was answered twice");
    let processed = server.messages(&mailbox, "Processed").await.unwrap();
    assert_eq!(processed.len(), 2);
    assert!(!daemon.log().contains("ERROR"), "{}", daemon.log());
    drop(daemon);
    audit_green(&home);
    server.shutdown().await;
}

/// The whole life of a currency by mail: enrollment, licenses, a
/// withdrawal, deposits (twice, and the same mail re-delivered), an
/// overspend named and revoked, the revoked card refused, bad requests
/// refused without a trace, and the audit green throughout.
#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_clears_by_mail() {
    let server = TestServer::start().await.unwrap();
    let mailbox = server.account("issuer-jpy").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (home, key) = init_on(dir.path(), &server, &mailbox);
    let mut codes = Vec::new();
    for name in ["alice", "bob", "carol"] {
        codes.push(
            issuer_ok(&home, &["account", "open", name])
                .trim()
                .to_string(),
        );
    }
    issuer_ok(&home, &["account", "credit", "alice", "10000"]);
    let daemon = Daemon::start(&home, &mailbox.password, dir.path().join("run.log"));
    let mut c = Client::new(&server, &mailbox, key).await;

    // Enrollment and licenses; a code works once.
    let alice = user(&mut c, &codes[0], 30).await;
    let bob = user(&mut c, &codes[1], 40).await;
    let carol = user(&mut c, &codes[2], 50).await;
    let again = sign(
        EnrollRequest {
            currency: Currency::JPY,
            code: codes[0].clone(),
        },
        &mailer::testkit::key(99),
    );
    assert_eq!(c.refused(again).await, ErrorCode::BadEnrollmentCode);

    // Withdrawal: debited once, served in notes to alice's card.
    let issued: NotesIssued = c.ask(withdraw(&alice, 3_000, 1)).await;
    let total: u64 = issued
        .notes
        .iter()
        .map(|n| n.issuance.unverified().value.minor_units())
        .sum();
    assert_eq!(total, 3_000);
    assert!(issued.notes.len() >= 3, "{} notes", issued.notes.len());
    assert_eq!(balance(&home, "alice"), 7_000);
    audit_green(&home);

    // Alice pays note 0 whole to bob and again to carol (an overspend),
    // and 300 of note 1 to bob (a partial link).
    let n0 = &issued.notes[0];
    let v0 = n0.issuance.unverified().value.minor_units();
    let to_bob = pay(n0, &alice, &bob, v0, 1);
    let to_carol = pay(n0, &alice, &carol, v0, 2);
    let part = pay(&issued.notes[1], &alice, &bob, 300, 3);

    // Bob deposits both: credited.
    let dep = deposit(
        &c,
        &bob,
        &[to_bob.clone(), part.clone()],
        &[&alice, &bob],
        2,
    );
    let raw = c.mail(vec![dep.clone()]);
    let first = c.ask_raw(&raw).await;
    let r = Signed::<DepositReceipt>::from_envelope(first.clone())
        .unwrap()
        .unverified()
        .clone();
    assert_eq!(r.credited, Amount::new(v0 + 300));
    assert_eq!(balance(&home, "bob"), v0 + 300);
    // The same mail delivered again is filed, not answered twice; the
    // same request in a new mail (a wallet's retry) gets the stored reply.
    c.send_raw(&raw).await;
    daemon.wait_log("already handled").await;
    let retry = c.mail(vec![dep]);
    let again = c.ask_raw(&retry).await;
    assert_eq!(again.to_bytes().unwrap(), first.to_bytes().unwrap());
    assert_eq!(balance(&home, "bob"), v0 + 300);
    // The same notes in a new deposit: recognised, credited once.
    let r: DepositReceipt = c
        .ask(deposit(&c, &bob, &[to_bob, part], &[&alice, &bob], 3))
        .await;
    assert_eq!(r.credited, Amount::ZERO);
    assert!(r
        .results
        .iter()
        .all(|x| x.result == DepositOutcome::AlreadyCredited));
    assert_eq!(balance(&home, "bob"), v0 + 300);
    audit_green(&home);

    // Carol's deposit of the second branch: nothing credited, alice named.
    let r: DepositReceipt = c
        .ask(deposit(&c, &carol, &[to_carol], &[&alice, &carol], 4))
        .await;
    assert_eq!(r.credited, Amount::ZERO);
    let proof = match &r.results[0].result {
        DepositOutcome::Overspent { proof } => proof.clone(),
        other => panic!("expected an overspend, got {other:?}"),
    };
    let found = proof.verify(&key).unwrap();
    assert_eq!(found.guilty, alice.card.payment.public());
    assert_eq!(balance(&home, "carol"), 0);
    let report = issuer_ok(&home, &["report", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(
        report["guilty"][0].as_str().unwrap(),
        alice.card.payment.public().to_hex()
    );
    assert_eq!(report["overspends"][0]["proof_verifies"], true);
    audit_green(&home);

    // The new revocation list names alice's card.
    let list: RevocationList = c
        .ask(sign(
            RevocationListRequest {
                currency: Currency::JPY,
                known_version: 0,
            },
            &bob.card.auth,
        ))
        .await;
    assert_eq!(list.entries.len(), 1);
    assert_eq!(list.entries[0].payment_key, alice.card.payment.public());

    // A payment made by the revoked card afterwards is refused.
    let late = pay(&issued.notes[2], &alice, &bob, 100, 4);
    let r: DepositReceipt = c.ask(deposit(&c, &bob, &[late], &[&alice, &bob], 5)).await;
    assert_eq!(r.credited, Amount::ZERO);
    assert!(
        matches!(
            &r.results[0].result,
            DepositOutcome::Refused {
                code: ErrorCode::Revoked,
                ..
            }
        ),
        "{:?}",
        r.results[0].result
    );

    // Bad requests: each a signed error reply, and no trace in balances.
    let before = ["alice", "bob", "carol"].map(|n| balance(&home, n));
    let stranger = User {
        account: mailer::testkit::key(77),
        card: mailer::testkit::card(78),
        license: alice.license.clone(),
    };
    assert_eq!(
        c.refused(withdraw(&stranger, 100, 6)).await,
        ErrorCode::UnknownAccount
    );
    let usd = sign(
        WithdrawRequest {
            request_id: mailer::testkit::id(7),
            currency: Currency::USD,
            amount: Amount::new(100),
            card: alice.card.keys(),
        },
        &alice.account,
    );
    assert_eq!(c.refused(usd).await, ErrorCode::WrongCurrency);
    assert_eq!(
        c.refused(withdraw(&alice, 8_000, 8)).await,
        ErrorCode::InsufficientFunds
    );
    assert_eq!(
        c.refused(withdraw(&alice, 0, 9)).await,
        ErrorCode::BadAmount
    );
    let good = withdraw(&alice, 100, 10);
    let mut sig = *good.signature();
    sig.0[5] ^= 1;
    let forged = Envelope::from_parts(
        good.kind().into(),
        good.body().to_vec(),
        *good.signer(),
        sig,
    )
    .unwrap();
    assert_eq!(c.refused(forged).await, ErrorCode::BadSignature);
    // Not protocol mail at all: filed in Rejected, never answered.
    let plain = format!(
        "From: {}\r\nTo: {}\r\nSubject: hello\r\nMessage-ID: <plain@x.test>\r\n\r\nJust a letter.\r\n",
        c.me.address, c.issuer
    );
    c.send_raw(plain.as_bytes()).await;
    server
        .wait_for(&mailbox, "Rejected", 1, WAIT)
        .await
        .unwrap();
    assert_eq!(["alice", "bob", "carol"].map(|n| balance(&home, n)), before);
    audit_green(&home);

    // The honest rest of alice's revoked card goes back to her account:
    // note 1 less the 300 paid, and all of note 2 (its late payment was
    // refused). Her overspent note 0 is worth nothing.
    let v1 = issued.notes[1].issuance.unverified().value.minor_units();
    let v2 = issued.notes[2].issuance.unverified().value.minor_units();
    let alice_key = alice.card.payment.public().to_hex();
    issuer_ok(&home, &["refund", &alice_key, "--to", "alice"]);
    assert_eq!(balance(&home, "alice"), 7_000 + v1 - 300 + v2);
    audit_green(&home);

    all_sent(&home).await;
    assert_eq!(
        server.messages(&c.me, "INBOX").await.unwrap().len(),
        c.replies,
        "a request was answered more than once"
    );
    assert!(!daemon.log().contains("ERROR"), "{}", daemon.log());
    drop(daemon);
    server.shutdown().await;
}
