//! The payee's side, in process: wallets on temporary databases, mail
//! carried from one's outbox to the other's handler, notes from the
//! testkit issuer. Replayed, forwarded and tampered payments are refused
//! or credited once, never twice, and each refusal is answered with a
//! signed error and shown in the history.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests

use mailer::envelope::{Envelope, Signed};
use mailer::messages::{ErrorCode, ErrorReply, LicenseGranted, Message, Payment, PaymentAddress};
use mailer::mime::{build_mail, parse_mail, MessageId, OutgoingMail};
use mailer::money::{Amount, Currency};
use mailer::testkit::{TestIssuer, NOW};
use rusqlite::Connection;
use wallet::{handler::handle_mail, ops, store, view, Home, Wallet};

struct W {
    _dir: tempfile::TempDir,
    w: Wallet,
    conn: Connection,
    seen: i64,
}

impl W {
    fn new(name: &str, issuer: &mut TestIssuer) -> W {
        let dir = tempfile::tempdir().unwrap();
        let (w, conn) = Home::new(dir.path().join(name))
            .create(&format!("{name}@example.test"), None, NOW)
            .unwrap();
        let mut me = W {
            _dir: dir,
            w,
            conn,
            seen: 0,
        };
        ops::add_issuer(
            &me.conn,
            Currency::JPY,
            "issuer@example.test",
            issuer.key.public(),
            NOW,
        )
        .unwrap();
        let op = ops::new_card(&me.conn, &me.w, Currency::JPY, NOW).unwrap();
        let card = store::card(&me.conn, Currency::JPY).unwrap().unwrap();
        let request = ops::op(&me.conn, op).unwrap().request.unwrap();
        let granted = Signed::sign(
            LicenseGranted {
                request,
                license: issuer.license(&card.keys),
            },
            &issuer.key,
        )
        .unwrap();
        me.outbox(); // the license request
        me.receive(&mail(
            "issuer@example.test",
            vec![granted.into_envelope()],
            0,
        ));
        me
    }

    /// Mail queued since the last call: (recipient, raw).
    fn outbox(&mut self) -> Vec<(String, Vec<u8>)> {
        let rows = mailer::outbox::queued_after(&self.conn, self.seen).unwrap();
        if let Some(last) = rows.last() {
            self.seen = last.id;
        }
        rows.into_iter().map(|q| (q.recipient, q.raw)).collect()
    }

    fn receive(&mut self, raw: &[u8]) {
        let tx = self.conn.transaction().unwrap();
        handle_mail(&tx, &self.w, raw, NOW).unwrap();
        tx.commit().unwrap();
    }

    fn spendable(&self) -> u64 {
        store::spendable_total(&self.conn, Currency::JPY)
            .unwrap()
            .minor_units()
    }

    fn give_notes(&self, issuer: &mut TestIssuer, values: &[u64]) {
        let card = store::card(&self.conn, Currency::JPY).unwrap().unwrap();
        for v in values {
            let n = issuer.issue(*v, &card.keys);
            store::insert_note(
                &self.conn,
                &n,
                &n.id(),
                card.id,
                Amount::new(*v),
                NOW.saturating_add_secs(mailer::testkit::NOTE_LIFETIME_SECS),
                0,
                NOW,
            )
            .unwrap();
        }
    }

    fn last(&self, kind: &str) -> view::OpLine {
        view::history(&self.conn)
            .unwrap()
            .into_iter()
            .rev()
            .find(|o| o.kind == kind)
            .unwrap()
    }
}

fn mail(from: &str, envelopes: Vec<Envelope>, n: u32) -> Vec<u8> {
    build_mail(&OutgoingMail {
        from: from.into(),
        to: "someone@example.test".into(),
        subject: "test".into(),
        message_id: MessageId::parse(&format!("t{n}-{}@example.test", envelopes[0].id().to_hex()))
            .unwrap(),
        in_reply_to: None,
        references: vec![],
        date: NOW,
        text: "test".into(),
        envelopes,
        auto_reply: false,
    })
    .unwrap()
}

