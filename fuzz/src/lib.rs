//! What the fuzz targets share with the seed generator: the fixed keys,
//! licenses and sample messages of the testkit, and the input format of the
//! `note` target.
//!
//! Everything here is built once per process (a `OnceLock`), so a target
//! pays for signing the samples once, not per input.

#![allow(clippy::expect_used)] // fixtures: a failure here is a broken harness, not input

use std::collections::HashMap;
use std::sync::OnceLock;

use mailer::crypto::{verify_batch, Digest, PublicKey, SecretKey};
use mailer::envelope::{Body, Envelope, EnvelopeError, Signed};
use mailer::license::{
    CardKeys, License, LicenseBook, Revocation, RevocationList, RevocationReason, Revocations,
};
use mailer::limits::{
    MAX_CHAIN, MAX_CONFLICTING, MAX_ENVELOPE_BYTES, MAX_EVIDENCE, MAX_KIND_LEN, MAX_LICENSES,
    MAX_NOTES, MAX_RATES, MAX_REVOCATIONS, MAX_TEXT,
};
use mailer::messages::{DepositOutcome, Message};
use mailer::mime::{build_mail, MessageId, OutgoingMail};
use mailer::money::{Currency, Rate, Timestamp};
use mailer::note::{Expect, Link, Note, NotePolicy};
use mailer::testkit::{self, TestIssuer, NOW};

// ---------------------------------------------------------------------------
// Keys

/// Every key the testkit can make (`testkit::key(seed)` for each seed byte),
/// found by its public key: the `note` target re-signs with them.
#[derive(Debug)]
pub struct Keys {
    secrets: Vec<SecretKey>,
    publics: Vec<PublicKey>,
    by_public: HashMap<PublicKey, u8>,
}

impl Keys {
    pub fn get() -> &'static Keys {
        static KEYS: OnceLock<Keys> = OnceLock::new();
        KEYS.get_or_init(|| {
            let secrets: Vec<SecretKey> = (0..=u8::MAX).map(testkit::key).collect();
            let publics: Vec<PublicKey> = secrets.iter().map(SecretKey::public).collect();
            let by_public = publics
                .iter()
                .enumerate()
                .map(|(i, p)| (*p, i as u8))
                .collect();
            Keys {
                secrets,
                publics,
                by_public,
            }
        })
    }

    pub fn public(&self, seed: u8) -> PublicKey {
        self.publics[usize::from(seed)]
    }

    /// The seed of `public`, if the testkit made it.
    pub fn seed_of(&self, public: &PublicKey) -> Option<u8> {
        self.by_public.get(public).copied()
    }

    /// The secret key behind `public`, if the testkit made it.
    pub fn secret_of(&self, public: &PublicKey) -> Option<&SecretKey> {
        self.by_public
            .get(public)
            .map(|s| &self.secrets[usize::from(*s)])
    }
}

// ---------------------------------------------------------------------------
// Sample messages (the `envelope` and `mime` targets)

/// One valid, signed message of every kind (the testkit's), plus an
/// envelope of a kind this software does not know.
pub fn samples() -> &'static [Envelope] {
    static SAMPLES: OnceLock<Vec<Envelope>> = OnceLock::new();
    SAMPLES.get_or_init(|| {
        let mut v: Vec<Envelope> = testkit::sample_messages()
            .into_iter()
            .map(Message::into_envelope)
            .collect();
        v.push(
            Envelope::seal("from-the-future", vec![0xa0], &testkit::key(40))
                .expect("seal unknown kind"),
        );
        v
    })
}

/// The samples by id (kind, body and signer: not the signature).
pub fn sample_by_id() -> &'static HashMap<Digest, Envelope> {
    static BY_ID: OnceLock<HashMap<Digest, Envelope>> = OnceLock::new();
    BY_ID.get_or_init(|| samples().iter().map(|e| (e.id(), e.clone())).collect())
}

