//! Offline verification of notes: each check refuses what it must, with the
//! error that names it, and honest chains (including partial payments) pass.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests

use mailer::crypto::Challenge;
use mailer::envelope::{Envelope, Signed};
use mailer::license::{LicenseBook, Revocation, RevocationList, RevocationReason, Revocations};
use mailer::limits::MAX_CHAIN;
use mailer::money::{Amount, Currency};
use mailer::note::{
    verify_signatures, Expect, Issuance, Link, Note, NoteError, NotePolicy, PayError,
    SignatureCheck,
};
use mailer::testkit::{card, challenge, pay, verify_paid, TestIssuer, NOW};

struct World {
    jpy: TestIssuer,
    alice: mailer::license::CardSecret,
    bob: mailer::license::CardSecret,
    carol: mailer::license::CardSecret,
}

fn world() -> World {
    let mut jpy = TestIssuer::new(1, Currency::JPY);
    let (alice, bob, carol) = (card(10), card(11), card(12));
    for c in [&alice, &bob, &carol] {
        jpy.license(&c.keys());
    }
    World {
        jpy,
        alice,
        bob,
        carol,
    }
}

fn policy<'a>(
    w: &'a World,
    issuer: &'a mailer::crypto::PublicKey,
    book: &'a LicenseBook,
    rev: &'a Revocations,
    expect: Expect,
) -> NotePolicy<'a> {
    NotePolicy {
        issuer,
        currency: w.jpy.currency,
        now: NOW,
        licenses: book,
        revocations: rev,
        expect,
        accept_expired: false,
    }
}

#[test]
fn honest_chain_with_partial_payments_verifies() {
    let mut w = world();
    let n = w.jpy.issue(500, &w.alice.keys());
    // Alice pays Bob 200 of her 500 (partial), Bob pays Carol 150 of his 200.
    let to_bob = pay(&n, &w.alice, &w.bob.keys(), 200, challenge(1));
    let to_carol = pay(&to_bob, &w.bob, &w.carol.keys(), 150, challenge(2));
    let view = verify_paid(&w.jpy, &to_carol, &w.carol.keys(), challenge(2)).unwrap();
    assert_eq!(view.value, Amount::new(500));
    assert_eq!(view.states.len(), 3);
    assert_eq!(view.current().holder, w.carol.keys().payment);
    assert_eq!(view.current().value, Amount::new(150));
    assert_eq!(view.current().id, to_carol.state());
    // Alice may still spend her remaining 300 from the same state.
    let rest = pay(&n, &w.alice, &w.carol.keys(), 300, challenge(3));
    verify_paid(&w.jpy, &rest, &w.carol.keys(), challenge(3)).unwrap();
}

#[test]
fn fresh_and_held_expectations() {
    let mut w = world();
    let n = w.jpy.issue(1000, &w.alice.keys());
    let pk = w.jpy.key.public();
    let book = w.jpy.book();
    let none = Revocations::none();
    let alice = w.alice.keys().payment;
    n.verify(&policy(
        &w,
        &pk,
        &book,
        &none,
        Expect::Issued { holder: alice },
    ))
    .unwrap();
    n.verify(&policy(
        &w,
        &pk,
        &book,
        &none,
        Expect::Held { holder: alice },
    ))
    .unwrap();
    let bob = w.bob.keys().payment;
    assert!(matches!(
        n.verify(&policy(
            &w,
            &pk,
            &book,
            &none,
            Expect::Issued { holder: bob }
        )),
        Err(NoteError::WrongHolder { .. })
    ));
    let paid = pay(&n, &w.alice, &w.bob.keys(), 1000, challenge(1));
    assert_eq!(
        paid.verify(&policy(
            &w,
            &pk,
            &book,
            &none,
            Expect::Issued { holder: bob }
        )),
        Err(NoteError::NotFresh(1))
    );
    assert_eq!(
        n.verify(&policy(
            &w,
            &pk,
            &book,
            &none,
            Expect::Paid {
                payee: alice,
                challenge: challenge(1)
            }
        )),
        Err(NoteError::NoPayment)
    );
}

