//! Operations: each a durable state machine in `ops`, started here by the
//! user's commands and advanced by [`crate::handler`] as answers arrive.
//! Every start decides, changes state and queues its mail in the caller's
//! transaction.
//!
//! | kind       | states                                          |
//! |------------|-------------------------------------------------|
//! | `enroll`   | waiting -> done / failed                        |
//! | `license`  | waiting -> done / failed                        |
//! | `withdraw` | waiting -> done / failed                        |
//! | `deposit`  | waiting -> done / failed                        |
//! | `send`     | inviting -> addressed -> paying -> done / refused / cancelled |
//! | `receive`  | addressed -> done / refused                     |
//! | `exchange` | quoting -> offered -> accepting -> paying -> done / refunded / failed / declined / expired (see [`crate::exchange`]) |
//!
//! A `send` takes its notes out of the spendable set and locks its card in
//! the transaction that queues the payment; the receipt unlocks it.

use mailer::crypto::{digest, Challenge, Digest, Id, SecretKey};
use mailer::envelope::{Body, Envelope, Signed};
use mailer::license::CardSecret;
use mailer::limits::MAX_NOTES;
use mailer::messages::{
    Deposit, EnrollRequest, LicenseRequest, PaymentInvite, RevocationListRequest, WithdrawRequest,
};
use mailer::mime::{MessageId, OutgoingMail};
use mailer::money::{Amount, Currency, Timestamp};
use mailer::note::Note;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::error::WalletError;
use crate::pay::{choose, Spendable};
use crate::store::{self, amount_of, sql_amount, sql_time};
use crate::vault::Vault;

/// How long to wait for an answer before sending a request again.
pub const RESEND_AFTER_SECS: u64 = 15 * 60;
/// How often a request is sent at most.
pub const MAX_SENDS: i64 = 8;
/// A payment's notes must stay valid at least this long after it is made.
pub const NOTE_MARGIN_SECS: u64 = 86_400;

/// The largest `ops.data` read back: an exchange keeps all its envelopes.
const MAX_OP_DATA_BYTES: usize = mailer::evidence::MAX_EVIDENCE_BYTES;

/// The states in which an op is finished.
pub const FINAL_STATES: &[&str] = &[
    "done",
    "failed",
    "refused",
    "cancelled",
    "refunded",
    "declined",
    "expired",
];

/// What an op keeps besides its columns (CBOR in `ops.data`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct OpData {
    /// States paid out of, and how much (send, deposit).
    #[serde(default)]
    pub parts: Vec<(Digest, Amount)>,
    /// The card the op uses.
    #[serde(default)]
    pub card: Option<i64>,
    /// send: the payee's signed address; receive: the invite's id.
    #[serde(default)]
    pub address: Option<Envelope>,
    #[serde(default)]
    pub invite: Option<Digest>,
    /// receive: the challenge given to the payer.
    #[serde(default)]
    pub challenge: Option<Challenge>,
    /// receive: the payer card's authentication key (the invite's signer),
    /// which must sign the payment.
    #[serde(default)]
    pub payer: Option<mailer::crypto::PublicKey>,
    /// send: the payment sent; receive: the payment accepted.
    #[serde(default)]
    pub payment: Option<Digest>,
    /// receive: the answer sent (address, then receipt), to send again.
    #[serde(default)]
    pub answer: Option<Envelope>,
    /// exchange: the terms, the policy and every envelope of the exchange.
    #[serde(default)]
    pub exchange: Option<crate::exchange::ExchangeData>,
}

