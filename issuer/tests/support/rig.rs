//! An issuer in a temporary directory, driven by mail the way the daemon
//! drives it, for the scaling test (`tests/scaling.rs`) and the clearing
//! benchmark (`benches/clearing.rs`). Each includes this file with
//! `#[path = ...] mod rig;`, so it is written once.

#![allow(dead_code)] // each user takes its own part
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests and benchmarks

use mailer::crypto::{Id, SecretKey};
use mailer::envelope::{Body, Envelope, Signed};
use mailer::imap::Disposition;
use mailer::inbox::{self, Seen};
use mailer::license::{CardKeys, CardSecret};
use mailer::messages::{
    Deposit, EnrollRequest, Enrolled, LicenseGranted, LicenseRequest, NotesIssued, WithdrawRequest,
};
use mailer::mime::{build_mail, parse_mail, MessageId, OutgoingMail};
use mailer::money::{Amount, Currency};
use mailer::note::Note;
use mailer::testkit::{key, NOW};
use rusqlite::{Connection, TransactionBehavior};

use issuer::{handle_mail, Home, Issuer, IssuerConfig};

pub const ISSUER_ADDRESS: &str = "issuer@jpy.example";
pub const USER_ADDRESS: &str = "user@wallet.example";
/// The value of every note withdrawn (the largest JPY denomination), so a
/// withdrawal of `n * NOTE_VALUE` gives `n` notes.
pub const NOTE_VALUE: u64 = 10_000;
/// The most notes one withdrawal or one deposit carries (the protocol's
/// limit).
pub const MAX_NOTES: usize = mailer::limits::MAX_NOTES;

/// An issuer (JPY, key `testkit::key(1)`) with its real database (WAL) in a
/// temporary directory.
#[derive(Debug)]
pub struct Rig {
    _dir: tempfile::TempDir,
    pub conn: Connection,
    pub issuer: Issuer,
    /// Numbers Message-IDs and request ids.
    seq: u64,
}

impl Rig {
    pub fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let (issuer, conn) = Home::new(dir.path().join("i"))
            .create_with_key(
                key(1),
                IssuerConfig::new(Currency::JPY, ISSUER_ADDRESS),
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

    /// A request id not used before.
    pub fn next_id(&mut self) -> Id {
        self.seq += 1;
        Id(u128::from(self.seq).to_be_bytes())
    }

    /// A mail from the user to the issuer carrying `env`.
    pub fn mail(&mut self, env: Envelope) -> Vec<u8> {
        self.seq += 1;
        build_mail(&OutgoingMail {
            from: USER_ADDRESS.into(),
            to: ISSUER_ADDRESS.into(),
            subject: "r".into(),
            message_id: MessageId::parse(&format!("r{}@wallet.example", self.seq)).unwrap(),
            in_reply_to: None,
            references: vec![],
            date: NOW,
            text: "r".into(),
            envelopes: vec![env],
            auto_reply: false,
        })
        .unwrap()
    }

    /// Handles one received mail as the daemon's watcher does: the mail's
    /// key, an IMMEDIATE transaction, the inbox lookup, `handle_mail`, the
    /// inbox record, the commit (WAL, `synchronous = FULL`). Never inlined,
    /// so a profile can pick out the time spent here.
    #[inline(never)]
    pub fn handle(&mut self, raw: &[u8]) -> Disposition {
        let key = inbox::mail_key(raw);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .unwrap();
        assert!(
            inbox::seen(&tx, &key).unwrap().is_none(),
            "mail {key} handled twice"
        );
        let disposition = handle_mail(&tx, &self.issuer, raw, NOW).unwrap();
        let seen = match &disposition {
            Disposition::Processed => Seen::Processed,
            Disposition::Rejected { reason } => Seen::Rejected(reason.clone()),
        };
        inbox::record(&tx, &key, &seen, NOW).unwrap();
        tx.commit().unwrap();
        disposition
    }

    /// The envelope of the newest reply in the outbox.
    pub fn last_reply<T: Body>(&self) -> Signed<T> {
        let reply: Vec<u8> = self
            .conn
            .query_row(
                "SELECT raw FROM mail_outbox ORDER BY id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let env = parse_mail(&reply).unwrap().envelopes.remove(0);
        Signed::<T>::from_envelope(env).unwrap()
    }

    /// Handles one request envelope and returns the reply's body, checked
    /// to be signed by the issuer.
    pub fn ask<T: Body>(&mut self, env: Envelope) -> T {
        let raw = self.mail(env);
        let d = self.handle(&raw);
        assert_eq!(d, Disposition::Processed, "request not processed");
        let reply = self.last_reply::<T>();
        reply
            .verify_signer(&self.issuer.public_key())
            .unwrap()
            .clone()
    }

    /// Stores `n` states of made-up notes (half issuances, half links),
    /// as if that many had been cleared before.
    pub fn preload(&mut self, n: u64) {
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

    /// Opens account `name` holding `funds` and enrolls `account_key` for
    /// it with an `enroll-request`.
    pub fn open_enrolled_account(&mut self, name: &str, account_key: &SecretKey, funds: Amount) {
        let code = issuer::operator::open_account(&mut self.conn, &self.issuer, name, NOW)
            .unwrap()
            .code;
        issuer::operator::credit_account(&mut self.conn, name, funds, "", NOW).unwrap();
        self.ask::<Enrolled>(
            Signed::sign(
                EnrollRequest {
                    currency: Currency::JPY,
                    code,
                },
                account_key,
            )
            .unwrap()
            .into_envelope(),
        );
    }

    /// Licenses `card` with a `license-request`.
    pub fn license(&mut self, card: &CardSecret) {
        let lr = LicenseRequest::new(card, Currency::JPY, NOW).unwrap();
        self.ask::<LicenseGranted>(lr.into_envelope());
    }

    /// Withdraws `count` notes of `NOTE_VALUE` to `card`, at most
    /// `MAX_NOTES` a request, calling `progress` with the number so far
    /// after each.
    pub fn withdraw(
        &mut self,
        account_key: &SecretKey,
        card: &CardKeys,
        count: usize,
        mut progress: impl FnMut(usize),
    ) -> Vec<Note> {
        let mut notes: Vec<Note> = Vec::with_capacity(count);
        while notes.len() < count {
            let n = (count - notes.len()).min(MAX_NOTES) as u64;
            let w = Signed::sign(
                WithdrawRequest {
                    request_id: self.next_id(),
                    currency: Currency::JPY,
                    amount: Amount::new(NOTE_VALUE * n),
                    card: *card,
                },
                account_key,
            )
            .unwrap();
            let issued = self.ask::<NotesIssued>(w.into_envelope()).notes;
            assert_eq!(issued.len() as u64, n, "a withdrawal split otherwise");
            notes.extend(issued);
            progress(notes.len());
        }
        notes
    }

    /// A deposit of `notes` (paid to the issuer against the challenge of
    /// `account_key`), signed by `account_key`.
    pub fn deposit(&mut self, account_key: &SecretKey, notes: Vec<Note>) -> Signed<Deposit> {
        Signed::sign(
            Deposit {
                request_id: self.next_id(),
                currency: Currency::JPY,
                notes,
                licenses: vec![],
            },
            account_key,
        )
        .unwrap()
    }
}
