//! Enrollment, licensing, withdrawal and deposit, as a wallet sees them.

use mailer::envelope::Signed;
use mailer::messages::{DepositOutcome, Enrolled, ErrorCode, LicenseGranted, LicenseRequest};
use mailer::money::{Amount, Currency};
use mailer::note::{Expect, NotePolicy};
use mailer::testkit::{card, key};

use crate::common::*;

#[test]
fn enrollment_binds_the_key_once_per_code() {
    let mut w = World::new();
    let code = w.open_account("alice", 50_000);
    let alice = key(30);
    let reply = w.enroll(&alice, &code);
    assert!(reply.subject.contains("enrolled"), "{}", reply.subject);
    let enrolled: Enrolled = reply.body();
    assert_eq!(enrolled.account, "alice");
    assert_eq!(enrolled.balance, Amount::new(50_000));
    assert_eq!(enrolled.currency, Currency::JPY);
    assert_eq!(
        issuer::store::account_of_key(&w.conn, &alice.public()).unwrap(),
        Some("alice".into())
    );
    // The code is used up: another key cannot take it.
    assert_eq!(
        w.enroll(&key(31), &code).code(),
        ErrorCode::BadEnrollmentCode
    );
    // Unknown codes, and codes typed loosely but right, for a new code.
    assert_eq!(
        w.enroll(&key(31), "AAAA-BBBB").code(),
        ErrorCode::BadEnrollmentCode
    );
    let second = issuer::operator::new_enrollment_code(&mut w.conn, &w.issuer, "alice", w.now)
        .unwrap()
        .code;
    let sloppy = second.to_lowercase().replace('-', " ");
    let enrolled: Enrolled = w.enroll(&key(31), &sloppy).body();
    assert_eq!(enrolled.account, "alice");
    let view = issuer::operator::show_account(&w.conn, "alice", w.now).unwrap();
    assert_eq!(view.keys.len(), 2);
    assert_eq!(view.open_codes, 0);
    // A key enrolled for alice cannot be enrolled for bob.
    let bob_code = w.open_account("bob", 0);
    assert_eq!(w.enroll(&alice, &bob_code).code(), ErrorCode::BadRequest);
    // Codes expire.
    let late = w.open_account("carol", 0);
    w.advance(8 * 86_400);
    let r = w.enroll(&key(32), &late);
    assert_eq!(r.code(), ErrorCode::BadEnrollmentCode);
    assert!(r.error().reason.contains("expired"), "{}", r.error().reason);
    w.audit_ok();
}

#[test]
fn a_license_names_the_card_and_covers_now() {
    let mut w = World::new();
    let c = card(40);
    let req = LicenseRequest::new(&c, Currency::JPY, w.now).unwrap();
    let reply = w.ask(req.clone().into_envelope());
    assert!(reply.subject.contains("License granted"));
    assert!(reply.mail.auto_submitted);
    let granted: LicenseGranted = reply.body();
    assert_eq!(granted.request, req.id());
    let license = granted.license.verify_signer(&w.issuer_key()).unwrap();
    assert_eq!(license.card, c.keys());
    assert_eq!(license.currency, Currency::JPY);
    assert!(license.covers(w.now));
    assert!(license.covers(w.now.saturating_add_secs(365 * 86_400)));
    // A card whose clock is a little behind gets a license from its time.
    w.advance(60);
    let behind = LicenseRequest::new(&c, Currency::JPY, w.now.saturating_sub_secs(300)).unwrap();
    let l: LicenseGranted = w.ask(behind.into_envelope()).body();
    assert!(l
        .license
        .unverified()
        .covers(w.now.saturating_sub_secs(300)));
    // Dated too far in the future: refused.
    let future = LicenseRequest::new(&c, Currency::JPY, w.now.saturating_add_secs(3_600)).unwrap();
    assert_eq!(w.ask(future.into_envelope()).code(), ErrorCode::BadRequest);
    w.audit_ok();
}

