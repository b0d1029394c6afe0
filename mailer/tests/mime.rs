//! The MIME layer: protocol mails built by `build_mail` read back by
//! `parse_mail` (and by Python's standard `email` package, and the other way
//! round), and malformed mails refused with the right typed error.
//!
//! Malformed mails that lettre cannot make are written by hand as byte
//! strings with CRLF line ends.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests

use std::io::Write as _;
use std::process::{Command, Stdio};

use base64::Engine as _;
use mail_parser::{MessageParser, MimeHeaders};
use mailer::crypto::{digest, Digest};
use mailer::envelope::{Envelope, EnvelopeError, Signed};
use mailer::limits::{MAX_ATTACHMENTS, MAX_ENVELOPE_BYTES, MAX_MAIL_BYTES};
use mailer::messages::{
    ErrorCode, ErrorReply, Message, Payment, PaymentInvite, Receipt, RevocationListRequest,
};
use mailer::mime::{
    build_mail, parse_address, parse_mail, read_headers, MessageId, MimeError, OutgoingMail,
    ReceivedMail, CBOR_CONTENT_TYPE, KIND_HEADER,
};
use mailer::money::{Amount, Currency, Timestamp};
use mailer::testkit::{self, TestIssuer};
use proptest::prelude::*;

// ---------------------------------------------------------------------------
// Fixtures

/// A receipt signed by the testkit key `seed`.
fn receipt(seed: u8) -> Envelope {
    Signed::sign(
        Receipt {
            transfer: testkit::id(seed),
            payment: Digest([seed; 32]),
            currency: Currency::JPY,
            amount: Amount::new(1_000 + u64::from(seed)),
        },
        &testkit::key(seed),
    )
    .unwrap()
    .into_envelope()
}

/// Four envelopes of four different kinds, signed by different keys.
fn envelopes() -> Vec<Envelope> {
    let invite = Signed::sign(
        PaymentInvite {
            transfer: testkit::id(7),
            currency: Currency::EUR,
            amount: Amount::new(2_550),
            memo: "Für das Mittagessen — merci ☺".into(),
        },
        &testkit::key(2),
    )
    .unwrap()
    .into_envelope();
    let rl = Signed::sign(
        RevocationListRequest {
            currency: Currency::USD,
            known_version: 12,
        },
        &testkit::key(3),
    )
    .unwrap()
    .into_envelope();
    let error = Signed::sign(
        ErrorReply {
            request: Some(receipt(1).id()),
            request_kind: Some("receipt".into()),
            code: ErrorCode::ALL[0],
            reason: "A test refusal.\nWith a line break.".into(),
            evidence: vec![receipt(1)],
        },
        &testkit::key(4),
    )
    .unwrap()
    .into_envelope();
    vec![receipt(1), invite, rl, error]
}

/// A payment carrying a real note and a license: the largest ordinary body.
fn payment() -> Envelope {
    let mut jpy = TestIssuer::new(1, Currency::JPY);
    let (alice, bob) = (testkit::card(10), testkit::card(12));
    let license = jpy.license(&alice.keys());
    let note = jpy.issue(500, &alice.keys());
    let paid = testkit::pay(&note, &alice, &bob.keys(), 500, testkit::challenge(9));
    Signed::sign(
        Payment {
            transfer: testkit::id(5),
            currency: Currency::JPY,
            amount: Amount::new(500),
            notes: vec![paid],
            licenses: vec![license],
            memo: "lunch".into(),
        },
        &alice.auth,
    )
    .unwrap()
    .into_envelope()
}

fn mid(text: &str) -> MessageId {
    MessageId::parse(text).unwrap()
}

/// The text part, as a wallet writes it: each envelope described.
fn describe_all(envs: &[Envelope]) -> String {
    let mut text = String::from("This mail carries e-money protocol messages.\n\n");
    for e in envs {
        text.push_str(&Message::decode(e.clone()).unwrap().describe());
        text.push('\n');
    }
    text
}

fn outgoing(envs: Vec<Envelope>) -> OutgoingMail {
    let message_id = MessageId::from_digest(&envs[0].id(), "alice.example.test").unwrap();
    OutgoingMail {
        from: "Alice <alice@alice.example.test>".into(),
        to: "bob@bob.example.test".into(),
        subject: "E-money: a receipt".into(),
        message_id,
        in_reply_to: Some(mid("<parent-2@bob.example.test>")),
        references: vec![mid("root-1@alice.example.test")],
        date: testkit::NOW,
        text: describe_all(&envs),
        envelopes: envs,
        auto_reply: true,
    }
}

fn bytes_of(envs: &[Envelope]) -> Vec<Vec<u8>> {
    envs.iter().map(|e| e.to_bytes().unwrap()).collect()
}

fn b64_lines(bytes: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = String::new();
    for chunk in b64.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push_str("\r\n");
    }
    out
}