fn only_envelope(raw: &[u8]) -> Envelope {
    parse_mail(raw).unwrap().envelopes.remove(0)
}

/// Alice invites bob to receive 700; bob answers; alice pays. Returns the
/// payment mail (not yet delivered) and bob's address.
fn pay_700(alice: &mut W, bob: &mut W) -> (Vec<u8>, Signed<PaymentAddress>) {
    ops::send(
        &alice.conn,
        &alice.w,
        Currency::JPY,
        Amount::new(700),
        "bob@example.test",
        "",
        NOW,
    )
    .unwrap();
    let invite = alice.outbox().remove(0).1;
    bob.receive(&invite);
    let address = bob.outbox().remove(0).1;
    let signed = Signed::<PaymentAddress>::from_envelope(only_envelope(&address)).unwrap();
    alice.receive(&address);
    let payment = alice.outbox().remove(0).1;
    assert_eq!(only_envelope(&payment).kind(), "payment");
    (payment, signed)
}

fn error_code(raw: &[u8]) -> ErrorCode {
    match Message::decode(only_envelope(raw)).unwrap() {
        Message::Error(e) => e.unverified().code,
        other => panic!("expected an error, got {}", other.kind()),
    }
}

#[test]
fn the_same_payment_twice_is_credited_once() {
    let mut issuer = TestIssuer::new(1, Currency::JPY);
    let mut alice = W::new("alice", &mut issuer);
    let mut bob = W::new("bob", &mut issuer);
    alice.give_notes(&mut issuer, &[500, 500]);
    let (payment, _) = pay_700(&mut alice, &mut bob);
    assert_eq!(alice.spendable(), 300);
    bob.receive(&payment);
    let receipt = bob.outbox().remove(0).1;
    assert_eq!(only_envelope(&receipt).kind(), "receipt");
    assert_eq!(bob.spendable(), 700);
    // Delivered again (in another mail): the same receipt, nothing more.
    let again = mail("alice@example.test", vec![only_envelope(&payment)], 9);
    bob.receive(&again);
    let second = bob.outbox().remove(0).1;
    assert_eq!(
        only_envelope(&second).to_bytes().unwrap(),
        only_envelope(&receipt).to_bytes().unwrap()
    );
    assert_eq!(bob.spendable(), 700);
    alice.receive(&receipt);
    assert_eq!(alice.last("send").state, "done");
    assert!(store::card(&alice.conn, Currency::JPY)
        .unwrap()
        .unwrap()
        .locked_by
        .is_none());
}

#[test]
fn a_payment_forwarded_to_someone_else_is_worth_nothing_to_them() {
    let mut issuer = TestIssuer::new(1, Currency::JPY);
    let mut alice = W::new("alice", &mut issuer);
    let mut bob = W::new("bob", &mut issuer);
    let mut carol = W::new("carol", &mut issuer);
    alice.give_notes(&mut issuer, &[1_000, 1_000]);
    let (payment, _) = pay_700(&mut alice, &mut bob);
    // Carol never invited anyone: the payment is filed, never credited.
    carol.receive(&payment);
    assert_eq!(carol.spendable(), 0);
    assert!(carol.outbox().is_empty());
    // Even when carol has an open transfer with the same amount, the
    // notes pay bob's card against bob's challenge, not hers.
    ops::send(
        &alice.conn,
        &alice.w,
        Currency::JPY,
        Amount::new(700),
        "carol@example.test",
        "",
        NOW,
    )
    .unwrap();
    let invite = alice.outbox().remove(0).1;
    carol.receive(&invite);
    let carol_address =
        Signed::<PaymentAddress>::from_envelope(only_envelope(&carol.outbox().remove(0).1))
            .unwrap();
    let p = Signed::<Payment>::from_envelope(only_envelope(&payment)).unwrap();
    let mut body = p.unverified().clone();
    body.transfer = carol_address.unverified().transfer;
    let card = store::card(&alice.conn, Currency::JPY).unwrap().unwrap();
    let secret = card.secret(&alice.conn, &alice.w.vault).unwrap();
    let forged = Signed::sign(body, &secret.auth).unwrap();
    carol.receive(&mail("alice@example.test", vec![forged.into_envelope()], 3));
    assert_eq!(carol.spendable(), 0);
    let refusal = carol.outbox().remove(0).1;
    assert_eq!(
        error_code(&refusal),
        ErrorCode::WrongKey.max(error_code(&refusal))
    );
    let line = carol.last("receive");
    assert_eq!(line.state, "refused");
    assert!(line.detail.contains("payment refused"), "{}", line.detail);
}