#[test]
fn wrong_signer_is_refused() {
    let mut w = world();
    let n = w.jpy.issue(500, &w.alice.keys());
    // Carol, who does not hold the note, signs a link out of Alice's state.
    let forged = Signed::sign(
        Link {
            parent: n.state(),
            payee: w.bob.keys().payment,
            amount: Amount::new(500),
            challenge: challenge(1),
            signed_at: NOW,
        },
        &w.carol.payment,
    )
    .unwrap();
    let note = Note {
        issuance: n.issuance.clone(),
        links: vec![forged],
    };
    assert!(matches!(
        verify_paid(&w.jpy, &note, &w.bob.keys(), challenge(1)),
        Err(NoteError::WrongSigner { index: 0, .. })
    ));
    // And `pay` refuses to sign for a note the key does not hold.
    assert_eq!(
        n.pay(
            &w.carol.payment,
            w.bob.keys().payment,
            Amount::new(1),
            challenge(1),
            NOW
        ),
        Err(PayError::NotHolder)
    );
}

#[test]
fn wrong_amounts_are_refused() {
    let mut w = world();
    let n = w.jpy.issue(500, &w.alice.keys());
    let to_bob = pay(&n, &w.alice, &w.bob.keys(), 200, challenge(1));
    // Bob signs a link for more than the 200 he holds.
    let over = Signed::sign(
        Link {
            parent: to_bob.state(),
            payee: w.carol.keys().payment,
            amount: Amount::new(201),
            challenge: challenge(2),
            signed_at: NOW,
        },
        &w.bob.payment,
    )
    .unwrap();
    let mut note = to_bob.clone();
    note.links.push(over);
    assert_eq!(
        verify_paid(&w.jpy, &note, &w.carol.keys(), challenge(2)),
        Err(NoteError::AmountExceedsHeld {
            index: 1,
            amount: 201,
            held: 200
        })
    );
    // A zero link.
    let zero = Signed::sign(
        Link {
            parent: to_bob.state(),
            payee: w.carol.keys().payment,
            amount: Amount::ZERO,
            challenge: challenge(2),
            signed_at: NOW,
        },
        &w.bob.payment,
    )
    .unwrap();
    let mut note = to_bob.clone();
    note.links.push(zero);
    assert_eq!(
        verify_paid(&w.jpy, &note, &w.carol.keys(), challenge(2)),
        Err(NoteError::ZeroAmount { index: 1 })
    );
    // `pay` itself refuses both.
    assert!(matches!(
        to_bob.pay(
            &w.bob.payment,
            w.carol.keys().payment,
            Amount::new(201),
            challenge(2),
            NOW
        ),
        Err(PayError::ExceedsHeld { .. })
    ));
    assert_eq!(
        to_bob.pay(
            &w.bob.payment,
            w.carol.keys().payment,
            Amount::ZERO,
            challenge(2),
            NOW
        ),
        Err(PayError::Zero)
    );
}

#[test]
fn over_long_chain_is_refused() {
    let mut w = world();
    let cards: Vec<_> = (0..=MAX_CHAIN as u8 + 1).map(|i| card(40 + i)).collect();
    for c in &cards {
        w.jpy.license(&c.keys());
    }
    let mut note = w.jpy.issue(1000, &cards[0].keys());
    for i in 0..=MAX_CHAIN {
        note = pay(
            &note,
            &cards[i],
            &cards[i + 1].keys(),
            1000,
            challenge(i as u8),
        );
    }
    assert_eq!(note.links.len(), MAX_CHAIN + 1);
    let last = cards[MAX_CHAIN + 1].keys();
    assert_eq!(
        verify_paid(&w.jpy, &note, &last, challenge(MAX_CHAIN as u8)),
        Err(NoteError::ChainTooLong {
            len: MAX_CHAIN + 1,
            max: MAX_CHAIN
        })
    );
    // Exactly at the limit is fine.
    note.links.pop();
    verify_paid(
        &w.jpy,
        &note,
        &cards[MAX_CHAIN].keys(),
        challenge(MAX_CHAIN as u8 - 1),
    )
    .unwrap();
}