#[test]
fn withdrawal_splits_into_denominations_and_debits_the_account() {
    let mut w = World::new();
    let alice = w.user("alice", 30, 50_000);
    let notes = w.withdraw(&alice, 16_788);
    let values: Vec<u64> = notes.iter().map(value).collect();
    assert_eq!(
        values,
        [10000, 5000, 1000, 500, 100, 100, 50, 10, 10, 10, 5, 1, 1, 1]
    );
    let book = mailer::license::LicenseBook::new();
    let none = mailer::license::Revocations::none();
    let pk = w.issuer_key();
    for n in &notes {
        n.verify(&NotePolicy {
            issuer: &pk,
            currency: Currency::JPY,
            now: w.now,
            licenses: &book,
            revocations: &none,
            expect: Expect::Issued {
                holder: alice.payment_key(),
            },
            accept_expired: false,
        })
        .unwrap();
    }
    assert_eq!(w.balance("alice"), Amount::new(50_000 - 16_788));
    // The reply states the new balance.
    let env = w.withdraw_request(&alice, 1);
    let issued: mailer::messages::NotesIssued = w.ask(env).body();
    assert_eq!(issued.balance, Amount::new(50_000 - 16_789));
    assert_eq!(issued.notes.len(), 1);
    // The largest withdrawal in one request is 64 of the largest note.
    issuer::operator::credit_account(&mut w.conn, "alice", Amount::new(700_000), "", w.now)
        .unwrap();
    assert_eq!(w.withdraw(&alice, 640_000).len(), 64);
    let env = w.withdraw_request(&alice, 640_001);
    let r = w.ask(env);
    assert_eq!(r.code(), ErrorCode::BadAmount);
    assert!(r.error().reason.contains("at most"), "{}", r.error().reason);
    w.audit_ok();
    let report = issuer::audit(&w.conn, &w.issuer).unwrap();
    assert_eq!(report.issued, 16_789 + 640_000);
    assert_eq!(report.outstanding, report.issued);
}

#[test]
fn deposits_credit_the_account_and_partial_payments_add_up() {
    let mut w = World::new();
    let alice = w.user("alice", 30, 1_000);
    let bob = w.user("bob", 40, 0);
    let note = w.withdraw(&alice, 1_000).remove(0);
    // Alice pays bob 700 of her 1000 note; bob deposits it.
    let to_bob = pay(&w, &note, &alice.card, &bob, 700, 1);
    let dep = w.deposit_link(&to_bob, &bob.card, &bob, 700);
    let receipt = w.deposit(
        &bob,
        vec![dep.clone()],
        vec![alice.license.clone(), bob.license.clone()],
    );
    assert_eq!(receipt.credited, Amount::new(700));
    assert_eq!(receipt.balance, Amount::new(700));
    assert_eq!(receipt.results.len(), 1);
    assert_eq!(receipt.results[0].result, DepositOutcome::Credited);
    assert_eq!(receipt.results[0].note, note.id());
    assert_eq!(receipt.results[0].state, dep.state());
    assert_eq!(receipt.results[0].amount, Amount::new(700));
    // Alice deposits the 300 she kept, without carrying licenses: the
    // issuer knows the licenses it granted.
    let rest = w.deposit_link(&note, &alice.card, &alice, 300);
    let receipt = w.deposit(&alice, vec![rest], vec![]);
    assert_eq!(receipt.credited, Amount::new(300));
    assert_eq!(w.balance("alice"), Amount::new(300));
    assert_eq!(w.balance("bob"), Amount::new(700));
    w.audit_ok();
    let report = issuer::audit(&w.conn, &w.issuer).unwrap();
    assert_eq!(
        (report.issued, report.credited, report.outstanding),
        (1000, 1000, 0)
    );
}

#[test]
fn a_note_is_credited_once_however_often_it_comes_back() {
    let mut w = World::new();
    let alice = w.user("alice", 30, 5_000);
    let notes = w.withdraw(&alice, 1_500);
    let deps: Vec<_> = notes
        .iter()
        .map(|n| w.deposit_link(n, &alice.card, &alice, value(n)))
        .collect();
    let env = w.deposit_request(&alice, deps.clone(), vec![]);
    let raw = w.mail(USER_ADDRESS, vec![env.clone()], false);
    let first = w.deliver(&raw).reply();
    let receipt: mailer::messages::DepositReceipt = first.body();
    assert_eq!(receipt.credited, Amount::new(1_500));
    // The same mail again (a duplicate delivery that got past the inbox):
    // the same receipt, nothing credited again.
    let again = w.deliver(&raw).reply();
    assert_eq!(again.envelope, first.envelope);
    assert_eq!(w.balance("alice"), Amount::new(5_000));
    // The same notes in a new deposit request: already credited.
    let receipt = w.deposit(&alice, deps.clone(), vec![]);
    assert_eq!(receipt.credited, Amount::ZERO);
    assert!(receipt
        .results
        .iter()
        .all(|r| r.result == DepositOutcome::AlreadyCredited));
    // One note twice in one deposit, with a new one: the new one counts.
    let more = w.withdraw(&alice, 100).remove(0);
    let more_dep = w.deposit_link(&more, &alice.card, &alice, 100);
    let receipt = w.deposit(
        &alice,
        vec![deps[0].clone(), more_dep.clone(), more_dep],
        vec![],
    );
    assert_eq!(receipt.credited, Amount::new(100));
    let outcomes: Vec<_> = receipt.results.iter().map(|r| r.result.clone()).collect();
    assert_eq!(
        outcomes,
        [
            DepositOutcome::AlreadyCredited,
            DepositOutcome::Credited,
            DepositOutcome::AlreadyCredited
        ]
    );
    assert_eq!(w.balance("alice"), Amount::new(5_000));
    w.audit_ok();
}

