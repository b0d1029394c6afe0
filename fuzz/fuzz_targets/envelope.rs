//! An attachment's bytes into the envelope and message decoders.
//!
//! Checks, on whatever decodes: message decoding is envelope decoding then
//! the body (same envelope, or a body error); the envelope is within the
//! limits, and our own encoding of it is no longer than what was received,
//! decodes to the same envelope and message and is a fixed point; every
//! body is within the limits and survives being encoded again; an envelope
//! that says what a sample says verifies exactly when it carries the
//! sample's signature, one by one and in a batch alike.

#![no_main]
#![allow(clippy::panic, clippy::expect_used)] // a broken invariant must crash

use emoney_fuzz::check_envelope;
use libfuzzer_sys::fuzz_target;
use mailer::envelope::{Envelope, EnvelopeError};
use mailer::messages::Message;

fuzz_target!(|data: &[u8]| {
    let env = Envelope::from_bytes(data);
    let msg = Message::from_bytes(data);
    match (&env, &msg) {
        (Err(a), Err(b)) => assert_eq!(a, b, "envelope and message decoding fail differently"),
        (Err(e), Ok(m)) => panic!("a message decodes ({}) from a bad envelope: {e}", m.kind()),
        (Ok(env), Ok(m)) => assert_eq!(m.envelope(), env),
        (Ok(env), Err(e)) => assert!(
            matches!(e, EnvelopeError::Body { .. } | EnvelopeError::Limit { .. })
                && Message::KINDS.contains(&env.kind()),
            "a good envelope of kind {:?} fails as a message with {e:?}",
            env.kind()
        ),
    }
    if let Ok(env) = &env {
        check_envelope(env, data.len(), &msg);
    }
});