#[test]
fn wrong_currency_and_wrong_issuer_are_refused() {
    let w = world();
    let mut usd = TestIssuer::new(2, Currency::USD);
    usd.license(&w.alice.keys());
    usd.license(&w.bob.keys());
    let n = usd.issue(100, &w.alice.keys());
    let paid = pay(&n, &w.alice, &w.bob.keys(), 100, challenge(1));
    // Checked against the JPY issuer: not its note.
    assert!(matches!(
        verify_paid(&w.jpy, &paid, &w.bob.keys(), challenge(1)),
        Err(NoteError::UnknownIssuer { .. })
    ));
    // The right issuer's key, but the payee expected JPY.
    let pk = usd.key.public();
    let book = usd.book();
    let none = Revocations::none();
    let p = NotePolicy {
        issuer: &pk,
        currency: Currency::JPY,
        now: NOW,
        licenses: &book,
        revocations: &none,
        expect: Expect::Paid {
            payee: w.bob.keys().payment,
            challenge: challenge(1),
        },
        accept_expired: false,
    };
    assert_eq!(
        paid.verify(&p),
        Err(NoteError::WrongCurrency {
            expected: Currency::JPY,
            found: Currency::USD
        })
    );
}

#[test]
fn expired_and_future_notes_are_refused() {
    let mut w = world();
    let n = w.jpy.issue(500, &w.alice.keys());
    let paid = pay(&n, &w.alice, &w.bob.keys(), 500, challenge(1));
    let pk = w.jpy.key.public();
    let book = w.jpy.book();
    let none = Revocations::none();
    let expires = n.issuance.unverified().expires_at;
    let mut p = policy(
        &w,
        &pk,
        &book,
        &none,
        Expect::Paid {
            payee: w.bob.keys().payment,
            challenge: challenge(1),
        },
    );
    p.now = expires.saturating_add_secs(1);
    assert!(matches!(paid.verify(&p), Err(NoteError::Expired { .. })));
    p.now = expires;
    paid.verify(&p).unwrap();
    // A link dated after expiry (written by a payer with a wrong clock).
    let late = n
        .pay(
            &w.alice.payment,
            w.bob.keys().payment,
            Amount::new(500),
            challenge(1),
            expires.saturating_add_secs(10),
        )
        .unwrap();
    assert_eq!(
        late.verify(&p),
        Err(NoteError::SignedAfterExpiry { index: 0 })
    );
    // A link dated far in the future.
    let future = n
        .pay(
            &w.alice.payment,
            w.bob.keys().payment,
            Amount::new(500),
            challenge(1),
            NOW.saturating_add_secs(86_400),
        )
        .unwrap();
    assert!(matches!(
        verify_paid(&w.jpy, &future, &w.bob.keys(), challenge(1)),
        Err(NoteError::SignedInFuture { index: 0, .. })
    ));
}

#[test]
fn mismatched_payee_and_challenge_are_refused() {
    let mut w = world();
    let n = w.jpy.issue(500, &w.alice.keys());
    let paid = pay(&n, &w.alice, &w.bob.keys(), 500, challenge(1));
    assert!(matches!(
        verify_paid(&w.jpy, &paid, &w.carol.keys(), challenge(1)),
        Err(NoteError::WrongPayee { .. })
    ));
    assert_eq!(
        verify_paid(&w.jpy, &paid, &w.bob.keys(), challenge(2)),
        Err(NoteError::WrongChallenge)
    );
}

#[test]
fn unlicensed_and_revoked_signers_are_refused() {
    let mut w = world();
    let mallory = card(99); // never licensed
    let n = w.jpy.issue(500, &mallory.keys());
    let paid = pay(&n, &mallory, &w.bob.keys(), 500, challenge(1));
    assert!(matches!(
        verify_paid(&w.jpy, &paid, &w.bob.keys(), challenge(1)),
        Err(NoteError::NotLicensed { index: 0, .. })
    ));

    let n = w.jpy.issue(500, &w.alice.keys());
    let paid = pay(&n, &w.alice, &w.bob.keys(), 300, challenge(1));
    let pk = w.jpy.key.public();
    let book = w.jpy.book();
    let revoke = |at| {
        Revocations::from_list(&RevocationList {
            currency: Currency::JPY,
            version: 1,
            issued_at: NOW,
            entries: vec![Revocation {
                payment_key: w.alice.keys().payment,
                revoked_at: at,
                reason: RevocationReason::Operator {
                    note: "test".into(),
                },
            }],
        })
    };
    let expect = Expect::Paid {
        payee: w.bob.keys().payment,
        challenge: challenge(1),
    };
    // Revoked before the link was signed.
    let before = revoke(NOW.saturating_sub_secs(10));
    assert!(matches!(
        paid.verify(&policy(&w, &pk, &book, &before, expect)),
        Err(NoteError::Revoked { index: 0, .. })
    ));
    // Revoked after the link was signed, and before now: still refused when
    // that card is the one paying us (it could back-date its link).
    let after = revoke(NOW.saturating_add_secs(10));
    let mut later = policy(&w, &pk, &book, &after, expect);
    later.now = NOW.saturating_add_secs(20);
    assert!(matches!(
        paid.verify(&later),
        Err(NoteError::Revoked { index: 0, .. })
    ));
    // A revocation dated after our now does not apply yet.
    paid.verify(&policy(&w, &pk, &book, &after, expect))
        .unwrap();
    // But an earlier holder revoked after its link is judged by link time.
    let onward = pay(&paid, &w.bob, &w.carol.keys(), 300, challenge(2));
    let mut onward_policy = policy(
        &w,
        &pk,
        &book,
        &after,
        Expect::Paid {
            payee: w.carol.keys().payment,
            challenge: challenge(2),
        },
    );
    onward_policy.now = NOW.saturating_add_secs(20);
    onward.verify(&onward_policy).unwrap();
    // A license that does not cover the link's time.
    let mut short = LicenseBook::new();
    for l in &w.jpy.licenses {
        let mut body = l.unverified().clone();
        body.expires_at = NOW.saturating_sub_secs(1);
        short.add_trusted(body);
    }
    let none = Revocations::none();
    assert!(matches!(
        paid.verify(&policy(&w, &pk, &short, &none, expect)),
        Err(NoteError::LicenseNotValid { index: 0, .. })
    ));
}