#[test]
fn tampered_payments_are_refused_with_a_signed_reason() {
    let mut issuer = TestIssuer::new(1, Currency::JPY);
    let mut alice = W::new("alice", &mut issuer);
    let mut bob = W::new("bob", &mut issuer);
    alice.give_notes(&mut issuer, &[1_000, 1_000]);
    let (payment, address) = pay_700(&mut alice, &mut bob);
    // The amount changed after signing: the signature fails.
    let env = only_envelope(&payment);
    let mut body = Signed::<Payment>::from_envelope(env.clone())
        .unwrap()
        .unverified()
        .clone();
    body.memo = "changed".into();
    let tampered = Envelope::from_parts(
        env.kind().into(),
        mailer::cbor::to_vec(&body).unwrap(),
        *env.signer(),
        *env.signature(),
    )
    .unwrap();
    bob.receive(&mail("alice@example.test", vec![tampered], 1));
    assert_eq!(bob.spendable(), 0);
    let refusal = bob.outbox().remove(0).1;
    let e = Signed::<ErrorReply>::from_envelope(only_envelope(&refusal)).unwrap();
    // Signed by bob's card, so alice knows the payee refused it.
    e.verify_signer(&address.unverified().card.auth).unwrap();
    let line = bob.last("receive");
    assert_eq!(line.state, "addressed");
    assert!(line.detail.contains("refused a payment"), "{}", line.detail);
    // Alice's own payment was not the one refused: she still waits.
    alice.receive(&refusal);
    assert_eq!(alice.last("send").state, "paying");
    // The genuine payment still goes through, once.
    bob.receive(&payment);
    assert_eq!(bob.spendable(), 700);
    let receipt = bob.outbox().remove(0).1;
    alice.receive(&receipt);
    assert_eq!(alice.last("send").state, "done");

    // A payment genuinely signed by the payer's card whose notes are
    // wrong (paid to another challenge) ends the transfer, refused with a
    // reason, nothing credited.
    let (payment, address) = pay_700(&mut alice, &mut bob);
    let p = Signed::<Payment>::from_envelope(only_envelope(&payment)).unwrap();
    let card = store::card(&alice.conn, Currency::JPY).unwrap().unwrap();
    let secret = card.secret(&alice.conn, &alice.w.vault).unwrap();
    let mut body = p.unverified().clone();
    let mut paid = body.notes[0].clone();
    paid.links.pop();
    body.notes = vec![paid
        .pay(
            &secret.payment,
            address.unverified().card.payment,
            Amount::new(700),
            mailer::testkit::challenge(9),
            NOW,
        )
        .unwrap()];
    let wrong = Signed::sign(body, &secret.auth).unwrap();
    bob.receive(&mail("alice@example.test", vec![wrong.into_envelope()], 2));
    assert_eq!(bob.spendable(), 700);
    let refusal = bob.outbox().remove(0).1;
    assert_eq!(error_code(&refusal), ErrorCode::WrongChallenge);
    assert_eq!(bob.last("receive").state, "refused");
    assert!(bob.last("receive").detail.contains("payment refused"));
}
