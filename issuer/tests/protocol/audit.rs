//! The audit is green after honest work (refunds included) and red after
//! the database is changed behind the issuer's back.

use mailer::messages::DepositOutcome;
use mailer::messages::ErrorCode;
use mailer::money::Amount;

use crate::common::*;
use issuer::IssuerError;

/// Deposits, a partial payment, an overspend: something of everything.
fn busy_world() -> World {
    let mut w = World::new();
    let alice = w.user("alice", 30, 5_000);
    let bob = w.user("bob", 40, 0);
    let carol = w.user("carol", 50, 0);
    let notes = w.withdraw(&alice, 3_000);
    let to_bob = pay(&w, &notes[0], &alice.card, &bob, 600, 1);
    let to_carol = pay(&w, &notes[0], &alice.card, &carol, 600, 2);
    let honest = pay(&w, &notes[1], &alice.card, &carol, 1_000, 3);
    w.deposit(
        &bob,
        vec![w.deposit_link(&to_bob, &bob.card, &bob, 600)],
        vec![],
    );
    w.advance(60);
    w.deposit(
        &carol,
        vec![
            w.deposit_link(&to_carol, &carol.card, &carol, 600),
            w.deposit_link(&honest, &carol.card, &carol, 1_000),
        ],
        vec![],
    );
    w.audit_ok();
    let report = issuer::audit(&w.conn, &w.issuer).unwrap();
    assert_eq!(report.issued, 3_000);
    assert_eq!(report.credited, 1_600);
    assert_eq!(report.outstanding, 1_400);
    assert_eq!(report.balances, 2_000 + 1_600);
    w
}

fn audit_fails(w: &World, sql: &str, expect: &str) {
    w.conn.execute_batch(sql).unwrap();
    let report = issuer::audit(&w.conn, &w.issuer).unwrap();
    assert!(!report.is_ok(), "{sql}: the audit should fail");
    assert!(
        report.problems.iter().any(|p| p.contains(expect)),
        "{sql}: expected a problem about {expect:?}, got {:#?}",
        report.problems
    );
}

#[test]
fn a_balance_changed_by_sql() {
    let w = busy_world();
    audit_fails(
        &w,
        "UPDATE accounts SET balance = balance + 1000 WHERE name = 'bob'",
        "ledger adds up",
    );
}

#[test]
fn a_credit_removed() {
    let w = busy_world();
    audit_fails(
        &w,
        "DELETE FROM credits WHERE amount = 600",
        "value does not add up",
    );
}

#[test]
fn a_state_made_good_or_bad() {
    let w = busy_world();
    audit_fails(&w, "UPDATE states SET good = 1", "backed");
    let w = busy_world();
    audit_fails(
        &w,
        "UPDATE states SET good = 0 WHERE parent IS NOT NULL AND value = 1000",
        "value does not add up",
    );
}

#[test]
fn an_issued_note_changed() {
    let w = busy_world();
    audit_fails(
        &w,
        "UPDATE notes SET value = value + 1 WHERE value = 1000 AND rowid = (SELECT MIN(rowid) FROM notes)",
        "issu",
    );
}

#[test]
fn an_overspender_unrevoked() {
    let w = busy_world();
    audit_fails(&w, "DELETE FROM revocations", "not revoked");
}

#[test]
fn a_proof_that_does_not_verify() {
    let w = busy_world();
    // Swap the proof for the first one's with its conflicting links cut
    // to one: it decodes but proves nothing.
    let row = issuer::store::overspends(&w.conn).unwrap().remove(0);
    let mut proof = row.proof.clone();
    proof.conflicting.truncate(1);
    let bytes = mailer::cbor::to_vec(&proof).unwrap();
    w.conn
        .execute("UPDATE overspends SET proof = ?1", [bytes])
        .unwrap();
    let report = issuer::audit(&w.conn, &w.issuer).unwrap();
    assert!(report
        .problems
        .iter()
        .any(|p| p.contains("does not verify")));
}

#[test]
fn refunds_pay_what_an_honest_revoked_card_held_once() {
    let mut w = World::new();
    let alice = w.user("alice", 30, 2_000);
    let bob = w.user("bob", 40, 0);
    let carol = w.user("carol", 50, 0);
    let notes = w.withdraw(&alice, 1_500); // 1000 + 500
    let to_bob = pay(&w, &notes[0], &alice.card, &bob, 300, 1);
    // Signed before the card is lost, deposited after the refund.
    let to_carol = pay(&w, &notes[1], &alice.card, &carol, 500, 2);
    w.deposit(
        &bob,
        vec![w.deposit_link(&to_bob, &bob.card, &bob, 300)],
        vec![],
    );
    // Refunds are for revoked cards only.
    assert!(matches!(
        issuer::operator::refund(
            &mut w.conn,
            &w.issuer,
            &alice.payment_key(),
            "alice",
            &[],
            w.now
        ),
        Err(IssuerError::NotRevoked(_))
    ));
    w.advance(60);
    issuer::operator::revoke_card(&mut w.conn, &alice.payment_key(), "lost", w.now).unwrap();
    let r = issuer::operator::refund(
        &mut w.conn,
        &w.issuer,
        &alice.payment_key(),
        "alice",
        &[],
        w.now,
    )
    .unwrap();
    assert_eq!(r.amount, Amount::new(700 + 500));
    assert_eq!(r.states, 2);
    assert_eq!(w.balance("alice"), Amount::new(500 + 1_200));
    w.audit_ok();
    // Not twice.
    assert!(matches!(
        issuer::operator::refund(
            &mut w.conn,
            &w.issuer,
            &alice.payment_key(),
            "alice",
            &[],
            w.now
        ),
        Err(IssuerError::NothingToRefund(_))
    ));
    // The payment alice made before, out of refunded value, is not
    // credited: that value went to the refund.
    let r = w.deposit(
        &carol,
        vec![w.deposit_link(&to_carol, &carol.card, &carol, 500)],
        vec![],
    );
    match &r.results[0].result {
        DepositOutcome::Refused { code, reason } => {
            assert_eq!(*code, ErrorCode::Overspent);
            assert!(reason.contains("refunded"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    w.audit_ok();
}

#[test]
fn a_refund_can_use_the_notes_the_card_holds() {
    let mut w = World::new();
    let alice = w.user("alice", 30, 1_000);
    let bob = w.user("bob", 40, 0);
    let note = w.withdraw(&alice, 1_000).remove(0);
    // Bob holds 400 the issuer has not seen; his card is stolen.
    let to_bob = pay(&w, &note, &alice.card, &bob, 400, 1);
    w.advance(60);
    issuer::operator::revoke_card(&mut w.conn, &bob.payment_key(), "stolen", w.now).unwrap();
    // A note not held by bob is refused.
    assert!(matches!(
        issuer::operator::refund(
            &mut w.conn,
            &w.issuer,
            &bob.payment_key(),
            "bob",
            std::slice::from_ref(&note),
            w.now
        ),
        Err(IssuerError::BadRefundNote { index: 0, .. })
    ));
    let r = issuer::operator::refund(
        &mut w.conn,
        &w.issuer,
        &bob.payment_key(),
        "bob",
        &[to_bob],
        w.now,
    )
    .unwrap();
    assert_eq!(r.amount, Amount::new(400));
    assert_eq!(w.balance("bob"), Amount::new(400));
    w.audit_ok();
    // Alice still deposits the 600 she kept.
    let rest = w.deposit_link(&note, &alice.card, &alice, 600);
    assert_eq!(
        w.deposit(&alice, vec![rest], vec![]).credited,
        Amount::new(600)
    );
    w.audit_ok();
}