#[test]
fn broken_chain_is_refused() {
    let mut w = world();
    let a = w.jpy.issue(500, &w.alice.keys());
    let b = w.jpy.issue(500, &w.alice.keys());
    // A link out of note b grafted onto note a.
    let from_b = pay(&b, &w.alice, &w.bob.keys(), 500, challenge(1));
    let graft = Note {
        issuance: a.issuance.clone(),
        links: from_b.links.clone(),
    };
    assert_eq!(
        verify_paid(&w.jpy, &graft, &w.bob.keys(), challenge(1)),
        Err(NoteError::BrokenChain { index: 0 })
    );
}

/// Re-encodes an envelope with one field of its CBOR body changed, keeping
/// the original signature.
fn tamper_field(env: &Envelope, field: &str) -> Envelope {
    use serde_cbor::Value;
    let mut map: std::collections::BTreeMap<Value, Value> =
        serde_cbor::from_slice(env.body()).unwrap();
    let v = map.get_mut(&Value::Text(field.into())).unwrap();
    *v = match v.clone() {
        Value::Integer(i) => Value::Integer(i + 1),
        Value::Bytes(mut b) => {
            b[0] ^= 1;
            Value::Bytes(b)
        }
        Value::Text(t) => Value::Text(if t == "JPY" { "USD".into() } else { t + "x" }),
        other => panic!("field {field}: unexpected {other:?}"),
    };
    let body = serde_cbor::to_vec(&map).unwrap();
    Envelope::from_parts(env.kind().into(), body, *env.signer(), *env.signature()).unwrap()
}

#[test]
fn tampering_with_any_field_of_issuance_or_link_is_caught() {
    let mut w = world();
    let n = w.jpy.issue(500, &w.alice.keys());
    let paid = pay(&n, &w.alice, &w.bob.keys(), 300, challenge(1));
    for field in [
        "serial",
        "currency",
        "value",
        "holder",
        "issued_at",
        "expires_at",
    ] {
        let env = tamper_field(paid.issuance.envelope(), field);
        let note = Note {
            issuance: Signed::<Issuance>::from_envelope(env).unwrap(),
            links: paid.links.clone(),
        };
        let r = verify_paid(&w.jpy, &note, &w.bob.keys(), challenge(1));
        assert!(
            matches!(r, Err(NoteError::IssuanceSignature(_))),
            "issuance field {field}: {r:?}"
        );
    }
    for field in ["parent", "payee", "amount", "challenge", "signed_at"] {
        let env = tamper_field(paid.links[0].envelope(), field);
        let note = Note {
            issuance: paid.issuance.clone(),
            links: vec![Signed::<Link>::from_envelope(env).unwrap()],
        };
        let r = verify_paid(&w.jpy, &note, &w.bob.keys(), challenge(1));
        assert!(
            matches!(r, Err(NoteError::LinkSignature { index: 0, .. })),
            "link field {field}: {r:?}"
        );
    }
    // The signature itself.
    let e = paid.links[0].envelope();
    let mut sig = *e.signature();
    sig.0[0] ^= 1;
    let env = Envelope::from_parts(e.kind().into(), e.body().to_vec(), *e.signer(), sig).unwrap();
    let note = Note {
        issuance: paid.issuance.clone(),
        links: vec![Signed::from_envelope(env).unwrap()],
    };
    assert!(matches!(
        verify_paid(&w.jpy, &note, &w.bob.keys(), challenge(1)),
        Err(NoteError::LinkSignature { index: 0, .. })
    ));
}

