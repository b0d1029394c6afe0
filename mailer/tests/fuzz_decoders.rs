//! The decoders never panic on hostile input, and no damage to a signed
//! envelope (in its CBOR or in the mail that carries it) yields a different
//! envelope whose signature verifies.
//!
//! Property tests, seeded by real signed messages from the testkit keys.
//! Case counts are kept small enough for the whole file to run in seconds;
//! raise them with PROPTEST_CASES for a longer hunt.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests

use std::collections::BTreeMap;
use std::sync::OnceLock;

use mailer::crypto::Digest;
use mailer::envelope::{Envelope, Signed};
use mailer::messages::{
    ErrorCode, ErrorReply, LicenseRequest, Message, Payment, PaymentInvite, Receipt,
    RevocationListRequest,
};
use mailer::mime::{build_mail, parse_mail, read_headers, MessageId, OutgoingMail};
use mailer::money::{Amount, Currency};
use mailer::testkit::{self, TestIssuer};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::FileFailurePersistence;
use serde_cbor::Value;

// ---------------------------------------------------------------------------
// Seeds

/// Real signed envelopes of several kinds and families, built once.
fn seeds() -> &'static [Envelope] {
    static SEEDS: OnceLock<Vec<Envelope>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut jpy = TestIssuer::new(1, Currency::JPY);
        let (alice, bob) = (testkit::card(10), testkit::card(12));
        let license = jpy.license(&alice.keys());
        let note = jpy.issue(500, &alice.keys());
        let paid = testkit::pay(&note, &alice, &bob.keys(), 300, testkit::challenge(9));
        // The note as paid verifies (so the seeds are meaningful).
        testkit::verify_paid(&jpy, &paid, &bob.keys(), testkit::challenge(9)).unwrap();
        let receipt = Signed::sign(
            Receipt {
                transfer: testkit::id(5),
                payment: Digest([7; 32]),
                currency: Currency::JPY,
                amount: Amount::new(300),
            },
            &bob.auth,
        )
        .unwrap()
        .into_envelope();
        vec![
            receipt.clone(),
            Signed::sign(
                PaymentInvite {
                    transfer: testkit::id(5),
                    currency: Currency::EUR,
                    amount: Amount::new(2_550),
                    memo: "lunch — merci".into(),
                },
                &alice.auth,
            )
            .unwrap()
            .into_envelope(),
            Signed::sign(
                Payment {
                    transfer: testkit::id(5),
                    currency: Currency::JPY,
                    amount: Amount::new(300),
                    notes: vec![paid.clone()],
                    licenses: vec![license.clone()],
                    memo: String::new(),
                },
                &alice.auth,
            )
            .unwrap()
            .into_envelope(),
            Signed::sign(
                RevocationListRequest {
                    currency: Currency::USD,
                    known_version: 3,
                },
                &bob.auth,
            )
            .unwrap()
            .into_envelope(),
            Signed::sign(
                ErrorReply {
                    request: Some(receipt.id()),
                    request_kind: Some("receipt".into()),
                    code: ErrorCode::ALL[ErrorCode::ALL.len() - 1],
                    reason: "refused for a test".into(),
                    evidence: vec![receipt.clone()],
                },
                &jpy.key,
            )
            .unwrap()
            .into_envelope(),
            LicenseRequest::new(&alice, Currency::JPY, testkit::NOW)
                .unwrap()
                .into_envelope(),
            license.into_envelope(),
            paid.issuance.clone().into_envelope(),
            paid.links[0].clone().into_envelope(),
            // A kind this software does not know.
            Envelope::seal("from-the-future", vec![0xa0], &testkit::key(40)).unwrap(),
        ]
    })
}

fn seed_bytes() -> &'static [Vec<u8>] {
    static BYTES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    BYTES.get_or_init(|| seeds().iter().map(|e| e.to_bytes().unwrap()).collect())
}

/// A fixed boundary, so that a failing case is reproducible (lettre draws a
/// random one per mail).
const BOUNDARY: &str = "fuzz-boundary-0123456789-0123456789-0123";