/// One row of `ops`.
#[derive(Clone, Debug)]
pub struct Op {
    pub id: i64,
    pub kind: String,
    pub currency: Currency,
    pub amount: Amount,
    pub peer: String,
    pub memo: String,
    pub state: String,
    pub is_final: bool,
    pub detail: String,
    pub request: Option<Digest>,
    pub transfer: Option<Id>,
    pub data: OpData,
    pub thread: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

const OP_COLS: &str = "id, kind, currency, amount, peer, memo, state, final, detail, request, transfer, data, thread, created_at, updated_at";

/// The row as the tuple of its columns (rusqlite converts rows to tuples).
fn op_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OpTuple> {
    OpTuple::try_from(r)
}

type OpTuple = (
    i64,
    String,
    String,
    i64,
    String,
    String,
    String,
    i64,
    String,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<String>,
    i64,
    i64,
);

fn time(v: i64) -> Timestamp {
    Timestamp::from_unix(u64::try_from(v).unwrap_or(0))
}

fn to_op(t: OpTuple) -> Result<Op, WalletError> {
    let (
        id,
        kind,
        c,
        amount,
        peer,
        memo,
        state,
        fin,
        detail,
        request,
        transfer,
        data,
        thread,
        created,
        updated,
    ) = t;
    Ok(Op {
        id,
        kind,
        currency: store::currency_of(&c)?,
        amount: amount_of(amount),
        peer,
        memo,
        state,
        is_final: fin != 0,
        detail,
        request: request.as_deref().map(store::digest_of).transpose()?,
        transfer: transfer
            .as_deref()
            .map(|b| Id::from_slice(b).ok_or_else(|| WalletError::Corrupt("a transfer id".into())))
            .transpose()?,
        data: match data {
            Some(b) => mailer::cbor::from_slice(&b, MAX_OP_DATA_BYTES)
                .map_err(|e| WalletError::Corrupt(format!("op {id}: {e}")))?,
            None => OpData::default(),
        },
        thread,
        created_at: time(created),
        updated_at: time(updated),
    })
}

fn ops_where(
    conn: &Connection,
    cond: &str,
    p: impl rusqlite::Params,
) -> Result<Vec<Op>, WalletError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {OP_COLS} FROM ops WHERE {cond} ORDER BY id"
    ))?;
    let rows = stmt.query_map(p, op_row)?;
    let mut out = Vec::new();
    for r in rows {
        out.push(to_op(r?)?);
    }
    Ok(out)
}

pub fn op(conn: &Connection, id: i64) -> Result<Op, WalletError> {
    ops_where(conn, "id = ?1", [id])?
        .pop()
        .ok_or_else(|| WalletError::Corrupt(format!("op {id} is missing")))
}

/// The open op waiting for an answer to the request `id`.
pub fn op_by_request(conn: &Connection, id: &Digest) -> Result<Option<Op>, WalletError> {
    Ok(ops_where(conn, "request = ?1", [id.as_bytes().as_slice()])?.pop())
}

pub fn op_by_transfer(
    conn: &Connection,
    kind: &str,
    transfer: &Id,
) -> Result<Option<Op>, WalletError> {
    Ok(ops_where(
        conn,
        "kind = ?1 AND transfer = ?2",
        params![kind, transfer.as_bytes().as_slice()],
    )?
    .pop())
}

/// Every op not finished, oldest first.
pub fn open_ops(conn: &Connection) -> Result<Vec<Op>, WalletError> {
    ops_where(conn, "final = 0", [])
}

/// Every op, oldest first.
pub fn all_ops(conn: &Connection) -> Result<Vec<Op>, WalletError> {
    ops_where(conn, "1 = 1", [])
}

/// Every op of `kind`, oldest first.
pub fn ops_of_kind(conn: &Connection, kind: &str) -> Result<Vec<Op>, WalletError> {
    ops_where(conn, "kind = ?1", [kind])
}

/// A new op row.
#[derive(Debug)]
pub struct NewOp<'a> {
    pub kind: &'a str,
    pub currency: Currency,
    pub amount: Amount,
    pub peer: &'a str,
    pub memo: &'a str,
    pub state: &'a str,
    pub transfer: Option<Id>,
    pub data: OpData,
}

fn encode(data: &OpData) -> Result<Vec<u8>, WalletError> {
    mailer::cbor::to_vec(data).map_err(|e| WalletError::Corrupt(e.to_string()))
}

