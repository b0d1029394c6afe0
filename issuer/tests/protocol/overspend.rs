//! Overspending: found when the second branch comes back, proved with the
//! issuer's key alone, the guilty card named and revoked, and its later
//! payments refused.

use mailer::envelope::Signed;
use mailer::license::{RevocationList, RevocationReason};
use mailer::messages::{DepositOutcome, DepositReceipt, ErrorCode, RevocationListRequest};
use mailer::money::{Amount, Currency};
use mailer::overspend::{Overspend, OverspendProof};
use mailer::testkit::card;

use crate::common::*;

fn proof_of(r: &DepositReceipt, i: usize) -> OverspendProof {
    match &r.results[i].result {
        DepositOutcome::Overspent { proof } => (**proof).clone(),
        other => panic!("note {i}: expected an overspend, got {other:?}"),
    }
}

fn check(w: &World, p: &OverspendProof) -> Overspend {
    p.verify(&w.issuer_key())
        .expect("the proof verifies with the issuer key alone")
}

fn current_list(w: &mut World) -> RevocationList {
    let req = Signed::sign(
        RevocationListRequest {
            currency: Currency::JPY,
            known_version: 0,
        },
        &card(99).auth,
    )
    .unwrap();
    w.ask(req.into_envelope()).body()
}

#[test]
fn two_branches_at_depth_zero_name_the_payer() {
    let mut w = World::new();
    let alice = w.user("alice", 30, 5_000);
    let bob = w.user("bob", 40, 0);
    let carol = w.user("carol", 50, 0);
    let notes = w.withdraw(&alice, 2_000);
    let (note, spare) = (notes[0].clone(), notes[1].clone());
    // Alice pays the whole note to bob, and again to carol.
    let to_bob = pay(&w, &note, &alice.card, &bob, 1_000, 1);
    let to_carol = pay(&w, &note, &alice.card, &carol, 1_000, 2);
    let r = w.deposit(
        &bob,
        vec![w.deposit_link(&to_bob, &bob.card, &bob, 1_000)],
        vec![alice.license.clone(), bob.license.clone()],
    );
    assert_eq!(r.results[0].result, DepositOutcome::Credited);
    w.advance(60);
    let r = w.deposit(
        &carol,
        vec![w.deposit_link(&to_carol, &carol.card, &carol, 1_000)],
        vec![alice.license.clone(), carol.license.clone()],
    );
    assert_eq!(r.credited, Amount::ZERO);
    let proof = proof_of(&r, 0);
    let o = check(&w, &proof);
    assert_eq!(o.guilty, alice.payment_key());
    assert_eq!(o.state, note.id());
    assert_eq!(o.held, Amount::new(1_000));
    assert_eq!(o.spent, 2_000);
    assert!(proof.path.is_empty());
    assert_eq!(proof.conflicting.len(), 2);
    assert_eq!(w.balance("bob"), Amount::new(1_000));
    assert_eq!(w.balance("carol"), Amount::ZERO);

    // Alice is revoked, in the list, with the proof's id.
    let list = current_list(&mut w);
    assert_eq!(list.version, 1);
    assert_eq!(list.entries.len(), 1);
    assert_eq!(list.entries[0].payment_key, alice.payment_key());
    assert_eq!(
        list.entries[0].reason,
        RevocationReason::Overspend { proof: proof.id() }
    );
    let report = issuer::report(&w.conn, &w.issuer).unwrap();
    assert_eq!(report.guilty(), vec![alice.payment_key()]);
    assert_eq!(report.overspends[0].record.proof_id, proof.id());
    assert!(report.overspends[0].check.is_ok());
    w.audit_ok();

    // Alice's later payment is refused, whoever deposits it.
    w.advance(60);
    let late = pay(&w, &spare, &alice.card, &bob, 1_000, 3);
    let r = w.deposit(
        &bob,
        vec![w.deposit_link(&late, &bob.card, &bob, 1_000)],
        vec![],
    );
    assert!(matches!(
        &r.results[0].result,
        DepositOutcome::Refused {
            code: ErrorCode::Revoked,
            ..
        }
    ));
    // She cannot deposit her own notes, get a new license, or withdraw.
    let own = w.deposit_link(&spare, &alice.card, &alice, 1_000);
    let r = w.deposit(&alice, vec![own], vec![]);
    assert!(matches!(
        &r.results[0].result,
        DepositOutcome::Refused {
            code: ErrorCode::Revoked,
            ..
        }
    ));
    let req = mailer::messages::LicenseRequest::new(&alice.card, Currency::JPY, w.now).unwrap();
    assert_eq!(w.ask(req.into_envelope()).code(), ErrorCode::Revoked);
    let env = w.withdraw_request(&alice, 100);
    assert_eq!(w.ask(env).code(), ErrorCode::Revoked);
    assert_eq!(w.balance("alice"), Amount::new(3_000));
    w.audit_ok();
}