/// A protocol mail carrying `envelopes`, as `build_mail` writes it (with a
/// fixed boundary).
pub fn mail_of(envelopes: Vec<Envelope>, n: u8, auto_reply: bool) -> Vec<u8> {
    let first = envelopes
        .first()
        .map(Envelope::id)
        .unwrap_or(Digest([n; 32]));
    let mail = OutgoingMail {
        from: "alice@a.example.test".into(),
        to: "issuer@jpy.example.test".into(),
        subject: format!("E-money: sample {n}"),
        message_id: MessageId::from_digest(&first, "a.example.test").expect("message id"),
        in_reply_to: (n % 2 == 1)
            .then(|| MessageId::parse("<parent@jpy.example.test>").expect("parent id")),
        references: (0..n % 3)
            .map(|i| MessageId::parse(&format!("<r{i}@a.example.test>")).expect("reference"))
            .collect(),
        date: NOW,
        text: "A protocol mail (sample).\n".into(),
        envelopes,
        auto_reply,
    };
    let raw = build_mail(&mail).expect("build sample mail");
    // lettre draws a random boundary: fix it, so the seeds are the same on
    // every run.
    let text = String::from_utf8(raw).expect("a built mail is ASCII");
    let start = text.find("boundary=\"").expect("a multipart mail") + "boundary=\"".len();
    let len = text[start..].find('"').expect("a quoted boundary");
    let boundary = text[start..start + len].to_string();
    text.replace(&boundary, &format!("emoney-fuzz-boundary-{n:03}"))
        .into_bytes()
}

// ---------------------------------------------------------------------------
// Notes (the `note` target)

/// The policy's issuer (JPY).
pub const ISSUER_SEED: u8 = 1;
/// Cards licensed for a year from a day before `NOW`.
pub const LICENSED: std::ops::RangeInclusive<u8> = 10..=15;
/// A card whose license ended a month before `NOW`.
pub const LAPSED: u8 = 16;
/// A card the issuer never licensed.
pub const UNLICENSED: u8 = 17;

/// The card of a seed, as the testkit makes it.
pub fn card_keys(seed: u8) -> CardKeys {
    testkit::card(seed).keys()
}

/// The JPY issuer and the license book every note is checked against.
#[derive(Debug)]
pub struct NoteWorld {
    pub issuer: PublicKey,
    pub book: LicenseBook,
    /// Valid notes: chains of 0 to 6 links, some with partial payments.
    pub notes: Vec<Note>,
}

impl NoteWorld {
    pub fn get() -> &'static NoteWorld {
        static WORLD: OnceLock<NoteWorld> = OnceLock::new();
        WORLD.get_or_init(NoteWorld::build)
    }

    fn build() -> NoteWorld {
        let mut jpy = TestIssuer::new(ISSUER_SEED, Currency::JPY);
        for c in LICENSED {
            jpy.license(&card_keys(c));
        }
        let mut book = jpy.book();
        book.add_trusted(License {
            currency: Currency::JPY,
            card: card_keys(LAPSED),
            issued_at: NOW.saturating_sub_secs(400 * 86_400),
            expires_at: NOW.saturating_sub_secs(30 * 86_400),
        });
        let mut notes = Vec::new();
        for (i, value) in [1_000u64, 1, 50_000, u64::MAX].into_iter().enumerate() {
            let first = 10 + i as u8 % 3;
            let mut note = jpy.issue(value, &card_keys(first));
            notes.push(note.clone());
            // Pass it along the licensed cards, a part at a time.
            let mut holder = first;
            for step in 0..6u8 {
                let payee = 10 + (holder - 10 + 1 + step % 2) % 6;
                let held = note.held().minor_units();
                let amount = if step % 2 == 0 { held } else { held / 2 + 1 };
                note = testkit::pay(
                    &note,
                    &testkit::card(holder),
                    &card_keys(payee),
                    amount.max(1),
                    testkit::challenge(step + 1),
                );
                holder = payee;
                notes.push(note.clone());
            }
        }
        NoteWorld {
            issuer: testkit::key(ISSUER_SEED).public(),
            book,
            notes,
        }
    }
}

/// Length of the header before a note's CBOR in a `note` input.
pub const NOTE_HEADER: usize = 12;

/// Flags of a `note` input (byte 0 of the header).
pub mod flag {
    /// Re-sign every envelope whose signer the testkit knows, over the bytes
    /// as they are, so that mutated bodies get past the signature checks.
    pub const RESIGN: u8 = 1;
    /// Make each link continue the chain (its parent the state before it,
    /// its signer that state's holder, re-signed: see [`rechain`]), so that
    /// mutated chains get past the chain checks.
    pub const RECHAIN: u8 = 2;
    /// The policy takes expired notes (the issuer's, on deposit).
    pub const ACCEPT_EXPIRED: u8 = 4;
    /// Which [`mailer::note::Expect`]: bits 3 and 4 (0 and 3 paid, 1 held,
    /// 2 issued).
    pub const EXPECT_SHIFT: u8 = 3;
    /// Revoke one card (header bytes 3 and 8..12).
    pub const REVOKE: u8 = 32;
}