/// A valid protocol mail carrying two seeds, with a fixed boundary.
fn seed_mail() -> &'static [u8] {
    static MAIL: OnceLock<Vec<u8>> = OnceLock::new();
    MAIL.get_or_init(|| {
        let envs = vec![seeds()[2].clone(), seeds()[0].clone()];
        let raw = build_mail(&OutgoingMail {
            from: "alice@a.example.test".into(),
            to: "bob@b.example.test".into(),
            subject: "E-money: a payment".into(),
            message_id: MessageId::from_digest(&envs[0].id(), "a.example.test").unwrap(),
            in_reply_to: Some(MessageId::parse("<p@b.example.test>").unwrap()),
            references: vec![MessageId::parse("<r@a.example.test>").unwrap()],
            date: testkit::NOW,
            text: "A payment, and a receipt.\n".into(),
            envelopes: envs.clone(),
            auto_reply: true,
        })
        .unwrap();
        let text = String::from_utf8(raw).unwrap();
        let start = text.find("boundary=\"").unwrap() + "boundary=\"".len();
        let len = text[start..].find('"').unwrap();
        assert_eq!(len, BOUNDARY.len());
        let fixed = text
            .replace(&text[start..start + len], BOUNDARY)
            .into_bytes();
        assert_eq!(parse_mail(&fixed).unwrap().envelopes, envs);
        fixed
    })
}

// ---------------------------------------------------------------------------
// Checks run on whatever decodes

/// Everything a receiver does with an envelope it read: decode, describe,
/// verify. None may panic. A verifying envelope must be one of `originals`.
fn exercise(env: &Envelope, originals: &[Envelope]) -> Result<(), TestCaseError> {
    let _ = env.id();
    let verified = env.verify().is_ok();
    if verified {
        prop_assert!(
            originals.contains(env),
            "a damaged envelope verifies: {env:?}"
        );
    }
    if let Ok(msg) = Message::decode(env.clone()) {
        let _ = msg.describe();
        prop_assert_eq!(msg.envelope().verify().is_ok(), verified);
        prop_assert_eq!(msg.kind(), env.kind());
    }
    Ok(())
}

fn decode_all(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(env) = Envelope::from_bytes(bytes) {
        exercise(&env, seeds())?;
    }
    if let Ok(msg) = Message::from_bytes(bytes) {
        let _ = msg.describe();
        let _ = msg.envelope().verify();
    }
    if let Ok(mail) = parse_mail(bytes) {
        for env in &mail.envelopes {
            exercise(env, seeds())?;
        }
    }
    let _ = read_headers(bytes);
    Ok(())
}

// ---------------------------------------------------------------------------
// Mutations

/// A position as a fraction of the length (`u32::MAX` is the end), so that
/// it applies to data whose length other mutations changed.
#[derive(Clone, Copy, Debug)]
struct Pos(u32);

impl Pos {
    /// An index below `len` (`len` must not be 0).
    fn of(self, len: usize) -> usize {
        ((len as u64 * u64::from(self.0)) >> 32) as usize
    }
}

#[derive(Clone, Debug)]
enum Mutation {
    /// XOR one byte with a mask (0 counts as 1).
    Flip(Pos, u8),
    Insert(Pos, Vec<u8>),
    Delete(Pos, usize),
    /// Copy a few bytes from one place over another.
    Copy(Pos, Pos, usize),
    Truncate(Pos),
}

fn apply(data: &mut Vec<u8>, m: &Mutation) {
    if data.is_empty() {
        if let Mutation::Insert(_, b) = m {
            data.extend_from_slice(b);
        }
        return;
    }
    match m {
        Mutation::Flip(at, mask) => {
            let i = at.of(data.len());
            data[i] ^= (*mask).max(1);
        }
        Mutation::Insert(at, bytes) => {
            let i = at.of(data.len() + 1);
            data.splice(i..i, bytes.iter().copied());
        }
        Mutation::Delete(at, n) => {
            let i = at.of(data.len());
            let end = (i + n).min(data.len());
            data.drain(i..end);
        }
        Mutation::Copy(from, to, n) => {
            let (f, t) = (from.of(data.len()), to.of(data.len()));
            let n = (*n).min(data.len() - f).min(data.len() - t);
            let chunk = data[f..f + n].to_vec();
            data[t..t + n].copy_from_slice(&chunk);
        }
        Mutation::Truncate(at) => {
            let i = at.of(data.len());
            data.truncate(i);
        }
    }
}