pub fn insert_op(conn: &Connection, o: &NewOp<'_>, now: Timestamp) -> Result<i64, WalletError> {
    conn.prepare_cached(
        "INSERT INTO ops (kind, currency, amount, peer, memo, state, transfer, data, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)",
    )?
    .execute(params![
        o.kind,
        o.currency.as_str(),
        sql_amount(o.amount),
        o.peer,
        o.memo,
        o.state,
        o.transfer.map(|t| t.as_bytes().to_vec()),
        encode(&o.data)?,
        sql_time(now),
    ])?;
    Ok(conn.last_insert_rowid())
}

/// Moves an op to `state` (final ones: [`FINAL_STATES`]).
pub fn set_state(
    conn: &Connection,
    op: &Op,
    state: &str,
    detail: &str,
    now: Timestamp,
) -> Result<(), WalletError> {
    let fin = FINAL_STATES.contains(&state);
    conn.prepare_cached(
        "UPDATE ops SET state = ?2, detail = ?3, final = ?4, updated_at = ?5,
                        next_resend_at = CASE WHEN ?4 = 1 THEN NULL ELSE next_resend_at END
         WHERE id = ?1",
    )?
    .execute(params![op.id, state, detail, i64::from(fin), sql_time(now)])?;
    Ok(())
}

pub fn set_data(conn: &Connection, op: i64, data: &OpData) -> Result<(), WalletError> {
    conn.prepare_cached("UPDATE ops SET data = ?2 WHERE id = ?1")?
        .execute(params![op, encode(data)?])?;
    Ok(())
}

/// Names the op's transfer (an exchange learns its TrID from the offer).
pub fn set_transfer(conn: &Connection, op: i64, transfer: &Id) -> Result<(), WalletError> {
    conn.prepare_cached("UPDATE ops SET transfer = ?2 WHERE id = ?1")?
        .execute(params![op, transfer.as_bytes().as_slice()])?;
    Ok(())
}

/// Stops sending the op's request again (the answer came, or the op now
/// waits for something else).
pub fn stop_resending(conn: &Connection, op: i64) -> Result<(), WalletError> {
    conn.prepare_cached("UPDATE ops SET next_resend_at = NULL WHERE id = ?1")?
        .execute([op])?;
    Ok(())
}

pub fn set_amount(conn: &Connection, op: i64, amount: Amount) -> Result<(), WalletError> {
    conn.prepare_cached("UPDATE ops SET amount = ?2 WHERE id = ?1")?
        .execute(params![op, sql_amount(amount)])?;
    Ok(())
}

/// What the wallet is: its address and its vault.
#[derive(Clone, Debug)]
pub struct Wallet {
    pub address: String,
    pub vault: Vault,
}

impl Wallet {
    pub fn domain(&self) -> &str {
        mailer::mime::domain_of(&self.address).unwrap_or("wallet.invalid")
    }

    fn message_id(&self, parts: &[&[u8]]) -> Result<MessageId, WalletError> {
        Ok(MessageId::from_digest(&digest(parts), self.domain())?)
    }

    /// Queues `envelope` for `op` to `to`, as the op's request (answers to
    /// it find the op), to be sent again if no answer comes.
    pub fn send_request(
        &self,
        conn: &Connection,
        op: i64,
        to: &str,
        subject: &str,
        envelope: &Envelope,
        now: Timestamp,
    ) -> Result<(), WalletError> {
        self.send_request_after(conn, op, to, subject, None, envelope, now)
    }