/// A decoded `note` input: the policy's parts and the note's bytes.
///
/// Header: `[flags, card seed, challenge seed, revoked card seed,
/// now offset (i32 LE, seconds from testkit::NOW), revoked-at offset (i32 LE)]`,
/// then the note in CBOR.
#[derive(Debug)]
pub struct NoteInput<'a> {
    pub flags: u8,
    pub card: u8,
    pub challenge: u8,
    pub revoked: u8,
    pub now: Timestamp,
    pub revoked_at: Timestamp,
    pub note: &'a [u8],
}

fn offset(base: Timestamp, delta: i32) -> Timestamp {
    if delta >= 0 {
        base.saturating_add_secs(u64::from(delta.unsigned_abs()))
    } else {
        base.saturating_sub_secs(u64::from(delta.unsigned_abs()))
    }
}

impl<'a> NoteInput<'a> {
    pub fn parse(data: &'a [u8]) -> Option<NoteInput<'a>> {
        let (h, note) = data.split_at_checked(NOTE_HEADER)?;
        let i32_at = |i: usize| i32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        Some(NoteInput {
            flags: h[0],
            card: h[1],
            challenge: h[2],
            revoked: h[3],
            now: offset(NOW, i32_at(4)),
            revoked_at: offset(NOW, i32_at(8)),
            note,
        })
    }

    pub fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }

    pub fn expect(&self) -> Expect {
        let keys = Keys::get();
        match (self.flags >> flag::EXPECT_SHIFT) & 3 {
            1 => Expect::Held {
                holder: keys.public(self.card),
            },
            2 => Expect::Issued {
                holder: keys.public(self.card),
            },
            _ => Expect::Paid {
                payee: keys.public(self.card),
                challenge: testkit::challenge(self.challenge),
            },
        }
    }

    pub fn revocations(&self) -> Revocations {
        if !self.has(flag::REVOKE) {
            return Revocations::none();
        }
        Revocations::from_list(&RevocationList {
            currency: Currency::JPY,
            version: 1,
            issued_at: NOW,
            entries: vec![Revocation {
                payment_key: Keys::get().public(self.revoked),
                revoked_at: self.revoked_at,
                reason: RevocationReason::Operator {
                    note: "fuzz".into(),
                },
            }],
        })
    }

    /// The policy, given the parts it borrows.
    pub fn policy<'p>(&self, world: &'p NoteWorld, revocations: &'p Revocations) -> NotePolicy<'p> {
        NotePolicy {
            issuer: &world.issuer,
            currency: Currency::JPY,
            now: self.now,
            licenses: &world.book,
            revocations,
            expect: self.expect(),
            accept_expired: self.has(flag::ACCEPT_EXPIRED),
        }
    }

    /// The header and note of an input, as the seed generator writes it.
    pub fn encode(
        flags: u8,
        card: u8,
        challenge: u8,
        revoked: (u8, i32),
        now: i32,
        note: &Note,
    ) -> Vec<u8> {
        let mut v = vec![flags, card, challenge, revoked.0];
        v.extend_from_slice(&now.to_le_bytes());
        v.extend_from_slice(&revoked.1.to_le_bytes());
        v.extend_from_slice(&mailer::cbor::to_vec(note).expect("encode note"));
        v
    }
}

/// The note of a `note` input, decoded as a payment's notes are and then
/// repaired as its flags say ([`rechain`], then [`resign`]). `None` when it
/// does not decode, or carries so many links that verification refuses it
/// before any work.
pub fn prepared_note(input: &NoteInput<'_>) -> Option<Note> {
    let mut note: Note = mailer::cbor::from_slice(input.note, MAX_ENVELOPE_BYTES).ok()?;
    if note.links.len() > MAX_CHAIN * 2 {
        return None;
    }
    if input.has(flag::RECHAIN) {
        rechain(&mut note);
    }
    if input.has(flag::RESIGN) {
        if let Some(s) = resign(&note.issuance) {
            note.issuance = s;
        }
        for link in &mut note.links {
            if let Some(s) = resign(link) {
                *link = s;
            }
        }
    }
    Some(note)
}

/// Re-signs `signed` with the testkit key of its signer, over its body
/// bytes as they are (nothing re-encoded). `None` when the signer is not a
/// testkit key.
pub fn resign<T: Body>(signed: &Signed<T>) -> Option<Signed<T>> {
    let env = signed.envelope();
    let key = Keys::get().secret_of(env.signer())?;
    let sealed = Envelope::seal(env.kind(), env.body().to_vec(), key).ok()?;
    Signed::from_envelope(sealed).ok()
}