/// A MIME part: header lines (without line ends), then a body.
fn part(headers: &[&str], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for h in headers {
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// A base64 application/cbor part holding `bytes`.
fn cbor_part(bytes: &[u8]) -> Vec<u8> {
    part(
        &[
            "Content-Type: application/cbor",
            "Content-Disposition: attachment; filename=\"1-x.cbor\"",
            "Content-Transfer-Encoding: base64",
        ],
        b64_lines(bytes).as_bytes(),
    )
}

fn text_part(text: &str) -> Vec<u8> {
    part(
        &[
            "Content-Type: text/plain; charset=utf-8",
            "Content-Transfer-Encoding: 7bit",
        ],
        format!("{text}\r\n").as_bytes(),
    )
}

/// A whole mail by hand: top headers, a multipart of `subtype` with `parts`.
fn hand_mail(subtype: &str, parts: &[Vec<u8>]) -> Vec<u8> {
    let boundary = "=_outer_boundary_7f3a";
    let mut out = part(
        &[
            "From: robot@example.test",
            "To: alice@example.test",
            "Subject: hand made",
            "Date: Mon, 23 Nov 2026 00:00:00 +0000",
            "Message-ID: <hand-1@example.test>",
            "In-Reply-To: <parent@example.test>",
            "MIME-Version: 1.0",
            &format!("Content-Type: multipart/{subtype}; boundary=\"{boundary}\""),
        ],
        b"This is a multi-part message in MIME format.\r\n",
    );
    for p in parts {
        out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        out.extend_from_slice(p);
        if !p.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

fn parsed_ok(raw: &[u8]) -> ReceivedMail {
    match parse_mail(raw) {
        Ok(m) => m,
        Err(e) => panic!("parse_mail refused the mail: {e:?}\n{}", preview(raw)),
    }
}

fn crlf_to_lf(text: &str) -> String {
    text.replace("\r\n", "\n")
}

fn preview(raw: &[u8]) -> String {
    String::from_utf8_lossy(&raw[..raw.len().min(3_000)]).into_owned()
}

/// An envelope whose CBOR encoding is exactly `len` bytes.
fn envelope_of_len(len: usize) -> Envelope {
    let probe = Envelope::seal("blob", vec![0; 100_000], &testkit::key(9)).unwrap();
    let overhead = probe.to_bytes().unwrap().len() - 100_000;
    let env = Envelope::seal("blob", vec![0x5a; len - overhead], &testkit::key(9)).unwrap();
    assert_eq!(env.to_bytes().unwrap().len(), len);
    env
}

// ---------------------------------------------------------------------------
// 1. Round trip

fn check_round_trip(envs: Vec<Envelope>) {
    let mail = outgoing(envs.clone());
    let raw = build_mail(&mail).unwrap();
    let got = parsed_ok(&raw);

    assert_eq!(bytes_of(&got.envelopes), bytes_of(&envs), "envelopes");
    assert_eq!(got.envelopes, envs);
    for e in &got.envelopes {
        e.verify().unwrap();
    }
    assert_eq!(got.message_id.as_ref(), Some(&mail.message_id));
    assert_eq!(got.in_reply_to, mail.in_reply_to);
    // Threading: References is the thread so far, then the parent.
    assert_eq!(
        got.references,
        vec![
            mid("root-1@alice.example.test"),
            mid("parent-2@bob.example.test")
        ]
    );
    assert!(got.references.contains(got.in_reply_to.as_ref().unwrap()));
    assert_eq!(got.from.as_deref(), Some("alice@alice.example.test"));
    assert_eq!(got.subject.as_deref(), Some("E-money: a receipt"));
    assert!(got.auto_submitted);

    // What parse_mail does not return, read with mail-parser directly.
    let msg = MessageParser::default().parse(&raw).unwrap();
    let kinds: Vec<&str> = envs.iter().map(Envelope::kind).collect();
    assert_eq!(
        msg.header_raw(KIND_HEADER).map(str::trim),
        Some(kinds.join(", ").as_str())
    );
    assert_eq!(
        msg.header_raw("Auto-Submitted").map(str::trim),
        Some("auto-replied")
    );
    let ct = msg.content_type().unwrap();
    assert_eq!(
        (ct.ctype(), ct.subtype()),
        ("multipart", Some("mixed")),
        "root content type"
    );
    assert_eq!(
        msg.date().map(|d| d.to_timestamp()),
        Some(testkit::NOW.unix() as i64)
    );
    // Text travels in its canonical form, with CRLF line ends.
    let text = msg.body_text(0).unwrap();
    assert_eq!(crlf_to_lf(&text).trim_end(), mail.text.trim_end());
    assert!(text.contains("A receipt for"), "{text}");
    assert_eq!(msg.attachment_count(), envs.len());

    // read_headers agrees with parse_mail.
    let h = read_headers(&raw);
    assert_eq!(h.message_id, got.message_id);
    assert_eq!(h.in_reply_to, got.in_reply_to);
    assert_eq!(h.references, got.references);
    assert_eq!(h.from, got.from);
    assert_eq!(h.subject, got.subject);
    assert!(h.auto_submitted);
}

#[test]
fn round_trip_one_envelope() {
    check_round_trip(vec![receipt(1)]);
}

#[test]
fn round_trip_several_envelopes() {
    let all = envelopes();
    for n in 2..=MAX_ATTACHMENTS {
        check_round_trip(all[..n].to_vec());
    }
    // Order is kept: the same envelopes reversed come back reversed.
    let mut rev = all.clone();
    rev.reverse();
    check_round_trip(rev);
}

#[test]
fn round_trip_payment_with_notes() {
    check_round_trip(vec![receipt(1), payment()]);
}

#[test]
fn threading_headers() {
    // Parent already in References: not repeated.
    let mut mail = outgoing(vec![receipt(1)]);
    mail.references = vec![mid("root-1@a.test"), mid("parent-2@bob.example.test")];
    let got = parsed_ok(&build_mail(&mail).unwrap());
    assert_eq!(got.references, mail.references);
    assert_eq!(got.in_reply_to, mail.in_reply_to);

    // In-Reply-To without References: References is the parent alone.
    mail.references.clear();
    let got = parsed_ok(&build_mail(&mail).unwrap());
    assert_eq!(got.references, vec![mid("parent-2@bob.example.test")]);

    // A first mail: no In-Reply-To, no References, no Auto-Submitted.
    mail.in_reply_to = None;
    mail.auto_reply = false;
    let raw = build_mail(&mail).unwrap();
    let got = parsed_ok(&raw);
    assert_eq!(got.in_reply_to, None);
    assert!(got.references.is_empty());
    assert!(!got.auto_submitted);
    let head = preview(&raw).to_ascii_lowercase();
    assert!(!head.contains("in-reply-to:"), "{head}");
    assert!(!head.contains("references:"), "{head}");
    assert!(!head.contains("auto-submitted:"), "{head}");

    // A long thread survives header folding.
    let thread: Vec<MessageId> = (0..20)
        .map(|i| MessageId::from_digest(&digest(&[&[i]]), "thread.example.test").unwrap())
        .collect();
    mail.references = thread.clone();
    mail.in_reply_to = Some(thread[19].clone());
    let got = parsed_ok(&build_mail(&mail).unwrap());
    assert_eq!(got.references, thread);
    assert_eq!(got.in_reply_to.as_ref(), Some(&thread[19]));
}

#[test]
fn auto_submitted_no_is_not_automatic() {
    let env = receipt(1).to_bytes().unwrap();
    let mut raw = b"Auto-Submitted: no\r\n".to_vec();
    raw.extend(hand_mail("mixed", &[text_part("hi"), cbor_part(&env)]));
    assert!(!parsed_ok(&raw).auto_submitted);
    let mut raw = b"Auto-Submitted: auto-generated\r\n".to_vec();
    raw.extend(hand_mail("mixed", &[text_part("hi"), cbor_part(&env)]));
    assert!(parsed_ok(&raw).auto_submitted);
}

#[test]
fn non_ascii_subject_and_text_round_trip() {
    let mut mail = outgoing(vec![receipt(1)]);
    mail.subject = "Paiement reçu : 25,50 € — 支払い完了 ✓".into();
    mail.text = "Grüße aus Zürich.\nЭто платёж.\n日本語のテキスト。\n".repeat(20);
    let raw = build_mail(&mail).unwrap();
    assert!(raw.is_ascii(), "the mail itself is 7-bit");
    let got = parsed_ok(&raw);
    assert_eq!(got.subject.as_deref(), Some(mail.subject.as_str()));
    let msg = MessageParser::default().parse(&raw).unwrap();
    assert_eq!(
        crlf_to_lf(&msg.body_text(0).unwrap()).trim_end(),
        mail.text.trim_end()
    );
}

#[test]
fn header_injection_is_neutralised() {
    let mut mail = outgoing(vec![receipt(1)]);
    mail.subject = "hello\r\nBcc: victim@evil.test\r\nX-Emoney-Kind: payment".into();
    let raw = build_mail(&mail).unwrap();
    let msg = MessageParser::default().parse(&raw).unwrap();
    assert!(msg.bcc().is_none(), "{}", preview(&raw));
    assert_eq!(msg.header_values(KIND_HEADER).count(), 1);
    assert_eq!(msg.header_raw(KIND_HEADER).map(str::trim), Some("receipt"));
    // The address fields are validated, not pasted.
    let mut bad = outgoing(vec![receipt(1)]);
    bad.to = "bob@example.test\r\nBcc: victim@evil.test".into();
    assert!(matches!(build_mail(&bad), Err(MimeError::BadAddress(_))));
}

#[test]
fn build_refuses_bad_input() {
    let mut mail = outgoing(vec![receipt(1)]);
    mail.envelopes.clear();
    assert_eq!(
        build_mail(&mail),
        Err(MimeError::TooManyAttachments {
            found: 0,
            max: MAX_ATTACHMENTS
        })
    );
    mail.envelopes = (1..=5).map(receipt).collect();
    assert_eq!(
        build_mail(&mail),
        Err(MimeError::TooManyAttachments {
            found: 5,
            max: MAX_ATTACHMENTS
        })
    );
    for bad in ["", "no-at-sign", "a@b@c", "<unclosed@x", "two words@x.test"] {
        let mut m = outgoing(vec![receipt(1)]);
        m.from = bad.into();
        assert!(
            matches!(build_mail(&m), Err(MimeError::BadAddress(_))),
            "from {bad:?}"
        );
        let mut m = outgoing(vec![receipt(1)]);
        m.to = bad.into();
        assert!(
            matches!(build_mail(&m), Err(MimeError::BadAddress(_))),
            "to {bad:?}"
        );
    }
}

#[test]
fn build_refuses_dates_it_cannot_write() {
    // lettre writes the Date header with httpdate, which panics after the
    // year 9999; build_mail must refuse such a date, not panic.
    for secs in [253_402_300_800, 1 << 40, u64::MAX] {
        let mut mail = outgoing(vec![receipt(1)]);
        mail.date = Timestamp::from_unix(secs);
        assert!(
            matches!(build_mail(&mail), Err(MimeError::Build(_))),
            "date {secs}"
        );
    }
    // The last writable second and the epoch are fine.
    for secs in [253_402_300_799, 0] {
        let mut mail = outgoing(vec![receipt(1)]);
        mail.date = Timestamp::from_unix(secs);
        let raw = build_mail(&mail).unwrap();
        let msg = MessageParser::default().parse(&raw).unwrap();
        assert_eq!(msg.date().map(|d| d.to_timestamp()), Some(secs as i64));
    }
}

#[test]
fn message_id_from_digest_is_deterministic() {
    let d = digest(&[b"one outgoing mail"]);
    let a = MessageId::from_digest(&d, "example.test").unwrap();
    let b = MessageId::from_digest(&d, "example.test").unwrap();
    assert_eq!(a, b);
    assert_eq!(a.as_str(), format!("{}@example.test", &d.to_hex()[..40]));
    assert_eq!(a.bracketed(), format!("<{}>", a.as_str()));
    assert_eq!(a.to_string(), a.bracketed());
    let other = MessageId::from_digest(&digest(&[b"another mail"]), "example.test").unwrap();
    assert_ne!(a, other);
    assert_ne!(a, MessageId::from_digest(&d, "other.example.test").unwrap());
    for bad_domain in ["", "a b", "x@y", "<x>", "é.test"] {
        assert!(
            matches!(
                MessageId::from_digest(&d, bad_domain),
                Err(MimeError::BadMessageId(_))
            ),
            "{bad_domain:?}"
        );
    }
    // The same outgoing mail built twice has the same Message-ID.
    let mail = outgoing(vec![receipt(1)]);
    let one = parsed_ok(&build_mail(&mail).unwrap());
    let two = parsed_ok(&build_mail(&mail).unwrap());
    assert_eq!(one.message_id, two.message_id);
    assert_eq!(one.message_id, Some(mail.message_id));
}

#[test]
fn message_id_parse() {
    for (text, want) in [
        ("<a@b>", "a@b"),
        ("a@b", "a@b"),
        ("  <a@b>\r\n", "a@b"),
        (
            "<1a2b.c-d_e+f=g@mail.example.test>",
            "1a2b.c-d_e+f=g@mail.example.test",
        ),
    ] {
        let m = MessageId::parse(text).unwrap();
        assert_eq!(m.as_str(), want, "{text:?}");
        assert_eq!(m.to_string(), format!("<{want}>"));
    }
    let longest = format!("{}@b", "a".repeat(MessageId::MAX_LEN - 2));
    assert!(MessageId::parse(&longest).is_ok());
    let too_long = format!("{}@b", "a".repeat(MessageId::MAX_LEN - 1));
    for junk in [
        "",
        "   ",
        "<>",
        "<@>",
        "no-at-sign",
        "<no-at-sign>",
        "a@b@c",
        "@b",
        "a@",
        "<a@b",
        "a@b>",
        "<<a@b>>",
        "a b@c",
        "a@b c",
        "a\0@b",
        "a\t@b",
        "é@b",
        "a@[10.0.0.1]",
        "a@b;c",
        "a,b@c",
        "\"a\"@b",
        "a@b\r\nBcc: x@y",
        too_long.as_str(),
    ] {
        assert!(
            matches!(MessageId::parse(junk), Err(MimeError::BadMessageId(_))),
            "accepted {junk:?}"
        );
    }
}

#[test]
fn envelopes_at_the_size_limit_round_trip() {
    // Base64 in 76-character lines with CRLF costs more than 4/3: the size
    // check must count base64 characters, not line ends.
    let big = envelope_of_len(MAX_ENVELOPE_BYTES);
    let mut mail = outgoing(vec![big.clone()]);
    mail.text = "A big one.".into();
    let got = parsed_ok(&build_mail(&mail).unwrap());
    assert_eq!(got.envelopes, vec![big.clone()]);

    // MAX_MAIL_BYTES leaves room for MAX_ATTACHMENTS envelopes at the limit.
    mail.envelopes = vec![big; MAX_ATTACHMENTS];
    let raw = build_mail(&mail).unwrap();
    assert!(raw.len() <= MAX_MAIL_BYTES, "{}", raw.len());
    let got = parsed_ok(&raw);
    assert_eq!(got.envelopes.len(), MAX_ATTACHMENTS);
    assert_eq!(got.envelopes, mail.envelopes);
}

// ---------------------------------------------------------------------------
// 2. Python interop

fn python() -> Command {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let mut cmd = Command::new(python);
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/mime_interop.py"
    ));
    cmd
}

fn run_python(args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = python()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 must be installed to run the MIME interop tests");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "python {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// How Python's `email` package read a mail (see mime_interop.py).
#[derive(Debug, Default)]
struct PyReport {
    defects: Vec<String>,
    headers: Vec<(String, String)>,
    /// (content type, disposition, defect names)
    parts: Vec<(String, String, String)>,
    texts: Vec<String>,
    /// (filename, bytes)
    cbor: Vec<(String, Vec<u8>)>,
}

impl PyReport {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn unhex(s: &str) -> String {
    String::from_utf8(hex::decode(s).unwrap()).unwrap()
}

fn python_read(raw: &[u8]) -> PyReport {
    let out = String::from_utf8(run_python(&["read"], raw)).unwrap();
    let mut r = PyReport::default();
    for line in out.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        match f[0] {
            "defects" => {
                if f[1] != "0" {
                    r.defects.push(unhex(f[2]));
                }
            }
            "header" => r.headers.push((f[1].to_string(), unhex(f[2]))),
            "part" => r
                .parts
                .push((f[1].to_string(), f[2].to_string(), unhex(f[4]))),
            "text" => r.texts.push(unhex(f[1])),
            "cbor" => r.cbor.push((f[1].to_string(), hex::decode(f[2]).unwrap())),
            other => panic!("unexpected line from python: {other:?}"),
        }
    }
    r
}

#[test]
fn python_reads_our_mails() {
    for envs in [vec![receipt(1)], envelopes(), vec![payment(), receipt(3)]] {
        let mail = outgoing(envs.clone());
        let raw = build_mail(&mail).unwrap();
        let py = python_read(&raw);
        assert!(py.defects.is_empty(), "message defects: {:?}", py.defects);
        for (ctype, _, defects) in &py.parts {
            assert!(defects.is_empty(), "{ctype} part defects: {defects}");
        }
        // multipart/mixed, then text/plain, then one cbor attachment each.
        let types: Vec<&str> = py.parts.iter().map(|p| p.0.as_str()).collect();
        let mut want = vec!["multipart/mixed", "text/plain"];
        want.extend(std::iter::repeat_n(CBOR_CONTENT_TYPE, envs.len()));
        assert_eq!(types, want);
        for (ctype, disp, _) in &py.parts[2..] {
            assert_eq!(disp, "attachment", "{ctype}");
        }
        assert_eq!(py.texts.len(), 1);
        assert_eq!(crlf_to_lf(&py.texts[0]).trim_end(), mail.text.trim_end());
        // The attachments decode to the envelopes, byte for byte.
        let want_hex: Vec<String> = bytes_of(&envs).iter().map(hex::encode).collect();
        let got_hex: Vec<String> = py.cbor.iter().map(|(_, b)| hex::encode(b)).collect();
        assert_eq!(got_hex, want_hex);
        for (i, (name, _)) in py.cbor.iter().enumerate() {
            assert_eq!(name, &format!("{}-{}.cbor", i + 1, envs[i].kind()));
        }
        // Headers.
        assert_eq!(
            py.header("Message-ID"),
            Some(mail.message_id.bracketed().as_str())
        );
        assert_eq!(
            py.header("In-Reply-To"),
            Some("<parent-2@bob.example.test>")
        );
        let refs: Vec<&str> = py
            .header("References")
            .unwrap()
            .split_whitespace()
            .collect();
        assert_eq!(
            refs,
            ["<root-1@alice.example.test>", "<parent-2@bob.example.test>"]
        );
        assert_eq!(py.header("Subject"), Some("E-money: a receipt"));
        assert_eq!(py.header("From"), Some("Alice <alice@alice.example.test>"));
        assert_eq!(py.header("To"), Some("bob@bob.example.test"));
        assert_eq!(py.header("Auto-Submitted"), Some("auto-replied"));
        let kinds: Vec<&str> = envs.iter().map(Envelope::kind).collect();
        assert_eq!(py.header(KIND_HEADER), Some(kinds.join(", ").as_str()));
        assert_eq!(py.header("MIME-Version"), Some("1.0"));
    }

    // Non-ASCII subject and text.
    let mut mail = outgoing(vec![receipt(2)]);
    mail.subject = "Paiement reçu : 25,50 € — 支払い完了".into();
    mail.text = "Grüße. Это платёж. 日本語。\n".into();
    let py = python_read(&build_mail(&mail).unwrap());
    assert!(py.defects.is_empty(), "{:?}", py.defects);
    assert_eq!(py.header("Subject"), Some(mail.subject.as_str()));
    assert_eq!(py.texts.len(), 1);
    assert_eq!(crlf_to_lf(&py.texts[0]), mail.text);
}

fn python_write(linesep: &str, envs: &[Envelope], extra: &str) -> Vec<u8> {
    let mut input = String::from(
        "from\tCarol <carol@python.example.test>\n\
         to\tdan@example.test\n\
         subject\tFrom Python: ça marche\n\
         message-id\t<py-1@python.example.test>\n\
         text\tComposed by Python's email package.\n",
    );
    input.push_str(extra);
    for e in envs {
        input.push_str(&format!(
            "envelope\t{}\n",
            hex::encode(e.to_bytes().unwrap())
        ));
    }
    run_python(&["write", linesep], input.as_bytes())
}

#[test]
fn we_read_python_mails() {
    for linesep in ["crlf", "lf"] {
        for envs in [vec![receipt(4)], envelopes(), vec![payment()]] {
            let raw = python_write(
                linesep,
                &envs,
                "in-reply-to\t<ours-1@alice.example.test>\n\
                 references\t<root@x.test> <ours-1@alice.example.test>\n",
            );
            if linesep == "crlf" {
                assert!(raw.windows(2).any(|w| w == b"\r\n"));
            } else {
                assert!(!raw.contains(&b'\r'));
            }
            let got = parsed_ok(&raw);
            assert_eq!(got.envelopes, envs, "{linesep}");
            assert_eq!(bytes_of(&got.envelopes), bytes_of(&envs));
            assert_eq!(got.message_id, Some(mid("py-1@python.example.test")));
            assert_eq!(got.in_reply_to, Some(mid("ours-1@alice.example.test")));
            assert_eq!(
                got.references,
                vec![mid("root@x.test"), mid("ours-1@alice.example.test")]
            );
            assert_eq!(got.from.as_deref(), Some("carol@python.example.test"));
            assert_eq!(got.subject.as_deref(), Some("From Python: ça marche"));
            assert!(!got.auto_submitted);
            for e in &got.envelopes {
                e.verify().unwrap();
            }
        }
    }
    // And Python reads back what Python wrote, as a sanity check of the helper.
    let raw = python_write("crlf", &[receipt(4)], "");
    let py = python_read(&raw);
    assert!(py.defects.is_empty());
    assert_eq!(py.cbor.len(), 1);
    assert_eq!(py.cbor[0].1, receipt(4).to_bytes().unwrap());
}

// ---------------------------------------------------------------------------
// 3. Malformed mails

#[test]
fn not_mime_at_all() {
    let junk: Vec<u8> = (0u32..4096)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for raw in [
        &b""[..],
        b"\r\n",
        b"\r\n\r\n\r\n",
        b"hello, this is not an email at all",
        b"Lorem ipsum dolor sit amet\r\nconsectetur adipiscing elit\r\n",
        &[0u8; 64][..],
        &[0xffu8, 0xfe, 0x00, 0x01, 0x80, 0x81, 0x0a, 0x0d][..],
        &junk[..],
    ] {
        let r = parse_mail(raw);
        assert!(
            matches!(r, Err(MimeError::NotMime)),
            "gave {r:?}: {:?}",
            preview(&raw[..raw.len().min(200)])
        );
        // read_headers never fails and finds nothing useful.
        let h = read_headers(raw);
        assert_eq!(h.message_id, None);
        assert_eq!(h.in_reply_to, None);
    }
}

#[test]
fn mail_without_attachment() {
    // A plain text mail, single part.
    let raw =
        b"From: a@example.test\r\nSubject: hi\r\nMessage-ID: <t@x.test>\r\n\r\nJust text.\r\n";
    assert_eq!(parse_mail(raw).unwrap_err(), MimeError::NoAttachment);
    // Headers only.
    let raw = b"From: a@example.test\r\nSubject: hi\r\n";
    assert_eq!(parse_mail(raw).unwrap_err(), MimeError::NoAttachment);
    // multipart/mixed with text parts only.
    let raw = hand_mail("mixed", &[text_part("one"), text_part("two")]);
    assert_eq!(parse_mail(&raw).unwrap_err(), MimeError::NoAttachment);
    // multipart/alternative text + html.
    let html = part(&["Content-Type: text/html"], b"<p>hi</p>\r\n");
    let raw = hand_mail("alternative", &[text_part("hi"), html]);
    assert_eq!(parse_mail(&raw).unwrap_err(), MimeError::NoAttachment);
    // The headers of such a mail are still readable, for an error reply.
    let h = read_headers(&raw);
    assert_eq!(h.message_id, Some(mid("hand-1@example.test")));
    assert_eq!(h.in_reply_to, Some(mid("parent@example.test")));
    assert_eq!(h.from.as_deref(), Some("robot@example.test"));
}

#[test]
fn wrong_content_type() {
    let env = receipt(1).to_bytes().unwrap();
    let octet = part(
        &[
            "Content-Type: application/octet-stream",
            "Content-Disposition: attachment; filename=\"1-receipt.cbor\"",
            "Content-Transfer-Encoding: base64",
        ],
        b64_lines(&env).as_bytes(),
    );
    let raw = hand_mail("mixed", &[text_part("hi"), octet.clone()]);
    assert_eq!(
        parse_mail(&raw).unwrap_err(),
        MimeError::WrongContentType {
            found: "application/octet-stream".into()
        }
    );
    // Two wrong types are both named, sorted.
    let pdf = part(&["Content-Type: application/pdf"], b"%PDF-1.4\r\n");
    let raw = hand_mail("mixed", &[text_part("hi"), pdf, octet]);
    assert_eq!(
        parse_mail(&raw).unwrap_err(),
        MimeError::WrongContentType {
            found: "application/octet-stream, application/pdf".into()
        }
    );
    // The content type is matched without regard to case, and parameters
    // are allowed.
    let upper = part(
        &[
            "Content-Type: Application/CBOR; name=\"x.cbor\"",
            "Content-Transfer-Encoding: BASE64",
        ],
        b64_lines(&env).as_bytes(),
    );
    let raw = hand_mail("mixed", &[text_part("hi"), upper]);
    assert_eq!(parsed_ok(&raw).envelopes, vec![receipt(1)]);
}

#[test]
fn bad_base64() {
    let env = receipt(1).to_bytes().unwrap();
    let good = b64_lines(&env);
    let corruptions: Vec<String> = vec![
        // A character outside the alphabet.
        good.replacen('A', "!", 1),
        format!("*{}", &good[1..]),
        // Wrong padding, padding in the middle.
        good.replacen("\r\n", "=\r\n", 1),
        format!("{}AA=A\r\n", good.trim_end_matches(['=', '\r', '\n'])),
        // A length that is not a multiple of 4 (a character removed).
        good[1..].to_string(),
        // The base64url alphabet.
        base64::engine::general_purpose::URL_SAFE.encode(vec![0xfb; 300]),
    ];
    for (n, body) in corruptions.iter().enumerate() {
        let bad = part(
            &[
                "Content-Type: application/cbor",
                "Content-Transfer-Encoding: base64",
            ],
            body.as_bytes(),
        );
        let raw = hand_mail("mixed", &[text_part("hi"), bad.clone()]);
        assert_eq!(
            parse_mail(&raw).unwrap_err(),
            MimeError::BadBase64 { index: 0 },
            "corruption {n}: {body:?}"
        );
        // The index counts cbor attachments.
        let raw = hand_mail("mixed", &[text_part("hi"), cbor_part(&env), bad]);
        assert_eq!(
            parse_mail(&raw).unwrap_err(),
            MimeError::BadBase64 { index: 1 },
            "corruption {n} second"
        );
    }
}

#[test]
fn bad_envelope() {
    let env = payment().to_bytes().unwrap();
    for cut in [1, 2, 10, env.len() / 2, env.len() - 1] {
        let raw = hand_mail("mixed", &[text_part("hi"), cbor_part(&env[..cut])]);
        assert!(
            matches!(
                parse_mail(&raw),
                Err(MimeError::BadEnvelope {
                    index: 0,
                    source: EnvelopeError::Cbor(_)
                })
            ),
            "cut at {cut}"
        );
    }
    // An empty attachment, trailing bytes, and an unsupported version.
    let mut trailing = env.clone();
    trailing.push(0);
    let mut v2 = env.clone();
    assert_eq!(v2[1], 0x01, "version is the second byte");
    v2[1] = 0x02;
    for (body, want_version) in [(vec![], false), (trailing, false), (v2, true)] {
        let raw = hand_mail(
            "mixed",
            &[text_part("hi"), cbor_part(&env), cbor_part(&body)],
        );
        match parse_mail(&raw) {
            Err(MimeError::BadEnvelope { index: 1, source }) => {
                assert_eq!(
                    matches!(source, EnvelopeError::UnsupportedVersion(2)),
                    want_version,
                    "{source:?}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn too_many_attachments() {
    let env = receipt(1).to_bytes().unwrap();
    let mut parts = vec![text_part("hi")];
    parts.extend(std::iter::repeat_n(cbor_part(&env), MAX_ATTACHMENTS));
    assert_eq!(parsed_ok(&hand_mail("mixed", &parts)).envelopes.len(), 4);
    for extra in [1, 6] {
        let mut parts = vec![text_part("hi")];
        parts.extend(std::iter::repeat_n(
            cbor_part(&env),
            MAX_ATTACHMENTS + extra,
        ));
        assert_eq!(
            parse_mail(&hand_mail("mixed", &parts)).unwrap_err(),
            MimeError::TooManyAttachments {
                found: MAX_ATTACHMENTS + extra,
                max: MAX_ATTACHMENTS
            }
        );
    }
}

#[test]
fn attachment_too_large() {
    // Just over the limit, in a mail well under the mail limit.
    let raw_env = vec![0x5a; MAX_ENVELOPE_BYTES + 1];
    let raw = hand_mail("mixed", &[text_part("hi"), cbor_part(&raw_env)]);
    assert!(raw.len() < MAX_MAIL_BYTES);
    assert_eq!(
        parse_mail(&raw).unwrap_err(),
        MimeError::AttachmentTooLarge {
            index: 0,
            len: MAX_ENVELOPE_BYTES + 1,
            max: MAX_ENVELOPE_BYTES
        }
    );
    // A real envelope one byte over the limit, built by build_mail.
    let big = envelope_of_len(MAX_ENVELOPE_BYTES + 1);
    let mut mail = outgoing(vec![receipt(1), big]);
    mail.text = "Too big.".into();
    assert!(matches!(
        parse_mail(&build_mail(&mail).unwrap()),
        Err(MimeError::AttachmentTooLarge { index: 1, .. })
    ));
    // Far over, and not base64 (8bit): refused as well.
    let eight = part(
        &[
            "Content-Type: application/cbor",
            "Content-Transfer-Encoding: 8bit",
        ],
        &vec![b'x'; MAX_ENVELOPE_BYTES + 10],
    );
    let raw = hand_mail("mixed", &[text_part("hi"), eight]);
    assert!(matches!(
        parse_mail(&raw),
        Err(MimeError::AttachmentTooLarge { index: 0, .. })
    ));
}

#[test]
fn mail_too_large() {
    let env = receipt(1).to_bytes().unwrap();
    let mut raw = hand_mail("mixed", &[text_part("hi"), cbor_part(&env)]);
    let ok_len = raw.len();
    assert_eq!(parsed_ok(&raw).envelopes.len(), 1);
    // Pad the preamble-free end with an epilogue up to one byte over.
    raw.resize(MAX_MAIL_BYTES + 1, b'x');
    assert!(ok_len < raw.len());
    assert_eq!(
        parse_mail(&raw).unwrap_err(),
        MimeError::TooLarge {
            len: MAX_MAIL_BYTES + 1,
            max: MAX_MAIL_BYTES
        }
    );
    assert_eq!(read_headers(&raw).message_id, None);
    // At exactly the limit it is read.
    raw.truncate(MAX_MAIL_BYTES);
    assert_eq!(parsed_ok(&raw).envelopes.len(), 1);
}

/// application/cbor parts inside the message/rfc822 parts of `msg`.
fn nested_cbor_parts(msg: &mail_parser::Message<'_>) -> usize {
    msg.parts
        .iter()
        .filter_map(|p| match &p.body {
            mail_parser::PartType::Message(inner) => Some(
                inner
                    .parts
                    .iter()
                    .filter(|q| q.is_content_type("application", "cbor"))
                    .count()
                    + nested_cbor_parts(inner),
            ),
            _ => None,
        })
        .sum()
}

/// Our mail, quoted in a delivery status notification in several ways.
#[test]
fn bounce_does_not_yield_the_quoted_envelope() {
    let ours = build_mail(&outgoing(vec![receipt(1), receipt(2)])).unwrap();
    assert_eq!(parsed_ok(&ours).envelopes.len(), 2);
    let status = part(
        &["Content-Type: message/delivery-status"],
        b"Reporting-MTA: dns; mx.example.test\r\n\r\nFinal-Recipient: rfc822; bob@bob.example.test\r\nAction: failed\r\nStatus: 5.1.1\r\n",
    );
    let explanation = text_part("Your message could not be delivered.");
    let quoted = |ctype: &str, cte: Option<&str>, body: &[u8]| {
        let mut h = vec![format!("Content-Type: {ctype}")];
        if let Some(cte) = cte {
            h.push(format!("Content-Transfer-Encoding: {cte}"));
        }
        let h: Vec<&str> = h.iter().map(String::as_str).collect();
        part(&h, body)
    };
    let b64 = b64_lines(&ours);
    let half = &ours[..ours.len() * 6 / 10];
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "report with message/rfc822",
            hand_mail(
                "report; report-type=delivery-status",
                &[
                    explanation.clone(),
                    status.clone(),
                    quoted("message/rfc822", None, &ours),
                ],
            ),
        ),
        (
            "message/rfc822 7bit in mixed",
            hand_mail(
                "mixed",
                &[
                    explanation.clone(),
                    quoted("message/rfc822", Some("7bit"), &ours),
                ],
            ),
        ),
        (
            "message/rfc822 in base64",
            hand_mail(
                "mixed",
                &[
                    explanation.clone(),
                    quoted("message/rfc822", Some("base64"), b64.as_bytes()),
                ],
            ),
        ),
        (
            "message/global",
            hand_mail(
                "mixed",
                &[explanation.clone(), quoted("message/global", None, &ours)],
            ),
        ),
        (
            "digest with a default-typed part",
            hand_mail("digest", &[part(&[], &ours)]),
        ),
        (
            "truncated quote",
            hand_mail(
                "report; report-type=delivery-status",
                &[
                    explanation.clone(),
                    status.clone(),
                    quoted("message/rfc822", None, half),
                ],
            ),
        ),
        ("truncated quote, truncated bounce", {
            let mut m = hand_mail(
                "mixed",
                &[explanation.clone(), quoted("message/rfc822", None, &ours)],
            );
            let cut = m.len() - ours.len() * 4 / 10;
            m.truncate(cut);
            m
        }),
    ];
    for (what, raw) in cases {
        // The quote is really there, as a nested message with our cbor
        // attachments, for a careless reader to find.
        let msg = MessageParser::default().parse(&raw).unwrap();
        assert!(nested_cbor_parts(&msg) >= 1, "{what}: no quoted envelope");
        match parse_mail(&raw) {
            Ok(m) => panic!("{what}: the quoted envelopes were taken: {m:?}"),
            Err(MimeError::WrongContentType { .. } | MimeError::NoAttachment) => {}
            Err(e) => panic!("{what}: unexpected error {e:?}"),
        }
        // The bounce's own headers are still readable.
        assert_eq!(
            read_headers(&raw).message_id,
            Some(mid("hand-1@example.test")),
            "{what}"
        );
    }
}

#[test]
fn tolerant_where_it_is_harmless() {
    let env = receipt(1).to_bytes().unwrap();
    // LF line ends throughout.
    let raw = hand_mail("mixed", &[text_part("hi"), cbor_part(&env)]);
    let lf: Vec<u8> = raw.iter().copied().filter(|b| *b != b'\r').collect();
    assert_eq!(parsed_ok(&lf).envelopes, vec![receipt(1)]);
    // Base64 in other line lengths, with spaces and no final line end.
    let b64 = base64::engine::general_purpose::STANDARD.encode(&env);
    let odd: String = b64
        .as_bytes()
        .chunks(13)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(" \r\n\t");
    let p = part(
        &[
            "Content-Type: application/cbor",
            "Content-Transfer-Encoding: base64",
        ],
        odd.as_bytes(),
    );
    assert_eq!(
        parsed_ok(&hand_mail("mixed", &[text_part("hi"), p])).envelopes,
        vec![receipt(1)]
    );
    // Quoted-printable.
    let mut qp = String::new();
    for (i, b) in env.iter().enumerate() {
        if i > 0 && i % 24 == 0 {
            qp.push_str("=\r\n");
        }
        qp.push_str(&format!("={b:02X}"));
    }
    let p = part(
        &[
            "Content-Type: application/cbor",
            "Content-Transfer-Encoding: quoted-printable",
        ],
        qp.as_bytes(),
    );
    assert_eq!(
        parsed_ok(&hand_mail("mixed", &[text_part("hi"), p])).envelopes,
        vec![receipt(1)]
    );
    // A single-part mail whose body is the attachment.
    let mut single = b"From: a@example.test\r\nMessage-ID: <s@x.test>\r\n".to_vec();
    single.extend(cbor_part(&env));
    let got = parsed_ok(&single);
    assert_eq!(got.envelopes, vec![receipt(1)]);
    assert_eq!(got.message_id, Some(mid("s@x.test")));
    // Envelopes inside a nested multipart (a client that wraps everything
    // in multipart/alternative or related) are still this mail's own.
    let inner_boundary = "inner-b";
    let mut inner = format!("--{inner_boundary}\r\n").into_bytes();
    inner.extend(cbor_part(&env));
    inner.extend(format!("--{inner_boundary}--\r\n").as_bytes());
    let nested = part(
        &[&format!(
            "Content-Type: multipart/related; boundary=\"{inner_boundary}\""
        )],
        &inner,
    );
    assert_eq!(
        parsed_ok(&hand_mail("mixed", &[text_part("hi"), nested])).envelopes,
        vec![receipt(1)]
    );
}

// ---------------------------------------------------------------------------
// build_mail never panics, and what it builds reads back.

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 200,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn build_never_panics_and_reads_back(
        subject in "\\PC{0,150}",
        text in "(\\PC|\r|\n|\t){0,400}",
        date in prop_oneof![0u64..=253_402_300_799, any::<u64>()],
        from in prop_oneof![
            Just("alice@example.test".to_string()),
            "[a-z]{1,10}@[a-z]{1,10}\\.test",
            "\\PC{0,30}",
        ],
        n in 1usize..=MAX_ATTACHMENTS,
        auto_reply in any::<bool>(),
    ) {
        let envs = envelopes()[..n].to_vec();
        let mut mail = outgoing(envs.clone());
        mail.subject = subject.clone();
        mail.text = text;
        mail.date = Timestamp::from_unix(date);
        mail.from = from;
        mail.auto_reply = auto_reply;
        let late = date > 253_402_300_799;
        let bad_from = parse_address(&mail.from).is_err();
        let raw = match build_mail(&mail) {
            Ok(raw) => raw,
            Err(MimeError::BadAddress(_)) if bad_from => return Ok(()),
            Err(MimeError::Build(_)) if late => return Ok(()),
            Err(e) => return Err(TestCaseError::fail(format!("{e:?}"))),
        };
        prop_assert!(!late && !bad_from);
        let got = parse_mail(&raw);
        prop_assert!(got.is_ok(), "{:?}\n{}", got, preview(&raw));
        let got = got.unwrap();
        prop_assert_eq!(&got.envelopes, &envs);
        prop_assert_eq!(got.message_id.as_ref(), Some(&mail.message_id));
        prop_assert_eq!(got.auto_submitted, auto_reply);
        // White space does not survive exactly: leading and trailing white
        // space is not part of a header's value, and lettre writes a run of
        // it between two non-ASCII words as bare space between two RFC 2047
        // encoded words, which readers drop ("é  é" reads back "éé"). The
        // subject is informational: compare what is not white space.
        let words = |s: &str| s.split_whitespace().collect::<String>();
        // (At most 150 characters: read_headers keeps 200.)
        prop_assert_eq!(words(got.subject.as_deref().unwrap_or("")), words(&subject));
        let msg = MessageParser::default().parse(&raw).unwrap();
        prop_assert_eq!(msg.date().map(|d| d.to_timestamp()), Some(date as i64));
    }
}