#[test]
fn a_rebuilt_deposit_of_the_same_notes_is_not_an_overspend() {
    let mut w = World::new();
    let alice = w.user("alice", 30, 5_000);
    let bob = w.user("bob", 40, 0);
    let note = w.withdraw(&alice, 1_000).remove(0);
    let paid = pay(&w, &note, &alice.card, &bob, 1_000, 1);
    let first = w.deposit_link(&paid, &bob.card, &bob, 1_000);
    assert_eq!(
        w.deposit(&bob, vec![first], vec![alice.license.clone()])
            .credited,
        Amount::new(1_000)
    );
    // Later, bob's wallet deposits the same note with a deposit link signed
    // anew (another time, so another link from the same state).
    w.advance(60);
    let second = w.deposit_link(&paid, &bob.card, &bob, 1_000);
    let receipt = w.deposit(&bob, vec![second], vec![alice.license.clone()]);
    assert_eq!(receipt.credited, Amount::ZERO);
    assert_eq!(receipt.results[0].result, DepositOutcome::AlreadyCredited);
    assert_eq!(w.balance("bob"), Amount::new(1_000));
    // Bob is not named or revoked; a payment to someone else from the
    // same state is an overspend as always.
    assert!(issuer::report(&w.conn, &w.issuer)
        .unwrap()
        .overspends
        .is_empty());
    let carol = w.user("carol", 50, 0);
    let to_carol = pay(&w, &paid, &bob.card, &carol, 1_000, 2);
    let receipt = w.deposit(
        &carol,
        vec![w.deposit_link(&to_carol, &carol.card, &carol, 1_000)],
        vec![alice.license.clone(), bob.license.clone()],
    );
    assert_eq!(receipt.credited, Amount::ZERO);
    assert!(matches!(
        receipt.results[0].result,
        DepositOutcome::Overspent { .. }
    ));
    w.audit_ok();
}

#[test]
fn a_deposit_link_is_good_for_one_account_only() {
    let mut w = World::new();
    let alice = w.user("alice", 30, 1_000);
    let mallory = w.user("mallory", 50, 0);
    let note = w.withdraw(&alice, 1_000).remove(0);
    // Alice's deposit link, intercepted and deposited by mallory.
    let dep = w.deposit_link(&note, &alice.card, &alice, 1_000);
    let receipt = w.deposit(&mallory, vec![dep.clone()], vec![]);
    assert_eq!(receipt.credited, Amount::ZERO);
    assert!(matches!(
        &receipt.results[0].result,
        DepositOutcome::Refused {
            code: ErrorCode::WrongChallenge,
            ..
        }
    ));
    // Nothing was stored for it: alice's own deposit still goes through.
    let receipt = w.deposit(&alice, vec![dep], vec![]);
    assert_eq!(receipt.credited, Amount::new(1_000));
    w.audit_ok();
}

#[test]
fn expired_notes_are_still_deposited() {
    let mut w = World::new();
    let alice = w.user("alice", 30, 1_000);
    let note = w.withdraw(&alice, 1_000).remove(0);
    let dep = w.deposit_link(&note, &alice.card, &alice, 1_000);
    w.advance(400 * 86_400); // the note lives a year
    let receipt = w.deposit(&alice, vec![dep], vec![]);
    assert_eq!(receipt.credited, Amount::new(1_000));
    w.audit_ok();
}

#[test]
fn a_revocation_list_request_gets_the_current_list() {
    let mut w = World::new();
    let asker = card(70);
    let req = Signed::sign(
        mailer::messages::RevocationListRequest {
            currency: Currency::JPY,
            known_version: 0,
        },
        &asker.auth,
    )
    .unwrap();
    let list: mailer::license::RevocationList = w.ask(req.into_envelope()).body();
    assert_eq!(list.version, 0);
    assert!(list.entries.is_empty());
}

#[test]
fn the_mail_handler_is_what_the_watcher_calls() {
    use mailer::imap::{IncomingMail, MailHandler};
    let mut w = World::new();
    let code = w.open_account("alice", 0);
    let env = w.sign(
        mailer::messages::EnrollRequest {
            currency: Currency::JPY,
            code,
        },
        &key(30),
    );
    let raw = w.mail(USER_ADDRESS, vec![env], false);
    let mut handler =
        issuer::IssuerHandler::with_clock(w.issuer.clone(), issuer::Clock::Fixed(w.now));
    let tx = w.conn.transaction().unwrap();
    let d = handler
        .handle(
            &tx,
            &IncomingMail {
                uid: 1,
                key: "k",
                raw: &raw,
            },
        )
        .unwrap();
    tx.commit().unwrap();
    assert_eq!(d, mailer::imap::Disposition::Processed);
    let enrolled: Enrolled = w.new_replies().remove(0).body();
    assert_eq!(enrolled.account, "alice");
    w.audit_ok();
}