    /// Like [`Wallet::send_request`], with `before` ahead of the request in
    /// the same mail (in that order), and again with it on every resend.
    #[allow(clippy::too_many_arguments)]
    pub fn send_request_after(
        &self,
        conn: &Connection,
        op: i64,
        to: &str,
        subject: &str,
        before: Option<&Envelope>,
        envelope: &Envelope,
        now: Timestamp,
    ) -> Result<(), WalletError> {
        let mid = self.message_id(&[
            b"wallet-request",
            envelope.id().as_bytes(),
            &0u64.to_be_bytes(),
        ])?;
        conn.prepare_cached(
            "UPDATE ops SET request = ?2, request_env = ?3, before_env = ?4,
                            thread = COALESCE(thread, ?5), sends = 1,
                            next_resend_at = ?6, updated_at = ?7
             WHERE id = ?1",
        )?
        .execute(params![
            op,
            envelope.id().as_bytes().as_slice(),
            envelope.to_bytes()?,
            before.map(Envelope::to_bytes).transpose()?,
            mid.as_str(),
            sql_time(now.saturating_add_secs(RESEND_AFTER_SECS)),
            sql_time(now),
        ])?;
        let thread: Option<String> = conn
            .prepare_cached("SELECT thread FROM ops WHERE id = ?1")?
            .query_row([op], |r| r.get(0))?;
        let references = thread
            .as_deref()
            .and_then(|t| MessageId::parse(t).ok())
            .filter(|t| *t != mid)
            .into_iter()
            .collect();
        let envelopes = before
            .into_iter()
            .chain(std::iter::once(envelope))
            .cloned()
            .collect();
        self.queue(
            conn, to, subject, mid, None, references, envelopes, false, now,
        )
    }

    /// Queues one mail.
    #[allow(clippy::too_many_arguments)]
    pub fn queue(
        &self,
        conn: &Connection,
        to: &str,
        subject: &str,
        message_id: MessageId,
        in_reply_to: Option<MessageId>,
        references: Vec<MessageId>,
        envelopes: Vec<Envelope>,
        auto_reply: bool,
        now: Timestamp,
    ) -> Result<(), WalletError> {
        let text = envelopes
            .iter()
            .filter_map(|e| mailer::messages::Message::decode(e.clone()).ok())
            .map(|m| m.describe())
            .collect::<Vec<_>>()
            .join("\n");
        mailer::outbox::enqueue(
            conn,
            &OutgoingMail {
                from: self.address.clone(),
                to: to.to_string(),
                subject: subject.to_string(),
                message_id,
                in_reply_to,
                references,
                date: now,
                text: format!("{text}\n\nSent by an emoney-mail wallet; the attachment is for wallets to read."),
                envelopes,
                auto_reply,
            },
            now,
        )?;
        Ok(())
    }

    /// Queues an answer (an automatic reply in the thread of `to_mail`),
    /// with a Message-ID fixed by the answer's content and `n`.
    #[allow(clippy::too_many_arguments)]
    pub fn answer(
        &self,
        conn: &Connection,
        to: &str,
        subject: &str,
        thread: &crate::handler::Thread,
        envelope: &Envelope,
        n: u64,
        now: Timestamp,
    ) -> Result<(), WalletError> {
        let mid =
            self.message_id(&[b"wallet-answer", envelope.id().as_bytes(), &n.to_be_bytes()])?;
        self.queue(
            conn,
            to,
            subject,
            mid,
            thread.message_id.clone(),
            thread.references.clone(),
            vec![envelope.clone()],
            true,
            now,
        )
    }
}

fn sign<T: Body>(body: T, key: &SecretKey) -> Result<Envelope, WalletError> {
    Ok(Signed::sign(body, key)?.into_envelope())
}

// ---- what the user starts ---------------------------------------------------

/// Pins the issuer of `currency` (or changes its address; a different
/// key for a pinned currency is refused).
pub fn add_issuer(
    conn: &Connection,
    currency: Currency,
    address: &str,
    key: mailer::crypto::PublicKey,
    now: Timestamp,
) -> Result<(), WalletError> {
    mailer::mime::parse_address(address)
        .map_err(|e| WalletError::refused(format!("{address:?} is not a mail address: {e}")))?;
    if let Some(old) = store::issuer(conn, currency)? {
        if old.key != key {
            return Err(WalletError::refused(format!(
                "the {currency} issuer is pinned to another key ({}); a wallet never changes a pinned key",
                old.key.fingerprint()
            )));
        }
    }
    conn.prepare_cached(
        "INSERT INTO issuers (currency, address, key, added_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (currency) DO UPDATE SET address = ?2",
    )?
    .execute(params![
        currency.as_str(),
        address,
        key.as_bytes().as_slice(),
        sql_time(now)
    ])?;
    Ok(())
}