/// Makes each link continue the chain: its parent the state before it and
/// its signer that state's holder, re-signing the links it changes with the
/// holder's testkit key (a link whose holder is not a testkit key is left
/// as it is).
pub fn rechain(note: &mut Note) {
    let mut previous = note.issuance.id();
    let mut holder = note.issuance.unverified().holder;
    for link in note.links.iter_mut().take(MAX_CHAIN + 1) {
        if link.unverified().parent != previous || link.signer() != &holder {
            let body = Link {
                parent: previous,
                ..link.unverified().clone()
            };
            if let Some(key) = Keys::get().secret_of(&holder) {
                if let Ok(s) = Signed::sign(body, key) {
                    *link = s;
                }
            }
        }
        previous = link.id();
        holder = link.unverified().payee;
    }
}

// ---------------------------------------------------------------------------
// Invariants of whatever decodes (the `envelope` and `mime` targets)

/// Checks what holds of every envelope the decoders accept, `received` bytes
/// long as it arrived: it is within the limits, its encoding as we send it
/// decodes to the same envelope and is a fixed point, and decoding it as a
/// message gives the same answer as decoding the received bytes did.
pub fn check_envelope(
    env: &Envelope,
    received: usize,
    as_received: &Result<Message, EnvelopeError>,
) {
    assert!(received <= MAX_ENVELOPE_BYTES, "accepted {received} bytes");
    let kind = env.kind();
    assert!(
        !kind.is_empty()
            && kind.len() <= MAX_KIND_LEN
            && kind
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
        "accepted kind {kind:?}"
    );
    let ours = env.to_bytes().expect("a decoded envelope encodes");
    assert!(
        ours.len() <= received,
        "re-encoding grows an envelope from {received} to {} bytes",
        ours.len()
    );
    let again = Envelope::from_bytes(&ours).expect("our encoding of an envelope decodes");
    assert_eq!(&again, env, "our encoding decodes to another envelope");
    assert_eq!(again.id(), env.id());
    assert_eq!(
        again.to_bytes().expect("encodes"),
        ours,
        "not a fixed point"
    );
    let msg = Message::from_bytes(&ours);
    assert_eq!(
        &msg, as_received,
        "a message decodes differently from our encoding of its envelope"
    );
    if let Ok(msg) = &msg {
        assert_eq!(msg.envelope(), env);
        assert_eq!(
            Message::KINDS.contains(&kind),
            !matches!(msg, Message::Unknown(_)),
            "kind {kind:?}"
        );
        check_message(msg);
    }
    check_signature(env);
}

/// An envelope that says what a sample says (same kind, body and signer)
/// verifies exactly when it carries the sample's signature, one by one and
/// in a batch alike. (Any other envelope needs a forged signature.)
pub fn check_signature(env: &Envelope) {
    let Some(sample) = sample_by_id().get(&env.id()) else {
        return;
    };
    let one = env.verify().is_ok();
    let input = env.signed_bytes();
    let batch = verify_batch(&[(env.signer(), input.as_slice(), env.signature())]).is_ok();
    assert_eq!(one, batch, "batch and one-by-one verification disagree");
    assert_eq!(
        one,
        env.signature() == sample.signature(),
        "a signature other than the signer's verifies, or the signer's does not"
    );
}

