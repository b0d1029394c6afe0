//! The issuer's overspend check: it names the guilty key in hand-built
//! double-spend trees, finds nothing in honest trees, and its proofs verify
//! with public keys alone (and stop verifying when tampered with).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests

use mailer::envelope::{Envelope, Signed};
use mailer::license::CardSecret;
use mailer::money::{Amount, Currency};
use mailer::note::{Link, Note};
use mailer::overspend::{find_overspends, Inserted, NoteTree, OverspendError, OverspendProof};
use mailer::testkit::{card, challenge, pay, TestIssuer};

fn issuer() -> TestIssuer {
    TestIssuer::new(1, Currency::JPY)
}

/// Every link that appears in any of `notes`, deduplicated by id.
fn all_links(notes: &[&Note]) -> Vec<Signed<Link>> {
    let mut seen = std::collections::BTreeMap::new();
    for n in notes {
        for l in &n.links {
            seen.insert(l.id(), l.clone());
        }
    }
    seen.into_values().collect()
}

fn guilty_keys(proofs: &[OverspendProof], iss: &TestIssuer) -> Vec<mailer::crypto::PublicKey> {
    proofs
        .iter()
        .map(|p| p.verify(&iss.key.public()).unwrap().guilty)
        .collect()
}

#[test]
fn two_branches_at_depth_zero() {
    let mut iss = issuer();
    let (a, b, c) = (card(10), card(11), card(12));
    let n = iss.issue(500, &a.keys());
    let to_b = pay(&n, &a, &b.keys(), 500, challenge(1));
    let to_c = pay(&n, &a, &c.keys(), 500, challenge(2));
    let proofs = find_overspends(&n.issuance, &all_links(&[&to_b, &to_c])).unwrap();
    assert_eq!(guilty_keys(&proofs, &iss), vec![a.keys().payment]);
    let o = proofs[0].verify(&iss.key.public()).unwrap();
    assert_eq!(o.held, Amount::new(500));
    assert_eq!(o.spent, 1000);
    assert_eq!(o.state, n.state());
    assert!(proofs[0].path.is_empty());
}

/// A chain a -> k1 -> k2 -> k3 whose last holder pays two people.
fn deep_double_spend(iss: &mut TestIssuer) -> (Vec<Note>, CardSecret) {
    let cards: Vec<CardSecret> = (20..26).map(card).collect();
    let mut n = iss.issue(1000, &cards[0].keys());
    for i in 0..3 {
        n = pay(
            &n,
            &cards[i],
            &cards[i + 1].keys(),
            1000,
            challenge(i as u8),
        );
    }
    let cheat = cards[3].clone();
    let x = pay(&n, &cheat, &cards[4].keys(), 800, challenge(10));
    let y = pay(&n, &cheat, &cards[5].keys(), 800, challenge(11));
    (vec![x, y], cheat)
}

#[test]
fn two_branches_at_depth_three() {
    let mut iss = issuer();
    let (notes, cheat) = deep_double_spend(&mut iss);
    let proofs = find_overspends(&notes[0].issuance, &all_links(&[&notes[0], &notes[1]])).unwrap();
    assert_eq!(guilty_keys(&proofs, &iss), vec![cheat.keys().payment]);
    assert_eq!(proofs[0].path.len(), 3);
    assert_eq!(proofs[0].conflicting.len(), 2);
}

#[test]
fn partial_amounts_that_together_exceed_the_value() {
    let mut iss = issuer();
    let (a, b, c, d) = (card(30), card(31), card(32), card(33));
    let n = iss.issue(500, &a.keys());
    // 200 + 200 = 400 <= 500: honest so far.
    let x = pay(&n, &a, &b.keys(), 200, challenge(1));
    let y = pay(&n, &a, &c.keys(), 200, challenge(2));
    assert!(find_overspends(&n.issuance, &all_links(&[&x, &y]))
        .unwrap()
        .is_empty());
    // A third of 101 takes it to 501.
    let z = pay(&n, &a, &d.keys(), 101, challenge(3));
    let proofs = find_overspends(&n.issuance, &all_links(&[&x, &y, &z])).unwrap();
    assert_eq!(guilty_keys(&proofs, &iss), vec![a.keys().payment]);
    let o = proofs[0].verify(&iss.key.public()).unwrap();
    assert_eq!(o.spent, 501);
    assert_eq!(proofs[0].conflicting.len(), 3);
}

