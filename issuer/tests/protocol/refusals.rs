//! Every bad request gets a signed error with the right code and changes
//! no balance; mail that is not protocol mail gets no reply at all.

use base64::Engine as _;
use mailer::crypto::{Id, Signature};
use mailer::envelope::{Envelope, Signed};
use mailer::imap::Disposition;
use mailer::messages::{
    Deposit, DepositOutcome, EnrollRequest, ErrorCode, LicenseRequest, NotesIssued, Payment,
    RevocationListRequest, WithdrawRequest,
};
use mailer::money::{Amount, Currency};
use mailer::testkit::{card, key};

use crate::common::*;

/// A world with alice (enrolled, licensed, 10000 JPY) and bob (a card).
fn setup() -> (World, User) {
    let mut w = World::new();
    let alice = w.user("alice", 30, 10_000);
    (w, alice)
}

/// Sends `env` and checks the refusal: one signed error naming the
/// request, with `code` and a reason, the mail rejected, no balance
/// changed, and the books still right.
fn refused(w: &mut World, env: Envelope, code: ErrorCode) -> String {
    let before = w.balances();
    let d = w.send(vec![env.clone()]);
    assert!(
        matches!(d.disposition, Disposition::Rejected { .. }),
        "{:?}",
        d.disposition
    );
    let reply = d.reply();
    let e = reply.error();
    assert_eq!(e.code, code, "{}", e.reason);
    assert_eq!(e.request, Some(env.id()));
    assert_eq!(e.request_kind.as_deref(), Some(env.kind()));
    assert!(
        e.reason.len() > 20,
        "a reason that says what to do: {}",
        e.reason
    );
    assert!(reply.subject.contains(&format!("E{}", code.number())));
    assert_eq!(w.balances(), before);
    w.audit_ok();
    e.reason.clone()
}

fn withdraw(
    w: &World,
    signer: &mailer::crypto::SecretKey,
    currency: Currency,
    amount: u64,
    c: &mailer::license::CardSecret,
) -> Envelope {
    w.sign(
        WithdrawRequest {
            request_id: Id([amount as u8; 16]),
            currency,
            amount: Amount::new(amount),
            card: c.keys(),
        },
        signer,
    )
}

#[test]
fn bad_signatures_are_refused_and_not_remembered() {
    let (mut w, alice) = setup();
    let good = withdraw(&w, &alice.account, Currency::JPY, 1_000, &alice.card);
    // The same envelope with a damaged signature (same id: the id does not
    // cover the signature).
    let forged = Envelope::from_parts(
        good.kind().into(),
        good.body().to_vec(),
        *good.signer(),
        Signature([7; 64]),
    )
    .unwrap();
    assert_eq!(forged.id(), good.id());
    refused(&mut w, forged.clone(), ErrorCode::BadSignature);
    // The forgery did not poison the id: the real request is served.
    let issued: NotesIssued = w.ask(good.clone()).body();
    assert_eq!(issued.request, good.id());
    // And the forgery sent afterwards is refused as forged: neither a
    // debit nor the stored reply (it is not the request that was
    // answered). Its refusal was mailed once already (same Message-ID).
    let again = w.send(vec![forged]);
    assert!(
        matches!(&again.disposition, Disposition::Rejected { reason } if reason.contains("E103")),
        "{:?}",
        again.disposition
    );
    assert!(again.replies.is_empty(), "not the stored reply");
    assert_eq!(w.balance("alice"), Amount::new(9_000));
    w.audit_ok();
}

#[test]
fn a_request_signed_by_the_wrong_key() {
    let (mut w, _alice) = setup();
    let c = card(80);
    // A license request signed by the payment key, not the auth key.
    let mut req = LicenseRequest::new(&c, Currency::JPY, w.now)
        .unwrap()
        .unverified()
        .clone();
    req.requested_at = w.now;
    let env = w.sign(req.clone(), &c.payment);
    refused(&mut w, env, ErrorCode::WrongKey);
    // Signed by the auth key, but with a proof of possession by another key.
    req.payment_pop = key(81).sign(b"something else");
    let env = w.sign(req, &c.auth);
    refused(&mut w, env, ErrorCode::BadSignature);
}