/// `account add`: a new account key, bound with the enrollment code.
pub fn enroll(
    conn: &Connection,
    w: &Wallet,
    currency: Currency,
    code: &str,
    now: Timestamp,
) -> Result<i64, WalletError> {
    let issuer = store::need_issuer(conn, currency)?;
    if let Some(a) = store::account(conn, currency)? {
        if a.state != "failed" {
            return Err(WalletError::refused(format!(
                "this wallet already has a {currency} account ({}); one account per currency",
                a.state
            )));
        }
        conn.prepare_cached("DELETE FROM accounts WHERE currency = ?1")?
            .execute([currency.as_str()])?;
    }
    let key = SecretKey::generate();
    let secret = w.vault.store(conn, &key)?;
    let op = insert_op(
        conn,
        &NewOp {
            kind: "enroll",
            currency,
            amount: Amount::ZERO,
            peer: &issuer.address,
            memo: "",
            state: "waiting",
            transfer: None,
            data: OpData::default(),
        },
        now,
    )?;
    conn.prepare_cached(
        "INSERT INTO accounts (currency, secret, public, state, op) VALUES (?1, ?2, ?3, 'enrolling', ?4)",
    )?
    .execute(params![currency.as_str(), secret, key.public().as_bytes().as_slice(), op])?;
    let env = sign(
        EnrollRequest {
            currency,
            code: code.trim().to_string(),
        },
        &key,
    )?;
    w.send_request(
        conn,
        op,
        &issuer.address,
        &format!("{currency} account enrollment"),
        &env,
        now,
    )?;
    Ok(op)
}

/// `card new`: fresh keys, licensed by the issuer by mail.
pub fn new_card(
    conn: &Connection,
    w: &Wallet,
    currency: Currency,
    now: Timestamp,
) -> Result<i64, WalletError> {
    let issuer = store::need_issuer(conn, currency)?;
    if let Some(c) = store::card(conn, currency)? {
        return Err(WalletError::refused(format!(
            "this wallet already has a {currency} card ({}, key {})",
            c.state,
            c.keys.payment.fingerprint()
        )));
    }
    let card = CardSecret::generate();
    let ps = w.vault.store(conn, &card.payment)?;
    let as_ = w.vault.store(conn, &card.auth)?;
    let keys = card.keys();
    conn.prepare_cached(
        "INSERT INTO cards (currency, payment_public, auth_public, payment_secret, auth_secret, state, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, 'licensing', ?6)",
    )?
    .execute(params![
        currency.as_str(),
        keys.payment.as_bytes().as_slice(),
        keys.auth.as_bytes().as_slice(),
        ps,
        as_,
        sql_time(now)
    ])?;
    let card_id = conn.last_insert_rowid();
    let op = insert_op(
        conn,
        &NewOp {
            kind: "license",
            currency,
            amount: Amount::ZERO,
            peer: &issuer.address,
            memo: "",
            state: "waiting",
            transfer: None,
            data: OpData {
                card: Some(card_id),
                ..OpData::default()
            },
        },
        now,
    )?;
    let req = LicenseRequest::new(&card, currency, now)?.into_envelope();
    w.send_request(
        conn,
        op,
        &issuer.address,
        &format!("{currency} card license"),
        &req,
        now,
    )?;
    Ok(op)
}