/// Bytes that mean something to a MIME or CBOR parser.
fn token() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => vec(any::<u8>(), 1..4),
        1 => prop::sample::select(vec![
            &b"\r\n"[..],
            b"\n",
            b"\r\n\r\n",
            b"--",
            b"=",
            b"==",
            b":",
            b";",
            b"\"",
            b" ",
            b"\t",
            b"=?utf-8?b?",
            b"?=",
            b"=\r\n",
            b"\r\n--fuzz-boundary-0123456789-0123456789-0123\r\n",
            b"\r\n--fuzz-boundary-0123456789-0123456789-0123--\r\n",
            b"Content-Type: multipart/mixed; boundary=\"x\"\r\n",
            b"Content-Type: message/rfc822\r\n",
            b"Content-Type: application/cbor\r\n",
            b"Content-Transfer-Encoding: quoted-printable\r\n",
            b"Content-Transfer-Encoding: base64\r\n",
            b"Content-Transfer-Encoding: 8bit\r\n",
            b"\xff\xff",
            b"\x00",
            b"\x9f",
            b"\xbf",
            b"\xff",
            b"\x1b\xff\xff\xff\xff\xff\xff\xff\xff",
            b"\x5b\x00\x00\x00\x00\xff\xff\xff\xff",
        ])
        .prop_map(<[u8]>::to_vec),
    ]
}

fn pos() -> impl Strategy<Value = Pos> {
    any::<u32>().prop_map(Pos)
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (pos(), any::<u8>()).prop_map(|(i, m)| Mutation::Flip(i, m)),
        2 => (pos(), token()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        2 => (pos(), 1usize..16).prop_map(|(i, n)| Mutation::Delete(i, n)),
        1 => (pos(), pos(), 1usize..24).prop_map(|(f, t, n)| Mutation::Copy(f, t, n)),
        1 => pos().prop_map(Mutation::Truncate),
    ]
}

// ---------------------------------------------------------------------------
// Structure-aware generators

/// A random CBOR value, a few levels deep.
fn cbor_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        prop_oneof![
            Just(0i128),
            Just(1),
            Just(-1),
            Just(i128::from(u64::MAX)),
            Just(i128::from(i64::MIN)),
            any::<u64>().prop_map(i128::from),
            any::<i64>().prop_map(i128::from),
        ]
        .prop_map(Value::Integer),
        vec(any::<u8>(), 0..70).prop_map(Value::Bytes),
        prop_oneof![Just(32usize), Just(64), Just(16)]
            .prop_flat_map(|n| vec(any::<u8>(), n))
            .prop_map(Value::Bytes),
        "\\PC{0,20}".prop_map(Value::Text),
        prop::sample::select(vec!["JPY", "USD", "EUR", "XXX", "jpy", ""])
            .prop_map(|s| Value::Text(s.into())),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
        any::<f64>().prop_map(Value::Float),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            vec((inner.clone(), inner.clone()), 0..5)
                .prop_map(|kv| Value::Map(kv.into_iter().collect::<BTreeMap<_, _>>())),
            (0u64..300, inner).prop_map(|(t, v)| Value::Tag(t, Box::new(v))),
        ]
    })
}