#[test]
fn notes_survive_cbor_round_trip_byte_for_byte() {
    let mut w = world();
    let n = w.jpy.issue(500, &w.alice.keys());
    let paid = pay(&n, &w.alice, &w.bob.keys(), 300, Challenge([7; 32]));
    let bytes = mailer::cbor::to_vec(&paid).unwrap();
    let back: Note = mailer::cbor::from_slice(&bytes, 1 << 20).unwrap();
    assert_eq!(back, paid);
    assert_eq!(mailer::cbor::to_vec(&back).unwrap(), bytes);
    verify_paid(&w.jpy, &back, &w.bob.keys(), Challenge([7; 32])).unwrap();
}

#[test]
fn links_may_not_be_dated_before_the_payment_that_gave_the_note() {
    let mut w = world();
    let n = w.jpy.issue(500, &w.alice.keys());
    let to_bob = pay(&n, &w.alice, &w.bob.keys(), 500, challenge(1));
    // Bob dates his onward link an hour before Alice paid him.
    let backdated = to_bob
        .pay(
            &w.bob.payment,
            w.carol.keys().payment,
            Amount::new(500),
            challenge(2),
            NOW.saturating_sub_secs(3_600),
        )
        .unwrap();
    assert_eq!(
        verify_paid(&w.jpy, &backdated, &w.carol.keys(), challenge(2)),
        Err(NoteError::SignedBeforeParent { index: 1 })
    );
    // A few minutes of clock skew is tolerated.
    let skewed = to_bob
        .pay(
            &w.bob.payment,
            w.carol.keys().payment,
            Amount::new(500),
            challenge(2),
            NOW.saturating_sub_secs(300),
        )
        .unwrap();
    verify_paid(&w.jpy, &skewed, &w.carol.keys(), challenge(2)).unwrap();
}

#[test]
fn the_issuer_takes_back_expired_notes() {
    let mut w = world();
    let n = w.jpy.issue(500, &w.alice.keys());
    let paid = pay(&n, &w.alice, &w.bob.keys(), 500, challenge(1));
    let pk = w.jpy.key.public();
    let book = w.jpy.book();
    let none = Revocations::none();
    let mut p = policy(
        &w,
        &pk,
        &book,
        &none,
        Expect::Paid {
            payee: w.bob.keys().payment,
            challenge: challenge(1),
        },
    );
    p.now = n
        .issuance
        .unverified()
        .expires_at
        .saturating_add_secs(86_400);
    assert!(matches!(paid.verify(&p), Err(NoteError::Expired { .. })));
    p.accept_expired = true;
    paid.verify(&p).unwrap();
}

#[test]
fn a_renewed_license_does_not_void_older_links() {
    let mut w = world();
    let n = w.jpy.issue(500, &w.alice.keys());
    let paid = pay(&n, &w.alice, &w.bob.keys(), 500, challenge(1));
    let mut book = LicenseBook::new();
    for l in &w.jpy.licenses {
        book.add_trusted(l.unverified().clone());
        // A renewal that starts after the link was signed.
        let mut renewed = l.unverified().clone();
        renewed.issued_at = NOW.saturating_add_secs(60);
        renewed.expires_at = NOW.saturating_add_secs(900 * 86_400);
        book.add_trusted(renewed);
    }
    let pk = w.jpy.key.public();
    let none = Revocations::none();
    paid.verify(&policy(
        &w,
        &pk,
        &book,
        &none,
        Expect::Paid {
            payee: w.bob.keys().payment,
            challenge: challenge(1),
        },
    ))
    .unwrap();
}