/// `withdraw`: notes from the account onto the card.
pub fn withdraw(
    conn: &Connection,
    w: &Wallet,
    currency: Currency,
    amount: Amount,
    now: Timestamp,
) -> Result<i64, WalletError> {
    if amount.is_zero() {
        return Err(WalletError::refused("withdraw more than zero"));
    }
    let issuer = store::need_issuer(conn, currency)?;
    let (_, key) = store::enrolled_account(conn, &w.vault, currency)?;
    let card = store::active_card(conn, currency)?;
    let op = insert_op(
        conn,
        &NewOp {
            kind: "withdraw",
            currency,
            amount,
            peer: &issuer.address,
            memo: "",
            state: "waiting",
            transfer: None,
            data: OpData {
                card: Some(card.id),
                ..OpData::default()
            },
        },
        now,
    )?;
    let env = sign(
        WithdrawRequest {
            request_id: Id::random(),
            currency,
            amount,
            card: card.keys,
        },
        &key,
    )?;
    w.send_request(
        conn,
        op,
        &issuer.address,
        &format!("{currency} withdrawal"),
        &env,
        now,
    )?;
    Ok(op)
}

/// Chooses notes of `card` for `amount`, signs the links to `payee` with
/// `challenge`, and takes the amounts out of the spendable set.
/// The notes paid out, and the (state, amount) taken from each.
pub type PaidOut = (Vec<Note>, Vec<(Digest, Amount)>);

#[allow(clippy::too_many_arguments)]
pub fn pay_out(
    conn: &Connection,
    w: &Wallet,
    card: &store::CardRow,
    amount: Amount,
    payee: mailer::crypto::PublicKey,
    challenge: Challenge,
    now: Timestamp,
    margin_secs: u64,
) -> Result<PaidOut, WalletError> {
    let deadline = now.saturating_add_secs(margin_secs);
    let notes = store::candidates(conn, card.id, amount, deadline)?;
    let states: Vec<Spendable> = notes
        .iter()
        .enumerate()
        .map(|(index, n)| Spendable {
            index,
            rest: n.rest(),
            expires_at: n.expires_at,
        })
        .collect();
    let parts =
        choose(&states, amount, deadline).ok_or_else(|| WalletError::InsufficientFunds {
            currency: card.currency,
            available: store::spendable_total(conn, card.currency)
                .map(|a| a.display_major(card.currency))
                .unwrap_or_default(),
            wanted: amount.display_major(card.currency),
        })?;
    if parts.len() > MAX_NOTES {
        let mut at_most = Amount::ZERO;
        for n in notes.iter().take(MAX_NOTES) {
            at_most = at_most.checked_add(n.rest()).ok_or_else(|| {
                WalletError::Corrupt("the notes of a card overflow an amount".into())
            })?;
        }
        return Err(WalletError::TooManyNotes {
            currency: card.currency,
            wanted: amount.display_major(card.currency),
            needed: parts.len(),
            most: MAX_NOTES,
            at_most,
        });
    }
    let secret = card.secret(conn, &w.vault)?;
    let mut out = Vec::new();
    let mut taken = Vec::new();
    for p in parts {
        let n = notes
            .get(p.index)
            .ok_or_else(|| WalletError::Corrupt("a chosen note is missing".into()))?;
        let paid = n
            .note
            .pay(&secret.payment, payee, p.amount, challenge, now)
            .map_err(|e| {
                WalletError::Corrupt(format!("could not pay out of a stored note: {e}"))
            })?;
        store::spend(conn, &n.state_id, p.amount)?;
        out.push(paid);
        taken.push((n.state_id, p.amount));
    }
    Ok((out, taken))
}