/// Every decoded body is within the limits of `limits.rs`, and encoding it
/// again gives a body that decodes to the same value.
pub fn check_message(msg: &Message) {
    fn notes(n: &[Note], licenses: usize) {
        assert!(n.len() <= MAX_NOTES, "{} notes", n.len());
        assert!(licenses <= MAX_LICENSES, "{licenses} licenses");
        for note in n {
            assert!(note.links.len() <= MAX_CHAIN, "{} links", note.links.len());
        }
    }
    fn text(t: &str, max: usize) {
        assert!(t.len() <= max, "text of {} bytes", t.len());
    }
    fn rate(r: &Rate) {
        assert!(r.is_valid(), "rate {r:?}");
    }
    match msg {
        Message::EnrollRequest(s) => text(&s.unverified().code, 128),
        Message::Enrolled(s) => text(&s.unverified().account, MAX_TEXT),
        Message::NotesIssued(s) => notes(&s.unverified().notes, 0),
        Message::Deposit(s) => notes(&s.unverified().notes, s.unverified().licenses.len()),
        Message::DepositReceipt(s) => {
            let results = &s.unverified().results;
            assert!(results.len() <= MAX_NOTES);
            for r in results {
                match &r.result {
                    DepositOutcome::Refused { reason, .. } => text(reason, MAX_TEXT),
                    DepositOutcome::Overspent { proof } => {
                        assert!(proof.path.len() <= MAX_CHAIN);
                        assert!(proof.conflicting.len() <= MAX_CONFLICTING);
                    }
                    _ => {}
                }
            }
        }
        Message::RevocationList(s) => {
            let entries = &s.unverified().entries;
            assert!(entries.len() <= MAX_REVOCATIONS);
            for e in entries {
                if let RevocationReason::Operator { note } = &e.reason {
                    text(note, MAX_TEXT);
                }
            }
        }
        Message::PaymentInvite(s) => text(&s.unverified().memo, MAX_TEXT),
        Message::Payment(s) => {
            let p = s.unverified();
            text(&p.memo, MAX_TEXT);
            notes(&p.notes, p.licenses.len());
        }
        Message::RateSheet(s) => {
            assert!(s.unverified().rates.len() <= MAX_RATES);
            s.unverified().rates.iter().for_each(|q| rate(&q.rate));
        }
        Message::Offer(s) => rate(&s.unverified().terms.rate),
        Message::SignedOffer(s) => rate(&s.unverified().terms.rate),
        Message::FirstPayment(s) => notes(&s.unverified().notes, s.unverified().licenses.len()),
        Message::SecondPayment(s) => notes(&s.unverified().notes, s.unverified().licenses.len()),
        Message::Refund(s) => notes(&s.unverified().notes, s.unverified().licenses.len()),
        Message::Error(s) => {
            let e = s.unverified();
            text(&e.reason, MAX_TEXT);
            if let Some(k) = &e.request_kind {
                text(k, MAX_KIND_LEN);
            }
            assert!(e.evidence.len() <= MAX_EVIDENCE);
        }
        _ => {}
    }
    // The body, encoded as we would send it, decodes to the same value.
    match msg {
        Message::LicenseRequest(s) => round_trip(s),
        Message::LicenseGranted(s) => round_trip(s),
        Message::License(s) => round_trip(s),
        Message::RevocationListRequest(s) => round_trip(s),
        Message::RevocationList(s) => round_trip(s),
        Message::EnrollRequest(s) => round_trip(s),
        Message::Enrolled(s) => round_trip(s),
        Message::WithdrawRequest(s) => round_trip(s),
        Message::NotesIssued(s) => round_trip(s),
        Message::Deposit(s) => round_trip(s),
        Message::DepositReceipt(s) => round_trip(s),
        Message::PaymentInvite(s) => round_trip(s),
        Message::PaymentAddress(s) => round_trip(s),
        Message::Payment(s) => round_trip(s),
        Message::Receipt(s) => round_trip(s),
        Message::RateSheet(s) => round_trip(s),
        Message::QuoteRequest(s) => round_trip(s),
        Message::Offer(s) => round_trip(s),
        Message::OfferAcceptance(s) => round_trip(s),
        Message::SignedOffer(s) => round_trip(s),
        Message::FirstPayment(s) => round_trip(s),
        Message::SecondPaymentRequest(s) => round_trip(s),
        Message::SecondPayment(s) => round_trip(s),
        Message::Refund(s) => round_trip(s),
        Message::Error(s) => round_trip(s),
        Message::Issuance(s) => round_trip(s),
        Message::Link(s) => round_trip(s),
        Message::Unknown(_) => {}
        other => panic!("a kind the fuzz target does not know: {}", other.kind()),
    }
    let _ = msg.describe();
}

fn round_trip<T: Body + PartialEq>(s: &Signed<T>) {
    let body = s.unverified();
    let bytes = mailer::cbor::to_vec(body).expect("a decoded body encodes");
    let env = Envelope::from_parts(
        T::KIND.to_string(),
        bytes.clone(),
        *s.signer(),
        *s.envelope().signature(),
    )
    .expect("a known kind");
    let back = Signed::<T>::from_envelope(env).expect("a decoded body, encoded again, decodes");
    assert_eq!(back.unverified(), body, "a body changes on its way back");
    assert_eq!(
        mailer::cbor::to_vec(back.unverified()).expect("encodes"),
        bytes,
        "a body's encoding is not a fixed point"
    );
}
