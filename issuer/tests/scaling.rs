//! Clearing costs the same however many notes were cleared before: every
//! lookup is by key or index. Counted in SQLite virtual-machine steps (a
//! table scan would show up as steps growing with the table), with the
//! wall time printed for a rough idea. The timed figures are the clearing
//! benchmark's (`cargo bench -p issuer --bench clearing`), which drives the
//! issuer through the same rig (`support/rig.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests

#[path = "support/rig.rs"]
mod rig;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use mailer::messages::{Deposit, DepositOutcome, DepositReceipt};
use mailer::money::Amount;
use mailer::note::Note;
use mailer::testkit::{card, key, NOW};

use rig::{Rig, MAX_NOTES, NOTE_VALUE};

const NOTES: usize = 1_000;
const PRELOADED_STATES: u64 = 100_000;

/// Withdraws `NOTES` notes, then counts the VM steps and time of
/// depositing them all, 64 to a deposit.
fn clear_notes(preload: u64) -> (u64, f64) {
    let mut rig = Rig::new();
    rig.preload(preload);
    let total = NOTE_VALUE * NOTES as u64;
    let account = key(30);
    let c = card(31);
    rig.open_enrolled_account("alice", &account, Amount::new(total));
    rig.license(&c);
    let notes = rig.withdraw(&account, &c.keys(), NOTES, |_| {});
    let challenge = Deposit::challenge_for(&account.public());
    let paid: Vec<Note> = notes
        .iter()
        .map(|n| {
            n.pay(
                &c.payment,
                rig.issuer.public_key(),
                Amount::new(NOTE_VALUE),
                challenge,
                NOW,
            )
            .unwrap()
        })
        .collect();
    let deposits: Vec<_> = paid
        .chunks(MAX_NOTES)
        .map(|chunk| rig.deposit(&account, chunk.to_vec()).into_envelope())
        .collect();
    let steps = Arc::new(AtomicU64::new(0));
    let counter = steps.clone();
    rig.conn
        .progress_handler(
            1,
            Some(move || {
                counter.fetch_add(1, Ordering::Relaxed);
                false
            }),
        )
        .unwrap();
    // The counter sees scans: one over the states costs a step per row.
    let before = steps.load(Ordering::Relaxed);
    let _: i64 = rig
        .conn
        .query_row("SELECT COUNT(*) FROM states WHERE good = 2", [], |r| {
            r.get(0)
        })
        .unwrap();
    let scan = steps.load(Ordering::Relaxed) - before;
    assert!(
        scan >= preload,
        "a scan of {preload} rows took {scan} steps"
    );
    steps.store(0, Ordering::Relaxed);
    let start = Instant::now();
    let mut credited = 0u64;
    for d in deposits {
        let r: DepositReceipt = rig.ask(d);
        assert!(r
            .results
            .iter()
            .all(|x| x.result == DepositOutcome::Credited));
        credited += r.credited.minor_units();
    }
    let secs = start.elapsed().as_secs_f64();
    rig.conn.progress_handler(0, None::<fn() -> bool>).unwrap();
    assert_eq!(credited, total);
    (steps.load(Ordering::Relaxed), secs)
}

#[test]
fn clearing_cost_does_not_grow_with_what_was_cleared_before() {
    let (empty_steps, empty_secs) = clear_notes(0);
    let (full_steps, full_secs) = clear_notes(PRELOADED_STATES);
    let per_note = |s: u64| s as f64 / NOTES as f64;
    eprintln!(
        "clearing {NOTES} notes: {:.0} VM steps/note and {:.2} ms/note with nothing stored; \
         {:.0} steps/note and {:.2} ms/note with {PRELOADED_STATES} states stored",
        per_note(empty_steps),
        empty_secs * 1000.0 / NOTES as f64,
        per_note(full_steps),
        full_secs * 1000.0 / NOTES as f64,
    );
    let ratio = full_steps as f64 / empty_steps as f64;
    assert!(
        ratio < 1.1,
        "clearing took {ratio:.2} times the database work with {PRELOADED_STATES} states stored"
    );
}
