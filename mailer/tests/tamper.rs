//! Every field of every signed message kind is covered by the signature:
//! changing any one leaf of the CBOR body (recursively, into nested maps and
//! lists) while keeping the signature makes verification fail with a
//! signature error. Runs over one sample of every kind.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests

use mailer::envelope::{Envelope, EnvelopeError};
use mailer::messages::Message;
use mailer::testkit::sample_messages;
use serde_cbor::Value;

/// Paths to every leaf of a CBOR value (map keys and list indexes).
fn leaf_paths(v: &Value, prefix: &mut Vec<Value>, out: &mut Vec<Vec<Value>>) {
    match v {
        Value::Map(m) if !m.is_empty() => {
            for (k, child) in m {
                prefix.push(k.clone());
                leaf_paths(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for (i, child) in a.iter().enumerate() {
                prefix.push(Value::Integer(i as i128));
                leaf_paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => out.push(prefix.clone()),
    }
}

/// Changes the leaf at `path` into a different value of the same type.
fn mutate(v: &mut Value, path: &[Value]) {
    match path.split_first() {
        Some((k, rest)) => match v {
            Value::Map(m) => mutate(m.get_mut(k).expect("path key"), rest),
            Value::Array(a) => {
                let Value::Integer(i) = k else {
                    panic!("index")
                };
                mutate(&mut a[*i as usize], rest)
            }
            _ => panic!("path into a leaf"),
        },
        None => {
            *v = match v.clone() {
                Value::Integer(i) => Value::Integer(if i > 0 { i - 1 } else { i + 1 }),
                Value::Bytes(mut b) => {
                    if b.is_empty() {
                        b.push(0);
                    } else {
                        let n = b.len() / 2;
                        b[n] ^= 0x01;
                    }
                    Value::Bytes(b)
                }
                Value::Text(t) => Value::Text(match t.as_str() {
                    "JPY" => "USD".into(),
                    "USD" => "JPY".into(),
                    _ => format!("{t}x"),
                }),
                Value::Bool(b) => Value::Bool(!b),
                Value::Null => Value::Integer(0),
                Value::Array(_) => Value::Array(vec![Value::Null]),
                Value::Map(_) => Value::Map([(Value::Integer(0), Value::Null)].into()),
                other => panic!("unexpected CBOR value {other:?}"),
            }
        }
    }
}

#[test]
fn every_field_of_every_kind_is_signed() {
    let samples = sample_messages();
    assert_eq!(samples.len(), Message::KINDS.len(), "one sample per kind");
    let mut total = 0;
    for msg in &samples {
        let env = msg.envelope();
        env.verify().expect("sample verifies");
        let body: Value = serde_cbor::from_slice(env.body()).unwrap();
        let mut paths = Vec::new();
        leaf_paths(&body, &mut Vec::new(), &mut paths);
        assert!(!paths.is_empty(), "{}: no fields", env.kind());
        for path in &paths {
            let mut changed = body.clone();
            mutate(&mut changed, path);
            let bytes = serde_cbor::to_vec(&changed).unwrap();
            assert_ne!(
                bytes,
                env.body(),
                "{} {path:?}: mutation changed nothing",
                env.kind()
            );
            let tampered =
                Envelope::from_parts(env.kind().into(), bytes, *env.signer(), *env.signature())
                    .unwrap();
            assert!(
                matches!(tampered.verify(), Err(EnvelopeError::Signature { .. })),
                "{} {path:?}: tampered body still verifies",
                env.kind()
            );
            // Through the typed decoder too, where the tampered body still
            // decodes: the typed view must not verify either.
            if let Ok(m) = Message::decode(tampered) {
                assert!(m.envelope().verify().is_err());
            }
            total += 1;
        }
    }
    // Guard against the walk silently covering nothing.
    assert!(total >= 250, "only {total} fields tampered");
}

#[test]
fn signer_and_signature_of_every_kind_are_bound() {
    for msg in sample_messages() {
        let env = msg.envelope();
        let other = mailer::testkit::key(200).public();
        let swapped = Envelope::from_parts(
            env.kind().into(),
            env.body().to_vec(),
            other,
            *env.signature(),
        )
        .unwrap();
        assert!(swapped.verify().is_err(), "{}: signer swap", env.kind());
        let mut sig = *env.signature();
        sig.0[63] ^= 0x10;
        let flipped =
            Envelope::from_parts(env.kind().into(), env.body().to_vec(), *env.signer(), sig)
                .unwrap();
        assert!(flipped.verify().is_err(), "{}: signature flip", env.kind());
        // Same body and signature under another kind: domain separation.
        let other_kind = if env.kind() == "receipt" {
            "payment"
        } else {
            "receipt"
        };
        let rekinded = Envelope::from_parts(
            other_kind.into(),
            env.body().to_vec(),
            *env.signer(),
            *env.signature(),
        )
        .unwrap();
        assert!(rekinded.verify().is_err(), "{}: kind swap", env.kind());
    }
}

#[test]
fn unknown_kinds_decode_as_unknown() {
    let env = Envelope::seal("future-kind-v9", vec![0xa0], &mailer::testkit::key(5)).unwrap();
    let bytes = env.to_bytes().unwrap();
    match Message::from_bytes(&bytes).unwrap() {
        Message::Unknown(e) => {
            assert_eq!(e.kind(), "future-kind-v9");
            e.verify().unwrap();
        }
        other => panic!("expected Unknown, got {other:?}"),
    }
}
