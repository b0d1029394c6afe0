//! Writes the seed corpus of every fuzz target from real samples:
//! `cargo run --manifest-path fuzz/Cargo.toml --example seeds [DIR]`
//! (DIR defaults to `fuzz/corpus`).
//!
//! - `envelope/`: the encoding of one valid message of every kind (the
//!   testkit's samples) and of an envelope of an unknown kind.
//! - `mime/`: mails built by `mime::build_mail` carrying each sample, and
//!   mails of two to four envelopes, plain and as automatic replies.
//! - `note/`: valid notes with chains of 0 to 6 links (whole and partial
//!   payments), each with a header whose policy accepts it, and variants
//!   (held, expired, revoked, re-signed).

#![allow(clippy::expect_used)] // a generator: a failure is a broken build of the corpus

use std::fs;
use std::path::{Path, PathBuf};

use emoney_fuzz::{flag, mail_of, samples, Keys, NoteInput, NoteWorld};

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::write(dir.join(name), bytes).expect("write a seed");
}

fn main() {
    let root = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus"));
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
    println!("seeds written under {}", root.display());
}
