//! A note's bytes, under a policy the input chooses, into note verification.
//!
//! The input is a 12-byte header (flags, the expected card and challenge, a
//! revocation, the time: see `NoteInput`) and a note in CBOR, decoded as a
//! payment's notes are. The flags can re-sign what the fuzzer changed with
//! the testkit's keys and re-link the chain, so that mutations reach every
//! check past the signatures.
//!
//! Checks: the one-by-one path (`Note::verify`) and the batch path
//! (`verify_signatures`, then `verify_with(.., Verified)`) agree: the batch
//! passes exactly when every signature verifies one by one, and then both
//! paths give the same result; when it does not, the batch path still
//! refuses for the same reason whenever the one-by-one path refused for
//! another reason than a signature. `walk_chain` agrees with `verify`; a
//! verified note's view is consistent (states, values, holder, what was
//! expected); a bundle of the note agrees, and refuses it twice.

#![no_main]
#![allow(clippy::panic, clippy::expect_used)] // a broken invariant must crash

use emoney_fuzz::{prepared_note, NoteInput, NoteWorld};
use libfuzzer_sys::fuzz_target;
use mailer::limits::MAX_ENVELOPE_BYTES;
use mailer::note::{
    verify_bundle, verify_signatures, walk_chain, BundleError, Expect, Note, NoteError,
    SignatureCheck,
};

fn is_signature(e: &NoteError) -> bool {
    matches!(
        e,
        NoteError::IssuanceSignature(_) | NoteError::LinkSignature { .. }
    )
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = NoteInput::parse(data) else {
        return;
    };
    let Some(note) = prepared_note(&input) else {
        return;
    };
    // The note as it travels decodes to itself.
    let bytes = mailer::cbor::to_vec(&note).expect("a note encodes");
    let again: Note = mailer::cbor::from_slice(&bytes, MAX_ENVELOPE_BYTES).expect("decodes");
    assert_eq!(again, note);

    let world = NoteWorld::get();
    let revocations = input.revocations();
    let policy = input.policy(world, &revocations);

    let each = note.verify(&policy);
    assert_eq!(note.verify_with(&policy, SignatureCheck::Each), each);
    let batch = verify_signatures(std::slice::from_ref(&note));
    let verified = note.verify_with(&policy, SignatureCheck::Verified);
    if let Err(e) = &verified {
        assert!(!is_signature(e), "signatures checked though verified: {e}");
    }
    match &each {
        Ok(_) => assert!(batch, "the batch refuses a note that verifies one by one"),
        Err(e) if is_signature(e) => assert!(!batch, "the batch passes a bad signature: {e}"),
        Err(NoteError::ChainTooLong { .. }) => assert!(batch, "long chains are left out"),
        Err(_) => {
            // Checked one by one only where the paths cannot tell.
            let all = note.signed().all(|e| e.verify().is_ok());
            assert_eq!(batch, all, "batch and one-by-one verification disagree");
        }
    }
    if batch {
        assert_eq!(verified, each, "the two paths disagree");
    } else if let Err(e) = &each {
        if !is_signature(e) {
            assert_eq!(
                &verified, &each,
                "the batch path refuses for another reason"
            );
        }
    }

    // Walking the chain agrees.
    let walked = walk_chain(&note.issuance, &note.links);
    assert_eq!(note.walk(), walked);
    if let Ok(view) = &each {
        assert_eq!(walked.as_ref().ok(), Some(&view.states));
        let states = &view.states;
        assert_eq!(states.len(), note.links.len() + 1);
        assert_eq!(view.note, note.id());
        assert_eq!(states[0].id, note.id());
        assert_eq!(view.value, states[0].value);
        assert!(states.windows(2).all(|w| w[1].value <= w[0].value));
        assert!(states.iter().all(|s| !s.value.is_zero()));
        assert_eq!(view.current().id, note.state());
        assert_eq!(view.current().holder, note.holder());
        assert_eq!(view.current().value, note.held());
        match policy.expect {
            Expect::Issued { holder } => {
                assert!(note.links.is_empty());
                assert_eq!(note.holder(), holder);
            }
            Expect::Paid { payee, challenge } => {
                let last = note.links.last().expect("a payment has a link");
                assert_eq!(last.unverified().payee, payee);
                assert_eq!(last.unverified().challenge, challenge);
            }
            Expect::Held { holder } => assert_eq!(note.holder(), holder),
        }
    } else if let Err(e) = &walked {
        // What the walk refuses, verification refuses (for that reason, or
        // for one it checks first).
        assert!(each.is_err(), "walk refuses ({e}) what verify accepts");
    }

    // A bundle of this one note agrees; twice the note is refused.
    let bundle = verify_bundle(std::slice::from_ref(&note), &policy, None);
    match (&each, &bundle) {
        (Ok(view), Ok(b)) => {
            assert_eq!(b.notes, vec![view.clone()]);
            assert_eq!(b.total, view.current().value);
        }
        (Err(e), Err(BundleError::Note { index: 0, error })) => assert_eq!(e, error),
        _ => panic!("a bundle of one note disagrees: {each:?} / {bundle:?}"),
    }
    if each.is_ok() {
        let twice = [note.clone(), note.clone()];
        assert!(matches!(
            verify_bundle(&twice, &policy, None),
            Err(BundleError::SameState { index: 1, other: 0 })
        ));
    }
});
