//! A world without a network: an issuer on a temporary database, request
//! mails built as a wallet would (`build_mail`, testkit keys), handed to
//! the issuer's handler in a transaction, and replies read back from the
//! outbox, parsed and checked for the issuer's signature.

use mailer::crypto::{PublicKey, SecretKey};
use mailer::envelope::{Body, Envelope, Signed};
use mailer::imap::Disposition;
use mailer::license::{CardSecret, License};
use mailer::messages::{
    Deposit, DepositReceipt, EnrollRequest, Enrolled, ErrorCode, ErrorReply, LicenseGranted,
    LicenseRequest, Message, NotesIssued, WithdrawRequest,
};
use mailer::mime::{build_mail, parse_mail, MessageId, OutgoingMail, ReceivedMail};
use mailer::money::{Amount, Currency, Timestamp};
use mailer::note::Note;
use mailer::testkit::{id, key, NOW};
use rusqlite::Connection;

use issuer::{handle_mail, Home, Issuer, IssuerConfig};

pub const ISSUER_ADDRESS: &str = "issuer@jpy.example";
pub const USER_ADDRESS: &str = "user@wallet.example";

/// One reply mail read back from the outbox.
#[derive(Debug)]
pub struct Reply {
    pub recipient: String,
    pub subject: String,
    pub mail: ReceivedMail,
    pub envelope: Envelope,
    pub message: Message,
}

impl Reply {
    pub fn error(&self) -> &ErrorReply {
        match &self.message {
            Message::Error(e) => e.unverified(),
            other => panic!("expected an error reply, got {other:?}"),
        }
    }
    pub fn code(&self) -> ErrorCode {
        self.error().code
    }
    pub fn body<T: Body>(&self) -> T {
        Signed::<T>::from_envelope(self.envelope.clone())
            .unwrap_or_else(|e| {
                panic!(
                    "expected {}, got {} ({e}): {:?}",
                    T::KIND,
                    self.envelope.kind(),
                    self.message
                )
            })
            .unverified()
            .clone()
    }
}

/// What one delivered mail did.
#[derive(Debug)]
pub struct Delivery {
    pub disposition: Disposition,
    pub request_message_id: MessageId,
    pub replies: Vec<Reply>,
}

impl Delivery {
    /// The one reply this mail got.
    pub fn reply(mut self) -> Reply {
        assert_eq!(self.replies.len(), 1, "expected one reply: {self:?}");
        self.replies.remove(0)
    }
}

/// A user: an account key and a card (licensed once asked).
#[derive(Debug)]
pub struct User {
    pub account: SecretKey,
    pub card: CardSecret,
    pub license: Signed<License>,
}

impl User {
    pub fn payment_key(&self) -> PublicKey {
        self.card.payment.public()
    }
}

pub struct World {
    _dir: tempfile::TempDir,
    pub conn: Connection,
    pub issuer: Issuer,
    pub now: Timestamp,
    seq: u32,
    outbox_seen: i64,
    serial: u8,
}

