//! Exactly once: a request seen again gets the reply it got the first
//! time, byte for byte, in a new mail, and changes nothing.

use mailer::envelope::{Envelope, Signed};
use mailer::imap::Disposition;
use mailer::messages::{ErrorCode, LicenseRequest, NotesIssued, RevocationListRequest};
use mailer::money::{Amount, Currency};
use mailer::testkit::{card, key};

use crate::common::*;

/// Row counts of every table the issuer's decisions write.
fn snapshot(w: &World) -> Vec<(String, i64)> {
    let mut out = w
        .balances()
        .into_iter()
        .map(|(a, b)| (format!("balance {a}"), b))
        .collect::<Vec<_>>();
    for t in [
        "accounts",
        "ledger",
        "enrollment_codes",
        "account_keys",
        "licenses",
        "notes",
        "states",
        "credits",
        "requests",
        "overspends",
        "revocations",
    ] {
        let n: i64 = w
            .conn
            .query_row(&format!("SELECT COUNT(*) FROM {t}"), [], |r| r.get(0))
            .unwrap();
        out.push((t.to_string(), n));
    }
    out
}

/// Sends `env` once, then twice more in new mails: the same reply each
/// time, each in a new mail threaded to its request, and no change.
fn replays_identically(w: &mut World, env: Envelope) -> Envelope {
    let first = w.ask(env.clone());
    let before = snapshot(w);
    let mut ids = vec![first.mail.message_id.clone().unwrap()];
    for _ in 0..2 {
        let again = w.ask(env.clone());
        assert_eq!(
            again.envelope.to_bytes().unwrap(),
            first.envelope.to_bytes().unwrap(),
            "the stored reply, byte for byte"
        );
        assert_eq!(again.subject, first.subject);
        let mid = again.mail.message_id.clone().unwrap();
        assert!(!ids.contains(&mid), "a new mail each time");
        ids.push(mid);
        assert_eq!(snapshot(w), before, "a replay changes nothing");
    }
    w.audit_ok();
    first.envelope
}

#[test]
fn every_request_kind_replays_its_reply() {
    let mut w = World::new();
    let code = w.open_account("alice", 10_000);
    let enroll = w.sign(
        mailer::messages::EnrollRequest {
            currency: Currency::JPY,
            code,
        },
        &key(30),
    );
    replays_identically(&mut w, enroll);
    let c = card(31);
    let license = LicenseRequest::new(&c, Currency::JPY, w.now)
        .unwrap()
        .into_envelope();
    let granted = replays_identically(&mut w, license);
    let granted: mailer::messages::LicenseGranted =
        Signed::<mailer::messages::LicenseGranted>::from_envelope(granted)
            .unwrap()
            .unverified()
            .clone();
    let alice = User {
        account: key(30),
        card: c,
        license: granted.license,
    };
    let withdraw = w.withdraw_request(&alice, 1_500);
    let issued = replays_identically(&mut w, withdraw);
    let notes = Signed::<NotesIssued>::from_envelope(issued)
        .unwrap()
        .unverified()
        .notes
        .clone();
    assert_eq!(w.balance("alice"), Amount::new(8_500));
    let deps = notes
        .iter()
        .map(|n| w.deposit_link(n, &alice.card, &alice, value(n)))
        .collect();
    let deposit = w.deposit_request(&alice, deps, vec![]);
    replays_identically(&mut w, deposit);
    assert_eq!(w.balance("alice"), Amount::new(10_000));
    // A refused request is refused again the same way.
    let too_much = w.withdraw_request(&alice, 20_000);
    let e = replays_identically(&mut w, too_much);
    assert_eq!(e.kind(), "error");
}

#[test]
fn the_revocation_list_is_always_the_current_one() {
    let mut w = World::new();
    let alice = w.user("alice", 30, 0);
    let req = Signed::sign(
        RevocationListRequest {
            currency: Currency::JPY,
            known_version: 0,
        },
        &card(50).auth,
    )
    .unwrap()
    .into_envelope();
    let first: mailer::license::RevocationList = w.ask(req.clone()).body();
    assert_eq!(first.version, 0);
    let same = w.ask(req.clone());
    assert_eq!(same.body::<mailer::license::RevocationList>(), first);
    issuer::operator::revoke_card(&mut w.conn, &alice.payment_key(), "stolen", w.now).unwrap();
    let newer: mailer::license::RevocationList = w.ask(req).body();
    assert_eq!(newer.version, 1);
    assert_eq!(newer.entries[0].payment_key, alice.payment_key());
}

#[test]
fn several_requests_in_one_mail_are_answered_one_by_one() {
    let mut w = World::new();
    let alice = w.user("alice", 30, 1_000);
    let a = w.withdraw_request(&alice, 100);
    let b = w.withdraw_request(&alice, 200);
    let bad = w.withdraw_request(&alice, 5_000);
    let d = w.send(vec![a.clone(), b.clone(), bad.clone()]);
    assert_eq!(d.disposition, Disposition::Processed);
    assert_eq!(d.replies.len(), 3);
    assert_eq!(d.replies[0].body::<NotesIssued>().request, a.id());
    assert_eq!(d.replies[1].body::<NotesIssued>().request, b.id());
    assert_eq!(d.replies[2].code(), ErrorCode::InsufficientFunds);
    assert_eq!(w.balance("alice"), Amount::new(700));
    // The same mail delivered again: three replies again, no change.
    let d = w.send(vec![a, b, bad]);
    assert_eq!(d.replies.len(), 3);
    assert_eq!(w.balance("alice"), Amount::new(700));
    w.audit_ok();
}

/// The envelope id does not cover the signature: a copy of an answered
/// request whose signature was replaced must be refused as forged, not
/// answered with the stored reply (found by the hostile-mail corpus).
#[test]
fn a_copy_of_an_answered_request_with_a_forged_signature_is_refused() {
    let mut w = World::new();
    let alice = w.user("alice", 30, 10_000);
    let withdraw = w.withdraw_request(&alice, 1_500);
    let first = w.ask(withdraw.clone());
    assert_eq!(first.envelope.kind(), "notes-issued");
    let before = snapshot(&w);
    let forged = Envelope::from_parts(
        withdraw.kind().to_string(),
        withdraw.body().to_vec(),
        *withdraw.signer(),
        key(99).sign(&withdraw.signed_bytes()),
    )
    .unwrap();
    assert_eq!(forged.id(), withdraw.id(), "same id, other signature");
    let reply = w.ask(forged);
    assert_eq!(reply.code(), ErrorCode::BadSignature);
    assert_eq!(snapshot(&w), before, "nothing changes");
    // The real request is still answered as before.
    let again = w.ask(withdraw);
    assert_eq!(
        again.envelope.to_bytes().unwrap(),
        first.envelope.to_bytes().unwrap()
    );
    w.audit_ok();
}