#[test]
fn unknown_account_keys() {
    let (mut w, alice) = setup();
    let stranger = key(90);
    let env = withdraw(&w, &stranger, Currency::JPY, 100, &alice.card);
    refused(&mut w, env, ErrorCode::UnknownAccount);
    let note = w.withdraw(&alice, 100).remove(0);
    let dep = w.deposit_link(&note, &alice.card, &alice, 100);
    let env = w.sign(
        Deposit {
            request_id: Id([1; 16]),
            currency: Currency::JPY,
            notes: vec![dep],
            licenses: vec![],
        },
        &stranger,
    );
    refused(&mut w, env, ErrorCode::UnknownAccount);
}

#[test]
fn other_currencies() {
    let (mut w, alice) = setup();
    let env = withdraw(&w, &alice.account, Currency::USD, 100, &alice.card);
    let reason = refused(&mut w, env, ErrorCode::WrongCurrency);
    assert!(reason.contains("USD issuer"), "{reason}");
    let env = LicenseRequest::new(&card(82), Currency::USD, w.now)
        .unwrap()
        .into_envelope();
    refused(&mut w, env, ErrorCode::WrongCurrency);
    let code = w.open_account("bob", 0);
    let env = w.sign(
        EnrollRequest {
            currency: Currency::USD,
            code,
        },
        &key(83),
    );
    refused(&mut w, env, ErrorCode::WrongCurrency);
    let env = w.sign(
        RevocationListRequest {
            currency: Currency::EUR,
            known_version: 0,
        },
        &key(84),
    );
    refused(&mut w, env, ErrorCode::WrongCurrency);
    let note = w.withdraw(&alice, 100).remove(0);
    let dep = w.deposit_link(&note, &alice.card, &alice, 100);
    let env = w.sign(
        Deposit {
            request_id: Id([2; 16]),
            currency: Currency::USD,
            notes: vec![dep],
            licenses: vec![],
        },
        &alice.account,
    );
    refused(&mut w, env, ErrorCode::WrongCurrency);
}

#[test]
fn bad_amounts_and_insufficient_funds() {
    let (mut w, alice) = setup();
    let env = withdraw(&w, &alice.account, Currency::JPY, 0, &alice.card);
    refused(&mut w, env, ErrorCode::BadAmount);
    let env = withdraw(&w, &alice.account, Currency::JPY, u64::MAX, &alice.card);
    refused(&mut w, env, ErrorCode::BadAmount);
    let env = withdraw(&w, &alice.account, Currency::JPY, 10_001, &alice.card);
    let reason = refused(&mut w, env, ErrorCode::InsufficientFunds);
    assert!(reason.contains("10000"), "{reason}");
    // A deposit with no notes.
    let env = w.deposit_request(&alice, vec![], vec![]);
    refused(&mut w, env, ErrorCode::BadAmount);
}

#[test]
fn unlicensed_and_revoked_cards() {
    let (mut w, alice) = setup();
    let unlicensed = card(85);
    let env = withdraw(&w, &alice.account, Currency::JPY, 100, &unlicensed);
    refused(&mut w, env, ErrorCode::NotLicensed);
    // Licensed, but with other keys than the license names.
    let mut mixed = card(85);
    mixed.payment = alice.card.payment.clone();
    let env = withdraw(&w, &alice.account, Currency::JPY, 100, &mixed);
    refused(&mut w, env, ErrorCode::NotLicensed);
    // Revoked by the operator (a lost card).
    assert!(
        issuer::operator::revoke_card(&mut w.conn, &alice.payment_key(), "lost", w.now).unwrap()
    );
    assert!(
        !issuer::operator::revoke_card(&mut w.conn, &alice.payment_key(), "again", w.now).unwrap()
    );
    let env = withdraw(&w, &alice.account, Currency::JPY, 100, &alice.card);
    refused(&mut w, env, ErrorCode::Revoked);
    // (A new request: the one made at setup would get its stored reply.)
    w.advance(1);
    let env = LicenseRequest::new(&alice.card, Currency::JPY, w.now)
        .unwrap()
        .into_envelope();
    refused(&mut w, env, ErrorCode::Revoked);
}

