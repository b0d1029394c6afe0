//! Writes the seed corpus of every fuzz target from real samples, and the
//! `note` target's dictionary:
//! `cargo run --manifest-path fuzz/Cargo.toml --example seeds [DIR]`
//! writes DIR/corpus/TARGET/seed-* and DIR/dict/note.dict (DIR defaults to
//! `fuzz/`).
//!
//! - `envelope/`: the encoding of one valid message of every kind (the
//!   testkit's samples) and of an envelope of an unknown kind.
//! - `mime/`: mails built by `mime::build_mail` carrying each sample, and
//!   mails of two to four envelopes, plain and as automatic replies.
//! - `note/`: valid notes with chains of 0 to 6 links (whole and partial
//!   payments), each with a header whose policy accepts it, and variants
//!   (held, expired, revoked, re-signed); and notes refused by each of the
//!   later checks (unlicensed, lapsed and revoked signers, zero values,
//!   back-dated links, the chain limit, a foreign issuer or currency).
//!   The dictionary holds the testkit's public keys as CBOR byte strings,
//!   so that mutations can hand a note to another known card.

#![allow(clippy::expect_used)] // a generator: a failure is a broken build of the corpus

use std::fs;
use std::path::{Path, PathBuf};

use emoney_fuzz::{
    card_keys, flag, mail_of, samples, Keys, NoteInput, NoteWorld, LAPSED, UNLICENSED,
};
use mailer::envelope::Signed;
use mailer::limits::MAX_CHAIN;
use mailer::money::{Amount, Currency, Timestamp};
use mailer::note::{Link, Note};
use mailer::testkit::{self, TestIssuer, NOW};

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::write(dir.join(name), bytes).expect("write a seed");
}

fn main() {
    let fuzz = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let root = fuzz.join("corpus");
    let dirs: Vec<PathBuf> = ["envelope", "mime", "note"]
        .iter()
        .map(|t| root.join(t))
        .collect();
    for d in &dirs {
        fs::create_dir_all(d).expect("create a corpus directory");
    }
    let (envelope, mime, note) = (&dirs[0], &dirs[1], &dirs[2]);

    let samples = samples();
    for (i, env) in samples.iter().enumerate() {
        let bytes = env.to_bytes().expect("encode a sample");
        write(envelope, &format!("seed-{i:02}-{}", env.kind()), &bytes);
        let raw = mail_of(vec![env.clone()], i as u8, i % 4 == 0);
        write(mime, &format!("seed-{i:02}-{}", env.kind()), &raw);
    }
    for n in 2..=4usize {
        let envs: Vec<_> = samples.iter().skip(n * 3).take(n).cloned().collect();
        write(
            mime,
            &format!("seed-multi-{n}"),
            &mail_of(envs, n as u8, n == 3),
        );
    }

    let keys = Keys::get();
    let world = NoteWorld::get();
    for (i, n) in world.notes.iter().enumerate() {
        let holder = keys.seed_of(&n.holder()).expect("a testkit card");
        let (expect, card, challenge) = match n.links.last() {
            None => (2, holder, 0),
            Some(l) => (0, holder, l.unverified().challenge.0[0]),
        };
        let flags = expect << flag::EXPECT_SHIFT;
        let seed = |name: &str, flags: u8, revoked: (u8, i32), now: i32| {
            let bytes = NoteInput::encode(flags, card, challenge, revoked, now, n);
            write(note, &format!("seed-{i:02}-{name}"), &bytes);
        };
        seed("accepted", flags, (0, 0), 0);
        if i % 3 == 0 {
            seed("held", 1 << flag::EXPECT_SHIFT, (0, 0), 60);
            seed("resigned", flags | flag::RESIGN | flag::RECHAIN, (0, 0), 0);
        }
        if i % 5 == 1 {
            seed(
                "revoked-later",
                flags | flag::REVOKE,
                (n.links.first().map_or(holder, |_| 10), 3_600),
                0,
            );
            seed(
                "expired",
                flags | flag::ACCEPT_EXPIRED,
                (0, 0),
                400 * 86_400,
            );
        }
    }
    refused_notes(note);

    // The dictionary: the keys of the testkit's issuers and cards (and a few
    // others), as CBOR byte strings.
    let mut dict = String::from(
        "# Public keys the note target can re-sign with, as CBOR byte strings\n\
         # (written by fuzz/examples/seeds.rs).\n",
    );
    for seed in [1u8, 2, 3, 10, 11, 12, 13, 14, 15, 16, 17, 20, 21, 40] {
        let mut entry = String::from("\"\\x58\\x20");
        for b in keys.public(seed).as_bytes() {
            entry.push_str(&format!("\\x{b:02x}"));
        }
        dict.push_str(&format!("key_{seed}={entry}\"\n"));
    }
    fs::create_dir_all(fuzz.join("dict")).expect("create the dictionary directory");
    fs::write(fuzz.join("dict/note.dict"), dict).expect("write the dictionary");
    println!("seeds written under {}", root.display());
}