#[test]
fn payments_made_before_the_revocation_stay_good() {
    let mut w = World::new();
    let alice = w.user("alice", 30, 5_000);
    let bob = w.user("bob", 40, 0);
    let carol = w.user("carol", 50, 0);
    let notes = w.withdraw(&alice, 2_000);
    // Honest payment out of the second note, before she is caught.
    let honest = pay(&w, &notes[1], &alice.card, &bob, 1_000, 9);
    let to_bob = pay(&w, &notes[0], &alice.card, &bob, 1_000, 1);
    let to_carol = pay(&w, &notes[0], &alice.card, &carol, 1_000, 2);
    w.deposit(
        &bob,
        vec![w.deposit_link(&to_bob, &bob.card, &bob, 1_000)],
        vec![],
    );
    w.advance(60);
    let r = w.deposit(
        &carol,
        vec![w.deposit_link(&to_carol, &carol.card, &carol, 1_000)],
        vec![],
    );
    check(&w, &proof_of(&r, 0));
    w.advance(60);
    let r = w.deposit(
        &bob,
        vec![w.deposit_link(&honest, &bob.card, &bob, 1_000)],
        vec![],
    );
    assert_eq!(r.results[0].result, DepositOutcome::Credited);
    assert_eq!(w.balance("bob"), Amount::new(2_000));
    w.audit_ok();
}

#[test]
fn a_deep_branch_names_the_holder_who_overspent() {
    let mut w = World::new();
    let alice = w.user("alice", 30, 1_000);
    let bob = w.user("bob", 40, 0);
    let carol = w.user("carol", 50, 0);
    let dave = w.user("dave", 60, 0);
    let note = w.withdraw(&alice, 1_000).remove(0);
    // alice -> bob -> carol -> dave, and carol also -> bob: carol, at depth
    // 2, pays the same 1000 twice.
    let b = pay(&w, &note, &alice.card, &bob, 1_000, 1);
    let c = pay(&w, &b, &bob.card, &carol, 1_000, 2);
    let d = pay(&w, &c, &carol.card, &dave, 1_000, 3);
    let b2 = pay(&w, &c, &carol.card, &bob, 1_000, 4);
    let r = w.deposit(
        &dave,
        vec![w.deposit_link(&d, &dave.card, &dave, 1_000)],
        vec![],
    );
    assert_eq!(r.results[0].result, DepositOutcome::Credited);
    let r = w.deposit(
        &bob,
        vec![w.deposit_link(&b2, &bob.card, &bob, 1_000)],
        vec![],
    );
    let proof = proof_of(&r, 0);
    let o = check(&w, &proof);
    assert_eq!(o.guilty, carol.payment_key());
    assert_eq!(o.state, c.state());
    assert_eq!(proof.path.len(), 2);
    assert_eq!(proof.path, c.links);
    assert_eq!(w.balance("bob"), Amount::ZERO);
    assert_eq!(w.balance("dave"), Amount::new(1_000));
    // Only carol is revoked: alice and bob paid honestly.
    let report = issuer::report(&w.conn, &w.issuer).unwrap();
    assert_eq!(report.guilty(), vec![carol.payment_key()]);
    assert_eq!(report.revocations.len(), 1);
    w.audit_ok();
}

