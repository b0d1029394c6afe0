//! Clearing costs the same however many notes were cleared before: every
//! lookup is by key or index. Counted in SQLite virtual-machine steps (a
//! table scan would show up as steps growing with the table), with the
//! wall time printed for a rough idea. The real benchmark comes later.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use mailer::crypto::Id;
use mailer::envelope::Signed;
use mailer::messages::{
    Deposit, DepositOutcome, DepositReceipt, EnrollRequest, NotesIssued, WithdrawRequest,
};
use mailer::mime::{build_mail, parse_mail, MessageId, OutgoingMail};
use mailer::money::{Amount, Currency};
use mailer::note::Note;
use mailer::testkit::{card, key, NOW};
use rusqlite::Connection;

use issuer::{handle_mail, Home, Issuer, IssuerConfig};

const NOTES: usize = 1_000;
const PRELOADED_STATES: u64 = 100_000;

struct Rig {
    _dir: tempfile::TempDir,
    conn: Connection,
    issuer: Issuer,
    seq: u32,
}

impl Rig {
    fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let (issuer, conn) = Home::new(dir.path().join("i"))
            .create_with_key(
                key(1),
                IssuerConfig::new(Currency::JPY, "issuer@jpy.example"),
                NOW,
            )
            .unwrap();
        Rig {
            _dir: dir,
            conn,
            issuer,
            seq: 0,
        }
    }

    /// Handles one request envelope and returns the reply's envelope.
    fn ask<T: mailer::envelope::Body>(&mut self, env: mailer::envelope::Envelope) -> T {
        self.seq += 1;
        let raw = build_mail(&OutgoingMail {
            from: "user@wallet.example".into(),
            to: "issuer@jpy.example".into(),
            subject: "r".into(),
            message_id: MessageId::parse(&format!("r{}@wallet.example", self.seq)).unwrap(),
            in_reply_to: None,
            references: vec![],
            date: NOW,
            text: "r".into(),
            envelopes: vec![env],
            auto_reply: false,
        })
        .unwrap();
        let tx = self.conn.transaction().unwrap();
        handle_mail(&tx, &self.issuer, &raw, NOW).unwrap();
        tx.commit().unwrap();
        let reply: Vec<u8> = self
            .conn
            .query_row(
                "SELECT raw FROM mail_outbox ORDER BY id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let env = parse_mail(&reply).unwrap().envelopes.remove(0);
        Signed::<T>::from_envelope(env)
            .unwrap()
            .unverified()
            .clone()
    }

    /// Stores `n` states of made-up notes (half issuances, half links),
    /// as if that many had been cleared before.
    fn preload(&mut self, n: u64) {
        let half = n / 2;
        let tx = self.conn.transaction().unwrap();
        tx.execute(
            "INSERT INTO accounts (name, balance, created_at) VALUES ('old', 0, 0)",
            [],
        )
        .unwrap();
        tx.execute(
            "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < ?1)
             INSERT INTO notes (note_id, value, holder, issued_at, expires_at, account, request,
                                link_count, envelope)
             SELECT randomblob(32), 10, randomblob(32), 0, 0, 'old', randomblob(32), 1, x'00'
             FROM k",
            [half as i64],
        )
        .unwrap();
        tx.execute_batch(
            "INSERT INTO states (state_id, note_id, parent, holder, value, spent, refunded, good,
                                 link, first_seen_at)
             SELECT note_id, note_id, NULL, holder, 10, 5, 0, 1, NULL, 0 FROM notes
             WHERE account = 'old';
             INSERT INTO states (state_id, note_id, parent, holder, value, spent, refunded, good,
                                 link, first_seen_at)
             SELECT randomblob(32), note_id, note_id, randomblob(32), 5, 0, 0, 1, x'00', 0
             FROM notes WHERE account = 'old';",
        )
        .unwrap();
        tx.commit().unwrap();
        let count: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM states", [], |r| r.get(0))
            .unwrap();
        assert!(count as u64 >= n);
    }
}

/// Withdraws `NOTES` notes, then counts the VM steps and time of
/// depositing them all, 64 to a deposit.
fn clear_notes(preload: u64) -> (u64, f64) {
    let mut rig = Rig::new();
    rig.preload(preload);
    let code = issuer::operator::open_account(&mut rig.conn, &rig.issuer, "alice", NOW)
        .unwrap()
        .code;
    let total = 10_000 * NOTES as u64;
    issuer::operator::credit_account(&mut rig.conn, "alice", Amount::new(total), "", NOW).unwrap();
    let account = key(30);
    let c = card(31);
    rig.ask::<mailer::messages::Enrolled>(
        Signed::sign(
            EnrollRequest {
                currency: Currency::JPY,
                code,
            },
            &account,
        )
        .unwrap()
        .into_envelope(),
    );
    let lr = mailer::messages::LicenseRequest::new(&c, Currency::JPY, NOW).unwrap();
    rig.ask::<mailer::messages::LicenseGranted>(lr.into_envelope());
    let mut notes: Vec<Note> = Vec::new();
    let mut serial = 0u8;
    while notes.len() < NOTES {
        let n = (NOTES - notes.len()).min(64) as u64;
        serial += 1;
        let w = Signed::sign(
            WithdrawRequest {
                request_id: Id([serial; 16]),
                currency: Currency::JPY,
                amount: Amount::new(10_000 * n),
                card: c.keys(),
            },
            &account,
        )
        .unwrap();
        notes.extend(rig.ask::<NotesIssued>(w.into_envelope()).notes);
    }
    let challenge = Deposit::challenge_for(&account.public());
    let paid: Vec<Note> = notes
        .iter()
        .map(|n| {
            n.pay(
                &c.payment,
                rig.issuer.public_key(),
                Amount::new(10_000),
                challenge,
                NOW,
            )
            .unwrap()
        })
        .collect();
    let deposits: Vec<_> = paid
        .chunks(64)
        .enumerate()
        .map(|(i, chunk)| {
            Signed::sign(
                Deposit {
                    request_id: Id([100 + i as u8; 16]),
                    currency: Currency::JPY,
                    notes: chunk.to_vec(),
                    licenses: vec![],
                },
                &account,
            )
            .unwrap()
            .into_envelope()
        })
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