/// A link from the current state of `note`, signed by `signer`, whatever it
/// says (so it can be refused).
fn link(note: &Note, signer: u8, payee: u8, amount: u64, at: Timestamp) -> Note {
    let body = Link {
        parent: note.state(),
        payee: Keys::get().public(payee),
        amount: Amount::new(amount),
        challenge: testkit::challenge(payee),
        signed_at: at,
    };
    let mut next = note.clone();
    next.links
        .push(Signed::sign(body, &testkit::key(signer)).expect("sign a link"));
    next
}

/// Notes refused by each check after the signatures, each with a header
/// expecting its payee, so that the fuzzer starts next to those checks.
fn refused_notes(dir: &Path) {
    let paid = |flags: u8| flags; // expect = paid (0)
    let mut n = 0;
    let mut seed = |name: &str, flags: u8, revoked: (u8, i32), now: i32, note: &Note| {
        let payee = note
            .links
            .last()
            .map_or(note.holder(), |l| l.unverified().payee);
        let card = Keys::get().seed_of(&payee).expect("a testkit card");
        let bytes = NoteInput::encode(flags, card, card, revoked, now, note);
        write(dir, &format!("seed-edge-{n:02}-{name}"), &bytes);
        n += 1;
    };
    let mut jpy = TestIssuer::new(1, Currency::JPY);
    let base = jpy.issue(1_000, &card_keys(10));
    let one = link(&base, 10, 11, 1_000, NOW);
    seed("ok", paid(0), (0, 0), 0, &one);
    seed(
        "not-licensed",
        paid(0),
        (0, 0),
        0,
        &link(
            &link(&base, 10, UNLICENSED, 500, NOW),
            UNLICENSED,
            11,
            500,
            NOW,
        ),
    );
    seed(
        "license-lapsed",
        paid(0),
        (0, 0),
        0,
        &link(&link(&base, 10, LAPSED, 500, NOW), LAPSED, 11, 500, NOW),
    );
    let two = link(&one, 11, 12, 700, NOW);
    seed("revoked-before", paid(flag::REVOKE), (11, -60), 0, &two);
    seed(
        "revoked-paying-now",
        paid(flag::REVOKE),
        (11, 60),
        120,
        &two,
    );
    seed("revoked-after", paid(flag::REVOKE), (11, 60), 0, &two);
    seed(
        "zero-value",
        2 << flag::EXPECT_SHIFT,
        (0, 0),
        0,
        &jpy.issue(0, &card_keys(10)),
    );
    seed(
        "zero-amount",
        paid(0),
        (0, 0),
        0,
        &link(&base, 10, 11, 0, NOW),
    );
    seed(
        "exceeds-held",
        paid(0),
        (0, 0),
        0,
        &link(&one, 11, 12, 1_001, NOW),
    );
    seed(
        "back-dated",
        paid(0),
        (0, 0),
        0,
        &link(&base, 10, 11, 1_000, NOW.saturating_sub_secs(7_200)),
    );
    seed("future", paid(0), (0, 0), -3_600, &one);
    let mut long = base.clone();
    for i in 0..=MAX_CHAIN {
        let (from, to) = if i % 2 == 0 { (10, 11) } else { (11, 10) };
        long = link(&long, from, to, 1_000, NOW);
        if long.links.len() == MAX_CHAIN {
            seed("chain-at-limit", paid(0), (0, 0), 0, &long);
        }
    }
    seed("chain-too-long", paid(0), (0, 0), 0, &long);
    let mut usd = TestIssuer::new(2, Currency::USD);
    seed(
        "foreign-issuer",
        paid(0),
        (0, 0),
        0,
        &link(&usd.issue(1_000, &card_keys(10)), 10, 11, 1_000, NOW),
    );
    let mut other = TestIssuer::new(1, Currency::USD);
    seed(
        "wrong-currency",
        paid(0),
        (0, 0),
        0,
        &link(&other.issue(1_000, &card_keys(10)), 10, 11, 1_000, NOW),
    );
    seed(
        "wrong-signer",
        paid(0),
        (0, 0),
        0,
        &link(&base, 12, 11, 1_000, NOW),
    );
    seed(
        "wrong-signer-rechained",
        paid(flag::RECHAIN),
        (0, 0),
        0,
        &link(&base, 12, 11, 1_000, NOW),
    );
    // Paid to card 11 against challenge 11: expected against challenge 12.
    let bytes = NoteInput::encode(paid(0), 11, 12, (0, 0), 0, &one);
    write(dir, "seed-edge-wrong-challenge", &bytes);
}