/// Paths to every node of a CBOR value (map keys and list indexes).
fn node_paths(v: &Value, prefix: &mut Vec<Value>, out: &mut Vec<Vec<Value>>) {
    out.push(prefix.clone());
    match v {
        Value::Map(m) => {
            for (k, child) in m {
                prefix.push(k.clone());
                node_paths(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                prefix.push(Value::Integer(i as i128));
                node_paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

fn node_mut<'a>(v: &'a mut Value, path: &[Value]) -> &'a mut Value {
    match path.split_first() {
        None => v,
        Some((k, rest)) => match v {
            Value::Map(m) => node_mut(m.get_mut(k).unwrap(), rest),
            Value::Array(a) => {
                let Value::Integer(i) = k else {
                    panic!("array index {k:?}")
                };
                node_mut(&mut a[*i as usize], rest)
            }
            _ => panic!("path into a leaf"),
        },
    }
}

// ---------------------------------------------------------------------------
// Properties

/// `cases` cases, or PROPTEST_CASES when it is set (for a longer hunt).
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(1000))]

    /// Random bytes into every decoder.
    #[test]
    fn random_bytes_never_panic(bytes in vec(any::<u8>(), 0..1500)) {
        decode_all(&bytes)?;
    }

    /// Random bytes after a real header section, so that the MIME parser
    /// gets past the headers.
    #[test]
    fn random_body_never_panics(
        header in prop::sample::select(vec![
            "Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n",
            "Content-Type: application/cbor\r\nContent-Transfer-Encoding: base64\r\n\r\n",
            "Content-Type: application/cbor\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n",
            "Content-Type: message/rfc822\r\n\r\n",
            "Content-Type: multipart/digest; boundary=b\r\n\r\n--b\r\n\r\n",
            "From: a@b.test\r\nMessage-ID: <x@y>\r\nReferences: <a@b> <c@d>\r\n\r\n",
        ]),
        body in vec(any::<u8>(), 0..1500),
    ) {
        let mut raw = header.as_bytes().to_vec();
        raw.extend_from_slice(&body);
        decode_all(&raw)?;
    }

    /// Random CBOR values, alone and as the body of an envelope of a random
    /// known kind (signed, so that decoding goes past the signature).
    #[test]
    fn random_cbor_never_panics(
        value in cbor_value(),
        kind in prop::sample::select(Message::KINDS.to_vec()),
    ) {
        let bytes = serde_cbor::to_vec(&value).unwrap();
        decode_all(&bytes)?;
        let env = Envelope::seal(kind, bytes, &testkit::key(50)).unwrap();
        let msg = Message::from_bytes(&env.to_bytes().unwrap());
        if let Ok(msg) = msg {
            let _ = msg.describe();
            prop_assert!(msg.envelope().verify().is_ok());
        }
    }
}

proptest! {
    #![proptest_config(config(500))]

    /// Structure-aware damage to a real body: replace a node of its CBOR
    /// tree by a random value (a huge amount, a far timestamp, a wrong
    /// type...), re-sign it, and decode and describe it as a receiver would.
    #[test]
    fn damaged_bodies_decode_or_fail_cleanly(
        seed in any::<Index>(),
        edits in vec((any::<Index>(), cbor_value()), 1..4),
    ) {
        let original = seed.get(seeds());
        let mut body: Value = serde_cbor::from_slice(original.body()).unwrap();
        for (at, new) in edits {
            let mut paths = Vec::new();
            node_paths(&body, &mut Vec::new(), &mut paths);
            let path = at.get(&paths).clone();
            *node_mut(&mut body, &path) = new;
        }
        let bytes = serde_cbor::to_vec(&body).unwrap();
        let env = Envelope::seal(original.kind(), bytes, &testkit::key(51)).unwrap();
        if let Ok(msg) = Message::decode(env.clone()) {
            let _ = msg.describe();
            prop_assert!(msg.envelope().verify().is_ok());
        }
        // And the same through the whole mail layer.
        let mut raw = seed_mail().to_vec();
        let mut wrapped = Vec::new();
        let b64 = base64_lines(&env.to_bytes().unwrap());
        let marker = b"Content-Type: application/cbor";
        let at = raw.windows(marker.len()).position(|w| w == marker).unwrap();
        wrapped.extend_from_slice(&raw[..at]);
        wrapped.extend_from_slice(
            b"Content-Type: application/cbor\r\nContent-Transfer-Encoding: base64\r\n\r\n",
        );
        wrapped.extend_from_slice(b64.as_bytes());
        wrapped.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
        raw = wrapped;
        let got = parse_mail(&raw);
        prop_assert!(got.is_ok(), "{:?}", got);
        let got = got.unwrap();
        prop_assert_eq!(got.envelopes.last(), Some(&env));
        for e in &got.envelopes {
            if let Ok(msg) = Message::decode(e.clone()) {
                let _ = msg.describe();
                prop_assert!(msg.envelope().verify().is_ok());
            }
        }
    }

    /// A valid mail with random damage: parse_mail never panics, and any
    /// envelope it returns decodes, describes and verifies without panic;
    /// one that verifies is one of the envelopes that were sent.
    #[test]
    fn damaged_mails_never_panic(mutations in vec(mutation(), 1..8)) {
        let mut raw = seed_mail().to_vec();
        for m in &mutations {
            apply(&mut raw, m);
        }
        decode_all(&raw)?;
    }
}