#[test]
fn bad_notes_are_refused_one_by_one() {
    let (mut w, alice) = setup();
    let bob = w.user("bob", 40, 0);
    let notes = w.withdraw(&alice, 3_000);
    // 0: good. 1: paid to bob's card, not to the issuer. 2: a link whose
    // signature was damaged. 3: a note the issuer never issued.
    let good = w.deposit_link(&notes[0], &alice.card, &alice, 1_000);
    let to_bob = pay(&w, &notes[1], &alice.card, &bob, 1_000, 1);
    let mut damaged = w.deposit_link(&notes[2], &alice.card, &alice, 1_000);
    let l = damaged.links.pop().unwrap().into_envelope();
    let bad = Envelope::from_parts(
        l.kind().into(),
        l.body().to_vec(),
        *l.signer(),
        Signature([9; 64]),
    )
    .unwrap();
    damaged.links.push(Signed::from_envelope(bad).unwrap());
    let mut foreign = mailer::testkit::TestIssuer::new(7, Currency::JPY);
    let alien = foreign.issue(1_000, &alice.card.keys());
    let alien = w.deposit_link(&alien, &alice.card, &alice, 1_000);
    let receipt = w.deposit(&alice, vec![good, to_bob, damaged, alien], vec![]);
    assert_eq!(receipt.credited, Amount::new(1_000));
    let codes: Vec<Option<ErrorCode>> = receipt
        .results
        .iter()
        .map(|r| match &r.result {
            DepositOutcome::Refused { code, .. } => Some(*code),
            _ => None,
        })
        .collect();
    assert_eq!(
        codes,
        [
            None,
            Some(ErrorCode::WrongPayee),
            Some(ErrorCode::BadNote),
            Some(ErrorCode::BadNote)
        ]
    );
    assert_eq!(w.balance("alice"), Amount::new(7_000 + 1_000));
    w.audit_ok();
}

#[test]
fn a_forged_license_refuses_the_whole_deposit() {
    let (mut w, alice) = setup();
    let note = w.withdraw(&alice, 1_000).remove(0);
    let dep = w.deposit_link(&note, &alice.card, &alice, 1_000);
    let mut fake = mailer::testkit::TestIssuer::new(7, Currency::JPY);
    let forged = fake.license(&alice.card.keys());
    let env = w.deposit_request(&alice, vec![dep], vec![forged]);
    refused(&mut w, env, ErrorCode::WrongKey);
}

#[test]
fn kinds_the_issuer_does_not_handle() {
    let (mut w, alice) = setup();
    let unknown = Envelope::seal("teleport-request", vec![0xa0], &key(86)).unwrap();
    refused(&mut w, unknown, ErrorCode::UnknownKind);
    let payment = w.sign(
        Payment {
            transfer: Id([3; 16]),
            currency: Currency::JPY,
            amount: Amount::new(1),
            notes: vec![],
            licenses: vec![],
            memo: String::new(),
        },
        &alice.card.auth,
    );
    refused(&mut w, payment, ErrorCode::NotForUs);
    refused(
        &mut w,
        alice.license.clone().into_envelope(),
        ErrorCode::NotForUs,
    );
    let note = w.withdraw(&alice, 100).remove(0);
    refused(&mut w, note.issuance.into_envelope(), ErrorCode::NotForUs);
    // An error is never answered.
    let err = w.sign(
        mailer::messages::ErrorReply {
            request: None,
            request_kind: None,
            code: ErrorCode::Internal,
            reason: "oops".into(),
            evidence: vec![],
        },
        &key(87),
    );
    let d = w.send(vec![err]);
    assert!(matches!(d.disposition, Disposition::Rejected { .. }));
    assert!(d.replies.is_empty());
}