#[test]
fn partial_payments_that_add_up_to_more_than_the_value() {
    let mut w = World::new();
    let alice = w.user("alice", 30, 3_000);
    let bob = w.user("bob", 40, 0);
    let carol = w.user("carol", 50, 0);
    let dave = w.user("dave", 60, 0);
    let notes = w.withdraw(&alice, 2_000);
    // Honest: 600 + 400 out of a 1000 note.
    let ok1 = pay(&w, &notes[1], &alice.card, &bob, 600, 11);
    let ok2 = pay(&w, &notes[1], &alice.card, &carol, 400, 12);
    // Overspent: 600 + 600 (+ 300 later) out of the other.
    let x = pay(&w, &notes[0], &alice.card, &bob, 600, 1);
    let y = pay(&w, &notes[0], &alice.card, &carol, 600, 2);
    let z = pay(&w, &notes[0], &alice.card, &dave, 300, 3);
    let r = w.deposit(
        &bob,
        vec![
            w.deposit_link(&ok1, &bob.card, &bob, 600),
            w.deposit_link(&x, &bob.card, &bob, 600),
        ],
        vec![],
    );
    assert_eq!(r.credited, Amount::new(1_200));
    // Alice is caught (and revoked) after she signed all three.
    w.advance(10);
    let r = w.deposit(
        &carol,
        vec![
            w.deposit_link(&ok2, &carol.card, &carol, 400),
            // Carol passes on only part of what she got: still not backed.
            w.deposit_link(&y, &carol.card, &carol, 250),
        ],
        vec![],
    );
    assert_eq!(r.results[0].result, DepositOutcome::Credited);
    let proof = proof_of(&r, 1);
    let o = check(&w, &proof);
    assert_eq!(o.guilty, alice.payment_key());
    assert_eq!((o.held, o.spent), (Amount::new(1_000), 1_200));
    assert_eq!(w.balance("carol"), Amount::new(400));
    // The third branch gets the same proof: the state was overspent by then.
    let r = w.deposit(
        &dave,
        vec![w.deposit_link(&z, &dave.card, &dave, 300)],
        vec![],
    );
    assert_eq!(proof_of(&r, 0), proof);
    assert_eq!(
        issuer::report(&w.conn, &w.issuer).unwrap().overspends.len(),
        1
    );
    w.audit_ok();
}

#[test]
fn both_branches_in_one_deposit() {
    let mut w = World::new();
    let alice = w.user("alice", 30, 1_000);
    let bob = w.user("bob", 40, 0);
    let note = w.withdraw(&alice, 1_000).remove(0);
    let x = pay(&w, &note, &alice.card, &bob, 1_000, 1);
    let y = pay(&w, &note, &alice.card, &bob, 1_000, 2);
    let r = w.deposit(
        &bob,
        vec![
            w.deposit_link(&x, &bob.card, &bob, 1_000),
            w.deposit_link(&y, &bob.card, &bob, 1_000),
        ],
        vec![],
    );
    assert_eq!(r.results[0].result, DepositOutcome::Credited);
    assert_eq!(check(&w, &proof_of(&r, 1)).guilty, alice.payment_key());
    assert_eq!(r.credited, Amount::new(1_000));
    w.audit_ok();
}

#[test]
fn value_received_from_an_overspent_state_is_not_backed() {
    let mut w = World::new();
    let alice = w.user("alice", 30, 1_000);
    let bob = w.user("bob", 40, 0);
    let carol = w.user("carol", 50, 0);
    let dave = w.user("dave", 60, 0);
    let note = w.withdraw(&alice, 1_000).remove(0);
    let to_bob = pay(&w, &note, &alice.card, &bob, 1_000, 1);
    let to_carol = pay(&w, &note, &alice.card, &carol, 1_000, 2);
    w.deposit(
        &bob,
        vec![w.deposit_link(&to_bob, &bob.card, &bob, 1_000)],
        vec![],
    );
    // Carol passes the bad note on to dave before anyone knows.
    let to_dave = pay(&w, &to_carol, &carol.card, &dave, 1_000, 3);
    let r = w.deposit(
        &dave,
        vec![w.deposit_link(&to_dave, &dave.card, &dave, 1_000)],
        vec![],
    );
    let o = check(&w, &proof_of(&r, 0));
    assert_eq!(o.guilty, alice.payment_key(), "alice, not carol, overspent");
    // Carol, who was honest, is not revoked, and can still be paid.
    let report = issuer::report(&w.conn, &w.issuer).unwrap();
    assert_eq!(report.guilty(), vec![alice.payment_key()]);
    assert_eq!(w.balance("dave"), Amount::ZERO);
    w.audit_ok();
}