/// `deposit`: notes back to the issuer, for the account.
pub fn deposit(
    conn: &Connection,
    w: &Wallet,
    currency: Currency,
    amount: Amount,
    now: Timestamp,
) -> Result<i64, WalletError> {
    let issuer = store::need_issuer(conn, currency)?;
    let (account, key) = store::enrolled_account(conn, &w.vault, currency)?;
    let card = store::active_card(conn, currency)?;
    if let Some(by) = card.locked_by {
        return Err(WalletError::refused(format!(
            "the {currency} card is busy with an unfinished payment (operation {by}); run `wallet sync --wait` and try again"
        )));
    }
    // Expired notes are still deposited (the issuer takes them). The notes
    // are chosen first: a deposit that cannot be made leaves no operation.
    let (notes, parts) = pay_out(
        conn,
        w,
        &card,
        amount,
        issuer.key,
        Deposit::challenge_for(&account.public),
        now,
        0,
    )?;
    let op = insert_op(
        conn,
        &NewOp {
            kind: "deposit",
            currency,
            amount,
            peer: &issuer.address,
            memo: "",
            state: "waiting",
            transfer: None,
            data: OpData::default(),
        },
        now,
    )?;
    let licenses = store::licenses_for(conn, &notes)?;
    set_data(
        conn,
        op,
        &OpData {
            parts,
            card: Some(card.id),
            ..OpData::default()
        },
    )?;
    let env = sign(
        Deposit {
            request_id: Id::random(),
            currency,
            notes,
            licenses,
        },
        &key,
    )?;
    w.send_request(
        conn,
        op,
        &issuer.address,
        &format!("{currency} deposit"),
        &env,
        now,
    )?;
    Ok(op)
}

/// `send`: invites the payee to give a card and a challenge; the payment
/// follows automatically when the answer comes (see the handler).
pub fn send(
    conn: &Connection,
    w: &Wallet,
    currency: Currency,
    amount: Amount,
    to: &str,
    memo: &str,
    now: Timestamp,
) -> Result<i64, WalletError> {
    if amount.is_zero() {
        return Err(WalletError::refused("send more than zero"));
    }
    mailer::mime::parse_address(to)
        .map_err(|e| WalletError::refused(format!("{to:?} is not a mail address: {e}")))?;
    if memo.len() > mailer::limits::MAX_TEXT {
        return Err(WalletError::refused(format!(
            "the memo is longer than {} bytes",
            mailer::limits::MAX_TEXT
        )));
    }
    store::need_issuer(conn, currency)?;
    let card = store::active_card(conn, currency)?;
    // What other unfinished sends will take is not available.
    let promised: i64 = conn
        .prepare_cached(
            "SELECT COALESCE(SUM(amount), 0) FROM ops
             WHERE kind = 'send' AND final = 0 AND state IN ('inviting', 'addressed') AND currency = ?1",
        )?
        .query_row([currency.as_str()], |r| r.get(0))?;
    let available = store::spendable_total(conn, currency)?
        .checked_sub(amount_of(promised))
        .unwrap_or(Amount::ZERO);
    if available < amount {
        return Err(WalletError::InsufficientFunds {
            currency,
            available: available.display_major(currency),
            wanted: amount.display_major(currency),
        });
    }
    let transfer = Id::random();
    let op = insert_op(
        conn,
        &NewOp {
            kind: "send",
            currency,
            amount,
            peer: to,
            memo,
            state: "inviting",
            transfer: Some(transfer),
            data: OpData {
                card: Some(card.id),
                ..OpData::default()
            },
        },
        now,
    )?;
    let secret = card.secret(conn, &w.vault)?;
    let env = sign(
        PaymentInvite {
            transfer,
            currency,
            amount,
            memo: memo.to_string(),
        },
        &secret.auth,
    )?;
    w.send_request(
        conn,
        op,
        to,
        &format!("{} {currency} for you", amount.display_major(currency)),
        &env,
        now,
    )?;
    Ok(op)
}

/// `cancel`: gives up a send that has not paid yet.
pub fn cancel(conn: &Connection, id: i64, now: Timestamp) -> Result<(), WalletError> {
    let o = op(conn, id)?;
    if o.kind != "send" || !matches!(o.state.as_str(), "inviting" | "addressed") {
        return Err(WalletError::refused(format!(
            "operation {id} ({} {}) cannot be cancelled: only a send that has not paid yet can",
            o.kind, o.state
        )));
    }
    set_state(
        conn,
        &o,
        "cancelled",
        "cancelled by the user before paying",
        now,
    )
}