#[test]
fn bodies_that_do_not_decode_or_break_limits() {
    let (mut w, alice) = setup();
    // A known kind whose body is not a withdraw request.
    let env = Envelope::seal(
        "withdraw-request",
        vec![0xa1, 0x61, 0x78, 0x01],
        &alice.account,
    )
    .unwrap();
    refused(&mut w, env, ErrorCode::BadEnvelope);
    // 65 notes in one deposit.
    let note = w.withdraw(&alice, 1).remove(0);
    let dep = w.deposit_link(&note, &alice.card, &alice, 1);
    let env = w.deposit_request(&alice, vec![dep; 65], vec![]);
    refused(&mut w, env, ErrorCode::LimitExceeded);
}

/// A mail with the given attachments, written by hand.
fn handmade(parts: &[(&str, String)]) -> Vec<u8> {
    let mut m = String::from(
        "From: user@wallet.example\r\nTo: issuer@jpy.example\r\nSubject: hand\r\n\
         Message-ID: <hand@wallet.example>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"zz\"\r\n\r\n\
         --zz\r\nContent-Type: text/plain\r\n\r\nhello\r\n",
    );
    for (ctype, body) in parts {
        m.push_str(&format!(
            "--zz\r\nContent-Type: {ctype}\r\nContent-Transfer-Encoding: base64\r\n\r\n{body}\r\n"
        ));
    }
    m.push_str("--zz--\r\n");
    m.into_bytes()
}

fn mail_refusal(w: &mut World, raw: &[u8], code: ErrorCode) {
    let before = w.balances();
    let d = w.deliver(raw);
    assert!(matches!(d.disposition, Disposition::Rejected { .. }));
    let reply = d.reply();
    assert_eq!(reply.code(), code, "{}", reply.error().reason);
    assert_eq!(reply.error().request, None);
    assert_eq!(reply.recipient, USER_ADDRESS);
    assert_eq!(
        reply.mail.in_reply_to.as_ref().map(|m| m.as_str()),
        Some("hand@wallet.example")
    );
    assert_eq!(w.balances(), before);
}

#[test]
fn protocol_mail_that_cannot_be_read() {
    let (mut w, alice) = setup();
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    mail_refusal(
        &mut w,
        &handmade(&[("application/cbor", "!!not base64!!".into())]),
        ErrorCode::BadEnvelope,
    );
    let env = withdraw(&w, &alice.account, Currency::JPY, 100, &alice.card);
    let bytes = env.to_bytes().unwrap();
    let five: Vec<(&str, String)> = (0..5).map(|_| ("application/cbor", b64(&bytes))).collect();
    mail_refusal(&mut w, &handmade(&five), ErrorCode::LimitExceeded);
    // Envelope version 2.
    let mut v2 = bytes.clone();
    assert_eq!(v2[..2], [0x85, 0x01]);
    v2[1] = 0x02;
    mail_refusal(
        &mut w,
        &handmade(&[("application/cbor", b64(&v2))]),
        ErrorCode::UnsupportedVersion,
    );
    mail_refusal(
        &mut w,
        &handmade(&[("application/cbor", b64(b"\x83\x01"))]),
        ErrorCode::BadEnvelope,
    );
    w.audit_ok();
}

#[test]
fn non_protocol_mail_gets_no_reply() {
    let (mut w, _alice) = setup();
    let plain = b"From: someone@spam.example\r\nTo: issuer@jpy.example\r\nSubject: hi\r\n\
                  Message-ID: <s1@spam.example>\r\n\r\nBuy now!\r\n";
    let queued = w.outbox_len();
    let pdf = handmade(&[("application/pdf", "JVBERi0=".into())]);
    for raw in [
        plain.to_vec(),
        pdf,
        b"\x00\x01 garbage".to_vec(),
        Vec::new(),
    ] {
        let d = w.deliver(&raw);
        assert!(matches!(d.disposition, Disposition::Rejected { .. }));
        assert!(d.replies.is_empty());
    }
    assert_eq!(w.outbox_len(), queued);
}