#[test]
fn honest_trees_have_no_overspend() {
    let mut iss = issuer();
    let cards: Vec<CardSecret> = (40..48).map(card).collect();
    let n = iss.issue(1000, &cards[0].keys());
    // A branching tree: 0 pays 1 (400) and 2 (600) = 1000 exactly; 1 pays 3
    // (100) and 4 (300) = 400 exactly; 2 pays 5 (10) leaving change; 5 pays 6.
    let t1 = pay(&n, &cards[0], &cards[1].keys(), 400, challenge(1));
    let t2 = pay(&n, &cards[0], &cards[2].keys(), 600, challenge(2));
    let t3 = pay(&t1, &cards[1], &cards[3].keys(), 100, challenge(3));
    let t4 = pay(&t1, &cards[1], &cards[4].keys(), 300, challenge(4));
    let t5 = pay(&t2, &cards[2], &cards[5].keys(), 10, challenge(5));
    let t6 = pay(&t5, &cards[5], &cards[6].keys(), 10, challenge(6));
    let links = all_links(&[&t3, &t4, &t6]);
    assert_eq!(links.len(), 6);
    assert!(find_overspends(&n.issuance, &links).unwrap().is_empty());
    // The same link seen twice (deposited twice) is not an overspend.
    let mut twice = links.clone();
    twice.extend(links.iter().cloned());
    assert!(find_overspends(&n.issuance, &twice).unwrap().is_empty());
}

#[test]
fn order_of_arrival_does_not_matter() {
    let mut iss = issuer();
    let (notes, cheat) = deep_double_spend(&mut iss);
    let mut links = all_links(&[&notes[0], &notes[1]]);
    links.reverse(); // children before parents
    let proofs = find_overspends(&notes[0].issuance, &links).unwrap();
    assert_eq!(guilty_keys(&proofs, &iss), vec![cheat.keys().payment]);
    links.rotate_left(2);
    let again = find_overspends(&notes[0].issuance, &links).unwrap();
    assert_eq!(again, proofs, "the proof is chosen deterministically");
}

#[test]
fn two_cheaters_in_one_tree_are_both_named() {
    let mut iss = issuer();
    let (a, b, c, d) = (card(50), card(51), card(52), card(53));
    let n = iss.issue(100, &a.keys());
    let ab = pay(&n, &a, &b.keys(), 100, challenge(1));
    let ac = pay(&n, &a, &c.keys(), 100, challenge(2));
    let bd1 = pay(&ab, &b, &d.keys(), 100, challenge(3));
    let bd2 = pay(&ab, &b, &c.keys(), 60, challenge(4));
    let proofs = find_overspends(&n.issuance, &all_links(&[&ac, &bd1, &bd2])).unwrap();
    let mut guilty = guilty_keys(&proofs, &iss);
    guilty.sort();
    let mut expected = vec![a.keys().payment, b.keys().payment];
    expected.sort();
    assert_eq!(guilty, expected);
}

#[test]
fn incremental_tree_reports_the_overspend_when_it_happens() {
    let mut iss = issuer();
    let (a, b, c) = (card(60), card(61), card(62));
    let n = iss.issue(500, &a.keys());
    let x = pay(&n, &a, &b.keys(), 300, challenge(1));
    let y = pay(&n, &a, &c.keys(), 300, challenge(2));
    let mut tree = NoteTree::new(n.issuance.clone()).unwrap();
    assert_eq!(tree.insert(&x.links[0]).unwrap(), Inserted::New);
    assert_eq!(tree.insert(&x.links[0]).unwrap(), Inserted::Duplicate);
    match tree.insert(&y.links[0]).unwrap() {
        Inserted::Overspend(p) => {
            assert_eq!(
                p.verify(&iss.key.public()).unwrap().guilty,
                a.keys().payment
            )
        }
        other => panic!("expected an overspend, got {other:?}"),
    }
    assert_eq!(tree.len(), 3);
}