/// Asks each issuer for its newest revocation list, if not asked for
/// `every_secs`.
pub fn refresh_revocations(
    conn: &Connection,
    w: &Wallet,
    every_secs: u64,
    now: Timestamp,
) -> Result<usize, WalletError> {
    let mut asked = 0;
    for i in store::issuers(conn)? {
        if i.revocations_asked_at.saturating_add_secs(every_secs) > now {
            continue;
        }
        let Some(card) = store::card(conn, i.currency)?.filter(|c| c.state == "active") else {
            continue;
        };
        let secret = card.secret(conn, &w.vault)?;
        let known = i
            .revocations
            .as_ref()
            .map(|l| l.unverified().version)
            .unwrap_or(0);
        let env = sign(
            RevocationListRequest {
                currency: i.currency,
                known_version: known,
            },
            &secret.auth,
        )?;
        let mid = w.message_id(&[b"wallet-revocations", env.id().as_bytes()])?;
        w.queue(
            conn,
            &i.address,
            &format!("{} revocation list", i.currency),
            mid,
            None,
            vec![],
            vec![env],
            false,
            now,
        )?;
        conn.prepare_cached("UPDATE issuers SET revocations_asked_at = ?2 WHERE currency = ?1")?
            .execute(params![i.currency.as_str(), sql_time(now)])?;
        asked += 1;
    }
    Ok(asked)
}

/// Sends again every request that has waited too long for its answer
/// (the same envelope: the other side answers it with what it answered
/// before). Returns how many.
pub fn resend_due(conn: &Connection, w: &Wallet, now: Timestamp) -> Result<usize, WalletError> {
    type Due = (i64, String, Vec<u8>, Option<Vec<u8>>, i64);
    let due: Vec<Due> = {
        let mut stmt = conn.prepare_cached(
            "SELECT id, peer, request_env, before_env, sends FROM ops
             WHERE final = 0 AND request_env IS NOT NULL AND next_resend_at <= ?1 AND sends < ?2",
        )?;
        let rows = stmt.query_map(params![sql_time(now), MAX_SENDS], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?;
        rows.collect::<Result<_, _>>()?
    };
    for (id, peer, env, before, sends) in &due {
        let env = store::envelope_of(env)?;
        let mut envelopes = before
            .as_deref()
            .map(store::envelope_of)
            .transpose()?
            .into_iter()
            .collect::<Vec<_>>();
        let n = u64::try_from(*sends).unwrap_or(0);
        let mid = w.message_id(&[b"wallet-request", env.id().as_bytes(), &n.to_be_bytes()])?;
        envelopes.push(env);
        let thread: Option<String> = conn
            .prepare_cached("SELECT thread FROM ops WHERE id = ?1")?
            .query_row([id], |r| r.get(0))?;
        let refs = thread
            .as_deref()
            .and_then(|t| MessageId::parse(t).ok())
            .into_iter()
            .collect();
        w.queue(
            conn,
            peer,
            "again: a request without an answer yet",
            mid,
            None,
            refs,
            envelopes,
            false,
            now,
        )?;
        let backoff = RESEND_AFTER_SECS.saturating_mul(1 << n.min(6));
        conn.prepare_cached("UPDATE ops SET sends = sends + 1, next_resend_at = ?2 WHERE id = ?1")?
            .execute(params![id, sql_time(now.saturating_add_secs(backoff))])?;
    }
    Ok(due.len())
}

/// The Message-ID prefix check for tests and `pending`: when an op will
/// send its request again.
pub fn next_resend(conn: &Connection, id: i64) -> Result<Option<Timestamp>, WalletError> {
    let v: Option<i64> = conn
        .prepare_cached("SELECT next_resend_at FROM ops WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?
        .flatten();
    Ok(v.map(time))
}