impl World {
    pub fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let (issuer, conn) = Home::new(dir.path().join("issuer"))
            .create_with_key(
                key(1),
                IssuerConfig::new(Currency::JPY, ISSUER_ADDRESS),
                NOW.saturating_sub_secs(86_400),
            )
            .unwrap();
        World {
            _dir: dir,
            conn,
            issuer,
            now: NOW,
            seq: 0,
            outbox_seen: 0,
            serial: 0,
        }
    }

    pub fn issuer_key(&self) -> PublicKey {
        self.issuer.public_key()
    }

    pub fn advance(&mut self, secs: u64) {
        self.now = self.now.saturating_add_secs(secs);
    }

    /// A fresh request id.
    pub fn request_id(&mut self) -> mailer::crypto::Id {
        self.serial = self.serial.wrapping_add(1);
        id(self.serial)
    }

    /// Builds a request mail as a wallet would.
    pub fn mail(&mut self, from: &str, envelopes: Vec<Envelope>, auto: bool) -> Vec<u8> {
        self.seq += 1;
        build_mail(&OutgoingMail {
            from: from.into(),
            to: ISSUER_ADDRESS.into(),
            subject: "request".into(),
            message_id: MessageId::parse(&format!("req{}@wallet.example", self.seq)).unwrap(),
            in_reply_to: None,
            references: vec![MessageId::parse("thread-start@wallet.example").unwrap()],
            date: self.now,
            text: "a request".into(),
            envelopes,
            auto_reply: auto,
        })
        .unwrap()
    }

    /// Hands raw mail to the handler in one transaction, commits, and
    /// reads the replies it queued.
    pub fn deliver(&mut self, raw: &[u8]) -> Delivery {
        let tx = self.conn.transaction().unwrap();
        let disposition = handle_mail(&tx, &self.issuer, raw, self.now).unwrap();
        tx.commit().unwrap();
        let request_message_id = mailer::mime::read_headers(raw)
            .message_id
            .unwrap_or_else(|| MessageId::parse("none@none").unwrap());
        Delivery {
            disposition,
            request_message_id,
            replies: self.new_replies(),
        }
    }

    /// Sends envelopes in one mail from the user's address.
    pub fn send(&mut self, envelopes: Vec<Envelope>) -> Delivery {
        let raw = self.mail(USER_ADDRESS, envelopes, false);
        self.deliver(&raw)
    }

    /// Sends one envelope and returns the one reply.
    pub fn ask(&mut self, envelope: Envelope) -> Reply {
        let d = self.send(vec![envelope]);
        let mid = d.request_message_id.clone();
        let reply = d.reply();
        // Every reply threads to its request and is marked automatic.
        assert_eq!(reply.mail.in_reply_to.as_ref(), Some(&mid));
        assert!(reply.mail.references.contains(&mid));
        assert!(reply
            .mail
            .references
            .iter()
            .any(|r| r.as_str() == "thread-start@wallet.example"));
        assert!(reply.mail.auto_submitted);
        assert_eq!(reply.recipient, USER_ADDRESS);
        reply
    }

    /// Replies queued since the last call, parsed and checked: one
    /// envelope each, signed by the issuer.
    pub fn new_replies(&mut self) -> Vec<Reply> {
        let rows = mailer::outbox::queued_after(&self.conn, self.outbox_seen).unwrap();
        let mut out = Vec::new();
        for mailer::outbox::Queued {
            id,
            recipient,
            subject,
            raw,
        } in rows
        {
            self.outbox_seen = id;
            let mail = parse_mail(&raw).unwrap();
            assert_eq!(mail.envelopes.len(), 1);
            let envelope = mail.envelopes[0].clone();
            envelope.verify_signer(&self.issuer_key()).unwrap();
            let message = Message::decode(envelope.clone()).unwrap();
            assert!(subject.starts_with("JPY issuer: "), "{subject}");
            assert_eq!(
                mail.from.as_deref(),
                Some(ISSUER_ADDRESS),
                "replies come from the issuer's address"
            );
            out.push(Reply {
                recipient,
                subject,
                mail,
                envelope,
                message,
            });
        }
        out
    }

    /// How many mails the outbox holds.
    pub fn outbox_len(&self) -> i64 {
        self.conn
            .query_row("SELECT COUNT(*) FROM mail_outbox", [], |r| r.get(0))
            .unwrap()
    }

    pub fn balance(&self, account: &str) -> Amount {
        issuer::store::balance(&self.conn, account)
            .unwrap()
            .unwrap()
    }

    /// Every balance, by account.
    pub fn balances(&self) -> Vec<(String, i64)> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, balance FROM accounts ORDER BY name")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    pub fn audit_ok(&self) {
        let report = issuer::audit(&self.conn, &self.issuer).unwrap();
        assert!(report.is_ok(), "audit: {:#?}", report);
    }

    // ---- what a wallet does ----------------------------------------------

    /// Opens an account credited with `credit` and returns its code.
    pub fn open_account(&mut self, name: &str, credit: u64) -> String {
        let code =
            issuer::operator::open_account(&mut self.conn, &self.issuer, name, self.now).unwrap();
        if credit > 0 {
            issuer::operator::credit_account(
                &mut self.conn,
                name,
                Amount::new(credit),
                "paid in",
                self.now,
            )
            .unwrap();
        }
        code.code
    }

    pub fn sign<T: Body>(&self, body: T, key: &SecretKey) -> Envelope {
        Signed::sign(body, key).unwrap().into_envelope()
    }

    pub fn enroll(&mut self, account: &SecretKey, code: &str) -> Reply {
        let env = self.sign(
            EnrollRequest {
                currency: Currency::JPY,
                code: code.into(),
            },
            account,
        );
        self.ask(env)
    }

    pub fn license(&mut self, card: &CardSecret) -> Signed<License> {
        let req = LicenseRequest::new(card, Currency::JPY, self.now).unwrap();
        let reply = self.ask(req.clone().into_envelope());
        let granted: LicenseGranted = reply.body();
        assert_eq!(granted.request, req.id());
        granted.license
    }

    /// An enrolled, licensed user with `credit` in the account. Seeds:
    /// account key `seed`, card `seed + 1` (auth `seed + 129`).
    pub fn user(&mut self, name: &str, seed: u8, credit: u64) -> User {
        let code = self.open_account(name, credit);
        let account = key(seed);
        let enrolled: Enrolled = self.enroll(&account, &code).body();
        assert_eq!(enrolled.account, name);
        let card = mailer::testkit::card(seed + 1);
        let license = self.license(&card);
        User {
            account,
            card,
            license,
        }
    }

    pub fn withdraw_request(&mut self, user: &User, amount: u64) -> Envelope {
        let request_id = self.request_id();
        self.sign(
            WithdrawRequest {
                request_id,
                currency: Currency::JPY,
                amount: Amount::new(amount),
                card: user.card.keys(),
            },
            &user.account,
        )
    }

    /// Withdraws into notes, checking the reply.
    pub fn withdraw(&mut self, user: &User, amount: u64) -> Vec<Note> {
        let env = self.withdraw_request(user, amount);
        let issued: NotesIssued = self.ask(env.clone()).body();
        assert_eq!(issued.request, env.id());
        issued.notes
    }

    /// `note`, paid by `from` to the issuer for `to`'s account.
    pub fn deposit_link(&self, note: &Note, from: &CardSecret, to: &User, amount: u64) -> Note {
        note.pay(
            &from.payment,
            self.issuer_key(),
            Amount::new(amount),
            Deposit::challenge_for(&to.account.public()),
            self.now,
        )
        .unwrap()
    }

    pub fn deposit_request(
        &mut self,
        user: &User,
        notes: Vec<Note>,
        licenses: Vec<Signed<License>>,
    ) -> Envelope {
        let request_id = self.request_id();
        self.sign(
            Deposit {
                request_id,
                currency: Currency::JPY,
                notes,
                licenses,
            },
            &user.account,
        )
    }

    pub fn deposit(
        &mut self,
        user: &User,
        notes: Vec<Note>,
        licenses: Vec<Signed<License>>,
    ) -> DepositReceipt {
        let env = self.deposit_request(user, notes, licenses);
        let receipt: DepositReceipt = self.ask(env.clone()).body();
        assert_eq!(receipt.request, env.id());
        receipt
    }
}

/// Pays `amount` of `note` from `from` to `to` (a challenge of `to`'s).
pub fn pay(w: &World, note: &Note, from: &CardSecret, to: &User, amount: u64, chall: u8) -> Note {
    note.pay(
        &from.payment,
        to.payment_key(),
        Amount::new(amount),
        mailer::testkit::challenge(chall),
        w.now,
    )
    .unwrap()
}

/// A note's issued value.
pub fn value(n: &Note) -> u64 {
    n.issuance.unverified().value.minor_units()
}
