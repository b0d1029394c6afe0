//! Which check each input of a `note` corpus meets, counted: shows whether
//! the fuzzer reaches every check of note verification.
//! `cargo run --manifest-path fuzz/Cargo.toml --example note_outcomes -- DIR...`

use std::collections::BTreeMap;

use emoney_fuzz::{prepared_note, NoteInput, NoteWorld};

fn main() -> std::io::Result<()> {
    let world = NoteWorld::get();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for dir in std::env::args_os().skip(1) {
        for entry in std::fs::read_dir(dir)? {
            let data = std::fs::read(entry?.path())?;
            let outcome = match NoteInput::parse(&data) {
                None => "(too short)".to_string(),
                Some(input) => match prepared_note(&input) {
                    None => "(no note)".to_string(),
                    Some(note) => {
                        let revocations = input.revocations();
                        match note.verify(&input.policy(world, &revocations)) {
                            Ok(_) => "accepted".to_string(),
                            Err(e) => format!("{e:?}")
                                .split(|c: char| !c.is_alphanumeric())
                                .next()
                                .unwrap_or_default()
                                .to_string(),
                        }
                    }
                },
            };
            *counts.entry(outcome).or_default() += 1;
        }
    }
    for (outcome, n) in counts {
        println!("{n:7} {outcome}");
    }
    Ok(())
}