proptest! {
    #![proptest_config(config(1500))]

    /// A valid envelope's CBOR with random damage: decoding never panics,
    /// and whenever the damaged bytes decode to a different envelope (kind,
    /// body, signer or signature), its signature does not verify.
    #[test]
    fn damaged_envelopes_never_verify(
        seed in any::<Index>(),
        mutations in vec(mutation(), 1..5),
    ) {
        let i = seed.index(seeds().len());
        let original = &seeds()[i];
        let mut bytes = seed_bytes()[i].clone();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        if let Ok(env) = Envelope::from_bytes(&bytes) {
            if &env == original {
                // Same fields in another encoding: still the same envelope.
                prop_assert!(env.verify().is_ok());
            } else {
                prop_assert!(
                    env.verify().is_err(),
                    "damaged envelope verifies: {:?} (was {:?})",
                    env,
                    original
                );
            }
        }
        if let Ok(msg) = Message::from_bytes(&bytes) {
            let _ = msg.describe();
            prop_assert_eq!(msg.envelope().verify().is_ok(), msg.envelope() == original);
        }
    }
}

fn base64_lines(bytes: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = String::new();
    for chunk in b64.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push_str("\r\n");
    }
    out
}

/// The seeds are what they claim: each verifies, decodes as its kind, and
/// survives the mail layer. (If this fails, the properties above test
/// nothing.)
#[test]
fn seeds_are_valid() {
    assert!(seeds().len() >= 10);
    for (env, bytes) in seeds().iter().zip(seed_bytes()) {
        env.verify().unwrap();
        let msg = Message::from_bytes(bytes).unwrap();
        assert_eq!(msg.envelope(), env);
        let known = Message::KINDS.contains(&env.kind());
        assert_eq!(!known, matches!(msg, Message::Unknown(_)), "{}", env.kind());
        assert!(!msg.describe().is_empty());
    }
    let mail = parse_mail(seed_mail()).unwrap();
    assert_eq!(mail.envelopes.len(), 2);
    for env in &mail.envelopes {
        env.verify().unwrap();
    }
}

/// Mutations do damage: the helper is not a no-op.
#[test]
fn mutations_change_bytes() {
    let half = Pos(1 << 31);
    let mut b = seed_bytes()[0].clone();
    let n = b.len();
    apply(&mut b, &Mutation::Flip(half, 0));
    assert_eq!(b[n / 2], seed_bytes()[0][n / 2] ^ 1);
    apply(&mut b, &Mutation::Delete(half, 3));
    assert_eq!(b.len(), n - 3);
    apply(&mut b, &Mutation::Insert(Pos(0), b"xy".to_vec()));
    assert!(b.starts_with(b"xy"));
    apply(&mut b, &Mutation::Copy(Pos(0), half, 2));
    assert_eq!(&b[(n - 1) / 2..(n - 1) / 2 + 2], b"xy");
    apply(&mut b, &Mutation::Truncate(Pos(1 << 30)));
    assert_eq!(b.len(), (n - 1) / 4);
    assert_eq!(Pos(u32::MAX).of(10), 9);
}