#[test]
fn tree_refuses_invalid_links() {
    let mut iss = issuer();
    let (a, b, c) = (card(70), card(71), card(72));
    let n = iss.issue(500, &a.keys());
    let other = iss.issue(500, &a.keys());
    let mut tree = NoteTree::new(n.issuance.clone()).unwrap();
    // A link of another note: its parent is unknown here.
    let foreign = pay(&other, &a, &b.keys(), 10, challenge(1));
    assert!(matches!(
        tree.insert(&foreign.links[0]),
        Err(OverspendError::UnknownParent { .. })
    ));
    assert!(matches!(
        find_overspends(&n.issuance, &foreign.links),
        Err(OverspendError::UnknownParent { .. })
    ));
    // A link signed by someone who does not hold the parent.
    let forged = Signed::sign(
        Link {
            parent: n.state(),
            payee: c.keys().payment,
            amount: Amount::new(10),
            challenge: challenge(2),
            signed_at: mailer::testkit::NOW,
        },
        &b.payment,
    )
    .unwrap();
    assert!(matches!(
        tree.insert(&forged),
        Err(OverspendError::WrongSigner { .. })
    ));
    // A link with a broken signature.
    let good = pay(&n, &a, &b.keys(), 10, challenge(3));
    let e = good.links[0].envelope();
    let mut sig = *e.signature();
    sig.0[5] ^= 2;
    let bad = Envelope::from_parts(e.kind().into(), e.body().to_vec(), *e.signer(), sig).unwrap();
    assert!(matches!(
        tree.insert(&Signed::from_envelope(bad).unwrap()),
        Err(OverspendError::Signature { .. })
    ));
}

#[test]
fn tampered_proofs_do_not_verify() {
    let mut iss = issuer();
    let (notes, _) = deep_double_spend(&mut iss);
    let proof = find_overspends(&notes[0].issuance, &all_links(&[&notes[0], &notes[1]]))
        .unwrap()
        .remove(0);
    let pk = iss.key.public();
    proof.verify(&pk).unwrap();
    // Another issuer's key.
    assert!(matches!(
        proof.verify(&mailer::testkit::key(2).public()),
        Err(OverspendError::WrongIssuer { .. })
    ));
    // One conflicting link only.
    let mut p = proof.clone();
    p.conflicting.truncate(1);
    assert_eq!(p.verify(&pk), Err(OverspendError::ConflictCount));
    // The same link twice.
    let mut p = proof.clone();
    p.conflicting[1] = p.conflicting[0].clone();
    assert_eq!(p.verify(&pk), Err(OverspendError::DuplicateConflict));
    // A path cut short: the conflicting links no longer leave its last state.
    let mut p = proof.clone();
    p.path.pop();
    assert!(p.verify(&pk).is_err());
    // A conflicting link with its amount changed (signature breaks).
    let mut p = proof.clone();
    let e = p.conflicting[0].envelope().clone();
    let mut body = e.body().to_vec();
    let n = body.len();
    body[n - 1] ^= 1;
    let t = Envelope::from_parts(e.kind().into(), body, *e.signer(), *e.signature()).unwrap();
    p.conflicting[0] = Signed::from_envelope(t).unwrap();
    assert!(matches!(
        p.verify(&pk),
        Err(OverspendError::Signature { .. })
    ));
    // An honest pair of links presented as a proof.
    let mut iss2 = issuer();
    let (a, b, c) = (card(80), card(81), card(82));
    let n = iss2.issue(500, &a.keys());
    let x = pay(&n, &a, &b.keys(), 200, challenge(1));
    let y = pay(&n, &a, &c.keys(), 300, challenge(2));
    let fake = OverspendProof {
        issuance: n.issuance.clone(),
        path: vec![],
        conflicting: vec![x.links[0].clone(), y.links[0].clone()],
    };
    assert_eq!(
        fake.verify(&iss2.key.public()),
        Err(OverspendError::NotAnOverspend {
            held: 500,
            spent: 500
        })
    );
}

#[test]
fn proofs_travel_as_cbor_and_still_verify() {
    let mut iss = issuer();
    let (notes, cheat) = deep_double_spend(&mut iss);
    let proof = find_overspends(&notes[0].issuance, &all_links(&[&notes[0], &notes[1]]))
        .unwrap()
        .remove(0);
    // The id does not depend on the order the conflicting links are listed.
    let mut reordered = proof.clone();
    reordered.conflicting.reverse();
    assert_eq!(reordered.id(), proof.id());
    reordered.verify(&iss.key.public()).unwrap();
    let bytes = mailer::cbor::to_vec(&proof).unwrap();
    let back: OverspendProof = mailer::cbor::from_slice(&bytes, 1 << 20).unwrap();
    assert_eq!(back.id(), proof.id());
    assert_eq!(
        back.verify(&iss.key.public()).unwrap().guilty,
        cheat.keys().payment
    );
}