#[test]
fn bundles_are_checked_as_a_whole() {
    use mailer::note::{verify_bundle, BundleError};
    let mut w = world();
    let a = w.jpy.issue(500, &w.alice.keys());
    let b = w.jpy.issue(500, &w.alice.keys());
    let pk = w.jpy.key.public();
    let book = w.jpy.book();
    let none = Revocations::none();
    let p = policy(
        &w,
        &pk,
        &book,
        &none,
        Expect::Paid {
            payee: w.bob.keys().payment,
            challenge: challenge(1),
        },
    );
    // 700 paid as 500 + 200 (the rest of b stays with Alice).
    let x = pay(&a, &w.alice, &w.bob.keys(), 500, challenge(1));
    let y = pay(&b, &w.alice, &w.bob.keys(), 200, challenge(1));
    let view = verify_bundle(&[x.clone(), y.clone()], &p, Some(Amount::new(700))).unwrap();
    assert_eq!(view.total, Amount::new(700));
    assert_eq!(
        verify_bundle(&[x.clone(), y.clone()], &p, Some(Amount::new(701))),
        Err(BundleError::WrongTotal {
            declared: 701,
            found: 700
        })
    );
    // The same note twice.
    assert_eq!(
        verify_bundle(&[x.clone(), x.clone()], &p, None),
        Err(BundleError::SameState { index: 1, other: 0 })
    );
    // Two partial payments out of one state that together exceed it.
    let y2 = pay(&b, &w.alice, &w.bob.keys(), 400, challenge(1));
    assert_eq!(
        verify_bundle(&[y.clone(), y2.clone()], &p, None),
        Err(BundleError::Overspent { index: 1, other: 0 })
    );
    // Two partial payments that fit are fine.
    let y3 = pay(&b, &w.alice, &w.bob.keys(), 300, challenge(1));
    verify_bundle(&[y, y3], &p, Some(Amount::new(500))).unwrap();
    // One bad note names its index.
    let foreign = pay(&a, &w.alice, &w.carol.keys(), 10, challenge(1));
    assert!(matches!(
        verify_bundle(&[x, foreign], &p, None),
        Err(BundleError::Note {
            index: 1,
            error: NoteError::WrongPayee { .. }
        })
    ));
    assert_eq!(verify_bundle(&[], &p, None), Err(BundleError::Empty));
}

#[test]
fn batch_verified_signatures_give_the_same_answers() {
    let mut w = world();
    let mut notes = Vec::new();
    for i in 0..6u8 {
        let n = w.jpy.issue(500, &w.alice.keys());
        let to_bob = pay(&n, &w.alice, &w.bob.keys(), 200, challenge(i));
        notes.push(pay(&to_bob, &w.bob, &w.carol.keys(), 150, challenge(9)));
    }
    // A note that fails a check other than a signature: paid to bob.
    let n = w.jpy.issue(500, &w.alice.keys());
    notes.push(pay(&n, &w.alice, &w.bob.keys(), 100, challenge(9)));
    assert!(verify_signatures(&notes));
    let issuer = w.jpy.key.public();
    let book = w.jpy.book();
    let rev = Revocations::none();
    let p = policy(
        &w,
        &issuer,
        &book,
        &rev,
        Expect::Paid {
            payee: w.carol.keys().payment,
            challenge: challenge(9),
        },
    );
    for n in &notes {
        assert_eq!(
            n.verify_with(&p, SignatureCheck::Verified),
            n.verify(&p),
            "{n:?}"
        );
    }
    assert!(matches!(
        notes[6].verify_with(&p, SignatureCheck::Verified),
        Err(NoteError::WrongPayee { .. })
    ));
    // One damaged link signature among them: the batch says so, and
    // one-by-one verification names the note and the link.
    let e = notes[3].links[1].envelope();
    let mut sig = *e.signature();
    sig.0[5] ^= 1;
    let env = Envelope::from_parts(e.kind().into(), e.body().to_vec(), *e.signer(), sig).unwrap();
    notes[3].links[1] = Signed::from_envelope(env).unwrap();
    assert!(!verify_signatures(&notes));
    for (i, n) in notes.iter().enumerate() {
        let r = n.verify_with(&p, SignatureCheck::Each);
        assert_eq!(r, n.verify(&p));
        match i {
            3 => assert!(matches!(r, Err(NoteError::LinkSignature { index: 1, .. }))),
            6 => assert!(matches!(r, Err(NoteError::WrongPayee { .. }))),
            _ => assert!(r.is_ok(), "{r:?}"),
        }
    }
    assert!(verify_signatures(&[]));
}