#[test]
fn automatic_mail_never_gets_an_error() {
    let (mut w, alice) = setup();
    let bad = withdraw(&w, &alice.account, Currency::JPY, 0, &alice.card);
    let raw = w.mail(USER_ADDRESS, vec![bad.clone()], true);
    let d = w.deliver(&raw);
    assert!(matches!(d.disposition, Disposition::Rejected { .. }));
    assert!(d.replies.is_empty());
    let unknown = Envelope::seal("teleport-request", vec![0xa0], &key(86)).unwrap();
    let raw = w.mail(USER_ADDRESS, vec![unknown], true);
    assert!(w.deliver(&raw).replies.is_empty());
    // The refusal was decided and recorded: asked again by a person, it
    // is answered.
    assert_eq!(w.ask(bad).code(), ErrorCode::BadAmount);
    // A good request in an automatic mail is answered as usual.
    let good = withdraw(&w, &alice.account, Currency::JPY, 100, &alice.card);
    let raw = w.mail(USER_ADDRESS, vec![good], true);
    let reply = w.deliver(&raw).reply();
    assert_eq!(reply.body::<NotesIssued>().notes.len(), 1);
    w.audit_ok();
}

#[test]
fn a_request_without_a_return_address_is_decided_but_not_answered() {
    let (mut w, alice) = setup();
    let env = withdraw(&w, &alice.account, Currency::JPY, 100, &alice.card);
    let raw = w.mail(USER_ADDRESS, vec![env.clone()], false);
    let text = String::from_utf8(raw).unwrap();
    let without: String = text
        .split("\r\n")
        .filter(|l| !l.starts_with("From:"))
        .collect::<Vec<_>>()
        .join("\r\n");
    let d = w.deliver(without.as_bytes());
    assert_eq!(d.disposition, Disposition::Processed);
    assert!(d.replies.is_empty());
    assert_eq!(w.balance("alice"), Amount::new(9_900));
    // Sent again with an address, it gets the reply it was given.
    assert_eq!(w.ask(env).body::<NotesIssued>().notes.len(), 1);
    assert_eq!(w.balance("alice"), Amount::new(9_900));
    w.audit_ok();
}

/// `note` with one bit of its last link's signature (or, with
/// `issuance`, its issuance's) flipped: still a well-formed signature,
/// which only the verification equation refuses.
fn flip_signature_bit(note: &mailer::note::Note, issuance: bool) -> mailer::note::Note {
    let e = if issuance {
        note.issuance.envelope()
    } else {
        note.links.last().unwrap().envelope()
    };
    let mut sig = *e.signature();
    sig.0[40] ^= 1;
    let env = Envelope::from_parts(e.kind().into(), e.body().to_vec(), *e.signer(), sig).unwrap();
    let mut note = note.clone();
    if issuance {
        note.issuance = Signed::from_envelope(env).unwrap();
    } else {
        *note.links.last_mut().unwrap() = Signed::from_envelope(env).unwrap();
    }
    note
}

#[test]
fn one_bad_signature_among_many_notes_refuses_that_note_only() {
    let (mut w, alice) = setup();
    for (bad_at, issuance, reason) in [
        (13, false, "signature of link 0 does not verify"),
        (0, true, "issuer's signature on the note does not verify"),
    ] {
        let mut deps = Vec::new();
        for _ in 0..20 {
            let note = w.withdraw(&alice, 1).remove(0);
            deps.push(w.deposit_link(&note, &alice.card, &alice, 1));
        }
        deps[bad_at] = flip_signature_bit(&deps[bad_at], issuance);
        let before = w.balance("alice");
        let receipt = w.deposit(&alice, deps.clone(), vec![]);
        assert_eq!(receipt.credited, Amount::new(19));
        assert_eq!(
            w.balance("alice"),
            before.checked_add(Amount::new(19)).unwrap()
        );
        for (i, r) in receipt.results.iter().enumerate() {
            assert_eq!(r.note, deps[i].id());
            if i == bad_at {
                let DepositOutcome::Refused { code, reason: why } = &r.result else {
                    panic!("note {i}: {:?}", r.result);
                };
                assert_eq!(*code, ErrorCode::BadNote);
                assert!(why.starts_with(reason), "{why}");
                assert!(why.ends_with("this note was not credited"), "{why}");
            } else {
                assert_eq!(r.result, DepositOutcome::Credited, "note {i}");
            }
        }
        w.audit_ok();
    }
}
